// The file-system half of applying a layer: a TarVisitor that writes each entry into an overlay2
// `diff/` directory, with dockerd's overlay2 ApplyDiff semantics (moby pkg/archive Unpack + the
// overlay whiteout converter): `.wh.<name>` becomes a 0:0 character device, `.wh..wh..opq` marks
// its directory opaque, an entry over an existing path replaces it (two directories merge),
// directory times are set last. Placement is confined to the layer dir the way Docker's chroot
// confines it; see paths.ts for how names and symlinked parents are resolved.
//
// It runs where applyLayer puts it: on the parsing thread, or in a worker fed the same events.
import fs from 'node:fs';
import { LaminaError } from '../errors.js';
import * as sys from '../sys/index.js';
import { TypeFlag, type TarHeader, type TarVisitor } from '../tar/types.js';
import { cleanLayerPath, LayerTree, linkTargetParts, unsafe, type LayerTreeState, type ResolveOptions } from './paths.js';
import { dockerSize } from './size.js';

/** What extraction reads of a tar entry (every TarHeader has it). */
export type ExtractHeader = Pick<
  TarHeader,
  'name' | 'nameBytes' | 'linkname' | 'typeflag' | 'mode' | 'uid' | 'gid' | 'mtime' | 'mtimeNsec' | 'atime' | 'devmajor' | 'devminor' | 'xattrs'
>;

const WHITEOUT_PREFIX = '.wh.';
const WHITEOUT_OPAQUE = '.wh..wh..opq';
const OPAQUE_XATTR = 'trusted.overlay.opaque';

const { O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW } = fs.constants;
/** O_EXCL: a new file never writes through whatever (a symlink, a hard link) held the name. */
const OPEN_NEW_FILE = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW;

/** Entry names and their parents: symlinks in parents resolve inside the layer, missing dirs are created. */
const ENTRY_PARENT: ResolveOptions = { followSymlinks: true, create: true };
/** Whiteouts never go through a symlink (Docker refuses them; they would mask the wrong path). */
const WHITEOUT_PARENT: ResolveOptions = { followSymlinks: false, create: true };
/** Hard-link targets must already exist in this layer, reached without symlinks. */
const LINK_TARGET_PARENT: ResolveOptions = { followSymlinks: false, create: false };

type Time = [number, number];

/** A regular file whose content is arriving. */
interface OpenFile {
  fd: number;
  path: string;
  name: string;
  uid: number;
  gid: number;
  mode: number;
  /** False when the file was created with the header's owner already (see LayerExtractor.ownedOnCreate). */
  chown: boolean;
  /** False when open(2) already gave the file its final mode. */
  chmod: boolean;
  xattrs: Array<[string, Buffer]>;
  times: [Time, Time];
  written: number;
}

/**
 * Everything a LayerExtractor knows between two entries: enough for another one (in another
 * thread) to carry on with the rest of the layer exactly as this one would have.
 */
export interface ExtractorState {
  tree: LayerTreeState;
  rootSetgid: boolean;
  umask: number;
  /** In insertion order, which is the order directory times are set in. */
  dirTimes: Array<[string, [Time, Time]]>;
  size: number;
  sizeExact: boolean;
  entries: number;
}

/** The TarVisitor that writes entries into the layer directory. */
export class LayerExtractor implements TarVisitor {
  entries = 0;
  private tree: LayerTree;
  private file: OpenFile | null = null;
  /** Directory times, applied once all children exist (absolute path → [atime, mtime]). */
  private readonly dirTimes = new Map<string, [Time, Time]>();
  private size = 0;
  /** False once a directory tree was replaced: its sizes are then recounted at the end. */
  private sizeExact = true;
  // Who a new inode belongs to and which mode bits creating it can set, to skip chown and chmod
  // calls that would change nothing (two of the five syscalls per file in a typical layer).
  private readonly euid = process.geteuid?.() ?? -1;
  private readonly egid = process.getegid?.() ?? -1;
  private readonly umask: number;

  private readonly rootSetgid: boolean;

  /** `root` is an existing directory; `rootSetgid` whether it has S_ISGID; `umask` the process's. */
  constructor(root: string, rootSetgid = false, umask = process.umask()) {
    this.tree = new LayerTree(root, rootSetgid);
    this.rootSetgid = rootSetgid;
    this.umask = umask;
  }

  /** The state between two entries (no file may be open: call it before an entry, not inside one). */
  state(): ExtractorState {
    if (this.file) throw new Error('LayerExtractor.state called inside an entry');
    return {
      tree: this.tree.state(),
      rootSetgid: this.rootSetgid,
      umask: this.umask,
      dirTimes: [...this.dirTimes],
      size: this.size,
      sizeExact: this.sizeExact,
      entries: this.entries,
    };
  }

  /** An extractor that carries on from `state` (taken from another extractor of the same layer). */
  static from(state: ExtractorState): LayerExtractor {
    const x = new LayerExtractor(state.tree.root, state.rootSetgid, state.umask);
    x.tree = LayerTree.from(state.tree);
    for (const [p, times] of state.dirTimes) x.dirTimes.set(p, times);
    x.size = state.size;
    x.sizeExact = state.sizeExact;
    x.entries = state.entries;
    return x;
  }

  entry(h: ExtractHeader): void {
    if (h.typeflag === TypeFlag.XGlobalHeader) return; // Go reports it as an entry; Docker ignores it
    this.entries++;
    try {
      this.place(h);
    } catch (e) {
      throw withEntry(e, h.name);
    }
  }

  data(chunk: Buffer): void {
    const f = this.file;
    if (!f) return;
    try {
      for (let off = 0; off < chunk.length; ) off += fs.writeSync(f.fd, chunk, off, chunk.length - off);
    } catch (e) {
      throw withEntry(e, f.name);
    }
    f.written += chunk.length;
  }

  entryEnd(): void {
    const f = this.file;
    if (!f) return;
    this.file = null;
    try {
      // Docker's order: content, owner (chown clears setuid bits and file capabilities), xattrs,
      // mode, times. Content written after the xattrs would drop security.capability. Closing
      // changes no time, so setting them on the fd is the same as on the path afterwards.
      if (f.chown) fs.fchownSync(f.fd, f.uid, f.gid);
      for (const [k, v] of f.xattrs) setXattr(f.path, k, v);
      if (f.chmod) fs.fchmodSync(f.fd, f.mode);
      sys.futimesNs(f.fd, f.times[0], f.times[1]);
      fs.closeSync(f.fd);
      f.fd = -1;
    } catch (e) {
      if (f.fd >= 0) fs.closeSync(f.fd);
      throw withEntry(e, f.name);
    }
    this.size += f.written;
  }

  /** After the whole tar: sets directory times and returns the layer size. */
  finish(): number {
    for (const [p, [atime, mtime]] of this.dirTimes) sys.lutimesNs(p, atime, mtime);
    this.dirTimes.clear();
    if (!this.sizeExact) {
      this.size = dockerSize(this.tree.root);
      this.sizeExact = true;
    }
    return this.size;
  }

  /** Releases an open file after a failure. */
  close(): void {
    if (this.file) {
      try {
        fs.closeSync(this.file.fd);
      } catch {
        // already failing; the first error is the one to report
      }
      this.file = null;
    }
  }

  private place(h: ExtractHeader): void {
    if (h.name.includes('\uFFFD') && !Buffer.from(h.name).equals(h.nameBytes)) {
      throw new LaminaError('EBADTAR', `tar entry ${JSON.stringify(h.name)}: name is not valid UTF-8, which lamina does not support`);
    }
    const clean = cleanLayerPath(h.name);
    // The layer root itself ("./", "/", ".."): Docker skips it and keeps diff/'s own metadata.
    if (clean === '') return;
    const slash = clean.lastIndexOf('/');
    const dir = slash < 0 ? '' : clean.slice(0, slash);
    const base = clean.slice(slash + 1);
    if (base.startsWith(WHITEOUT_PREFIX)) return this.whiteout(h, dir, base);

    const parent = this.tree.resolveDir(dir, h.name, ENTRY_PARENT);
    const rel = parent === '' ? base : parent + '/' + base;
    const p = this.tree.abs(rel);
    const mode = h.mode & 0o7777;
    switch (h.typeflag) {
      case TypeFlag.Dir:
        return this.directory(h, parent, rel, p, mode);
      case TypeFlag.Reg:
        return this.openFile(h, parent, rel, p, mode);
      case TypeFlag.Symlink:
        this.createReplacing(rel, p, () => fs.symlinkSync(h.linkname, p));
        this.size += Buffer.byteLength(h.linkname);
        if (!this.ownedOnCreate(parent, h)) fs.lchownSync(p, h.uid, h.gid);
        for (const [k, v] of h.xattrs) setXattr(p, k, v);
        sys.lutimesNs(p, ...entryTimes(h));
        return;
      case TypeFlag.Link:
        return this.hardLink(h, rel, p, mode);
      case TypeFlag.Char:
      case TypeFlag.Block:
      case TypeFlag.Fifo: {
        if (!validDevice(h.devmajor) || !validDevice(h.devminor)) {
          // makedev() would silently truncate; Docker refuses these too.
          throw new LaminaError('EBADTAR', `tar entry ${JSON.stringify(h.name)}: device number ${h.devmajor}:${h.devminor} out of range`);
        }
        const kind = h.typeflag === TypeFlag.Char ? sys.S_IFCHR : h.typeflag === TypeFlag.Block ? sys.S_IFBLK : sys.S_IFIFO;
        this.createReplacing(rel, p, () => sys.mknod(p, kind | mode, h.devmajor, h.devminor));
        this.setOwnerAndXattrs(p, h);
        fs.chmodSync(p, mode); // after chown, and a device node is never opened by chmod
        sys.lutimesNs(p, ...entryTimes(h));
        return;
      }
      default:
        throw new LaminaError('EBADTAR', `tar entry ${JSON.stringify(h.name)}: unsupported entry type ${JSON.stringify(h.typeflag)}`);
    }
  }

  private directory(h: ExtractHeader, parent: string, rel: string, p: string, mode: number): void {
    // A new directory made with the header's owner and mode needs neither chown nor chmod.
    const owned = this.ownedOnCreate(parent, h);
    const exact = owned && this.modeOnCreate(h, mode);
    const createMode = exact ? mode : 0o700;
    let created = true;
    try {
      fs.mkdirSync(p, createMode);
    } catch (e) {
      if (errCode(e) !== 'EEXIST') throw e;
      // A directory over a directory merges (only the metadata changes); anything else is replaced.
      if (fs.lstatSync(p).isDirectory()) {
        created = false;
      } else {
        this.remove(rel, p);
        fs.mkdirSync(p, createMode);
      }
    }
    this.tree.addDir(rel, mode);
    if (!created || !owned) fs.lchownSync(p, h.uid, h.gid);
    for (const [k, v] of h.xattrs) setXattr(p, k, v);
    if (!created || !exact) fs.chmodSync(p, mode);
    this.dirTimes.set(p, entryTimes(h));
  }

  private openFile(h: ExtractHeader, parent: string, rel: string, p: string, mode: number): void {
    const owned = this.ownedOnCreate(parent, h);
    const exact = this.modeOnCreate(h, mode);
    const createMode = exact ? mode : 0o600;
    let fd: number;
    try {
      fd = fs.openSync(p, OPEN_NEW_FILE, createMode);
    } catch (e) {
      if (errCode(e) !== 'EEXIST') throw e;
      this.remove(rel, p);
      fd = fs.openSync(p, OPEN_NEW_FILE, createMode);
    }
    this.file = {
      fd,
      path: p,
      name: h.name,
      uid: h.uid,
      gid: h.gid,
      mode,
      chown: !owned,
      chmod: !exact,
      // Header buffers are only valid during entry(); the xattrs are set after the content.
      xattrs: h.xattrs.length === 0 ? h.xattrs : h.xattrs.map(([k, v]) => [k, Buffer.from(v)]),
      times: entryTimes(h),
      written: 0,
    };
  }

  private hardLink(h: ExtractHeader, rel: string, p: string, mode: number): void {
    const what = `hard link target ${JSON.stringify(h.linkname)}`;
    const parts = linkTargetParts(h.linkname);
    if (!parts) throw unsafe(h.name, `${what} is outside the layer`);
    const base = parts.pop()!;
    const parent = this.tree.resolveDir(parts.join('/'), h.name, LINK_TARGET_PARENT, what);
    const target = this.tree.abs(parent === '' ? base : parent + '/' + base);
    const check = (): fs.Stats => {
      const st = fs.lstatSync(target, { throwIfNoEntry: false });
      if (!st) throw unsafe(h.name, `${what} does not exist in the layer`);
      if (st.isDirectory()) throw unsafe(h.name, `${what} is a directory`);
      return st;
    };
    let targetStat = check();
    try {
      fs.linkSync(target, p); // link(2) does not follow a symlink target: the link is to the symlink
    } catch (e) {
      if (errCode(e) !== 'EEXIST') throw e;
      this.remove(rel, p);
      targetStat = check(); // the name removed may have been the target itself
      fs.linkSync(target, p);
    }
    // Docker applies the header to the shared inode through the new name; mode and times only
    // when that inode is not a symlink (there is no lchmod, and chtimes would follow it).
    this.setOwnerAndXattrs(p, h);
    if (!targetStat.isSymbolicLink()) {
      fs.chmodSync(p, mode);
      sys.lutimesNs(p, ...entryTimes(h));
    }
  }

  /** `.wh.<name>` → a 0:0 char device `<name>` with mode 0; `.wh..wh..opq` → the parent turns opaque. */
  private whiteout(h: ExtractHeader, dir: string, base: string): void {
    const target = base.slice(WHITEOUT_PREFIX.length);
    if (base !== WHITEOUT_OPAQUE && (target === '' || target === '.' || target === '..')) {
      throw unsafe(h.name, 'invalid whiteout entry');
    }
    const parent = this.tree.resolveDir(dir, h.name, WHITEOUT_PARENT);
    if (base === WHITEOUT_OPAQUE) {
      sys.lsetxattr(this.tree.abs(parent), OPAQUE_XATTR, 'y');
      return;
    }
    const rel = parent === '' ? target : parent + '/' + target;
    const p = this.tree.abs(rel);
    try {
      sys.mknod(p, sys.S_IFCHR, 0, 0);
    } catch (e) {
      // Docker's mknod fails the same way: a layer cannot both hold and delete a path.
      if (errCode(e) === 'EEXIST') {
        throw new LaminaError('EBADTAR', `tar entry ${JSON.stringify(h.name)}: whiteout for "${rel}", which this layer also contains`);
      }
      throw e;
    }
    // Owner as in the header (also undoing a setgid parent's group inheritance); no times, as Docker.
    fs.lchownSync(p, h.uid, h.gid);
  }

  /**
   * Runs `make`, which fails with EEXIST when the name is taken; then removes what holds the
   * name (as Docker does: never written through, a directory with all it holds) and runs it again.
   */
  private createReplacing(rel: string, p: string, make: () => void): void {
    try {
      make();
      return;
    } catch (e) {
      if (errCode(e) !== 'EEXIST') throw e;
    }
    this.remove(rel, p);
    make();
  }

  /** Removes an existing entry about to be replaced, keeping the caches and the size right. */
  private remove(rel: string, p: string): void {
    const st = fs.lstatSync(p);
    if (st.isDirectory()) {
      fs.rmSync(p, { recursive: true, force: true }); // unlinks symlinks inside, never follows them
      this.tree.forgetDir(rel);
      const below = p + '/';
      for (const d of this.dirTimes.keys()) if (d === p || d.startsWith(below)) this.dirTimes.delete(d);
      this.sizeExact = false;
    } else {
      fs.unlinkSync(p);
      if (st.nlink === 1) this.size -= st.size; // the inode is gone; with other links it still counts
    }
  }

  private setOwnerAndXattrs(p: string, h: ExtractHeader): void {
    fs.lchownSync(p, h.uid, h.gid);
    for (const [k, v] of h.xattrs) setXattr(p, k, v);
  }

  /**
   * Whether an inode this process creates in the real directory `parent` already has the
   * header's owner: ours, and our group unless the directory is setgid (then the inode takes
   * the directory's group). chown to the owner an inode has changes nothing but ctime.
   */
  private ownedOnCreate(parent: string, h: ExtractHeader): boolean {
    return h.uid === this.euid && h.gid === this.egid && !this.tree.isSetgid(parent);
  }

  /**
   * Whether open/mkdir with `mode` gives exactly `mode`: no bits the umask strips, no setuid,
   * setgid or sticky bits (chown clears the first two), and no xattrs (a POSIX ACL rewrites the
   * mode; Docker's chmod comes after the xattrs).
   */
  private modeOnCreate(h: ExtractHeader, mode: number): boolean {
    return (mode & (0o7000 | this.umask)) === 0 && h.xattrs.length === 0;
  }
}

/**
 * Sets one xattr on the path itself. Like Docker, a file system or namespace that refuses the
 * attribute (ENOTSUP, or EPERM such as user.* on a symlink) is not an error.
 */
function setXattr(p: string, name: string, value: Buffer): void {
  try {
    sys.lsetxattr(p, name, value);
  } catch (e) {
    const c = errCode(e);
    if (c !== 'ENOTSUP' && c !== 'EOPNOTSUPP' && c !== 'EPERM') throw e;
  }
}

/**
 * [atime, mtime] as Docker sets them: atime is the later of the header's atime and mtime, and a
 * time before the epoch or past what a 64-bit timespec in ns holds becomes the epoch.
 */
function entryTimes(h: ExtractHeader): [Time, Time] {
  const mtime: Time = [h.mtime, h.mtimeNsec];
  const atime: Time = h.atime && laterThan(h.atime, mtime) ? h.atime : mtime;
  return [bound(atime), bound(mtime)];
}

function laterThan(a: Time, b: Time): boolean {
  return a[0] > b[0] || (a[0] === b[0] && a[1] > b[1]);
}

const MAX_SEC = 9223372036; // (2^63 - 1) ns
const MAX_SEC_NS = 854775807;

function bound(t: Time): Time {
  if (t[0] < 0 || t[0] > MAX_SEC || (t[0] === MAX_SEC && t[1] > MAX_SEC_NS)) return [0, 0];
  return t;
}

function validDevice(n: number): boolean {
  return Number.isInteger(n) && n >= 0 && n <= 0xffffffff;
}

function errCode(e: unknown): string | undefined {
  return (e as { code?: string } | null)?.code;
}

/** Lamina errors pass unchanged; system errors get the entry's name in front of their message. */
function withEntry(e: unknown, name: string): unknown {
  if (e instanceof LaminaError || !(e instanceof Error)) return e;
  const prefix = `tar entry ${JSON.stringify(name)}: `;
  if (!e.message.startsWith(prefix)) e.message = prefix + e.message;
  return e;
}
