// `node --import tsx bench/mount.ts` (or `npm run bench -- mount` once registered): mount+umount
// latency of container-like layers (an init + rw layer on top of an N-layer chain, built with
// the real driver on tmpfs; N+1 lowers), as root.
//
//  1. In-process, per mount+umount cycle (mountLayer + unmountLayer, warm: koffi already loaded):
//     lamina's cycle next to the bare syscalls with the same option data, so the difference is
//     lamina's own work (count file + flock, mountinfo checks, mkdir/rmdir of merged/).
//     The target (issue 3): a mount+umount cycle of 128 lowers costs ≤ 5 ms of lamina's own time.
//  2. Whole processes, 128 lowers: `node probe.mjs mount` and `node probe.mjs umount` (the compiled
//     dist/ modules, as the CLI will load them) against `node empty.mjs`, alternating, with the
//     probe's own breakdown: imports, koffi's first load, the operation.
//
// Environment: BENCH_CYCLES (200), BENCH_PROCESS_RUNS (30), BENCH_DEPTHS (12,128,200).
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Overlay2Driver, generateID, type MountSpec } from '../src/overlay2/driver.js';
import { mountLayer, mountOptions, unmountLayer, MOUNT_DATA_MAX, type KernelMethod } from '../src/mount/index.js';
import * as sys from '../src/sys/index.js';
import { summarize, type Summary } from './lib/stats.js';
import { formatTable } from './lib/table.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const env = process.env;
const CYCLES = Number(env.BENCH_CYCLES || 200);
const PROCESS_RUNS = Number(env.BENCH_PROCESS_RUNS || 30);
const DEPTHS = (env.BENCH_DEPTHS || '12,128,200').split(',').map(Number);
const TARGET_MS = 5;

const ms = (s: Summary) => `${s.median.toFixed(2)} (${s.min.toFixed(2)}–${s.max.toFixed(2)})`;

/** An N-layer chain plus `<id>-init` and `<id>`: the rw layer has N+1 lowers. */
function container(driver: Overlay2Driver, layers: number): MountSpec {
  let parent: string | undefined;
  for (let i = 0; i < layers; i++) {
    const id = generateID();
    driver.create(id, parent);
    fs.writeFileSync(path.join(driver.diffPath(id), `layer-${i}`), `${i}\n`);
    parent = id;
  }
  const id = generateID();
  driver.create(`${id}-init`, parent);
  driver.create(id, `${id}-init`);
  return driver.mountSpec(id);
}

function time(fn: () => void): number {
  const t0 = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

/** The bare kernel work of one cycle with the data lamina would pass (legacy methods only). */
function bareCycle(spec: MountSpec, method: KernelMethod): number {
  const target = path.join(spec.home, spec.target);
  const data = mountOptions(spec, method === 'absolute' ? 'absolute' : 'relative');
  return time(() => {
    if (method === 'absolute') {
      sys.mount('overlay', target, 'overlay', 0, data);
    } else {
      const cwd = process.cwd();
      process.chdir(spec.home);
      sys.mount('overlay', spec.target, 'overlay', 0, data);
      process.chdir(cwd);
    }
    sys.umount2(target, sys.MNT_DETACH);
  });
}

function inProcess(driver: Overlay2Driver): { rows: string[][]; spec128?: MountSpec } {
  const rows: string[][] = [];
  let spec128: MountSpec | undefined;
  for (const depth of DEPTHS) {
    const spec = container(driver, depth - 1);
    if (depth === 128) spec128 = spec;
    const method = mountLayer(spec).method!;
    unmountLayer(spec);
    const mountMs: number[] = [], umountMs: number[] = [], cycleMs: number[] = [];
    for (let i = 0; i < CYCLES; i++) {
      const a = time(() => mountLayer(spec));
      const b = time(() => unmountLayer(spec));
      mountMs.push(a);
      umountMs.push(b);
      cycleMs.push(a + b);
    }
    let bare = '—', own = '—';
    if (method !== 'new-api') {
      const target = path.join(spec.home, spec.target);
      fs.mkdirSync(target, { mode: 0o700 });
      const bareMs: number[] = [];
      for (let i = 0; i < CYCLES; i++) bareMs.push(bareCycle(spec, method));
      fs.rmdirSync(target);
      const b = summarize(bareMs);
      bare = ms(b);
      own = (summarize(cycleMs).median - b.median).toFixed(2);
    }
    const bytes = Buffer.byteLength(mountOptions(spec, 'absolute'));
    rows.push([
      String(spec.lowers.length),
      `${method}${bytes > MOUNT_DATA_MAX ? ` (absolute would be ${bytes} B)` : ''}`,
      ms(summarize(mountMs)),
      ms(summarize(umountMs)),
      ms(summarize(cycleMs)),
      bare,
      own,
    ]);
  }
  return { rows, spec128 };
}

/**
 * Whole-process timings: probe mount / probe umount against an empty node script, plus where the
 * probe's time goes (measured inside it): module imports, koffi's first load, the operation.
 */
function wholeProcess(spec: MountSpec, dir: string): string[][] {
  const dist = path.join(REPO, 'dist');
  if (!fs.existsSync(path.join(dist, 'mount', 'index.js'))) {
    console.log('(dist/ has no mount module: run `npm run build` for the whole-process numbers)');
    return [];
  }
  const empty = path.join(dir, 'empty.mjs');
  const probe = path.join(dir, 'probe.mjs');
  fs.writeFileSync(empty, '');
  // What `lamina mount`/`umount` will do at least: load the driver and the mount module, read the
  // layer's link/lower files, mount or unmount, print.
  const js = (p: string) => JSON.stringify(p);
  fs.writeFileSync(
    probe,
    `const t0 = performance.now();\n` +
      `const { Overlay2Driver } = await import(${js(path.join(dist, 'overlay2', 'driver.js'))});\n` +
      `const { mountLayer, unmountLayer } = await import(${js(path.join(dist, 'mount', 'index.js'))});\n` +
      `const t1 = performance.now();\n` +
      `const sys = await import(${js(path.join(dist, 'sys', 'index.js'))});\n` +
      `try { sys.flock(-1, sys.LOCK_SH); } catch {}\n` + // loads koffi
      `const t2 = performance.now();\n` +
      `const spec = new Overlay2Driver(${js(spec.home)}).mountSpec(${js(spec.id)});\n` +
      `const out = process.argv[2] === 'mount' ? mountLayer(spec).path : unmountLayer(spec).unmounted;\n` +
      `const t3 = performance.now();\n` +
      `console.log(JSON.stringify({ out, imports: t1 - t0, koffi: t2 - t1, op: t3 - t2 }));\n`,
  );
  interface Probe { imports: number; koffi: number; op: number }
  const run = (args: string[]): { ms: number; probe?: Probe } => {
    const t0 = process.hrtime.bigint();
    const r = spawnSync(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
    const t = Number(process.hrtime.bigint() - t0) / 1e6;
    if (r.status !== 0) throw new Error(`node ${args.join(' ')}: ${r.stderr}`);
    return { ms: t, probe: r.stdout.trim() ? (JSON.parse(r.stdout) as Probe) : undefined };
  };
  const base: number[] = [], mnt: number[] = [], umnt: number[] = [];
  const parts: Record<keyof Probe, number[]> = { imports: [], koffi: [], op: [] };
  const mountOp: number[] = [], umountOp: number[] = [];
  for (let i = 0; i < 3; i++) run([empty]); // warm the page cache
  for (let i = 0; i < PROCESS_RUNS; i++) {
    base.push(run([empty]).ms);
    const a = run([probe, 'mount']), b = run([probe, 'umount']);
    mnt.push(a.ms);
    umnt.push(b.ms);
    for (const p of [a.probe!, b.probe!]) {
      parts.imports.push(p.imports);
      parts.koffi.push(p.koffi);
    }
    mountOp.push(a.probe!.op);
    umountOp.push(b.probe!.op);
  }
  const b = summarize(base), m = summarize(mnt), u = summarize(umnt);
  return [
    ['node empty.mjs (process start)', ms(b), ''],
    ['probe mount', ms(m), (m.median - b.median).toFixed(1)],
    ['probe umount', ms(u), (u.median - b.median).toFixed(1)],
    ['  inside: import driver + mount modules', ms(summarize(parts.imports)), 'per process'],
    ['  inside: first koffi call (loads koffi)', ms(summarize(parts.koffi)), 'per process'],
    ['  inside: mountSpec + mountLayer', ms(summarize(mountOp)), ''],
    ['  inside: mountSpec + unmountLayer', ms(summarize(umountOp)), ''],
  ];
}

export async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('bench mount needs root (kernel overlay mounts)');
  const base = fs.existsSync('/dev/shm') ? '/dev/shm' : '/tmp';
  const dir = fs.mkdtempSync(path.join(base, 'lamina-bench-mount-'));
  const saved = env.LAMINA_RUN_DIR;
  env.LAMINA_RUN_DIR = path.join(dir, 'run');
  try {
    const driver = new Overlay2Driver(path.join(dir, 'overlay2'));
    driver.init();
    console.log(`home ${driver.home}; ${CYCLES} cycles per depth; times in ms, median (min–max)\n`);
    const { rows, spec128 } = inProcess(driver);
    console.log(`In-process mountLayer + unmountLayer (warm); target for 128 lowers: cycle ≤ ${TARGET_MS} ms`);
    console.log(formatTable(['lowers', 'method', 'mount', 'umount', 'cycle', 'bare syscalls', 'lamina own'], rows));
    if (spec128) {
      console.log(`\nWhole processes, ${spec128.lowers.length} lowers, ${PROCESS_RUNS} runs each (dist/ modules, what \`lamina mount\`/\`umount\` load at least)`);
      const proc = wholeProcess(spec128, dir);
      if (proc.length) console.log(formatTable(['command', 'wall', 'beyond start'], proc));
    }
  } finally {
    // Nothing should be mounted; detach anything a failure left before deleting the tree.
    for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
      const mp = line.split(' ')[4];
      if (mp?.startsWith(dir + '/')) sys.umount2(mp, sys.MNT_DETACH);
    }
    fs.rmSync(dir, { recursive: true, force: true });
    if (saved === undefined) delete env.LAMINA_RUN_DIR;
    else env.LAMINA_RUN_DIR = saved;
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((e: unknown) => {
    console.error(e instanceof Error ? e.message : e);
    process.exit(1);
  });
}
