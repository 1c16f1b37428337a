// Shared pieces of the union engine tests: a seeded PRNG, a builder for random lower layers
// (whiteouts, opaque dirs, hard links, symlinks, fifos, xattrs, setuid bits, odd owners,
// nanosecond times), a tmpfs scratch area, kernel overlay mounts, and tree snapshots that
// describe everything a user (or Docker) can observe in a directory tree.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createHash } from 'node:crypto';
import * as sys from '../../src/sys/index.js';
import { readRawDir } from '../../src/union/dirents.js';

// ------------------------------------------------------------------ PRNG

/** mulberry32: small, fast, good enough to drive test generation from a 32-bit seed. */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  next(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  pick<T>(a: readonly T[]): T {
    return a[this.int(a.length)];
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = this.int(256);
    return b;
  }
}

export function freshSeed(): number {
  return (Math.random() * 2 ** 32) >>> 0;
}

// ------------------------------------------------------------------ scratch tmpfs

/** A fresh tmpfs mounted on a mkdtemp dir; unmounted and removed in t.after even on failure. */
export function scratchTmpfs(t: { after: (fn: () => void) => void }, prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  sys.mount('tmpfs', dir, 'tmpfs', 0, 'size=512m,mode=0755');
  t.after(() => {
    try {
      sys.umount2(dir, sys.MNT_DETACH);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
  return dir;
}

export function overlayOptions(lowers: string[], upper?: string, work?: string, extra = ''): string {
  let o = `lowerdir=${lowers.join(':')}`;
  if (upper) o += `,upperdir=${upper},workdir=${work},index=off`;
  if (extra) o += ',' + extra;
  return o;
}

/** Mounts a kernel overlay; returns an unmount function (idempotent). */
export function mountOverlay(target: string, lowers: string[], upper?: string, work?: string, extra = ''): () => void {
  const opts = overlayOptions(lowers, upper, work, extra);
  if (opts.length >= 4096) throw new Error(`overlay option string too long (${opts.length})`);
  sys.mount('overlay', target, 'overlay', upper ? 0 : sys.MS_RDONLY, opts);
  let mounted = true;
  return () => {
    if (!mounted) return;
    mounted = false;
    try {
      sys.umount2(target, 0);
    } catch (e) {
      // Already gone with the scratch tmpfs it lived on (a detached unmount takes submounts along).
      if (!['ENOENT', 'EINVAL'].includes((e as NodeJS.ErrnoException).code ?? '')) throw e;
    }
  };
}

// ------------------------------------------------------------------ layer plans

export const NAMES = ['a', 'b', 'c', 'd', 'e'] as const;
/** Absolute symlink targets point below a directory that exists nowhere, on the host or in a union. */
export const NOWHERE = '/nonexistent-lamina-union-test';
export const OLD_TIME_LIMIT = 1640995200n * 1_000_000_000n; // 2022-01-01: builder times are all older

export type PlanKind = 'dir' | 'file' | 'symlink' | 'fifo' | 'hardlink' | 'whiteout' | 'chardev';
export interface PlanEntry {
  layer: number;
  path: string;
  kind: PlanKind;
  opaque?: boolean;
  mode: number;
  uid: number;
  gid: number;
  data?: Buffer;
  target?: string;
  xattrs: Array<[string, Buffer]>;
  atime: [number, number];
  mtime: [number, number];
}

export interface LayerPlan {
  layers: number;
  entries: PlanEntry[];
}

const FILE_MODES = [0o644, 0o600, 0o755, 0o4755, 0o2755, 0o444, 0o640, 0o6711];
const DIR_MODES = [0o755, 0o700, 0o2775, 0o1755, 0o750, 0o555];
const OWNERS: Array<[number, number]> = [[0, 0], [1000, 1000], [3000000, 100], [0, 50]];

function oldTime(rng: Rng): [number, number] {
  return [1577836800 + rng.int(60_000_000), rng.int(1_000_000_000)];
}

/** A valid VFS_CAP_REVISION_2 security.capability value (cap_net_bind_service, effective). */
export const CAP_NET_BIND = Buffer.from('0100000200040000000000000000000000000000', 'hex');

function xattrsFor(rng: Rng, kind: PlanKind): Array<[string, Buffer]> {
  const out: Array<[string, Buffer]> = [];
  const userOk = kind === 'file' || kind === 'dir' || kind === 'hardlink';
  if (userOk && rng.chance(0.3)) out.push(['user.k' + rng.int(3), rng.bytes(1 + rng.int(20))]);
  if (rng.chance(0.15)) out.push(['trusted.t' + rng.int(2), rng.bytes(1 + rng.int(8))]);
  if (kind === 'file' && rng.chance(0.08)) out.push(['security.capability', CAP_NET_BIND]);
  return out;
}

/**
 * Plans `n` lower layers (index 0 = top, like lowerdir). Layers are planned bottom up so the
 * upper ones can delete (whiteout), hide (opaque dir) and replace (file over dir, dir over
 * file) what the lower ones hold.
 */
export function planLayers(rng: Rng, n = 3): LayerPlan {
  const entries: PlanEntry[] = [];
  const below = new Map<string, PlanKind>(); // everything any lower layer planned, by path
  for (let layer = n - 1; layer >= 0; layer--) {
    const files: string[] = [];
    const here: PlanEntry[] = [];
    const grow = (dir: string, depth: number) => {
      for (const name of NAMES) {
        const p = dir + '/' + name;
        const lower = below.get(p);
        if (!rng.chance(lower ? 0.7 : depth === 0 ? 0.7 : 0.45)) continue;
        let kind: PlanKind;
        let opaque = false;
        const r = rng.next();
        if (lower && lower !== 'whiteout' && r < 0.18) kind = 'whiteout';
        else if (lower === 'dir' && r < 0.3) { kind = 'dir'; opaque = true; }
        else if (lower === 'dir' && r < 0.7) kind = 'dir';
        else if (!lower && r < 0.03) kind = 'whiteout';
        else {
          const k = rng.next();
          kind = k < (depth < 2 ? 0.45 : 0.25) ? 'dir' : k < 0.62 ? 'file' : k < 0.8 ? 'symlink' : k < 0.86 ? 'fifo' : k < 0.88 ? 'chardev' : 'hardlink';
          if (kind === 'dir' && depth >= 3) kind = 'file';
          if (kind === 'hardlink' && files.length === 0) kind = 'file';
        }
        const [uid, gid] = rng.pick(OWNERS);
        const e: PlanEntry = {
          layer, path: p, kind, opaque, uid, gid,
          mode: kind === 'dir' ? rng.pick(DIR_MODES) : kind === 'file' ? rng.pick(FILE_MODES) : kind === 'symlink' ? 0o777 : kind === 'whiteout' ? 0 : rng.pick([0o644, 0o600]),
          xattrs: kind === 'whiteout' || kind === 'hardlink' ? [] : xattrsFor(rng, kind),
          atime: oldTime(rng), mtime: oldTime(rng),
        };
        if (kind === 'file') {
          e.data = rng.bytes(rng.chance(0.2) ? 0 : rng.int(rng.chance(0.1) ? 70_000 : 600));
          files.push(p);
        }
        if (kind === 'hardlink') e.target = rng.pick(files);
        if (kind === 'symlink') e.target = symlinkTarget(rng);
        here.push(e);
        if (kind === 'dir' && depth < 3) grow(p, depth + 1);
      }
    };
    grow('', 0);
    for (const e of here) {
      entries.push(e);
    }
    for (const e of here) below.set(e.path, e.kind === 'hardlink' ? 'file' : e.kind);
  }
  return { layers: n, entries };
}

/** A hand-written layer entry: path and kind, the rest defaulted (root-owned, old fixed times). */
export type EntrySpec = { path: string; kind: PlanKind } & Partial<Omit<PlanEntry, 'layer' | 'path' | 'kind'>>;

/** A plan from hand-written layers, top first (for regression cases that must not depend on the generator). */
export function planFromSpec(layers: EntrySpec[][]): LayerPlan {
  const entries: PlanEntry[] = [];
  layers.forEach((specs, layer) => {
    specs.forEach((sp, i) => {
      entries.push({
        layer, uid: 0, gid: 0, xattrs: [],
        mode: sp.kind === 'dir' ? 0o755 : sp.kind === 'symlink' ? 0o777 : sp.kind === 'whiteout' ? 0 : 0o644,
        atime: [1580000000 + i, 100 + layer], mtime: [1570000000 + i, 200 + layer],
        data: sp.kind === 'file' ? Buffer.from(`${sp.path} in layer ${layer}\n`) : undefined,
        ...sp,
      });
    });
  });
  return { layers: layers.length, entries };
}

export function symlinkTarget(rng: Rng): string {
  const r = rng.next();
  if (r < 0.15) return NOWHERE + '/' + rng.pick(NAMES) + '/' + rng.pick(NAMES);
  if (r < 0.25) return 'zz' + rng.int(3);
  const depth = 1 + rng.int(3);
  const parts: string[] = [];
  for (let i = 0; i < depth; i++) parts.push(rng.pick(NAMES));
  return parts.join('/');
}

/** Creates the planned layers under `root` (root/l0 … root/l{n-1}); returns their paths, top first. */
export function buildLayers(plan: LayerPlan, root: string, opaqueXattr = 'trusted.overlay.opaque'): string[] {
  const dirs: string[] = [];
  for (let l = 0; l < plan.layers; l++) {
    const d = path.join(root, 'l' + l);
    fs.mkdirSync(d);
    dirs.push(d);
  }
  for (const e of plan.entries) {
    const p = dirs[e.layer] + e.path;
    switch (e.kind) {
      case 'dir': fs.mkdirSync(p); break;
      case 'file': fs.writeFileSync(p, e.data!); break;
      case 'symlink': fs.symlinkSync(e.target!, p); break;
      case 'fifo': sys.mknod(p, sys.S_IFIFO | 0o600); break;
      case 'chardev': sys.mknod(p, sys.S_IFCHR | 0o600, 1, 3); break;
      case 'whiteout': sys.mknod(p, sys.S_IFCHR, 0, 0); break;
      case 'hardlink': fs.linkSync(dirs[e.layer] + e.target!, p); break;
    }
  }
  // Metadata last, deepest first, so creating children does not move a directory's times.
  const ordered = [...plan.entries].sort((a, b) => b.path.split('/').length - a.path.split('/').length);
  for (const e of ordered) {
    const p = dirs[e.layer] + e.path;
    if (e.kind === 'hardlink') continue;
    if (e.kind !== 'whiteout') {
      fs.lchownSync(p, e.uid, e.gid);
      if (e.kind !== 'symlink') fs.chmodSync(p, e.mode);
    }
    for (const [k, v] of e.xattrs) sys.lsetxattr(p, k, v);
    if (e.opaque) sys.lsetxattr(p, opaqueXattr, 'y');
    sys.lutimesNs(p, e.atime, e.mtime);
  }
  for (const d of dirs) sys.lutimesNs(d, [1577836800, 1], [1577836800, 2]);
  return dirs;
}

/** An empty upper dir with fixed old times, and a work dir next to it. */
export function makeUpper(root: string): { upper: string; work: string } {
  const upper = path.join(root, 'upper');
  const work = path.join(root, 'work');
  fs.mkdirSync(upper, 0o755);
  fs.chmodSync(upper, 0o755);
  fs.mkdirSync(work);
  sys.lutimesNs(upper, [1577836800, 5], [1577836800, 6]);
  return { upper, work };
}

// ------------------------------------------------------------------ observations

export function timeClass(ns: bigint): string {
  return ns < OLD_TIME_LIMIT ? ns.toString() : 'new';
}

export function typeChar(mode: number): string {
  switch (mode & fs.constants.S_IFMT) {
    case fs.constants.S_IFREG: return 'f';
    case fs.constants.S_IFDIR: return 'd';
    case fs.constants.S_IFLNK: return 'l';
    case fs.constants.S_IFCHR: return 'c';
    case fs.constants.S_IFBLK: return 'b';
    case fs.constants.S_IFIFO: return 'p';
    case fs.constants.S_IFSOCK: return 's';
    default: return '?';
  }
}

/** What a stat shows a user: type, permissions, owner, size, link count, device, times. */
export function describeStat(st: fs.BigIntStats, opts: { nlink?: boolean; ctime?: boolean; dirSize?: boolean } = {}): string {
  const mode = Number(st.mode);
  const t = typeChar(mode);
  const parts = [t, (mode & 0o7777).toString(8), `${st.uid}:${st.gid}`];
  if (t !== 'd' || opts.dirSize) parts.push(`size=${st.size}`);
  if (opts.nlink !== false) parts.push(`nlink=${st.nlink}`);
  if (t === 'c' || t === 'b') parts.push(`rdev=${st.rdev}`);
  parts.push(`m=${timeClass(st.mtimeNs)}`, `a=${timeClass(st.atimeNs)}`);
  if (opts.ctime) parts.push(`c=${st.ctimeNs}`);
  return parts.join(' ');
}

export function sha(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex').slice(0, 16);
}

export function xattrText(names: string[], get: (n: string) => Buffer | undefined, skip: (n: string) => boolean = () => false): string {
  return names.filter((n) => !skip(n)).sort().map((n) => `${n}=${get(n)?.toString('hex') ?? '?'}`).join(',');
}

/** The kernel's private bookkeeping xattrs, which comparisons leave out (spec §21). */
export function kernelPrivate(name: string): boolean {
  return /^(trusted|user)\.overlay\.(origin|impure|uuid|nlink|upper|metacopy|protattr)$/.test(name);
}

/**
 * Describes a real directory tree entry by entry, without going through any union: for
 * comparing upper dirs and checking that lower dirs were left alone.
 */
export function snapshotRealTree(root: string, opts: { whiteoutDetail?: boolean; ctime?: boolean; symlinkCtime?: boolean } = {}): Map<string, string> {
  const out = new Map<string, string>();
  const visit = (rel: string) => {
    const p = root + rel;
    const st = fs.lstatSync(p, { bigint: true });
    const mode = Number(st.mode);
    const t = typeChar(mode);
    const isWhiteout = t === 'c' && st.rdev === 0n;
    let desc: string;
    if (isWhiteout && !opts.whiteoutDetail) {
      desc = `whiteout ${(mode & 0o7777).toString(8)} ${st.uid}:${st.gid}`;
    } else {
      const wantCtime = opts.ctime && (t !== 'l' || opts.symlinkCtime !== false);
      desc = describeStat(st, { nlink: t !== 'd' || opts.ctime, ctime: wantCtime });
      if (t === 'f') desc += ' sha=' + sha(readNoatime(p));
      if (t === 'l') desc += ' -> ' + readlinkQuiet(p);
      desc += ' x{' + xattrText(sys.llistxattr(p), (n) => sys.lgetxattr(p, n), kernelPrivate) + '}';
    }
    out.set(rel || '/', desc);
    if (t === 'd') {
      for (const name of readRawDir(p, true).names.sort()) visit(rel + '/' + name);
    }
  };
  visit('');
  return out;
}

function readNoatime(p: string): Buffer {
  const fd = fs.openSync(p, fs.constants.O_RDONLY | fs.constants.O_NOATIME);
  try {
    return fs.readFileSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * readlink(2) moves a symlink's atime and there is no O_NOATIME for it: put the atime back, so
 * looking at a layer does not change it (only its ctime moves).
 */
export function readlinkQuiet(p: string): string {
  const before = fs.lstatSync(p, { bigint: true });
  const target = fs.readlinkSync(p);
  const after = fs.lstatSync(p, { bigint: true });
  if (after.atimeNs !== before.atimeNs) {
    const s = before.atimeNs / 1_000_000_000n;
    sys.lutimesNs(p, [Number(s), Number(before.atimeNs - s * 1_000_000_000n)], undefined);
  }
  return target;
}

/** For reads that follow another reader of the same upper dir (which moved atimes): leave atimes out. */
export function noAtime(m: Map<string, string>): Map<string, string> {
  return new Map([...m].map(([k, v]) => [k, v.replace(/ a=\S+/, '')]));
}

export function diffMaps(a: Map<string, string>, b: Map<string, string>, la: string, lb: string, limit = 20): string[] {
  const out: string[] = [];
  const keys = [...new Set([...a.keys(), ...b.keys()])].sort();
  for (const k of keys) {
    const x = a.get(k);
    const y = b.get(k);
    if (x !== y) out.push(`${k}\n    ${la}: ${x ?? '(absent)'}\n    ${lb}: ${y ?? '(absent)'}`);
    if (out.length >= limit) break;
  }
  return out;
}
