// Images far deeper than Docker's 128-layer limit: a generated 200-layer image is loaded, a
// container on it mounts (the option string would pass 4095 bytes) and every layer's file reads
// back through merged/; a 501-layer image's container fails with a clear error (the kernel
// stacks at most 500 lowers).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { marshalGo } from '../../src/images/gojson.js';
import { writeDockerArchive } from '../../src/transports/docker-archive.js';
import { file, dir, tar } from '../archive/tarbuild.js';
import { lamina } from '../helpers/cli.js';
import * as sys from '../../src/sys/index.js';

const sha = (b: Buffer) => 'sha256:' + createHash('sha256').update(b).digest('hex');

/** A docker-archive of `n` layers; layer i adds layers/<i> and rewrites /top. */
async function deepArchive(out: string, n: number, tag: string): Promise<void> {
  const layers = [];
  for (let i = 0; i < n; i++) {
    const t = tar(...(i === 0 ? [dir('layers/')] : []), file(`layers/${i}`, `layer ${i}\n`), file('top', `${i}\n`));
    layers.push({ diffID: sha(t), size: t.length, open: () => Readable.from([t]) });
  }
  const config = Buffer.from(marshalGo({
    architecture: 'amd64', config: { Cmd: ['true'] }, created: '2026-01-01T00:00:00Z', os: 'linux',
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffID) },
  }));
  const ws = fs.createWriteStream(out);
  const closed = new Promise((res) => ws.on('close', res));
  await writeDockerArchive(ws, [{ configBytes: config, repoTags: [tag], layers }]);
  ws.end();
  await closed;
}

test('a 200-layer image mounts and reads; a container on a 501-layer image is refused clearly', async (t) => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lamina-deep-'));
  process.env.LAMINA_RUN_DIR = path.join(tmp, 'run');
  const root = path.join(tmp, 'root');
  let merged: string | undefined;
  t.after(() => {
    if (merged && fs.readFileSync('/proc/self/mountinfo', 'utf8').includes(` ${merged} `)) sys.umount2(merged, sys.MNT_DETACH);
    delete process.env.LAMINA_RUN_DIR;
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  const a200 = path.join(tmp, 'deep200.tar');
  await deepArchive(a200, 200, 'deep:200');
  let r = lamina(root, 'load', '-i', a200);
  assert.equal(r.code, 0, r.stderr);
  r = lamina(root, 'create', '--name', 'd200', 'deep:200');
  assert.equal(r.code, 0, r.stderr);
  r = lamina(root, 'mount', 'd200');
  assert.equal(r.code, 0, r.stderr);
  merged = r.stdout.trim();
  for (let i = 0; i < 200; i++) assert.equal(fs.readFileSync(path.join(merged, 'layers', String(i)), 'utf8'), `layer ${i}\n`);
  assert.equal(fs.readFileSync(path.join(merged, 'top'), 'utf8'), '199\n', 'the nearest layer wins');
  const line = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').find((l) => l.split(' ')[4] === merged)!;
  assert.ok(line, 'mounted');
  assert.ok(line.includes('upperdir='), 'rw mount with its upper dir (never a silently truncated string)');
  fs.writeFileSync(path.join(merged, 'written'), 'x');
  assert.equal(lamina(root, 'umount', 'd200').code, 0);
  assert.equal(fs.readFileSync(path.join(root, 'overlay2', path.basename(path.dirname(merged)), 'diff/written'), 'utf8'), 'x');
  merged = undefined;

  const a501 = path.join(tmp, 'deep501.tar');
  await deepArchive(a501, 501, 'deep:501');
  r = lamina(root, 'load', '-i', a501);
  assert.equal(r.code, 0, r.stderr);
  const before = fs.readdirSync(path.join(root, 'overlay2')).sort();
  r = lamina(root, 'create', 'deep:501');
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^Error: [^\n]*500[^\n]*\n$/, 'one line naming the limit');
  assert.deepEqual(fs.readdirSync(path.join(root, 'overlay2')).sort(), before, 'nothing left behind');
});
