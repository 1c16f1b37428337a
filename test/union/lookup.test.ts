// Lookup and readdir details checked against the kernel on the very same directories (no
// copies, so the on-disk getdents order is identical): the exact readdir merge order, on
// tmpfs and on the root ext4, xwhiteouts, and reading an upper dir the kernel wrote.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as sys from '../../src/sys/index.js';
import { UnionFs } from '../../src/union/index.js';
import { readRawDir } from '../../src/union/dirents.js';
import { buildLayers, freshSeed, makeUpper, mountOverlay, planFromSpec, planLayers, Rng, scratchTmpfs, type PlanEntry } from './harness.js';
import { genOp, kernelSide, KnownPaths, runOp } from './ops.js';

const isRoot = process.getuid?.() === 0;
const skip = !isRoot && 'needs root (overlay mounts)';

/** Every directory's entries in the order a reader gets them: raw getdents through the mount vs the engine. */
function orders(merged: string, u: UnionFs): { kernel: Map<string, string>; engine: Map<string, string> } {
  const kernel = new Map<string, string>();
  const engine = new Map<string, string>();
  const visit = (p: string) => {
    const k = readRawDir(merged + p, true).names;
    kernel.set(p, k.join(','));
    engine.set(p, u.readdir(p).join(','));
    for (const n of k) {
      const child = p === '/' ? '/' + n : p + '/' + n;
      let st: fs.Stats | undefined;
      try {
        st = fs.lstatSync(merged + child);
      } catch {
        st = undefined;
      }
      if (st?.isDirectory()) visit(child);
    }
  };
  visit('/');
  return { kernel, engine };
}

function assertSameOrders(merged: string, u: UnionFs, label: string): number {
  const { kernel, engine } = orders(merged, u);
  for (const [p, k] of kernel) assert.equal(engine.get(p), k, `${label}: readdir order of ${p}`);
  return kernel.size;
}

/** A wide plan: more names per directory, so merge order has something to get wrong. */
function widePlan(seed: number) {
  const rng = new Rng(seed);
  const plan = planLayers(rng, 4);
  // Add many plain files at the root and in /a of every layer, in a random creation order.
  const extra: PlanEntry[] = [];
  for (let layer = 0; layer < 4; layer++) {
    for (let i = 0; i < 40; i++) {
      const name = `n${rng.int(90).toString().padStart(2, '0')}`;
      if (extra.some((e) => e.layer === layer && e.path === '/' + name)) continue;
      extra.push({ ...plan.entries[0], layer, path: '/' + name, kind: 'file', data: Buffer.from(name), xattrs: [], opaque: false, mode: 0o644 });
    }
  }
  return { layers: plan.layers, entries: [...plan.entries, ...extra] };
}

for (const where of ['tmpfs', 'ext4'] as const) {
  test(`readdir returns the kernel's merge order (${where})`, { skip }, (t) => {
    const base = where === 'tmpfs' ? scratchTmpfs(t, 'lamina-union-order-') : fs.mkdtempSync(path.join(os.tmpdir(), 'lamina-union-order-'));
    if (where === 'ext4') t.after(() => fs.rmSync(base, { recursive: true, force: true }));
    let dirs = 0;
    for (let i = 0; i < 4; i++) {
      const seed = freshSeed();
      t.diagnostic(`seed ${seed}`);
      const root = path.join(base, `o${i}`);
      fs.mkdirSync(root);
      const lowers = buildLayers(widePlan(seed), root);
      const merged = path.join(root, 'merged');
      fs.mkdirSync(merged);

      // Read-only: lowers only.
      let unmount = mountOverlay(merged, lowers);
      try {
        dirs += assertSameOrders(merged, new UnionFs({ lowers }), `seed ${seed}, read-only`);
      } finally {
        unmount();
      }

      // With an upper the kernel has written to: run random operations through the kernel,
      // remount, and read the same directories with the engine.
      const { upper, work } = makeUpper(root);
      unmount = mountOverlay(merged, lowers, upper, work);
      try {
        const rng = new Rng(seed ^ 0x5a5a);
        const known = new KnownPaths();
        const kernel = kernelSide(merged);
        for (let n = 0; n < 150; n++) {
          const op = genOp(rng, known);
          known.learn(op, runOp(kernel, op));
        }
      } finally {
        unmount();
      }
      unmount = mountOverlay(merged, lowers, upper, work);
      try {
        dirs += assertSameOrders(merged, new UnionFs({ lowers, upper, work }), `seed ${seed}, with upper`);
      } finally {
        unmount();
      }
    }
    t.diagnostic(`${dirs} directories compared`);
  });
}

test('xwhiteouts (empty files with the whiteout xattr) are treated as the kernel treats them', { skip }, (t) => {
  // Measured on 6.18: lookup hides an xwhiteout in any layer, marked directory or not, upper
  // included; readdir drops it only in lower layers of opaque=x directories.
  const root = scratchTmpfs(t, 'lamina-union-xwh-');
  const xw = [['trusted.overlay.whiteout', Buffer.alloc(0)]] as Array<[string, Buffer]>;
  const empty = Buffer.alloc(0);
  const plan = planFromSpec([
    [
      { path: '/d', kind: 'dir' },
      { path: '/d/gone', kind: 'file', data: empty, xattrs: xw },
      { path: '/plain', kind: 'dir' },
      { path: '/plain/kept', kind: 'file', data: empty, xattrs: xw },
      { path: '/top', kind: 'file', data: empty, xattrs: xw },
      { path: '/e', kind: 'dir' },
    ],
    [
      { path: '/d', kind: 'dir' },
      { path: '/d/gone', kind: 'file' },
      { path: '/d/stays', kind: 'file' },
      { path: '/plain', kind: 'dir' },
      { path: '/plain/kept', kind: 'file' },
      { path: '/top', kind: 'file' },
    ],
    [
      { path: '/e', kind: 'dir' },
      { path: '/e/bot', kind: 'file', data: empty, xattrs: xw },
    ],
  ]);
  const lowers = buildLayers(plan, root);
  sys.lsetxattr(path.join(lowers[0], 'd'), 'trusted.overlay.opaque', 'x');
  sys.lsetxattr(path.join(lowers[2], 'e'), 'trusted.overlay.opaque', 'x');
  const { upper, work } = makeUpper(root);
  for (const [dir, name, mark] of [['d', 'up', false], ['u', 'up', true], ['c', 'up2', false]] as const) {
    fs.mkdirSync(path.join(upper, dir), { recursive: true });
    fs.writeFileSync(path.join(upper, dir, name), '');
    sys.lsetxattr(path.join(upper, dir, name), 'trusted.overlay.whiteout', Buffer.alloc(0));
    if (mark) sys.lsetxattr(path.join(upper, dir), 'trusted.overlay.opaque', 'x');
  }
  const merged = path.join(root, 'merged');
  fs.mkdirSync(merged);
  const unmount = mountOverlay(merged, lowers, upper, work);
  t.after(unmount);
  const u = new UnionFs({ lowers, upper, work });
  // Listing first, then lookups (the kernel decides readdir filtering from what lookups saw).
  for (const p of ['/', '/d', '/plain', '/u', '/c', '/e']) {
    assert.deepEqual(u.readdir(p).sort(), fs.readdirSync(merged + p).sort(), `listing of ${p}`);
  }
  for (const p of ['/top', '/d/gone', '/d/stays', '/d/up', '/plain/kept', '/u/up', '/c/up2', '/e/bot']) {
    assert.equal(u.exists(p), fs.existsSync(merged + p), `does ${p} exist`);
  }
  for (const p of ['/', '/d', '/plain', '/u', '/c', '/e']) {
    assert.deepEqual(u.readdir(p).sort(), fs.readdirSync(merged + p).sort(), `listing of ${p} after lookups`);
  }
  assert.equal(u.exists('/plain/kept'), false, 'an xwhiteout hides the lower file even without opaque=x');
  // Opening (not stat-ing) names a listing entered unchecked must settle them the same way.
  const u2 = new UnionFs({ lowers, upper, work });
  for (const p of ['/', '/d', '/plain', '/u', '/c', '/e']) u2.readdir(p);
  const readable = (read: () => unknown) => {
    try {
      read();
      return true;
    } catch {
      return false;
    }
  };
  for (const p of ['/top', '/d/gone', '/d/stays', '/d/up', '/plain/kept', '/u/up', '/c/up2', '/e/bot']) {
    assert.equal(readable(() => u2.readFile(p)), readable(() => fs.readFileSync(merged + p)), `can ${p} be read`);
  }
});
