// Container control from any lamina process: start detached (spawning the shim), stop, kill,
// wait. The State in config.v2.json is the shared truth; runc does the signalling.
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { constants as osConstants } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { Store } from '../store.js';
import { LaminaError } from '../errors.js';
import { runtimePaths } from './paths.js';
import { runcBinary, runcKill } from './runc.js';
import { StartError } from './lifecycle.js';
import { findContainer, isGone, reconcileContainer, updateContainer } from './state.js';

/** The shim's entry: dist/runtime/shim.js, or shim.ts through tsx when lamina runs from source. */
function shimCommand(): string[] {
  const here = fileURLToPath(import.meta.url);
  // tsx by absolute URL: the shim runs in "/", where a bare "tsx" would not resolve.
  if (here.endsWith('.ts')) return ['--import', import.meta.resolve('tsx'), path.join(path.dirname(here), 'shim.ts')];
  return [path.join(path.dirname(here), 'shim.js')];
}

/**
 * Starts container `id` under a detached shim and resolves with its init pid once it runs.
 * A failed start rejects with StartError (the shim has cleaned up and recorded it).
 */
export async function startDetached(store: Store, id: string): Promise<number> {
  runcBinary(); // fail early and clearly when runc is missing
  // The shim makes no TLS connections: extra CA certificates would only cost it start-up time
  // (Node parses the whole bundle before running anything, ~80 ms for Debian's).
  const shimEnv = { ...process.env };
  delete shimEnv.NODE_EXTRA_CA_CERTS;
  const child = spawn(process.execPath, [...shimCommand(), store.root, id], {
    detached: true,
    stdio: ['ignore', 'ignore', 'ignore', 'pipe'],
    env: shimEnv,
    cwd: '/', // a long-lived process must not keep the caller's directory busy
  });
  const status = child.stdio[3] as NodeJS.ReadableStream;
  let text = '';
  status.setEncoding('utf8');
  const line = await new Promise<string>((resolve) => {
    status.on('data', (s: string) => { text += s; if (text.includes('\n')) resolve(text); });
    status.on('end', () => resolve(text));
    child.on('error', (e) => resolve(`failed 128 ${JSON.stringify(`cannot start the supervisor: ${e.message}`)}`));
  });
  (status as unknown as { destroy(): void }).destroy();
  child.unref();
  const m = /^started (\d+)/.exec(line);
  if (m) return Number(m[1]);
  const f = /^failed (\d+) (.*)$/m.exec(line);
  if (f) throw new StartError(JSON.parse(f[2]) as string, Number(f[1]));
  throw new StartError(`the supervisor of container ${id} exited before starting it`, 128);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Whether the record says the container runs (after reaping a dead supervisor). */
export async function isRunning(store: Store, id: string): Promise<boolean> {
  await reconcileContainer(store, id);
  return findContainer(store, id)?.config.State.Running ?? false;
}

/**
 * Waits until the container is not running; resolves with its exit code, or undefined on
 * timeout. A container removed meanwhile (--rm) resolves with `removedCode`.
 */
export async function waitStopped(store: Store, id: string, timeoutMs = Infinity, removedCode?: number): Promise<number | undefined> {
  const deadline = Date.now() + timeoutMs;
  const p = runtimePaths(store.root, id);
  let delay = 5;
  for (;;) {
    const s = findContainer(store, id)?.config.State;
    if (!s) return removedCode ?? 0;
    // Also wait out the supervisor's clean-up (the run directory goes before the record is saved).
    if (!s.Running && !fs.existsSync(p.bundle)) return s.ExitCode;
    if (Date.now() >= deadline) return undefined;
    if (delay >= 100) await reconcileContainer(store, id);
    await sleep(Math.min(delay, Math.max(0, deadline - Date.now())));
    delay = Math.min(delay * 2, 100);
  }
}

function notRunning(name: string, id: string): LaminaError {
  return new LaminaError('ECONFLICT', `Cannot kill container: ${name}: Container ${id} is not running`);
}

/** `docker kill -s SIG`. */
export async function killContainer(store: Store, id: string, signal = 'SIGKILL', name = id): Promise<void> {
  if (!(await isRunning(store, id))) throw notRunning(name, id);
  const p = runtimePaths(store.root, id);
  if (!runcKill(p.runcRoot, id, normalizeSignal(signal))) throw notRunning(name, id);
}

/**
 * `docker stop -t N`: StopSignal (SIGTERM by default), then SIGKILL after N seconds. Marks the
 * container as manually stopped, as dockerd does. Resolves when the exit is recorded.
 */
export async function stopContainer(store: Store, id: string, timeoutSeconds?: number): Promise<void> {
  if (!(await isRunning(store, id))) return;
  let c;
  try {
    c = updateContainer(store, id, (cur) => { cur.config.HasBeenManuallyStopped = true; });
  } catch (e) {
    if (isGone(e)) return; // it exited and --rm removed it meanwhile
    throw e;
  }
  const cfg = c.config.Config as { StopSignal?: string; StopTimeout?: number };
  const timeout = timeoutSeconds ?? cfg.StopTimeout ?? 10;
  const p = runtimePaths(store.root, id);
  const sig = normalizeSignal(cfg.StopSignal || 'SIGTERM');
  if (timeout !== 0 && runcKill(p.runcRoot, id, sig)) {
    if ((await waitStopped(store, id, timeout < 0 ? Infinity : timeout * 1000)) !== undefined) return;
  }
  runcKill(p.runcRoot, id, 'SIGKILL', true);
  await waitStopped(store, id);
}

/** "TERM", "sigterm", "15" → what runc kill accepts ("SIGTERM" or the number). */
export function normalizeSignal(s: string): string {
  if (/^\d+$/.test(s)) return s;
  const u = s.toUpperCase();
  const name = u.startsWith('SIG') ? u : 'SIG' + u;
  if (!(name in osConstants.signals) && !/^SIGRTM(?:IN|AX)(?:[+-]\d+)?$/.test(name)) throw new LaminaError('EINVAL', `invalid signal: ${s}`);
  return name;
}

/**
 * For `rm -f` of a running container: kills it (SIGKILL, as dockerd does) and waits until its
 * supervisor has recorded the exit and released its mount, so removal finds nothing running.
 */
export async function killForRemoval(store: Store, id: string): Promise<void> {
  if (!(await isRunning(store, id))) return;
  runcKill(runtimePaths(store.root, id).runcRoot, id, 'SIGKILL', true);
  await waitStopped(store, id, 30_000);
}
