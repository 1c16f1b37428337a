// Where a tar entry lands inside a layer directory, decided without ever leaving it.
//
// Docker 20.10 extracts layers chrooted into the layer dir, so an entry name is cleaned
// lexically with "/" as the layer root (`..` above the root stays at the root, a leading "/"
// is the layer root) and symlinks met in parent components resolve inside the layer
// (absolute targets from the layer root, `..` clamped at it). LayerTree reproduces that with
// lstat/readlink walks over real paths under the root, so no path it returns can point outside.
import fs from 'node:fs';
import { LaminaError } from '../errors.js';

/** Linux gives up after 40 symlinks in one lookup (ELOOP); so do we. */
const MAX_SYMLINKS = 40;
const SETGID = 0o2000;

/**
 * A tar entry name as a clean path relative to the layer root, as Go's filepath.Clean gives it
 * after joining the name to "/": empty and "." components dropped, ".." pops (never above the
 * root). The root itself gives ''.
 */
export function cleanLayerPath(name: string): string {
  // Fast path, the common case: no component can be empty, "." or ".." (such a component starts
  // the name or follows a "/"), so only a trailing "/" needs dropping.
  const first = name.charCodeAt(0);
  if (first !== 0x2e /* . */ && first !== 0x2f /* / */ && !name.includes('/.') && !name.includes('//')) {
    return name.endsWith('/') ? name.slice(0, -1) : name;
  }
  const out: string[] = [];
  for (const c of name.split('/')) {
    if (c === '' || c === '.') continue;
    if (c === '..') out.pop();
    else out.push(c);
  }
  return out.join('/');
}

/**
 * Components of a hard-link target: a leading "/" means the layer root, but unlike entry names
 * a target whose `..` climbs above the root is refused (returns null), as is the root itself.
 */
export function linkTargetParts(linkname: string): string[] | null {
  const out: string[] = [];
  for (const c of linkname.split('/')) {
    if (c === '' || c === '.') continue;
    if (c === '..') {
      if (out.length === 0) return null;
      out.pop();
    } else out.push(c);
  }
  return out.length > 0 ? out : null;
}

export interface LayerTreeState {
  root: string;
  realDirs: string[];
  setgidDirs: string[];
}

export interface ResolveOptions {
  /** Follow symlinks met in parent components, chroot-style; when false a symlink refuses. */
  followSymlinks: boolean;
  /** Create missing components that come from the name (not from a symlink target) as 0755 root:root dirs, as Docker does for implied parents. */
  create: boolean;
}

/**
 * The directory tree of one layer being extracted. Keeps the set of relative paths known to be
 * real directories (every component lstat-ed as a directory, or created by us), so the common
 * case (an entry whose parent was just extracted) costs one Set lookup.
 *
 * Sound only while nobody else writes under the root: every removal the extractor makes must be
 * reported through forgetDir().
 */
export class LayerTree {
  readonly root: string;
  private readonly realDirs = new Set<string>(['']);
  /** The real directories known to carry S_ISGID (new entries in them take the directory's group). */
  private readonly setgidDirs = new Set<string>();

  constructor(root: string, rootSetgid = false) {
    this.root = root;
    if (rootSetgid) this.setgidDirs.add('');
  }

  /** What is known about the tree, to carry on in another thread (see LayerTree.from). */
  state(): LayerTreeState {
    return { root: this.root, realDirs: [...this.realDirs], setgidDirs: [...this.setgidDirs] };
  }

  static from(state: LayerTreeState): LayerTree {
    const t = new LayerTree(state.root);
    for (const d of state.realDirs) t.realDirs.add(d);
    for (const d of state.setgidDirs) t.setgidDirs.add(d);
    return t;
  }

  /** Absolute path of a relative real path ('' is the root). */
  abs(rel: string): string {
    return rel === '' ? this.root : this.root + '/' + rel;
  }

  /** Records a directory the extractor created or merged at a real relative path, with its final mode. */
  addDir(rel: string, mode: number): void {
    this.realDirs.add(rel);
    if (mode & SETGID) this.setgidDirs.add(rel);
    else this.setgidDirs.delete(rel);
  }

  /** Whether the real directory `rel` (as resolveDir returns it) has S_ISGID set. */
  isSetgid(rel: string): boolean {
    return this.setgidDirs.size > 0 && this.setgidDirs.has(rel);
  }

  /** A directory at `rel` (and so everything below it) was removed. */
  forgetDir(rel: string): void {
    const prefix = rel + '/';
    for (const d of this.realDirs) if (d === rel || d.startsWith(prefix)) this.realDirs.delete(d);
    for (const d of this.setgidDirs) if (d === rel || d.startsWith(prefix)) this.setgidDirs.delete(d);
  }

  /**
   * Resolves a clean relative directory path (as cleanLayerPath gives) to a real directory's
   * relative path inside the root. Throws EUNSAFEPATH naming `entry` when the walk meets a symlink it may not follow, a
   * missing symlink target, a non-directory, or a symlink loop; `what` (e.g. "hard link
   * target …") says which path of the entry was being resolved.
   */
  resolveDir(dir: string, entry: string, opts: ResolveOptions, what?: string): string {
    if (this.realDirs.has(dir)) return dir;
    return this.walk(dir.split('/'), what ? `${JSON.stringify(entry)}: ${what}` : JSON.stringify(entry), opts);
  }

  /** `label` names the entry (and the path of it being resolved) in errors. */
  private walk(parts: readonly string[], label: string, opts: ResolveOptions): string {
    // Components still to resolve, with whether each came from the entry name (creatable) or
    // from a symlink target (must exist, like the kernel's lookup under chroot).
    const queue: Array<[string, boolean]> = parts.map((p) => [p, true]);
    const real: string[] = [];
    let followed = 0;
    let viaSymlink = false;
    for (let i = 0; i < queue.length; i++) {
      const [c, fromName] = queue[i];
      if (c === '' || c === '.') continue;
      if (c === '..') {
        real.pop(); // clamped at the layer root
        continue;
      }
      real.push(c);
      const rel = real.join('/');
      if (this.realDirs.has(rel)) continue;
      const p = this.abs(rel);
      const st = fs.lstatSync(p, { throwIfNoEntry: false });
      if (st === undefined) {
        if (!opts.create || !fromName) {
          throw refuse(label, `parent directory "${rel}" does not exist in the layer${viaSymlink ? ' (reached through a symlink)' : ''}`);
        }
        fs.mkdirSync(p, 0o755);
        fs.lchownSync(p, 0, 0);
        fs.chmodSync(p, 0o755);
      } else if (st.isSymbolicLink()) {
        if (!opts.followSymlinks) throw refuse(label, `parent "${rel}" is a symlink`);
        if (++followed > MAX_SYMLINKS) throw refuse(label, `too many levels of symbolic links at "${rel}"`);
        const target = fs.readlinkSync(p);
        real.pop();
        if (target.startsWith('/')) real.length = 0; // absolute targets start at the layer root
        const expanded: Array<[string, boolean]> = target.split('/').map((t) => [t, false]);
        queue.splice(i + 1, 0, ...expanded);
        viaSymlink = true;
        continue;
      } else if (!st.isDirectory()) {
        throw refuse(label, `parent "${rel}" is not a directory`);
      }
      // Every component of `real` is now a verified directory, however we got here.
      this.realDirs.add(rel);
      if (st !== undefined && st.mode & SETGID) this.setgidDirs.add(rel);
    }
    return real.join('/');
  }
}

/** The EUNSAFEPATH refusal of one tar entry, named as it appears in the tar. */
export function unsafe(entry: string, why: string): LaminaError {
  return refuse(JSON.stringify(entry), why);
}

function refuse(label: string, why: string): LaminaError {
  return new LaminaError('EUNSAFEPATH', `tar entry ${label}: ${why}`);
}
