// Shared set-up for the runtime tests: a fresh lamina root with the busybox image, a private
// run directory (LAMINA_RUN_DIR: runc state, bundles, mount counts), and a clean-up that stops
// whatever a test started even when it fails — supervisors by pid, containers with
// `runc delete -f`, mounts by umount2, the containers' cgroups — before removing the files.
// `leftovers()` lists what a run left behind: mounts, processes, cgroups, directories.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { Store } from '../../src/store.js';
import * as sys from '../../src/sys/index.js';
import { lamina } from '../helpers/cli.js';
import { hasBusybox, loadBusybox } from '../helpers/busybox.js';
import { rootHash } from '../../src/runtime/paths.js';

export interface After { after: (fn: () => void | Promise<void>) => void }

export const IMAGE = 'lamina-busybox:1';

function runcOnPath(): boolean {
  return spawnSync('runc', ['--version'], { stdio: 'ignore' }).status === 0;
}

/** Why the runtime tests cannot run here, or false. */
export const skipReason: string | false =
  process.getuid?.() !== 0 ? 'containers need root' : !runcOnPath() ? 'runc is not installed' : !hasBusybox() ? 'busybox-static is not installed' : false;

export interface Env {
  dir: string;
  root: string;
  run: string;
  store: Store;
  /** The CLI against this root. */
  cli: (...args: string[]) => { code: number; stdout: string; stderr: string };
  /** Image layers' cache IDs (what overlay2/ holds when no container exists). */
  imageLayers: string[];
}

const CGROUP_BASE = '/sys/fs/cgroup';

/**
 * The lamina cgroup directories on the host (v1 controllers and the v2 hybrid tree): all of
 * them, or those of one store root (other test runs may have containers running meanwhile).
 */
export function laminaCgroups(root?: string): string[] {
  const prefix = root ? `lamina-${rootHash(root)}-` : 'lamina-';
  const out: string[] = [];
  let controllers: string[] = [];
  try {
    controllers = fs.readdirSync(CGROUP_BASE);
  } catch {
    return out;
  }
  for (const c of controllers) {
    let names: string[];
    try {
      names = fs.readdirSync(path.join(CGROUP_BASE, c));
    } catch {
      continue;
    }
    for (const n of names) if (n.startsWith(prefix)) out.push(path.join(CGROUP_BASE, c, n));
  }
  return out;
}

/** Mount points at or below `dir`. */
export function mountsUnder(dir: string): string[] {
  return fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')
    .map((l) => l.split(' ')[4])
    .filter((m): m is string => !!m && (m === dir || m.startsWith(dir + '/')));
}

/** Pids (other than this process) whose command line mentions `needle`. */
export function processesMentioning(needle: string): number[] {
  const pids: number[] = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      if (fs.readFileSync(`/proc/${name}/cmdline`, 'latin1').includes(needle)) pids.push(Number(name));
    } catch {
      // gone
    }
  }
  return pids;
}

function list(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}

/** Stops and removes everything a test may have left; safe to call more than once. */
export function cleanup(e: Env): void {
  for (const pid of processesMentioning(e.dir)) {
    try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
  }
  for (const h of list(path.join(e.run, 'runc'))) {
    for (const id of list(path.join(e.run, 'runc', h))) {
      spawnSync('runc', ['--root', path.join(e.run, 'runc', h), 'delete', '--force', id], { stdio: 'ignore' });
    }
  }
  for (const m of mountsUnder(e.dir).reverse()) {
    try { sys.umount2(m, sys.MNT_DETACH); } catch { /* not mounted */ }
  }
  for (const cg of laminaCgroups(e.root)) {
    try { fs.rmdirSync(cg); } catch { /* busy or gone */ }
  }
}

/** A fresh root with the busybox image loaded; everything is cleaned up after the test. */
export async function runtimeEnv(t: After): Promise<Env> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lamina-rt-'));
  const root = path.join(dir, 'root');
  const run = path.join(dir, 'run');
  const prevRun = process.env.LAMINA_RUN_DIR;
  process.env.LAMINA_RUN_DIR = run;
  const env: Env = { dir, root, run, store: undefined as unknown as Store, cli: (...a) => lamina(root, ...a), imageLayers: [] };
  t.after(() => {
    try {
      cleanup(env);
    } finally {
      if (prevRun === undefined) delete process.env.LAMINA_RUN_DIR; else process.env.LAMINA_RUN_DIR = prevRun;
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
  env.store = Store.open(root);
  await loadBusybox(env.store);
  env.imageLayers = fs.readdirSync(path.join(root, 'overlay2')).filter((n) => n !== 'l');
  return env;
}

/** Describes what is left of containers (none should exist): empty when nothing is. */
export function leftovers(e: Env): string[] {
  const out: string[] = [];
  for (const m of mountsUnder(e.dir)) out.push(`mount ${m}`);
  for (const pid of processesMentioning(e.dir)) out.push(`process ${pid}: ${fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1').replace(/\0/g, ' ')}`);
  for (const cg of laminaCgroups(e.root)) out.push(`cgroup ${cg}`);
  for (const n of list(path.join(e.root, 'containers'))) out.push(`containers/${n}`);
  for (const n of list(path.join(e.root, 'overlay2'))) if (n !== 'l' && !e.imageLayers.includes(n)) out.push(`overlay2/${n}`);
  if (list(path.join(e.root, 'overlay2', 'l')).length !== e.imageLayers.length) out.push('overlay2/l has links of removed layers');
  for (const n of list(path.join(e.root, 'image/overlay2/layerdb/mounts'))) out.push(`layerdb/mounts/${n}`);
  for (const n of list(path.join(e.root, 'tmp'))) out.push(`tmp/${n}`);
  for (const h of list(path.join(e.run, 'containers'))) for (const n of list(path.join(e.run, 'containers', h))) out.push(`run/containers/${h}/${n}`);
  for (const h of list(path.join(e.run, 'runc'))) for (const n of list(path.join(e.run, 'runc', h))) out.push(`run/runc/${h}/${n}`);
  for (const h of list(path.join(e.run, 'mounts'))) for (const n of list(path.join(e.run, 'mounts', h))) out.push(`run/mounts/${h}/${n}`);
  return out;
}

export async function waitFor(cond: () => boolean, ms = 10_000): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end; await new Promise((r) => setTimeout(r, 25))) if (cond()) return true;
  return cond();
}
