// Runs one whole process and measures it: wall-clock time (process.hrtime around spawn..exit)
// and the peak resident set size of the process.
//
// Peak RSS and CPU times come from GNU time (`/usr/bin/time -f '%M %U %S'`, i.e. the kernel's
// rusage from wait4) when it is installed; both contenders of a comparison are wrapped the same way so its ~1 ms
// fork+exec cost is paid on both sides. ru_maxrss is the largest single process of the tree, not
// a sum, so a helper process lamina spawned would be counted only if it were larger.
// Without GNU time, Node children get a preload (a data: URL module) that writes
// process.resourceUsage().maxRSS at exit; other commands then report no RSS, and CPU times are
// not measured.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const GNU_TIME = '/usr/bin/time';

export interface RunResult {
  ms: number;
  /** Peak RSS in KiB, or null when it could not be measured. */
  maxRssKiB: number | null;
  /** User and system CPU time of the process (10 ms resolution), or null. */
  userMs: number | null;
  sysMs: number | null;
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  cwd?: string;
  /** Kill the process after this long (keeps the benchmark bounded). */
  timeoutMs?: number;
  /** A file the RSS probe may write (one per run is not needed; it is overwritten). */
  rssFile: string;
  /** Added to the environment. */
  env?: Record<string, string>;
}

let gnuTime: boolean | undefined;
export function hasGnuTime(): boolean {
  if (gnuTime === undefined) {
    const r = spawnSync(GNU_TIME, ['-f', '%M', 'true'], { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
    gnuTime = r.status === 0 && /^\d+\s*$/m.test(r.stderr);
  }
  return gnuTime;
}

/** How peak RSS is measured, for the report. */
export function rssMethod(): string {
  return hasGnuTime() ? 'GNU time %M (ru_maxrss)' : 'node process.resourceUsage().maxRSS preload (node only)';
}

const NODE_RSS_PRELOAD =
  'data:text/javascript,' +
  encodeURIComponent(
    "import{writeFileSync}from'node:fs';" +
      "process.on('exit',()=>{try{writeFileSync(process.env.BENCH_RSS_FILE,String(process.resourceUsage().maxRSS))}catch{}});",
  );

export function runTimed(cmd: string, args: readonly string[], opts: RunOptions): RunResult {
  fs.rmSync(opts.rssFile, { force: true });
  let file = cmd;
  let argv = [...args];
  const env = { ...process.env, ...opts.env };
  if (hasGnuTime()) {
    file = GNU_TIME;
    argv = ['-f', '%M %U %S', '-o', opts.rssFile, cmd, ...args];
  } else if (cmd === process.execPath) {
    argv = [`--import=${NODE_RSS_PRELOAD}`, ...args];
    env.BENCH_RSS_FILE = opts.rssFile;
  }
  const start = process.hrtime.bigint();
  const r = spawnSync(file, argv, {
    cwd: opts.cwd,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
    encoding: 'utf8',
    maxBuffer: 64 << 20,
    timeout: opts.timeoutMs,
    killSignal: 'SIGKILL',
  });
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  if (r.error && (r.error as NodeJS.ErrnoException).code !== 'ETIMEDOUT') throw r.error;
  return { ms, ...readUsage(opts.rssFile), status: r.status, signal: r.signal, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

/**
 * GNU time's line is "<maxrss KiB> <user s> <sys s>", preceded by "Command exited with non-zero
 * status N" on failure; the node preload writes only "<maxrss KiB>".
 */
function readUsage(file: string): Pick<RunResult, 'maxRssKiB' | 'userMs' | 'sysMs'> {
  const none = { maxRssKiB: null, userMs: null, sysMs: null };
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return none;
  }
  const m = /^(\d+)(?: ([\d.]+) ([\d.]+))?$/.exec(text.trim().split('\n').pop() ?? '');
  if (!m) return none;
  return {
    maxRssKiB: Number(m[1]),
    userMs: m[2] === undefined ? null : Number(m[2]) * 1000,
    sysMs: m[3] === undefined ? null : Number(m[3]) * 1000,
  };
}

/** Throws with the command's stderr when a run failed: a failed run is never a timing. */
export function assertOk(r: RunResult, what: string): void {
  if (r.status === 0) return;
  const why = r.signal ? `killed by ${r.signal}${r.signal === 'SIGKILL' ? ' (timeout?)' : ''}` : `exit status ${r.status}`;
  // Node prints the error message before its stack, so the head of stderr says what went wrong.
  const head = (r.stderr || r.stdout).trim().split('\n').slice(0, 12).join('\n');
  throw new Error(`${what} failed: ${why}\n${head}`);
}

/** Runs a helper command untimed, throwing on failure (fixture building, checks). */
export function run(cmd: string, args: readonly string[], opts: { cwd?: string; okStatus?: number[] } = {}): string {
  const r = spawnSync(cmd, args, { cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8', maxBuffer: 256 << 20 });
  if (r.error) throw r.error;
  if (!(opts.okStatus ?? [0]).includes(r.status ?? -1)) {
    throw new Error(`${path.basename(cmd)} ${args.join(' ')}: exit ${r.status ?? r.signal}\n${r.stderr.trim()}`);
  }
  return r.stdout;
}
