// Mount reference counts that hold across lamina processes: moby keeps its counts in dockerd's
// memory, lamina has no daemon, so each mounted layer has a tiny count file in a run directory
// (tmpfs /run as root, so a reboot clears the counts together with the mounts), read and written
// only under an flock. Nothing is added to the layer directories: they stay as Docker has them.
//
//   /run/lamina/mounts/<fnv1a64(home)>/<layer id>   "<count> <backend>\n"
//
// The count is a claim, not the truth: callers reconcile it with /proc/self/mountinfo.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as sys from '../sys/index.js';

/** Where count files live; LAMINA_RUN_DIR overrides (tests, unusual hosts). */
export function mountRunDir(): string {
  if (process.env.LAMINA_RUN_DIR) return path.join(process.env.LAMINA_RUN_DIR, 'mounts');
  const uid = process.getuid?.() ?? 0;
  if (uid === 0) return '/run/lamina/mounts';
  if (process.env.XDG_RUNTIME_DIR) return path.join(process.env.XDG_RUNTIME_DIR, 'lamina', 'mounts');
  return path.join(os.tmpdir(), `lamina-${uid}`, 'mounts');
}

/** The count directory of one overlay2 home (one lamina root). */
export function countDir(home: string): string {
  return path.join(mountRunDir(), fnv1a64(path.resolve(home)));
}

/**
 * 64-bit FNV-1a as 16 hex digits: enough to tell a host's roots apart, and unlike node:crypto
 * it costs nothing to load (mount/umount are whole CLI commands, start-up time counts).
 */
function fnv1a64(s: string): string {
  let h = 0xcbf29ce484222325n;
  for (const b of Buffer.from(s)) h = ((h ^ BigInt(b)) * 0x100000001b3n) & 0xffffffffffffffffn;
  return h.toString(16).padStart(16, '0');
}

export interface CountRecord {
  count: number;
  /** The backend that made the mount the count refers to. */
  backend?: string;
}

/** A locked count file. Release it (always) with release(). */
export class CountLock {
  private readonly fd: number;
  readonly file: string;

  constructor(fd: number, file: string) {
    this.fd = fd;
    this.file = file;
  }

  read(): CountRecord {
    const buf = Buffer.alloc(64);
    const n = fs.readSync(this.fd, buf, 0, buf.length, 0);
    const m = /^(\d+)(?: (\S+))?\n?$/.exec(buf.toString('latin1', 0, n));
    return m ? { count: Number(m[1]), backend: m[2] } : { count: 0 };
  }

  write(rec: CountRecord): void {
    const data = Buffer.from(`${rec.count}${rec.backend ? ' ' + rec.backend : ''}\n`, 'latin1');
    fs.ftruncateSync(this.fd, 0);
    fs.writeSync(this.fd, data, 0, data.length, 0);
  }

  /**
   * Deletes the count file (while still holding the lock; see openLocked for why that is safe).
   * The per-root directory stays: removing and re-creating it would cost every mount cycle.
   */
  remove(): void {
    fs.rmSync(this.file, { force: true });
  }

  release(): void {
    fs.closeSync(this.fd); // closing the only fd drops the flock
  }
}

/**
 * Opens and locks the count file of layer `id` (exclusive for updates, shared for queries).
 * Returns undefined when `create` is false and there is no count file.
 *
 * A process may lock a file another process has just deleted (it opened it before the unlink);
 * so after the lock is granted the fd must still be the file at that path, else retry.
 */
export function openLocked(home: string, id: string, opts: { create: boolean; exclusive: boolean }): CountLock | undefined {
  const dir = countDir(home);
  const file = path.join(dir, id);
  // libuv opens every file O_CLOEXEC, so a spawned fuse-overlayfs does not inherit the lock.
  const flags = fs.constants.O_RDWR | (opts.create ? fs.constants.O_CREAT : 0);
  for (;;) {
    let fd: number;
    try {
      fd = fs.openSync(file, flags, 0o600);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      if (!opts.create) return undefined;
      fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
      continue;
    }
    let locked = false;
    try {
      sys.flock(fd, opts.exclusive ? sys.LOCK_EX : sys.LOCK_SH);
      const held = fs.fstatSync(fd);
      const now = fs.statSync(file, { throwIfNoEntry: false });
      if (now && now.ino === held.ino && now.dev === held.dev) {
        locked = true;
        return new CountLock(fd, file);
      }
      if (!now && !opts.create) return undefined;
    } finally {
      if (!locked) fs.closeSync(fd);
    }
  }
}
