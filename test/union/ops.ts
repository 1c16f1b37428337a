// The operations of the differential test, run once through a kernel overlay mount (node:fs
// and the syscall module on the merged dir) and once through the userspace engine, and the
// observation of a whole merged view through either side.
import fs from 'node:fs';
import * as sys from '../../src/sys/index.js';
import { UnionFs } from '../../src/union/index.js';
import { describeStat, NAMES, Rng, sha, symlinkTarget, xattrText } from './harness.js';

export type Op =
  | { op: 'writeFile' | 'appendFile'; path: string; size: number; fill: number }
  | { op: 'truncate'; path: string; len: number }
  | { op: 'openWrite' | 'rmdir' | 'unlink' | 'lstat' | 'stat' | 'readFile' | 'readdir' | 'readlink' | 'realpath' | 'exists' | 'listxattr'; path: string }
  | { op: 'mkdir' | 'mkfifo' | 'chmod'; path: string; mode: number }
  | { op: 'rename' | 'link'; path: string; to: string }
  | { op: 'symlink'; path: string; target: string }
  | { op: 'chown' | 'lchown'; path: string; uid: number; gid: number }
  | { op: 'utimes' | 'lutimes'; path: string; atime: [number, number]; mtime: [number, number] }
  | { op: 'setxattr'; path: string; name: string; value: string }
  | { op: 'removexattr' | 'getxattr'; path: string; name: string };

/** One way of reaching the union: the kernel mount or the engine. */
export interface Side {
  label: string;
  lstat(p: string): fs.BigIntStats;
  stat(p: string): fs.BigIntStats;
  open(p: string, flags: number, mode?: number): number;
  readdir(p: string): string[];
  readlink(p: string): string;
  realpath(p: string): string;
  exists(p: string): boolean;
  listxattr(p: string): string[];
  getxattr(p: string, name: string): Buffer;
  truncate(p: string, len: number): void;
  mkdir(p: string, mode: number): void;
  rmdir(p: string): void;
  unlink(p: string): void;
  rename(a: string, b: string): void;
  link(a: string, b: string): void;
  symlink(target: string, p: string): void;
  mkfifo(p: string, mode: number): void;
  chmod(p: string, mode: number): void;
  chown(p: string, uid: number, gid: number): void;
  lchown(p: string, uid: number, gid: number): void;
  utimes(p: string, a: [number, number], m: [number, number]): void;
  lutimes(p: string, a: [number, number], m: [number, number]): void;
  setxattr(p: string, name: string, value: Buffer): void;
  removexattr(p: string, name: string): void;
}

function enodata(): Error {
  return Object.assign(new Error('ENODATA'), { code: 'ENODATA' });
}

export function kernelSide(merged: string): Side {
  const k = (p: string) => merged + p;
  return {
    label: 'kernel',
    lstat: (p) => fs.lstatSync(k(p), { bigint: true }),
    stat: (p) => fs.statSync(k(p), { bigint: true }),
    open: (p, flags, mode) => fs.openSync(k(p), flags, mode),
    readdir: (p) => fs.readdirSync(k(p)),
    readlink: (p) => fs.readlinkSync(k(p)),
    realpath: (p) => {
      const r = fs.realpathSync.native(k(p));
      return r === merged ? '/' : r.slice(merged.length);
    },
    exists: (p) => fs.existsSync(k(p)),
    listxattr: (p) => sys.llistxattr(k(p)),
    getxattr: (p, n) => {
      const v = sys.lgetxattr(k(p), n);
      if (v === undefined) throw enodata();
      return v;
    },
    truncate: (p, len) => fs.truncateSync(k(p), len),
    mkdir: (p, mode) => fs.mkdirSync(k(p), mode),
    rmdir: (p) => fs.rmdirSync(k(p)),
    unlink: (p) => fs.unlinkSync(k(p)),
    rename: (a, b) => fs.renameSync(k(a), k(b)),
    link: (a, b) => fs.linkSync(k(a), k(b)),
    symlink: (t, p) => fs.symlinkSync(t, k(p)),
    mkfifo: (p, mode) => sys.mknod(k(p), sys.S_IFIFO | mode),
    chmod: (p, mode) => fs.chmodSync(k(p), mode),
    chown: (p, u, g) => fs.chownSync(k(p), u, g),
    lchown: (p, u, g) => fs.lchownSync(k(p), u, g),
    // utimensat(2) following symlinks, with nanoseconds: resolve, then the no-follow call.
    utimes: (p, a, m) => sys.lutimesNs(fs.realpathSync.native(k(p)), a, m),
    lutimes: (p, a, m) => sys.lutimesNs(k(p), a, m),
    setxattr: (p, n, v) => sys.lsetxattr(k(p), n, v),
    removexattr: (p, n) => sys.lremovexattr(k(p), n),
  };
}

export function engineSide(u: UnionFs): Side {
  return {
    label: 'engine',
    lstat: (p) => u.lstat(p, { bigint: true }),
    stat: (p) => u.stat(p, { bigint: true }),
    open: (p, flags, mode) => u.open(p, flags, mode),
    readdir: (p) => u.readdir(p),
    readlink: (p) => u.readlink(p),
    realpath: (p) => u.realpath(p),
    exists: (p) => u.exists(p),
    listxattr: (p) => u.listxattr(p),
    getxattr: (p, n) => u.getxattr(p, n),
    truncate: (p, len) => u.truncate(p, len),
    mkdir: (p, mode) => u.mkdir(p, mode),
    rmdir: (p) => u.rmdir(p),
    unlink: (p) => u.unlink(p),
    rename: (a, b) => u.rename(a, b),
    link: (a, b) => u.link(a, b),
    symlink: (t, p) => u.symlink(t, p),
    mkfifo: (p, mode) => u.mknod(p, sys.S_IFIFO | mode),
    chmod: (p, mode) => u.chmod(p, mode),
    chown: (p, uid, gid) => u.chown(p, uid, gid),
    lchown: (p, uid, gid) => u.lchown(p, uid, gid),
    utimes: (p, a, m) => u.utimes(p, a, m),
    lutimes: (p, a, m) => u.lutimes(p, a, m),
    setxattr: (p, n, v) => u.setxattr(p, n, v),
    removexattr: (p, n) => u.removexattr(p, n),
  };
}

const { O_WRONLY, O_RDONLY, O_RDWR, O_CREAT, O_TRUNC, O_APPEND, O_NONBLOCK } = fs.constants;

function fillData(size: number, fill: number): Buffer {
  const b = Buffer.allocUnsafe(size);
  for (let i = 0; i < size; i++) b[i] = (fill + i * 31) & 0xff;
  return b;
}

function writeAll(side: Side, p: string, flags: number, data: Buffer): void {
  // O_NONBLOCK: a fifo without a reader fails with ENXIO instead of hanging the test.
  const fd = side.open(p, flags | O_NONBLOCK, 0o666);
  try {
    let off = 0;
    while (off < data.length) off += fs.writeSync(fd, data, off, data.length - off);
  } finally {
    fs.closeSync(fd);
  }
}

function readAll(side: Side, p: string): Buffer {
  const fd = side.open(p, O_RDONLY | O_NONBLOCK);
  try {
    return fs.readFileSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Runs one operation; the result is 'ok', 'ok:<what it returned>' or 'err:<errno code>'. */
export function runOp(side: Side, o: Op): string {
  try {
    return 'ok' + perform(side, o);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (!code) throw e;
    return 'err:' + code;
  }
}

function perform(side: Side, o: Op): string {
  switch (o.op) {
    case 'writeFile': writeAll(side, o.path, O_WRONLY | O_CREAT | O_TRUNC, fillData(o.size, o.fill)); return '';
    case 'appendFile': writeAll(side, o.path, O_WRONLY | O_CREAT | O_APPEND, fillData(o.size, o.fill)); return '';
    case 'openWrite': fs.closeSync(side.open(o.path, O_RDWR | O_NONBLOCK)); return '';
    case 'truncate': side.truncate(o.path, o.len); return '';
    case 'mkdir': side.mkdir(o.path, o.mode); return '';
    case 'rmdir': side.rmdir(o.path); return '';
    case 'unlink': side.unlink(o.path); return '';
    case 'rename': side.rename(o.path, o.to); return '';
    case 'link': side.link(o.path, o.to); return '';
    case 'symlink': side.symlink(o.target, o.path); return '';
    case 'mkfifo': side.mkfifo(o.path, o.mode); return '';
    case 'chmod': side.chmod(o.path, o.mode); return '';
    case 'chown': side.chown(o.path, o.uid, o.gid); return '';
    case 'lchown': side.lchown(o.path, o.uid, o.gid); return '';
    case 'utimes': side.utimes(o.path, o.atime, o.mtime); return '';
    case 'lutimes': side.lutimes(o.path, o.atime, o.mtime); return '';
    case 'setxattr': side.setxattr(o.path, o.name, Buffer.from(o.value, 'hex')); return '';
    case 'removexattr': side.removexattr(o.path, o.name); return '';
    case 'getxattr': return ':' + side.getxattr(o.path, o.name).toString('hex');
    case 'lstat': return ':' + describeStat(side.lstat(o.path));
    case 'stat': return ':' + describeStat(side.stat(o.path));
    case 'readFile': {
      const st = side.stat(o.path);
      if ((Number(st.mode) & fs.constants.S_IFMT) !== fs.constants.S_IFREG) return ':not-a-file';
      return ':' + sha(readAll(side, o.path));
    }
    case 'readdir': return ':' + side.readdir(o.path).sort().join(',');
    case 'readlink': return ':' + side.readlink(o.path);
    case 'realpath': return ':' + side.realpath(o.path);
    case 'exists': return ':' + side.exists(o.path);
    case 'listxattr': return ':' + side.listxattr(o.path).sort().join(',');
  }
}

// ------------------------------------------------------------------ generation

const WEIGHTS: Array<[Op['op'], number]> = [
  ['writeFile', 8], ['appendFile', 5], ['truncate', 4], ['openWrite', 3], ['mkdir', 7], ['rmdir', 6],
  ['unlink', 7], ['rename', 10], ['link', 4], ['symlink', 4], ['mkfifo', 2], ['chmod', 4], ['chown', 3],
  ['lchown', 2], ['utimes', 3], ['lutimes', 2], ['setxattr', 4], ['removexattr', 3], ['getxattr', 2],
  ['lstat', 4], ['stat', 3], ['readFile', 4], ['readdir', 4], ['readlink', 2], ['realpath', 2],
  ['exists', 1], ['listxattr', 2],
];
const TOTAL = WEIGHTS.reduce((s, [, w]) => s + w, 0);

export function genPath(rng: Rng): string {
  const depth = 1 + Math.min(rng.int(4), rng.int(4));
  const parts: string[] = [];
  for (let i = 0; i < depth; i++) parts.push(rng.pick(NAMES));
  if (rng.chance(0.005)) parts[rng.int(depth)] = 'n'.repeat(256);
  if (depth >= 2 && rng.chance(0.04)) parts.splice(1 + rng.int(depth - 1), 0, rng.pick(['.', '..']));
  return '/' + parts.join('/');
}

function sibling(rng: Rng, p: string): string {
  return p.slice(0, p.lastIndexOf('/') + 1) + rng.pick(NAMES);
}

function oldTime(rng: Rng): [number, number] {
  return [1600000000 + rng.int(30_000_000), rng.int(1_000_000_000)];
}

const XATTR_NAMES = ['user.k0', 'user.k1', 'user.k2', 'trusted.t0', 'trusted.t1', 'security.capability', 'trusted.overlay.opaque', 'user.overlay.opaque'];

/**
 * Paths the generator knows about: everything the layer plan created and every path an
 * operation created, by kind. Picking from them (instead of only random names) makes
 * operations hit existing entries, deep ones included. Knowledge may be stale; that only
 * produces more error cases, which are compared too.
 */
export class KnownPaths {
  private readonly byKind = new Map<string, string[]>();
  add(kind: string, p: string): void {
    for (const k of [kind, 'any']) {
      let a = this.byKind.get(k);
      if (!a) this.byKind.set(k, (a = []));
      if (!a.includes(p)) a.push(p);
    }
  }
  pick(rng: Rng, kind: string): string | undefined {
    const a = this.byKind.get(kind);
    return a && a.length ? rng.pick(a) : undefined;
  }
  /** Records what a successful operation created. */
  learn(o: Op, result: string): void {
    if (!result.startsWith('ok')) return;
    switch (o.op) {
      case 'mkdir': this.add('dir', o.path); break;
      case 'writeFile': case 'appendFile': this.add('file', o.path); break;
      case 'symlink': this.add('symlink', o.path); break;
      case 'mkfifo': this.add('fifo', o.path); break;
      case 'rename': this.add('any', o.to); break;
      case 'link': this.add('file', o.to); break;
    }
  }
}

const PREFERRED: Partial<Record<Op['op'], string>> = {
  rmdir: 'dir', readdir: 'dir', mkdir: 'dir', readlink: 'symlink', readFile: 'file', truncate: 'file',
  appendFile: 'file', openWrite: 'file', link: 'file', getxattr: 'any', removexattr: 'any',
};

export function genOp(rng: Rng, known?: KnownPaths): Op {
  let r = rng.int(TOTAL);
  let op: Op['op'] = 'lstat';
  for (const [name, w] of WEIGHTS) {
    if (r < w) {
      op = name;
      break;
    }
    r -= w;
  }
  const pick = (kind: string) => (known && rng.chance(0.6) ? known.pick(rng, kind) : undefined) ?? genPath(rng);
  let path = pick(PREFERRED[op] ?? 'any');
  // mkdir of a known dir is EEXIST; create children of known dirs instead.
  if (op === 'mkdir' && rng.chance(0.7)) path = (known?.pick(rng, 'dir') ?? '') + '/' + rng.pick(NAMES);
  switch (op) {
    case 'writeFile': case 'appendFile':
      return { op, path, size: rng.chance(0.1) ? 0 : rng.int(rng.chance(0.05) ? 100_000 : 900), fill: rng.int(256) };
    case 'truncate': return { op, path, len: rng.pick([0, 1, 10, 4096, rng.int(3000)]) };
    case 'mkdir': return { op, path, mode: rng.pick([0o755, 0o700, 0o777, 0o2755, 0o1777]) };
    case 'mkfifo': return { op, path, mode: rng.pick([0o644, 0o600]) };
    case 'chmod': return { op, path, mode: rng.pick([0o644, 0o600, 0o755, 0o4755, 0o2711, 0o1777, 0o000, 0o777]) };
    case 'rename': case 'link': {
      const r2 = rng.next();
      const to = r2 < 0.4 ? sibling(rng, path) : r2 < 0.7 ? pick('any') : r2 < 0.85 ? (known?.pick(rng, 'dir') ?? '') + '/' + rng.pick(NAMES) : genPath(rng);
      return { op, path, to };
    }
    case 'symlink': return { op, path, target: symlinkTarget(rng) };
    case 'chown': case 'lchown': {
      const [uid, gid] = rng.pick([[0, 0], [1000, 1000], [3000000, 100], [12, 34]] as Array<[number, number]>);
      return { op, path, uid, gid };
    }
    case 'utimes': case 'lutimes': return { op, path, atime: oldTime(rng), mtime: oldTime(rng) };
    case 'setxattr': {
      const name = rng.pick(XATTR_NAMES);
      const value = name === 'security.capability' ? '0100000200040000000000000000000000000000' : rng.bytes(1 + rng.int(16)).toString('hex');
      return { op, path, name, value };
    }
    case 'removexattr': case 'getxattr': return { op, path, name: rng.pick(XATTR_NAMES) };
    default: return { op, path } as Op;
  }
}

// ------------------------------------------------------------------ whole-view observation

/**
 * Describes everything visible through a side: each path's stat, content hash, link target
 * and xattrs, in every directory the side lists. Entries a listing shows but lstat cannot find
 * (the kernel lists whiteouts of single-layer directories) are recorded as such.
 */
export function snapshotView(side: Side): Map<string, string> {
  const out = new Map<string, string>();
  const visit = (p: string) => {
    let st: fs.BigIntStats;
    try {
      st = side.lstat(p);
    } catch (e) {
      out.set(p, 'lstat:' + (e as NodeJS.ErrnoException).code);
      return;
    }
    let d = describeStat(st);
    const mode = Number(st.mode) & fs.constants.S_IFMT;
    if (mode === fs.constants.S_IFREG) d += ' sha=' + sha(readAll(side, p));
    if (mode === fs.constants.S_IFLNK) d += ' -> ' + side.readlink(p);
    d += ' x{' + xattrText(side.listxattr(p), (n) => side.getxattr(p, n)) + '}';
    out.set(p, d);
    if (mode === fs.constants.S_IFDIR) {
      const names = side.readdir(p).sort();
      out.set(p + '/', names.join(','));
      for (const n of names) visit(p === '/' ? '/' + n : p + '/' + n);
    }
  };
  visit('/');
  return out;
}
