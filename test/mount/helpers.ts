// Shared set-up for the mount tests: a scratch dir whose mounts are always taken down, layer
// chains built with the real driver, and the refapp image loaded into a fresh store.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Overlay2Driver, generateID, type MountSpec } from '../../src/overlay2/driver.js';
import { Store } from '../../src/store.js';
import * as sys from '../../src/sys/index.js';
import { fixtureSave } from '../helpers/expected.js';
import { findMount } from '../../src/mount/mountinfo.js';
import { chainIDs } from '../../src/digest/index.js';

interface After {
  after: (fn: () => void | Promise<void>) => void;
}

/**
 * A fresh temp dir for one test. Its count files go under it too (LAMINA_RUN_DIR), so removing it
 * leaves nothing behind. On the way out every mount below it is detached first, whatever state
 * the test left.
 */
export function scratch(t: After, opts: { tmpfs?: boolean } = {}): string {
  // Deep stacks create hundreds of layer dirs; tmpfs spares them ext4's slow re-creation after
  // deletions (platform-notes.md, "Benchmarking trap"). The rest runs where stores usually live.
  const base = opts.tmpfs && fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir();
  const dir = fs.mkdtempSync(path.join(base, 'lamina-mount-'));
  process.env.LAMINA_RUN_DIR = path.join(dir, 'run');
  t.after(() => {
    detachAllBelow(dir);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}

/** Detaches every mount whose mount point lies below `dir` (deepest first). */
export function detachAllBelow(dir: string): void {
  const points = fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((p): p is string => !!p)
    .map((p) => p.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))))
    .filter((p) => p.startsWith(dir + '/'))
    .sort((a, b) => b.length - a.length);
  for (const p of points) {
    for (let i = 0; i < 8 && findMount(p); i++) {
      try {
        sys.umount2(p, sys.MNT_DETACH);
      } catch {
        break;
      }
    }
  }
}

/**
 * `n` layer directories stacked with driver.create, each holding `layer-<i>` with content
 * `content of layer <i>` (i from 0, bottom first). Returns their ids, bottom first.
 */
export function buildChain(driver: Overlay2Driver, n: number, parent?: string): string[] {
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const id = generateID();
    driver.create(id, parent);
    fs.writeFileSync(path.join(driver.diffPath(id), `layer-${i}`), `content of layer ${i}\n`);
    ids.push(id);
    parent = id;
  }
  return ids;
}

export function newDriver(dir: string): Overlay2Driver {
  const driver = new Overlay2Driver(path.join(dir, 'overlay2'));
  driver.init();
  return driver;
}

/** A container-like pair on top of `top`: `<id>-init` and the rw `<id>` layer (as Docker creates them). */
export function containerLayers(driver: Overlay2Driver, top: string): { id: string; initID: string } {
  const id = generateID();
  const initID = `${id}-init`;
  driver.create(initID, top);
  driver.create(id, initID);
  return { id, initID };
}

export interface RefappStore {
  store: Store;
  /** cache-ids of refapp's layers, bottom first. */
  cacheIDs: string[];
}

export async function refappStore(dir: string): Promise<RefappStore> {
  const store = Store.open(path.join(dir, 'root'));
  const [loaded] = await store.load(fixtureSave('refapp'));
  const rec = store.image(loaded.id);
  const cacheIDs = chainIDs(rec.config.rootfs.diff_ids).map((c) => store.layers.get(c).cacheID);
  return { store, cacheIDs };
}

export function targetPath(spec: MountSpec): string {
  return path.join(spec.home, spec.target);
}

/** The first regular file (relative path) in a layer's diff/, searched breadth-first. */
export function someRegularFile(diff: string): string | undefined {
  const queue = [''];
  while (queue.length) {
    const rel = queue.shift()!;
    for (const d of fs.readdirSync(path.join(diff, rel), { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const r = path.join(rel, d.name);
      if (d.isFile()) return r;
      if (d.isDirectory()) queue.push(r);
    }
  }
  return undefined;
}
