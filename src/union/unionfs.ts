// UnionFs: overlayfs in userspace. Reads the merged view of a stack of layer directories and
// writes changes into the upper dir exactly as the kernel would write them, so a kernel mount
// of the same directories (and Docker) sees the same thing. The rules and their sources are in
// ../shared/docs/kernel-overlayfs-semantics.md; tree.ts holds lookup and readdir, copyup.ts the
// multi-step writes. The API mirrors node:fs' synchronous calls on union paths ('/etc/passwd'),
// and errors carry the same codes the kernel returns through a mount.
//
// Not emulated: permission checks (the engine acts with the caller's credentials on the real
// files), st_dev/st_ino (the real file's are reported), trusted.overlay.origin/impure/uuid (the
// kernel's private bookkeeping), metacopy, index, sparse copy-up.
import fs from 'node:fs';
import path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { LaminaError } from '../errors.js';
import {
  lgetxattr, llistxattr, lremovexattr, lsetxattr, lutimesNs, mknod as sysMknod, renameat2,
  RENAME_EXCHANGE, RENAME_WHITEOUT, S_IFCHR,
} from '../sys/index.js';
import { DT_BLK, DT_CHR, DT_DIR, DT_FIFO, DT_LNK, DT_REG, DT_SOCK, dtypeOfMode, fillsBuffer, openNoatime, readRawDir } from './dirents.js';
import { nsPair, WorkDir } from './copyup.js';
import { errCode, fsError, type Errno } from './errors.js';
import { escapeXattrName, isWhiteoutStat, isXwhiteoutFile, overlayXattrNames, readDirMarks, visibleXattrNames } from './overlay-xattrs.js';
import { DirNode, listDir, NO_ENTRY, TOO_LONG, UPPER_WHITEOUT, type Child, type FileEntry, type LayerSet, type NoEntry, type RealDir } from './tree.js';

export interface UnionOptions {
  /** Lower layer directories, nearest first (the order of overlayfs' lowerdir=). */
  lowers: string[];
  /** Upper directory; without it the union is read-only and writes fail with EROFS. */
  upper?: string;
  /** Work directory on the upper's file system (required with `upper`). */
  work?: string;
  /** redirect_dir=on: directories can be renamed; new directories in merged ones are opaque. */
  redirectDir?: boolean;
  /** A `userxattr` mount: overlay xattrs live under user.overlay.*. */
  userxattr?: boolean;
}

export type EntryType = 'file' | 'dir' | 'symlink' | 'char' | 'block' | 'fifo' | 'socket' | 'unknown';

export interface UnionDirent {
  name: string;
  type: EntryType;
}

/** [seconds, nanoseconds], a number of seconds, or a Date. */
export type TimeArg = [number, number] | number | Date;

/** Where a union path comes from: the layers serving it and the ones it hides. */
export interface PathOrigin {
  path: string;
  type: EntryType;
  /** Layers serving the entry, top first (several for a merged directory). */
  layers: number[];
  /** Lower layers that hold something at this path but are hidden by the layers above. */
  shadowed: Array<{ layer: number; type: EntryType | 'whiteout' }>;
}

interface Resolved {
  parent: DirNode;
  name: string;
  child: Child;
  /** The last component was '.', '..' or the root itself. */
  dot: boolean;
}

const { O_RDONLY, O_WRONLY, O_RDWR, O_CREAT, O_EXCL, O_TRUNC, O_APPEND, O_NOFOLLOW, O_DIRECTORY, S_IFMT, S_IFREG, S_IFIFO, S_IFSOCK, S_IFBLK } = fs.constants;
const O_ACCMODE = 3;
const S_ISGID = 0o2000;
const MAX_SYMLINKS = 40;
const NAME_MAX = 255;
const REDIRECT_MAX = 256;

const FLAG_STRINGS: Record<string, number> = {
  r: O_RDONLY, 'r+': O_RDWR, rs: O_RDONLY, 'rs+': O_RDWR, 'sr+': O_RDWR,
  w: O_TRUNC | O_CREAT | O_WRONLY, wx: O_TRUNC | O_CREAT | O_WRONLY | O_EXCL, xw: O_TRUNC | O_CREAT | O_WRONLY | O_EXCL,
  'w+': O_TRUNC | O_CREAT | O_RDWR, 'wx+': O_TRUNC | O_CREAT | O_RDWR | O_EXCL, 'xw+': O_TRUNC | O_CREAT | O_RDWR | O_EXCL,
  a: O_APPEND | O_CREAT | O_WRONLY, ax: O_APPEND | O_CREAT | O_WRONLY | O_EXCL, xa: O_APPEND | O_CREAT | O_WRONLY | O_EXCL,
  as: O_APPEND | O_CREAT | O_WRONLY, sa: O_APPEND | O_CREAT | O_WRONLY,
  'a+': O_APPEND | O_CREAT | O_RDWR, 'ax+': O_APPEND | O_CREAT | O_RDWR | O_EXCL, 'xa+': O_APPEND | O_CREAT | O_RDWR | O_EXCL,
  'as+': O_APPEND | O_CREAT | O_RDWR, 'sa+': O_APPEND | O_CREAT | O_RDWR,
};

function parseFlags(flags: string | number): number {
  if (typeof flags === 'number') return flags;
  const f = FLAG_STRINGS[flags];
  if (f === undefined) throw new LaminaError('EINVAL', `unknown open flags "${flags}"`);
  return f;
}

function entryType(dtype: number): EntryType {
  switch (dtype) {
    case DT_REG: return 'file';
    case DT_DIR: return 'dir';
    case DT_LNK: return 'symlink';
    case DT_CHR: return 'char';
    case DT_BLK: return 'block';
    case DT_FIFO: return 'fifo';
    case DT_SOCK: return 'socket';
    default: return 'unknown';
  }
}

function joinUnion(dir: string, name: string): string {
  return dir === '/' ? '/' + name : dir + '/' + name;
}

function toTime(t: TimeArg): [number, number] {
  if (Array.isArray(t)) return t;
  const ms = t instanceof Date ? t.getTime() : t * 1000;
  const s = Math.floor(ms / 1000);
  return [s, Math.round((ms - s * 1000) * 1e6)];
}

/** The kernel's sysctl-controlled link protections (fs.protected_*), which apply to root too. */
interface VfsPolicy {
  symlinks: number;
  regular: number;
  fifos: number;
}

function readPolicy(): VfsPolicy {
  const read = (name: string) => {
    try {
      return Number(fs.readFileSync(`/proc/sys/fs/${name}`, 'utf8').trim()) || 0;
    } catch {
      return 0;
    }
  };
  return { symlinks: read('protected_symlinks'), regular: read('protected_regular'), fifos: read('protected_fifos') };
}

/** Whether this process has CAP_SYS_ADMIN, without which the kernel hides trusted.* xattrs. */
function hasCapSysAdmin(): boolean {
  try {
    const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(fs.readFileSync('/proc/self/status', 'utf8'));
    return !!m && ((BigInt('0x' + m[1]) >> 21n) & 1n) === 1n;
  } catch {
    return process.getuid?.() === 0;
  }
}

/** Whether the warning below is settled for this process (said, or not needed). */
let trustedChecked = false;

/**
 * Without CAP_SYS_ADMIN, listxattr silently omits trusted.* names: opaque dirs and redirects
 * (trusted.overlay.*) would be invisible and the view would show files they hide. Said once.
 */
function warnIfTrustedUnreadable(layers: number): void {
  if (trustedChecked || layers < 2) return;
  trustedChecked = true;
  if (hasCapSysAdmin()) return;
  process.stderr.write('warning: without CAP_SYS_ADMIN the trusted.overlay.* xattrs cannot be read: opaque directories and redirects are not honoured, so files they hide may show\n');
}

export class UnionFs {
  /** Real layer roots: index 0 is the upper dir when there is one, then the lowers, nearest first. */
  readonly layers: readonly string[];
  readonly writable: boolean;
  private readonly ls: LayerSet;
  private readonly root: DirNode;
  private readonly work: WorkDir | undefined;
  private readonly redirectDir: boolean;
  private readonly policy = readPolicy();
  private readonly fsuid = process.geteuid?.() ?? 0;

  constructor(opts: UnionOptions) {
    const roots = [...(opts.upper !== undefined ? [opts.upper] : []), ...opts.lowers].map((p) => path.resolve(p));
    if (roots.length === 0) throw new LaminaError('EINVAL', 'a union needs at least one layer');
    for (const r of roots) {
      const st = fs.statSync(r, { throwIfNoEntry: false });
      if (!st?.isDirectory()) throw new LaminaError('ENOTFOUND', `union layer ${r} is not a directory`);
    }
    if (!opts.userxattr) warnIfTrustedUnreadable(roots.length);
    const x = overlayXattrNames(opts.userxattr ?? false);
    this.ls = {
      roots, hasUpper: opts.upper !== undefined, bottom: roots.length - 1, x, xwhiteoutLayers: new Set(),
      shortReadIsEnd: roots.map((r) => fillsBuffer(r)),
    };
    this.layers = roots;
    this.writable = opts.upper !== undefined;
    this.redirectDir = opts.redirectDir ?? false;
    if (opts.upper !== undefined) {
      if (opts.work === undefined) throw new LaminaError('EINVAL', `union with upper dir ${opts.upper} needs a work dir`);
      const work = path.resolve(opts.work);
      if (fs.statSync(work).dev !== fs.statSync(roots[0]).dev) {
        throw new LaminaError('EINVAL', `work dir ${work} is not on the file system of upper dir ${roots[0]}`);
      }
      const inner = path.join(work, 'work');
      if (!fs.existsSync(inner)) {
        fs.mkdirSync(inner, 0o700);
        // The kernel makes work/work mode 000; only root can write through that.
        if (process.getuid?.() === 0) fs.chmodSync(inner, 0);
      }
      this.work = new WorkDir(inner, x);
    }
    const stack: RealDir[] = roots.map((p, layer) => ({ layer, path: p }));
    let xwhiteouts = false;
    for (let l = this.ls.hasUpper ? 1 : 0; l < roots.length; l++) {
      if (readDirMarks(roots[l], x).opaque === 'x') {
        xwhiteouts = true;
        this.ls.xwhiteoutLayers.add(l);
      }
    }
    this.root = new DirNode(null, '', stack, false, undefined, xwhiteouts);
  }

  /** Drops every cached lookup (after the layers were changed behind the engine's back). */
  invalidate(): void {
    this.root.children.clear();
    this.root.listing = undefined;
  }

  // ------------------------------------------------------------------ resolution

  private isUpper(layer: number): boolean {
    return this.ls.hasUpper && layer === 0;
  }

  /**
   * Walks a union path like the kernel's path walk: '.' and '..' are physical, symlinks in the
   * middle are always followed, the last one only when `follow`; absolute targets resolve
   * against the union root (as in a container), never the host's.
   */
  private resolve(p: string, follow: boolean, syscall: string, lazyLast = false): Resolved {
    if (p === '') throw fsError('ENOENT', syscall, p);
    const trailingSlash = p.length > 1 && p.endsWith('/');
    let comps = p.split('/').filter((c) => c !== '');
    let cur = this.root;
    let links = 0;
    let i = 0;
    for (;;) {
      if (i >= comps.length) return { parent: cur.parent ?? cur, name: cur.parent ? cur.name : '/', child: { kind: 'dir', node: cur }, dot: true };
      const c = comps[i];
      const last = i === comps.length - 1;
      if (c === '.' || c === '..') {
        if (c === '..' && cur.parent) cur = cur.parent;
        if (last) return { parent: cur.parent ?? cur, name: c, child: { kind: 'dir', node: cur }, dot: true };
        i++;
        continue;
      }
      if (c.length > 85 && Buffer.byteLength(c) > NAME_MAX) {
        // The kernel finds out at lookup: in the middle of a path at once, for the last name
        // only when the operation looks it up (after its other checks).
        if (!last) throw fsError('ENAMETOOLONG', syscall, p);
        return { parent: cur, name: c, child: TOO_LONG, dot: false };
      }
      const child = cur.child(this.ls, c, !(last && lazyLast));
      if (child.kind === 'file' && child.dtype === DT_LNK && (!last || follow || trailingSlash)) {
        if (++links > MAX_SYMLINKS) throw fsError('ELOOP', syscall, p);
        if (this.policy.symlinks) this.mayFollowLink(cur, child, syscall, p);
        const target = this.linkTarget(child);
        if (target === '') throw fsError('ENOENT', syscall, p);
        if (target.startsWith('/')) cur = this.root;
        comps = target.split('/').filter((t) => t !== '').concat(comps.slice(i + 1));
        i = 0;
        continue;
      }
      if (last) {
        if (trailingSlash && child.kind === 'file') throw fsError('ENOTDIR', syscall, p);
        return { parent: cur, name: c, child, dot: false };
      }
      if (child.kind === 'none') throw fsError('ENOENT', syscall, p);
      if (child.kind === 'file') throw fsError('ENOTDIR', syscall, p);
      cur = child.node;
      i++;
    }
  }

  /**
   * may_follow_link() with fs.protected_symlinks: a symlink in a sticky world-writable
   * directory is followed only by its owner or when the directory's owner owns it.
   */
  private mayFollowLink(dir: DirNode, link: FileEntry, syscall: string, p: string): void {
    const d = fs.lstatSync(dir.stack[0].path);
    if ((d.mode & 0o1002) !== 0o1002) return;
    const l = fs.lstatSync(link.path);
    if (l.uid === this.fsuid || l.uid === d.uid) return;
    throw fsError('EACCES', syscall, p);
  }

  /**
   * may_create_in_sticky(): O_CREAT on an existing entry of a sticky directory owned by someone
   * else fails for anything but files and fifos (and for those too, per fs.protected_regular
   * and fs.protected_fifos), even for root.
   */
  private mayCreateInSticky(dir: DirNode, c: Exclude<Child, { kind: 'none' }>, p: string): void {
    const d = fs.lstatSync(dir.stack[0].path);
    if ((d.mode & 0o1000) === 0) return;
    const st = fs.lstatSync(this.topReal(c).path);
    const type = st.mode & S_IFMT;
    if (type === S_IFREG && !this.policy.regular) return;
    if (type === S_IFIFO && !this.policy.fifos) return;
    if (st.uid === d.uid || st.uid === this.fsuid) return;
    if ((d.mode & 0o002) !== 0) throw fsError('EACCES', 'open', p);
    if ((d.mode & 0o020) !== 0 && ((type === S_IFIFO && this.policy.fifos >= 2) || (type === S_IFREG && this.policy.regular >= 2))) {
      throw fsError('EACCES', 'open', p);
    }
  }

  /** A symlink's target. Upper links are read each time (the kernel touches their atime on every follow). */
  private linkTarget(f: FileEntry): string {
    if (this.isUpper(f.layer)) return fs.readlinkSync(f.path);
    if (f.target === undefined) f.target = readLowerLink(f.path);
    return f.target;
  }

  private unionPathOf(r: Resolved): string {
    if (r.child.kind === 'dir' && r.dot) return r.child.node.path;
    return joinUnion(r.parent.path, r.name);
  }

  private existing(p: string, follow: boolean, syscall: string, lazyLast = false): Resolved & { child: Exclude<Child, { kind: 'none' }> } {
    const r = this.resolve(p, follow, syscall, lazyLast);
    if (r.child.kind === 'none') throw absent(r.child, syscall, p);
    return r as Resolved & { child: Exclude<Child, { kind: 'none' }> };
  }

  /** The real path currently serving an existing entry (the top layer's). */
  private topReal(c: Exclude<Child, { kind: 'none' }>): { path: string; layer: number } {
    return c.kind === 'dir' ? { path: c.node.stack[0].path, layer: c.node.stack[0].layer } : c;
  }

  // ------------------------------------------------------------------ reading

  lstat(p: string): fs.Stats;
  lstat(p: string, opts: { bigint: true }): fs.BigIntStats;
  lstat(p: string, opts?: { bigint?: boolean }): fs.Stats | fs.BigIntStats {
    return this.statOf(this.existing(p, false, 'lstat', true), opts?.bigint ?? false, p);
  }

  stat(p: string): fs.Stats;
  stat(p: string, opts: { bigint: true }): fs.BigIntStats;
  stat(p: string, opts?: { bigint?: boolean }): fs.Stats | fs.BigIntStats {
    return this.statOf(this.existing(p, true, 'stat', true), opts?.bigint ?? false, p);
  }

  private statOf(r: Resolved & { child: Exclude<Child, { kind: 'none' }> }, bigint: boolean, p: string): fs.Stats | fs.BigIntStats {
    const c = r.child;
    if (c.kind === 'file') {
      const st = bigint ? fs.lstatSync(c.path, { bigint: true }) : fs.lstatSync(c.path);
      if (!c.unverified) return st;
      // A listing-made entry: this lstat doubles as its check.
      const v = r.parent.verified(this.ls, r.name, c, st);
      if (v === c) return st;
      if (v.kind === 'none') throw fsError('ENOENT', 'lstat', p);
      return this.statOf({ ...r, child: v }, bigint, p);
    }
    const st = bigint ? fs.lstatSync(c.node.stack[0].path, { bigint: true }) : fs.lstatSync(c.node.stack[0].path);
    // Like ovl_getattr(): counting subdirectories across layers is not worth it, merged dirs say 1.
    if (c.node.merged) (st as { nlink: number | bigint }).nlink = bigint ? 1n : 1;
    return st;
  }

  exists(p: string): boolean {
    try {
      this.existing(p, true, 'stat');
      return true;
    } catch {
      return false;
    }
  }

  readlink(p: string): string {
    const r = this.existing(p, false, 'readlink');
    if (r.child.kind !== 'file' || r.child.dtype !== DT_LNK) throw fsError('EINVAL', 'readlink', p);
    return this.linkTarget(r.child);
  }

  /** The canonical union path of `p`, every symlink resolved inside the union. */
  realpath(p: string): string {
    return this.unionPathOf(this.existing(p, true, 'realpath'));
  }

  readdir(p: string): string[] {
    return this.listing(p).names.slice();
  }

  readdirTypes(p: string): UnionDirent[] {
    const l = this.listing(p);
    return l.names.map((name, i) => ({ name, type: entryType(l.types[i]) }));
  }

  private listing(p: string) {
    const r = this.existing(p, true, 'scandir');
    if (r.child.kind !== 'dir') throw fsError('ENOTDIR', 'scandir', p);
    const node = r.child.node;
    // A directory with an upper copy is re-read every time: reading it moves its atime.
    if (!node.listing || this.isUpper(node.stack[0].layer)) node.listing = listDir(this.ls, node, true);
    return node.listing;
  }

  readFile(p: string): Buffer;
  readFile(p: string, encoding: BufferEncoding): string;
  readFile(p: string, encoding?: BufferEncoding): Buffer | string {
    const fd = this.open(p, O_RDONLY);
    try {
      return encoding ? fs.readFileSync(fd, encoding) : fs.readFileSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  }

  createReadStream(p: string, opts: { start?: number; end?: number; highWaterMark?: number } = {}): Readable {
    const fd = this.open(p, O_RDONLY);
    return fs.createReadStream('', { ...opts, fd });
  }

  listxattr(p: string): string[] {
    const r = this.existing(p, false, 'llistxattr');
    return visibleXattrNames(llistxattr(this.topReal(r.child).path), this.ls.x);
  }

  /** xattr_permission(): the VFS refuses user.* xattrs on anything but files and directories. */
  private checkXattrWrite(c: Exclude<Child, { kind: 'none' }>, name: string, syscall: string, p: string): void {
    if (name.startsWith('user.') && c.kind === 'file' && c.dtype !== DT_REG) throw fsError('EPERM', syscall, p);
  }

  private realXattrName(name: string, syscall: string, p: string): string {
    const real = escapeXattrName(name, this.ls.x);
    if (real === undefined) throw fsError('EOPNOTSUPP', syscall, p);
    return real;
  }

  /** An xattr of the entry itself (never of a symlink's target); ENODATA when absent. */
  getxattr(p: string, name: string): Buffer {
    const r = this.existing(p, false, 'lgetxattr');
    const v = lgetxattr(this.topReal(r.child).path, this.realXattrName(name, 'lgetxattr', p));
    if (v === undefined) throw fsError('ENODATA', 'lgetxattr', p);
    return v;
  }

  /** Which layers serve `p` and which lower ones it shadows (for `lamina fs which`). */
  origin(p: string): PathOrigin {
    const r = this.existing(p, false, 'lstat');
    const upath = this.unionPathOf(r);
    const serving = r.child.kind === 'dir' ? r.child.node.stack.map((d) => d.layer) : [r.child.layer];
    const type = r.child.kind === 'dir' ? 'dir' : entryType(r.child.dtype);
    const shadowed: PathOrigin['shadowed'] = [];
    const rel = upath === '/' ? '' : upath;
    for (let l = serving[0] + 1; l < this.layers.length; l++) {
      if (serving.includes(l)) continue;
      let st: fs.Stats | undefined;
      try {
        st = fs.lstatSync(this.layers[l] + rel, { throwIfNoEntry: false });
      } catch {
        st = undefined;
      }
      if (st) shadowed.push({ layer: l, type: isWhiteoutStat(st) ? 'whiteout' : entryType(dtypeOfMode(st.mode)) });
    }
    return { path: upath, type, layers: serving, shadowed };
  }

  // ------------------------------------------------------------------ opening

  /**
   * open(2) on the union; returns a real file descriptor (use it with fs.read/write/close).
   * Any write access (or O_TRUNC) to a lower file copies it up first, even if nothing is
   * written; O_CREAT creates in the upper dir, over a whiteout if there is one.
   */
  open(p: string, flags: string | number = 'r', mode = 0o666): number {
    const f = parseFlags(flags);
    const acc = f & O_ACCMODE;
    const write = acc !== O_RDONLY || (f & O_TRUNC) !== 0;
    const creat = (f & O_CREAT) !== 0;
    const excl = creat && (f & O_EXCL) !== 0;
    const r = this.resolve(p, !excl && (f & O_NOFOLLOW) === 0, 'open', true);
    const c = r.child;
    if (c.kind === 'file' && c.unverified) {
      // A listing-made entry: settle it, cheaply (fstat of the opened file) for a plain read.
      if (!write && !creat) {
        const fd = openNoatime(c.path, f, !this.isUpper(c.layer));
        const st = fs.fstatSync(fd);
        if (st.size > 0 || !isXwhiteoutFile(c.path, st, this.ls.x)) {
          c.unverified = undefined;
          return fd;
        }
        fs.closeSync(fd);
      }
      r.parent.verified(this.ls, r.name, c, fs.lstatSync(c.path, { throwIfNoEntry: false }));
      return this.open(p, flags, mode);
    }
    if (c.kind === 'none') {
      if (!creat || c.tooLong) throw absent(c, 'open', p);
      if (!this.writable) throw fsError('EROFS', 'open', p);
      const dir = this.upperDir(r.parent);
      const dest = dir + '/' + r.name;
      let fd: number;
      if (c.upperWhiteout) {
        const tmp = this.work!.tmpName();
        fd = fs.openSync(tmp, f | O_CREAT | O_EXCL, mode);
        try {
          inheritGroup(tmp, dir, false);
          fs.renameSync(tmp, dest);
        } catch (e) {
          fs.closeSync(fd);
          fs.rmSync(tmp, { force: true });
          throw e;
        }
      } else {
        fd = fs.openSync(dest, f | O_CREAT | O_EXCL, mode);
      }
      this.entered(r.parent, r.name, { kind: 'file', layer: 0, path: dest, dtype: DT_REG });
      return fd;
    }
    if (excl) throw fsError('EEXIST', 'open', p);
    if (c.kind === 'dir') {
      if (write || creat) throw fsError('EISDIR', 'open', p);
      return openNoatime(c.node.stack[0].path, f, !this.isUpper(c.node.stack[0].layer));
    }
    if (c.dtype === DT_LNK) throw fsError('ELOOP', 'open', p);
    if (creat) this.mayCreateInSticky(r.parent, c, p);
    if ((f & O_DIRECTORY) !== 0) throw fsError('ENOTDIR', 'open', p);
    const real = f & ~(O_CREAT | O_EXCL);
    // Devices and fifos are opened in place: overlayfs never copies them up on open.
    if (!write || c.dtype !== DT_REG) return openNoatime(c.path, real, !this.isUpper(c.layer) && !write);
    if (!this.writable) throw fsError('EROFS', 'open', p);
    return fs.openSync(this.copyUpFile(r.parent, r.name, c).path, real, mode);
  }

  writeFile(p: string, data: string | Uint8Array, opts: { flag?: string | number; mode?: number } = {}): void {
    const fd = this.open(p, opts.flag ?? 'w', opts.mode ?? 0o666);
    try {
      const buf = typeof data === 'string' ? Buffer.from(data) : data;
      let off = 0;
      while (off < buf.length) off += fs.writeSync(fd, buf, off, buf.length - off);
    } finally {
      fs.closeSync(fd);
    }
  }

  appendFile(p: string, data: string | Uint8Array, opts: { mode?: number } = {}): void {
    this.writeFile(p, data, { flag: 'a', mode: opts.mode });
  }

  createWriteStream(p: string, opts: { flags?: string | number; mode?: number } = {}): Writable {
    const fd = this.open(p, opts.flags ?? 'w', opts.mode ?? 0o666);
    return fs.createWriteStream('', { fd });
  }

  truncate(p: string, len = 0): void {
    const r = this.existing(p, true, 'truncate');
    if (r.child.kind === 'dir') throw fsError('EISDIR', 'truncate', p);
    if (r.child.dtype !== DT_REG || len < 0) throw fsError('EINVAL', 'truncate', p);
    if (!this.writable) throw fsError('EROFS', 'truncate', p);
    fs.truncateSync(this.copyUpFile(r.parent, r.name, r.child).path, len);
  }

  // ------------------------------------------------------------------ creating names

  /** Checks a name about to be created; returns the upper directory to create it in. */
  private creating(r: Resolved, syscall: string, p: string): string {
    if (r.dot || r.child.kind !== 'none') throw fsError('EEXIST', syscall, p);
    if (r.child.tooLong) throw absent(r.child, syscall, p);
    if (!this.writable) throw fsError('EROFS', syscall, p);
    return this.upperDir(r.parent);
  }

  mkdir(p: string, mode = 0o777): void {
    const r = this.resolve(p, false, 'mkdir');
    const dir = this.creating(r, 'mkdir', p);
    const dest = dir + '/' + r.name;
    let opaque = false;
    if ((r.child as { upperWhiteout: boolean }).upperWhiteout) {
      // A directory re-created where a lower one was deleted must hide the lower one.
      const tmp = this.work!.tmpName();
      fs.mkdirSync(tmp, mode);
      try {
        inheritGroup(tmp, dir, true);
        lsetxattr(tmp, this.ls.x.opaque, 'y');
        renameat2(tmp, dest, RENAME_EXCHANGE);
        fs.unlinkSync(tmp); // the whiteout, now under the temporary name
      } catch (e) {
        fs.rmSync(tmp, { recursive: true, force: true });
        throw e;
      }
      opaque = true;
    } else {
      fs.mkdirSync(dest, mode);
      if (this.redirectDir && r.parent.merged) {
        lsetxattr(dest, this.ls.x.opaque, 'y');
        opaque = true;
      }
    }
    this.entered(r.parent, r.name, { kind: 'dir', node: new DirNode(r.parent, r.name, [{ layer: 0, path: dest }], opaque, undefined) });
  }

  symlink(target: string, p: string): void {
    if (target === '') throw fsError('ENOENT', 'symlink', p);
    const r = this.resolve(p, false, 'symlink');
    const dir = this.creating(r, 'symlink', p);
    const dest = dir + '/' + r.name;
    this.createOver(r, dest, dir, (at) => fs.symlinkSync(target, at));
    this.entered(r.parent, r.name, { kind: 'file', layer: 0, path: dest, dtype: DT_LNK });
  }

  /** mknod(2): fifos, sockets, devices (and empty regular files); char 0:0 is refused like the kernel does. */
  mknod(p: string, mode: number, major = 0, minor = 0): void {
    const type = mode & S_IFMT;
    if ((type === S_IFCHR && major === 0 && minor === 0)) throw fsError('EPERM', 'mknod', p);
    if (![0, S_IFREG, S_IFIFO, S_IFSOCK, S_IFCHR, S_IFBLK].includes(type)) throw fsError('EINVAL', 'mknod', p);
    const r = this.resolve(p, false, 'mknod');
    const dir = this.creating(r, 'mknod', p);
    const dest = dir + '/' + r.name;
    const real = type === 0 ? mode | S_IFREG : mode;
    this.createOver(r, dest, dir, (at) => sysMknod(at, real, major, minor));
    this.entered(r.parent, r.name, { kind: 'file', layer: 0, path: dest, dtype: dtypeOfMode(real) });
  }

  link(existing: string, p: string): void {
    const ro = this.existing(existing, false, 'link');
    const rn = this.resolve(p, false, 'link');
    if (rn.dot || rn.child.kind !== 'none') throw fsError('EEXIST', 'link', p);
    if (rn.child.tooLong) throw absent(rn.child, 'link', p);
    if (!this.writable) throw fsError('EROFS', 'link', p);
    if (ro.child.kind === 'dir') throw fsError('EPERM', 'link', existing);
    const src = this.copyUpFile(ro.parent, ro.name, ro.child);
    const dir = this.upperDir(rn.parent);
    const dest = dir + '/' + rn.name;
    if (rn.child.upperWhiteout) {
      const tmp = this.work!.tmpName();
      fs.linkSync(src.path, tmp);
      this.replaceWith(tmp, dest);
    } else {
      fs.linkSync(src.path, dest);
    }
    this.entered(rn.parent, rn.name, { kind: 'file', layer: 0, path: dest, dtype: src.dtype });
  }

  /** Creates a non-directory at `dest`, through the work dir when a whiteout has to be replaced. */
  private createOver(r: Resolved, dest: string, dir: string, make: (at: string) => void): void {
    if (!(r.child as { upperWhiteout: boolean }).upperWhiteout) {
      make(dest);
      return;
    }
    const tmp = this.work!.tmpName();
    make(tmp);
    try {
      inheritGroup(tmp, dir, false);
    } catch (e) {
      fs.rmSync(tmp, { force: true });
      throw e;
    }
    this.replaceWith(tmp, dest);
  }

  private replaceWith(tmp: string, dest: string): void {
    try {
      fs.renameSync(tmp, dest);
    } catch (e) {
      fs.rmSync(tmp, { force: true });
      throw e;
    }
  }

  private entered(parent: DirNode, name: string, c: Child): void {
    parent.children.set(name, c);
    parent.listing = undefined;
  }

  // ------------------------------------------------------------------ removing names

  unlink(p: string): void {
    this.remove(p, false);
  }

  rmdir(p: string): void {
    this.remove(p, true);
  }

  private remove(p: string, isDir: boolean): void {
    const syscall = isDir ? 'rmdir' : 'unlink';
    const r = this.resolve(p, false, syscall);
    if (r.dot) {
      if (!isDir) throw fsError('EISDIR', syscall, p);
      throw fsError(r.name === '..' ? 'ENOTEMPTY' : r.name === '.' ? 'EINVAL' : 'EBUSY', syscall, p);
    }
    if (!this.writable) throw fsError('EROFS', syscall, p);
    const c = r.child;
    if (c.kind === 'none') throw absent(c, syscall, p);
    if (isDir && c.kind !== 'dir') throw fsError('ENOTDIR', syscall, p);
    if (!isDir && c.kind === 'dir') throw fsError('EISDIR', syscall, p);
    const lowerPositive = this.lowerPositive(r.parent, r.name, c);
    if (c.kind === 'dir' && (lowerPositive || !this.pureUpper(c.node)) && !this.isEmpty(c.node)) {
      throw fsError('ENOTEMPTY', syscall, p);
    }
    const dir = this.upperDir(r.parent);
    const target = dir + '/' + r.name;
    const top = this.topReal(c);
    const hasUpper = this.isUpper(top.layer);
    if (c.kind === 'dir' && hasUpper) clearWhiteouts(top.path);
    try {
      if (!lowerPositive) {
        if (c.kind === 'dir') fs.rmdirSync(target);
        else fs.unlinkSync(target);
      } else if (hasUpper) {
        this.work!.whiteoutOver(target, c.kind === 'dir');
      } else {
        fs.renameSync(this.work!.makeWhiteout(), target);
      }
    } catch (e) {
      throw relabel(e, syscall, p);
    }
    this.entered(r.parent, r.name, lowerPositive ? UPPER_WHITEOUT : NO_ENTRY);
  }

  /** ovl_lower_positive(): does a lower layer still hold this name (so removing it needs a whiteout)? */
  private lowerPositive(parent: DirNode, name: string, c: Exclude<Child, { kind: 'none' }>): boolean {
    if (!this.isUpper(this.topReal(c).layer)) return true;
    for (const rd of parent.stack) {
      if (this.isUpper(rd.layer)) continue;
      const real = rd.path + '/' + name;
      const st = fs.lstatSync(real, { throwIfNoEntry: false });
      if (!st) continue;
      return !(isWhiteoutStat(st) || isXwhiteoutFile(real, st, this.ls.x));
    }
    return false;
  }

  private pureUpper(node: DirNode): boolean {
    return node.stack.length === 1 && this.isUpper(node.stack[0].layer);
  }

  /** ovl_check_empty_dir(): empty once whiteouts (in any layer) are left out. */
  private isEmpty(node: DirNode): boolean {
    return listDir(this.ls, node, false, true).names.length === 0;
  }

  // ------------------------------------------------------------------ rename

  /**
   * rename(2) with the kernel's rules: a lower file is copied up and leaves a whiteout; a
   * directory that is merged or only in lower layers gives EXDEV (unless redirectDir, which
   * copies up only the directory and records a redirect xattr); a pure upper directory moved
   * into a merged directory becomes opaque.
   */
  rename(oldPath: string, newPath: string): void {
    const ro = this.resolve(oldPath, false, 'rename');
    const rn = this.resolve(newPath, false, 'rename');
    if (ro.dot || rn.dot) throw fsError('EBUSY', 'rename', oldPath);
    if (!this.writable) throw fsError('EROFS', 'rename', oldPath);
    const oc = ro.child;
    const nc = rn.child;
    if (oc.kind === 'none') throw absent(oc, 'rename', oldPath);
    if (nc.kind === 'none' && nc.tooLong) throw absent(nc, 'rename', newPath);
    const oldU = joinUnion(ro.parent.path, ro.name);
    const newU = joinUnion(rn.parent.path, rn.name);
    if (ro.parent !== rn.parent) {
      const np = rn.parent.path;
      const op = ro.parent.path;
      if (oc.kind === 'dir' && (np === oldU || np.startsWith(oldU + '/'))) throw fsError('EINVAL', 'rename', oldPath);
      if (nc.kind === 'dir' && (op === newU || op.startsWith(newU + '/'))) throw fsError('ENOTEMPTY', 'rename', oldPath);
    }
    if (ro.parent === rn.parent && ro.name === rn.name) return;
    if (oc.kind === 'file' && nc.kind === 'file' && this.isUpper(oc.layer) && this.isUpper(nc.layer)) {
      const a = fs.lstatSync(oc.path);
      const b = fs.lstatSync(nc.path);
      if (a.ino === b.ino && a.dev === b.dev) return; // one inode: rename(2) does nothing
    }
    if (nc.kind !== 'none') {
      if (oc.kind === 'dir' && nc.kind !== 'dir') throw fsError('ENOTDIR', 'rename', oldPath);
      if (oc.kind !== 'dir' && nc.kind === 'dir') throw fsError('EISDIR', 'rename', oldPath);
    }
    if (oc.kind === 'dir' && !this.redirectDir && !this.pureUpper(oc.node)) throw fsError('EXDEV', 'rename', oldPath);
    if (nc.kind === 'dir' && !this.pureUpper(nc.node) && !this.isEmpty(nc.node)) throw fsError('ENOTEMPTY', 'rename', oldPath);

    const lowerPositive = this.lowerPositive(ro.parent, ro.name, oc);
    const overWhiteout = nc.kind === 'none' && nc.upperWhiteout;
    const oldReal = oc.kind === 'dir' ? this.upperDir(oc.node) : this.copyUpFile(ro.parent, ro.name, oc).path;
    const newReal = this.upperDir(rn.parent) + '/' + rn.name;
    if (nc.kind === 'dir' && this.isUpper(nc.node.stack[0].layer)) clearWhiteouts(nc.node.stack[0].path);
    if (oc.kind === 'dir') {
      const node = oc.node;
      if (node.stack.length > 1) this.setRedirect(node, oldReal, ro.parent === rn.parent, oldPath);
      else if (!node.opaque && rn.parent.merged) lsetxattr(oldReal, this.ls.x.opaque, 'y');
    }
    try {
      if (lowerPositive && overWhiteout) {
        renameat2(oldReal, newReal, RENAME_EXCHANGE); // the whiteout moves to the old name
      } else if (lowerPositive) {
        renameat2(oldReal, newReal, RENAME_WHITEOUT);
      } else if (oc.kind === 'dir' && overWhiteout) {
        renameat2(oldReal, newReal, RENAME_EXCHANGE);
        fs.unlinkSync(oldReal);
      } else {
        fs.renameSync(oldReal, newReal);
      }
    } catch (e) {
      throw relabel(e, 'rename', oldPath);
    }
    this.entered(ro.parent, ro.name, lowerPositive ? UPPER_WHITEOUT : NO_ENTRY);
    rn.parent.forget(rn.name);
  }

  /** ovl_set_redirect(): a relative redirect (the old name) within one directory, an absolute path otherwise. */
  private setRedirect(node: DirNode, upperPath: string, samedir: boolean, p: string): void {
    if (node.redirect !== undefined && (samedir || node.redirect.startsWith('/'))) return;
    let value: string;
    if (samedir) {
      value = node.redirect ?? node.name;
    } else {
      const parts: string[] = [];
      value = '';
      for (let d: DirNode | null = node; d && d.parent; d = d.parent) {
        const r = d.redirect;
        if (r !== undefined && r.startsWith('/')) {
          value = r.replace(/\/+$/, '');
          break;
        }
        parts.unshift(r ?? d.name);
      }
      value = value + '/' + parts.join('/');
    }
    if (value.length > REDIRECT_MAX) throw fsError('EXDEV', 'rename', p);
    lsetxattr(upperPath, this.ls.x.redirect, value);
    // Kept even if the rename then fails (the kernel sets the dentry's redirect too): a later
    // rename within one directory keeps an absolute redirect instead of writing a relative one.
    node.redirect = value;
  }

  // ------------------------------------------------------------------ metadata

  chmod(p: string, mode: number): void {
    fs.chmodSync(this.copiedUp(p, true, 'chmod'), mode);
  }

  chown(p: string, uid: number, gid: number): void {
    fs.lchownSync(this.copiedUp(p, true, 'chown'), uid, gid);
  }

  lchown(p: string, uid: number, gid: number): void {
    fs.lchownSync(this.copiedUp(p, false, 'lchown'), uid, gid);
  }

  /** utimensat(2) with nanoseconds; `undefined` leaves that time unchanged. */
  utimes(p: string, atime: TimeArg | undefined, mtime: TimeArg | undefined): void {
    lutimesNs(this.copiedUp(p, true, 'utimensat'), atime === undefined ? undefined : toTime(atime), mtime === undefined ? undefined : toTime(mtime));
  }

  lutimes(p: string, atime: TimeArg | undefined, mtime: TimeArg | undefined): void {
    lutimesNs(this.copiedUp(p, false, 'utimensat'), atime === undefined ? undefined : toTime(atime), mtime === undefined ? undefined : toTime(mtime));
  }

  /**
   * lsetxattr(2): on the entry itself. An overlay xattr name set through the union is stored
   * escaped (`trusted.overlay.X` as `trusted.overlay.overlay.X`), as the kernel does.
   */
  setxattr(p: string, name: string, value: Buffer | string, flags = 0): void {
    const r = this.existing(p, false, 'lsetxattr');
    this.checkXattrWrite(r.child, name, 'lsetxattr', p);
    const real = this.realXattrName(name, 'lsetxattr', p);
    if (!this.writable) throw fsError('EROFS', 'lsetxattr', p);
    lsetxattr(this.copyUpResolved(r), real, value, flags);
  }

  removexattr(p: string, name: string): void {
    const r = this.existing(p, false, 'lremovexattr');
    this.checkXattrWrite(r.child, name, 'lremovexattr', p);
    const real = this.realXattrName(name, 'lremovexattr', p);
    if (!this.writable) throw fsError('EROFS', 'lremovexattr', p);
    const top = this.topReal(r.child);
    // Removing an absent xattr fails before anything is copied up.
    if (!this.isUpper(top.layer) && lgetxattr(top.path, real) === undefined) throw fsError('ENODATA', 'lremovexattr', p);
    lremovexattr(this.copyUpResolved(r), real);
  }

  private copiedUp(p: string, follow: boolean, syscall: string): string {
    const r = this.existing(p, follow, syscall);
    if (!this.writable) throw fsError('EROFS', syscall, p);
    return this.copyUpResolved(r);
  }

  private copyUpResolved(r: Resolved & { child: Exclude<Child, { kind: 'none' }> }): string {
    return r.child.kind === 'dir' ? this.upperDir(r.child.node) : this.copyUpFile(r.parent, r.name, r.child).path;
  }

  // ------------------------------------------------------------------ copy-up

  /** Makes sure a directory has an upper copy (copying up its ancestors first); returns it. */
  private upperDir(node: DirNode): string {
    const top = node.stack[0];
    if (this.isUpper(top.layer)) return top.path;
    const parentUpper = this.upperDir(node.parent!);
    const dest = parentUpper + '/' + node.name;
    this.work!.copyUp(top.path, dest, fs.lstatSync(top.path, { bigint: true }));
    node.stack = [{ layer: 0, path: dest }, ...node.stack];
    node.listing = undefined;
    node.parent!.listing = undefined;
    return dest;
  }

  /** Copies a non-directory up (if it is not there yet) and returns its upper entry. */
  private copyUpFile(parent: DirNode, name: string, c: FileEntry): FileEntry {
    if (this.isUpper(c.layer)) return c;
    const dest = this.upperDir(parent) + '/' + name;
    const target = c.dtype === DT_LNK ? this.linkTarget(c) : undefined;
    this.work!.copyUp(c.path, dest, fs.lstatSync(c.path, { bigint: true }), target);
    const up: FileEntry = { kind: 'file', layer: 0, path: dest, dtype: c.dtype };
    this.entered(parent, name, up);
    return up;
  }
}

/** Reads a lower symlink without leaving a trace: readlink(2) moves atime, which is put back. */
function readLowerLink(p: string): string {
  const before = fs.lstatSync(p, { bigint: true });
  const target = fs.readlinkSync(p);
  const after = fs.lstatSync(p, { bigint: true });
  if (after.atimeNs !== before.atimeNs) {
    try {
      lutimesNs(p, nsPair(before.atimeNs), undefined);
    } catch {
      // Best effort: without ownership of the link its atime cannot be put back.
    }
  }
  return target;
}

/** New entries in a setgid directory take its group (and directories the setgid bit), as if created in place. */
function inheritGroup(tmp: string, dir: string, isDir: boolean): void {
  const pst = fs.lstatSync(dir);
  if ((pst.mode & S_ISGID) === 0) return;
  fs.lchownSync(tmp, -1, pst.gid);
  if (isDir) fs.chmodSync(tmp, (fs.lstatSync(tmp).mode & 0o7777) | S_ISGID);
}

/** Removes the whiteouts left in an upper directory that is being deleted or replaced. */
function clearWhiteouts(dir: string): void {
  const raw = readRawDir(dir, true);
  for (let i = 0; i < raw.names.length; i++) {
    if (raw.types[i] !== DT_CHR) continue;
    const p = dir + '/' + raw.names[i];
    if (isWhiteoutStat(fs.lstatSync(p))) fs.unlinkSync(p);
  }
}

/** The error for a name that resolves to nothing. */
function absent(c: NoEntry, syscall: string, p: string): Error {
  return fsError(c.tooLong ? 'ENAMETOOLONG' : 'ENOENT', syscall, p);
}

/** Re-labels an error from a real path with the union path the caller used. */
function relabel(e: unknown, syscall: string, p: string): unknown {
  const code = errCode(e);
  if (code && ['ENOTEMPTY', 'EEXIST', 'ENOENT', 'EISDIR', 'ENOTDIR', 'EXDEV', 'EBUSY', 'EINVAL'].includes(code)) return fsError(code as Errno, syscall, p);
  return e;
}
