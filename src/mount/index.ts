// Mounting layers: moby's overlay2 Get()/Put() for a daemonless tool. A MountSpec (from
// Overlay2Driver.mountSpec) says what the view is; this module makes it appear at <id>/merged
// and counts references across processes, so the first mountLayer mounts and the last
// unmountLayer unmounts, whichever lamina processes they come from.
//
// Backends: kernel overlayfs (see kernel.ts for the three ways it is mounted) and, when the
// kernel refuses for lack of privileges, fuse-overlayfs if it is installed. A bottom layer is
// never mounted: its diff/ is the view ('direct'), as in moby.
import fs from 'node:fs';
import path from 'node:path';
import type { MountSpec } from '../overlay2/driver.js';
import { LaminaError } from '../errors.js';
import { MAX_LOWERS, mountKernel, overlayData, unmountKernel, type KernelMethod } from './kernel.js';
import { mountFuse, onPath, unmountFuse } from './fuse.js';
import { mountState } from './mountinfo.js';
import { openLocked } from './refcount.js';

export type Backend = 'kernel' | 'fuse-overlayfs';
export type { KernelMethod } from './kernel.js';
export { MAX_LOWERS, MOUNT_DATA_MAX } from './kernel.js';
export { countDir, mountRunDir } from './refcount.js';

export interface MountResult {
  /** Absolute merged path, or the diff path of a bottom layer. */
  path: string;
  backend: Backend | 'direct';
  /** How the kernel backend mounted it, when this call made the mount. */
  method?: KernelMethod;
}

export interface MountLayerOptions {
  /** 'auto' (default): kernel, and fuse-overlayfs when the kernel says EPERM. */
  backend?: Backend | 'auto';
  /** Kernel backend only: force one mount method (tests, benchmarks). Default 'auto'. */
  method?: KernelMethod | 'auto';
}

function targetOf(spec: MountSpec): string {
  return path.join(path.resolve(spec.home), spec.target);
}

function checkDepth(spec: MountSpec): void {
  if (spec.lowers.length > MAX_LOWERS) {
    throw new LaminaError(
      'EUNSUPPORTED',
      `cannot mount layer ${spec.id}: it has ${spec.lowers.length} lower layers, over the kernel's limit of ${MAX_LOWERS}`,
    );
  }
}

/**
 * The backend of what is really mounted at the layer's target (the counts are only claims). A
 * FUSE mount whose daemon died is unmounted here and reported as absent, so it is mounted afresh.
 */
function liveMount(target: string): Backend | undefined {
  const state = mountState(target);
  if (state === 'none') return undefined;
  if (state === 'dead-fuse') {
    unmountFuse(target);
    return undefined;
  }
  return state === 'fuse' ? 'fuse-overlayfs' : 'kernel';
}

/**
 * moby's Get(): makes the layer's view appear at <home>/<id>/merged and takes one reference.
 * Only the first reference (in any process) mounts. A mount that exists without any counted
 * reference (made by someone else) counts as one, as in moby's reference counter.
 */
export function mountLayer(spec: MountSpec, opts: MountLayerOptions = {}): MountResult {
  if (spec.direct) return { path: spec.direct, backend: 'direct' };
  checkDepth(spec);
  const home = path.resolve(spec.home);
  const target = targetOf(spec);
  const lock = openLocked(home, spec.id, { create: true, exclusive: true })!;
  try {
    const rec = lock.read();
    const backend = liveMount(target);
    if (backend) {
      lock.write({ count: Math.max(rec.count, 1) + 1, backend });
      return { path: target, backend };
    }
    // Nothing is mounted: a count left from a crash or a reboot is stale and starts over.
    try {
      makeMergedDir(target);
      const result = mountFresh(spec, target, opts);
      lock.write({ count: 1, backend: result.backend as Backend });
      return result;
    } catch (e) {
      removeMergedDir(target);
      lock.remove();
      throw e;
    }
  } finally {
    lock.release();
  }
}

function mountFresh(spec: MountSpec, target: string, opts: MountLayerOptions): MountResult {
  const want = opts.backend ?? 'auto';
  if (want === 'fuse-overlayfs') {
    mountFuse(spec);
    return { path: target, backend: 'fuse-overlayfs' };
  }
  try {
    const method = mountKernel(spec, opts.method ?? 'auto');
    return { path: target, backend: 'kernel', method };
  } catch (e) {
    if (want !== 'auto' || !isPermissionDenied(e)) throw e;
    const refused = `cannot mount ${target}: the kernel refused for lack of privileges (mounting overlayfs needs root)`;
    if (!onPath('fuse-overlayfs')) throw new LaminaError('EUNSUPPORTED', `${refused} and fuse-overlayfs is not installed`, { cause: e });
    try {
      mountFuse(spec);
    } catch (fuseError) {
      throw new LaminaError('EUNSUPPORTED', `${refused}, and ${(fuseError as Error).message}`, { cause: fuseError });
    }
    return { path: target, backend: 'fuse-overlayfs' };
  }
}

function isPermissionDenied(e: unknown): boolean {
  const cause = e instanceof LaminaError ? e.cause : e;
  const code = (cause as { code?: string } | undefined)?.code;
  return code === 'EPERM' || code === 'EACCES';
}

/**
 * moby's Put(): drops one reference; the last one unmounts (MNT_DETACH) and removes merged/.
 * `unmounted` says whether this call took a mount down.
 */
export function unmountLayer(spec: MountSpec): { unmounted: boolean } {
  if (spec.direct) return { unmounted: false };
  const home = path.resolve(spec.home);
  const target = targetOf(spec);
  const lock = openLocked(home, spec.id, { create: true, exclusive: true })!;
  try {
    const rec = lock.read();
    const backend = liveMount(target);
    if (backend && rec.count > 1) {
      lock.write({ count: rec.count - 1, backend: rec.backend });
      return { unmounted: false };
    }
    if (backend === 'fuse-overlayfs') unmountFuse(target);
    else if (backend) unmountKernel(target);
    // Removing merged/ also takes the mount down in other mount namespaces (moby's comment on
    // torvalds/linux 8ed936b5); a merged/ someone wrote into while unmounted stays, as in moby.
    removeMergedDir(target);
    lock.remove();
    return { unmounted: backend !== undefined };
  } finally {
    lock.release();
  }
}

/**
 * Drops every reference, from all processes, and unmounts (for `rm -f` of a container someone
 * still has mounted). `references` is how many were dropped.
 */
export function forceUnmount(spec: MountSpec): { unmounted: boolean; references: number } {
  if (spec.direct) return { unmounted: false, references: 0 };
  const target = targetOf(spec);
  const lock = openLocked(path.resolve(spec.home), spec.id, { create: true, exclusive: true })!;
  try {
    const rec = lock.read();
    const backend = liveMount(target);
    if (backend === 'fuse-overlayfs') unmountFuse(target);
    else if (backend) unmountKernel(target);
    removeMergedDir(target);
    lock.remove();
    return { unmounted: backend !== undefined, references: backend ? Math.max(rec.count, 1) : 0 };
  } finally {
    lock.release();
  }
}

function makeMergedDir(target: string): void {
  try {
    fs.mkdirSync(target, { mode: 0o700 });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new LaminaError('ENOTFOUND', `layer directory ${path.dirname(target)} does not exist`);
    if (code !== 'EEXIST') throw e;
  }
}

function removeMergedDir(target: string): void {
  try {
    fs.rmdirSync(target);
  } catch {
    // ENOENT, or not empty/busy: moby ignores these too
  }
}

export function isMounted(spec: MountSpec): boolean {
  if (spec.direct) return false;
  return mountState(targetOf(spec)) !== 'none';
}

/** References held on the layer's mount (0 when it is not mounted, whatever a count says). */
export function mountCount(spec: MountSpec): number {
  if (spec.direct) return 0;
  const lock = openLocked(path.resolve(spec.home), spec.id, { create: false, exclusive: false });
  try {
    if (mountState(targetOf(spec)) === 'none') return 0;
    return Math.max(lock?.read().count ?? 0, 1);
  } finally {
    lock?.release();
  }
}

/**
 * Docker's exact mount data for the layer: `index=off,lowerdir=<home>/l/A:…,upperdir=<home>/<id>/diff,
 * workdir=<home>/<id>/work` (absolute) or the same relative to <home>; `index=off,` only when the
 * overlay module has an index parameter.
 */
export function mountOptions(spec: MountSpec, form: 'absolute' | 'relative'): string {
  if (spec.direct) throw new LaminaError('EINVAL', `layer ${spec.id} is a bottom layer: its diff/ is used directly, it is never mounted`);
  return overlayData(spec, form);
}
