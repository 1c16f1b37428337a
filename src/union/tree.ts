// The union's namespace, resolved the way overlayfs resolves it (fs/overlayfs/namei.c and
// readdir.c; the rules are in ../shared/docs/kernel-overlayfs-semantics.md §2–§5):
//   * a name is looked up in the parent's real directories, top down;
//   * the topmost non-directory wins and hides everything below it;
//   * a directory merges with same-named directories below it until a layer holds a
//     non-directory, a whiteout, or the directory found is opaque (`opaque=y`);
//   * a whiteout is a char 0:0 device or, in any layer, an empty regular file carrying the
//     overlay whiteout xattr (an "xwhiteout"; measured on 6.18: lookup honours it everywhere,
//     readdir only hides it in `opaque=x` directories of layers known to hold such marks);
//   * a directory with a redirect xattr continues the lookup below at the redirect's name.
// Results are cached per directory (DirNode.children) and only the engine's own writes change
// them, so a lookup never rescans a layer.
import fs from 'node:fs';
import { DT_CHR, DT_DIR, DT_REG, DT_UNKNOWN, dtypeOfMode, readRawDir } from './dirents.js';
import { isWhiteoutStat, isXwhiteoutFile, readDirMarks, type OverlayXattrNames } from './overlay-xattrs.js';

/** The layers of one union: index 0 is the upper dir when there is one, then the lowers, nearest first. */
export interface LayerSet {
  roots: string[];
  hasUpper: boolean;
  /** Index of the bottom layer: the kernel reads no opaque/redirect marks there. */
  bottom: number;
  x: OverlayXattrNames;
  /** Layers in which an `opaque=x` directory has been seen (the kernel's layer->has_xwhiteouts). */
  xwhiteoutLayers: Set<number>;
  /** Per layer: a short getdents read means the end (see dirents.fillsBuffer). */
  shortReadIsEnd: boolean[];
}

/** One real directory taking part in a union directory. */
export interface RealDir {
  layer: number;
  path: string;
}

/**
 * A name that resolves to nothing; `upperWhiteout` when a whiteout in the upper layer hides it,
 * `tooLong` when it is longer than NAME_MAX (which the kernel reports at lookup time).
 */
export interface NoEntry { kind: 'none'; upperWhiteout: boolean; tooLong?: boolean }
export interface DirEntry { kind: 'dir'; node: DirNode }
/** Any non-directory, served by exactly one real file. */
export interface FileEntry {
  kind: 'file';
  layer: number;
  path: string;
  dtype: number;
  /** A lower symlink's target, read once (lower layers never change). */
  target?: string;
  /** Entered from a directory listing: an empty one may still turn out to be an xwhiteout. */
  unverified?: boolean;
}
export type Child = NoEntry | DirEntry | FileEntry;

export const NO_ENTRY: NoEntry = Object.freeze({ kind: 'none', upperWhiteout: false }) as NoEntry;
export const UPPER_WHITEOUT: NoEntry = Object.freeze({ kind: 'none', upperWhiteout: true }) as NoEntry;
export const TOO_LONG: NoEntry = Object.freeze({ kind: 'none', upperWhiteout: false, tooLong: true }) as NoEntry;

/** Visible entries of a union directory in the order the kernel's readdir returns them. */
export interface Listing {
  names: string[];
  types: number[];
}

/** Lookups of names not yet cached after which a directory is listed instead of probed name by name. */
const LIST_AFTER_MISSES = 3;

export class DirNode {
  readonly children = new Map<string, Child>();
  listing: Listing | undefined;
  /** A listing has filled `children` once. */
  listed = false;
  private misses = 0;

  constructor(
    readonly parent: DirNode | null,
    readonly name: string,
    /** Real directories merged into this one, top first. */
    public stack: RealDir[],
    /** The upper copy is opaque (the kernel's "opaque dentry"). */
    public opaque: boolean,
    /** The upper copy's redirect xattr, if any. */
    public redirect: string | undefined,
    /** A lower copy is marked opaque=x: readdir must look for xwhiteouts. */
    public xwhiteouts = false,
  ) {}

  /** Merged directories report nlink 1 and are listed by merging (not read straight through). */
  get merged(): boolean {
    return this.stack.length > 1;
  }

  /** The canonical union path ('/' for the root). */
  get path(): string {
    if (!this.parent) return '/';
    const p = this.parent.path;
    return p === '/' ? '/' + this.name : p + '/' + this.name;
  }

  /**
   * The cached resolution of a name, looked up on first use. `verify: false` hands back a
   * listing-made entry unchecked; the caller (stat) then checks it with its own lstat.
   */
  child(ls: LayerSet, name: string, verify = true): Child {
    let c = this.children.get(name);
    if (c === undefined && !this.listed && ++this.misses > LIST_AFTER_MISSES) {
      // Many names looked up here: reading the layers' directories once is cheaper than
      // probing every layer for every name, and it fills this cache for the rest. (Once only:
      // after the engine's own writes the cache stays right without re-reading.)
      this.listing = listDir(ls, this, false);
      c = this.children.get(name);
      if (c !== undefined && verify && c.kind === 'file' && c.unverified) return this.verified(ls, name, c, fs.lstatSync(c.path, { throwIfNoEntry: false }));
    }
    if (c === undefined) {
      c = lookupChild(ls, this, name);
      this.children.set(name, c);
    } else if (verify && c.kind === 'file' && c.unverified) {
      const st = fs.lstatSync(c.path, { throwIfNoEntry: false });
      return this.verified(ls, name, c, st);
    }
    return c;
  }

  /** Settles a listing-made regular file entry given its lstat: a real file, or an xwhiteout after all. */
  verified(ls: LayerSet, name: string, c: FileEntry, st: fs.Stats | fs.BigIntStats | undefined): Child {
    if (st && !isXwhiteoutFile(c.path, st, ls.x)) {
      c.unverified = undefined;
      return c;
    }
    this.children.delete(name);
    return this.child(ls, name);
  }

  /** Forgets what is known about one name (after the engine changed it). */
  forget(name: string): void {
    this.children.delete(name);
    this.listing = undefined;
  }
}

function lstatOrUndefined(p: string): fs.Stats | undefined {
  try {
    return fs.lstatSync(p, { throwIfNoEntry: false });
  } catch (e) {
    // A non-directory in the middle of a redirect path.
    if ((e as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
    throw e;
  }
}

/**
 * Resolves `name` inside `parent`, following ovl_lookup(): each of the parent's real
 * directories is probed top down (or, after an absolute redirect, every layer below).
 */
export function lookupChild(ls: LayerSet, parent: DirNode, name: string): Child {
  let candidates: RealDir[] = parent.stack;
  let ci = 0;
  let lookupName = name;
  let absolute = false;
  const dirs: RealDir[] = [];
  let opaque = false;
  let xwhiteouts = false;
  let upperRedirect: string | undefined;
  let stopAfterThis = false;

  while (ci < candidates.length) {
    const cand = candidates[ci++];
    const isUpper = ls.hasUpper && cand.layer === 0;
    let real: string;
    if (absolute) {
      const r = probeAbsolute(ls, cand.layer, lookupName);
      if (r === 'stop') break;
      if (r === undefined) continue;
      real = r.path;
      stopAfterThis = r.opaqueOnPath;
    } else {
      real = cand.path + '/' + lookupName;
    }
    const st = lstatOrUndefined(real);
    if (!st) {
      if (stopAfterThis) break;
      continue;
    }
    if (isWhiteoutStat(st) || isXwhiteoutFile(real, st, ls.x)) {
      if (isUpper) return UPPER_WHITEOUT;
      break;
    }
    if (!st.isDirectory()) {
      if (dirs.length > 0) break;
      return { kind: 'file', layer: cand.layer, path: real, dtype: dtypeOfMode(st.mode) };
    }
    const rd: RealDir = { layer: cand.layer, path: real };
    dirs.push(rd);
    if (cand.layer === ls.bottom) break;
    const marks = readDirMarks(real, ls.x);
    if (marks.opaque === 'x' && !isUpper) {
      xwhiteouts = true;
      ls.xwhiteoutLayers.add(cand.layer);
    } else if (marks.opaque === 'y') {
      if (isUpper) opaque = true;
      break;
    }
    if (stopAfterThis) break;
    if (marks.redirect !== undefined) {
      if (isUpper) upperRedirect = marks.redirect;
      if (marks.redirect.startsWith('/')) {
        // Continue in every layer below this one, from its root.
        absolute = true;
        lookupName = marks.redirect.replace(/^\/+/, '');
        candidates = [];
        for (let l = cand.layer + 1; l < ls.roots.length; l++) candidates.push({ layer: l, path: ls.roots[l] });
        ci = 0;
      } else if (!marks.redirect.includes('/')) {
        lookupName = marks.redirect;
      }
    }
  }
  if (dirs.length === 0) return NO_ENTRY;
  return { kind: 'dir', node: new DirNode(parent, name, dirs, opaque, upperRedirect, xwhiteouts) };
}

/**
 * Finds an absolute redirect path inside one layer: every component but the last must be a
 * directory; a whiteout or non-directory on the way stops the whole lookup, an opaque
 * directory on the way stops it after this layer.
 */
function probeAbsolute(ls: LayerSet, layer: number, rel: string): { path: string; opaqueOnPath: boolean } | 'stop' | undefined {
  const comps = rel.split('/').filter(Boolean);
  let p = ls.roots[layer];
  let opaqueOnPath = false;
  for (let i = 0; i < comps.length - 1; i++) {
    p += '/' + comps[i];
    const st = lstatOrUndefined(p);
    if (!st) return undefined;
    if (isWhiteoutStat(st) || !st.isDirectory()) return 'stop';
    if (layer !== ls.bottom && readDirMarks(p, ls.x).opaque === 'y') opaqueOnPath = true;
  }
  return { path: p + '/' + comps[comps.length - 1], opaqueOnPath };
}

interface MergeEntry {
  name: string;
  type: number;
  /** Position in the stack where the name was first seen (its topmost layer). */
  top: number;
  hidden: boolean;
  moved: boolean;
  /** For a directory: the lower stack positions holding the name too, with their types ([k, type, …]). */
  below?: number[];
}

/**
 * Lists a union directory like ovl_iterate(). A directory served by one real directory is read
 * straight through (whiteouts included, as the kernel does). A merged one is merged like
 * ovl_dir_read_merged(): the layers are read top down, each adding the names not seen yet;
 * then the lowest layer's names are put first, in its own order (names seen above keep their
 * upper type); whiteouts and xwhiteouts are dropped.
 *
 * `touchUpper`: a user-visible readdir reads the upper directory without O_NOATIME so its
 * atime moves as the kernel's touch_atime() moves it; internal reads never touch atimes.
 * Non-directory entries are also entered into the lookup cache (their topmost layer is known).
 */
export function listDir(ls: LayerSet, node: DirNode, touchUpper: boolean, forceMerge = false): Listing {
  node.listed = true;
  const stack = node.stack;
  const isUpper = (rd: RealDir) => ls.hasUpper && rd.layer === 0;
  const checksXwhiteouts = (rd: RealDir) => node.xwhiteouts && ls.xwhiteoutLayers.has(rd.layer);
  if (stack.length === 1 && !forceMerge && !checksXwhiteouts(stack[0])) {
    const raw = readRawDir(stack[0].path, !(touchUpper && isUpper(stack[0])), ls.shortReadIsEnd[stack[0].layer]);
    primeChildren(ls, node, raw.names, raw.types);
    return raw;
  }
  const seen = new Map<string, MergeEntry>();
  const middle: MergeEntry[] = [];
  const first: MergeEntry[] = [];
  const last = stack.length - 1;
  for (let k = 0; k <= last; k++) {
    const rd = stack[k];
    const raw = readRawDir(rd.path, !(touchUpper && isUpper(rd)), ls.shortReadIsEnd[rd.layer]);
    const lowest = k === last;
    for (let i = 0; i < raw.names.length; i++) {
      const name = raw.names[i];
      let e = seen.get(name);
      if (e) {
        if (e.type === DT_DIR) (e.below ??= []).push(k, raw.types[i]);
        if (lowest) {
          e.moved = true;
          first.push(e);
        }
        continue;
      }
      const type = raw.types[i];
      e = { name, type, top: k, hidden: false, moved: lowest };
      if (type === DT_CHR || type === DT_UNKNOWN) {
        const st = lstatOrUndefined(rd.path + '/' + name);
        e.hidden = st !== undefined && isWhiteoutStat(st);
        if (st && type === DT_UNKNOWN) e.type = dtypeOfMode(st.mode);
      } else if (type === DT_REG && checksXwhiteouts(rd)) {
        const p = rd.path + '/' + name;
        const st = lstatOrUndefined(p);
        e.hidden = st !== undefined && isXwhiteoutFile(p, st, ls.x);
      }
      seen.set(name, e);
      (lowest ? first : middle).push(e);
    }
  }
  const names: string[] = [];
  const types: number[] = [];
  const add = (e: MergeEntry) => {
    if (e.hidden) return;
    names.push(e.name);
    types.push(e.type);
    if (node.children.has(e.name)) return;
    if (e.type === DT_DIR) {
      const d = dirFromListing(ls, node, e.name, e.top, e.below);
      if (d) node.children.set(e.name, d);
    } else if (e.type !== DT_CHR && e.type !== DT_UNKNOWN) {
      const rd = stack[e.top];
      const f: FileEntry = { kind: 'file', layer: rd.layer, path: rd.path + '/' + e.name, dtype: e.type };
      if (e.type === DT_REG) f.unverified = true;
      node.children.set(e.name, f);
    }
  };
  for (const e of first) add(e);
  for (const e of middle) if (!e.moved) add(e);
  return { names, types };
}

/** Enters the entries of a single-layer directory into the lookup cache. */
function primeChildren(ls: LayerSet, node: DirNode, names: string[], types: number[]): void {
  const rd = node.stack[0];
  for (let i = 0; i < names.length; i++) {
    const t = types[i];
    if (t === DT_CHR || t === DT_UNKNOWN || node.children.has(names[i])) continue;
    if (t === DT_DIR) {
      const d = dirFromListing(ls, node, names[i], 0, undefined);
      if (d) node.children.set(names[i], d);
      continue;
    }
    const f: FileEntry = { kind: 'file', layer: rd.layer, path: rd.path + '/' + names[i], dtype: t };
    if (t === DT_REG) f.unverified = true;
    node.children.set(names[i], f);
  }
}

/**
 * Resolves a directory child from what the listing saw (which layers hold the name, as what),
 * with the same rules as lookupChild() but without probing layers: only the overlay marks of
 * the directories found are read. Gives up (undefined) on a redirect, which lookupChild follows.
 */
function dirFromListing(ls: LayerSet, parent: DirNode, name: string, top: number, below: number[] | undefined): DirEntry | undefined {
  const dirs: RealDir[] = [];
  let opaque = false;
  let xwhiteouts = false;
  const visit = (k: number, type: number): boolean | undefined => {
    // A non-directory (or a whiteout) below a directory ends the merge.
    if (type !== DT_DIR) return false;
    const rd = parent.stack[k];
    const isUpper = ls.hasUpper && rd.layer === 0;
    const real = rd.path + '/' + name;
    dirs.push({ layer: rd.layer, path: real });
    if (rd.layer === ls.bottom) return false;
    const marks = readDirMarks(real, ls.x);
    if (marks.redirect !== undefined) return undefined;
    if (marks.opaque === 'x' && !isUpper) {
      xwhiteouts = true;
      ls.xwhiteoutLayers.add(rd.layer);
    } else if (marks.opaque === 'y') {
      if (isUpper) opaque = true;
      return false;
    }
    return true;
  };
  let go = visit(top, DT_DIR);
  for (let i = 0; go && below && i < below.length; i += 2) go = visit(below[i], below[i + 1]);
  if (go === undefined) return undefined;
  return { kind: 'dir', node: new DirNode(parent, name, dirs, opaque, undefined, xwhiteouts) };
}
