// Locks that let several lamina processes share one root.
//
// The root lock (<root>/lamina.lock, outside tmp/ which Store.open wipes) serialises metadata
// changes: publishing a layer, writing imagedb and repositories.json, creating and removing
// containers, rmi's decisions, and the recovery Store.open runs. It is held for short sections
// only, never while a layer is downloaded or extracted.
//
// Work in progress outside the root lock (a layer being extracted into a staging dir, a load's
// scratch dir) is marked by an flock on the directory itself: recovery and fsck skip a dir that
// a live process holds, and the kernel drops the flock when that process dies, even by SIGKILL.
import fs from 'node:fs';
import path from 'node:path';
import * as sys from './sys/index.js';

const LOCK_FILE = 'lamina.lock';

// For the concurrency test (test/crash/concurrent.test.ts): LAMINA_LOCK_JITTER_MS=n sleeps a
// random 0..n ms before each root-lock acquisition and after each release, widening the gaps
// between locked sections where a check made outside the lock can go stale.
const JITTER_MS = Number(process.env.LAMINA_LOCK_JITTER_MS) || 0;
const jitterCell = JITTER_MS ? new Int32Array(new SharedArrayBuffer(4)) : undefined;
function jitter(): void {
  if (jitterCell) Atomics.wait(jitterCell, 0, 0, Math.random() * JITTER_MS);
}

function wouldBlock(e: unknown): boolean {
  const code = (e as { code?: string }).code;
  return code === 'EWOULDBLOCK' || code === 'EAGAIN';
}

export class RootLock {
  readonly file: string;
  private fd = -1;
  private depth = 0;
  private warned = false;

  constructor(root: string) {
    this.file = path.join(root, LOCK_FILE);
  }

  /**
   * Takes the lock (re-entrant within the process). A process that has to wait says so once on
   * stderr, so a user knows why the command pauses.
   */
  acquire(): void {
    if (this.depth++ > 0) return;
    jitter();
    try {
      if (this.fd < 0) this.fd = fs.openSync(this.file, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600);
      try {
        sys.flock(this.fd, sys.LOCK_EX | sys.LOCK_NB);
      } catch (e) {
        if (!wouldBlock(e)) throw e;
        if (!this.warned) {
          this.warned = true;
          process.stderr.write(`waiting for another lamina process holding ${this.file}…\n`);
        }
        sys.flock(this.fd, sys.LOCK_EX);
      }
    } catch (e) {
      this.depth--;
      throw e;
    }
  }

  release(): void {
    if (this.depth === 0) return;
    if (--this.depth > 0) return;
    sys.flock(this.fd, sys.LOCK_UN);
    jitter();
  }

  /** Runs a synchronous section under the lock. */
  hold<T>(fn: () => T): T {
    this.acquire();
    try {
      return fn();
    } finally {
      this.release();
    }
  }
}

/**
 * Marks a directory as in use by this process until the returned release() (or process exit):
 * an exclusive flock on an fd of the directory. The lock follows the directory through renames.
 */
export function lockDir(dir: string): () => void {
  const fd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  try {
    sys.flock(fd, sys.LOCK_EX | sys.LOCK_NB);
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
  let open = true;
  return () => {
    if (open) fs.closeSync(fd);
    open = false;
  };
}

/** Whether a live process (this one included) holds lockDir() on `dir`. */
export function isDirLocked(dir: string): boolean {
  let fd: number;
  try {
    fd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  } catch {
    return false; // gone, or not a directory: nobody works in it
  }
  try {
    sys.flock(fd, sys.LOCK_SH | sys.LOCK_NB);
    return false;
  } catch (e) {
    if (wouldBlock(e)) return true;
    throw e;
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Takes an exclusive lock on `file` (created if needed), polling so the event loop keeps running
 * (a blocking flock would stall the process's other work), and telling `onWait` once when
 * another process holds it. Released by unlinking the file while still holding it, so nothing
 * is left behind; a waiter that then locks the unlinked file notices (its inode is no longer the
 * path's) and tries again. `ensureDir` is called before each attempt (the directory may be
 * removed while nobody holds a lock in it).
 */
export async function lockFile(file: string, opts: { signal?: AbortSignal; onWait?: () => void; ensureDir?: () => void } = {}): Promise<() => void> {
  let told = false;
  for (;;) {
    if (opts.signal?.aborted) throw opts.signal.reason;
    opts.ensureDir?.();
    let fd: number;
    try {
      fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue; // its directory went meanwhile
      throw e;
    }
    try {
      sys.flock(fd, sys.LOCK_EX | sys.LOCK_NB);
    } catch (e) {
      fs.closeSync(fd);
      if (!wouldBlock(e)) throw e;
      if (!told) opts.onWait?.();
      told = true;
      await new Promise((r) => setTimeout(r, 50));
      continue;
    }
    if (fs.statSync(file, { throwIfNoEntry: false })?.ino !== fs.fstatSync(fd).ino) {
      fs.closeSync(fd);
      continue;
    }
    return () => {
      fs.rmSync(file, { force: true });
      fs.closeSync(fd);
    };
  }
}
