// Copy-up and the other multi-step writes into the upper dir, done the way overlayfs does them
// (fs/overlayfs/copy_up.c, dir.c): the new object is built under a temporary name in the work
// dir, complete with its metadata, and then renamed into place, so the upper dir never shows a
// half-made entry.
import fs from 'node:fs';
import path from 'node:path';
import { lutimesNs, mknod, renameat2, RENAME_EXCHANGE, S_IFCHR } from '../sys/index.js';
import { openNoatime } from './dirents.js';
import { copyXattrs, type OverlayXattrNames } from './overlay-xattrs.js';

/** [seconds, nanoseconds] of a nanosecond timestamp (floor division, so pre-1970 times work). */
export function nsPair(ns: bigint): [number, number] {
  let s = ns / 1_000_000_000n;
  let n = ns % 1_000_000_000n;
  if (n < 0n) {
    n += 1_000_000_000n;
    s -= 1n;
  }
  return [Number(s), Number(n)];
}

export function setTimesFrom(file: string, st: fs.BigIntStats): void {
  lutimesNs(file, nsPair(st.atimeNs), nsPair(st.mtimeNs));
}

const COPY_CHUNK = 1 << 20;
let copyBuf: Buffer | undefined;

/** The work dir and its temporary names (the kernel's `<workdir>/work/#<n>`). */
export class WorkDir {
  private seq = 0;
  constructor(readonly dir: string, private readonly x: OverlayXattrNames) {}

  tmpName(): string {
    return path.join(this.dir, `#lamina-${process.pid.toString(16)}-${(this.seq++).toString(16)}`);
  }

  /**
   * Copies the lower object `src` (whose lstat is `st`) to `dest` in the upper dir: data
   * (fsynced, as the kernel does), owner, mode including setuid/setgid, every non-overlay
   * xattr, and atime/mtime to the nanosecond. Ownership is set before the mode and the xattrs
   * because chown(2) clears setuid bits and security.capability. The destination parent's
   * atime/mtime are put back afterwards: copy-up is invisible in the parent's times.
   */
  copyUp(src: string, dest: string, st: fs.BigIntStats, symlinkTarget?: string): void {
    const parent = path.dirname(dest);
    const pst = fs.lstatSync(parent, { bigint: true });
    const tmp = this.tmpName();
    try {
      this.makeCopy(src, tmp, st, symlinkTarget);
      fs.renameSync(tmp, dest);
    } catch (e) {
      fs.rmSync(tmp, { recursive: true, force: true });
      throw e;
    }
    setTimesFrom(parent, pst);
  }

  private makeCopy(src: string, tmp: string, st: fs.BigIntStats, symlinkTarget?: string): void {
    const mode = Number(st.mode);
    const perm = mode & 0o7777;
    const uid = Number(st.uid);
    const gid = Number(st.gid);
    switch (mode & fs.constants.S_IFMT) {
      case fs.constants.S_IFREG: {
        const out = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
        try {
          copyData(src, out);
          fs.fsyncSync(out);
          fs.fchownSync(out, uid, gid);
          fs.fchmodSync(out, perm);
        } finally {
          fs.closeSync(out);
        }
        break;
      }
      case fs.constants.S_IFDIR:
        fs.mkdirSync(tmp, 0o700);
        fs.lchownSync(tmp, uid, gid);
        fs.chmodSync(tmp, perm);
        break;
      case fs.constants.S_IFLNK:
        fs.symlinkSync(symlinkTarget ?? fs.readlinkSync(src), tmp);
        fs.lchownSync(tmp, uid, gid);
        break;
      default: {
        mknod(tmp, (mode & fs.constants.S_IFMT) | 0o600, major(st.rdev), minor(st.rdev));
        fs.lchownSync(tmp, uid, gid);
        fs.chmodSync(tmp, perm);
      }
    }
    copyXattrs(src, tmp, this.x);
    setTimesFrom(tmp, st);
  }

  /** A whiteout (char 0:0, mode 0) under a temporary name. */
  makeWhiteout(): string {
    const tmp = this.tmpName();
    mknod(tmp, S_IFCHR, 0, 0);
    return tmp;
  }

  /** Replaces the upper entry `target` with a whiteout in one step. */
  whiteoutOver(target: string, isDir: boolean): void {
    const wh = this.makeWhiteout();
    try {
      if (isDir) {
        renameat2(wh, target, RENAME_EXCHANGE);
        fs.rmdirSync(wh); // the old directory, now under the temporary name
      } else {
        fs.renameSync(wh, target);
      }
    } catch (e) {
      fs.rmSync(wh, { force: true });
      throw e;
    }
  }
}

function copyData(src: string, out: number): void {
  const inp = openNoatime(src, fs.constants.O_RDONLY, true);
  try {
    const buf = (copyBuf ??= Buffer.allocUnsafe(COPY_CHUNK));
    for (;;) {
      const n = fs.readSync(inp, buf, 0, buf.length, null);
      if (n === 0) break;
      let off = 0;
      while (off < n) off += fs.writeSync(out, buf, off, n - off);
    }
  } finally {
    fs.closeSync(inp);
  }
}

export function major(dev: bigint): number {
  return Number(((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn));
}

export function minor(dev: bigint): number {
  return Number((dev & 0xffn) | ((dev >> 12n) & 0xffffff00n));
}
