// Syscall profile of one whole process with `strace -c -f` (counts and system time per syscall,
// threads included), to see what bounds an extraction: the benchmark compares lamina with GNU tar.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';

export interface SyscallRow {
  syscall: string;
  seconds: number;
  calls: number;
  errors: number;
}

export interface SyscallProfile {
  wallMs: number;
  totalSeconds: number;
  totalCalls: number;
  rows: SyscallRow[];
}

export function hasStrace(): boolean {
  return spawnSync('strace', ['-V'], { stdio: 'ignore' }).status === 0;
}

export function straceSummary(cmd: string, args: readonly string[], outFile: string): SyscallProfile {
  const start = process.hrtime.bigint();
  const r = spawnSync('strace', ['-c', '-f', '-o', outFile, cmd, ...args], { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
  const wallMs = Number(process.hrtime.bigint() - start) / 1e6;
  if (r.status !== 0) throw new Error(`strace ${cmd} ${args.join(' ')}: exit ${r.status ?? r.signal}\n${r.stderr.trim()}`);
  return { wallMs, ...parseStraceSummary(fs.readFileSync(outFile, 'utf8')) };
}

/** Parses strace's "% time seconds usecs/call calls errors syscall" table. */
export function parseStraceSummary(text: string): Omit<SyscallProfile, 'wallMs'> {
  const rows: SyscallRow[] = [];
  let totalSeconds = 0;
  let totalCalls = 0;
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length < 5 || !/^[\d.]+$/.test(f[0])) continue;
    // Rows without errors have 5 fields, with errors 6; the syscall name is always last.
    const name = f[f.length - 1];
    const seconds = Number(f[1]);
    const calls = Number(f[3]);
    const errors = f.length >= 6 ? Number(f[4]) : 0;
    if (name === 'total') {
      totalSeconds = seconds;
      totalCalls = calls;
    } else {
      rows.push({ syscall: name, seconds, calls, errors });
    }
  }
  return { totalSeconds, totalCalls, rows };
}
