// `lamina mount`/`umount`/`rm` as separate processes: the mount outlives the command that made
// it, references add up across processes, and rm of a mounted container is refused clearly
// unless forced — after which nothing of the container is left.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { lamina } from '../helpers/cli.js';
import { fixtureSave } from '../helpers/expected.js';
import * as sys from '../../src/sys/index.js';

const mounted = (p: string) => fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === p);

test('mount, umount and rm across processes', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lamina-mount-'));
  const run = path.join(dir, 'run');
  process.env.LAMINA_RUN_DIR = run; // the mount reference counts of this test's own store
  const root = path.join(dir, 'root');
  const merged: string[] = [];
  t.after(() => {
    for (const m of merged) if (mounted(m)) sys.umount2(m, sys.MNT_DETACH);
    delete process.env.LAMINA_RUN_DIR;
    fs.rmSync(dir, { recursive: true, force: true });
  });
  assert.equal(lamina(root, 'load', '-i', fixtureSave('refapp')).code, 0);
  assert.equal(lamina(root, 'create', '--name', 'c1', 'refapp:1').code, 0);

  let r = lamina(root, 'mount', 'c1');
  assert.equal(r.code, 0, r.stderr);
  const m = r.stdout.trim();
  merged.push(m);
  assert.match(m, new RegExp(`^${root}/overlay2/[0-9a-f]{64}/merged$`));
  assert.equal(r.stderr, 'mounted with kernel overlayfs\n');
  assert.ok(mounted(m), 'the mount outlives the command');
  const upper = path.join(path.dirname(m), 'diff');
  fs.writeFileSync(path.join(m, 'written.txt'), 'through merged\n');
  fs.rmSync(path.join(m, 'data/a.txt'));
  assert.equal(fs.readFileSync(path.join(upper, 'written.txt'), 'utf8'), 'through merged\n');
  const wh = fs.lstatSync(path.join(upper, 'data/a.txt'));
  assert.ok(wh.isCharacterDevice() && wh.rdev === 0, 'deleting a lower file leaves a char 0:0 whiteout');

  // A second process takes a second reference: one umount leaves it mounted.
  assert.equal(lamina(root, 'mount', 'c1').stdout.trim(), m);
  assert.equal(lamina(root, 'umount', 'c1').code, 0);
  assert.ok(mounted(m));

  r = lamina(root, 'rm', 'c1');
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^Error: You cannot remove a mounted container [0-9a-f]{64} \(1 mount reference\)\. Unmount it with "lamina umount" or force remove\n$/);
  assert.ok(mounted(m), 'a refused rm changes nothing');

  assert.equal(lamina(root, 'umount', 'c1').code, 0);
  assert.equal(mounted(m), false);
  assert.equal(fs.existsSync(m), false, 'merged/ is removed at the last umount');
  r = lamina(root, 'umount', 'c1');
  assert.equal(r.code, 1);
  assert.match(r.stderr, /is not mounted/);

  // rm -f of a mounted container unmounts it first; a second rm says there is no such container.
  assert.equal(lamina(root, 'mount', 'c1').code, 0);
  r = lamina(root, 'rm', '-f', 'c1');
  assert.equal(r.code, 0, r.stderr);
  assert.equal(mounted(m), false);
  r = lamina(root, 'rm', 'c1');
  assert.equal(r.code, 1);
  assert.equal(r.stderr, 'Error: No such container: c1\n');
  const home = path.join(root, 'overlay2');
  const ps = JSON.parse(lamina(root, 'image', 'inspect', 'refapp:1').stdout)[0];
  assert.equal(fs.readdirSync(home).length - 1, ps.RootFS.Layers.length, 'only the image layers are left in overlay2/');
  assert.equal(fs.readdirSync(path.join(home, 'l')).length, ps.RootFS.Layers.length);
  assert.deepEqual(fs.readdirSync(path.join(root, 'image/overlay2/layerdb/mounts')), []);
  assert.deepEqual(fs.readdirSync(path.join(root, 'containers')), []);
});
