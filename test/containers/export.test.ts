// `lamina export`: the flattened filesystem. Oracle: `find` over the kernel's merged view of the
// same container; the three ways of reading the view (an existing mount, a private read-only
// kernel mount, the userspace union engine) must give the same bytes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { execFileSync, spawnSync } from 'node:child_process';
import { CLI, lamina } from '../helpers/cli.js';
import { exportContainer } from '../../src/containers/export.js';
import * as sys from '../../src/sys/index.js';
import { applySection10Changes, containerLowers, createOn, mountRW, refappStore, tmpDir, unmount } from './helpers.js';
import { tarHeaders } from './oracle.js';

const typeOfFind: Record<string, string> = { f: '0', d: '5', l: '2', c: '3', b: '4', p: '6' };

async function exportTo(store: Parameters<typeof exportContainer>[0], c: Parameters<typeof exportContainer>[1], file: string, backend: 'auto' | 'kernel' | 'userspace') {
  const used = await exportContainer(store, c, fs.createWriteStream(file), { backend });
  return { used, sha: createHash('sha256').update(fs.readFileSync(file)).digest('hex') };
}

test('export lists exactly the kernel\'s merged view, the same bytes from every backend', async (t) => {
  const { store } = await refappStore(t);
  const c = createOn(store);
  const merged = mountRW(t, store, c);
  applySection10Changes(merged);
  fs.linkSync(`${merged}/data/b.txt`, `${merged}/data/b.hardlink`);
  sys.lsetxattr(`${merged}/tmp/new.txt`, 'security.capability', Buffer.from('0100000200200000000000000000000000000000', 'hex'));
  const ctr = store.containers.get(c.id);
  const dir = tmpDir(t);

  const kernel = await exportTo(store, ctr, path.join(dir, 'kernel.tar'), 'kernel');
  assert.equal(kernel.used, 'kernel');
  const headers = tarHeaders(path.join(dir, 'kernel.tar'));

  // find(1) over the kernel's own merged view of the container is the oracle.
  const found = execFileSync('find', ['.', '-mindepth', '1', '-printf', '%P\t%y\t%m\t%s\t%n\t%i\n'], { cwd: merged, encoding: 'utf8' })
    .trim().split('\n').map((l) => l.split('\t'));
  const byName = new Map(found.map(([p, y, m, s]) => [y === 'd' ? p + '/' : p, { y, m, s }]));
  assert.deepEqual(headers.map((h) => h.name).sort(), [...byName.keys()].sort());
  const firstOfInode = new Set<string>();
  for (const h of headers) {
    const f = byName.get(h.name)!;
    if (h.type === '1') {
      // The second name of a hard-linked inode points at the first one in walk order.
      assert.ok(firstOfInode.has(h.linkname), `${h.name} -> ${h.linkname}`);
      continue;
    }
    assert.equal(h.type, typeOfFind[f.y], h.name);
    assert.equal((h.mode & 0o7777).toString(8), f.m, h.name);
    if (h.type === '0') assert.equal(String(h.size), f.s, h.name);
    firstOfInode.add(h.name);
  }
  assert.ok(!headers.some((h) => /(^|\/)\.wh\./.test(h.name)), 'no whiteouts in an export');
  assert.ok(headers.some((h) => h.name === 'data/b.hardlink' || h.linkname === 'data/b.hardlink'));
  assert.ok(!byName.has('data/a.txt') && byName.has('opt/olddir/z') && !byName.has('opt/olddir/newfile'));
  assert.ok(byName.has('.dockerenv'), 'the init layer is part of the export');
  assert.ok(headers.find((h) => h.name === 'tmp/new.txt')!.pax['SCHILY.xattr.security.capability']);
  // Lexical walk order, as in layer tars.
  const walk = headers.map((h) => h.name.replace(/\/$/, '').split('/'));
  for (let i = 1; i < walk.length; i++) {
    const a = walk[i - 1], b = walk[i];
    let k = 0;
    while (k < a.length && k < b.length && a[k] === b[k]) k++;
    assert.ok(k === a.length || (k < b.length && Buffer.compare(Buffer.from(a[k]), Buffer.from(b[k])) < 0), `${a.join('/')} before ${b.join('/')}`);
  }

  const user = await exportTo(store, ctr, path.join(dir, 'user.tar'), 'userspace');
  assert.equal(user.used, 'userspace');
  assert.equal(user.sha, kernel.sha, 'the userspace union engine gives the same tar');
  // GNU tar agrees on the entry list.
  const gnu = execFileSync('tar', ['-tf', path.join(dir, 'kernel.tar')], { encoding: 'utf8' }).trim().split('\n');
  assert.deepEqual(gnu, headers.map((h) => h.name));
});

test('export of a container mounted at <id>/merged tars that mount', async (t) => {
  const { store } = await refappStore(t);
  const c = createOn(store);
  const layerDir = store.driver.dir(c.mount.mountID);
  const merged = path.join(layerDir, 'merged');
  fs.mkdirSync(merged);
  sys.mount('overlay', merged, 'overlay', 0, `index=off,lowerdir=${containerLowers(store, c).join(':')},upperdir=${layerDir}/diff,workdir=${layerDir}/work`);
  // Unmounted in the test body: the t.after hooks registered earlier remove the root first.
  try {
    await exportWhileMounted(t, store, c.id, merged);
  } finally {
    unmount(merged);
  }
});

async function exportWhileMounted(t: Parameters<typeof tmpDir>[0], store: Awaited<ReturnType<typeof refappStore>>['store'], id: string, merged: string) {
  fs.writeFileSync(`${merged}/hello`, 'hi');
  const dir = tmpDir(t);
  const ctr = store.containers.get(id);
  const viaMount = await exportTo(store, ctr, path.join(dir, 'a.tar'), 'auto');
  assert.equal(viaMount.used, 'mounted');
  // While that rw mount holds the upper dir, a private read-only view still works.
  const viaKernel = await exportTo(store, ctr, path.join(dir, 'b.tar'), 'kernel');
  assert.equal(viaKernel.sha, viaMount.sha);
  assert.ok(tarHeaders(path.join(dir, 'a.tar')).some((h) => h.name === 'hello'));
  // Nothing is left mounted by the export itself.
  const mounts = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  assert.ok(!mounts.includes('lamina-export-'));
}

test('lamina export -o writes the file whole (no partial file on failure), stdout works too', async (t) => {
  const { store, root } = await refappStore(t);
  createOn(store, 'cliexp');
  const dir = tmpDir(t);
  const file = path.join(dir, 'out.tar');
  const r = lamina(root, 'export', '-o', file, 'cliexp');
  assert.equal(r.code, 0, r.stderr);
  assert.ok(tarHeaders(file).some((h) => h.name === 'etc/hostname'));
  const bad = lamina(root, 'export', '-o', path.join(dir, 'none.tar'), 'nosuch');
  assert.equal(bad.code, 1);
  assert.deepEqual(fs.readdirSync(dir), ['out.tar']);
  const piped = spawnSync(process.execPath, [CLI, '--root', root, 'container', 'export', 'cliexp'], { maxBuffer: 64 << 20 });
  assert.equal(piped.status, 0);
  assert.equal(createHash('sha256').update(piped.stdout).digest('hex'), createHash('sha256').update(fs.readFileSync(file)).digest('hex'));
});
