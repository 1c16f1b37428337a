// Writes a layer tar from a directory the way dockerd does for `docker commit` and classic
// builds (moby pkg/archive TarWithOptions with the overlay whiteout converter, Go's archive/tar
// underneath). The bytes must match Docker's, because the diffID is their sha256:
//  - depth-first walk, names sorted bytewise in each directory, root not emitted, no "./";
//  - headers from lstat: mode = S_IFMT | permission bits, whole-second mtime (truncated),
//    uname/gname from the host's user database, device numbers, hard links by inode;
//  - only the security.capability xattr, never trusted.overlay.*;
//  - overlay whiteouts (char 0:0) → `.wh.<name>` and opaque dirs → `<dir>/.wh..wh..opq`.
// Output is streamed in large chunks; file content is read straight into the output chunk.
import fs from 'node:fs';
import { isUtf8 } from 'node:buffer';
import { createHash } from 'node:crypto';
import { posix } from 'node:path';
import { Readable } from 'node:stream';
import type { Digest } from '../digest/index.js';
import { LaminaError } from '../errors.js';
import * as sys from '../sys/index.js';
import { S_IFMT, S_IFSOCK, S_IFLNK, S_IFREG, S_IFBLK, S_IFDIR, S_IFCHR, S_IFIFO } from '../sys/index.js';
import { END_OF_ARCHIVE, encodeHeader, paddingLength, roundToSecond, type WriteHeader } from '../tar/writer.js';
import { hostIdNames, type IdNames } from './users.js';


const WHITEOUT_PREFIX = Buffer.from('.wh.');
const OPAQUE_MARKER = Buffer.from('.wh..wh..opq');
const SLASH = Buffer.from('/');
const EMPTY: Buffer = Buffer.alloc(0);
const NS_PER_S = 1_000_000_000n;

export interface LayerTarOptions {
  /** uid/gid → names for uname/gname. Default: this host's /etc/passwd and /etc/group. */
  names?: IdNames;
  /**
   * Docker's shared-whiteout quirk (spec §4.2): whiteouts sharing one inode keep the hard-link
   * `linkname` (the first whiteout's on-disk path) after conversion to `.wh.` files. On by
   * default for bit-exact diffIDs; off writes them with an empty linkname.
   */
  whiteoutLinknameQuirk?: boolean;
  /** Output chunk size in bytes (default 1 MiB); also the read size for file content. */
  chunkSize?: number;
  /** Told about entries Docker also leaves out: sockets, and files that vanish during the walk. */
  onSkip?: (path: string, reason: string) => void;
}

/**
 * The layer tar of `dir` (an overlay upper / diff directory) as a byte stream, identical to
 * what dockerd 20.10 writes for it.
 */
export function writeLayerTar(dir: string, opts: LayerTarOptions = {}): Readable {
  return Readable.from(layerTarChunks(dir, opts), { objectMode: false });
}

/**
 * The same bytes as writeLayerTar, as a synchronous generator of chunks (each a fresh Buffer the
 * consumer may keep). Filesystem calls are synchronous; the event loop runs between chunks.
 */
export function* layerTarChunks(dir: string, opts: LayerTarOptions = {}): Generator<Buffer, void, undefined> {
  const root = Buffer.from(dir);
  let st: fs.BigIntStats;
  try {
    st = fs.lstatSync(root, { bigint: true });
  } catch (e) {
    throw new LaminaError('ENOTFOUND', `cannot write layer tar: ${dir}: ${(e as Error).message}`, { cause: e });
  }
  if (!st.isDirectory()) throw new LaminaError('EINVAL', `cannot write layer tar: ${dir} is not a directory`);

  const out = new ChunkWriter(opts.chunkSize ?? 1 << 20);
  const appender = new TarAppender(out, opts, true);
  // Depth-first, children in bytewise name order (Go's filepath.Walk); the stack holds
  // directories' children in reverse so the smallest name is popped first.
  const stack: Array<{ abs: Buffer; rel: Buffer }> = [];
  pushChildren(stack, root, EMPTY);
  while (stack.length > 0) {
    const { abs, rel } = stack.pop()!;
    let est: fs.BigIntStats;
    try {
      est = fs.lstatSync(abs, { bigint: true });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw walkError(abs, e);
      opts.onSkip?.(abs.toString(), 'vanished during the walk');
      continue;
    }
    yield* appender.add(abs, rel, est);
    if (est.isDirectory()) pushChildren(stack, abs, rel);
  }
  out.put(END_OF_ARCHIVE);
  out.seal();
  yield* out.drain();
}

export type ChangeKind = 'modify' | 'add' | 'delete';
/** A path as Docker's change list has it: absolute inside the container ("/etc/passwd"). */
export interface Change {
  path: string;
  kind: ChangeKind;
}

export interface ChangesTarOptions extends LayerTarOptions {
  /** Clock for deletion whiteouts, [seconds, nanoseconds] (default: now). */
  now?: () => [number, number];
}

/**
 * A tar of just the changed paths of `dir`, as Docker's ExportChanges writes it (the naive-diff
 * path): changes sorted by path; a deletion becomes a bare `.wh.<name>` header (mode 0, owner 0,
 * mtime = now rounded to the second); everything else is added from `dir` as in a layer tar,
 * but without overlay whiteout conversion.
 */
export function writeChangesTar(dir: string, changes: readonly Change[], opts: ChangesTarOptions = {}): Readable {
  return Readable.from(changesTarChunks(dir, changes, opts), { objectMode: false });
}

export function* changesTarChunks(dir: string, changes: readonly Change[], opts: ChangesTarOptions = {}): Generator<Buffer, void, undefined> {
  const out = new ChunkWriter(opts.chunkSize ?? 1 << 20);
  const appender = new TarAppender(out, opts, false);
  const now = opts.now ?? (() => {
    const ms = Date.now();
    return [Math.floor(ms / 1000), (ms % 1000) * 1e6] as [number, number];
  });
  const sorted = [...changes].sort((a, b) => Buffer.compare(Buffer.from(a.path), Buffer.from(b.path)));
  for (const c of sorted) {
    if (c.kind === 'delete') {
      const whiteout = posix.join(posix.dirname(c.path), '.wh.' + posix.basename(c.path));
      const [sec, nsec] = now();
      // A Go Header without Format: ModTime rounded to the second, atime/ctime dropped.
      out.put(encodeHeader({ name: whiteout.slice(1), typeflag: '\0', mode: 0, mtime: roundToSecond(sec, nsec) }));
      yield* out.drain();
      continue;
    }
    const abs = Buffer.from(posix.join(dir, c.path));
    let st: fs.BigIntStats;
    try {
      st = fs.lstatSync(abs, { bigint: true });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw walkError(abs, e);
      opts.onSkip?.(abs.toString(), 'vanished before it was written');
      continue;
    }
    yield* appender.add(abs, Buffer.from(c.path.slice(1)), st);
  }
  out.put(END_OF_ARCHIVE);
  out.seal();
  yield* out.drain();
}

/** diffID (sha256 of the layer tar) and byte size of `dir`'s layer tar, without keeping it. */
export function digestLayerTar(dir: string, opts: LayerTarOptions = {}): { diffID: Digest; size: number } {
  const hash = createHash('sha256');
  let size = 0;
  for (const chunk of layerTarChunks(dir, opts)) {
    hash.update(chunk);
    size += chunk.length;
  }
  return { diffID: 'sha256:' + hash.digest('hex'), size };
}

/** Go's tarAppender.addTarFile, with the overlay whiteout converter when `convertWhiteouts`. */
class TarAppender {
  private readonly seenInodes = new Map<bigint, Buffer>();
  private readonly names: IdNames;
  private readonly linknameQuirk: boolean;
  private readonly onSkip?: (path: string, reason: string) => void;

  constructor(
    private readonly out: ChunkWriter,
    opts: LayerTarOptions,
    private readonly convertWhiteouts: boolean,
  ) {
    this.names = opts.names ?? hostIdNames();
    this.linknameQuirk = opts.whiteoutLinknameQuirk ?? true;
    this.onSkip = opts.onSkip;
  }

  *add(abs: Buffer, rel: Buffer, st: fs.BigIntStats): Generator<Buffer, void, undefined> {
    const stMode = Number(st.mode);
    const fmt = stMode & S_IFMT;
    let typeflag: string;
    let name = rel;
    let size = 0;
    let linkname: Buffer = EMPTY;
    switch (fmt) {
      case S_IFREG: typeflag = '0'; size = Number(st.size); break;
      case S_IFDIR: typeflag = '5'; name = Buffer.concat([rel, SLASH]); break;
      case S_IFLNK: typeflag = '2'; linkname = fs.readlinkSync(abs, { encoding: 'buffer' }); break;
      case S_IFCHR: typeflag = '3'; break;
      case S_IFBLK: typeflag = '4'; break;
      case S_IFIFO: typeflag = '6'; break;
      default:
        // Go's FileInfoHeader refuses sockets ("sockets not supported"); Docker logs and goes on.
        this.onSkip?.(abs.toString(), fmt === S_IFSOCK ? 'sockets cannot be archived' : 'unknown file type');
        return;
    }

    // Docker's setHeaderForSpecialDevice tests the mode against S_IFBLK | S_IFCHR bitwise.
    let devmajor = 0, devminor = 0;
    if (stMode & (S_IFBLK | S_IFCHR)) [devmajor, devminor] = majorMinor(st.rdev);
    const uid = Number(st.uid), gid = Number(st.gid);
    const h: WriteHeader = {
      name, typeflag, mode: stMode & (S_IFMT | 0o7777), uid, gid, size,
      mtime: floorSeconds(st.mtimeNs), linkname,
      uname: this.names.uname(uid), gname: this.names.gname(gid),
      devmajor, devminor,
    };
    const cap = readCapability(abs);
    if (cap) h.xattrs = [['security.capability', cap]];

    // Hard links: the first path of an inode in walk order carries the content.
    if (fmt !== S_IFDIR && st.nlink > 1n) {
      const first = this.seenInodes.get(st.ino);
      if (first) {
        h.typeflag = '1';
        h.linkname = first;
        h.size = 0;
      } else {
        this.seenInodes.set(st.ino, rel);
      }
    }

    let opaqueMarker: WriteHeader | null = null;
    if (this.convertWhiteouts) {
      if (fmt === S_IFCHR && devmajor === 0 && devminor === 0) {
        h.name = whiteoutName(rel);
        h.mode = 0o600;
        h.typeflag = '0';
        h.size = 0;
        if (!this.linknameQuirk) h.linkname = EMPTY;
      } else if (fmt === S_IFDIR && isOpaque(abs)) {
        opaqueMarker = {
          name: Buffer.concat([name, OPAQUE_MARKER]), typeflag: '0', mode: h.mode & 0o777, size: 0,
          uid, gid, uname: h.uname, gname: h.gname, mtime: 0,
        };
      }
    }

    this.out.put(encodeHeader(h));
    if (opaqueMarker) this.out.put(encodeHeader(opaqueMarker));
    yield* this.out.drain();
    if (h.typeflag === '0' && h.size! > 0) yield* this.copyContent(abs, h.size!);
  }

  /** Exactly `size` bytes of the file (a file that grew is cut, as Go's tar writer does), then padding. */
  private *copyContent(abs: Buffer, size: number): Generator<Buffer, void, undefined> {
    const fd = fs.openSync(abs, 'r');
    try {
      let left = size;
      while (left > 0) {
        const n = this.out.readFrom(fd, left);
        if (n === 0) {
          throw new LaminaError('ECONFLICT',
            `${abs.toString()} shrank from ${size} to ${size - left} bytes while its layer tar was being written`);
        }
        left -= n;
        yield* this.out.drain();
      }
    } finally {
      fs.closeSync(fd);
    }
    this.out.zeros(paddingLength(size));
    yield* this.out.drain();
  }
}

/**
 * Collects output into fixed-size chunks. Sealed chunks wait in `ready` until drained; every
 * chunk is a new allocation, so consumers may hold on to them.
 */
class ChunkWriter {
  private buf: Buffer;
  private pos = 0;
  private ready: Buffer[] = [];

  constructor(private readonly size: number) {
    if (!(size >= 512)) throw new LaminaError('EINVAL', `chunk size ${size} is below 512 bytes`);
    this.buf = Buffer.allocUnsafe(size);
  }

  put(src: Buffer): void {
    let off = 0;
    while (off < src.length) {
      const n = src.copy(this.buf, this.pos, off);
      this.pos += n;
      off += n;
      if (this.pos === this.size) this.seal();
    }
  }

  zeros(count: number): void {
    while (count > 0) {
      const n = Math.min(count, this.size - this.pos);
      this.buf.fill(0, this.pos, this.pos + n);
      this.pos += n;
      count -= n;
      if (this.pos === this.size) this.seal();
    }
  }

  /** Reads up to `max` bytes of `fd` straight into the current chunk; 0 means end of file. */
  readFrom(fd: number, max: number): number {
    const n = fs.readSync(fd, this.buf, this.pos, Math.min(max, this.size - this.pos), null);
    this.pos += n;
    if (this.pos === this.size) this.seal();
    return n;
  }

  seal(): void {
    if (this.pos === 0) return;
    this.ready.push(this.buf.subarray(0, this.pos));
    this.buf = Buffer.allocUnsafe(this.size);
    this.pos = 0;
  }

  *drain(): Generator<Buffer, void, undefined> {
    if (this.ready.length === 0) return;
    const chunks = this.ready;
    this.ready = [];
    yield* chunks;
  }
}

function pushChildren(stack: Array<{ abs: Buffer; rel: Buffer }>, abs: Buffer, rel: Buffer): void {
  let names: Buffer[];
  try {
    names = fs.readdirSync(abs, { encoding: 'buffer' });
  } catch (e) {
    throw walkError(abs, e);
  }
  names.sort(Buffer.compare);
  for (let i = names.length - 1; i >= 0; i--) {
    const n = names[i];
    stack.push({
      abs: Buffer.concat([abs, SLASH, n]),
      rel: rel.length === 0 ? n : Buffer.concat([rel, SLASH, n]),
    });
  }
}

/** `dir/.wh.base` for an on-disk whiteout at `dir/base`. */
function whiteoutName(rel: Buffer): Buffer {
  const slash = rel.lastIndexOf(0x2f);
  return Buffer.concat([rel.subarray(0, slash + 1), WHITEOUT_PREFIX, rel.subarray(slash + 1)]);
}

/** security.capability as Docker exports it: a v3 (namespaced) capability becomes v2. */
function readCapability(abs: Buffer): Buffer | undefined {
  let v: Buffer | undefined;
  try {
    v = sys.lgetxattr(sysPath(abs), 'security.capability');
  } catch {
    return undefined; // Docker ignores read errors here
  }
  if (!v) return undefined;
  v = Buffer.from(v);
  const VERSION_OFFSET = 3, REVISION_2 = 2, REVISION_3 = 3, V2_SIZE = 20;
  if (v.length > VERSION_OFFSET && v[VERSION_OFFSET] === REVISION_3) {
    v[VERSION_OFFSET] = REVISION_2;
    v = v.subarray(0, V2_SIZE);
  }
  return v;
}

function isOpaque(abs: Buffer): boolean {
  let v: Buffer | undefined;
  try {
    v = sys.lgetxattr(sysPath(abs), 'trusted.overlay.opaque');
  } catch (e) {
    const code = (e as sys.SysError).code;
    if (code === 'ENOTSUP' || code === 'EOPNOTSUPP') return false;
    throw new LaminaError('EINVAL', `cannot read trusted.overlay.opaque of ${abs.toString()}: ${(e as Error).message}`, { cause: e });
  }
  return v !== undefined && v.length === 1 && v[0] === 0x79; // "y"
}

/**
 * A path for the syscall shim, which takes strings. File names are bytes; a name that is not
 * valid UTF-8 is handed over as a NUL-terminated Buffer, which the C binding accepts as
 * `const char *` as well.
 */
function sysPath(abs: Buffer): string {
  if (isUtf8(abs)) return abs.toString();
  return Buffer.concat([abs, Buffer.from([0])]) as unknown as string;
}

/** Linux dev_t → (major, minor), as golang.org/x/sys/unix Major/Minor. */
function majorMinor(rdev: bigint): [number, number] {
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & ~0xffn);
  return [Number(major & 0xffffffffn), Number(minor & 0xffffffffn)];
}

/** Go's ModTime.Truncate(time.Second).Unix(): floor, also for times before 1970. */
function floorSeconds(ns: bigint): number {
  let s = ns / NS_PER_S;
  if (ns < 0n && s * NS_PER_S !== ns) s -= 1n;
  return Number(s);
}

function walkError(abs: Buffer, e: unknown): LaminaError {
  return new LaminaError('EINVAL', `cannot write layer tar: ${abs.toString()}: ${(e as Error).message}`, { cause: e });
}
