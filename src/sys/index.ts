// The only door to syscalls Node 20 lacks. Everything goes through koffi into libc; nothing
// else in lamina imports koffi. Each wrapper throws an Error shaped like Node's own fs errors
// (code, errno, syscall, path) so callers can treat them alike.
import { createRequire } from 'node:module';
import { constants as osConstants } from 'node:os';

const require = createRequire(import.meta.url);

type Fn = (...args: unknown[]) => number | bigint;
interface Libc {
  mknod: Fn; lsetxattr: Fn; lgetxattr: Fn; llistxattr: Fn; lremovexattr: Fn;
  utimensat: Fn; futimens: Fn; mount: Fn; umount2: Fn; renameat2: Fn; getdents64: Fn; syncfs: Fn; syscall: Fn; errno: () => number;
}

let libc: Libc | undefined;

/** The parts of koffi's module this file uses. */
interface Koffi {
  load(path: string): { func(signature: string): Fn };
  errno(): number;
}

/**
 * koffi's entry point spends about 10 ms finding its prebuilt binary (it reads node's own ELF
 * header to tell glibc from musl, then probes paths); on glibc that is this platform package's
 * binary, which is loaded directly. koffi's entry point stays the fallback (musl, other layouts).
 */
function loadKoffi(): Koffi {
  try {
    const native = require(`@koromix/koffi-${process.platform}-${process.arch}/${process.platform}_${process.arch}/koffi.node`) as Partial<Koffi>;
    if (typeof native.load === 'function' && typeof native.errno === 'function') return native as Koffi;
  } catch {
    // not there, or not loadable here
  }
  return require('koffi') as Koffi;
}

// koffi is loaded on first use so commands that never touch a syscall start fast.
function lib(): Libc {
  if (libc) return libc;
  const koffi = loadKoffi();
  const c = koffi.load('libc.so.6');
  libc = {
    mknod: c.func('int mknod(const char *path, uint32_t mode, uint64_t dev)'),
    lsetxattr: c.func('int lsetxattr(const char *path, const char *name, const void *value, size_t size, int flags)'),
    lgetxattr: c.func('intptr_t lgetxattr(const char *path, const char *name, _Out_ void *value, size_t size)'),
    llistxattr: c.func('intptr_t llistxattr(const char *path, _Out_ void *list, size_t size)'),
    lremovexattr: c.func('int lremovexattr(const char *path, const char *name)'),
    utimensat: c.func('int utimensat(int dirfd, const char *path, const int32_t *times, int flags)'),
    futimens: c.func('int futimens(int fd, const int32_t *times)'),
    mount: c.func('int mount(const char *src, const char *target, const char *fstype, unsigned long flags, const char *data)'),
    umount2: c.func('int umount2(const char *target, int flags)'),
    renameat2: c.func('int renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags)'),
    getdents64: c.func('intptr_t getdents64(int fd, _Out_ void *dirp, size_t count)'),
    syncfs: c.func('int syncfs(int fd)'),
    syscall: c.func('long syscall(long nr, ...)'),
    errno: () => koffi.errno() as number,
  };
  return libc;
}

const errnoNames: Record<number, string> = Object.fromEntries(
  Object.entries(osConstants.errno).map(([name, num]) => [num, name]),
);

export class SysError extends Error {
  readonly errno: number;
  readonly code: string;
  readonly syscall: string;
  readonly path?: string;
  constructor(syscall: string, errno: number, path?: string) {
    const code = errnoNames[errno] ?? `E${errno}`;
    super(`${code}: ${syscall} failed${path ? ` for ${path}` : ''} (errno ${errno})`);
    this.errno = errno;
    this.code = code;
    this.syscall = syscall;
    this.path = path;
  }
}

function check(ret: number | bigint, syscall: string, path?: SysPath): number {
  const n = Number(ret);
  if (n < 0) throw new SysError(syscall, lib().errno(), path === undefined ? undefined : pathText(path));
  return n;
}

/**
 * A path argument: a string, or a Buffer for names that are not valid UTF-8. koffi passes a
 * Buffer's bytes as the char pointer, so a Buffer path must end in a NUL byte (see cPath).
 */
export type SysPath = string | Buffer;

/** A NUL-terminated Buffer for a path given as raw bytes. */
export function cPath(bytes: Buffer): Buffer {
  return bytes.length && bytes[bytes.length - 1] === 0 ? bytes : Buffer.concat([bytes, Buffer.alloc(1)]);
}

function pathText(p: SysPath): string {
  return typeof p === 'string' ? p : p.subarray(0, p.indexOf(0) < 0 ? p.length : p.indexOf(0)).toString();
}

/** File type bits of st_mode (one definition for every module that reads or writes them). */
export const S_IFMT = 0o170000;
export const S_IFSOCK = 0o140000;
export const S_IFLNK = 0o120000;
export const S_IFREG = 0o100000;
export const S_IFDIR = 0o040000;
export const S_IFCHR = 0o020000;
export const S_IFBLK = 0o060000;
export const S_IFIFO = 0o010000;
export const AT_FDCWD = -100;
export const AT_SYMLINK_NOFOLLOW = 0x100;
export const UTIME_OMIT = (1 << 30) - 2;
export const RENAME_NOREPLACE = 1;
export const RENAME_EXCHANGE = 2;
export const RENAME_WHITEOUT = 4;
export const MNT_DETACH = 2;
export const MS_RDONLY = 1;

export function makedev(major: number, minor: number): bigint {
  const ma = BigInt(major >>> 0), mi = BigInt(minor >>> 0);
  return ((ma & 0xfffn) << 8n) | ((ma & ~0xfffn) << 32n) | (mi & 0xffn) | ((mi & ~0xffn) << 12n);
}

/** mknod(2): `mode` carries the S_IF* type bits plus permissions. */
export function mknod(path: SysPath, mode: number, major = 0, minor = 0): void {
  check(lib().mknod(path, mode >>> 0, makedev(major, minor)), 'mknod', path);
}

/** Sets an xattr on the path itself, never on a symlink's target. */
export function lsetxattr(path: SysPath, name: string, value: Buffer | string, flags = 0): void {
  const buf = typeof value === 'string' ? Buffer.from(value) : value;
  check(lib().lsetxattr(path, name, buf, buf.length, flags), 'lsetxattr', path);
}

/** Returns the value, or undefined when the attribute is absent (ENODATA). */
export function lgetxattr(path: SysPath, name: string): Buffer | undefined {
  const c = lib();
  for (let size = 256; ; size *= 4) {
    const buf = Buffer.alloc(size);
    const n = Number(c.lgetxattr(path, name, buf, size));
    if (n >= 0) return buf.subarray(0, n);
    const e = c.errno();
    if (e === osConstants.errno.ENODATA) return undefined;
    if (e !== osConstants.errno.ERANGE || size > 1 << 20) throw new SysError('lgetxattr', e, pathText(path));
  }
}

/** Attribute names on the path itself (not following symlinks). */
export function llistxattr(path: SysPath): string[] {
  const c = lib();
  const probe = Buffer.alloc(1024);
  let n = Number(c.llistxattr(path, probe, probe.length));
  let buf = probe;
  if (n < 0) {
    const e = c.errno();
    if (e === osConstants.errno.ENOTSUP) return [];
    if (e !== osConstants.errno.ERANGE) throw new SysError('llistxattr', e, pathText(path));
    const need = check(c.llistxattr(path, null, 0), 'llistxattr', path);
    buf = Buffer.alloc(need + 64);
    n = check(c.llistxattr(path, buf, buf.length), 'llistxattr', path);
  }
  if (n === 0) return [];
  return buf.subarray(0, n - 1).toString('latin1').split('\0').map((s) => Buffer.from(s, 'latin1').toString());
}

export function lremovexattr(path: SysPath, name: string): void {
  check(lib().lremovexattr(path, name), 'lremovexattr', path);
}

// struct timespec[2] as int32 halves: filling an Int32Array avoids a BigInt conversion per call
// (this runs once per extracted entry).
const timesBuf = new Int32Array(8);
function putInt64(i: number, v: number): void {
  timesBuf[i] = v | 0; // low 32 bits (two's complement)
  timesBuf[i + 1] = Math.floor(v / 4294967296);
}
/**
 * Sets atime and mtime with nanosecond precision on the path itself (a symlink is not
 * followed). Times are [seconds, nanoseconds]; pass undefined to leave one unchanged.
 */
export function lutimesNs(path: SysPath, atime: [number, number] | undefined, mtime: [number, number] | undefined): void {
  putInt64(0, atime ? atime[0] : 0);
  putInt64(2, atime ? atime[1] : UTIME_OMIT);
  putInt64(4, mtime ? mtime[0] : 0);
  putInt64(6, mtime ? mtime[1] : UTIME_OMIT);
  check(lib().utimensat(AT_FDCWD, path, timesBuf, AT_SYMLINK_NOFOLLOW), 'utimensat', path);
}

/**
 * Sets atime and mtime with nanosecond precision on an open file (futimens(3)): no path lookup,
 * so cheaper than lutimesNs when the fd is at hand. Times as for lutimesNs.
 */
export function futimesNs(fd: number, atime: [number, number] | undefined, mtime: [number, number] | undefined): void {
  putInt64(0, atime ? atime[0] : 0);
  putInt64(2, atime ? atime[1] : UTIME_OMIT);
  putInt64(4, mtime ? mtime[0] : 0);
  putInt64(6, mtime ? mtime[1] : UTIME_OMIT);
  check(lib().futimens(fd, timesBuf), 'futimens');
}

export function mount(source: string, target: string, fstype: string, flags: number, data: string | null): void {
  check(lib().mount(source, target, fstype, flags, data), 'mount', target);
}

export function umount2(target: string, flags = 0): void {
  check(lib().umount2(target, flags), 'umount2', target);
}

export function renameat2(oldPath: string, newPath: string, flags: number): void {
  check(lib().renameat2(AT_FDCWD, oldPath, AT_FDCWD, newPath, flags >>> 0), 'renameat2', oldPath);
}

/**
 * getdents64(2) on an open directory fd: fills `buf` with linux_dirent64 records (d_ino u64,
 * d_off s64, d_reclen u16, d_type u8, NUL-terminated d_name) and returns the byte count, 0 at
 * the end. Unlike fs.readdir it keeps the file system's own order and lets the caller open the
 * directory with O_NOATIME.
 */
export function getdents64(fd: number, buf: Buffer): number {
  return check(lib().getdents64(fd, buf, buf.length), 'getdents64');
}

const SYS_openat2 = 437; // x86-64
export const RESOLVE_NO_MAGICLINKS = 0x02;
export const RESOLVE_BENEATH = 0x08;
export const RESOLVE_IN_ROOT = 0x10;
const openHow = new BigUint64Array(3);

/**
 * openat2(2): opens `relPath` below the directory `dirFd` with `resolve` flags. With
 * RESOLVE_IN_ROOT the directory acts as the root for the lookup — absolute symlinks and ".."
 * stay inside it, exactly the confinement a layer had when it was extracted.
 * Returns a file descriptor Node's fs functions accept.
 */
export function openat2(dirFd: number, relPath: SysPath, flags: number, resolve: number, mode = 0): number {
  openHow[0] = BigInt(flags >>> 0);
  openHow[1] = BigInt(mode);
  openHow[2] = BigInt(resolve);
  const ret = lib().syscall(SYS_openat2, 'int', dirFd, 'const char *', relPath, 'void *', openHow, 'size_t', 24);
  return check(ret, 'openat2', relPath);
}

// ---------------------------------------------------------------- mount API and flock
// Added for src/mount: the new mount API (kernel 5.2+; overlayfs's `lowerdir+` needs 6.8+) lets
// a mount take one lower layer per call instead of one page-limited string, and flock guards the
// on-disk mount reference counts. All go through the variadic syscall (x86-64 numbers).
const SYS_close = 3;
const SYS_flock = 73;
const SYS_move_mount = 429;
const SYS_fsopen = 430;
const SYS_fsconfig = 431;
const SYS_fsmount = 432;

export const LOCK_SH = 1;
export const LOCK_EX = 2;
export const LOCK_NB = 4;
export const LOCK_UN = 8;
export const FSOPEN_CLOEXEC = 1;
export const FSMOUNT_CLOEXEC = 1;
export const FSCONFIG_SET_FLAG = 0;
export const FSCONFIG_SET_STRING = 1;
export const FSCONFIG_SET_FD = 5;
export const FSCONFIG_CMD_CREATE = 6;
export const MOVE_MOUNT_F_EMPTY_PATH = 4;

/** syncfs(2): writes out everything cached for the file system holding `fd` (data and metadata). */
export function syncfs(fd: number): void {
  check(lib().syncfs(fd), 'syncfs');
}

/** flock(2) on an open fd; LOCK_EX/LOCK_SH block until granted (LOCK_NB: EWOULDBLOCK instead). */
export function flock(fd: number, op: number): void {
  // errno is read after koffi has returned to JS, and the runtime can clobber it in between
  // (seen under load: a LOCK_NB flock on a held lock reported ENOMEM, which flock cannot fail
  // with). A code flock does not return, and EINTR, mean "try again": a failed flock changed
  // nothing (callers never convert a lock on the same fd), so repeating it is harmless.
  for (let attempt = 1; ; attempt++) {
    if (Number(lib().syscall(SYS_flock, 'int', fd, 'int', op)) >= 0) return;
    const e = lib().errno();
    if (attempt < 10 && (e === osConstants.errno.EINTR || !FLOCK_ERRNOS.has(e))) continue;
    throw new SysError('flock', e);
  }
}

/** The errors flock(2) can return (EWOULDBLOCK is EAGAIN on Linux). */
const FLOCK_ERRNOS = new Set([osConstants.errno.EBADF, osConstants.errno.EINTR, osConstants.errno.EINVAL, osConstants.errno.ENOLCK, osConstants.errno.EWOULDBLOCK]);

/** fsopen(2): a file-system context fd for `fsname` (e.g. "overlay"); close it with fs.closeSync. */
export function fsopen(fsname: string, flags = FSOPEN_CLOEXEC): number {
  return check(lib().syscall(SYS_fsopen, 'const char *', fsname, 'unsigned int', flags), 'fsopen', fsname);
}

/**
 * fsconfig(2). `value` is the string for FSCONFIG_SET_STRING (at most 255 bytes), null
 * otherwise; `aux` is the fd for FSCONFIG_SET_FD. `key` is named in the error.
 */
export function fsconfig(fd: number, cmd: number, key: string | null, value: string | null, aux = 0): void {
  check(lib().syscall(SYS_fsconfig, 'int', fd, 'unsigned int', cmd, 'const char *', key, 'const char *', value, 'int', aux), 'fsconfig', key ?? undefined);
}

/** fsmount(2): turns a created context into a detached mount; returns its fd. */
export function fsmount(fsfd: number, flags = FSMOUNT_CLOEXEC, attrFlags = 0): number {
  return check(lib().syscall(SYS_fsmount, 'int', fsfd, 'unsigned int', flags, 'unsigned int', attrFlags), 'fsmount');
}

/** move_mount(2) of the detached mount `mountFd` onto `target`. */
export function moveMountTo(mountFd: number, target: string): void {
  check(lib().syscall(SYS_move_mount, 'int', mountFd, 'const char *', '', 'int', AT_FDCWD, 'const char *', target, 'unsigned int', MOVE_MOUNT_F_EMPTY_PATH), 'move_mount', target);
}

/**
 * close(2) for fds that came from these syscalls (fsopen, fsmount): in a worker thread Node warns
 * when fs.closeSync closes an fd its own fs module did not open.
 */
export function closeFd(fd: number): void {
  check(lib().syscall(SYS_close, 'int', fd), 'close');
}
