// Small file helpers shared by the modules that own files on disk.
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';

/**
 * Writes a file by writing a sibling temp file and renaming it over the target, so readers
 * (and a crash) see either the old or the new content, never a torn one. The data is fsynced
 * before the rename so the rename never publishes an empty file after a power loss.
 */
export function writeFileAtomic(file: string, data: string | Buffer, mode: number): void {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${randomBytes(6).toString('hex')}.tmp`);
  const fd = fs.openSync(tmp, 'wx', mode);
  try {
    fs.writeSync(fd, typeof data === 'string' ? Buffer.from(data) : data);
    fs.fchmodSync(fd, mode);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  try {
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
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
