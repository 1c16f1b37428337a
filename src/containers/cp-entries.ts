// Entries on their way between trees and tar streams, for `lamina cp` (see cp.ts): a walk of a
// tree that emits tar-like headers as moby's tarAppender would (lexical order, lstat headers
// with whole-second mtimes, hard links by inode, sockets skipped, security.capability the only
// xattr), moby's Unpack over a tree (NoOverwriteDirNonDir: an existing non-directory is removed
// and created afresh, directories merge, then owner, xattrs, mode and times, directory times
// last; names and link targets may not climb out of the destination), and the tar codec for
// `cp -` in both directions.
import fs from 'node:fs';
import { S_IFMT, S_IFSOCK, S_IFLNK, S_IFREG, S_IFBLK, S_IFDIR, S_IFCHR, S_IFIFO } from '../sys/index.js';
import { posix } from 'node:path';
import type { Readable } from 'node:stream';
import { LaminaError } from '../errors.js';
import { END_OF_ARCHIVE, encodeHeader, paddingLength, type WriteHeader } from '../tar/writer.js';
import type { TarHeader } from '../tar/types.js';
import { codeOf, dirOf, joinTree, lstatOrUndefined, notDir, pathParts, type Times, type TreeView } from './cp-view.js';

export type EntryType = 'file' | 'dir' | 'symlink' | 'link' | 'char' | 'block' | 'fifo';

/** One entry on its way from a source to a sink: a tar header in all but encoding. */
export interface CopyHeader {
  type: EntryType;
  /** Permission bits with setuid/setgid/sticky (07777). */
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: Times;
  atime?: Times;
  /** Symlink target, or for a hard link the name of the entry it links to. */
  linkname: string;
  devmajor: number;
  devminor: number;
  xattrs: Array<[string, Buffer]>;
  uname: string;
  gname: string;
}

/** Receives entries: `entry`, then (files) `data`, then `entryEnd`; `finish` after the last one. */
export interface EntrySink {
  /** `name` is relative to where the copy lands: '.' for that directory itself, else 'a/b'. */
  entry(name: string, h: CopyHeader): void;
  data(chunk: Buffer): void;
  entryEnd(): void;
  finish(): void;
}

/** Read size for file content, and how much tar output is gathered before it is written. */
export const CHUNK = 1 << 20;

const TYPE_BITS: Record<EntryType, number> = {
  file: S_IFREG, dir: S_IFDIR, symlink: S_IFLNK, link: S_IFREG, char: S_IFCHR, block: S_IFBLK, fifo: S_IFIFO,
};
const TYPE_FLAG: Record<EntryType, string> = { file: '0', link: '1', symlink: '2', char: '3', block: '4', dir: '5', fifo: '6' };
const FLAG_TYPE: Record<string, EntryType> = { '0': 'file', '7': 'file', '1': 'link', '2': 'symlink', '3': 'char', '4': 'block', '5': 'dir', '6': 'fifo' };

// ---------------------------------------------------------------- walking a source

/** What a copy reads: a tree path and the name its top entry takes. */
export interface SourceInfo {
  /** The tree path of what is copied (its parents' symlinks resolved). */
  path: string;
  isDir: boolean;
  /** Name of the copy's top entry: the source's name, or '.' for a directory's contents. */
  base: string;
}

/** uid/gid names for tar output, from a tree's own /etc/passwd and /etc/group. */
export interface IdNames {
  uname(uid: number): string;
  gname(gid: number): string;
}

export function treeIdNames(view: TreeView): IdNames {
  const read = (file: string) => {
    const map = new Map<number, string>();
    let text: string;
    try {
      const fd = view.openRead(view.realpath(file));
      try {
        text = fs.readFileSync(fd, 'utf8');
      } finally {
        fs.closeSync(fd);
      }
    } catch {
      return map;
    }
    for (const line of text.split('\n')) {
      if (line === '' || line[0] === '#' || line[0] === '+' || line[0] === '-') continue;
      const f = line.split(':');
      if (f.length >= 3 && f[0] !== '' && /^[0-9]+$/.test(f[2]) && !map.has(Number(f[2]))) map.set(Number(f[2]), f[0]);
    }
    return map;
  };
  const users = read('/etc/passwd');
  const groups = read('/etc/group');
  return { uname: (uid) => users.get(uid) ?? '', gname: (gid) => groups.get(gid) ?? '' };
}

const NO_NAMES: IdNames = { uname: () => '', gname: () => '' };

/** The name of the entry `rel` below the copy's top entry `base`. */
function entryName(base: string, rel: string): string {
  if (rel === '') return base;
  return base === '.' ? rel : base + '/' + rel;
}

/**
 * Walks `src` and feeds `sink`, yielding after each entry and each chunk of file content so a
 * caller writing to a stream can wait for it to drain.
 */
export function* walkSource(view: TreeView, src: SourceInfo, sink: EntrySink, names: IdNames = NO_NAMES): Generator<void, void, undefined> {
  const seen = new Map<string, string>();
  const stack: string[] = [''];
  while (stack.length) {
    const rel = stack.pop()!;
    const p = rel === '' ? src.path : joinTree(src.path, rel);
    let st: fs.BigIntStats;
    try {
      st = view.lstat(p);
    } catch (e) {
      if (codeOf(e) === 'ENOENT' && rel !== '') continue; // vanished during the walk, as tar does
      throw e;
    }
    const fmt = Number(st.mode) & S_IFMT;
    if (fmt === S_IFSOCK) continue; // moby's tarAppender skips sockets
    const name = entryName(src.base, rel);
    const h = headerOf(view, p, st, names);
    if (h.type !== 'dir' && st.nlink > 1n) {
      const key = `${st.dev}:${st.ino}`;
      const first = seen.get(key);
      if (first !== undefined) {
        h.type = 'link';
        h.linkname = first;
        h.size = 0;
      } else {
        seen.set(key, name);
      }
    }
    sink.entry(name, h);
    if (h.type === 'file' && h.size > 0) {
      const fd = view.openRead(p);
      try {
        let left = h.size;
        while (left > 0) {
          const buf = Buffer.allocUnsafe(Math.min(left, CHUNK));
          const n = fs.readSync(fd, buf, 0, buf.length, null);
          if (n === 0) throw new LaminaError('ECONFLICT', `${view.show(p)} shrank while it was being copied`);
          sink.data(n === buf.length ? buf : buf.subarray(0, n));
          left -= n;
          yield;
        }
      } finally {
        fs.closeSync(fd);
      }
    }
    sink.entryEnd();
    yield;
    if (h.type === 'dir') {
      const children = sortedByBytes(view.readdir(p));
      for (let i = children.length - 1; i >= 0; i--) stack.push(rel === '' ? children[i] : rel + '/' + children[i]);
    }
  }
  sink.finish();
}

/** Names in byte order, as Go sorts strings (each name encoded once). */
function sortedByBytes(names: string[]): string[] {
  return names.map((n) => ({ n, b: Buffer.from(n) })).sort((x, y) => Buffer.compare(x.b, y.b)).map((x) => x.n);
}

function headerOf(view: TreeView, p: string, st: fs.BigIntStats, names: IdNames): CopyHeader {
  const mode = Number(st.mode);
  let type: EntryType;
  switch (mode & S_IFMT) {
    case S_IFREG: type = 'file'; break;
    case S_IFDIR: type = 'dir'; break;
    case S_IFLNK: type = 'symlink'; break;
    case S_IFCHR: type = 'char'; break;
    case S_IFBLK: type = 'block'; break;
    case S_IFIFO: type = 'fifo'; break;
    default: throw new LaminaError('EUNSUPPORTED', `cannot copy ${view.show(p)}: unknown file type ${(mode & S_IFMT).toString(8)}`);
  }
  const uid = Number(st.uid);
  const gid = Number(st.gid);
  const [devmajor, devminor] = type === 'char' || type === 'block' ? majorMinor(st.rdev) : [0, 0];
  const cap = capability(view, p);
  return {
    type, mode: mode & 0o7777, uid, gid, size: type === 'file' ? Number(st.size) : 0,
    // Docker's headers carry whole seconds (ModTime truncated), and no atime.
    mtime: [Number(floorDiv(st.mtimeNs, 1_000_000_000n)), 0],
    linkname: type === 'symlink' ? view.readlink(p) : '', devmajor, devminor,
    xattrs: cap ? [['security.capability', cap]] : [], uname: names.uname(uid), gname: names.gname(gid),
  };
}

/** security.capability as moby's ReadSecurityXattrToTarHeader reads it (a v3 capability becomes v2). */
function capability(view: TreeView, p: string): Buffer | undefined {
  let v = view.getxattr(p, 'security.capability');
  if (!v) return undefined;
  if (v.length > 3 && v[3] === 3) {
    v = Buffer.from(v.subarray(0, 20));
    v[3] = 2;
  }
  return v;
}

function majorMinor(rdev: bigint): [number, number] {
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & ~0xffn);
  return [Number(major & 0xffffffffn), Number(minor & 0xffffffffn)];
}

function floorDiv(a: bigint, b: bigint): bigint {
  const q = a / b;
  return a < 0n && q * b !== a ? q - 1n : q;
}

// ---------------------------------------------------------------- applying entries

export interface ExtractOptions {
  /** Every entry gets this owner (moby's ChownOpts); else the header's, unless `chown` is false. */
  owner?: { uid: number; gid: number };
  /** false: leave files to the invoking user (moby's NoLchown). Default true. */
  chown?: boolean;
  /** Owner of parent directories the archive implies but does not contain (moby: the root pair). */
  impliedOwner?: { uid: number; gid: number };
}

/**
 * moby's Unpack with NoOverwriteDirNonDir over a tree, below `dest`: names are cleaned and must
 * stay below `dest`, as must symlink and hard link targets (checked lexically, as moby does).
 */
export class Extractor implements EntrySink {
  private readonly dirs: Array<{ path: string; h: CopyHeader }> = [];
  private fd = -1;
  private current: { path: string; h: CopyHeader } | undefined;
  private skipping = false;

  constructor(private readonly view: TreeView, private readonly dest: string, private readonly opts: ExtractOptions = {}) {}

  entry(name: string, h: CopyHeader): void {
    this.skipping = false;
    const rel = pathParts(name);
    if (posix.normalize(name).split('/')[0] === '..') this.breakout(`${JSON.stringify(name)} is outside of ${this.dest}`);
    const p = rel.length ? joinTree(this.dest, rel.join('/')) : this.dest;
    if (rel.length) this.ensureParent(dirOf(p));
    const st = lstatOrUndefined(this.view, p);
    if (st) {
      const isDir = st.isDirectory();
      if (isDir && h.type !== 'dir') throw new LaminaError('ECONFLICT', `cannot overwrite directory ${this.view.show(p)} with non-directory ${JSON.stringify(name)}`);
      if (!isDir && h.type === 'dir') throw new LaminaError('ECONFLICT', `cannot overwrite non-directory ${this.view.show(p)} with directory ${JSON.stringify(name)}`);
      if (isDir && rel.length === 0) {
        this.skipping = true; // the destination itself: moby leaves it alone
        return;
      }
      // Replaced, not overwritten: over a lower file this whites it out and creates a new file.
      if (!isDir) this.view.unlink(p);
    }
    this.create(p, h, st?.isDirectory() ?? false);
    this.current = { path: p, h };
  }

  data(chunk: Buffer): void {
    if (this.skipping || this.fd < 0) return;
    let off = 0;
    while (off < chunk.length) off += fs.writeSync(this.fd, chunk, off, chunk.length - off);
  }

  entryEnd(): void {
    if (this.skipping || !this.current) return;
    if (this.fd >= 0) {
      fs.closeSync(this.fd);
      this.fd = -1;
    }
    const { path: p, h } = this.current;
    this.current = undefined;
    this.applyMetadata(p, h);
    // Directory times come last: entries created inside would move them again.
    if (h.type === 'dir') this.dirs.push({ path: p, h });
  }

  finish(): void {
    for (const { path: p, h } of this.dirs) {
      // moby sets them with the header's atime, which Docker's own archives leave zero (epoch).
      this.view.lutimes(p, h.atime ?? [0, 0], h.mtime);
    }
  }

  /** Closes a file left open by a failed copy. */
  abort(): void {
    if (this.fd >= 0) fs.closeSync(this.fd);
    this.fd = -1;
  }

  private create(p: string, h: CopyHeader, existingDir: boolean): void {
    const v = this.view;
    switch (h.type) {
      case 'dir':
        if (!existingDir) v.mkdir(p, h.mode & 0o777);
        break;
      case 'file':
        this.fd = v.createFile(p, h.mode & 0o777);
        break;
      case 'link': {
        const target = joinTree(this.dest, pathParts(h.linkname).join('/'));
        if (posix.normalize(h.linkname).split('/')[0] === '..') {
          this.breakout(`invalid hardlink ${JSON.stringify(h.linkname)} -> ${target}`);
        }
        v.link(target, p);
        break;
      }
      case 'symlink': {
        // Relative to the link's directory, without clamping at the tree's root: an absolute
        // target counts as below that directory (moby joins it there), '..' may not climb out.
        const fromDest = posix.relative(this.dest, dirOf(p)) || '.';
        if (!h.linkname.startsWith('/') && posix.normalize(posix.join(fromDest, h.linkname)).split('/')[0] === '..') {
          this.breakout(`invalid symlink ${v.show(p)} -> ${JSON.stringify(h.linkname)}`);
        }
        v.symlink(h.linkname, p);
        break;
      }
      case 'char':
      case 'block':
      case 'fifo':
        v.mknod(p, TYPE_BITS[h.type] | (h.mode & 0o7777), h.devmajor, h.devminor);
        break;
    }
  }

  private applyMetadata(p: string, h: CopyHeader): void {
    const v = this.view;
    const owner = this.opts.owner ?? (this.opts.chown === false ? undefined : { uid: h.uid, gid: h.gid });
    if (owner) v.lchown(p, owner.uid, owner.gid);
    for (const [name, value] of h.xattrs) {
      try {
        v.setxattr(p, name, value);
      } catch (e) {
        // moby ignores file systems that refuse xattrs.
        const code = codeOf(e);
        if (code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'EPERM') throw e;
      }
    }
    // A hard link to a symlink has no mode or times of its own to set (moby's handleLChmod).
    const isLinkToSymlink = h.type === 'link' && v.lstat(p).isSymbolicLink();
    if (h.type !== 'symlink' && !isLinkToSymlink) v.chmod(p, h.mode & 0o7777);
    if (isLinkToSymlink) return;
    // Access time never before the modification time.
    const atime = h.atime && (h.atime[0] > h.mtime[0] || (h.atime[0] === h.mtime[0] && h.atime[1] >= h.mtime[1])) ? h.atime : h.mtime;
    v.lutimes(p, atime, h.mtime);
  }

  /** mkdir -p of a parent the archive did not list (moby's MkdirAllAndChownNew, 0755). */
  private ensureParent(dir: string): void {
    if (lstatOrUndefined(this.view, dir)) return;
    let cur = '/';
    for (const part of pathParts(dir)) {
      cur = joinTree(cur, part);
      let st: fs.BigIntStats | undefined;
      try {
        st = this.view.stat(cur);
      } catch (e) {
        if (codeOf(e) !== 'ENOENT') throw e;
      }
      if (st) {
        if (!st.isDirectory()) throw notDir(this.view, cur);
        continue;
      }
      this.view.mkdir(cur, 0o755);
      if (this.opts.impliedOwner) this.view.lchown(cur, this.opts.impliedOwner.uid, this.opts.impliedOwner.gid);
    }
  }

  private breakout(what: string): never {
    throw new LaminaError('EUNSAFEPATH', `refusing to copy: ${what} would reach outside ${this.view.show(this.dest)}`);
  }
}

// ---------------------------------------------------------------- tar in and out

/** Writes entries as a tar stream in Docker's format; the caller takes the bytes with take(). */
export class TarSink implements EntrySink {
  private parts: Buffer[] = [];
  pending = 0;
  private size = 0;

  entry(name: string, h: CopyHeader): void {
    const wh: WriteHeader = {
      name: h.type === 'dir' ? name.replace(/\/*$/, '/') : name, typeflag: TYPE_FLAG[h.type],
      mode: (h.type === 'link' ? S_IFREG : TYPE_BITS[h.type]) | h.mode, uid: h.uid, gid: h.gid,
      size: h.type === 'file' ? h.size : 0, mtime: h.mtime[0], linkname: h.linkname,
      uname: h.uname, gname: h.gname, devmajor: h.devmajor, devminor: h.devminor,
    };
    if (h.xattrs.length) wh.xattrs = h.xattrs;
    this.size = wh.size!;
    this.put(encodeHeader(wh));
  }

  data(chunk: Buffer): void {
    this.put(chunk);
  }

  entryEnd(): void {
    const pad = paddingLength(this.size);
    if (pad) this.put(Buffer.alloc(pad));
    this.size = 0;
  }

  finish(): void {
    this.put(END_OF_ARCHIVE);
  }

  take(): Buffer {
    const b = this.parts.length === 1 ? this.parts[0] : Buffer.concat(this.parts, this.pending);
    this.parts = [];
    this.pending = 0;
    return b;
  }

  private put(b: Buffer): void {
    this.parts.push(b);
    this.pending += b.length;
  }
}

/** Feeds the entries of a tar stream (plain, gzip or zstd, as docker cp accepts) to `sink`. */
export async function readTarInto(input: Readable, sink: EntrySink, label: string): Promise<void> {
  const [{ TarParser }, { decompressStream }] = await Promise.all([import('../tar/reader.js'), import('../transports/decompress.js')]);
  let skip = false;
  const parser = new TarParser({
    entry: (h: TarHeader) => {
      skip = h.typeflag === 'g'; // global PAX headers are ignored, as moby does
      if (skip) return;
      const type = FLAG_TYPE[h.typeflag];
      if (!type) throw new LaminaError('EUNSUPPORTED', `${label}: tar entry ${JSON.stringify(h.name)} has unsupported type ${JSON.stringify(h.typeflag)}`);
      sink.entry(h.name, {
        type, mode: h.mode & 0o7777, uid: h.uid, gid: h.gid, size: h.size, mtime: [h.mtime, h.mtimeNsec], atime: h.atime,
        linkname: h.linkname, devmajor: h.devmajor, devminor: h.devminor, xattrs: h.xattrs, uname: h.uname, gname: h.gname,
      });
    },
    data: (chunk: Buffer) => {
      if (!skip) sink.data(chunk);
    },
    entryEnd: () => {
      if (!skip) sink.entryEnd();
    },
  });
  for await (const chunk of await decompressStream(input, { name: label })) parser.write(chunk as Buffer);
  parser.end();
  sink.finish();
}
