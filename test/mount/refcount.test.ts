// Mount references counted across processes: the first mountLayer (in any lamina process)
// mounts, the last unmountLayer unmounts, and concurrent processes never lose a count.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { forceUnmount, isMounted, mountCount, mountLayer, unmountLayer, countDir } from '../../src/mount/index.js';
import type { MountSpec } from '../../src/overlay2/driver.js';
import { buildChain, containerLayers, newDriver, scratch } from './helpers.js';

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'child.ts');
const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

function child(op: string, spec: MountSpec, n?: number): unknown {
  const r = spawnSync(process.execPath, ['--import', 'tsx', CHILD, op, JSON.stringify(spec), ...(n ? [String(n)] : [])], {
    cwd: REPO,
    encoding: 'utf8',
    env: process.env,
  });
  assert.equal(r.status, 0, `child ${op} failed: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

function childAsync(op: string, spec: MountSpec, n: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['--import', 'tsx', CHILD, op, JSON.stringify(spec), String(n)], { cwd: REPO, env: process.env, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (d) => (err += d));
    p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`child ${op} exited ${code}: ${err}`))));
  });
}

function containerSpec(dir: string): { spec: MountSpec; home: string; id: string } {
  const driver = newDriver(dir);
  const chain = buildChain(driver, 3);
  const { id } = containerLayers(driver, chain[2]);
  return { spec: driver.mountSpec(id), home: driver.home, id };
}

test('a mount made in one process and shared with another comes down only after both unmount', (t) => {
  const dir = scratch(t);
  const { spec, home, id } = containerSpec(dir);
  const merged = path.join(home, id, 'merged');

  assert.deepEqual(mountLayer(spec), { path: merged, backend: 'kernel', method: 'absolute' });
  assert.deepEqual(child('mount', spec), { path: merged, backend: 'kernel' }, 'the second process finds it mounted');
  assert.equal(mountCount(spec), 2);
  fs.writeFileSync(path.join(merged, 'shared'), 'x');

  assert.deepEqual(unmountLayer(spec), { unmounted: false });
  assert.equal(isMounted(spec), true, 'still mounted for the other process');
  assert.equal(mountCount(spec), 1);
  assert.equal(fs.readFileSync(path.join(merged, 'shared'), 'utf8'), 'x');

  assert.deepEqual(child('unmount', spec), { unmounted: true });
  assert.equal(isMounted(spec), false);
  assert.equal(fs.existsSync(merged), false, 'merged/ is removed');
  assert.equal(fs.existsSync(path.join(countDir(home), id)), false, 'the count file is removed');

  // And the other way round: the child mounts first, this process unmounts last.
  assert.equal((child('mount', spec) as { backend: string }).backend, 'kernel');
  assert.equal(mountLayer(spec).backend, 'kernel');
  assert.deepEqual(child('unmount', spec), { unmounted: false });
  assert.equal(isMounted(spec), true);
  assert.deepEqual(unmountLayer(spec), { unmounted: true });
  assert.equal(isMounted(spec), false);
});

test('processes racing mount/unmount never lose a reference', async (t) => {
  const dir = scratch(t);
  const { spec, home, id } = containerSpec(dir);
  // This process holds one reference throughout; three others mount and unmount 150 times each
  // (long enough to overlap whatever their start-up times).
  mountLayer(spec);
  await Promise.all([0, 1, 2].map(() => childAsync('cycle', spec, 150)));
  assert.equal(isMounted(spec), true, 'the held reference kept it mounted');
  assert.equal(mountCount(spec), 1);
  assert.deepEqual(unmountLayer(spec), { unmounted: true });

  // Without a held reference the racers leave nothing behind.
  await Promise.all([0, 1].map(() => childAsync('cycle', spec, 150)));
  assert.equal(isMounted(spec), false);
  assert.equal(fs.existsSync(path.join(home, id, 'merged')), false);
  assert.equal(fs.existsSync(path.join(countDir(home), id)), false);
});

test('forceUnmount drops every process\'s references at once (rm -f of a mounted container)', (t) => {
  const dir = scratch(t);
  const { spec, home, id } = containerSpec(dir);
  assert.equal((child('mount', spec) as { backend: string }).backend, 'kernel');
  mountLayer(spec);
  assert.equal(mountCount(spec), 2);
  assert.deepEqual(forceUnmount(spec), { unmounted: true, references: 2 });
  assert.equal(isMounted(spec), false);
  assert.equal(fs.existsSync(path.join(home, id, 'merged')), false);
  assert.equal(fs.existsSync(path.join(countDir(home), id)), false);
  // The other process's later unmount finds nothing to do.
  assert.deepEqual(child('unmount', spec), { unmounted: false });
  assert.deepEqual(forceUnmount(spec), { unmounted: false, references: 0 });
});
