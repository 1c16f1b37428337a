// Deep layer stacks: the option string mount(2) takes is limited to one page and the kernel cuts
// a longer one silently, so past 4095 bytes lamina switches to relative paths (Docker's way) and
// then to the new mount API, up to the kernel's 500 lowers; beyond that it refuses clearly.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { isMounted, mountLayer, mountOptions, unmountLayer, countDir, MAX_LOWERS, MOUNT_DATA_MAX } from '../../src/mount/index.js';
import { mountKernel } from '../../src/mount/kernel.js';
import { findMount } from '../../src/mount/mountinfo.js';
import { isLaminaError } from '../../src/errors.js';
import type { MountSpec } from '../../src/overlay2/driver.js';
import { buildChain, containerLayers, newDriver, scratch, targetPath } from './helpers.js';

const DIST_MOUNT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../dist/mount/index.js');
const read = (p: string) => fs.readFileSync(p, 'utf8');
const bytes = (s: string) => Buffer.byteLength(s);

/** Every layer's own file reads back through the view, and nothing else is missing. */
function assertAllLayersVisible(merged: string, n: number): void {
  const names = new Set(fs.readdirSync(merged));
  for (let i = 0; i < n; i++) {
    assert.ok(names.has(`layer-${i}`), `layer-${i} is listed`);
    assert.equal(read(path.join(merged, `layer-${i}`)), `content of layer ${i}\n`, `layer-${i} reads back`);
  }
}

test('a 100-layer image (absolute string too long, relative fits) mounts with relative paths', async (t) => {
  const dir = scratch(t, { tmpfs: true });
  const driver = newDriver(dir);
  const chain = buildChain(driver, 99);
  const { id } = containerLayers(driver, chain[chain.length - 1]);
  const spec = driver.mountSpec(id);
  assert.equal(spec.lowers.length, 100);
  // The case Docker handles with its chdir method: over a page absolute, under it relative.
  assert.ok(bytes(mountOptions(spec, 'absolute')) > MOUNT_DATA_MAX, `home ${driver.home} makes the absolute string long`);
  assert.ok(bytes(mountOptions(spec, 'relative')) <= MOUNT_DATA_MAX);
  // Forcing the absolute string is refused before the kernel sees it.
  assert.throws(() => mountLayer(spec, { method: 'absolute' }), (e) => isLaminaError(e, 'EUNSUPPORTED') && /over the 4095/.test(e.message));
  assert.equal(isMounted(spec), false);
  assert.equal(fs.existsSync(targetPath(spec)), false);

  const r = mountLayer(spec);
  assert.equal(r.method, 'relative');
  const opts = findMount(r.path)!.superOptions;
  assert.ok(opts.startsWith(`rw,lowerdir=${read(path.join(driver.home, id, 'lower'))},upperdir=${id}/diff,workdir=${id}/work`), opts);
  assertAllLayersVisible(r.path, 99);
  fs.writeFileSync(path.join(r.path, 'layer-5'), 'changed\n');
  assert.equal(read(path.join(driver.home, id, 'diff', 'layer-5')), 'changed\n');
  assert.deepEqual(unmountLayer(spec), { unmounted: true });
});

test('a 200-layer image mounts rw and read-only, and every layer reads correctly', async (t) => {
  const dir = scratch(t, { tmpfs: true });
  const driver = newDriver(dir);
  const chain = buildChain(driver, 200);
  const top = chain[chain.length - 1];
  const { id } = containerLayers(driver, top);
  const spec = driver.mountSpec(id);
  assert.equal(spec.lowers.length, 201);
  assert.ok(bytes(mountOptions(spec, 'relative')) > MOUNT_DATA_MAX, 'even the relative string is over a page');

  const r = mountLayer(spec);
  assert.equal(r.method, 'new-api');
  const opts = findMount(r.path)!.superOptions.split(',');
  const lowers = opts.filter((o) => o.startsWith('lowerdir+='));
  assert.deepEqual(lowers, spec.lowers.map((l) => `lowerdir+=${driver.home}/${l}`), 'every lower, in order, nearest first');
  assert.ok(opts.includes(`upperdir=${driver.home}/${id}/diff`));
  assertAllLayersVisible(r.path, 200);
  fs.rmSync(path.join(r.path, 'layer-0'));
  assert.ok(fs.lstatSync(path.join(driver.home, id, 'diff', 'layer-0')).isCharacterDevice(), 'whiteout for the bottom layer\'s file');
  assert.deepEqual(unmountLayer(spec), { unmounted: true });
  assert.equal(fs.existsSync(r.path), false);

  // The top image layer is committed (it has a child): read-only, its own diff/ first, 200 lowers.
  const ro = driver.mountSpec(top);
  assert.equal(ro.readonly, true);
  assert.equal(ro.lowers.length, 200);
  const rr = mountLayer(ro);
  assertAllLayersVisible(rr.path, 200);
  assert.throws(() => fs.writeFileSync(path.join(rr.path, 'x'), 'x'), (e: NodeJS.ErrnoException) => e.code === 'EROFS');
  assert.deepEqual(unmountLayer(ro), { unmounted: true });
});

test('500 lowers (the kernel\'s limit) mount; 501 fail with a clear error, checked against the kernel', async (t) => {
  const dir = scratch(t, { tmpfs: true });
  const driver = newDriver(dir);
  const chain = buildChain(driver, 500);
  const top = chain[chain.length - 1];
  // Docker writes `committed` into a layer once it has a child; the top layer of a 500-layer
  // image gets it from its first container (whose own stack would then be too deep to mount).
  fs.writeFileSync(path.join(driver.home, top, 'committed'), '', { mode: 0o600 });
  const ro = driver.mountSpec(top);
  assert.equal(ro.lowers.length, MAX_LOWERS);
  const r = mountLayer(ro);
  assert.equal(r.method, 'new-api');
  assertAllLayersVisible(r.path, 500);
  assert.deepEqual(unmountLayer(ro), { unmounted: true });

  // One more distinct layer below the bottom makes 501.
  const [extra] = buildChain(driver, 1);
  const deep: MountSpec = { ...ro, lowers: [...ro.lowers, `l/${driver.info(extra).link}`] };
  assert.equal(deep.lowers.length, 501);
  assert.throws(
    () => mountLayer(deep),
    (e) => isLaminaError(e, 'EUNSUPPORTED') && e.message.includes('501 lower layers') && e.message.includes(top),
  );
  assert.equal(isMounted(deep), false);
  assert.equal(fs.existsSync(targetPath(deep)), false, 'no merged/ is left');
  assert.equal(fs.existsSync(path.join(countDir(driver.home), top)), false, 'no count file is left');
  // The limit is the kernel's own: handed 501 lowers directly, it refuses too.
  fs.mkdirSync(targetPath(deep));
  t.after(() => fs.rmSync(targetPath(deep), { recursive: true, force: true }));
  assert.throws(() => mountKernel(deep, 'new-api'), (e) => e instanceof Error && /too many lower directories, limit is 500/.test(e.message));
  assert.equal(isMounted(deep), false);
});

test('from a worker thread (which cannot chdir) the relative case takes the new mount API', { skip: !fs.existsSync(DIST_MOUNT) && 'dist/ is not built' }, async (t) => {
  const dir = scratch(t, { tmpfs: true });
  const driver = newDriver(dir);
  const chain = buildChain(driver, 99);
  const { id } = containerLayers(driver, chain[chain.length - 1]);
  const spec = driver.mountSpec(id);
  assert.ok(bytes(mountOptions(spec, 'relative')) <= MOUNT_DATA_MAX);
  const code = `
    const { parentPort, workerData } = require('node:worker_threads');
    import(workerData.module).then((m) => {
      const r = m.mountLayer(workerData.spec);
      const names = require('node:fs').readdirSync(r.path).length;
      parentPort.postMessage({ r, names, u: m.unmountLayer(workerData.spec) });
    }, (e) => parentPort.postMessage({ error: String(e) }));`;
  const w = new Worker(code, { eval: true, workerData: { spec, module: DIST_MOUNT }, env: process.env });
  const msg = await new Promise<{ r: { method: string }; names: number; u: { unmounted: boolean }; error?: string }>((resolve, reject) => {
    w.once('message', resolve);
    w.once('error', reject);
  });
  await w.terminate();
  assert.equal(msg.error, undefined);
  assert.equal(msg.r.method, 'new-api');
  assert.equal(msg.names, 99, 'every layer\'s file is listed');
  assert.deepEqual(msg.u, { unmounted: true });
  assert.equal(isMounted(spec), false);
});
