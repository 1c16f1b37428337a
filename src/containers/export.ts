// `lamina export`: the container's flattened filesystem as one tar, as `docker export` writes it
// (moby daemon/export.go: mount the rw layer, archive.TarWithOptions over the mount root; the
// same tar appender as for layers, without whiteout conversion, since a merged view has none).
//
// Where the view comes from, first that works:
//  - 'mounted':   the container is mounted at <id>/merged already (`lamina mount`): tar that;
//  - 'kernel':    a private read-only overlay of the container's upper dir stacked as the top
//                 lower over init + image layers. It takes no upperdir/workdir, so it never
//                 competes with an rw mount of the same container for them (EBUSY);
//  - 'userspace': the union/ engine reads the same stack without any mount (no privileges).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { LaminaError } from '../errors.js';
import { writeLayerTar } from '../archive/write.js';
import { hostIdNames, type IdNames } from '../archive/users.js';
import { END_OF_ARCHIVE, encodeHeader, paddingLength, type WriteHeader } from '../tar/writer.js';
import * as sys from '../sys/index.js';
import { S_IFMT, S_IFSOCK, S_IFLNK, S_IFREG, S_IFBLK, S_IFDIR, S_IFCHR, S_IFIFO } from '../sys/index.js';
import type { Store } from '../store.js';
import type { Container } from './store.js';

export type ExportBackend = 'mounted' | 'kernel' | 'userspace';

export interface ExportOptions {
  /** Force a way to read the merged view (default: the first of mounted, kernel, userspace that works). */
  backend?: 'auto' | 'kernel' | 'userspace';
  /** Leave `out` open when done (for stdout). */
  keepOpen?: boolean;
}

/** The legacy mount(2) data must fit in one page, NUL included. */
const MAX_MOUNT_DATA = 4095;

/** Streams the container's merged filesystem as a tar into `out`; returns the backend used. */
export async function exportContainer(store: Store, c: Container, out: Writable, opts: ExportOptions = {}): Promise<ExportBackend> {
  const backend = opts.backend ?? 'auto';
  const d = store.driver;
  const upper = d.diffPath(c.mount.mountID);
  const lowers = [d.diffPath(c.mount.initID), ...d.lowerDiffPaths(c.mount.initID)];
  const end = { end: !opts.keepOpen };

  if (backend === 'auto') {
    const merged = path.join(d.dir(c.mount.mountID), 'merged');
    if (isMountPoint(merged)) {
      await pipeline(writeLayerTar(merged), out, end);
      return 'mounted';
    }
  }
  if (backend !== 'userspace') {
    const target = mountReadOnly(d.home, c.mount.mountID, upper, lowers, backend === 'kernel');
    if (target) {
      const release = guardMount(target);
      try {
        await pipeline(writeLayerTar(target), out, end);
      } finally {
        release();
      }
      return 'kernel';
    }
  }
  const { UnionFs } = await import('../union/index.js');
  const union = new UnionFs({ lowers: [upper, ...lowers] });
  await pipeline(Readable.from(unionTarChunks(union, hostIdNames()), { objectMode: false }), out, end);
  return 'userspace';
}

/** A directory that is the root of a mount (its device differs from its parent's). */
function isMountPoint(dir: string): boolean {
  const st = fs.statSync(dir, { throwIfNoEntry: false });
  if (!st?.isDirectory()) return false;
  return st.dev !== fs.statSync(path.dirname(dir)).dev;
}

/**
 * Mounts upper + lowers read-only at a fresh directory outside the store (so a crash cannot leave
 * a mount inside <root>/tmp, which Store.open empties). Returns undefined when the kernel
 * refuses and `required` is false.
 */
function mountReadOnly(home: string, mountID: string, upper: string, lowers: string[], required: boolean): string | undefined {
  // Through the short l/ links where they exist, as Docker's own mount strings do.
  const info = (() => {
    try {
      return fs.readFileSync(path.join(home, mountID, 'lower'), 'utf8').split(':').map((l) => path.join(home, l));
    } catch {
      return lowers;
    }
  })();
  const data = `index=off,lowerdir=${[upper, ...info].join(':')}`;
  if (data.length > MAX_MOUNT_DATA) {
    if (required) throw new LaminaError('EUNSUPPORTED', `cannot mount container layer ${mountID} read-only: the mount options are ${data.length} bytes, over the kernel's ${MAX_MOUNT_DATA}`);
    return undefined;
  }
  const target = fs.mkdtempSync(path.join(os.tmpdir(), 'lamina-export-'));
  try {
    sys.mount('overlay', target, 'overlay', sys.MS_RDONLY, data);
    return target;
  } catch (e) {
    fs.rmdirSync(target);
    if (required) throw new LaminaError('EUNSUPPORTED', `cannot mount container layer ${mountID} read-only: ${(e as Error).message}`, { cause: e });
    return undefined;
  }
}

/**
 * Unmounts `target` when released, and also when the process ends early: on exit (a closed
 * stdout pipe exits from its error handler, skipping finally blocks) and on SIGINT/SIGTERM/SIGHUP
 * (re-raised afterwards, so the process still dies of the signal).
 */
function guardMount(target: string): () => void {
  let mounted = true;
  const release = () => {
    if (!mounted) return;
    mounted = false;
    process.removeListener('exit', release);
    for (const sig of SIGNALS) process.removeListener(sig, onSignal);
    try {
      sys.umount2(target, sys.MNT_DETACH);
    } finally {
      fs.rmdirSync(target);
    }
  };
  const onSignal = (sig: NodeJS.Signals) => {
    release();
    process.kill(process.pid, sig);
  };
  process.once('exit', release);
  for (const sig of SIGNALS) process.once(sig, onSignal);
  return release;
}

const SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

// ---------------------------------------------------------------- userspace view

const CHUNK = 1 << 20;

interface UnionView {
  readdir(p: string): string[];
  lstat(p: string, opts: { bigint: true }): fs.BigIntStats;
  readlink(p: string): string;
  open(p: string, flags?: string | number): number;
  getxattr(p: string, name: string): Buffer;
}

/**
 * The tar writer of archive/write.ts (Go's tarAppender: lexical walk, lstat headers with S_IFMT,
 * host names, hard links by inode, security.capability only) over a union view instead of a
 * directory. Names come from the union as UTF-8 strings.
 */
function* unionTarChunks(u: UnionView, names: IdNames): Generator<Buffer, void, undefined> {
  const parts: Buffer[] = [];
  let pending = 0;
  const put = (b: Buffer) => {
    parts.push(b);
    pending += b.length;
  };
  const flush = function* (force: boolean): Generator<Buffer, void, undefined> {
    if (pending === 0 || (!force && pending < CHUNK)) return;
    yield parts.length === 1 ? parts[0] : Buffer.concat(parts, pending);
    parts.length = 0;
    pending = 0;
  };
  const seen = new Map<bigint, string>();
  const byBytes = (a: string, b: string) => Buffer.compare(Buffer.from(a), Buffer.from(b));
  const stack: string[] = u.readdir('/').sort(byBytes).reverse().map((n) => '/' + n);
  while (stack.length) {
    const p = stack.pop()!;
    const st = u.lstat(p, { bigint: true });
    const mode = Number(st.mode);
    const fmt = mode & S_IFMT;
    const rel = p.slice(1);
    let typeflag: string;
    let name = rel;
    let size = 0;
    let linkname = '';
    switch (fmt) {
      case S_IFREG: typeflag = '0'; size = Number(st.size); break;
      case S_IFDIR: typeflag = '5'; name = rel + '/'; break;
      case S_IFLNK: typeflag = '2'; linkname = u.readlink(p); break;
      case S_IFCHR: typeflag = '3'; break;
      case S_IFBLK: typeflag = '4'; break;
      case S_IFIFO: typeflag = '6'; break;
      default: typeflag = fmt === S_IFSOCK ? 'socket' : 'unknown';
    }
    if (typeflag.length === 1) {
      let devmajor = 0, devminor = 0;
      if (mode & (S_IFBLK | S_IFCHR)) [devmajor, devminor] = majorMinor(st.rdev);
      const uid = Number(st.uid), gid = Number(st.gid);
      const h: WriteHeader = {
        name, typeflag, mode: mode & (S_IFMT | 0o7777), uid, gid, size, mtime: floorSeconds(st.mtimeNs), linkname,
        uname: names.uname(uid), gname: names.gname(gid), devmajor, devminor,
      };
      const cap = capability(u, p);
      if (cap) h.xattrs = [['security.capability', cap]];
      if (fmt !== S_IFDIR && st.nlink > 1n) {
        const first = seen.get(st.ino);
        if (first !== undefined) {
          h.typeflag = '1';
          h.linkname = first;
          h.size = 0;
        } else {
          seen.set(st.ino, rel);
        }
      }
      put(encodeHeader(h));
      if (h.typeflag === '0' && size > 0) {
        const fd = u.open(p, 'r');
        try {
          let left = size;
          while (left > 0) {
            const buf = Buffer.allocUnsafe(Math.min(left, CHUNK));
            const n = fs.readSync(fd, buf, 0, buf.length, null);
            if (n === 0) throw new LaminaError('ECONFLICT', `${p} shrank while it was being exported`);
            put(n === buf.length ? buf : buf.subarray(0, n));
            left -= n;
            yield* flush(false);
          }
        } finally {
          fs.closeSync(fd);
        }
        const pad = paddingLength(size);
        if (pad) put(Buffer.alloc(pad));
      }
      yield* flush(false);
    }
    if (fmt === S_IFDIR) {
      const children = u.readdir(p).sort(byBytes);
      for (let i = children.length - 1; i >= 0; i--) stack.push(`${p}/${children[i]}`);
    }
  }
  put(END_OF_ARCHIVE);
  yield* flush(true);
}

/** security.capability as Docker exports it (a v3 capability is written as v2). */
function capability(u: UnionView, p: string): Buffer | undefined {
  let v: Buffer;
  try {
    v = Buffer.from(u.getxattr(p, 'security.capability'));
  } catch {
    return undefined;
  }
  if (v.length > 3 && v[3] === 3) {
    v[3] = 2;
    v = v.subarray(0, 20);
  }
  return v;
}

function majorMinor(rdev: bigint): [number, number] {
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & ~0xffn);
  return [Number(major & 0xffffffffn), Number(minor & 0xffffffffn)];
}

function floorSeconds(ns: bigint): number {
  const NS = 1_000_000_000n;
  let s = ns / NS;
  if (ns < 0n && s * NS !== ns) s -= 1n;
  return Number(s);
}
