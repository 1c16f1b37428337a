// Calls to the runc binary (Debian's runc, an OCI runtime; lamina never re-implements one). All
// calls use the store's private --root state directory.
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { LaminaError } from '../errors.js';

let runcPath: string | undefined;

/** The runc binary: $LAMINA_RUNC, else the first `runc` on PATH (and the sbin dirs root has). */
export function runcBinary(): string {
  if (runcPath) return runcPath;
  if (process.env.LAMINA_RUNC) return (runcPath = process.env.LAMINA_RUNC);
  const dirs = [...(process.env.PATH ?? '').split(':'), '/usr/local/sbin', '/usr/sbin', '/sbin'];
  for (const d of dirs) {
    if (!d) continue;
    const p = path.join(d, 'runc');
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return (runcPath = p);
    } catch {
      // next
    }
  }
  throw new LaminaError('ENOTFOUND', 'runc is not installed (apt-get install runc): lamina runs containers through it');
}

export interface RuncResult { status: number; stdout: string; stderr: string }

export function runcSync(runcRoot: string, args: string[], opts: { input?: string } = {}): RuncResult {
  const r = spawnSync(runcBinary(), ['--root', runcRoot, ...args], { encoding: 'utf8', input: opts.input, stdio: ['pipe', 'pipe', 'pipe'] });
  if (r.error) throw r.error;
  return { status: r.status ?? 128 + 9, stdout: r.stdout, stderr: r.stderr };
}

/** runc's message out of its stderr or JSON log: the `msg` of the last error, else the text. */
export function runcError(text: string): string {
  let msg = '';
  for (const line of text.split('\n')) {
    const l = line.trim();
    if (!l) continue;
    if (l.startsWith('{')) {
      try {
        const j = JSON.parse(l) as { level?: string; msg?: string };
        if (j.msg && (j.level === 'error' || j.level === 'fatal')) msg = j.msg;
        continue;
      } catch {
        // not JSON
      }
    }
    const m = /level=(?:error|fatal) msg="((?:[^"\\]|\\.)*)"/.exec(l);
    if (m) msg = m[1].replace(/\\(.)/g, '$1');
    else if (!/^time="/.test(l)) msg = l;
  }
  return msg;
}

/** `runc kill ID SIGNAL`; false when runc says the container is not running. */
export function runcKill(runcRoot: string, id: string, signal: string, all = false): boolean {
  const r = runcSync(runcRoot, ['kill', ...(all ? ['--all'] : []), id, signal]);
  if (r.status === 0) return true;
  const msg = runcError(r.stderr);
  if (/not running|does not exist|container not running|process already finished/.test(msg)) return false;
  throw new LaminaError('EINVAL', `runc kill ${signal} failed for ${id}: ${msg}`);
}

/** `runc delete --force ID`, ignoring a container runc no longer knows. */
export function runcDeleteForce(runcRoot: string, id: string): void {
  const r = runcSync(runcRoot, ['delete', '--force', id]);
  if (r.status !== 0 && !/does not exist/.test(r.stderr)) {
    throw new LaminaError('EINVAL', `runc delete failed for ${id}: ${runcError(r.stderr)}`);
  }
}

/** The host pids of the container's processes (`runc ps --format json`). */
export function runcPids(runcRoot: string, id: string): number[] {
  const r = runcSync(runcRoot, ['ps', '--format', 'json', id]);
  if (r.status !== 0) throw new LaminaError('EINVAL', `runc ps failed for ${id}: ${runcError(r.stderr)}`);
  return (JSON.parse(r.stdout || '[]') as number[] | null) ?? [];
}

/** runc's view of the container: its status ("running", "stopped", …) or undefined if unknown. */
export function runcStatus(runcRoot: string, id: string): { status: string; pid: number } | undefined {
  const r = runcSync(runcRoot, ['state', id]);
  if (r.status !== 0) return undefined;
  const j = JSON.parse(r.stdout) as { status: string; pid: number };
  return { status: j.status, pid: j.pid };
}
