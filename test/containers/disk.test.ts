// What containers cost on disk (spec §13: Docker's overlay2/ grew by 73.7 KB per `docker create`),
// `lamina system df` against Docker's numbers and columns (spec §11), and the prunes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { Store } from '../../src/store.js';
import { humanSize } from '../../src/cli/format.js';
import { CLI, lamina } from '../helpers/cli.js';
import { expectedImages, fixtureSave } from '../helpers/expected.js';
import { createOn, mountRW, refappStore, tmpDir, unmount } from './helpers.js';

/** GNU du's block accounting (KiB), hard links counted once. */
const duK = (...dirs: string[]) => Number(execFileSync('du', ['-sck', ...dirs], { encoding: 'utf8' }).trim().split('\n').pop()!.split('\t')[0]);

test('20 containers on one image cost at most 80 KB each on disk, and rm gives it all back', async (t) => {
  const { store, root } = await refappStore(t);
  const parts = ['overlay2', 'image/overlay2/layerdb/mounts', 'containers'].map((p) => path.join(root, p));
  const before = { driver: duK(parts[0]), all: duK(...parts) };
  const ids: string[] = [];
  for (let i = 0; i < 20; i++) ids.push(createOn(store, `c${i}`, ['true']).id);
  const after = { driver: duK(parts[0]), all: duK(...parts) };
  const perDriverKB = ((after.driver - before.driver) * 1024) / 20 / 1000;
  const perAllKB = ((after.all - before.all) * 1024) / 20 / 1000;
  t.diagnostic(`per container: overlay2/ ${perDriverKB.toFixed(1)} KB (Docker 73.7 KB); with layerdb/mounts + containers/ ${perAllKB.toFixed(1)} KB`);
  // Docker's 73.7 KB is overlay2/ alone (init 40 KiB + rw 24 KiB + l/ links): the same scope here.
  assert.ok(perDriverKB <= 80, `overlay2/ grew ${perDriverKB.toFixed(1)} KB per container`);
  // The records Docker also keeps (mounts/<id>: 3 files; containers/<id>: 2 files) take one
  // 4 KiB block per file and per directory on ext4: 28 KiB more, nothing else.
  assert.ok(perAllKB <= perDriverKB + (7 * 4096) / 1000 + 0.5, `records cost ${(perAllKB - perDriverKB).toFixed(1)} KB per container`);

  for (const id of ids) await store.removeContainer(id);
  assert.deepEqual({ driver: duK(parts[0]), all: duK(...parts) }, before);
});

/** Runs the compiled CLI with `input` on stdin. */
function cli(root: string, input: string, ...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, '--root', root, ...args], { input, encoding: 'utf8', env: { ...process.env, LAMINA_ROOT: '' } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const cells = (line: string) => line.trim().split(/\s{2,}/);

test('system df shows Docker\'s columns and numbers', async (t) => {
  const { store, root } = await refappStore(t);
  await store.load(fixtureSave('refbase'));
  const refapp = expectedImages().find((i) => i.RepoTags.includes('refapp:1'))!;
  const refbase = expectedImages().find((i) => i.RepoTags.includes('refbase:1'))!;
  const a = createOn(store, 'ctest');
  createOn(store, 'refc1');
  const m = mountRW(t, store, a);
  fs.writeFileSync(`${m}/tmp/six.b`, 'sixsix');
  unmount(m);
  assert.equal(lamina(root, 'commit', 'ctest', 'refctest:1').code, 0);

  const r = lamina(root, 'system', 'df');
  assert.equal(r.code, 0, r.stderr);
  const rows = r.stdout.trim().split('\n').map(cells);
  assert.deepEqual(rows[0], ['TYPE', 'TOTAL', 'ACTIVE', 'SIZE', 'RECLAIMABLE']);
  // All layers images use: refapp's (refbase's one layer is refapp's bottom layer) + the 6 B layer.
  const layers = refapp.dockerReported.Size + 6;
  assert.deepEqual(rows[1], ['Images', '3', '1', humanSize(layers, 4), `${humanSize(layers, 4)} (100%)`]);
  assert.deepEqual(rows[2], ['Containers', '2', '0', '6B', '6B (100%)']);
  assert.deepEqual(rows[3], ['Local Volumes', '0', '0', '0B', '0B']);
  assert.deepEqual(rows[4], ['Build Cache', '0', '0', '0B', '0B']);
  assert.equal(humanSize(refapp.dockerReported.Size, 4), '1.983MB', 'spec §11 prints 1,982,951 bytes as 1.983MB');

  const v = lamina(root, 'system', 'df', '-v');
  assert.equal(v.code, 0, v.stderr);
  const sections = v.stdout.split('\n\n');
  assert.equal(sections[0], 'Images space usage:');
  const img = sections[1].split('\n').map(cells);
  assert.deepEqual(img[0], ['REPOSITORY', 'TAG', 'IMAGE ID', 'CREATED', 'SIZE', 'SHARED SIZE', 'UNIQUE SIZE', 'CONTAINERS']);
  const byRepo = new Map(img.slice(1).map((row) => [row[0], row]));
  const ctest = Store.open(root).resolveImage('refctest:1'); // a fresh view: the CLI changed the root
  assert.deepEqual(byRepo.get('refctest')!.filter((_, i) => i !== 3), ['refctest', '1', ctest.slice(7, 19), humanSize(layers, 4), '1.983MB', '6B', '0']);
  assert.deepEqual(byRepo.get('refapp')!.filter((_, i) => i !== 3), ['refapp', '1', refapp.imageID.slice(7, 19), '1.983MB', '1.983MB', '0B', '2']);
  assert.deepEqual(byRepo.get('refbase')!.filter((_, i) => i !== 3), ['refbase', '1', refbase.imageID.slice(7, 19), humanSize(refbase.dockerReported.Size, 4), humanSize(refbase.dockerReported.Size, 4), '0B', '0']);
  assert.equal(sections[2], 'Containers space usage:');
  const ctr = sections[3].split('\n').map(cells);
  assert.deepEqual(ctr[0], ['CONTAINER ID', 'IMAGE', 'COMMAND', 'LOCAL VOLUMES', 'SIZE', 'CREATED', 'STATUS', 'NAMES']);
  const ctestRow = ctr.find((row) => row[7] === 'ctest')!;
  assert.deepEqual([ctestRow[0], ctestRow[1], ctestRow[2], ctestRow[3], ctestRow[4], ctestRow[6]], [a.id.slice(0, 12), 'refapp:1', '"sleep 3600"', '0', '6B', 'Created']);
  assert.equal(sections[4], 'Local Volumes space usage:');
  assert.deepEqual(cells(sections[5]), ['VOLUME NAME', 'LINKS', 'SIZE']);
  assert.equal(sections[6], 'Build cache usage: 0B');
  assert.deepEqual(cells(sections[7]), ['CACHE ID', 'CACHE TYPE', 'SIZE', 'CREATED', 'LAST USED', 'USAGE', 'SHARED']);
});

test('container prune, image prune and system prune remove what Docker would, with its output', async (t) => {
  const { store, root } = await refappStore(t);
  const a = createOn(store, 'ca');
  const m = mountRW(t, store, a);
  fs.writeFileSync(`${m}/tmp/f`, '12345');
  unmount(m);
  // Two commits to the same tag: the first image becomes dangling.
  const first = lamina(root, 'commit', 'ca', 'snap:1').stdout.trim();
  const second = lamina(root, 'commit', 'ca', 'snap:1').stdout.trim();
  assert.notEqual(first, second);

  // The prompt: anything but "y" changes nothing.
  const no = cli(root, 'n\n', 'image', 'prune');
  assert.equal(no.stdout, 'WARNING! This will remove all dangling images.\nAre you sure you want to continue? [y/N] ');
  assert.ok(store.images.has(first));

  // Both commits share the same layer (same content), so deleting the dangling one frees nothing.
  const ip = lamina(root, 'image', 'prune', '-f');
  assert.equal(ip.stdout, `Deleted Images:\ndeleted: ${first}\n\nTotal reclaimed space: 0B\n`);
  assert.ok(!store.images.has(first) && store.images.has(second));

  const yes = cli(root, 'y\n', 'container', 'prune');
  assert.equal(yes.stdout, `WARNING! This will remove all stopped containers.\nAre you sure you want to continue? [y/N] Deleted Containers:\n${a.id}\n\nTotal reclaimed space: 5B\n`);
  assert.deepEqual(store.containers.list(), []);
  assert.deepEqual(store.layers.listMounts(), []);

  // Everything unused goes with system prune -a; the layer of snap:1 (5 bytes) is reclaimed.
  const keep = createOn(store, 'keep');
  const sp = lamina(root, 'system', 'prune', '-a', '-f');
  assert.equal(sp.code, 0, sp.stderr);
  const lines = sp.stdout.split('\n');
  assert.deepEqual(lines.slice(0, 5), ['Deleted Containers:', keep.id, '', 'Deleted Images:', 'untagged: snap:1']);
  assert.ok(lines.includes(`deleted: ${second}`) && lines.includes('untagged: refapp:1'), sp.stdout);
  const refappSize = expectedImages().find((i) => i.RepoTags.includes('refapp:1'))!.dockerReported.Size;
  assert.deepEqual(lines.slice(-3), ['', `Total reclaimed space: ${humanSize(refappSize + 5, 4)}`, '']);
  assert.deepEqual(store.listImages(), []);
  assert.deepEqual(fs.readdirSync(path.join(root, 'overlay2')), ['l']);
  assert.deepEqual(fs.readdirSync(path.join(root, 'overlay2', 'l')), []);
  assert.deepEqual(fs.readdirSync(path.join(root, 'image/overlay2/layerdb/sha256')), []);
});

test('image prune keeps images a container uses and tagged images', async (t) => {
  const root = path.join(tmpDir(t), 'root');
  const store = Store.open(root);
  await store.load(fixtureSave('refapp'));
  createOn(store, 'user');
  const r = lamina(root, 'image', 'prune', '-a', '-f');
  assert.equal(r.stdout, 'Total reclaimed space: 0B\n', `${r.code} ${r.stderr}`);
  assert.ok(store.images.has(store.resolveImage('refapp:1')));
});
