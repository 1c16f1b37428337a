// The parallel gzip writer must produce one ordinary gzip member that GNU gzip accepts and
// decodes to the exact input, whatever mix of piece sizes, compressible and random data it gets.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { parallelGzip } from '../../src/transports/registry/gzip.js';

async function gzipAll(parts: Buffer[], opts: Parameters<typeof parallelGzip>[1]): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const b of parallelGzip((async function* () { yield* parts; })(), opts)) out.push(b);
  return Buffer.concat(out);
}

function gnuGunzip(gz: Buffer): Buffer {
  const r = spawnSync('gzip', ['-d', '-c'], { input: gz, maxBuffer: 256 << 20 });
  assert.equal(r.status, 0, `gzip -d: ${r.stderr}`);
  return r.stdout;
}

const text = (n: number) => Buffer.from(Array.from({ length: Math.ceil(n / 8) }, (_, i) => `w${i % 97} `.padEnd(8, '.')).join('').slice(0, n));

test('parallel gzip output is one gzip member GNU gzip decodes to the input', async () => {
  const cases: Array<{ name: string; parts: Buffer[]; pieceSize?: number }> = [
    { name: 'empty', parts: [] },
    { name: 'one small chunk', parts: [Buffer.from('hello\n')] },
    { name: 'many small chunks across pieces', parts: Array.from({ length: 300 }, (_, i) => text(1000 + i)), pieceSize: 64 << 10 },
    { name: 'large chunks, text and random', parts: [text(3 << 20), randomBytes(2 << 20), text(700_000), randomBytes(100)], pieceSize: 1 << 20 },
    { name: 'odd piece size', parts: [randomBytes(1_000_001), text(999_999)], pieceSize: 65_537 },
  ];
  for (const c of cases) {
    for (const level of [1, 6]) {
      const input = Buffer.concat(c.parts);
      const gz = await gzipAll(c.parts, { level, pieceSize: c.pieceSize });
      assert.equal(gz[0], 0x1f);
      assert.equal(gz[1], 0x8b);
      const t = spawnSync('gzip', ['-t'], { input: gz });
      assert.equal(t.status, 0, `${c.name}: gzip -t: ${t.stderr}`);
      const back = gnuGunzip(gz);
      assert.equal(createHash('sha256').update(back).digest('hex'), createHash('sha256').update(input).digest('hex'), `${c.name} level ${level}`);
      // `gzip -l` reads the trailer: the recorded length is the input's.
      const l = spawnSync('gzip', ['-l'], { input: gz, encoding: 'utf8' });
      assert.match(l.stdout, new RegExp(`\\s${input.length}\\s`), `${c.name}: trailer length`);
    }
  }
});

test('random data is stored rather than searched, text is compressed', async () => {
  const rnd = randomBytes(4 << 20);
  const gzr = await gzipAll([rnd], { level: 6 });
  assert.ok(gzr.length < rnd.length * 1.002, `stored random data stays close to its size (${gzr.length})`);
  const t = text(4 << 20);
  const gzt = await gzipAll([t], { level: 1 });
  assert.ok(gzt.length < t.length / 3, `text compresses (${gzt.length} of ${t.length})`);
});
