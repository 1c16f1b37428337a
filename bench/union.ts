// The userspace overlay engine against the kernel: a full walk + lstat of a ≈50k-entry merged
// tree, and reading every file, through
//   * plain ext4 (the source directories themselves),
//   * a kernel overlay mount of three layers,
//   * lamina's UnionFs over the same three layer directories (a fresh instance per run, and a
//     warm one whose lookup cache is already filled),
//   * fuse-overlayfs over the same layers (when it is installed),
// all with the same Node walker, in the same run, warm page cache. Ratios are against the
// kernel overlay. Targets (issue 4): walk+stat ≤ 2.0×, reading all files ≤ 1.5× the kernel.
//
// The tree is built once into .bench-cache/union/: Python, Perl, C headers, man pages, docs,
// locales and zoneinfo from this machine, each file put into one of three layers by a hash of
// its path, so nearly every directory is merged from several layers (the engine's worst case).
// Usage: node --import tsx bench/union.ts   (as root: the kernel and FUSE mounts need it)
import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import * as sys from '../src/sys/index.js';
import { UnionFs } from '../src/union/index.js';
import { CACHE_DIR } from './lib/fixtures.js';
import { formatTable } from './lib/table.js';
import { formatSummaryMs, summarize, type Summary } from './lib/stats.js';

const SOURCES = [
  'usr/lib/python3', 'usr/lib/python3.11', 'usr/share/perl', 'usr/share/perl5', 'usr/lib/x86_64-linux-gnu/perl',
  'usr/lib/x86_64-linux-gnu/perl-base', 'usr/lib/x86_64-linux-gnu/perl5', 'usr/include', 'usr/share/man',
  'usr/share/zoneinfo', 'usr/share/doc', 'usr/share/locale',
];
const LAYERS = 3;
const WALK_RUNS = Number(process.env.BENCH_WALK_RUNS ?? 7);
const READ_RUNS = Number(process.env.BENCH_READ_RUNS ?? 3);

const log = (m: string) => console.error(`[bench union] ${m}`);

interface TreeMeta {
  sources: string[];
  entries: number;
  files: number;
  bytes: number;
  builtAt: string;
}

function layerOf(rel: string): number {
  return createHash('md5').update(rel).digest()[0] % LAYERS;
}

/** Builds the three layer directories once (bottom l0 … top l2); returns them nearest first. */
function buildTree(root: string): { lowers: string[]; meta: TreeMeta } {
  const layerDirs = Array.from({ length: LAYERS }, (_, i) => path.join(root, `l${i}`));
  const metaFile = path.join(root, 'meta.json');
  if (fs.existsSync(metaFile)) return { lowers: [...layerDirs].reverse(), meta: JSON.parse(fs.readFileSync(metaFile, 'utf8')) };
  const sources = SOURCES.filter((s) => fs.existsSync('/' + s));
  log(`building the layered tree once from /${sources.join(', /')} (a few minutes on a busy ext4)`);
  fs.rmSync(root, { recursive: true, force: true });
  for (const d of layerDirs) fs.mkdirSync(d, { recursive: true });
  let entries = 0;
  let files = 0;
  let bytes = 0;
  const ensureDir = (layer: number, rel: string) => {
    const dst = path.join(layerDirs[layer], rel);
    if (fs.existsSync(dst)) return;
    ensureDir(layer, path.dirname(rel));
    fs.mkdirSync(dst);
    fs.chmodSync(dst, fs.statSync('/' + rel).mode & 0o7777);
  };
  const copy = (rel: string) => {
    for (const e of fs.readdirSync('/' + rel, { withFileTypes: true })) {
      const r = rel + '/' + e.name;
      entries++;
      if (e.isDirectory()) {
        // Directories go into the layer their name hashes to (and any layer a child needs).
        ensureDir(layerOf(r), r);
        copy(r);
        continue;
      }
      const layer = layerOf(r);
      ensureDir(layer, rel);
      const dst = path.join(layerDirs[layer], r);
      if (e.isSymbolicLink()) fs.symlinkSync(fs.readlinkSync('/' + r), dst);
      else if (e.isFile()) {
        fs.copyFileSync('/' + r, dst);
        files++;
        bytes += fs.statSync(dst).size;
      }
    }
  };
  for (const s of sources) {
    for (let l = 0; l < LAYERS; l++) ensureDir(l, path.dirname(s));
    ensureDir(layerOf(s), s);
    entries++;
    copy(s);
  }
  const meta: TreeMeta = { sources, entries, files, bytes, builtAt: new Date().toISOString() };
  fs.writeFileSync(metaFile, JSON.stringify(meta, null, 2) + '\n');
  return { lowers: [...layerDirs].reverse(), meta };
}

// ------------------------------------------------------------------ walkers (same work for every contender)

interface Walk {
  entries: number;
  files: string[];
}

function walkFs(roots: string[]): Walk {
  const files: string[] = [];
  let entries = 0;
  const stack = [...roots];
  while (stack.length) {
    const dir = stack.pop()!;
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = dir + '/' + e.name;
      const st = fs.lstatSync(p);
      entries++;
      if (st.isDirectory()) stack.push(p);
      else if (st.isFile()) files.push(p);
    }
  }
  return { entries, files };
}

function walkUnion(u: UnionFs, roots: string[]): Walk {
  const files: string[] = [];
  let entries = 0;
  const stack = [...roots];
  while (stack.length) {
    const dir = stack.pop()!;
    for (const e of u.readdirTypes(dir)) {
      const p = dir + '/' + e.name;
      const st = u.lstat(p);
      entries++;
      if (st.isDirectory()) stack.push(p);
      else if (st.isFile()) files.push(p);
    }
  }
  return { entries, files };
}

const readBuf = Buffer.allocUnsafe(1 << 20);

function drain(fd: number): number {
  let bytes = 0;
  try {
    for (;;) {
      const n = fs.readSync(fd, readBuf, 0, readBuf.length, null);
      if (n === 0) return bytes;
      bytes += n;
    }
  } finally {
    fs.closeSync(fd);
  }
}

function readAllFs(files: string[]): number {
  let bytes = 0;
  for (const f of files) bytes += drain(fs.openSync(f, 'r'));
  return bytes;
}

function readAllUnion(u: UnionFs, files: string[]): number {
  let bytes = 0;
  for (const f of files) bytes += drain(u.open(f, 'r'));
  return bytes;
}

function time<T>(fn: () => T): { ms: number; value: T } {
  const t0 = process.hrtime.bigint();
  const value = fn();
  return { ms: Number(process.hrtime.bigint() - t0) / 1e6, value };
}

interface Contender {
  name: string;
  walk: () => Walk;
  read: () => number;
}

/**
 * Times every contender `runs` times, round-robin (one run of each in turn), so that load from
 * other work on the machine spreads over all of them alike. One untimed warm-up round first.
 */
function roundRobin(contenders: Contender[], runs: number, what: 'walk' | 'read', check: (c: Contender, v: Walk | number) => void): Map<string, Summary> {
  const times = new Map<string, number[]>(contenders.map((c) => [c.name, []]));
  for (let round = -1; round < runs; round++) {
    for (const c of contenders) {
      const t0 = process.hrtime.bigint();
      const v = what === 'walk' ? c.walk() : c.read();
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      check(c, v);
      if (round >= 0) times.get(c.name)!.push(ms);
    }
  }
  return new Map([...times].map(([k, v]) => [k, summarize(v)]));
}

function findPrintf(cwd: string, args: string[]): Summary {
  const ms: number[] = [];
  for (let i = -1; i < WALK_RUNS; i++) {
    const t0 = process.hrtime.bigint();
    const r = spawnSync('find', [...args, '-printf', '%s %m %U %y\n'], { cwd, stdio: ['ignore', 'ignore', 'inherit'] });
    if (r.status !== 0) throw new Error(`find failed in ${cwd}`);
    if (i >= 0) ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return summarize(ms);
}

function hasCommand(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

export async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('bench/union.ts needs root (kernel overlay and FUSE mounts)');
  const root = path.join(CACHE_DIR, 'union');
  fs.mkdirSync(root, { recursive: true });
  const { lowers, meta } = buildTree(root);
  log(`tree: ${meta.entries} entries (${meta.files} files, ${(meta.bytes / 1e6).toFixed(0)} MB) in ${LAYERS} layers`);
  const unionRoots = meta.sources.map((s) => '/' + s);

  const kmnt = path.join(root, 'mnt-kernel');
  const fmnt = path.join(root, 'mnt-fuse');
  fs.mkdirSync(kmnt, { recursive: true });
  fs.mkdirSync(fmnt, { recursive: true });
  const cleanups: Array<() => void> = [];
  try {
    sys.mount('overlay', kmnt, 'overlay', sys.MS_RDONLY, `lowerdir=${lowers.join(':')}`);
    cleanups.push(() => sys.umount2(kmnt, 0));
    let fuse = false;
    if (hasCommand('fuse-overlayfs')) {
      const r = spawnSync('fuse-overlayfs', ['-o', `lowerdir=${lowers.join(':')}`, fmnt], { stdio: ['ignore', 'ignore', 'pipe'] });
      fuse = r.status === 0;
      if (fuse) cleanups.push(() => void spawnSync('fusermount3', ['-u', fmnt]));
      else log(`fuse-overlayfs failed: ${r.stderr.toString().trim()}`);
    } else {
      log('fuse-overlayfs is not installed: skipped');
    }

    const expected = walkFs(unionRoots.map((r) => kmnt + r));
    const total = readAllFs(expected.files);
    const unionFiles = expected.files.map((f) => f.slice(kmnt.length));
    const warm = new UnionFs({ lowers });
    const contenders: Contender[] = [
      { name: 'ext4 (source dirs)', walk: () => walkFs(unionRoots), read: () => readAllFs(unionFiles) },
      { name: 'kernel overlay', walk: () => walkFs(unionRoots.map((r) => kmnt + r)), read: () => readAllFs(expected.files) },
      { name: 'lamina UnionFs (fresh)', walk: () => walkUnion(new UnionFs({ lowers }), unionRoots), read: () => readAllUnion(new UnionFs({ lowers }), unionFiles) },
      { name: 'lamina UnionFs (warm)', walk: () => walkUnion(warm, unionRoots), read: () => readAllUnion(warm, unionFiles) },
    ];
    if (fuse) contenders.push({ name: 'fuse-overlayfs', walk: () => walkFs(unionRoots.map((r) => fmnt + r)), read: () => readAllFs(unionFiles.map((f) => fmnt + f)) });
    const check = (c: Contender, v: Walk | number) => {
      if (typeof v === 'number') {
        if (v !== total) throw new Error(`${c.name} read ${v} bytes, the kernel mount ${total}`);
      } else if (v.entries !== expected.entries || v.files.length !== expected.files.length) {
        throw new Error(`${c.name} saw ${v.entries} entries/${v.files.length} files, the kernel mount ${expected.entries}/${expected.files.length}`);
      }
    };
    log('walk + lstat …');
    const walks = roundRobin(contenders, WALK_RUNS, 'walk', check);
    log('reading every file …');
    const reads = roundRobin(contenders, READ_RUNS, 'read', check);

    const kw = walks.get('kernel overlay')!;
    const kr = reads.get('kernel overlay')!;
    const ratio = (s: Summary, k: Summary) => `${(s.median / k.median).toFixed(2)}×`;
    console.log(`\nUnion engine vs kernel overlay: ${expected.entries} entries, ${expected.files.length} files, ${(total / 1e6).toFixed(0)} MB, ${LAYERS} layers, warm page cache`);
    console.log(`same Node walker for every contender; walk + lstat ${WALK_RUNS} runs, read all files ${READ_RUNS} runs, round-robin; median (min–max)\n`);
    console.log(formatTable(
      ['contender', 'walk + lstat', 'vs kernel', 'read all files', 'vs kernel'],
      contenders.map((c) => {
        const w = walks.get(c.name)!;
        const r = reads.get(c.name)!;
        return [c.name, formatSummaryMs(w), ratio(w, kw), formatSummaryMs(r), ratio(r, kr)];
      }),
    ));
    const fw = walks.get('lamina UnionFs (fresh)')!;
    const fr = reads.get('lamina UnionFs (fresh)')!;
    console.log(`\ntargets (fresh engine): walk+stat ≤ 2.0× kernel: ${ratio(fw, kw)} ${fw.median / kw.median <= 2 ? 'met' : 'MISSED'}; ` +
      `read ≤ 1.5× kernel: ${ratio(fr, kr)} ${fr.median / kr.median <= 1.5 ? 'met' : 'MISSED'}`);
    if (fuse) {
      const fo = walks.get('fuse-overlayfs')!;
      console.log(`fuse-overlayfs walk: ${ratio(fo, kw)} of the kernel; engine fresh ${fw.median < fo.median ? 'faster' : 'slower'} than fuse-overlayfs`);
    }
    console.log(`context, C tools (find -printf '%s %m %U %y'): ext4 ${formatSummaryMs(findPrintf('/', meta.sources))}, ` +
      `kernel overlay ${formatSummaryMs(findPrintf(kmnt, meta.sources))}`);
  } finally {
    for (const c of cleanups.reverse()) {
      try {
        c();
      } catch (e) {
        log(`cleanup: ${(e as Error).message}`);
      }
    }
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
