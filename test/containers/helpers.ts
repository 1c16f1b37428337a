// Shared set-up for the container tests: a fresh root with refapp:1 loaded from Docker's own
// save, containers on it, and real kernel overlay mounts of a container (unmounted in t.after,
// also when the test fails).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { Store } from '../../src/store.js';
import type { Container } from '../../src/containers/store.js';
import * as sys from '../../src/sys/index.js';
import { fixtureSave } from '../helpers/expected.js';

export interface After { after: (fn: () => void | Promise<void>) => void }

export function tmpDir(t: After, prefix = 'lamina-ctr-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A fresh store with refapp:1 loaded (Docker's `docker save` of it). */
export async function refappStore(t: After): Promise<{ store: Store; root: string }> {
  const root = path.join(tmpDir(t), 'root');
  const store = Store.open(root);
  await store.load(fixtureSave('refapp'));
  return { store, root };
}

export function createOn(store: Store, name?: string, cmd: string[] = ['sleep', '3600']): Container {
  const imageID = store.resolveImage('refapp:1');
  return store.containers.create({ name, imageRef: 'refapp:1', imageID, image: store.images.get(imageID), cmd });
}

/** The container's lowers for a kernel mount: init layer, then the image layers (nearest first). */
export function containerLowers(store: Store, c: Container): string[] {
  return [store.driver.diffPath(c.mount.initID), ...store.driver.lowerDiffPaths(c.mount.initID)];
}

/**
 * Mounts the container rw with the kernel, as dockerd does (index=off, upper + work of the rw
 * layer), at a private mount point; unmounted when the test ends.
 */
export function mountRW(t: After, store: Store, c: Container): string {
  const dir = store.driver.dir(c.mount.mountID);
  const merged = fs.mkdtempSync(path.join(os.tmpdir(), 'lamina-merged-'));
  const data = `index=off,lowerdir=${containerLowers(store, c).join(':')},upperdir=${dir}/diff,workdir=${dir}/work`;
  sys.mount('overlay', merged, 'overlay', 0, data);
  t.after(() => unmount(merged));
  return merged;
}

/** A read-only kernel view of the container's lowers (what `docker diff` compares against). */
export function mountLowers(t: After, store: Store, c: Container): string {
  const merged = fs.mkdtempSync(path.join(os.tmpdir(), 'lamina-lowers-'));
  sys.mount('overlay', merged, 'overlay', sys.MS_RDONLY, `lowerdir=${containerLowers(store, c).join(':')}`);
  t.after(() => unmount(merged));
  return merged;
}

export function unmount(merged: string): void {
  try {
    sys.umount2(merged, sys.MNT_DETACH);
  } catch (e) {
    if ((e as sys.SysError).code !== 'EINVAL' && (e as sys.SysError).code !== 'ENOENT') throw e;
  }
  fs.rmSync(merged, { recursive: true, force: true });
}

/** Runs a shell command inside the merged tree with busybox-free host tools (paths made absolute). */
export function sh(script: string): void {
  execFileSync('/bin/sh', ['-ec', script], { stdio: ['ignore', 'pipe', 'pipe'] });
}

/**
 * Spec §10's change set, applied through a kernel mount of the container: new files and a
 * symlink in /tmp, an append to /etc/passwd, rm of a lower file, rm -rf and re-create of a lower
 * dir, a rename of a lower file, a chmod.
 */
export function applySection10Changes(merged: string): void {
  const m = merged;
  fs.writeFileSync(`${m}/tmp/new.txt`, 'new file');
  fs.symlinkSync('/x', `${m}/tmp/sym`);
  fs.appendFileSync(`${m}/etc/passwd`, 'x:x:1:1::/:/bin/sh\n');
  fs.rmSync(`${m}/data/a.txt`);
  fs.rmSync(`${m}/opt/olddir`, { recursive: true });
  fs.mkdirSync(`${m}/opt/olddir`, { mode: 0o755 });
  fs.chmodSync(`${m}/opt/olddir`, 0o755);
  fs.writeFileSync(`${m}/opt/olddir/z`, 'z\n');
  fs.renameSync(`${m}/app/c2.txt`, `${m}/app/c2.renamed`);
  fs.chmodSync(`${m}/data/b.txt`, 0o700);
}
