// The fuse-overlayfs backend, forced (as root the kernel would be used): the same view, writes
// and whiteouts in diff/, shared references with the kernel backend's bookkeeping, read-only
// committed layers, deep stacks, and recovery from a daemon that died.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { isMounted, mountCount, mountLayer, unmountLayer, countDir } from '../../src/mount/index.js';
import { onPath } from '../../src/mount/fuse.js';
import { findMount } from '../../src/mount/mountinfo.js';
import { buildChain, containerLayers, newDriver, refappStore, scratch, someRegularFile } from './helpers.js';

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'child.ts');
const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const skip = !onPath('fuse-overlayfs') || !fs.existsSync('/dev/fuse') ? 'fuse-overlayfs or /dev/fuse is missing' : false;
const read = (p: string) => fs.readFileSync(p, 'utf8');

/** Pids of fuse-overlayfs daemons serving `target`. */
function daemonsFor(target: string): number[] {
  const pids: number[] = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let argv: string[];
    try {
      argv = fs.readFileSync(`/proc/${name}/cmdline`, 'latin1').split('\0');
    } catch {
      continue;
    }
    if (path.basename(argv[0] ?? '') === 'fuse-overlayfs' && argv.includes(target)) pids.push(Number(name));
  }
  return pids;
}

async function waitFor(cond: () => boolean, ms = 5000): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end; await new Promise((r) => setTimeout(r, 20))) if (cond()) return true;
  return cond();
}

test('fuse-overlayfs: the refapp container view, writes and whiteouts land in diff/', { skip }, async (t) => {
  const dir = scratch(t);
  const { store, cacheIDs } = await refappStore(dir);
  const driver = store.driver;
  const top = cacheIDs[cacheIDs.length - 1];
  const { id } = containerLayers(driver, top);
  const spec = driver.mountSpec(id);

  const r = mountLayer(spec, { backend: 'fuse-overlayfs' });
  assert.deepEqual(r, { path: path.join(driver.home, id, 'merged'), backend: 'fuse-overlayfs' });
  assert.equal(findMount(r.path)!.fsType, 'fuse.fuse-overlayfs');
  assert.equal(daemonsFor(r.path).length, 1);

  // Same root listing as the layers' union (names of every layer's diff/ root, minus nothing).
  const union = new Set<string>();
  for (const c of cacheIDs) for (const n of fs.readdirSync(driver.diffPath(c))) union.add(n);
  assert.deepEqual(fs.readdirSync(r.path).sort(), [...union].sort());

  fs.writeFileSync(path.join(r.path, 'via-fuse.txt'), 'fuse\n');
  assert.equal(read(path.join(driver.home, id, 'diff', 'via-fuse.txt')), 'fuse\n');
  const victim = someRegularFile(driver.diffPath(top)) ?? someRegularFile(driver.diffPath(cacheIDs[0]));
  assert.ok(victim, 'the image has a regular file to delete');
  fs.rmSync(path.join(r.path, victim));
  const wh = fs.lstatSync(path.join(driver.home, id, 'diff', victim));
  assert.ok(wh.isCharacterDevice() && wh.rdev === 0, `${victim}: char 0:0 whiteout`);

  // A second reference, asked for with the default backend, shares the fuse mount.
  assert.deepEqual(mountLayer(spec), { path: r.path, backend: 'fuse-overlayfs' });
  assert.equal(mountCount(spec), 2);
  assert.deepEqual(unmountLayer(spec), { unmounted: false });
  assert.deepEqual(unmountLayer(spec), { unmounted: true });
  assert.equal(isMounted(spec), false);
  assert.equal(fs.existsSync(r.path), false);
  assert.equal(fs.existsSync(path.join(countDir(driver.home), id)), false);
  assert.ok(await waitFor(() => daemonsFor(r.path).length === 0), 'the daemon exits after the unmount');
});

test('fuse-overlayfs: a committed layer read-only, and a 150-layer stack', { skip }, (t) => {
  const dir = scratch(t, { tmpfs: true });
  const driver = newDriver(dir);
  const chain = buildChain(driver, 150);
  const top = chain[chain.length - 1];
  const { id } = containerLayers(driver, top);

  const ro = driver.mountSpec(top);
  const r = mountLayer(ro, { backend: 'fuse-overlayfs' });
  assert.equal(r.backend, 'fuse-overlayfs');
  for (let i = 0; i < 150; i++) assert.equal(read(path.join(r.path, `layer-${i}`)), `content of layer ${i}\n`);
  assert.throws(() => fs.writeFileSync(path.join(r.path, 'x'), 'x'), (e: NodeJS.ErrnoException) => e.code === 'EROFS');
  assert.deepEqual(unmountLayer(ro), { unmounted: true });

  const rw = driver.mountSpec(id);
  const m = mountLayer(rw, { backend: 'fuse-overlayfs' });
  assert.equal(read(path.join(m.path, 'layer-0')), 'content of layer 0\n');
  fs.appendFileSync(path.join(m.path, 'layer-0'), 'more\n');
  assert.equal(read(path.join(driver.home, id, 'diff', 'layer-0')), 'content of layer 0\nmore\n');
  assert.deepEqual(unmountLayer(rw), { unmounted: true });
});

test('fuse-overlayfs: a mount whose daemon died is replaced by a fresh one', { skip }, async (t) => {
  const dir = scratch(t);
  const driver = newDriver(dir);
  const chain = buildChain(driver, 2);
  const { id } = containerLayers(driver, chain[1]);
  const spec = driver.mountSpec(id);
  const r = mountLayer(spec, { backend: 'fuse-overlayfs' });
  const [pid] = daemonsFor(r.path);
  assert.ok(pid, 'a daemon serves the mount');
  process.kill(pid, 'SIGKILL');
  assert.ok(await waitFor(() => {
    try {
      fs.statSync(r.path);
      return false;
    } catch (e) {
      return (e as NodeJS.ErrnoException).code === 'ENOTCONN';
    }
  }), 'the mount is left without its daemon');

  const again = mountLayer(spec, { backend: 'fuse-overlayfs' });
  assert.equal(again.backend, 'fuse-overlayfs');
  assert.equal(read(path.join(again.path, 'layer-1')), 'content of layer 1\n');
  assert.equal(mountCount(spec), 1, 'the dead mount\'s reference is gone');
  assert.deepEqual(unmountLayer(spec), { unmounted: true });
  assert.equal(isMounted(spec), false);
});

test('without privileges the kernel refuses and the auto backend turns to fuse-overlayfs', { skip: process.getuid?.() !== 0 && 'needs root to set up an unprivileged child' }, (t) => {
  const dir = scratch(t);
  const driver = newDriver(dir);
  const chain = buildChain(driver, 2);
  const { id } = containerLayers(driver, chain[1]);
  const spec = driver.mountSpec(id);
  // An unprivileged user owning the store: mount(2) says EPERM.
  const NOBODY = 65534;
  fs.chmodSync(dir, 0o755);
  for (const p of [dir, ...fs.readdirSync(dir, { recursive: true }).map((n) => path.join(dir, String(n)))]) fs.lchownSync(p, NOBODY, NOBODY);
  const runAs = (envPath: string) => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', CHILD, 'mount', JSON.stringify(spec)], {
      cwd: REPO,
      encoding: 'utf8',
      uid: NOBODY,
      gid: NOBODY,
      env: { ...process.env, PATH: envPath, HOME: dir, LAMINA_RUN_DIR: path.join(dir, 'run') },
    });
    assert.equal(r.status, 2, `child: ${r.stderr}`);
    return JSON.parse(r.stdout) as { error: string; message: string };
  };
  // fuse-overlayfs installed: it is tried (here /dev/fuse is root-only, so it fails, saying so).
  if (!skip) {
    const withFuse = runAs(process.env.PATH ?? '/usr/bin:/bin');
    assert.equal(withFuse.error, 'EUNSUPPORTED');
    assert.match(withFuse.message, /lack of privileges .*, and fuse-overlayfs could not mount .*merged.*\/dev\/fuse/);
  }
  // Not installed: the error says both why the kernel refused and what is missing.
  const without = runAs(path.join(dir, 'empty-path'));
  assert.equal(without.error, 'EUNSUPPORTED');
  assert.match(without.message, /lack of privileges .* fuse-overlayfs is not installed/);
  assert.equal(isMounted(spec), false);
  assert.equal(fs.existsSync(path.join(driver.home, id, 'merged')), false, 'merged/ is removed after the failure');
});
