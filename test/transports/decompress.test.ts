import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { Readable } from 'node:stream';
import { LaminaError } from '../../src/errors.js';
import { decompressStream, sniffCompression } from '../../src/transports/decompress.js';
import { childProcesses, has, hashStream, plainSave, readAll, scratch, sha256File } from './helpers.js';

const ZSTD = has('zstd');
const decoders = ZSTD ? (['cli', 'js'] as const) : (['js'] as const);

/** A stream delivering `data` in small pieces, to exercise the magic sniffing across chunks. */
function trickle(data: Buffer, piece = 1, upTo = 64): Readable {
  const parts: Buffer[] = [];
  let i = 0;
  for (; i < Math.min(upTo, data.length); i += piece) parts.push(data.subarray(i, Math.min(i + piece, data.length)));
  if (i < data.length) parts.push(data.subarray(i));
  return Readable.from(parts, { objectMode: false });
}

/** Bytes, then an error from the source itself (as a verifying reader would raise). */
function failingAfter(data: Buffer, err: Error): Readable {
  let sent = false;
  return new Readable({
    read() {
      if (!sent) {
        sent = true;
        this.push(data);
      } else {
        this.destroy(err);
      }
    },
  });
}

test('plain input comes back untouched (the same stream)', async (t) => {
  const dir = scratch(t);
  const tar = plainSave('refbase', dir);
  const input = fs.createReadStream(tar);
  const out = await decompressStream(input, 'refbase.tar');
  assert.equal(out, input);
  assert.equal((await hashStream(out)).digest, sha256File(tar));
  assert.equal(sniffCompression(fs.readFileSync(tar).subarray(0, 4)), 'none');
});

test('gzip (single and multi-member, magic split across chunks) decodes to the original bytes', async (t) => {
  const dir = scratch(t);
  const tar = plainSave('refbase', dir);
  const gz = execFileSync('gzip', ['-c', '-6', tar], { maxBuffer: 1 << 26 });
  assert.equal(sniffCompression(gz), 'gzip');
  assert.equal((await hashStream(await decompressStream(trickle(gz), 'x.gz'))).digest, sha256File(tar));
  // Two gzip members concatenated decode to both contents, as Go's and GNU gzip's readers do.
  const half = path.join(dir, 'half');
  fs.writeFileSync(half, fs.readFileSync(tar).subarray(0, 100000));
  const two = Buffer.concat([execFileSync('gzip', ['-c', half]), execFileSync('gzip', ['-c', half])]);
  fs.writeFileSync(path.join(dir, 'two.gz'), two);
  const expected = execFileSync('gzip', ['-dc', path.join(dir, 'two.gz')], { maxBuffer: 1 << 26 });
  assert.deepEqual(await readAll(await decompressStream(Readable.from([two]), 'two.gz')), expected);
});

for (const zstd of decoders) {
  test(`zstd (${zstd} decoder) decodes to the original bytes`, async (t) => {
    if (!ZSTD) return t.skip('zstd CLI not installed: cannot make test input');
    const dir = scratch(t);
    const tar = plainSave('refapp', dir);
    const zst = execFileSync('zstd', ['-q', '-c', '-3', tar], { maxBuffer: 1 << 26 });
    assert.equal(sniffCompression(zst), 'zstd');
    const out = await decompressStream(trickle(zst, 1, 8), { name: 'x.zst', zstd });
    assert.equal((await hashStream(out)).digest, sha256File(tar));
    assert.deepEqual(childProcesses('zstd'), []);
  });

  test(`corrupt and truncated zstd fail with EBADINPUT naming the input (${zstd} decoder)`, async (t) => {
    if (!ZSTD) return t.skip('zstd CLI not installed');
    const dir = scratch(t);
    const tar = plainSave('refbase', dir);
    const zst = execFileSync('zstd', ['-q', '-c', tar], { maxBuffer: 1 << 26 });
    const garbage = Buffer.concat([zst.subarray(0, 4), Buffer.alloc(5000, 0xa5)]);
    const truncated = zst.subarray(0, Math.floor(zst.length / 2));
    for (const [what, bytes] of [['garbage', garbage], ['truncated', truncated]] as const) {
      const out = await decompressStream(Readable.from([bytes]), { name: `layer-${what}.zst`, zstd });
      await assert.rejects(readAll(out), (e: unknown) => {
        assert.ok(e instanceof LaminaError, String(e));
        assert.equal(e.code, 'EBADINPUT');
        assert.match(e.message, new RegExp(`^layer-${what}\\.zst: corrupt zstd data: `));
        return true;
      });
    }
    await sleep(50);
    assert.deepEqual(childProcesses('zstd'), [], 'no zstd process left behind');
  });

  test(`an error of the source passes through the zstd decoder unchanged (${zstd})`, async (t) => {
    if (!ZSTD) return t.skip('zstd CLI not installed');
    const dir = scratch(t);
    const zst = execFileSync('zstd', ['-q', '-c', plainSave('refbase', dir)], { maxBuffer: 1 << 26 });
    const err = new LaminaError('EDIGEST', 'blob sha256:x does not match its digest');
    const out = await decompressStream(failingAfter(zst.subarray(0, 100000), err), { name: 'x', zstd });
    await assert.rejects(readAll(out), (e) => e === err);
    await sleep(50);
    assert.deepEqual(childProcesses('zstd'), []);
  });
}

test('a consumer that stops early does not leave the zstd process running', async (t) => {
  if (!ZSTD) return t.skip('zstd CLI not installed');
  const dir = scratch(t);
  const zst = execFileSync('zstd', ['-q', '-c', plainSave('refapp', dir)], { maxBuffer: 1 << 26 });
  const out = await decompressStream(Readable.from([zst]), { name: 'x', zstd: 'cli' });
  for await (const chunk of out) {
    assert.ok(chunk.length > 0);
    break; // destroys the stream
  }
  await sleep(100);
  assert.deepEqual(childProcesses('zstd'), []);
});

test('corrupt and truncated gzip fail with EBADINPUT naming the input', async (t) => {
  const dir = scratch(t);
  const gz = execFileSync('gzip', ['-c', plainSave('refbase', dir)], { maxBuffer: 1 << 26 });
  const cases: Array<[string, Buffer]> = [
    ['garbage', Buffer.concat([gz.subarray(0, 10), Buffer.alloc(4000, 0x5a)])],
    ['truncated', gz.subarray(0, gz.length - 5000)],
    ['magic only', gz.subarray(0, 2)],
  ];
  for (const [what, bytes] of cases) {
    const out = await decompressStream(Readable.from([bytes]), `layer (${what})`);
    await assert.rejects(readAll(out), (e: unknown) => {
      assert.ok(e instanceof LaminaError, String(e));
      assert.equal(e.code, 'EBADINPUT');
      assert.ok(e.message.startsWith(`layer (${what}): corrupt gzip data: `), e.message);
      return true;
    });
  }
});

test('an error of the source passes through the gzip decoder unchanged', async (t) => {
  const dir = scratch(t);
  const gz = execFileSync('gzip', ['-c', plainSave('refbase', dir)], { maxBuffer: 1 << 26 });
  const err = new LaminaError('EDIGEST', 'blob sha256:y does not match its digest');
  const out = await decompressStream(failingAfter(gz.subarray(0, 50000), err), 'x');
  await assert.rejects(readAll(out), (e) => e === err);
});

test('empty and tiny inputs are passed through', async () => {
  assert.equal((await readAll(await decompressStream(Readable.from([], { objectMode: false }), 'empty'))).length, 0);
  assert.deepEqual(await readAll(await decompressStream(trickle(Buffer.from('abc')), 'tiny')), Buffer.from('abc'));
});
