// Docker's own images read through the engine give the tree a kernel overlay mount of the same
// layer directories gives: every fixture image, and every layer stack along its chain.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Store } from '../../src/store.js';
import { chainIDs } from '../../src/digest/index.js';
import { UnionFs } from '../../src/union/index.js';
import { expectedImages, fixtureSave } from '../helpers/expected.js';
import { diffMaps, makeUpper, mountOverlay, noAtime } from './harness.js';
import { engineSide, kernelSide, snapshotView } from './ops.js';

const isRoot = process.getuid?.() === 0;

test('fixture images read through the engine match a kernel mount of their layers', { skip: !isRoot && 'needs root (overlay mounts)' }, async (t) => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'lamina-union-fixtures-'));
  t.after(() => fs.rmSync(root, { recursive: true, force: true }));
  const store = Store.open(path.join(root, 'lamina'));
  for (const name of ['refbase', 'refapp'] as const) await store.load(fixtureSave(name));

  let stacks = 0;
  let entries = 0;
  for (const img of expectedImages()) {
    const config = store.images.get(img.imageID);
    const chains = chainIDs(config.rootfs.diff_ids);
    const diffs = chains.map((c) => store.driver.diffPath(store.layers.get(c).cacheID));
    for (let n = 1; n <= diffs.length; n++) {
      const lowers = diffs.slice(0, n).reverse(); // nearest first
      const dir = path.join(root, `${img.source}-${n}`);
      fs.mkdirSync(dir);
      const merged = path.join(dir, 'merged');
      fs.mkdirSync(merged);
      // The kernel needs two lowers for a read-only mount; a one-layer image gets an empty
      // upper, which both sides then share.
      const up = n === 1 ? makeUpper(dir) : undefined;
      const unmount = mountOverlay(merged, lowers, up?.upper, up?.work);
      try {
        // With a shared upper the kernel's reads move its atime before the engine looks.
        const view = (m: Map<string, string>) => (up ? noAtime(m) : m);
        const kernel = view(snapshotView(kernelSide(merged)));
        const engine = view(snapshotView(engineSide(new UnionFs({ lowers, upper: up?.upper, work: up?.work }))));
        const d = diffMaps(kernel, engine, 'kernel', 'engine');
        assert.deepEqual(d, [], `${img.source}, ${n} of ${diffs.length} layers:\n${d.join('\n')}`);
        stacks++;
        entries += kernel.size;
      } finally {
        unmount();
      }
    }
  }
  t.diagnostic(`${stacks} layer stacks, ${entries} entries compared`);
  assert.ok(stacks >= 12);
});
