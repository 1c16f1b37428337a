// `lamina diff`: what changed in a container, with the result Docker 20.10 gets from its
// two-tree walk (archive.ChangesDirs over the container's merged view and the init layer's),
// but computed from the container's upper dir alone, so the cost follows the change and not the
// image. Rules reproduced (spec §10, moby pkg/archive changes.go / changes_unix.go):
//  - an entry in the new view only → A, and A for everything below it;
//  - an entry gone from the new view → D (its children are not listed);
//  - an entry in both whose stat differs (mode incl. type, uid, gid, rdev; and for a non-dir in
//    the old view: mtime and size) or whose security.capability differs → C;
//  - a directory with any change below it → C (the root never appears);
//  - trusted.overlay.* bookkeeping (origin, impure, uuid) is invisible; a copied-up file whose
//    stat did not change is no change at all.
// Overlay rules applied to the upper dir: a char 0:0 device is a whiteout, an opaque dir hides
// the lower dirs of its name (and so does everything below it), a `trusted.overlay.redirect`
// dir merges the lower dir it was renamed from.
import fs from 'node:fs';
import type { Change, ChangeKind } from '../archive/write.js';
import * as sys from '../sys/index.js';
import type { Store } from '../store.js';
import type { Container } from './store.js';

export type { Change, ChangeKind };

/** One line of `lamina diff`: Docker's change with the raw path bytes (names need not be UTF-8). */
export interface PathChange extends Change {
  raw: Buffer;
}

/** Docker's letters and API numbers for the three kinds (`docker diff`, GET /containers/{id}/changes). */
export const KIND_LETTER: Record<ChangeKind, string> = { modify: 'C', add: 'A', delete: 'D' };
export const KIND_NUMBER: Record<ChangeKind, number> = { modify: 0, add: 1, delete: 2 };

const SLASH = 0x2f;
const SLASH_BUF = Buffer.from('/');
const S_IFMT = 0o170000n;
const S_IFDIR = 0o040000n;
const S_IFCHR = 0o020000n;
const NO_DIRS: readonly Buffer[] = Object.freeze([]) as readonly Buffer[];

/**
 * One side's entry at a path. `abs` is the real file whose stat and xattrs the view shows (the
 * topmost one); for a directory, `lowers` are the lower dirs merged into it, top first (for a
 * directory that exists only in lowers, `lowers[0]` is `abs`).
 */
interface Node {
  abs: Buffer;
  st: fs.BigIntStats;
  upper: boolean;
  lowers: readonly Buffer[];
}

/** The changes of a container against its init layer, sorted by path bytes. */
export function containerChanges(store: Store, c: Container): PathChange[] {
  const d = store.driver;
  const lowers = [d.diffPath(c.mount.initID), ...d.lowerDiffPaths(c.mount.initID)];
  return overlayChanges(d.diffPath(c.mount.mountID), lowers);
}

/**
 * Docker's change list for an overlay upper dir over `lowers` (nearest first), sorted by path
 * bytes (Docker's own order is random). Reads every entry of `upper`, and of the lowers only the
 * names the upper touches (plus the full lower listing of opaque or redirected directories).
 */
export function overlayChanges(upper: string, lowers: readonly string[]): PathChange[] {
  const walker = new ChangeWalker(lowers.map((l) => Buffer.from(l)));
  const root = Buffer.from(upper);
  const st = fs.lstatSync(root, { bigint: true });
  const rootLowers = walker.rootLowers;
  const newRoot: Node = { abs: root, st, upper: true, lowers: isOpaque(root) ? NO_DIRS : rootLowers };
  const oldRoot: Node | undefined = rootLowers.length ? { abs: rootLowers[0], st: fs.lstatSync(rootLowers[0], { bigint: true }), upper: false, lowers: rootLowers } : undefined;
  walker.compareDir(Buffer.alloc(0), newRoot, oldRoot);
  const out = walker.changes;
  out.sort((a, b) => Buffer.compare(a.raw, b.raw));
  return out;
}

class ChangeWalker {
  readonly changes: PathChange[] = [];
  /** The lower roots as the kernel stacks them: the walk stops below an opaque root. */
  readonly rootLowers: readonly Buffer[];

  constructor(lowers: Buffer[]) {
    const stack: Buffer[] = [];
    for (const l of lowers) {
      stack.push(l);
      if (isOpaque(l)) break;
    }
    this.rootLowers = stack;
  }

  private emit(rel: Buffer, kind: ChangeKind): void {
    this.changes.push({ path: rel.toString(), kind, raw: rel });
  }

  /**
   * Emits the changes below directory `rel` (not `rel` itself). `n` is the new view's directory;
   * `o` the old view's entry at the same path (a directory, a non-directory, or nothing).
   */
  compareDir(rel: Buffer, n: Node, o: Node | undefined): void {
    const oldLowers = o && isDir(o.st) ? o.lowers : NO_DIRS;
    if (n.upper && sameDirs(n.lowers, oldLowers)) {
      // The usual case: below this dir both views share the same lowers, so only names the
      // upper dir holds can differ.
      for (const name of sortedNames(n.abs)) {
        const abs = join(n.abs, name);
        const st = fs.lstatSync(abs, { bigint: true });
        const childRel = join(rel, name);
        // With equal stacks, the old view's entry is also what the upper entry lies over.
        const old = this.lookup(oldLowers, name);
        if (isWhiteout(st)) {
          if (old) this.emit(childRel, 'delete');
          continue;
        }
        this.compareEntry(childRel, this.upperNode(abs, st, n.lowers, name, old), old);
      }
      return;
    }
    // The views below this dir differ (opaque, redirected, replaced or new): compare full listings.
    const upperNames = new Map<string, { abs: Buffer; st: fs.BigIntStats }>();
    const hidden = new Set<string>();
    if (n.upper) {
      for (const name of sortedNames(n.abs)) {
        const abs = join(n.abs, name);
        const st = fs.lstatSync(abs, { bigint: true });
        const key = name.toString('latin1');
        if (isWhiteout(st)) hidden.add(key);
        else upperNames.set(key, { abs, st });
      }
    }
    const newLowerNames = visibleNames(n.lowers);
    const oldNames = visibleNames(oldLowers);
    const all = new Set<string>([...upperNames.keys(), ...oldNames]);
    for (const k of newLowerNames) if (!hidden.has(k)) all.add(k);
    for (const key of all) {
      const name = Buffer.from(key, 'latin1');
      const childRel = join(rel, name);
      const u = upperNames.get(key);
      let nw: Node | undefined;
      if (u) nw = this.upperNode(u.abs, u.st, n.lowers, name);
      else if (!hidden.has(key) && newLowerNames.has(key)) nw = this.lookup(n.lowers, name);
      const old = oldNames.has(key) ? this.lookup(oldLowers, name) : undefined;
      this.compareEntry(childRel, nw, old);
    }
  }

  private compareEntry(rel: Buffer, nw: Node | undefined, old: Node | undefined): void {
    if (!nw) {
      if (old) this.emit(rel, 'delete');
      return;
    }
    if (!old) {
      this.emit(rel, 'add');
      if (isDir(nw.st)) this.compareDir(rel, nw, undefined);
      return;
    }
    // The same real entry on both sides (a lower entry both views reach): nothing below differs.
    if (nw.abs.equals(old.abs) && sameDirs(nw.lowers, old.lowers)) return;
    const changed = statDifferent(old.st, nw.st) || !sameCapability(old.abs, nw.abs);
    const mark = this.changes.length;
    if (changed) this.emit(rel, 'modify');
    if (isDir(nw.st)) {
      this.compareDir(rel, nw, old);
      // A directory with changes below it is reported as changed itself.
      if (!changed && this.changes.length > mark) this.emit(rel, 'modify');
    }
  }

  /** The new view's entry for an upper entry; for a directory, which lower dirs merge into it. */
  private upperNode(abs: Buffer, st: fs.BigIntStats, parentLowers: readonly Buffer[], name: Buffer, belowHint?: Node): Node {
    if (!isDir(st) || isOpaque(abs)) return { abs, st, upper: true, lowers: NO_DIRS };
    const redirect = xattr(abs, 'trusted.overlay.redirect');
    let below: Node | undefined;
    if (redirect && redirect.length) {
      // A renamed directory (redirect_dir=on): relative = a sibling, absolute = from the root.
      below = redirect[0] === SLASH ? this.lookupPath(redirect) : this.lookup(parentLowers, redirect);
    } else {
      below = belowHint ?? this.lookup(parentLowers, name);
    }
    return { abs, st, upper: true, lowers: below && isDir(below.st) ? below.lowers : NO_DIRS };
  }

  /** Overlay lookup of `name` in a stack of lower dirs (top first). */
  lookup(stack: readonly Buffer[], name: Buffer): Node | undefined {
    let found: { abs: Buffer; st: fs.BigIntStats; lowers: Buffer[] } | undefined;
    for (const dir of stack) {
      const abs = join(dir, name);
      const st = fs.lstatSync(abs, { bigint: true, throwIfNoEntry: false });
      if (!st) continue;
      if (isWhiteout(st)) break;
      if (!isDir(st)) {
        // A non-directory ends the lookup; below a directory it ends the merge instead.
        if (!found) return { abs, st, upper: false, lowers: NO_DIRS };
        break;
      }
      if (!found) found = { abs, st, lowers: [abs] };
      else found.lowers.push(abs);
      if (isOpaque(abs)) break;
    }
    return found && { abs: found.abs, st: found.st, upper: false, lowers: found.lowers };
  }

  /** Lookup of an absolute path (a redirect target) from the lower roots. */
  private lookupPath(p: Buffer): Node | undefined {
    let stack: readonly Buffer[] = this.rootLowers;
    let node: Node | undefined;
    for (const part of splitPath(p)) {
      node = this.lookup(stack, part);
      if (!node || !isDir(node.st)) return undefined;
      stack = node.lowers;
    }
    return node;
  }
}

/** moby changes_unix.go statDifferent: directories are compared by mode, owner and rdev only. */
function statDifferent(o: fs.BigIntStats, n: fs.BigIntStats): boolean {
  if (o.mode !== n.mode || o.uid !== n.uid || o.gid !== n.gid || o.rdev !== n.rdev) return true;
  if ((o.mode & S_IFDIR) === S_IFDIR) return false;
  return o.size !== n.size || !sameFsTime(o.mtimeNs, n.mtimeNs);
}

/** moby sameFsTimeSpec: equal seconds and equal nanoseconds, unless either side has none. */
function sameFsTime(a: bigint, b: bigint): boolean {
  const NS = 1_000_000_000n;
  if (a === b) return true;
  const an = ((a % NS) + NS) % NS, bn = ((b % NS) + NS) % NS;
  return (a - an) / NS === (b - bn) / NS && (an === 0n || bn === 0n);
}

function sameCapability(a: Buffer, b: Buffer): boolean {
  const x = xattr(a, 'security.capability');
  const y = xattr(b, 'security.capability');
  if (!x || !y) return !x === !y || (x ?? y)!.length === 0;
  return x.equals(y);
}

function isDir(st: fs.BigIntStats): boolean {
  return (st.mode & S_IFMT) === S_IFDIR;
}

function isWhiteout(st: fs.BigIntStats): boolean {
  return (st.mode & S_IFMT) === S_IFCHR && st.rdev === 0n;
}

function isOpaque(dir: Buffer): boolean {
  const v = xattr(dir, 'trusted.overlay.opaque');
  return v !== undefined && v.length === 1 && v[0] === 0x79; // "y"
}

/** An xattr of the path itself, or undefined when it has none (or the fs keeps none). */
function xattr(p: Buffer, name: string): Buffer | undefined {
  try {
    return sys.lgetxattr(sys.cPath(p), name);
  } catch (e) {
    const code = (e as sys.SysError).code;
    if (code === 'ENOTSUP' || code === 'EOPNOTSUPP' || code === 'ENOENT') return undefined;
    throw e;
  }
}

function sameDirs(a: readonly Buffer[], b: readonly Buffer[]): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (!a[i].equals(b[i])) return false;
  return true;
}

/** Names visible in the merged listing of a lower stack (whiteouts hide names below them). */
function visibleNames(stack: readonly Buffer[]): Set<string> {
  const seen = new Set<string>();
  const visible = new Set<string>();
  for (const dir of stack) {
    for (const ent of fs.readdirSync(dir, { withFileTypes: true, encoding: 'buffer' })) {
      const key = ent.name.toString('latin1');
      if (seen.has(key)) continue;
      seen.add(key);
      if (ent.isCharacterDevice() && isWhiteout(fs.lstatSync(join(dir, ent.name), { bigint: true }))) continue;
      visible.add(key);
    }
  }
  return visible;
}

function sortedNames(dir: Buffer): Buffer[] {
  const names = fs.readdirSync(dir, { encoding: 'buffer' });
  names.sort(Buffer.compare);
  return names;
}

function join(dir: Buffer, name: Buffer): Buffer {
  return Buffer.concat([dir, SLASH_BUF, name]);
}

function splitPath(p: Buffer): Buffer[] {
  const parts: Buffer[] = [];
  let start = 0;
  for (let i = 0; i <= p.length; i++) {
    if (i === p.length || p[i] === SLASH) {
      if (i > start) {
        const part = p.subarray(start, i);
        if (!(part.length === 1 && part[0] === 0x2e)) parts.push(part);
      }
      start = i + 1;
    }
  }
  return parts;
}
