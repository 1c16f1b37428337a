// Parses a tar file with lamina's TarParser (no file-system writes) and prints the throughput.
// Usage: node --import tsx bench/tar-parse.ts <file.tar> [--sha256] [--tarsplit]
//   --sha256    also hash every entry's content (as extraction + verification would)
//   --tarsplit  also record tar-split (CRC-64 of content, gzip'd JSON lines kept in memory)
import fs from 'node:fs';
import { createHash, type Hash } from 'node:crypto';
import { TarParser, TeeVisitor } from '../src/tar/reader.js';
import { TarSplitRecorder } from '../src/tar/tarsplit.js';
import type { TarVisitor } from '../src/tar/types.js';

const file = process.argv[2];
if (!file) {
  console.error('usage: bench/tar-parse.ts <file.tar> [--sha256] [--tarsplit]');
  process.exit(2);
}
const hashContent = process.argv.includes('--sha256');
const withTarSplit = process.argv.includes('--tarsplit');

let entries = 0;
let contentBytes = 0;
let hash: Hash | null = null;
const counter: TarVisitor = {
  entry() {
    entries++;
    if (hashContent) hash = createHash('sha256');
  },
  data(chunk) {
    contentBytes += chunk.length;
    hash?.update(chunk);
  },
  entryEnd() {
    hash?.digest();
    hash = null;
  },
};
const recorder = withTarSplit ? new TarSplitRecorder() : null;
const parser = new TarParser(recorder ? new TeeVisitor(counter, recorder) : counter);

const start = process.hrtime.bigint();
const stream = fs.createReadStream(file, { highWaterMark: 1 << 20 });
stream.on('data', (chunk) => parser.write(chunk as Buffer));
stream.on('end', async () => {
  parser.end();
  const tarSplit = recorder ? await recorder.finish() : null;
  const secs = Number(process.hrtime.bigint() - start) / 1e9;
  const total = fs.statSync(file).size;
  const extras = [hashContent && 'sha256', tarSplit && `tar-split ${(tarSplit.length / 1e6).toFixed(2)} MB gz`].filter(Boolean);
  console.log(
    `${(total / 1e6).toFixed(1)} MB, ${entries} entries, ${(contentBytes / 1e6).toFixed(1)} MB content in ${secs.toFixed(3)} s: ` +
      `${(total / 1e6 / secs).toFixed(0)} MB/s, ${(entries / secs / 1000).toFixed(1)}k entries/s` +
      (extras.length ? ` (with ${extras.join(', ')})` : ''),
  );
});
