// Kernel overlayfs mounts of a MountSpec, the way moby's overlay2 Get() does them, plus the
// new mount API for stacks whose option string cannot fit in the page mount(2) accepts.
//
// Three methods, tried in this order by 'auto':
//  * absolute: Docker's data string, `index=off,lowerdir=<home>/l/A:…,upperdir=<home>/<id>/diff,
//    workdir=<home>/<id>/work`, through mount(2), when it is at most 4095 bytes;
//  * relative: Docker's own fallback, the same string with paths relative to <home>, mounted with
//    the working directory set to <home> (up to about 139 lowers);
//  * new-api: fsopen("overlay") + one fsconfig `lowerdir+` per layer (Linux 6.8+) + fsmount +
//    move_mount: no page limit, only the kernel's own limit of 500 lowers.
// mount(2) never sees more than 4095 bytes: the kernel would cut the string silently and could
// even return 0 with a read-only mount that has no upper (kernel-overlayfs-semantics.md §17).
// Every mount is checked against /proc/self/mountinfo afterwards all the same.
import fs from 'node:fs';
import path from 'node:path';
import type { MountSpec } from '../overlay2/driver.js';
import { LaminaError } from '../errors.js';
import * as sys from '../sys/index.js';
import { escapeOptionPath, findMount } from './mountinfo.js';

export type KernelMethod = 'absolute' | 'relative' | 'new-api';

/** mount(2) copies one page of data including the terminating NUL. */
export const MOUNT_DATA_MAX = 4095;
/** The kernel's OVL_MAX_STACK. */
export const MAX_LOWERS = 500;
/** fsconfig(FSCONFIG_SET_STRING) values are limited to 255 bytes; longer paths go by fd. */
const FSCONFIG_STRING_MAX = 255;

let indexParam: boolean | undefined;
/** moby passes `index=off` only when the overlay module has an `index` parameter. */
export function overlayHasIndexParam(): boolean {
  if (indexParam === undefined) indexParam = fs.existsSync('/sys/module/overlay/parameters/index');
  return indexParam;
}

/**
 * The data string moby's Get() builds for `spec`: absolute (through <home>) or relative to
 * <home>. `withIndex` false leaves out `index=off,` (fuse-overlayfs does not know it).
 */
export function overlayData(spec: MountSpec, form: 'absolute' | 'relative', withIndex = true): string {
  const home = path.resolve(spec.home);
  const at = form === 'absolute' ? (p: string) => path.join(home, p) : (p: string) => p;
  let data = withIndex && overlayHasIndexParam() ? 'index=off,' : '';
  data += 'lowerdir=' + spec.lowers.map(at).join(':');
  if (spec.upper) data += ',upperdir=' + at(spec.upper) + ',workdir=' + at(spec.work ?? '');
  return data;
}

/** Mounts `spec` at <home>/<target> with kernel overlayfs; returns the method that did it. */
export function mountKernel(spec: MountSpec, method: KernelMethod | 'auto' = 'auto'): KernelMethod {
  const home = path.resolve(spec.home);
  if (spec.work) clearVolatileMarker(path.join(home, spec.work));
  if (method === 'auto') {
    // A home path with a separator character in it cannot go into the legacy string as is;
    // relative paths do not contain it.
    const forms = /[:,\\\s]/.test(home) ? (['relative'] as const) : (['absolute', 'relative'] as const);
    for (const form of forms) {
      const data = overlayData(spec, form);
      if (Buffer.byteLength(data) > MOUNT_DATA_MAX) continue;
      try {
        mountLegacy(spec, form, data);
        return form;
      } catch (e) {
        if (!(e instanceof ChdirUnavailable)) throw e; // in a worker thread: take the new API
      }
    }
    method = 'new-api';
  }
  if (method === 'new-api') {
    try {
      mountNewApi(spec);
    } catch (e) {
      if (e instanceof NewApiUnavailable) {
        const target = path.join(home, spec.target);
        throw new LaminaError('EUNSUPPORTED', `cannot mount ${target}: its ${spec.lowers.length} lower layers need the new mount API, and ${e.message}`);
      }
      throw e;
    }
  } else {
    try {
      mountLegacy(spec, method, overlayData(spec, method));
    } catch (e) {
      if (e instanceof ChdirUnavailable) throw new LaminaError('EUNSUPPORTED', `cannot mount ${spec.target} with relative paths from a worker thread (no chdir there)`);
      throw e;
    }
  }
  return method;
}

/** Unmounts an overlay at `target` (MNT_DETACH, as moby's Put()). */
export function unmountKernel(target: string): void {
  try {
    sys.umount2(target, sys.MNT_DETACH);
  } catch (e) {
    if ((e as sys.SysError).code === 'EINVAL') return; // not a mount point (any more)
    throw mountError(e, `cannot unmount ${target}`);
  }
}

/**
 * A `volatile` mount leaves <work>/work/incompat/volatile behind and the kernel then refuses
 * every later mount with that workdir; lamina never mounts volatile, but another tool may have.
 */
function clearVolatileMarker(workDir: string): void {
  const marker = path.join(workDir, 'work', 'incompat', 'volatile');
  if (fs.existsSync(marker)) fs.rmSync(marker, { recursive: true, force: true });
}

function mountLegacy(spec: MountSpec, form: 'absolute' | 'relative', data: string): void {
  const home = path.resolve(spec.home);
  const target = path.join(home, spec.target);
  const bytes = Buffer.byteLength(data);
  if (bytes > MOUNT_DATA_MAX) {
    throw new LaminaError(
      'EUNSUPPORTED',
      `cannot mount ${target}: the ${form} overlay option string for ${spec.lowers.length} lower layers is ${bytes} bytes, over the ${MOUNT_DATA_MAX} the kernel accepts`,
    );
  }
  try {
    if (form === 'absolute') {
      sys.mount('overlay', target, 'overlay', 0, data);
    } else {
      // Docker mounts from a thread whose working directory is <home>. Node has one working
      // directory per process; nothing else runs between the two chdir calls (all of this is
      // synchronous) and lamina passes absolute paths everywhere else.
      const cwd = currentDir();
      try {
        process.chdir(home);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ERR_WORKER_UNSUPPORTED_OPERATION') throw new ChdirUnavailable();
        throw e;
      }
      try {
        sys.mount('overlay', spec.target, 'overlay', 0, data);
      } finally {
        process.chdir(cwd);
      }
    }
  } catch (e) {
    if (e instanceof ChdirUnavailable) throw e;
    throw mountError(e, `cannot mount ${target} (${spec.lowers.length} lower layers, ${form} paths)`);
  }
  const shown = (p: string) => escapeOptionPath(form === 'absolute' ? path.join(home, p) : p);
  const lowers = spec.lowers;
  const fragments = lowers.length === 1
    ? [`,lowerdir=${shown(lowers[0])},`]
    : [`,lowerdir=${shown(lowers[0])}:`, `:${shown(lowers[lowers.length - 1])},`];
  if (spec.upper) fragments.push(`,upperdir=${shown(spec.upper)},`, `,workdir=${shown(spec.work ?? '')},`);
  verifyMounted(spec, target, fragments);
}

function currentDir(): string {
  try {
    return process.cwd();
  } catch {
    return '/'; // the working directory was deleted; "/" is as good a place to return to
  }
}

class NewApiUnavailable extends Error {}
/** Worker threads cannot change the working directory the relative method needs. */
class ChdirUnavailable extends Error {}

function mountNewApi(spec: MountSpec): void {
  const home = path.resolve(spec.home);
  const target = path.join(home, spec.target);
  let fsfd: number;
  try {
    fsfd = sys.fsopen('overlay');
  } catch (e) {
    if ((e as sys.SysError).code === 'ENOSYS') throw new NewApiUnavailable('the kernel has no fsopen(2) (new mount API)');
    throw mountError(e, `cannot mount ${target}: fsopen("overlay") failed`);
  }
  const dirFds: number[] = [];
  let step = 'source';
  try {
    const setPath = (key: string, rel: string) => {
      step = `${key} ${rel}`;
      const abs = path.join(home, rel);
      if (Buffer.byteLength(abs) <= FSCONFIG_STRING_MAX) {
        sys.fsconfig(fsfd, sys.FSCONFIG_SET_STRING, key, abs);
      } else {
        // Longer paths go as an open directory (kernel 6.13+), which has no length limit.
        const fd = fs.openSync(abs, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
        dirFds.push(fd);
        sys.fsconfig(fsfd, sys.FSCONFIG_SET_FD, key, null, fd);
      }
    };
    sys.fsconfig(fsfd, sys.FSCONFIG_SET_STRING, 'source', 'overlay');
    if (overlayHasIndexParam()) {
      step = 'index=off';
      sys.fsconfig(fsfd, sys.FSCONFIG_SET_STRING, 'index', 'off');
    }
    for (let i = 0; i < spec.lowers.length; i++) {
      try {
        setPath('lowerdir+', spec.lowers[i]);
      } catch (e) {
        if (i === 0 && (e as sys.SysError).code === 'EINVAL' && /Unknown parameter/.test(kernelLog(fsfd))) {
          throw new NewApiUnavailable('the kernel\'s overlayfs has no "lowerdir+" parameter (needs Linux 6.8)');
        }
        throw e;
      }
    }
    if (spec.upper) {
      setPath('upperdir', spec.upper);
      setPath('workdir', spec.work ?? '');
    }
    step = 'create';
    sys.fsconfig(fsfd, sys.FSCONFIG_CMD_CREATE, null, null);
    step = 'fsmount';
    const mfd = sys.fsmount(fsfd);
    try {
      step = 'move_mount';
      sys.moveMountTo(mfd, target);
    } finally {
      sys.closeFd(mfd);
    }
  } catch (e) {
    if (e instanceof NewApiUnavailable || e instanceof LaminaError) throw e;
    const log = kernelLog(fsfd);
    throw mountError(e, `cannot mount ${target} (${spec.lowers.length} lower layers, new mount API, at ${step})${log ? `: ${log}` : ''}`);
  } finally {
    for (const fd of dirFds) fs.closeSync(fd);
    sys.closeFd(fsfd);
  }
  // Paths that went by fd are shown resolved (l/<LID> as <id>/diff): those are only counted.
  const fragments: string[] = [];
  const exact = (key: string, rel: string) => {
    const abs = path.join(home, rel);
    fragments.push(Buffer.byteLength(abs) <= FSCONFIG_STRING_MAX ? `,${key}=${escapeOptionPath(abs)},` : `,${key}=`);
  };
  exact('lowerdir+', spec.lowers[0]);
  exact('lowerdir+', spec.lowers[spec.lowers.length - 1]);
  if (spec.upper) {
    exact('upperdir', spec.upper);
    exact('workdir', spec.work ?? '');
  }
  verifyMounted(spec, target, fragments, spec.lowers.length);
}

/** The messages the kernel logged into a file-system context (fsopen fd), one line. */
function kernelLog(fsfd: number): string {
  const out: string[] = [];
  const buf = Buffer.alloc(1024);
  for (let i = 0; i < 16; i++) {
    let n: number;
    try {
      n = fs.readSync(fsfd, buf, 0, buf.length, null);
    } catch {
      break; // ENODATA: no more messages
    }
    if (n <= 0) break;
    out.push(buf.toString('utf8', 0, n).replace(/^[ewi] /, '').trim());
  }
  return out.join('; ');
}

/**
 * Checks mountinfo: an overlay at `target` whose options hold every fragment (the top and the
 * bottom lower layer, upperdir and workdir, each complete and delimited) and, when given, that
 * many `lowerdir+` items. A cut option string loses its tail, so this catches every truncation.
 */
function verifyMounted(spec: MountSpec, target: string, fragments: string[], lowerPlusItems?: number): void {
  const entry = findMount(target);
  const problem = ((): string | undefined => {
    if (!entry) return 'nothing is mounted there afterwards';
    if (entry.fsType !== 'overlay') return `a ${entry.fsType} mount is there instead`;
    const opts = ',' + entry.superOptions + ',';
    const missing = fragments.find((f) => !opts.includes(f));
    if (missing) return `its options lack "${missing.replace(/^,|[,:]$/g, '')}"`;
    if (!spec.upper && opts.includes(',upperdir=')) return 'it has an upperdir although none was asked for';
    if (lowerPlusItems !== undefined) {
      const shown = opts.split(',lowerdir+=').length - 1;
      if (shown !== lowerPlusItems) return `it shows ${shown} lower layers`;
    }
    return undefined;
  })();
  if (problem === undefined) return;
  if (entry) unmountKernel(target);
  throw new LaminaError(
    'EUNSUPPORTED',
    `the kernel's overlay mount at ${target} is not the one requested (${spec.lowers.length} lower layers): ${problem}; it was unmounted again`,
  );
}

/** One line for a failed mount syscall, with a code the CLI maps to an exit status. */
export function mountError(e: unknown, what: string): Error {
  if (e instanceof LaminaError || !(e instanceof sys.SysError)) return e as Error;
  const code = e.code === 'EPERM' || e.code === 'EACCES' ? 'EUNSUPPORTED'
    : e.code === 'EBUSY' ? 'EINUSE'
    : e.code === 'ENOENT' || e.code === 'ENOTDIR' ? 'ENOTFOUND'
    : 'EBADINPUT';
  const hint = e.code === 'EBUSY' ? ' (its upper or work directory is in use by another mount)'
    : e.code === 'EPERM' ? ' (mounting needs CAP_SYS_ADMIN)'
    : '';
  return new LaminaError(code, `${what}: ${e.syscall} failed with ${e.code}${hint}`, { cause: e });
}
