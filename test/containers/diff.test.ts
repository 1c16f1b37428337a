// `lamina diff` computes Docker's change list from the upper dir alone. Oracles: the change set
// Docker recorded for spec §10 (with the deletions under /opt/olddir derived from Docker's layer
// entries in expected.json), and Docker's own two-tree walk run over real kernel mounts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { containerChanges, overlayChanges, KIND_LETTER } from '../../src/containers/diff.js';
import * as sys from '../../src/sys/index.js';
import { expectedImages } from '../helpers/expected.js';
import { applySection10Changes, createOn, mountLowers, mountRW, refappStore, tmpDir } from './helpers.js';
import { twoTreeChanges } from './oracle.js';
import { lamina } from '../helpers/cli.js';

const lines = (cs: Array<{ path: string; kind: string }>) => cs.map((c) => `${c.kind} ${c.path}`).sort();
const letters = (cs: ReturnType<typeof containerChanges>) => cs.map((c) => ({ path: c.path, kind: KIND_LETTER[c.kind] }));

/** Names directly under `dir` in refapp:1's merged view, from Docker's layer entries. */
function refappChildren(dir: string): string[] {
  const img = expectedImages().find((i) => i.RepoTags.includes('refapp:1'))!;
  let names = new Set<string>();
  for (const layer of img.layers) {
    for (const e of layer.entries) {
      if (e.type === 'opaque' && e.target === dir) names = new Set();
    }
    for (const e of layer.entries) {
      const p = e.type === 'whiteout' ? e.target! : e.path;
      if (p.startsWith(dir + '/') && !p.slice(dir.length + 1).includes('/')) {
        if (e.type === 'whiteout') names.delete(p.slice(dir.length + 1));
        else if (e.type !== 'opaque') names.add(p.slice(dir.length + 1));
      }
      if (e.type === 'whiteout' && e.target === dir) names = new Set();
    }
  }
  return [...names];
}

test('diff of the spec §10 change set equals Docker\'s recorded set', async (t) => {
  const { store } = await refappStore(t);
  const c = createOn(store, 'refc1');
  const merged = mountRW(t, store, c);
  applySection10Changes(merged);

  // Docker's recorded output (spec §10); the D lines under the re-created /opt/olddir are what
  // disappeared from the image's /opt/olddir.
  const recorded = [
    'C /app', 'A /app/c2.renamed', 'D /app/c2.txt', 'C /etc', 'C /etc/passwd', 'C /data', 'C /data/b.txt',
    'D /data/a.txt', 'C /opt', 'C /opt/olddir', 'A /opt/olddir/z', 'C /tmp', 'A /tmp/new.txt', 'A /tmp/sym',
  ];
  const olddir = refappChildren('opt/olddir');
  assert.deepEqual(olddir, ['newfile'], 'refapp:1 /opt/olddir holds what layer 3 put there');
  const expected = [...recorded, ...olddir.map((n) => `D /opt/olddir/${n}`)].sort();

  const got = containerChanges(store, store.containers.get(c.id));
  assert.deepEqual(lines(letters(got)), expected);
  // Sorted by path bytes, deterministic.
  assert.deepEqual(got.map((x) => x.path), [...got.map((x) => x.path)].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b))));

  // Docker's two-tree walk over the kernel's views agrees.
  const lowersView = mountLowers(t, store, c);
  assert.deepEqual(lines(letters(got)), lines(twoTreeChanges(merged, lowersView)));
});

test('diff follows Docker\'s stat rules: unchanged copy-ups, hard links, type changes, capabilities', async (t) => {
  const { store } = await refappStore(t);
  const c = createOn(store);
  const m = mountRW(t, store, c);
  // Opened for writing but unchanged: copied up, yet no change (same mode, owner, size, mtime).
  fs.closeSync(fs.openSync(`${m}/app/c1.txt`, 'r+'));
  // A hard link to a lower file: both names copied up as one inode; only the new name is added.
  fs.linkSync(`${m}/data/empty`, `${m}/data/empty.link`);
  // A file replaced by a directory, with content below it.
  fs.rmSync(`${m}/data/perm.sh`);
  fs.mkdirSync(`${m}/data/perm.sh`);
  fs.writeFileSync(`${m}/data/perm.sh/inner`, 'x');
  // A directory replaced by a file.
  fs.rmSync(`${m}/app/sub`, { recursive: true });
  fs.writeFileSync(`${m}/app/sub`, 'now a file');
  // A capability added to a file (mode and times kept): only the xattr differs.
  const st = fs.lstatSync(`${m}/etc/xattr.txt`);
  sys.lsetxattr(`${m}/etc/xattr.txt`, 'security.capability', Buffer.from('0100000200200000000000000000000000000000', 'hex'));
  fs.utimesSync(`${m}/etc/xattr.txt`, st.atime, st.mtime);
  // A new directory tree and an rm -rf of a whole lower tree.
  fs.mkdirSync(`${m}/newdir/a/b`, { recursive: true });
  fs.writeFileSync(`${m}/newdir/a/b/f`, 'f');
  fs.rmSync(`${m}/work`, { recursive: true });
  // A chmod of a directory shows as C without any change inside it.
  fs.chmodSync(`${m}/usr`, 0o750);
  // Delete then re-create a lower file with other content: a plain file, no whiteout.
  fs.rmSync(`${m}/data/h2`);
  fs.writeFileSync(`${m}/data/h2`, 'fresh');

  const got = lines(letters(containerChanges(store, store.containers.get(c.id))));
  const oracle = lines(twoTreeChanges(m, mountLowers(t, store, c)));
  assert.deepEqual(got, oracle);
  for (const l of ['A /data/empty.link', 'C /data/perm.sh', 'A /data/perm.sh/inner', 'C /app/sub', 'C /etc/xattr.txt', 'A /newdir/a/b/f', 'D /work', 'C /usr', 'C /data/h2']) {
    assert.ok(got.includes(l), `expected "${l}" in ${JSON.stringify(got)}`);
  }
  assert.ok(!got.includes('C /app/c1.txt'), 'an unchanged copy-up is no change');
  assert.ok(!got.includes('C /data/empty'), 'the link source kept its stat');
});

test('diff reads only the upper dir: its answer does not depend on unrelated lower content', async (t) => {
  const { store } = await refappStore(t);
  const c = createOn(store);
  const m = mountRW(t, store, c);
  fs.writeFileSync(`${m}/tmp/one`, '1');
  const upper = store.driver.diffPath(c.mount.mountID);
  const lowers = [store.driver.diffPath(c.mount.initID), ...store.driver.lowerDiffPaths(c.mount.initID)];
  // A spy on the lowers: a huge unrelated directory in the bottom layer must not be listed.
  const big = `${lowers[lowers.length - 1]}/bigtree`;
  fs.mkdirSync(big);
  for (let i = 0; i < 2000; i++) fs.writeFileSync(`${big}/f${i}`, '');
  t.after(() => fs.rmSync(big, { recursive: true, force: true }));
  const atimeBefore = fs.statSync(big).atimeMs;
  const changes = overlayChanges(upper, lowers);
  assert.deepEqual(lines(letters(changes)), ['A /tmp/one', 'C /tmp']);
  assert.equal(fs.statSync(big).atimeMs, atimeBefore);
});

test('diff with redirect_dir=on reports a renamed directory as Docker\'s two-tree walk does', async (t) => {
  const { store } = await refappStore(t);
  const c = createOn(store);
  const dir = store.driver.dir(c.mount.mountID);
  const lowers = [store.driver.diffPath(c.mount.initID), ...store.driver.lowerDiffPaths(c.mount.initID)];
  const merged = tmpDir(t, 'lamina-redirect-');
  sys.mount('overlay', merged, 'overlay', 0, `index=off,redirect_dir=on,lowerdir=${lowers.join(':')},upperdir=${dir}/diff,workdir=${dir}/work`);
  let mounted = true;
  t.after(() => { if (mounted) sys.umount2(merged, sys.MNT_DETACH); });
  fs.renameSync(`${merged}/app/sub`, `${merged}/app/sub.moved`);
  fs.renameSync(`${merged}/data/sub2`, `${merged}/opt/sub2`);
  fs.writeFileSync(`${merged}/opt/sub2/extra`, 'x');
  assert.ok(sys.lgetxattr(`${dir}/diff/app/sub.moved`, 'trusted.overlay.redirect'), 'the kernel recorded a redirect');
  const got = lines(letters(containerChanges(store, store.containers.get(c.id))));
  const oracle = lines(twoTreeChanges(merged, mountLowers(t, store, c)));
  sys.umount2(merged, sys.MNT_DETACH);
  mounted = false;
  assert.deepEqual(got, oracle);
  assert.ok(got.includes('A /app/sub.moved/c3.txt') && got.includes('D /app/sub') && got.includes('A /opt/sub2/s.txt'));
});

test('lamina diff prints Docker\'s lines, and --format json the API shape', async (t) => {
  const { store, root } = await refappStore(t);
  const c = createOn(store, 'clidiff');
  const m = mountRW(t, store, c);
  fs.rmSync(`${m}/data/a.txt`);
  fs.writeFileSync(`${m}/data/new`, 'n');
  const text = lamina(root, 'diff', 'clidiff');
  assert.equal(text.code, 0, text.stderr);
  assert.equal(text.stdout, 'C /data\nD /data/a.txt\nA /data/new\n');
  const json = lamina(root, 'container', 'diff', '--format', 'json', c.id.slice(0, 12));
  assert.equal(json.stdout, '[{"Path":"/data","Kind":0},{"Path":"/data/a.txt","Kind":2},{"Path":"/data/new","Kind":1}]\n');
  const missing = lamina(root, 'diff', 'nosuch');
  assert.equal(missing.code, 1);
  assert.equal(missing.stderr, 'Error: No such container: nosuch\n');
});
