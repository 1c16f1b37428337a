// The container's State in config.v2.json, shared by every lamina process: the supervisor
// writes it at start and exit, stop sets HasBeenManuallyStopped, ps reads it. Updates are
// read-modify-write under the root lock (src/lock.ts). A supervisor that died without
// recording the exit is found by its pid and start time, and its container is cleaned up here.
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Store } from '../store.js';
import type { Container, ContainerState } from '../containers/store.js';
import { goNow, marshalGo } from '../images/gojson.js';
import { LaminaError } from '../errors.js';
import { runtimePaths } from './paths.js';
import { releaseRuntime } from './release.js';

export const ZERO_TIME = '0001-01-01T00:00:00Z';

/** True for the errors of reading a container that is (being) removed. */
export function isGone(e: unknown): boolean {
  return (e instanceof LaminaError && e.code === 'ENOTFOUND') || (e as NodeJS.ErrnoException)?.code === 'ENOENT';
}

/** The container's record, or undefined once it is removed (also while rm is under way). */
export function findContainer(store: Store, id: string): Container | undefined {
  try {
    return store.containers.get(id);
  } catch (e) {
    if (isGone(e)) return undefined;
    throw e;
  }
}

/**
 * Runs `fn` on the freshly read record under the root lock (which create, rm and recovery
 * hold too), then saves it unless fn returns false. Throws ENOTFOUND when the container is gone.
 */
export function updateContainer(store: Store, id: string, fn: (c: Container) => boolean | void): Container {
  return store.lock.hold(() => {
    const c = findContainer(store, id);
    if (!c) throw new LaminaError('ENOTFOUND', `No such container: ${id}`);
    if (fn(c) !== false) saveConfigV2(path.join(store.containers.dir, id), c);
    return c;
  });
}

/**
 * Replaces config.v2.json (0600) through a temp file and rename. Unlike the record's creation
 * it is not fsynced: State changes at every start and exit, is void after a reboot anyway, and
 * ext4 flushes a file renamed over an existing one before the rename commits (auto_da_alloc).
 */
function saveConfigV2(dir: string, c: Container): void {
  const file = path.join(dir, 'config.v2.json');
  // Named like writeFileAtomic's temp files, so recovery removes one a killed process left.
  const tmp = path.join(dir, `.config.v2.json.${process.pid}-${randomBytes(6).toString('hex')}.tmp`);
  fs.writeFileSync(tmp, marshalGo(c.config), { mode: 0o600 });
  try {
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}

/** Docker's State.SetRunning for a first start (ExitCode and Error cleared, StartedAt now). */
export function setRunning(s: ContainerState, pid: number): void {
  s.Running = true;
  s.Paused = false;
  s.Restarting = false;
  s.Dead = false;
  s.Pid = pid;
  s.ExitCode = 0;
  s.Error = '';
  s.StartedAt = goNow();
}

/** Docker's State.SetStopped. */
export function setStopped(s: ContainerState, exitCode: number): void {
  s.Running = false;
  s.Paused = false;
  s.Restarting = false;
  s.Pid = 0;
  s.ExitCode = exitCode;
  s.Error = '';
  s.FinishedAt = goNow();
}

/** Field 22 of /proc/<pid>/stat (start time in clock ticks): tells a pid from its reuse. */
export function processStartTime(pid: number): string | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

export function writeSupervisor(file: string, pid = process.pid): void {
  fs.writeFileSync(file, `${pid} ${processStartTime(pid) ?? ''}\n`);
}

/** The supervising process recorded for a container, if it is still that same process. */
export function liveSupervisor(file: string): number | undefined {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  const [pid, start] = text.trim().split(' ');
  const n = Number(pid);
  if (!Number.isInteger(n) || n <= 0) return undefined;
  return processStartTime(n) === start ? n : undefined;
}

/**
 * Finds a container whose record says it runs (or whose run directory exists) but whose
 * supervisor is gone — killed, or the machine rebooted — and finishes what the supervisor
 * would have done, under the container's lock: the container is stopped (runc delete -f), its
 * mount reference released, the run directory removed and State records the end (exit code
 * 255, as dockerd records a container it cannot find again); then --rm removes it. Returns true
 * when it cleaned up.
 */
export async function reconcileContainer(store: Store, id: string): Promise<boolean> {
  const p = runtimePaths(store.root, id);
  let reaped = false;
  let autoRemove = false;
  try {
    updateContainer(store, id, (cur) => {
      const bundleExists = fs.existsSync(p.bundle);
      if (!cur.config.State.Running && !bundleExists) return false;
      if (liveSupervisor(p.supervisorFile) !== undefined) return false;
      releaseRuntime(store, cur, p);
      reaped = true;
      if (!cur.config.State.Running) return false;
      setStopped(cur.config.State, 255);
      cur.config.State.Error = 'the process supervising the container exited without recording its end';
      autoRemove = cur.hostConfig.AutoRemove === true;
    });
  } catch (e) {
    if (isGone(e)) return false;
    throw e;
  }
  if (autoRemove) await store.removeContainer(id, { force: true });
  return reaped;
}
/**
 * reconcileContainer for every container whose supervisor is gone (for ps and friends): a
 * cheap look at each record and supervisor file first, the lock only for the dead ones.
 */
export async function reconcileAll(store: Store): Promise<number> {
  let n = 0;
  for (const c of store.containers.list()) {
    const p = runtimePaths(store.root, c.id);
    if (!c.config.State.Running && !fs.existsSync(p.bundle)) continue;
    if (liveSupervisor(p.supervisorFile) !== undefined) continue;
    if (await reconcileContainer(store, c.id)) n++;
  }
  return n;
}
