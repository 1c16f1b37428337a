// `lamina top`: dockerd's ContainerTop — the host's `ps` (default `-ef`), keeping the lines
// whose PID is one of the container's processes (from runc). Threads shown with `m` follow
// their process's line. The last column takes the rest of each line, so commands keep spaces.
import { spawnSync } from 'node:child_process';
import type { Store } from '../store.js';
import { LaminaError } from '../errors.js';
import { runtimePaths } from './paths.js';
import { runcPids } from './runc.js';
import { isRunning } from './control.js';

export interface ProcessList { titles: string[]; processes: string[][] }

/** moby's parsePSOutput. */
export function parsePsOutput(output: string, pids: readonly number[]): ProcessList {
  const lines = output.split('\n');
  const titles = lines[0].trim().split(/\s+/);
  const pidIndex = titles.indexOf('PID');
  if (pidIndex < 0) throw new LaminaError('EINVAL', "Couldn't find PID field in ps output");
  const want = new Set(pids);
  const processes: string[][] = [];
  let previousMatched = false;
  const row = (fields: string[]) => [...fields.slice(0, titles.length - 1), fields.slice(titles.length - 1).join(' ')];
  for (const line of lines.slice(1)) {
    if (!line) continue;
    const fields = line.trim().split(/\s+/);
    if (fields[pidIndex] === '-') {
      if (previousMatched) processes.push(row(fields));
      continue;
    }
    const pid = Number(fields[pidIndex]);
    if (!Number.isInteger(pid)) throw new LaminaError('EINVAL', `Unexpected pid '${fields[pidIndex]}' in ps output`);
    previousMatched = want.has(pid);
    if (previousMatched) processes.push(row(fields));
  }
  return { titles, processes };
}

export async function topContainer(store: Store, id: string, psArgs: string[] = ['-ef']): Promise<ProcessList> {
  if (!(await isRunning(store, id))) throw new LaminaError('ECONFLICT', `Container ${id} is not running`);
  const pids = runcPids(runtimePaths(store.root, id).runcRoot, id);
  const args = psArgs.length ? psArgs : ['-ef'];
  const r = spawnSync('ps', args, { encoding: 'utf8' });
  if (r.error || r.status !== 0) throw new LaminaError('EINVAL', `Error running ps: ${r.error?.message ?? r.stderr.trim()}`);
  return parsePsOutput(r.stdout, pids);
}
