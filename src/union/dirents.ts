// Raw directory reading for the union engine: getdents64 on a directory opened by us, so the
// names come in the file system's own order (the kernel's merge order is defined in terms of
// it) and lower directories can be opened with O_NOATIME, as overlayfs opens every real
// directory it reads (reading through the engine must not touch a lower layer).
import fs from 'node:fs';
import { getdents64 } from '../sys/index.js';

export const DT_UNKNOWN = 0;
export const DT_FIFO = 1;
export const DT_CHR = 2;
export const DT_DIR = 4;
export const DT_BLK = 6;
export const DT_REG = 8;
export const DT_LNK = 10;
export const DT_SOCK = 12;

/** One directory's entries, '.' and '..' left out, in getdents order. */
export interface RawDir {
  names: string[];
  types: number[];
}

const O_DIR = fs.constants.O_RDONLY | fs.constants.O_DIRECTORY;
const O_NOATIME = fs.constants.O_NOATIME ?? 0;
let buf = Buffer.allocUnsafe(64 * 1024);

/**
 * Opens a file or directory with O_NOATIME when asked. O_NOATIME needs ownership (or
 * CAP_FOWNER); like overlayfs, fall back to a plain open when it is refused.
 */
export function openNoatime(file: string, flags: number, noatime: boolean, mode?: number): number {
  if (noatime && O_NOATIME) {
    try {
      return fs.openSync(file, flags | O_NOATIME, mode);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EPERM') throw e;
    }
  }
  return fs.openSync(file, flags, mode);
}

/**
 * File systems whose getdents fills the buffer until it is full or the directory has ended
 * (ext4, tmpfs, xfs, btrfs): on them a short read already means the end, which saves a call
 * per directory. Others (FUSE answers a page at a time, NFS) are read until getdents returns 0.
 */
const FILLS_BUFFER = new Set([0xef53, 0x01021994, 0x58465342, 0x9123683e]);
const MAX_DIRENT = 24 + 256; // linux_dirent64 header + NAME_MAX + NUL, 8-aligned

export function fillsBuffer(dir: string): boolean {
  try {
    return FILLS_BUFFER.has(fs.statfsSync(dir).type);
  } catch {
    return false;
  }
}

export function readRawDir(dir: string, noatime: boolean, shortReadIsEnd = false): RawDir {
  for (;;) {
    const fd = openNoatime(dir, O_DIR, noatime);
    try {
      return readAll(fd, shortReadIsEnd);
    } catch (e) {
      // A directory entry longer than our buffer makes getdents64 fail with EINVAL.
      if ((e as NodeJS.ErrnoException).code !== 'EINVAL' || buf.length >= 1 << 20) throw e;
      buf = Buffer.allocUnsafe(buf.length * 4);
    } finally {
      fs.closeSync(fd);
    }
  }
}

function readAll(fd: number, shortReadIsEnd: boolean): RawDir {
  const names: string[] = [];
  const types: number[] = [];
  for (let end = false; !end;) {
    const n = getdents64(fd, buf);
    if (n === 0) break;
    end = shortReadIsEnd && n + MAX_DIRENT <= buf.length;
    let off = 0;
    while (off < n) {
      const reclen = buf.readUInt16LE(off + 16);
      const type = buf[off + 18];
      const start = off + 19;
      let stop = buf.indexOf(0, start);
      if (stop < 0 || stop > off + reclen) stop = off + reclen;
      off += reclen;
      // Skip '.' and '..'.
      if (buf[start] === 0x2e && (stop === start + 1 || (stop === start + 2 && buf[start + 1] === 0x2e))) continue;
      names.push(buf.toString('utf8', start, stop));
      types.push(type);
    }
  }
  return { names, types };
}

/** The DT_* type of a mode (for entries found by lstat instead of readdir). */
export function dtypeOfMode(mode: number): number {
  switch (mode & fs.constants.S_IFMT) {
    case fs.constants.S_IFREG: return DT_REG;
    case fs.constants.S_IFDIR: return DT_DIR;
    case fs.constants.S_IFLNK: return DT_LNK;
    case fs.constants.S_IFCHR: return DT_CHR;
    case fs.constants.S_IFBLK: return DT_BLK;
    case fs.constants.S_IFIFO: return DT_FIFO;
    case fs.constants.S_IFSOCK: return DT_SOCK;
    default: return DT_UNKNOWN;
  }
}
