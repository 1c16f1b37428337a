// `lamina cp`: docker cp between a container and the host, without a daemon and without a mount.
//
// The copy is Docker's pipeline (docker/cli cp.go, moby pkg/archive copy.go and Unpack,
// daemon/archive.go) with the tar in the middle left out unless one side is `-`:
//  - the source is resolved as Docker does (the parents' symlinks always; the last component
//    only with -L or a trailing '/'; "dir/." means the directory's contents);
//  - where it lands follows PrepareArchiveCopy: into an existing directory under the source's
//    name; otherwise renamed to the destination's name; a directory never over a file;
//  - the entries are walked and applied as moby's tarAppender and Unpack do (cp-entries.ts), so
//    a lower file that is overwritten becomes a new file in the upper dir, not a copy-up.
//
// Owners follow docker cp's documentation: copied into a container, files belong to root:root,
// or keep their source owners with -a; copied out, they belong to the invoking user, or keep the
// container's owners with -a. (dockerd itself keeps the source owners by default and with -a
// uses the container's --user; docker/cli#6870 reports the mismatch. lamina does what the
// documentation promises.)
//
// Where a container's files are read and written: when the container is mounted (lamina mount,
// or running), through its merged/ mount, since the kernel caches the upper dir it owns and a
// second writer would corrupt its view; otherwise through the userspace overlay engine straight
// into the upper dir, holding the layer's mount lock so no mount can start meanwhile. Both write
// the same upper dir (copy-ups, whiteouts, opaque dirs), which the differential test checks.
import fs from 'node:fs';
import { once } from 'node:events';
import type { Readable, Writable } from 'node:stream';
import { LaminaError } from '../errors.js';
import type { Store } from '../store.js';
import type { Container } from './store.js';
import { codeOf, dirOf, joinTree, lstatOrUndefined, notDir, pathParts, RootedView, unionView, type TreeView } from './cp-view.js';
import { CHUNK, Extractor, readTarInto, TarSink, treeIdNames, walkSource, type EntrySink, type ExtractOptions, type SourceInfo } from './cp-entries.js';

export type { TreeView } from './cp-view.js';
export type { CopyHeader, EntrySink, SourceInfo } from './cp-entries.js';

export interface CopyOptions {
  /** -a: keep the source's uid/gid. */
  archive?: boolean;
  /** -L: copy what a symlink source points at. */
  followLink?: boolean;
}

/** How the container was reached: its kernel (or FUSE) mount, or the userspace engine. */
export type CopyVia = 'mounted' | 'userspace';

const MAX_DEST_SYMLINKS = 10;
const ROOT_OWNER = { uid: 0, gid: 0 };

// ---------------------------------------------------------------- argument parsing

/**
 * docker's splitCpArg: `CONTAINER:PATH`, unless the argument is an absolute path or starts with
 * '.' (so `./a:b` names a local file).
 */
export function splitCpArg(arg: string): { container?: string; path: string } {
  if (arg.startsWith('/')) return { path: arg };
  const i = arg.indexOf(':');
  if (i < 0 || arg.startsWith('.')) return { path: arg };
  return { container: arg.slice(0, i), path: arg.slice(i + 1) };
}

/** A path as the copy sees it: absolute, its trailing '/' or '/.' kept (they assert a directory). */
function absolute(p: string, cwd: string): string {
  return p.startsWith('/') ? p : cwd.replace(/\/+$/, '') + '/' + p;
}

/** The last segment is '.' ("dir/." or "dir/./"): the directory's contents, not the directory. */
function specifiesCurrentDir(p: string): boolean {
  const segs = p.split('/').filter((s) => s !== '');
  return segs.length > 0 && segs[segs.length - 1] === '.';
}

function assertsDirectory(p: string): boolean {
  return p.endsWith('/') || specifiesCurrentDir(p);
}

// ---------------------------------------------------------------- source and destination

/**
 * What a source path names (moby ResolveHostSourcePath and daemon ResolvePath): the parents'
 * symlinks are followed inside the tree, the last component only with `follow` or a trailing
 * '/'; "dir/." means the directory's contents. Renaming after a followed link keeps the name
 * given (GetRebaseName).
 */
export function sourceInfo(view: TreeView, p: string, follow: boolean): SourceInfo {
  const parts = pathParts(p);
  if (parts.length === 0 || specifiesCurrentDir(p)) {
    const real = view.realpath('/' + parts.join('/'));
    if (!view.stat(real).isDirectory()) throw notDir(view, p);
    return { path: real, isDir: true, base: '.' };
  }
  const name = parts[parts.length - 1];
  let real: string;
  if (follow || p.endsWith('/')) {
    real = view.realpath(p);
  } else {
    real = joinTree(view.realpath('/' + parts.slice(0, -1).join('/')), name);
  }
  const st = view.lstat(real);
  if (p.endsWith('/') && !st.isDirectory()) throw notDir(view, p);
  return { path: real, isDir: st.isDirectory(), base: name };
}

export interface DestInfo {
  path: string;
  exists: boolean;
  isDir: boolean;
}

/**
 * What a destination path names (moby CopyInfoDestinationPath): symlinks at the end are
 * followed (a broken one names what it would create); when nothing is there, the parent must be
 * a directory.
 */
export function destInfo(view: TreeView, p: string): DestInfo {
  let cur = p;
  for (let n = 0; ; n++) {
    const st = lstatOrUndefined(view, cur);
    if (!st) break;
    if (!st.isSymbolicLink()) return { path: cur, exists: true, isDir: st.isDirectory() };
    if (n >= MAX_DEST_SYMLINKS) throw new LaminaError('EINVAL', `too many symlinks in ${view.show(p)}`);
    const target = view.readlink(cur);
    cur = target.startsWith('/') ? target : joinTree(dirOf(cur), target);
  }
  const parent = dirOf(cur);
  let pst: fs.BigIntStats;
  try {
    pst = view.stat(parent);
  } catch (e) {
    if (codeOf(e) === 'ENOENT') throw new LaminaError('ENOTFOUND', `no such directory: ${view.show(parent)}`);
    throw e;
  }
  if (!pst.isDirectory()) throw notDir(view, parent);
  return { path: cur, exists: false, isDir: false };
}

/** Where entries are extracted and the name the copy's top entry takes there (PrepareArchiveCopy). */
export interface CopyPlan {
  dir: string;
  base: string;
}

export function planCopy(view: TreeView, src: SourceInfo, dst: DestInfo, requested: string): CopyPlan {
  if (dst.exists && dst.isDir) return { dir: dst.path, base: src.base };
  const dir = dirOf(dst.path);
  const base = pathParts(dst.path).pop() ?? '.';
  if (dst.exists && src.isDir) throw new LaminaError('EINVAL', `cannot copy a directory to ${view.show(requested)}: it is not a directory`);
  if (!dst.exists && !src.isDir && assertsDirectory(requested)) {
    throw new LaminaError('ENOTFOUND', `no such directory: ${view.show(requested)} (a file is copied to a directory only if it exists)`);
  }
  return { dir, base };
}

// ---------------------------------------------------------------- containers

/** A container's files, reached the way that is safe right now (see the file comment). */
export interface ContainerTree {
  view: TreeView;
  via: CopyVia;
  release(): void;
}

/**
 * Opens the container's merged view: through merged/ while it is mounted, else through the
 * engine (read-only, or writing to the upper dir under the mount lock when `write`).
 */
export async function openContainerTree(store: Store, c: Container, write: boolean): Promise<ContainerTree> {
  const [{ mountCount }, { mountState }, { openLocked }] = await Promise.all([
    import('../mount/index.js'), import('../mount/mountinfo.js'), import('../mount/refcount.js'),
  ]);
  const d = store.driver;
  const id = c.mount.mountID;
  const label = `container ${c.config.Name.replace(/^\//, '') || c.id.slice(0, 12)}`;
  const merged = d.dir(id) + '/merged';
  const spec = d.mountSpec(id);
  const viaMount = (): ContainerTree | undefined => {
    if (mountState(merged) === 'none') return undefined;
    const view = new RootedView(merged, label);
    // The descriptor pins the mount for the whole copy; make sure it is the mount, not the bare
    // directory an unmount racing us would leave behind.
    if (view.stat('/').dev === fs.statSync(d.dir(id), { bigint: true }).dev) {
      view.close();
      return undefined;
    }
    return { view, via: 'mounted', release: () => view.close() };
  };
  if (mountCount(spec) > 0) {
    const t = viaMount();
    if (t) return t;
  }
  const { UnionFs } = await import('../union/index.js');
  const upper = d.diffPath(id);
  const lowers = [d.diffPath(c.mount.initID), ...d.lowerDiffPaths(c.mount.initID)];
  if (!write) return { view: unionView(new UnionFs({ lowers: [upper, ...lowers] }), label), via: 'userspace', release: () => {} };
  // No mount may start while the engine writes the upper dir: mountLayer waits for this lock.
  const lock = openLocked(d.home, id, { create: true, exclusive: true })!;
  try {
    const t = viaMount(); // mounted between the count check and the lock
    if (t) {
      lock.release();
      return t;
    }
    const work = d.dir(id) + '/work';
    resetWorkDir(work);
    const union = new UnionFs({ lowers, upper, work });
    return {
      view: unionView(union, label), via: 'userspace',
      release: () => {
        if (lock.read().count === 0) lock.remove();
        lock.release();
      },
    };
  } catch (e) {
    lock.release();
    throw e;
  }
}

/**
 * Empties <work>/work as a kernel mount does first (ovl_workdir_create): what a past mount left
 * there (the shared whiteout inode it links every whiteout to, half-made copy-ups of a crash)
 * belongs to no one once nothing is mounted, and would keep extra links on upper entries.
 * Best effort: the engine works with a non-empty work dir too.
 */
function resetWorkDir(work: string): void {
  const inner = work + '/work';
  try {
    if (fs.readdirSync(inner).length === 0) return;
    fs.rmSync(inner, { recursive: true, force: true });
  } catch {
    // absent (the engine makes it) or not ours to clear
  }
}

function resolveContainer(store: Store, name: string): Container {
  return store.containers.get(store.containers.resolve(name));
}

/** The result of a copy: how the container was reached. */
export interface CopyResult {
  via: CopyVia;
}

/**
 * `lamina cp SRC CONTAINER:DEST` (or `- CONTAINER:DEST` with a tar stream): copies a host file or
 * directory, or a tar's entries, into the container.
 */
export async function copyToContainer(
  store: Store, container: string, ctrPath: string,
  source: { hostPath: string; cwd?: string } | { tar: Readable }, opts: CopyOptions = {},
): Promise<CopyResult> {
  const c = resolveContainer(store, container);
  if (ctrPath === '') throw new LaminaError('EINVAL', 'no path given in the container: use CONTAINER:/path');
  if ((c.hostConfig as { ReadonlyRootfs?: boolean }).ReadonlyRootfs) {
    throw new LaminaError('EINVAL', `cannot copy into container ${c.id}: its root filesystem is marked read-only`);
  }
  const dstPath = absolute(ctrPath, '/');
  const tree = await openContainerTree(store, c, true);
  let host: RootedView | undefined;
  try {
    const view = tree.view;
    const dst = destInfo(view, dstPath);
    const extractOpts: ExtractOptions = { owner: opts.archive ? undefined : ROOT_OWNER, impliedOwner: ROOT_OWNER };
    if ('tar' in source) {
      if (!dst.exists || !dst.isDir) throw new LaminaError('EINVAL', `destination ${view.show(ctrPath)} must be a directory`);
      const extractor = new Extractor(view, extractionPoint(view, dst.path), extractOpts);
      try {
        await readTarInto(source.tar, extractor, 'the tar stream on stdin');
      } finally {
        extractor.abort();
      }
      return { via: tree.via };
    }
    host = new RootedView('/');
    const srcPath = absolute(source.hostPath, source.cwd ?? process.cwd());
    const src = hostCall(() => sourceInfo(host!, srcPath, opts.followLink ?? false), srcPath);
    const plan = planCopy(view, src, dst, dstPath);
    const extractor = new Extractor(view, extractionPoint(view, plan.dir), extractOpts);
    try {
      drain(walkSource(host, src, renaming(extractor, src.base, plan.base)));
    } finally {
      extractor.abort();
    }
    return { via: tree.via };
  } finally {
    host?.close();
    tree.release();
  }
}

/**
 * `lamina cp CONTAINER:SRC DEST` (or `CONTAINER:SRC -` for a tar stream): copies a file or
 * directory of the container to the host.
 */
export async function copyFromContainer(
  store: Store, container: string, ctrPath: string,
  dest: { hostPath: string; cwd?: string } | { tar: Writable }, opts: CopyOptions = {},
): Promise<CopyResult> {
  const c = resolveContainer(store, container);
  if (ctrPath === '') throw new LaminaError('EINVAL', 'no path given in the container: use CONTAINER:/path');
  const tree = await openContainerTree(store, c, false);
  let host: RootedView | undefined;
  try {
    const view = tree.view;
    const srcPath = absolute(ctrPath, '/');
    let src: SourceInfo;
    try {
      src = sourceInfo(view, srcPath, opts.followLink ?? false);
    } catch (e) {
      if (codeOf(e) === 'ENOENT') throw new LaminaError('ENOTFOUND', `Could not find the file ${srcPath} in ${view.label}`);
      throw e;
    }
    if ('tar' in dest) {
      await streamTar(view, src, dest.tar);
      return { via: tree.via };
    }
    const hostRoot = new RootedView('/');
    let plan: CopyPlan;
    const dstPath = absolute(dest.hostPath, dest.cwd ?? process.cwd());
    try {
      plan = planCopy(hostRoot, src, hostCall(() => destInfo(hostRoot, dstPath), dstPath), dstPath);
    } finally {
      hostRoot.close();
    }
    // Extraction on the host is confined to the destination directory.
    host = new RootedView(fs.realpathSync(plan.dir));
    if (!host.stat('/').isDirectory()) throw notDir(host, '/');
    const extractor = new Extractor(host, '/', opts.archive ? {} : { chown: false });
    try {
      drain(walkSource(view, src, renaming(extractor, src.base, plan.base)));
    } finally {
      extractor.abort();
    }
    return { via: tree.via };
  } finally {
    host?.close();
    tree.release();
  }
}

/** The source's tar, as `docker cp CONTAINER:SRC -` writes it, with the container's user names. */
async function streamTar(view: TreeView, src: SourceInfo, out: Writable): Promise<void> {
  const sink = new TarSink();
  const names = treeIdNames(view);
  const write = async (b: Buffer) => {
    if (!out.write(b)) await once(out, 'drain'); // rejects if the stream fails meanwhile
  };
  const walk = walkSource(view, src, sink, names);
  while (!walk.next().done) {
    if (sink.pending >= CHUNK) await write(sink.take());
  }
  if (sink.pending) await write(sink.take());
}

/** Runs a walk to its end (extraction needs no pauses). */
function drain(walk: Generator<void, void, undefined>): void {
  while (!walk.next().done);
}

/** Renames the copy's top entry from `from` to `to` (moby's RebaseArchiveEntries, by path component). */
function renaming(sink: EntrySink, from: string, to: string): EntrySink {
  if (from === to) return sink;
  const rename = (name: string) => {
    if (from === '.') return name === '.' ? to : to + '/' + name;
    return name === from ? to : to + name.slice(from.length);
  };
  return {
    entry: (name, h) => sink.entry(rename(name), h.type === 'link' ? { ...h, linkname: rename(h.linkname) } : h),
    data: (chunk) => sink.data(chunk),
    entryEnd: () => sink.entryEnd(),
    finish: () => sink.finish(),
  };
}

/** The directory entries land in, every symlink resolved; it must be a directory (moby: extraction point). */
function extractionPoint(view: TreeView, dir: string): string {
  let real: string;
  try {
    real = view.realpath(dir);
  } catch (e) {
    if (codeOf(e) === 'ENOENT') throw new LaminaError('ENOTFOUND', `Could not find the file ${dir} in ${view.label}`);
    throw e;
  }
  if (!view.stat(real).isDirectory()) throw new LaminaError('EINVAL', `extraction point ${view.show(dir)} is not a directory`);
  return real;
}

/** Host-side lookups fail like `lstat` does in docker cp: one line naming the path. */
function hostCall<T>(fn: () => T, p: string): T {
  try {
    return fn();
  } catch (e) {
    const code = codeOf(e);
    if (code === 'ENOENT') throw new LaminaError('ENOTFOUND', `lstat ${p}: no such file or directory`);
    if (code === 'ENOTDIR') throw new LaminaError('EINVAL', `lstat ${p}: not a directory`);
    throw e;
  }
}
