// Small file helpers shared by the modules that own files on disk.
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import * as sys from './sys/index.js';

/**
 * Writes a file by writing a sibling temp file and renaming it over the target, so readers
 * (and a crash) see either the old or the new content, never a torn one. The data is fsynced
 * before the rename so the rename never publishes an empty file after a power loss, and the
 * directory after it so the new content survives one.
 */
/**
 * LAMINA_NO_SYNC=1 skips every fsync/syncfs: for benchmarks (to measure what durability costs)
 * and throwaway roots. A crash of the process is still safe; a power loss may then leave
 * published layers with empty files.
 */
const NO_SYNC = process.env.LAMINA_NO_SYNC === '1';

export function writeFileAtomic(file: string, data: string | Buffer, mode: number): void {
  // The pid in the name lets recovery tell a dead writer's leftover from a live writer's file.
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}-${randomBytes(6).toString('hex')}.tmp`);
  const fd = fs.openSync(tmp, 'wx', mode);
  try {
    fs.writeSync(fd, typeof data === 'string' ? Buffer.from(data) : data);
    fs.fchmodSync(fd, mode);
    if (!NO_SYNC) fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  faultPoint();
  try {
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  fsyncDir(path.dirname(file));
}

/** Makes the entries created, renamed or removed in `dir` durable (fsync of the directory). */
export function fsyncDir(dir: string): void {
  if (NO_SYNC) return;
  const fd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Writes out everything cached for the file systems holding `dirs` (syncfs, once per file
 * system). Called before the rename that publishes a layer or a container: one syncfs flushes
 * the thousands of files an extraction wrote far faster than an fsync per file would, and after
 * a power loss a published layer must not point at empty files.
 */
export function syncFileSystems(...dirs: string[]): void {
  if (NO_SYNC) return;
  const seen = new Set<number>();
  for (const dir of dirs) {
    const fd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
    try {
      const dev = fs.fstatSync(fd).dev;
      if (seen.has(dev)) continue;
      seen.add(dev);
      sys.syncfs(fd);
    } finally {
      fs.closeSync(fd);
    }
  }
}

// Fault injection for the crash tests: LAMINA_FAULT_STEP=N SIGKILLs the process at the N-th
// store-changing step (faultPoint() calls sit between the steps of every change to the store).
// LAMINA_FAULT_COUNT=1 prints how many steps a command took, on exit, to stderr.
const FAULT_STEP = Number(process.env.LAMINA_FAULT_STEP) || 0;
const FAULT_COUNT = !!process.env.LAMINA_FAULT_COUNT;
let faultSteps = 0;
if (FAULT_COUNT) process.on('exit', () => process.stderr.write(`lamina-fault-steps ${faultSteps}\n`));

/** A point where a crash must leave the store recoverable; free unless the fault hook is on. */
export function faultPoint(): void {
  if (FAULT_STEP === 0 && !FAULT_COUNT) return;
  if (++faultSteps === FAULT_STEP) process.kill(process.pid, 'SIGKILL');
}

/** Removes writeFileAtomic temp files in `dir` whose writer is dead; returns their names. */
export function removeDeadTempFiles(dir: string): string[] {
  const removed: string[] = [];
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return removed;
  }
  for (const n of names) {
    const m = /^\..+\.(\d+)-[0-9a-f]{12}\.tmp$/.exec(n);
    if (!m || processAlive(Number(m[1]))) continue;
    fs.rmSync(path.join(dir, n), { force: true });
    removed.push(n);
  }
  return removed;
}

function processAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Reads a small text file, or undefined when it does not exist. */
export function readOptional(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

/** Creates a directory with an exact mode (mkdir's mode is filtered by the umask). */
export function mkdirMode(dir: string, mode: number): void {
  fs.mkdirSync(dir, { mode });
  fs.chmodSync(dir, mode);
}
