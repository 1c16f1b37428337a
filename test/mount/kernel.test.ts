// Kernel overlayfs mounts of real layers (refapp loaded into a fresh store): Docker's option
// strings as the kernel reports them in /proc/self/mountinfo, writes landing in diff/, whiteouts,
// read-only mounts of committed layers, the bottom layer used directly, and each mount method.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { isMounted, mountCount, mountLayer, mountOptions, unmountLayer, countDir, type KernelMethod } from '../../src/mount/index.js';
import { findMount } from '../../src/mount/mountinfo.js';
import { isLaminaError } from '../../src/errors.js';
import * as sys from '../../src/sys/index.js';
import { buildChain, containerLayers, newDriver, refappStore, scratch, someRegularFile, targetPath } from './helpers.js';

const hasIndexParam = fs.existsSync('/sys/module/overlay/parameters/index');
const read = (p: string) => fs.readFileSync(p, 'utf8');

test('a container mount has Docker\'s option string, writes land in diff/, deletes leave a 0:0 whiteout', async (t) => {
  const dir = scratch(t);
  const { store, cacheIDs } = await refappStore(dir);
  const driver = store.driver;
  const home = driver.home;
  const top = cacheIDs[cacheIDs.length - 1];
  const { id, initID } = containerLayers(driver, top);
  const spec = driver.mountSpec(id);

  // Docker's shape, built here from the layer's own `lower` file (spec §3.4).
  const lowerFile = read(path.join(home, id, 'lower'));
  assert.equal(lowerFile.split(':')[0], `l/${read(path.join(home, initID, 'link'))}`, 'the first lower is the init layer');
  const absLowers = lowerFile.split(':').map((l) => `${home}/${l}`).join(':');
  const shown = `lowerdir=${absLowers},upperdir=${home}/${id}/diff,workdir=${home}/${id}/work`;
  const index = hasIndexParam ? 'index=off,' : '';
  assert.equal(mountOptions(spec, 'absolute'), index + shown);
  assert.equal(mountOptions(spec, 'relative'), `${index}lowerdir=${lowerFile},upperdir=${id}/diff,workdir=${id}/work`);

  const r = mountLayer(spec);
  assert.deepEqual(r, { path: path.join(home, id, 'merged'), backend: 'kernel', method: 'absolute' });
  assert.equal(fs.statSync(path.join(home, id)).dev === fs.statSync(r.path).dev, false, 'merged/ is a mount point');
  const entry = findMount(r.path)!;
  assert.equal(entry.fsType, 'overlay');
  assert.equal(entry.source, 'overlay');
  assert.match(entry.mountOptions, /^rw,/);
  // The kernel shows only options that differ from its defaults (index=off is not one of them).
  const opts = entry.superOptions.split(',');
  assert.equal(opts[0], 'rw');
  assert.equal(opts.slice(1, 4).join(','), shown);
  assert.equal(isMounted(spec), true);
  assert.equal(mountCount(spec), 1);

  // Every image layer shows through: each layer's first regular file reads the same in merged/.
  for (const cid of cacheIDs) {
    const f = someRegularFile(driver.diffPath(cid));
    if (f) assert.ok(fs.existsSync(path.join(r.path, f)), `${f} from layer ${cid} is visible`);
  }

  // A write goes to the rw layer's diff/.
  fs.mkdirSync(path.join(r.path, 'newdir'));
  fs.writeFileSync(path.join(r.path, 'newdir', 'hello.txt'), 'written through merged\n');
  assert.equal(read(path.join(home, id, 'diff', 'newdir', 'hello.txt')), 'written through merged\n');
  assert.equal(fs.existsSync(path.join(driver.diffPath(top), 'newdir')), false, 'the image layer is untouched');

  // Deleting a file of an image layer leaves a character device 0:0 in diff/.
  const victim = someRegularFile(driver.diffPath(top)) ?? someRegularFile(driver.diffPath(cacheIDs[0]))!;
  fs.rmSync(path.join(r.path, victim));
  assert.equal(fs.existsSync(path.join(r.path, victim)), false);
  const wh = fs.lstatSync(path.join(home, id, 'diff', victim));
  assert.ok(wh.isCharacterDevice(), `${victim} in diff/ is a character device`);
  assert.equal(wh.rdev, 0, 'whiteout device is 0:0');
  assert.ok(fs.existsSync(path.join(driver.diffPath(top), victim)) || fs.existsSync(path.join(driver.diffPath(cacheIDs[0]), victim)), 'the lower file itself stays');

  assert.deepEqual(unmountLayer(spec), { unmounted: true });
  assert.equal(isMounted(spec), false);
  assert.equal(mountCount(spec), 0);
  assert.equal(fs.existsSync(r.path), false, 'merged/ is removed at unmount');
  assert.equal(fs.existsSync(path.join(countDir(home), id)), false, 'no count file is left');
  // What was written stays in diff/ after unmount.
  assert.equal(read(path.join(home, id, 'diff', 'newdir', 'hello.txt')), 'written through merged\n');
});

test('merged/ is created 0700; a mount that vanished behind lamina\'s back is reconciled', async (t) => {
  const dir = scratch(t);
  const driver = newDriver(dir);
  const chain = buildChain(driver, 3);
  const { id } = containerLayers(driver, chain[2]);
  const spec = driver.mountSpec(id);
  const r = mountLayer(spec);
  assert.equal(read(path.join(r.path, 'layer-0')), 'content of layer 0\n');
  assert.equal(mountLayer(spec).path, r.path);
  assert.equal(mountCount(spec), 2);
  // Someone unmounts it directly (or the machine rebooted): the count of 2 is stale.
  sys.umount2(r.path, sys.MNT_DETACH);
  // moby creates merged/ with mode 0700 (MkdirAndChown(mergedDir, 0o700)).
  assert.equal(fs.statSync(r.path).mode & 0o7777, 0o700);
  assert.equal(isMounted(spec), false);
  assert.equal(mountCount(spec), 0, 'a count without a mount counts nothing');
  // The next mount starts over at one reference, so a single unmount takes it down.
  assert.equal(mountLayer(spec).backend, 'kernel');
  assert.equal(mountCount(spec), 1);
  assert.deepEqual(unmountLayer(spec), { unmounted: true });
  assert.deepEqual(unmountLayer(spec), { unmounted: false }, 'a second unmount is a no-op');
  assert.equal(fs.existsSync(r.path), false);
  assert.equal(fs.existsSync(path.join(countDir(driver.home), id)), false);
});

test('a mount lamina did not count is adopted as one reference (moby\'s counter does the same)', async (t) => {
  const dir = scratch(t);
  const driver = newDriver(dir);
  const chain = buildChain(driver, 2);
  const { id } = containerLayers(driver, chain[1]);
  const spec = driver.mountSpec(id);
  fs.mkdirSync(targetPath(spec));
  sys.mount('overlay', targetPath(spec), 'overlay', 0, mountOptions(spec, 'absolute'));
  assert.equal(mountCount(spec), 1);
  assert.equal(mountLayer(spec).backend, 'kernel');
  assert.equal(mountCount(spec), 2);
  assert.deepEqual(unmountLayer(spec), { unmounted: false });
  assert.deepEqual(unmountLayer(spec), { unmounted: true });
  assert.equal(isMounted(spec), false);
});

test('a committed layer mounts read-only with its own diff/ first; a bottom layer is used directly', async (t) => {
  const dir = scratch(t);
  const { store, cacheIDs } = await refappStore(dir);
  const driver = store.driver;
  const home = driver.home;
  const top = cacheIDs[cacheIDs.length - 1];
  containerLayers(driver, top); // writes `committed` into the top image layer, as Docker does
  const spec = driver.mountSpec(top);
  assert.equal(spec.readonly, true);
  const lowerFile = read(path.join(home, top, 'lower'));
  const index = hasIndexParam ? 'index=off,' : '';
  assert.equal(mountOptions(spec, 'absolute'), `${index}lowerdir=${home}/${top}/diff:${lowerFile.split(':').map((l) => `${home}/${l}`).join(':')}`);

  const r = mountLayer(spec);
  assert.equal(r.backend, 'kernel');
  const entry = findMount(r.path)!;
  // Spec §3.4: `ro,lowerdir=<home>/<id>/diff:<home>/l/…,redirect_dir=on` (redirect_dir from the kernel's display).
  const opts = entry.superOptions.split(',');
  assert.equal(opts[0], 'ro');
  assert.equal(opts[1], `lowerdir=${home}/${top}/diff:${lowerFile.split(':').map((l) => `${home}/${l}`).join(':')}`);
  assert.equal(entry.superOptions.includes('upperdir='), false);
  assert.throws(() => fs.writeFileSync(path.join(r.path, 'nope'), 'x'), (e: NodeJS.ErrnoException) => e.code === 'EROFS');
  assert.deepEqual(unmountLayer(spec), { unmounted: true });
  assert.equal(fs.existsSync(r.path), false);

  const bottom = cacheIDs[0];
  const bspec = driver.mountSpec(bottom);
  const b = mountLayer(bspec);
  assert.deepEqual(b, { path: path.join(home, bottom, 'diff'), backend: 'direct' });
  assert.equal(isMounted(bspec), false);
  assert.equal(mountCount(bspec), 0);
  assert.deepEqual(unmountLayer(bspec), { unmounted: false });
  assert.equal(fs.existsSync(path.join(home, bottom, 'merged')), false, 'no merged/ for a bottom layer');
  assert.throws(() => mountOptions(bspec, 'absolute'), (e) => isLaminaError(e, 'EINVAL'));
});

test('every kernel method mounts the same view, and mountinfo shows what each passed', async (t) => {
  const dir = scratch(t);
  const { store, cacheIDs } = await refappStore(dir);
  const driver = store.driver;
  const home = driver.home;
  const { id } = containerLayers(driver, cacheIDs[cacheIDs.length - 1]);
  const spec = driver.mountSpec(id);
  const lowerFile = read(path.join(home, id, 'lower'));
  let reference: string[] | undefined;
  for (const method of ['absolute', 'relative', 'new-api'] as KernelMethod[]) {
    const r = mountLayer(spec, { method });
    t.after(() => {
      if (isMounted(spec)) unmountLayer(spec);
    });
    assert.equal(r.method, method);
    const names = fs.readdirSync(r.path).filter((n) => !n.startsWith('by-')).sort();
    reference ??= names;
    assert.deepEqual(names, reference, `${method}: same root listing`);
    fs.writeFileSync(path.join(r.path, `by-${method}`), method);
    assert.equal(read(path.join(home, id, 'diff', `by-${method}`)), method);
    const opts = findMount(r.path)!.superOptions;
    if (method === 'absolute') assert.ok(opts.startsWith(`rw,lowerdir=${home}/l/`), opts);
    if (method === 'relative') assert.ok(opts.startsWith(`rw,lowerdir=${lowerFile},upperdir=${id}/diff,workdir=${id}/work`), opts);
    if (method === 'new-api') {
      const items = opts.split(',').filter((o) => o.startsWith('lowerdir+='));
      assert.deepEqual(items, lowerFile.split(':').map((l) => `lowerdir+=${home}/${l}`));
      assert.ok(opts.includes(`,upperdir=${home}/${id}/diff,workdir=${home}/${id}/work`), opts);
    }
    assert.deepEqual(unmountLayer(spec), { unmounted: true });
  }
  assert.equal(process.cwd(), path.resolve('.'), 'the relative method restored the working directory');
});

test('a home path with separator characters mounts through relative paths', async (t) => {
  const dir = scratch(t);
  const odd = path.join(dir, 'we,ird: dir');
  fs.mkdirSync(odd);
  const driver = newDriver(odd);
  const chain = buildChain(driver, 4);
  const { id } = containerLayers(driver, chain[3]);
  const spec = driver.mountSpec(id);
  const r = mountLayer(spec);
  assert.equal(r.method, 'relative');
  for (let i = 0; i < 4; i++) assert.equal(read(path.join(r.path, `layer-${i}`)), `content of layer ${i}\n`);
  assert.deepEqual(unmountLayer(spec), { unmounted: true });
  assert.equal(fs.existsSync(r.path), false);
});

test('mounting a layer whose directory is gone gives a clear error and leaves nothing', async (t) => {
  const dir = scratch(t);
  const driver = newDriver(dir);
  const chain = buildChain(driver, 2);
  const { id } = containerLayers(driver, chain[1]);
  const spec = driver.mountSpec(id);
  driver.remove(id);
  assert.throws(() => mountLayer(spec), (e) => isLaminaError(e, 'ENOTFOUND') && e.message.includes(id));
  assert.equal(fs.existsSync(path.join(countDir(driver.home), id)), false);
  // A lower layer gone: the kernel cannot resolve it.
  const { id: id2 } = containerLayers(driver, chain[1]);
  const spec2 = driver.mountSpec(id2);
  fs.rmSync(path.join(driver.home, spec2.lowers[1]));
  assert.throws(() => mountLayer(spec2), (e) => isLaminaError(e, 'ENOTFOUND') && e.message.includes(targetPath(spec2)));
  assert.equal(fs.existsSync(targetPath(spec2)), false, 'merged/ is removed again');
  assert.equal(isMounted(spec2), false);
});
