// File access inside a container's root file system from the host, confined to it: the image
// decides what /etc/passwd or the working directory resolve to, so every lookup goes through
// openat2(RESOLVE_IN_ROOT), which makes absolute symlinks and ".." stay inside the rootfs (what
// moby does with symlink.FollowSymlinkInScope before touching container paths).
import fs from 'node:fs';
import * as sys from '../sys/index.js';

const O_PATH = 0o10000000;
const O_DIRECTORY = fs.constants.O_DIRECTORY;
const O_CLOEXEC = 0o2000000;

function relOf(p: string): string {
  return p.replace(/^\/+/, '') || '.';
}

/** Reads a file of the container (`/etc/passwd`), or undefined when it does not exist. */
export function readInRoot(rootfs: string, file: string): Buffer | undefined {
  const dirFd = fs.openSync(rootfs, O_PATH | O_DIRECTORY | O_CLOEXEC);
  try {
    let fd: number;
    try {
      fd = sys.openat2(dirFd, relOf(file), fs.constants.O_RDONLY | O_CLOEXEC, sys.RESOLVE_IN_ROOT | sys.RESOLVE_NO_MAGICLINKS);
    } catch (e) {
      const code = (e as sys.SysError).code;
      if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'ELOOP') return undefined;
      throw e;
    }
    try {
      return fs.readFileSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  } finally {
    fs.closeSync(dirFd);
  }
}

/**
 * mkdir -p of a container path (the working directory), each missing component created 0755
 * root-owned inside the directory the previous one resolved to, as moby's MkdirAllAndChownNew
 * does for WorkingDir. Throws ENOTDIR when a component exists and is not a directory.
 */
export function mkdirAllInRoot(rootfs: string, dir: string): void {
  const parts = relOf(dir).split('/').filter((p) => p && p !== '.');
  const rootFd = fs.openSync(rootfs, O_PATH | O_DIRECTORY | O_CLOEXEC);
  let fd = rootFd;
  try {
    for (const name of parts) {
      let next: number;
      try {
        next = sys.openat2(fd, name, O_PATH | O_DIRECTORY | O_CLOEXEC, sys.RESOLVE_IN_ROOT | sys.RESOLVE_NO_MAGICLINKS);
      } catch (e) {
        if ((e as sys.SysError).code !== 'ENOENT') throw e;
        // The fd pins the parent directory: /proc/self/fd/N/<name> creates right there.
        try {
          fs.mkdirSync(`/proc/self/fd/${fd}/${name}`, { mode: 0o755 });
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        }
        next = sys.openat2(fd, name, O_PATH | O_DIRECTORY | O_CLOEXEC, sys.RESOLVE_IN_ROOT | sys.RESOLVE_NO_MAGICLINKS);
      }
      if (fd !== rootFd) fs.closeSync(fd);
      fd = next;
    }
  } finally {
    if (fd !== rootFd) fs.closeSync(fd);
    fs.closeSync(rootFd);
  }
}
