// `npm run bench -- load`: whole-process timings of `lamina load`.
//
//  * refapp (11 small layers, the docker-save fixture), plain tar and .tar.gz, cold: a fresh lamina
//    root per run. Compared with Docker's measured cold `docker load` (docker-overlay2-on-disk.md §13).
//  * large: one real-world layer (~265 MB, ~39k entries, see lib/fixtures.ts) wrapped as a one-layer
//    docker-archive, against GNU `tar -xf` of the same layer tar into a fresh directory, the two
//    alternating run by run.
// Both on tmpfs (/dev/shm) and on ext4 (by default a fresh loop-mounted ext4 image, see
// lib/scratch.ts for why), each run into a never-used directory. Prints medians, ratios and
// lamina's peak RSS; writes .bench-cache/results-load.json.
// What durability costs: the same loads with LAMINA_NO_SYNC=1 (no syncfs before a layer is
// published, no fsync of metadata files and directories), alternating with the default.
// Then, for reading the numbers: the parse(+sha256)-only cost of the same layer (bench/tar-parse.ts,
// openssl) and an `strace -c -f` syscall profile of one lamina load and one tar -x on tmpfs.
//
// Environment: BENCH_RUNS_LARGE (5), BENCH_RUNS_REFAPP (10), BENCH_FS (tmpfs,ext4),
// BENCH_CASES (refapp,refapp-gz,large), BENCH_SYNC (1), BENCH_PARSE (1), BENCH_STRACE (1), BENCH_EXT4 (loop as
// root, else dir), BENCH_EXT4_DIR (OS temp dir: holds the image or the run dirs),
// BENCH_TIMEOUT_MS (120000 per process), LAMINA_CLI (dist/cli/main.js).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CACHE_DIR, REFAPP_GZ, REPO_ROOT, largeLayer, refappPlain, sha256File, warmPageCache, type LargeLayer } from './lib/fixtures.js';
import { assertOk, rssMethod, run, runTimed, type RunResult } from './lib/proc.js';
import { ScratchArea, fsTypeOf, type FsKind } from './lib/scratch.js';
import { formatMiB, formatMs, formatSummaryMs, maxKnown, summarize, type Summary } from './lib/stats.js';
import { formatTable } from './lib/table.js';
import { hasStrace, straceSummary, type SyscallProfile } from './lib/strace.js';

/** Docker 20.10 cold `docker load` of the refapp fixture on this machine, data root on ext4 (spec §13). */
const DOCKER_COLD_LOAD_MS = { plain: 1172, gz: 1147 };
const TARGET_VS_DOCKER = 0.25;
const TARGET_VS_TAR_TMPFS = 1.0;
const RSS_LIMIT_KIB = 150 * 1024;

const env = process.env;
const intEnv = (name: string, dflt: number) => (env[name] ? Math.max(1, Number.parseInt(env[name]!, 10)) : dflt);
const listEnv = (name: string, dflt: string) => (env[name] || dflt).split(',').map((s) => s.trim()).filter(Boolean);
const config = {
  runsLarge: intEnv('BENCH_RUNS_LARGE', 5),
  runsRefapp: intEnv('BENCH_RUNS_REFAPP', 10),
  fsKinds: listEnv('BENCH_FS', 'tmpfs,ext4').map((k) => {
    if (k !== 'tmpfs' && k !== 'ext4') throw new Error(`BENCH_FS: unknown file system ${k} (tmpfs, ext4)`);
    return k as FsKind;
  }),
  cases: listEnv('BENCH_CASES', 'refapp,refapp-gz,large'),
  sync: env.BENCH_SYNC !== '0',
  parse: env.BENCH_PARSE !== '0',
  strace: env.BENCH_STRACE !== '0',
  timeoutMs: intEnv('BENCH_TIMEOUT_MS', 120_000),
  cli: path.resolve(REPO_ROOT, env.LAMINA_CLI || 'dist/cli/main.js'),
};
const SNAPSHOT_DIR = path.join(CACHE_DIR, 'lamina-dist');
/** The CLI actually run: main.js inside a private copy of its dist/ (see snapshotDist). */
let cliRun = config.cli;

interface Timed {
  ms: number[];
  rssKiB: (number | null)[];
  userMs: (number | null)[];
  sysMs: (number | null)[];
}

const newTimed = (): Timed => ({ ms: [], rssKiB: [], userMs: [], sysMs: [] });

/** Median user and system CPU time of the runs, when GNU time measured them. */
function cpuOf(t: Timed): { userMs: number; sysMs: number } | null {
  const u = t.userMs.filter((v): v is number => v !== null);
  const s = t.sysMs.filter((v): v is number => v !== null);
  return u.length && s.length ? { userMs: summarize(u).median, sysMs: summarize(s).median } : null;
}

interface CaseResult {
  case: string;
  fs: FsKind;
  input: string;
  lamina: Timed & { summary: Summary; peakRssKiB: number | null; cpu: { userMs: number; sysMs: number } | null };
  baseline: {
    name: string;
    medianMs: number;
    summary?: Summary;
    peakRssKiB?: number | null;
    cpu?: { userMs: number; sysMs: number } | null;
    note?: string;
  };
  ratio: number;
  target: number | null;
  verdict: 'ok' | 'over' | 'info';
  rssVerdict: 'ok' | 'over' | 'n/a';
}

const log = (msg: string) => console.error(`[bench load] ${msg}`);

function lamina(root: string, input: string): [string, string[]] {
  return [process.execPath, [cliRun, '--root', root, 'load', '-i', input]];
}

function timedLamina(area: ScratchArea, input: string, what: string, env?: Record<string, string>): { r: RunResult; root: string } {
  const root = area.fresh('lamina');
  const [cmd, args] = lamina(root, input);
  const r = runTimed(cmd, args, { rssFile: area.file('rss'), timeoutMs: config.timeoutMs, cwd: REPO_ROOT, env });
  assertOk(r, `lamina load ${what} on ${area.kind}`);
  return { r, root };
}

function timedTar(area: ScratchArea, layerTar: string): { r: RunResult; target: string } {
  const target = area.fresh('tar');
  const r = runTimed('tar', ['-xf', layerTar, '-C', target], { rssFile: area.file('rss'), timeoutMs: config.timeoutMs });
  assertOk(r, `tar -xf on ${area.kind}`);
  return { r, target };
}

/** On tmpfs a run dir can go right away; on ext4 it stays until the end (delete-then-create trap). */
function done(area: ScratchArea, dir: string): void {
  if (area.kind === 'tmpfs') area.remove(dir);
}

function record(t: Timed, r: RunResult): void {
  t.ms.push(r.ms);
  t.rssKiB.push(r.maxRssKiB);
  t.userMs.push(r.userMs);
  t.sysMs.push(r.sysMs);
}

function rssVerdict(peak: number | null): CaseResult['rssVerdict'] {
  return peak === null ? 'n/a' : peak <= RSS_LIMIT_KIB ? 'ok' : 'over';
}

function checkRefappLoaded(root: string): void {
  const repos = path.join(root, 'image', 'overlay2', 'repositories.json');
  const text = fs.existsSync(repos) ? fs.readFileSync(repos, 'utf8') : '';
  if (!text.includes('"refapp:1"')) throw new Error(`lamina load exited 0 but ${repos} does not tag refapp:1`);
}

function benchRefapp(area: ScratchArea, input: string, kind: 'plain' | 'gz'): CaseResult {
  const name = kind === 'gz' ? 'refapp .tar.gz' : 'refapp .tar';
  // One untimed run: checks the load really happened and warms Node's compile cache.
  const warm = timedLamina(area, input, name);
  checkRefappLoaded(warm.root);
  done(area, warm.root);

  const t = newTimed();
  for (let i = 0; i < config.runsRefapp; i++) {
    const { r, root } = timedLamina(area, input, name);
    record(t, r);
    done(area, root);
  }
  const summary = summarize(t.ms);
  const peak = maxKnown(t.rssKiB);
  const docker = DOCKER_COLD_LOAD_MS[kind];
  const ratio = summary.median / docker;
  log(`${area.kind} ${name}: lamina ${formatSummaryMs(summary)}, ${ratio.toFixed(2)}x docker load`);
  return {
    case: name,
    fs: area.kind,
    input,
    lamina: { ...t, summary, peakRssKiB: peak, cpu: cpuOf(t) },
    baseline: { name: 'docker load (cold, spec §13, ext4)', medianMs: docker },
    ratio,
    target: TARGET_VS_DOCKER,
    verdict: ratio <= TARGET_VS_DOCKER ? 'ok' : 'over',
    rssVerdict: rssVerdict(peak),
  };
}

/** Number of entries below `dir` (find -mindepth 1), to check that both tools extracted the same tree. */
function countEntries(dir: string): number {
  return run('find', [dir, '-mindepth', '1', '-printf', '.']).length;
}

/** The extracted layer inside a lamina root: the one overlay2/<cache-id>/diff. */
function laminaDiffDir(root: string): string {
  const ov = path.join(root, 'overlay2');
  const diffs = fs
    .readdirSync(ov)
    .map((d) => path.join(ov, d, 'diff'))
    .filter((d) => fs.existsSync(d));
  if (diffs.length !== 1) throw new Error(`expected one layer diff dir under ${ov}, found ${diffs.length}`);
  return diffs[0];
}

function benchLarge(area: ScratchArea, large: LargeLayer): CaseResult {
  // No warm-up runs: the inputs are in the page cache already and each run costs seconds. The
  // first pair is checked (untimed) for extracting the same number of entries.
  const lt = newTimed();
  const tt = newTimed();
  let laminaEntries = -1;
  let tarEntries = -1;
  for (let i = 0; i < config.runsLarge; i++) {
    // ABBA order, so neither tool always runs right after the other's writes.
    const order = i % 2 === 0 ? ['lamina', 'tar'] : ['tar', 'lamina'];
    for (const which of order) {
      if (which === 'lamina') {
        const { r, root } = timedLamina(area, large.archive, 'large layer');
        record(lt, r);
        if (i === 0) laminaEntries = countEntries(laminaDiffDir(root));
        done(area, root);
      } else {
        const { r, target } = timedTar(area, large.layerTar);
        record(tt, r);
        if (i === 0) tarEntries = countEntries(target);
        done(area, target);
      }
    }
    if (i === 0 && laminaEntries !== tarEntries) log(`WARNING: lamina extracted ${laminaEntries} entries, GNU tar ${tarEntries}`);
    log(`${area.kind} large ${i + 1}/${config.runsLarge}: lamina ${formatMs(lt.ms[i])}, tar ${formatMs(tt.ms[i])}`);
  }
  const ls = summarize(lt.ms);
  const ts = summarize(tt.ms);
  const peak = maxKnown(lt.rssKiB);
  const ratio = ls.median / ts.median;
  const target = area.kind === 'tmpfs' ? TARGET_VS_TAR_TMPFS : null;
  return {
    case: 'large layer',
    fs: area.kind,
    input: large.archive,
    lamina: { ...lt, summary: ls, peakRssKiB: peak, cpu: cpuOf(lt) },
    baseline: {
      name: 'GNU tar -xf',
      medianMs: ts.median,
      summary: ts,
      peakRssKiB: maxKnown(tt.rssKiB),
      cpu: cpuOf(tt),
      note: laminaEntries === tarEntries ? `both extracted ${tarEntries} entries` : `entry counts differ: lamina ${laminaEntries}, tar ${tarEntries}`,
    },
    ratio,
    target,
    verdict: target === null ? 'info' : ratio <= target ? 'ok' : 'over',
    rssVerdict: rssVerdict(peak),
  };
}

interface SyncCost {
  case: string;
  fs: FsKind;
  synced: Summary;
  unsynced: Summary;
}

/** The same load with and without LAMINA_NO_SYNC=1, alternating (ABBA) run by run. */
function benchSyncCost(area: ScratchArea, input: string, name: string, runs: number): SyncCost {
  const synced: number[] = [];
  const unsynced: number[] = [];
  for (let i = 0; i < runs; i++) {
    const order = i % 2 === 0 ? [false, true] : [true, false];
    for (const noSync of order) {
      const { r, root } = timedLamina(area, input, name, noSync ? { LAMINA_NO_SYNC: '1' } : undefined);
      (noSync ? unsynced : synced).push(r.ms);
      done(area, root);
    }
  }
  const c = { case: name, fs: area.kind, synced: summarize(synced), unsynced: summarize(unsynced) };
  log(`${area.kind} ${name}: synced ${formatSummaryMs(c.synced)}, LAMINA_NO_SYNC=1 ${formatSummaryMs(c.unsynced)}`);
  return c;
}

/** Start-up floors: bare Node, and `lamina --version` (Node plus loading the CLI module). */
function floors(area: ScratchArea): { node: Summary; cli: Summary } {
  const measure = (args: string[]) => {
    const ms: number[] = [];
    for (let i = 0; i < 6; i++) {
      const r = runTimed(process.execPath, args, { rssFile: area.file('rss'), timeoutMs: config.timeoutMs });
      assertOk(r, `node ${args.join(' ')}`);
      if (i > 0) ms.push(r.ms);
    }
    return summarize(ms);
  };
  return { node: measure(['-e', '0']), cli: measure([cliRun, '--version']) };
}

interface ParseCost {
  what: string;
  wallMs: Summary;
  inProcessMs?: Summary;
}

/** What the layer costs without touching the file system: parse, parse+sha256, sha256 alone. */
async function parseCosts(layerTar: string, area: ScratchArea): Promise<ParseCost[]> {
  const out: ParseCost[] = [];
  const runs = 3;
  const tarParse = path.join(REPO_ROOT, 'bench', 'tar-parse.ts');
  if (fs.existsSync(tarParse)) {
    for (const extra of [[], ['--sha256']]) {
      const wall: number[] = [];
      const inproc: number[] = [];
      for (let i = 0; i < runs; i++) {
        const r = runTimed(process.execPath, ['--import', 'tsx', tarParse, layerTar, ...extra], {
          rssFile: area.file('rss'),
          timeoutMs: config.timeoutMs,
          cwd: REPO_ROOT,
        });
        assertOk(r, `bench/tar-parse.ts ${extra.join(' ')}`);
        wall.push(r.ms);
        const m = /in ([\d.]+) s/.exec(r.stdout);
        if (m) inproc.push(Number(m[1]) * 1000);
      }
      out.push({
        what: `TarParser${extra.length ? ' + sha256 of each entry' : ''} (bench/tar-parse.ts; wall includes tsx start-up)`,
        wallMs: summarize(wall),
        inProcessMs: inproc.length ? summarize(inproc) : undefined,
      });
    }
  } else {
    log('bench/tar-parse.ts not found: skipping the parse-only comparison');
  }
  {
    const wall: number[] = [];
    for (let i = 0; i < runs; i++) {
      const r = runTimed('openssl', ['dgst', '-sha256', layerTar], { rssFile: area.file('rss') });
      assertOk(r, 'openssl dgst');
      wall.push(r.ms);
    }
    out.push({ what: 'openssl dgst -sha256 of the layer tar (diffID floor)', wallMs: summarize(wall) });
  }
  {
    const ms: number[] = [];
    for (let i = 0; i < runs; i++) {
      const start = process.hrtime.bigint();
      await sha256File(layerTar);
      ms.push(Number(process.hrtime.bigint() - start) / 1e6);
    }
    out.push({ what: 'Node createHash sha256, 1 MiB reads, in process', wallMs: summarize(ms) });
  }
  return out;
}

interface StraceResult {
  lamina: SyscallProfile;
  tar: SyscallProfile;
}

function straceProfiles(area: ScratchArea, large: LargeLayer): StraceResult {
  const root = area.fresh('strace-lamina');
  const [cmd, args] = lamina(root, large.archive);
  const l = straceSummary(cmd, args, path.join(CACHE_DIR, 'strace-load-lamina.txt'));
  done(area, root);
  const target = area.fresh('strace-tar');
  const t = straceSummary('tar', ['-xf', large.layerTar, '-C', target], path.join(CACHE_DIR, 'strace-load-tar.txt'));
  done(area, target);
  return { lamina: l, tar: t };
}

/** Syscalls in which a thread sleeps: strace -c counts their blocked time, which is not work. */
const WAITING = new Set(['futex', 'epoll_wait', 'epoll_pwait', 'epoll_pwait2', 'wait4', 'waitid', 'poll', 'ppoll', 'select', 'pselect6', 'nanosleep', 'clock_nanosleep', 'rt_sigsuspend', 'io_getevents']);

function formatStrace(s: StraceResult, top = 12): string {
  const fmt = (name: string, p: SyscallProfile) => {
    const work = p.rows.filter((r) => !WAITING.has(r.syscall));
    const waits = p.rows.filter((r) => WAITING.has(r.syscall));
    const workSeconds = work.reduce((a, r) => a + r.seconds, 0);
    const workCalls = work.reduce((a, r) => a + r.calls, 0);
    const rows = [...work].sort((a, b) => b.seconds - a.seconds).slice(0, top);
    const waitNote = waits.length
      ? `; waiting (not counted): ${waits.map((w) => `${w.syscall} ${w.calls}×`).join(', ')}`
      : '';
    return (
      `${name}: ${workCalls} syscalls, ${workSeconds.toFixed(3)} s in them${waitNote}\n` +
      formatTable(
        ['syscall', 'calls', 'errors', 'seconds', 'µs/call'],
        rows.map((r) => [r.syscall, String(r.calls), String(r.errors || ''), r.seconds.toFixed(3), ((r.seconds * 1e6) / r.calls).toFixed(1)]),
      )
    );
  };
  return `${fmt('lamina load', s.lamina)}\n\n${fmt('GNU tar -xf', s.tar)}`;
}

/**
 * Copies the built CLI's dist/ to .bench-cache/lamina-dist/ and runs that copy, so that a rebuild
 * of dist/ by someone else during the minutes of the benchmark cannot change the code measured.
 * The copy stays inside the repo, so its imports still resolve through the repo's node_modules.
 */
function snapshotDist(): string {
  const distRoot = path.dirname(path.dirname(config.cli));
  fs.rmSync(SNAPSHOT_DIR, { recursive: true, force: true });
  fs.cpSync(distRoot, SNAPSHOT_DIR, { recursive: true });
  return path.join(SNAPSHOT_DIR, path.relative(distRoot, config.cli));
}

function preflight(): void {
  if (!fs.existsSync(config.cli)) throw new Error(`${config.cli} not found: run \`npm run build\` first`);
  fs.mkdirSync(CACHE_DIR, { recursive: true });
  cliRun = snapshotDist();
  const rssFile = path.join(CACHE_DIR, `rss-${process.pid}`);
  const r = runTimed(process.execPath, [cliRun, '--help'], { rssFile });
  fs.rmSync(rssFile, { force: true });
  assertOk(r, `${config.cli} --help`);
  // A dist older than src measures old code.
  const newestSrc = newestMtime(path.join(REPO_ROOT, 'src'));
  if (newestSrc > fs.statSync(config.cli).mtimeMs) log('WARNING: src/ has files newer than dist/cli/main.js; run `npm run build` to measure the current code');
}

function newestMtime(dir: string): number {
  let newest = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile() && e.name.endsWith('.ts')) newest = Math.max(newest, fs.statSync(path.join(e.parentPath ?? e.path, e.name)).mtimeMs);
  }
  return newest;
}

/** Room for every tree of the ext4 phase, which stays until the end: the large layer twice per run. */
function ext4Sizing(large: LargeLayer | undefined) {
  // Run dirs on ext4 stay until the end: lamina + tar per large run, and two per sync-cost run.
  const syncRuns = config.sync ? 2 * Math.min(config.runsLarge, 4) : 0;
  const trees = config.cases.includes('large') && large ? 2 * config.runsLarge + syncRuns : 0;
  const refappRoots = 2 * (config.runsRefapp + 1) + (config.sync ? 2 * config.runsRefapp : 0);
  return {
    bytes: trees * (large?.meta.layerBytes ?? 0) * 1.6 + refappRoots * 16 * 2 ** 20 + 2 ** 30,
    inodes: Math.round(trees * (large?.meta.entries ?? 0) * 1.3 + refappRoots * 2000 + 100_000),
  };
}

export async function main(): Promise<void> {
  const started = Date.now();
  preflight();
  const wants = (c: string) => config.cases.includes(c);
  const refapp = wants('refapp') || wants('refapp-gz') ? await refappPlain() : undefined;
  const large = wants('large') || config.parse || config.strace ? await largeLayer(log) : undefined;
  for (const f of [refapp, REFAPP_GZ, large?.archive, large?.layerTar]) if (f) await warmPageCache(f);

  const areas: ScratchArea[] = [];
  const cleanup = () => areas.forEach((a) => a.removeAll());
  const onSignal = () => {
    cleanup();
    process.exit(130);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  const results: CaseResult[] = [];
  let floor: { node: Summary; cli: Summary } | undefined;
  const loadBefore = os.loadavg();
  const probes: { fs: FsKind; where: string; usPerCreate: number }[] = [];
  let parse: ParseCost[] | undefined;
  let strace: StraceResult | undefined;
  const syncCosts: SyncCost[] = [];
  try {
    // tmpfs first: ext4 runs leave large trees whose deletion would slow later ext4 creates.
    const order = (['tmpfs', 'ext4'] as FsKind[]).filter((k) => config.fsKinds.includes(k));
    for (const kind of order) {
      const area = ScratchArea.create(kind, ext4Sizing(large));
      areas.push(area);
      const probe = area.createProbe();
      probes.push({ fs: kind, where: area.description, usPerCreate: probe });
      log(`${kind}: ${area.description} (${fsTypeOf(area.base)}); create probe ${probe.toFixed(0)} µs/file`);
      if (probe > 150) log(`WARNING: ${probe.toFixed(0)} µs per create: recent deletions slow this area, ${kind} timings will be inflated`);
      if (kind === 'tmpfs') floor = floors(area);
      if (refapp && wants('refapp')) results.push(benchRefapp(area, refapp, 'plain'));
      if (wants('refapp-gz')) results.push(benchRefapp(area, REFAPP_GZ, 'gz'));
      if (large && wants('large')) results.push(benchLarge(area, large));
      if (config.sync) {
        if (refapp && wants('refapp')) syncCosts.push(benchSyncCost(area, refapp, 'refapp .tar', config.runsRefapp));
        if (large && wants('large')) syncCosts.push(benchSyncCost(area, large.archive, 'large layer', Math.min(config.runsLarge, 4)));
      }
      if (kind === 'tmpfs' && large) {
        if (config.parse) parse = await parseCosts(large.layerTar, area);
        if (config.strace) {
          if (hasStrace()) strace = straceProfiles(area, large);
          else log('strace not installed: skipping the syscall profile');
        }
      }
    }
  } finally {
    const penalty = areas.some((a) => a.deletionPenalizes);
    log('removing scratch dirs' + (penalty ? ' (creates near them on the root fs stay slower for minutes after this)' : ''));
    cleanup();
    if (cliRun !== config.cli) fs.rmSync(SNAPSHOT_DIR, { recursive: true, force: true });
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }

  const rows = results.map((r) => [
    r.case,
    r.fs,
    formatSummaryMs(r.lamina.summary),
    r.baseline.summary ? `${r.baseline.name} ${formatSummaryMs(r.baseline.summary)}` : `${r.baseline.name.split(' (')[0]} ${formatMs(r.baseline.medianMs)}`,
    `${r.ratio.toFixed(2)}x`,
    r.target === null ? '—' : `≤ ${r.target.toFixed(2)}x`,
    r.verdict,
    `${formatMiB(r.lamina.peakRssKiB)} ${r.rssVerdict === 'n/a' ? '' : r.rssVerdict}`.trim(),
  ]);
  console.log(`\nlamina load (${config.cli.replace(REPO_ROOT + '/', '')}), node ${process.version}, ${os.cpus().length} CPUs, kernel ${os.release()}`);
  if (large) console.log(`large layer: ${(large.meta.layerBytes / 1e6).toFixed(1)} MB, ${large.meta.entries} entries, /${large.meta.dirs.join(' /')}`);
  console.log(
    `runs: refapp ${config.runsRefapp} (after 1 untimed), large ${config.runsLarge} (alternating with tar, ABBA), each into a never-used dir; medians (min–max); ` +
      `peak RSS via ${rssMethod()}, max over runs, target ≤ ${RSS_LIMIT_KIB / 1024} MiB`,
  );
  for (const p of probes) console.log(`${p.fs}: ${p.where}; empty-file create ${p.usPerCreate.toFixed(0)} µs (healthy: tmpfs ~20, ext4 ~40–90)`);
  console.log(`docker figures: cold docker load of refapp, dockerd data root on ext4 (spec §13)\n`);
  console.log(
    formatTable(['case', 'fs', 'lamina median (min–max)', 'baseline median (min–max)', 'ratio', 'target', 'verdict', 'lamina peak RSS'], rows),
  );
  for (const r of results) if (r.baseline.note) console.log(`${r.case} on ${r.fs}: ${r.baseline.note}; tar peak RSS ${formatMiB(r.baseline.peakRssKiB ?? null)}`);
  const cpuRows = results.flatMap((r) => {
    const fmt = (c: { userMs: number; sysMs: number } | null | undefined) =>
      c ? `${formatMs(c.userMs)} user + ${formatMs(c.sysMs)} sys` : 'n/a';
    const rows = [[r.case, r.fs, 'lamina', fmt(r.lamina.cpu)]];
    if (r.baseline.cpu !== undefined) rows.push([r.case, r.fs, r.baseline.name, fmt(r.baseline.cpu)]);
    return rows;
  });
  console.log('\nCPU time per process (medians; the rest of the wall time is waiting: I/O, other processes):');
  console.log(formatTable(['case', 'fs', 'process', 'CPU'], cpuRows));
  if (floor) console.log(`start-up floors: node -e 0 ${formatSummaryMs(floor.node)}; lamina --version ${formatSummaryMs(floor.cli)}`);
  const loadAfter = os.loadavg();
  console.log(
    `load average before ${loadBefore.map((l) => l.toFixed(2)).join(' ')}, after ${loadAfter.map((l) => l.toFixed(2)).join(' ')}` +
      ' (above ~0.3 other work shared the 2 CPUs: expect noise)',
  );
  if (syncCosts.length) {
    console.log('\nwhat durability costs (syncfs before each layer or container is published, fsync of metadata files and their dirs), ABBA-alternated:');
    console.log(
      formatTable(
        ['case', 'fs', 'default (synced)', 'LAMINA_NO_SYNC=1', 'cost'],
        syncCosts.map((c) => [c.case, c.fs, formatSummaryMs(c.synced), formatSummaryMs(c.unsynced), `${formatMs(c.synced.median - c.unsynced.median)} (${((c.synced.median / c.unsynced.median - 1) * 100).toFixed(0)}%)`]),
      ),
    );
  }
  if (parse) {
    console.log('\nsame layer tar, no file system writes (what parsing and hashing alone cost):');
    console.log(
      formatTable(
        ['what', 'wall median (min–max)', 'in-process median'],
        parse.map((p) => [p.what, formatSummaryMs(p.wallMs), p.inProcessMs ? formatMs(p.inProcessMs.median) : '']),
      ),
    );
  }
  if (strace) console.log(`\nstrace -c -f on tmpfs, one run each, all threads (ptrace slows both; compare counts, not wall; full output in .bench-cache/strace-load-*.txt):\n${formatStrace(strace)}`);

  const out = path.join(CACHE_DIR, 'results-load.json');
  fs.mkdirSync(CACHE_DIR, { recursive: true });
  const json = {
    benchmark: 'load',
    date: new Date().toISOString(),
    durationSeconds: (Date.now() - started) / 1000,
    machine: { node: process.version, cpus: os.cpus().length, kernel: os.release(), memGiB: Math.round(os.totalmem() / 2 ** 30) },
    config: { ...config, rssMethod: rssMethod() },
    fixtures: { refapp: refapp ? { plain: refapp, gz: REFAPP_GZ } : undefined, large: large?.meta },
    results,
    floorsMs: floor,
    scratch: probes,
    loadAverage: { before: loadBefore, after: os.loadavg() },
    parseCosts: parse,
    syncCosts,
    strace,
    targets: { refappVsDocker: TARGET_VS_DOCKER, largeVsTarTmpfs: TARGET_VS_TAR_TMPFS, peakRssMiB: RSS_LIMIT_KIB / 1024 },
  };
  fs.writeFileSync(out, JSON.stringify(json, null, 2) + '\n');
  console.log(`\nresults: ${path.relative(REPO_ROOT, out)} (${((Date.now() - started) / 1000).toFixed(0)} s)`);
}
