import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { collect, Collector, dockerTarSplits, fixtureLayers } from './fixtures.js';
import { TarParser, TeeVisitor } from '../../src/tar/reader.js';
import { Crc64, crc64 } from '../../src/tar/crc64.js';
import {
  TarSplitRecorder, readTarSplit, readTarSplitSync, assembleTar, tarSizeFromTarSplit, tarSplitFilePath,
  goJsonString, TARSPLIT_FILE, TARSPLIT_SEGMENT, type TarSplitEntry,
} from '../../src/tar/tarsplit.js';
import { isLaminaError } from '../../src/errors.js';
import * as T from '../archive/tarbuild.js';

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

function tmpdir(t: { after: (fn: () => void) => void }): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'lamina-tarsplit-'));
  t.after(() => fs.rmSync(d, { recursive: true, force: true }));
  return d;
}

function run(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr}`);
}

/** Records tar-split for a whole tar; returns the JSON text and the gzip bytes. */
async function record(tar: Buffer, chunk = 64 * 1024): Promise<{ text: string; gz: Buffer }> {
  const parts: string[] = [];
  const text = new TarSplitRecorder((t) => parts.push(t));
  const gzipped = new TarSplitRecorder();
  const p = new TarParser(new TeeVisitor(text, gzipped));
  for (let i = 0; i < tar.length; i += chunk) p.write(tar.subarray(i, i + chunk));
  p.end();
  await text.finish();
  return { text: parts.join(''), gz: await gzipped.finish() };
}

async function drain(r: Readable): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const c of r) out.push(c as Buffer);
  return Buffer.concat(out);
}

/** A bit-at-a-time CRC-64/ISO (reflected 0xD800000000000000), independent of the table code. */
function referenceCrc64(data: Buffer): Buffer {
  let crc = 0xffffffffffffffffn;
  for (const byte of data) {
    crc ^= BigInt(byte);
    for (let k = 0; k < 8; k++) crc = crc & 1n ? (crc >> 1n) ^ 0xd800000000000000n : crc >> 1n;
  }
  crc ^= 0xffffffffffffffffn;
  const out = Buffer.alloc(8);
  out.writeBigUInt64BE(crc);
  return out;
}

test('CRC-64/ISO matches the documented value and a bitwise reference at any alignment and chunking', () => {
  // docker-overlay2-on-disk.md §5.5: tar-split's payload for "hello\n".
  assert.equal(crc64(Buffer.from('hello\n')).toString('base64'), 'YUw+7uLYEAA=');
  assert.equal(crc64(Buffer.alloc(0)).toString('hex'), '0000000000000000');
  const data = randomBytes(5000);
  for (const [start, end] of [[0, 5000], [1, 4999], [3, 70], [5, 6], [7, 4096 + 7]]) {
    const slice = data.subarray(start, end);
    const want = referenceCrc64(slice);
    assert.deepEqual(crc64(slice), want, `${start}-${end}`);
    const c = new Crc64();
    for (let i = 0; i < slice.length; i += 13) c.update(slice.subarray(i, i + 13));
    assert.deepEqual(c.digest(), want, `${start}-${end} in 13-byte pieces`);
  }
});

test('recorded tar-split is identical to Docker\'s for every fixture layer', async () => {
  const docker = dockerTarSplits();
  for (const { image, layer, tar } of fixtureLayers()) {
    const want = docker.get(layer.chainID);
    assert.ok(want, `${image} layer ${layer.index}: no tar-split in the snapshot`);
    const wantText = zlib.gunzipSync(want).toString('utf8');
    for (const chunk of [512 * 3 + 17, 64 * 1024]) {
      const { text, gz } = await record(tar, chunk);
      assert.equal(text, wantText, `${image} layer ${layer.index}`);
      assert.equal(zlib.gunzipSync(gz).toString('utf8'), wantText);
      assert.deepEqual(gz.subarray(0, 10), want.subarray(0, 10), 'gzip header bytes as Go writes them');
    }
  }
});

test('Docker\'s tar-split reads back and reassembles every fixture layer byte for byte', async () => {
  const docker = dockerTarSplits();
  for (const { image, layer, tar } of fixtureLayers()) {
    const gz = docker.get(layer.chainID)!;
    const entries = readTarSplitSync(gz);
    const streamed: TarSplitEntry[] = [];
    for await (const e of readTarSplit(Readable.from([gz.subarray(0, 100), gz.subarray(100)]))) streamed.push(e);
    assert.deepEqual(streamed, entries, 'stream and buffer readers agree');
    assert.equal(await tarSizeFromTarSplit(gz), layer.layerTarBytes, `${image} layer ${layer.index}: size`);
    assert.equal(await tarSizeFromTarSplit(entries), tar.length);

    const files = new Map<string, Buffer>();
    for (const e of collect(tar).entries) if (e.header.typeflag === '0') files.set(tarSplitFilePath(e.header.name), e.content);
    const out = await drain(assembleTar(entries, (rel) => Readable.from([files.get(rel)!])));
    assert.equal('sha256:' + sha256(out), layer.diffID, `${image} layer ${layer.index}: assembled`);
  }
});

test('a layer extracted by GNU tar reassembles from the recorded tar-split; changes fail with EDIGEST', async (t) => {
  const dir = tmpdir(t);
  for (const { image, layer, tar } of fixtureLayers()) {
    const root = path.join(dir, `l${layer.index}-${image.replace(/\W/g, '_')}`);
    fs.mkdirSync(root);
    fs.writeFileSync(root + '.tar', tar);
    run('tar', ['-xpf', root + '.tar', '-C', root]);
    const { gz } = await record(tar);
    const out = await drain(assembleTar(readTarSplit(gz), root));
    assert.equal('sha256:' + sha256(out), layer.diffID, `${image} layer ${layer.index}`);
  }

  // Now alter files of one layer.
  const { tar } = fixtureLayers().find((l) => l.layer.entries.some((e) => e.type === 'file' && (e.size ?? 0) > 100))!;
  const root = path.join(dir, 'changed');
  fs.mkdirSync(root);
  fs.writeFileSync(root + '.tar', tar);
  run('tar', ['-xpf', root + '.tar', '-C', root]);
  const entries = readTarSplitSync((await record(tar)).gz);
  const victim = entries.find((e) => e.type === TARSPLIT_FILE && e.size > 100)!;
  assert.equal(victim.type, TARSPLIT_FILE);
  const file = path.join(root, tarSplitFilePath(victim.name));
  const original = fs.readFileSync(file);
  const expectChange = async (why: RegExp) => {
    await assert.rejects(drain(assembleTar(entries, root)), (e: unknown) =>
      isLaminaError(e, 'EDIGEST') && e.message.startsWith(`layer file ${JSON.stringify(victim.name)} changed: `) && why.test(e.message));
  };
  const flipped = Buffer.from(original);
  flipped[10] ^= 1;
  fs.writeFileSync(file, flipped);
  await expectChange(/does not match the recorded CRC-64/);
  fs.writeFileSync(file, original.subarray(0, 50));
  await expectChange(/50 bytes instead of the recorded/);
  fs.writeFileSync(file, Buffer.concat([original, Buffer.from('!')]));
  await expectChange(/larger than the recorded/);
  fs.rmSync(file);
  await expectChange(/it is missing/);
  fs.writeFileSync(file, original);
  assert.ok((await drain(assembleTar(entries, root))).equals(tar));
});

test('GNU tar archives (PAX xattrs, record padding, odd names) record and reassemble exactly', async (t) => {
  const dir = tmpdir(t);
  const root = path.join(dir, 'root');
  fs.mkdirSync(path.join(root, 'sub'), { recursive: true });
  fs.writeFileSync(path.join(root, 'sub/hello.txt'), 'hello\n');
  fs.writeFileSync(path.join(root, 'sub/a<b>&c\u2028.txt'), 'html\n');
  fs.writeFileSync(path.join(root, Buffer.concat([Buffer.from('sub/bad-'), Buffer.from([0xff, 0xfe]), Buffer.from('.bin')]).toString('latin1')), 'x');
  fs.writeFileSync(path.join(root, 'big.bin'), randomBytes(3 * 1024 * 1024 + 5));
  fs.writeFileSync(path.join(root, 'empty'), '');
  fs.linkSync(path.join(root, 'sub/hello.txt'), path.join(root, 'zz-hardlink'));
  run('setfattr', ['-n', 'user.bin', '-v', '0xff00fe0a80', path.join(root, 'sub/hello.txt')]);
  const tarFile = path.join(dir, 'a.tar');
  // The odd name is created from latin1 text: write it with raw bytes instead.
  fs.rmSync(path.join(root, Buffer.concat([Buffer.from('sub/bad-'), Buffer.from([0xff, 0xfe]), Buffer.from('.bin')]).toString('latin1')));
  fs.writeFileSync(Buffer.concat([Buffer.from(path.join(root, 'sub/bad-')), Buffer.from([0xff, 0xfe]), Buffer.from('.bin')]), 'x');
  run('tar', ['--format=pax', '--sort=name', '--xattrs', '--xattrs-include=*', '-cf', tarFile, '-C', root, '.']);
  const tar = fs.readFileSync(tarFile);
  assert.equal(tar.length % 10240, 0, 'GNU tar pads to 10240-byte records');

  const { text, gz } = await record(tar, 4000);
  const lines = text.split('\n');
  assert.equal(lines.pop(), '', 'every line ends in \\n');
  const objs = lines.map((l) => JSON.parse(l));
  objs.forEach((o, i) => assert.equal(o.position, i));
  // Key order and omissions as Go writes storage.Entry.
  for (const l of lines) assert.match(l, /^\{"type":(2,"payload":"[A-Za-z0-9+/=]*"|1(,"name":"(?:[^"\\]|\\.)*"|,"name_raw":"[A-Za-z0-9+/=]+")?(,"size":[1-9][0-9]*)?,"payload":("[A-Za-z0-9+/=]{12}"|null)),"position":[0-9]+\}$/);
  const html = lines.find((l) => l.includes('a\\u003cb\\u003e\\u0026c\\u2028.txt'));
  assert.ok(html, 'HTML characters and U+2028 escaped as Go does');
  const raw = objs.find((o) => o.name_raw);
  assert.deepEqual(Buffer.from(raw.name_raw, 'base64'), Buffer.concat([Buffer.from('./sub/bad-'), Buffer.from([0xff, 0xfe]), Buffer.from('.bin')]));
  assert.equal(raw.name, undefined);
  const hello = objs.find((o) => o.name === './sub/hello.txt');
  assert.equal(hello.size, 6);
  assert.equal(hello.payload, crc64(Buffer.from('hello\n')).toString('base64'));
  assert.equal(objs.find((o) => o.name === './empty').payload, null);
  assert.equal(objs.find((o) => o.name === './zz-hardlink').size, undefined);
  // The tail: end-of-archive blocks (with the padding before them), the record padding, "".
  const tail = objs.slice(-3);
  assert.ok(tail.every((o) => o.type === TARSPLIT_SEGMENT));
  assert.equal(tail[2].payload, '');
  const tailBytes = Buffer.from(tail[1].payload, 'base64');
  assert.ok(tailBytes.length > 0 && tailBytes.every((b) => b === 0));

  const entries = readTarSplitSync(gz);
  assert.equal(await tarSizeFromTarSplit(entries), tar.length);
  const out = await drain(assembleTar(entries, root));
  assert.ok(out.equals(tar), 'assembled from the source tree = the archive');
});

test('a path that appears twice is refused as Docker\'s tar-split packer does', (t) => {
  const dir = tmpdir(t);
  fs.writeFileSync(path.join(dir, 'a'), 'one');
  fs.mkdirSync(path.join(dir, 'd'));
  const tarFile = path.join(dir, 'dup.tar');
  run('tar', ['--format=ustar', '-cf', tarFile, '-C', dir, 'a', 'd']);
  run('tar', ['--format=ustar', '-rf', tarFile, '-C', dir, './a']); // same path again, spelled "./a"
  const rec = new TarSplitRecorder(() => {});
  assert.throws(() => new TarParser(rec).write(fs.readFileSync(tarFile)),
    (e: unknown) => isLaminaError(e, 'EBADTAR') && e.message === 'tar entry "./a": duplicates of file paths not supported');
});

test('Go JSON string escaping: HTML characters, U+2028/2029, \\b and \\f as \\u00XX', () => {
  for (const s of ['plain', 'a<b>&c', 'x\u2028y\u2029z', 'ctl\b\f\n\r\t\u0001\u001f\u007f', 'back\\bslash\\f', '"quoted"', 'ünï_名.txt']) {
    const j = goJsonString(s);
    assert.equal(JSON.parse(j), s, s);
    assert.doesNotMatch(j, /[<>&\u2028\u2029\u0000-\u001f]/, `${s}: nothing Go escapes is left raw`);
    assert.doesNotMatch(j.replace(/\\\\/g, ''), /\\[bf]/, `${s}: \\b and \\f written as \\u00XX`);
  }
});

test('tar-split readers refuse malformed input with EBADINPUT', async () => {
  assert.throws(() => readTarSplitSync(Buffer.from('not gzip')), (e: unknown) => isLaminaError(e, 'EBADINPUT'));
  const gz = (s: string) => zlib.gzipSync(Buffer.from(s));
  assert.throws(() => readTarSplitSync(gz('{"type":2,"payload":"","position":0}\n{nope\n')), (e: unknown) => isLaminaError(e, 'EBADINPUT') && /line 2/.test(e.message));
  assert.throws(() => readTarSplitSync(gz('{"type":7,"position":0}\n')), (e: unknown) => isLaminaError(e, 'EBADINPUT'));
  assert.throws(() => readTarSplitSync(gz('{"type":1,"name":"a","size":3,"payload":null,"position":0}\n')), (e: unknown) => isLaminaError(e, 'EBADINPUT'));
  assert.throws(() => readTarSplitSync(gz('{"type":1,"name":"a","payload":null,"position":0}\n{"type":1,"name":"./a/","payload":null,"position":1}\n')),
    (e: unknown) => isLaminaError(e, 'EBADINPUT') && /duplicate/.test(e.message));
  await assert.rejects(async () => {
    for await (const _ of readTarSplit(Readable.from([Buffer.from('garbage!')]))) void _;
  }, (e: unknown) => isLaminaError(e, 'EBADINPUT'));
});

test('tarSplitFilePath joins names as Docker\'s getter does, clamped to the layer', () => {
  assert.equal(tarSplitFilePath('./usr/bin/env'), 'usr/bin/env');
  assert.equal(tarSplitFilePath('/etc//passwd'), 'etc/passwd');
  assert.equal(tarSplitFilePath('a/./b/../c'), 'a/c');
  assert.equal(tarSplitFilePath('../../escape'), 'escape');
});

test('a TeeVisitor feeds several visitors from one pass', async () => {
  const { tar, layer } = fixtureLayers()[0];
  const parts: string[] = [];
  const rec = new TarSplitRecorder((t) => parts.push(t));
  const col = new Collector();
  const hash = createHash('sha256');
  const p = new TarParser(new TeeVisitor(rec, col, { raw: (c) => hash.update(c), entry: () => {}, data: (c) => hash.update(c) }));
  p.write(tar);
  p.end();
  await rec.finish();
  assert.equal('sha256:' + hash.digest('hex'), layer.diffID);
  assert.equal(col.entries.length, layer.entries.length);
  assert.equal(parts.join(''), zlib.gunzipSync(dockerTarSplits().get(layer.chainID)!).toString());
});

test('the recorder streams gzip into a Writable', async (t) => {
  const dir = tmpdir(t);
  const { tar, layer } = fixtureLayers()[fixtureLayers().length - 1];
  const out = fs.createWriteStream(path.join(dir, 'tar-split.json.gz'));
  const rec = new TarSplitRecorder(out);
  const p = new TarParser(rec);
  p.write(tar);
  p.end();
  await rec.finish();
  const written = fs.readFileSync(path.join(dir, 'tar-split.json.gz'));
  assert.equal(written.subarray(0, 10).toString('hex'), '1f8b08000000000000ff');
  assert.equal(zlib.gunzipSync(written).toString(), zlib.gunzipSync(dockerTarSplits().get(layer.chainID)!).toString());
});

test('the recorder writes a file: a small layer in one go, a large one streamed, both as Go gzip of the same JSON', async (t) => {
  const dir = tmpdir(t);
  // Docker's own small layer, and a layer whose JSON is several MiB (thousands of entries).
  const small = fixtureLayers()[fixtureLayers().length - 1].tar;
  const big = T.tar(...Array.from({ length: 6000 }, (_, i) => T.entry({ name: `dir-${i % 7}/file-${i}.txt` }, `content ${i}\n`)));
  for (const [name, tar] of [['small', small], ['big', big]] as const) {
    const file = path.join(dir, `${name}.json.gz`);
    const parts: string[] = [];
    const rec = new TarSplitRecorder(file);
    const text = new TarSplitRecorder((s) => parts.push(s));
    const p = new TarParser(new TeeVisitor(rec, text));
    for (let i = 0; i < tar.length; i += 65536) {
      p.write(tar.subarray(i, i + 65536));
      await rec.backpressure();
    }
    p.end();
    await rec.finish();
    await text.finish();
    const written = fs.readFileSync(file);
    assert.equal(written.subarray(0, 10).toString('hex'), '1f8b08000000000000ff', `${name}: Go's gzip header`);
    assert.equal(zlib.gunzipSync(written).toString(), parts.join(''), `${name}: same JSON as the text output`);
    assert.equal(fs.statSync(file).mode & 0o777, 0o644);
    if (name === 'big') assert.ok(parts.join('').length > 4 << 20, 'the big layer took the streaming path');
  }
});

test('an aborted recorder stops and closes its output', async (t) => {
  const dir = tmpdir(t);
  const tar = T.tar(...Array.from({ length: 3000 }, (_, i) => T.entry({ name: `f-${i}` }, 'x')));
  const rec = new TarSplitRecorder(path.join(dir, 'ts.json.gz'));
  const p = new TarParser(rec);
  p.write(tar.subarray(0, tar.length >> 1));
  rec.abort();
  await new Promise((r) => setImmediate(r));
  await assert.rejects(rec.finish(), /called twice/);
  fs.rmSync(dir, { recursive: true, force: true });
});
