// The trees `lamina cp` copies between, behind one small interface: a container seen through the
// userspace overlay engine (writes land in its upper dir by the kernel's rules), a real directory
// confined to itself (the merged/ dir of a mounted container, or a host directory), both
// addressed with absolute paths inside the tree ('/etc/passwd').
//
// A real directory is confined the way moby confines container paths (FollowSymlinkInScope),
// but race-free: every lookup goes through openat2(RESOLVE_IN_ROOT), so absolute symlinks and
// '..' stay inside the tree even while a running container swaps a directory for a symlink
// (CVE-2018-15664 was that race in `docker cp`). The last component is then addressed through
// the parent's descriptor (/proc/self/fd/N/name), never re-resolved from the host's root.
import fs from 'node:fs';
import { constants as osConstants } from 'node:os';
import { LaminaError } from '../errors.js';
import * as sys from '../sys/index.js';
import type { UnionFs } from '../union/index.js';

export type Times = [number, number];

/** What cp needs from a tree. Paths are absolute inside the tree; symlinks resolve inside it. */
export interface TreeView {
  /** Names the tree in messages ("container web", "the host"). */
  readonly label: string;
  /** A tree path as messages show it ("/etc/passwd in container web", "/home/me/out/x"). */
  show(p: string): string;
  lstat(p: string): fs.BigIntStats;
  stat(p: string): fs.BigIntStats;
  readdir(p: string): string[];
  readlink(p: string): string;
  /** The path with every symlink resolved (inside the tree). */
  realpath(p: string): string;
  /** A file descriptor to read a regular file (the last component is not followed). */
  openRead(p: string): number;
  /** Creates a regular file that must not exist yet; returns a descriptor to write it. */
  createFile(p: string, mode: number): number;
  getxattr(p: string, name: string): Buffer | undefined;
  mkdir(p: string, mode: number): void;
  symlink(target: string, p: string): void;
  link(existing: string, p: string): void;
  /** mknod(2): `mode` carries the S_IF* type. */
  mknod(p: string, mode: number, major: number, minor: number): void;
  unlink(p: string): void;
  rmdir(p: string): void;
  lchown(p: string, uid: number, gid: number): void;
  /** chmod of the entry itself (callers never pass a symlink). */
  chmod(p: string, mode: number): void;
  /** Times of the entry itself (a symlink is not followed). */
  lutimes(p: string, atime: Times, mtime: Times): void;
  setxattr(p: string, name: string, value: Buffer): void;
  /** Releases what the view holds open. */
  close(): void;
}

const { O_RDONLY, O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW, O_DIRECTORY } = fs.constants;
const O_PATH = 0o10000000;
const O_CLOEXEC = 0o2000000;
const IN_ROOT = sys.RESOLVE_IN_ROOT | sys.RESOLVE_NO_MAGICLINKS;

/** A container's merged view through the union engine (read-only without upper/work). */
export function unionView(u: UnionFs, label: string): TreeView {
  return {
    label,
    show: (p) => `${p} in ${label}`,
    lstat: (p) => u.lstat(p, { bigint: true }),
    stat: (p) => u.stat(p, { bigint: true }),
    readdir: (p) => u.readdir(p),
    readlink: (p) => u.readlink(p),
    realpath: (p) => u.realpath(p),
    openRead: (p) => u.open(p, O_RDONLY | O_NOFOLLOW),
    createFile: (p, mode) => u.open(p, O_WRONLY | O_CREAT | O_EXCL, mode),
    getxattr: (p, name) => {
      try {
        return u.getxattr(p, name);
      } catch (e) {
        if (codeOf(e) === 'ENODATA' || codeOf(e) === 'EOPNOTSUPP') return undefined;
        throw e;
      }
    },
    mkdir: (p, mode) => u.mkdir(p, mode),
    symlink: (target, p) => u.symlink(target, p),
    link: (existing, p) => u.link(existing, p),
    mknod: (p, mode, major, minor) => u.mknod(p, mode, major, minor),
    unlink: (p) => u.unlink(p),
    rmdir: (p) => u.rmdir(p),
    lchown: (p, uid, gid) => u.lchown(p, uid, gid),
    chmod: (p, mode) => u.chmod(p, mode),
    lutimes: (p, atime, mtime) => u.lutimes(p, atime, mtime),
    setxattr: (p, name, value) => u.setxattr(p, name, value),
    close: () => {},
  };
}

/** Splits a tree path into its components ('.' dropped, '..' clamped at the root, as filepath.Clean does). */
export function pathParts(p: string): string[] {
  const out: string[] = [];
  for (const c of p.split('/')) {
    if (c === '' || c === '.') continue;
    if (c === '..') out.pop();
    else out.push(c);
  }
  return out;
}

/** A real directory as a tree confined to itself (see the file comment). */
export class RootedView implements TreeView {
  private readonly rootFd: number;
  /** The last parent directory looked up: consecutive entries of a walk share it. */
  private cachedDir: string | undefined;
  private cachedFd = -1;

  /**
   * A host directory (`inContainer` undefined: messages show host paths) or a container's
   * merged/ mount (messages say "in <inContainer>").
   */
  constructor(readonly root: string, private readonly inContainer?: string) {
    try {
      this.rootFd = fs.openSync(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    } catch (e) {
      throw relabel(e, 'open', root);
    }
  }

  get label(): string {
    return this.inContainer ?? this.root;
  }

  show(p: string): string {
    if (this.inContainer) return `${p} in ${this.inContainer}`;
    return this.root === '/' ? p : this.root.replace(/\/+$/, '') + (p === '/' ? '' : p);
  }

  close(): void {
    this.forget();
    fs.closeSync(this.rootFd);
  }

  /** Drops the cached parent: after a removal, a path may name another directory. */
  private forget(): void {
    if (this.cachedFd >= 0) fs.closeSync(this.cachedFd);
    this.cachedFd = -1;
    this.cachedDir = undefined;
  }

  private dirFd(rel: string): number {
    if (rel === '') return this.rootFd;
    if (rel === this.cachedDir) return this.cachedFd;
    const fd = sys.openat2(this.rootFd, rel, O_PATH | O_DIRECTORY | O_CLOEXEC, IN_ROOT);
    this.forget();
    this.cachedDir = rel;
    this.cachedFd = fd;
    return fd;
  }

  /** Runs `fn` on a host path naming the entry itself: its parent pinned by a descriptor. */
  private at<T>(p: string, syscall: string, fn: (real: string) => T): T {
    const parts = pathParts(p);
    try {
      if (parts.length === 0) return fn(`/proc/self/fd/${this.rootFd}/.`);
      const name = parts.pop()!;
      return fn(`/proc/self/fd/${this.dirFd(parts.join('/'))}/${name}`);
    } catch (e) {
      throw relabel(e, syscall, p);
    }
  }

  /** Opens the path itself (following a final symlink unless O_NOFOLLOW is in `flags`). */
  private open(p: string, flags: number, syscall: string, mode = 0): number {
    const rel = pathParts(p).join('/') || '.';
    try {
      return sys.openat2(this.rootFd, rel, flags | O_CLOEXEC, IN_ROOT, mode);
    } catch (e) {
      throw relabel(e, syscall, p);
    }
  }

  private withFd<T>(p: string, flags: number, syscall: string, fn: (fd: number) => T): T {
    const fd = this.open(p, flags, syscall);
    try {
      return fn(fd);
    } catch (e) {
      throw relabel(e, syscall, p);
    } finally {
      fs.closeSync(fd);
    }
  }

  lstat(p: string): fs.BigIntStats {
    return this.at(p, 'lstat', (r) => fs.lstatSync(r, { bigint: true }));
  }

  stat(p: string): fs.BigIntStats {
    return this.withFd(p, O_PATH, 'stat', (fd) => fs.fstatSync(fd, { bigint: true }));
  }

  readdir(p: string): string[] {
    return this.withFd(p, O_RDONLY | O_DIRECTORY, 'scandir', (fd) => fs.readdirSync(`/proc/self/fd/${fd}`));
  }

  readlink(p: string): string {
    return this.at(p, 'readlink', (r) => fs.readlinkSync(r));
  }

  realpath(p: string): string {
    const root = fs.readlinkSync(`/proc/self/fd/${this.rootFd}`);
    const real = this.withFd(p, O_PATH, 'realpath', (fd) => fs.readlinkSync(`/proc/self/fd/${fd}`));
    if (real === root) return '/';
    return root === '/' ? real : real.slice(root.length);
  }

  openRead(p: string): number {
    return this.open(p, O_RDONLY | O_NOFOLLOW, 'open');
  }

  createFile(p: string, mode: number): number {
    return this.open(p, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 'open', mode);
  }

  getxattr(p: string, name: string): Buffer | undefined {
    return this.at(p, 'lgetxattr', (r) => {
      try {
        return sys.lgetxattr(r, name);
      } catch (e) {
        if (codeOf(e) === 'EOPNOTSUPP' || codeOf(e) === 'ENOTSUP') return undefined;
        throw e;
      }
    });
  }

  mkdir(p: string, mode: number): void {
    this.at(p, 'mkdir', (r) => fs.mkdirSync(r, mode));
  }

  symlink(target: string, p: string): void {
    this.at(p, 'symlink', (r) => fs.symlinkSync(target, r));
  }

  link(existing: string, p: string): void {
    // Two parents: the existing entry's is pinned by its own descriptor.
    const parts = pathParts(existing);
    const name = parts.pop();
    if (name === undefined) throw relabel(sysError('EPERM'), 'link', existing);
    const fd = this.open('/' + parts.join('/'), O_PATH | O_DIRECTORY, 'link');
    try {
      this.at(p, 'link', (r) => fs.linkSync(`/proc/self/fd/${fd}/${name}`, r));
    } finally {
      fs.closeSync(fd);
    }
  }

  mknod(p: string, mode: number, major: number, minor: number): void {
    this.at(p, 'mknod', (r) => sys.mknod(r, mode, major, minor));
  }

  unlink(p: string): void {
    this.at(p, 'unlink', (r) => fs.unlinkSync(r));
    this.forget();
  }

  rmdir(p: string): void {
    this.at(p, 'rmdir', (r) => fs.rmdirSync(r));
    this.forget();
  }

  lchown(p: string, uid: number, gid: number): void {
    this.at(p, 'lchown', (r) => fs.lchownSync(r, uid, gid));
  }

  chmod(p: string, mode: number): void {
    // Through an O_PATH descriptor of the entry itself: chmod never follows a swapped-in symlink.
    this.withFd(p, O_PATH | O_NOFOLLOW, 'chmod', (fd) => fs.chmodSync(`/proc/self/fd/${fd}`, mode));
  }

  lutimes(p: string, atime: Times, mtime: Times): void {
    this.at(p, 'utimensat', (r) => sys.lutimesNs(r, atime, mtime));
  }

  setxattr(p: string, name: string, value: Buffer): void {
    this.at(p, 'lsetxattr', (r) => sys.lsetxattr(r, name, value));
  }
}

export function joinTree(dir: string, name: string): string {
  return dir === '/' ? '/' + name : dir + '/' + name;
}

export function dirOf(p: string): string {
  const parts = pathParts(p);
  parts.pop();
  return '/' + parts.join('/');
}

/** lstat, or undefined when nothing is there (ENOENT, or a parent that is not a directory). */
export function lstatOrUndefined(view: TreeView, p: string): fs.BigIntStats | undefined {
  try {
    return view.lstat(p);
  } catch (e) {
    if (codeOf(e) === 'ENOENT' || codeOf(e) === 'ENOTDIR') return undefined;
    throw e;
  }
}

export function notDir(view: TreeView, p: string): LaminaError {
  return new LaminaError('EINVAL', `${view.show(p)} is not a directory`);
}

export function codeOf(e: unknown): string | undefined {
  return (e as { code?: unknown } | undefined)?.code as string | undefined;
}

function sysError(code: string): sys.SysError {
  return new sys.SysError('', (osConstants.errno as Record<string, number>)[code] ?? 0);
}

/** The same error, naming the tree path instead of a /proc/self/fd path. */
function relabel(e: unknown, syscall: string, p: string): unknown {
  const code = codeOf(e);
  if (!code || !(code in osConstants.errno)) return e;
  return new sys.SysError(syscall, (osConstants.errno as Record<string, number>)[code], p);
}
