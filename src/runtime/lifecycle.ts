// One run of a container, from start to the recorded exit: what dockerd + containerd-shim do
// for `docker start`, done by whichever lamina process supervises the container (the CLI itself
// for an attached run, the detached shim otherwise):
//   claim (run directory, under the container's lock) → mount the rw layer (one reference) →
//   hostname/hosts/resolv.conf into containers/<id>/ → user and working directory resolved in
//   the merged rootfs → config.json → `runc run` in the foreground, its stdout/stderr piped into
//   the json-file log (and the terminal when attached) → State.Running when runc's pid file
//   appears → on exit: runc state, mount reference and run directory released, State records
//   the exit code, and --rm removes the container.
// runc's own errors share the container's stderr pipe (runc hands its stdio to the container);
// until the pid file shows the process started, stderr is held back, and a run that never
// started reports runc's message (from its JSON log) as a start failure instead.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { constants as osConstants } from 'node:os';
import type { Store } from '../store.js';
import type { Container } from '../containers/store.js';
import { LaminaError } from '../errors.js';
import { mountLayer } from '../mount/index.js';
import { cgroupsPath, runtimePaths, type RuntimePaths } from './paths.js';
import { runcBinary, runcError } from './runc.js';
import { buildSpec, parseBind, type OciSpec } from './spec.js';
import { writeNetworkFiles } from './netfiles.js';
import { resolveUserInRoot } from './user.js';
import { mkdirAllInRoot } from './rootfs.js';
import { JsonLogWriter } from './jsonlog.js';
import { MOUNTED_MARKER, releaseRuntime } from './release.js';
import { isGone, liveSupervisor, setRunning, setStopped, updateContainer, writeSupervisor } from './state.js';

/** A start that failed before the container's process ran; exitCode is Docker's State.ExitCode. */
export class StartError extends LaminaError {
  readonly exitCode: number;
  constructor(message: string, exitCode: number) {
    super(exitCode === 127 ? 'ENOTFOUND' : 'EINVAL', message);
    this.exitCode = exitCode;
  }
}

/** moby's translateContainerdStartErr: 127 for a missing command, 126 when it cannot be run. */
export function startErrorExitCode(message: string): number {
  const m = message.toLowerCase();
  if (m.includes('executable file not found') || m.includes('no such file or directory')) return 127;
  if (m.includes('permission denied')) return 126;
  return 128;
}

export interface RunIO {
  /** Container stdin: the caller's own stdin (-i) or /dev/null. */
  stdin?: 'inherit' | 'ignore';
  /** Called with container output as it arrives (attached runs), besides the log. */
  stdout?: (chunk: Buffer) => void;
  stderr?: (chunk: Buffer) => void;
  /**
   * Signals this process passes on to the container (docker's sig-proxy) from the moment start
   * is called until the exit is recorded; one arriving before runc runs is delivered once it does.
   */
  forwardSignals?: NodeJS.Signals[];
}

/** The networks lamina can give a container: its own empty namespace, or the host's. */
export function networkModeOf(c: Container): 'none' | 'host' {
  return c.hostConfig.NetworkMode === 'host' ? 'host' : 'none';
}

/** Config.Hostname, or the host's name for --network host with the generated default. */
export function hostnameOf(c: Container): string {
  const h = String((c.config.Config as { Hostname?: string }).Hostname || c.id.slice(0, 12));
  return networkModeOf(c) === 'host' && h === c.id.slice(0, 12) ? os.hostname() : h;
}

function readPid(file: string): number | undefined {
  try {
    const n = Number(fs.readFileSync(file, 'utf8').trim());
    return Number.isInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

/** Everything the run needs from the merged rootfs, in Docker's order; returns the spec. */
function prepare(store: Store, c: Container, p: RuntimePaths): { spec: OciSpec; logPath: string } {
  const r = mountLayer(store.driver.mountSpec(c.mount.mountID));
  fs.writeFileSync(path.join(p.bundle, MOUNTED_MARKER), '');
  const rootfs = r.path;
  const cfg = c.config.Config as { User?: string; WorkingDir?: string; Env?: string[] | null; Tty?: boolean };
  const hc = c.hostConfig as { Binds?: string[] | null; ReadonlyRootfs?: boolean; ShmSize?: number; CapAdd?: string[] | null; CapDrop?: string[] | null; MaskedPaths?: string[] | null; ReadonlyPaths?: string[] | null };
  const networkMode = networkModeOf(c);
  const hostname = hostnameOf(c);
  const ctrDir = path.join(store.containers.dir, c.id);
  const files = writeNetworkFiles(ctrDir, hostname, networkMode);
  const user = resolveUserInRoot(rootfs, cfg.User ?? '');
  if (cfg.WorkingDir) {
    try {
      mkdirAllInRoot(rootfs, cfg.WorkingDir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOTDIR') throw new StartError(`Cannot mkdir: ${cfg.WorkingDir} is not a directory`, 128);
      throw e;
    }
  }
  const binds = (hc.Binds ?? []).map(parseBind);
  for (const b of binds) {
    // Like dockerd, a missing bind source is created as a directory.
    if (!fs.existsSync(b.source)) fs.mkdirSync(b.source, { recursive: true, mode: 0o755 });
  }
  const spec = buildSpec({
    cgroupsPath: cgroupsPath(store.root, c.id), rootfs, args: [c.config.Path, ...c.config.Args], env: cfg.Env ?? [], workingDir: cfg.WorkingDir ?? '',
    hostname, tty: !!cfg.Tty, user, networkMode, readonlyRootfs: !!hc.ReadonlyRootfs, shmSize: hc.ShmSize || 67108864,
    binds, networkFiles: files, capAdd: hc.CapAdd, capDrop: hc.CapDrop, maskedPaths: hc.MaskedPaths, readonlyPaths: hc.ReadonlyPaths,
  });
  fs.writeFileSync(path.join(p.bundle, 'config.json'), JSON.stringify(spec));
  return { spec, logPath: path.join(ctrDir, `${c.id}-json.log`) };
}

/**
 * Passes signals this process receives on to runc (which passes them to the container), from
 * before runc is spawned until the run ends; a signal that arrives before the spawn is
 * delivered right after it.
 */
class SignalRelay {
  private child: ChildProcess | undefined;
  private readonly early: NodeJS.Signals[] = [];
  private readonly forward = (sig: NodeJS.Signals) => {
    if (this.child) this.child.kill(sig);
    else this.early.push(sig);
  };

  constructor(private readonly signals: NodeJS.Signals[]) {
    for (const sig of signals) process.on(sig, this.forward);
  }

  attach(child: ChildProcess): void {
    this.child = child;
    for (const sig of this.early.splice(0)) child.kill(sig);
  }

  stop(): void {
    for (const sig of this.signals) process.off(sig, this.forward);
  }
}

/** A started container and its supervision (this process is the supervisor). */
export class ContainerRun {
  readonly id: string;
  /** The container's init process (host pid). */
  pid = 0;
  private readonly child: ChildProcess;
  private readonly exited: Promise<number>;

  private constructor(id: string, child: ChildProcess, exited: Promise<number>) {
    this.id = id;
    this.child = child;
    this.exited = exited;
  }

  /**
   * Starts container `id` and resolves once its process runs; a start that fails is cleaned up
   * and rejects with StartError (its State records the error, as dockerd's does).
   */
  static async start(store: Store, id: string, io: RunIO = {}): Promise<ContainerRun> {
    const relay = new SignalRelay(io.forwardSignals ?? []);
    try {
      return await ContainerRun.launch(store, id, io, relay);
    } catch (e) {
      relay.stop();
      throw e;
    }
  }

  private static async launch(store: Store, id: string, io: RunIO, relay: SignalRelay): Promise<ContainerRun> {
    const runc = runcBinary();
    const p = runtimePaths(store.root, id);
    let c!: Container;
    updateContainer(store, id, (cur) => {
      if (liveSupervisor(p.supervisorFile) !== undefined) throw new LaminaError('ECONFLICT', `container ${id} is already running`);
      // What a supervisor that died left behind (see reconcileContainer) is cleaned up first.
      const stale = cur.config.State.Running;
      if (stale || fs.existsSync(p.bundle)) releaseRuntime(store, cur, p);
      if (stale) setStopped(cur.config.State, 255);
      fs.mkdirSync(path.dirname(p.bundle), { recursive: true, mode: 0o700 });
      fs.mkdirSync(p.runcRoot, { recursive: true, mode: 0o700 });
      fs.mkdirSync(p.bundle, { mode: 0o700 });
      writeSupervisor(p.supervisorFile);
      c = cur;
      return stale;
    });

    // runc (without a console socket, which Node cannot receive) needs a terminal on its stdin
    // to serve as the host side of the container's pty.
    if ((c.config.Config as { Tty?: boolean }).Tty && (io.stdin !== 'inherit' || !process.stdin.isTTY)) {
      const err = new StartError('the input device is not a TTY: a container with a terminal (-t) runs attached to the terminal lamina is started from (not detached)', 128);
      await recordStartFailure(store, id, p, err);
      throw err;
    }

    let logPath: string;
    try {
      ({ logPath } = prepare(store, c, p));
    } catch (e) {
      const err = e instanceof StartError ? e : new StartError((e as Error).message, 128);
      await recordStartFailure(store, id, p, err);
      throw err;
    }

    const log = new JsonLogWriter(logPath);
    let started: number | undefined;
    let runningWritten = false;
    const heldStderr: Buffer[] = [];
    let resolveStarted!: (pid: number) => void;
    let rejectStarted!: (e: Error) => void;
    const startedP = new Promise<number>((res, rej) => { resolveStarted = res; rejectStarted = rej; });

    const markStarted = (): void => {
      if (started !== undefined) return;
      const pid = readPid(p.pidFile);
      if (pid === undefined) return;
      started = pid;
      for (const b of heldStderr) { log.write('stderr', b); io.stderr?.(b); }
      heldStderr.length = 0;
      try {
        updateContainer(store, id, (cur) => recordStart(store, cur, pid, logPath));
        runningWritten = true;
      } catch (e) {
        if (!isGone(e)) throw e; // removed meanwhile (rm -f): the exit finds out too
      }
      resolveStarted(pid);
    };
    // runc writes the pid file (temp + rename) once the process has been told to exec.
    const watcher = fs.watch(p.bundle, (_ev, name) => { if (name === 'init.pid') markStarted(); });

    const child = spawn(runc, ['--root', p.runcRoot, '--log', p.runcLog, '--log-format', 'json', 'run', '--bundle', p.bundle, '--pid-file', p.pidFile, id], {
      stdio: [io.stdin ?? 'ignore', 'pipe', 'pipe'],
      // Its own process group: signals reach the container only as the supervisor forwards them.
      detached: true,
    });
    relay.attach(child);
    child.stdout!.on('data', (b: Buffer) => { log.write('stdout', b); io.stdout?.(b); });
    child.stderr!.on('data', (b: Buffer) => {
      if (started === undefined) { heldStderr.push(b); return; }
      log.write('stderr', b);
      io.stderr?.(b);
    });

    /** After runc exits: a start failure, or the container's exit; either way everything is released. */
    const finish = async (status: number, spawnError?: Error): Promise<number> => {
      watcher.close();
      relay.stop();
      if (!spawnError) markStarted();
      log.close();
      if (started === undefined) {
        // Never ran: what runc said is the error, not container output.
        let msg = spawnError?.message ?? '';
        if (!msg) { try { msg = runcError(fs.readFileSync(p.runcLog, 'utf8')); } catch { /* no log */ } }
        if (!msg) msg = runcError(Buffer.concat(heldStderr).toString('utf8')) || `runc exited with status ${status}`;
        const err = new StartError(`OCI runtime create failed: ${msg}`, startErrorExitCode(msg));
        await recordStartFailure(store, id, p, err);
        rejectStarted(err);
        return err.exitCode;
      }
      let autoRemove = false;
      try {
        updateContainer(store, id, (cur) => {
          releaseRuntime(store, cur, p);
          if (!runningWritten) recordStart(store, cur, started!, logPath);
          setStopped(cur.config.State, status);
          autoRemove = cur.hostConfig.AutoRemove === true;
          // --rm: the record is deleted right away, so there is no point writing it.
          return !autoRemove;
        });
        if (autoRemove) await store.removeContainer(id, { force: true });
      } catch (e) {
        if (!isGone(e)) throw e;
        // Removed while it ran (rm -f): what is left of the run is still ours to release.
        if (!autoRemove) releaseRuntime(store, c, p);
      }
      return status;
    };
    const exited = new Promise<number>((resolve, reject) => {
      let once = false;
      const end = (status: number, spawnError?: Error) => {
        if (once) return;
        once = true;
        finish(status, spawnError).then(resolve, (e: Error) => { rejectStarted(e); reject(e); });
      };
      child.on('error', (e) => end(128, new Error(`cannot run ${runc}: ${e.message}`)));
      child.on('close', (code, signal) => end(code ?? 128 + (signal ? osConstants.signals[signal] : 0)));
    });
    // A failed start rejects startedP; `exited` then only reports the same failure again.
    exited.catch(() => {});
    const run = new ContainerRun(id, child, exited);
    run.pid = await startedP;
    return run;
  }

  /** Resolves with the exit code once the exit is recorded and the run cleaned up. */
  wait(): Promise<number> {
    return this.exited;
  }

  /** Forwards a signal to the container (runc passes what it receives on to the process). */
  signal(sig: NodeJS.Signals): void {
    try {
      this.child.kill(sig);
    } catch {
      // already gone
    }
  }
}

/**
 * What dockerd records when the process runs: the paths of the files it made for it (empty
 * until the first start), State.SetRunning, HasBeenStartedBefore.
 */
function recordStart(store: Store, c: Container, pid: number, logPath: string): void {
  const dir = path.join(store.containers.dir, c.id);
  c.config.HostnamePath = path.join(dir, 'hostname');
  c.config.HostsPath = path.join(dir, 'hosts');
  c.config.ResolvConfPath = path.join(dir, 'resolv.conf');
  c.config.LogPath = logPath;
  c.config.HasBeenManuallyStopped = false;
  c.config.HasBeenStartedBefore = true;
  setRunning(c.config.State, pid);
}

/** Cleans up a start that failed and records it as dockerd does (Error, ExitCode; still "created"). */
async function recordStartFailure(store: Store, id: string, p: RuntimePaths, err: StartError): Promise<void> {
  let autoRemove = false;
  try {
    updateContainer(store, id, (cur) => {
      releaseRuntime(store, cur, p);
      const s = cur.config.State;
      s.Running = false;
      s.Pid = 0;
      s.Error = err.message;
      s.ExitCode = err.exitCode;
      autoRemove = cur.hostConfig.AutoRemove === true;
    });
    if (autoRemove) await store.removeContainer(id, { force: true });
  } catch (e) {
    if (!isGone(e)) throw e;
  }
}
