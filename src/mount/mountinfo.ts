// /proc/self/mountinfo, the kernel's own account of what is mounted where. The mount backends
// trust it over any bookkeeping of their own: a reference count can outlive its mount (reboot,
// crash, someone's `umount`), and a legacy mount(2) can succeed with options other than the
// ones passed (the 4095-byte truncation), so both are checked against it.
import fs from 'node:fs';
import path from 'node:path';

export interface MountEntry {
  /** Mount point, unescaped. */
  mountPoint: string;
  /** e.g. "overlay", "fuse.fuse-overlayfs". */
  fsType: string;
  source: string;
  /** Per-mount options, e.g. "rw,relatime". */
  mountOptions: string;
  /** Super-block options, still escaped as the kernel printed them. */
  superOptions: string;
}

const octal = (c: string) => '\\' + c.charCodeAt(0).toString(8).padStart(3, '0');

/** A mount point as mountinfo prints it: space, tab, newline and backslash as `\ooo` octal. */
export function escapeMountPoint(s: string): string {
  return s.replace(/[ \t\n\\]/g, octal);
}

/** A path inside an option value as mountinfo prints it: a comma is escaped too. */
export function escapeOptionPath(s: string): string {
  return s.replace(/[ \t\n\\,]/g, octal);
}

function unescape(s: string): string {
  return s.indexOf('\\') < 0 ? s : s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/**
 * The topmost mount at `mountPoint` (an absolute, normalized path), or undefined. When several
 * mounts are stacked on one point the last line is the visible one.
 */
export function findMount(mountPoint: string): MountEntry | undefined {
  const text = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  // Field 5 is the mount point; search for it as a whole field before splitting any line.
  const needle = ' ' + escapeMountPoint(mountPoint) + ' ';
  let found: string | undefined;
  for (let at = text.indexOf(needle); at >= 0; at = text.indexOf(needle, at + 1)) {
    const start = text.lastIndexOf('\n', at) + 1;
    let end = text.indexOf('\n', at);
    if (end < 0) end = text.length;
    const line = text.slice(start, end);
    if (line.split(' ')[4] === needle.slice(1, -1)) found = line;
  }
  if (found === undefined) return undefined;
  const fields = found.split(' ');
  const sep = fields.indexOf('-', 6);
  return {
    mountPoint: unescape(fields[4]),
    mountOptions: fields[5],
    fsType: fields[sep + 1],
    source: unescape(fields[sep + 2]),
    superOptions: fields.slice(sep + 3).join(' '),
  };
}

const OVERLAYFS_SUPER_MAGIC = 0x794c7630;
const FUSE_SUPER_MAGIC = 0x65735546;

/** What is mounted at a path, from stat alone (no mountinfo read: this runs on every mount/unmount). */
export type MountState = 'none' | 'overlay' | 'fuse' | 'dead-fuse' | 'other';

/**
 * A path is a mount point when its device differs from its parent's. A FUSE mount whose daemon
 * died answers every access with ENOTCONN.
 */
export function mountState(mountPoint: string): MountState {
  let dev: number;
  try {
    dev = fs.statSync(mountPoint).dev;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return 'none';
    if (code === 'ENOTCONN') return 'dead-fuse';
    throw e;
  }
  if (dev === fs.statSync(path.dirname(mountPoint)).dev) return 'none';
  const type = fs.statfsSync(mountPoint).type;
  return type === OVERLAYFS_SUPER_MAGIC ? 'overlay' : type === FUSE_SUPER_MAGIC ? 'fuse' : 'other';
}
