// `lamina exec`: a new process in a running container through `runc exec`, with Docker's
// rules for its environment (the container's, then -e), working directory (-w, else the
// container's) and user (-u, else the container's, resolved in the container's /etc/passwd).
// Output goes straight to the caller (Docker does not log exec output either); runc's errors
// are told apart from the process's stderr by the pid file, as for `run`.
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { constants as osConstants } from 'node:os';
import type { Store } from '../store.js';
import { LaminaError } from '../errors.js';
import { runtimePaths } from './paths.js';
import { runcBinary, runcError } from './runc.js';
import { containerEnv, replaceOrAppendEnv, type OciSpec, type OciProcess } from './spec.js';
import { resolveUserInRoot } from './user.js';
import { hostnameOf, startErrorExitCode, StartError } from './lifecycle.js';
import { isRunning } from './control.js';

export interface ExecOptions {
  cmd: string[];
  env?: string[];
  workdir?: string;
  user?: string;
  tty?: boolean;
  interactive?: boolean;
  /** Signals to pass on to the process while it runs (the CLI's own). */
  forwardSignals?: NodeJS.Signals[];
}

/** Runs the command; resolves with its exit code. A process that cannot start rejects with StartError. */
export async function execInContainer(store: Store, id: string, o: ExecOptions): Promise<number> {
  if (o.cmd.length === 0) throw new LaminaError('EINVAL', 'No exec command specified');
  if (!(await isRunning(store, id))) throw new LaminaError('ECONFLICT', `Container ${id} is not running`);
  // runc serves the process's pty from its own stdin, which must then be a terminal.
  if (o.tty && !process.stdin.isTTY) throw new LaminaError('EINVAL', 'the input device is not a TTY');
  const c = store.containers.get(id);
  const p = runtimePaths(store.root, id);
  const spec = JSON.parse(fs.readFileSync(path.join(p.bundle, 'config.json'), 'utf8')) as OciSpec;
  const cfg = c.config.Config as { User?: string; WorkingDir?: string; Env?: string[] | null };
  const user = resolveUserInRoot(spec.root.path, o.user ?? cfg.User ?? '');
  const proc: OciProcess = {
    ...(o.tty ? { terminal: true } : {}),
    user: { uid: user.uid, gid: user.gid, ...(user.additionalGids.length ? { additionalGids: user.additionalGids } : {}) },
    args: o.cmd,
    env: replaceOrAppendEnv(containerEnv(hostnameOf(c), !!o.tty, cfg.Env ?? []), o.env ?? []),
    cwd: o.workdir || cfg.WorkingDir || '/',
    capabilities: spec.process.capabilities,
  };
  const tag = randomBytes(6).toString('hex');
  const procFile = path.join(p.bundle, `exec-${tag}.json`);
  const pidFile = path.join(p.bundle, `exec-${tag}.pid`);
  const logFile = path.join(p.bundle, `exec-${tag}.log`);
  fs.writeFileSync(procFile, JSON.stringify(proc));
  const started = () => fs.existsSync(pidFile);
  const held: Buffer[] = [];
  try {
    const child = spawn(runcBinary(), ['--root', p.runcRoot, '--log', logFile, '--log-format', 'json', 'exec', '--process', procFile, '--pid-file', pidFile, id], {
      stdio: [o.interactive || o.tty ? 'inherit' : 'ignore', 'inherit', 'pipe'],
      detached: true,
    });
    child.stderr!.on('data', (b: Buffer) => {
      if (held.length === 0 && started()) process.stderr.write(b);
      else held.push(b);
    });
    const forward = (sig: NodeJS.Signals) => { try { child.kill(sig); } catch { /* gone */ } };
    for (const s of o.forwardSignals ?? []) process.on(s, forward);
    const status = await new Promise<number>((resolve, reject) => {
      child.on('error', reject);
      child.on('close', (code, signal) => resolve(code ?? 128 + (signal ? osConstants.signals[signal] : 0)));
    });
    for (const s of o.forwardSignals ?? []) process.off(s, forward);
    if (!started()) {
      let msg = '';
      try { msg = runcError(fs.readFileSync(logFile, 'utf8')); } catch { /* no log */ }
      if (!msg) msg = runcError(Buffer.concat(held).toString('utf8')) || `runc exec exited with status ${status}`;
      const code = startErrorExitCode(msg);
      throw new StartError(`OCI runtime exec failed: ${msg}`, code === 127 ? 127 : 126);
    }
    for (const b of held) process.stderr.write(b);
    return status;
  } finally {
    for (const f of [procFile, pidFile, logFile]) fs.rmSync(f, { force: true });
  }
}
