// The container's `-init` layer: the files dockerd's initlayer.Setup creates before the first
// start, so /etc/hosts, /etc/hostname, /etc/resolv.conf and /dev/console exist to be
// bind-mounted over. Every regular file is empty and mode 0755 (spec §3.3). Like Docker, an
// entry is only created when the image does not already provide the path.
import fs from 'node:fs';
import path from 'node:path';
import * as sys from '../sys/index.js';

/** moby daemon/initlayer/setup_unix.go, in a fixed order (moby iterates a map). */
const INIT_ENTRIES: Array<[string, 'dir' | 'file' | string]> = [
  ['.dockerenv', 'file'],
  ['dev/console', 'file'],
  ['dev/pts', 'dir'],
  ['dev/shm', 'dir'],
  ['etc/hostname', 'file'],
  ['etc/hosts', 'file'],
  ['etc/mtab', '/proc/mounts'],
  ['etc/resolv.conf', 'file'],
  ['proc', 'dir'],
  ['sys', 'dir'],
];

const isWhiteout = (st: fs.Stats) => st.isCharacterDevice() && st.rdev === 0;
const isOpaque = (p: string) => sys.lgetxattr(p, 'trusted.overlay.opaque')?.toString() === 'y';

/**
 * What the merged view of `lowers` (diff dirs, nearest first) has at `rel`, by overlayfs'
 * lookup rules: the nearest layer with the name decides; a whiteout deletes it; a non-directory
 * or an opaque directory hides everything below.
 */
export function lookupLower(lowers: string[], rel: string): fs.Stats | undefined {
  const parts = rel.split('/');
  // Walk component by component; `layers` are the layers still visible at that depth.
  let layers = lowers;
  let found: fs.Stats | undefined;
  for (let i = 0; i < parts.length; i++) {
    const prefix = parts.slice(0, i + 1).join('/');
    const next: string[] = [];
    found = undefined;
    for (const layer of layers) {
      const st = fs.lstatSync(path.join(layer, prefix), { throwIfNoEntry: false });
      if (!st) continue;
      if (isWhiteout(st)) break;
      if (!found) found = st;
      if (!st.isDirectory()) { if (next.length === 0) next.push(layer); break; }
      next.push(layer);
      if (isOpaque(path.join(layer, prefix))) break;
    }
    if (!found) return undefined;
    if (i < parts.length - 1 && !found.isDirectory()) return undefined;
    layers = next;
  }
  return found;
}

/**
 * Fills `initDiff` (the init layer's diff/) for an image whose layers are `lowers`. Parent
 * directories the image has are created with the image's mode and owner, as a copy-up through
 * the merged view would give them.
 */
export function setupInitLayer(initDiff: string, lowers: string[]): void {
  for (const [rel, kind] of INIT_ENTRIES) {
    if (lookupLower(lowers, rel)) continue;
    const parts = rel.split('/');
    for (let i = 1; i < parts.length; i++) {
      const dirRel = parts.slice(0, i).join('/');
      const dir = path.join(initDiff, dirRel);
      if (fs.existsSync(dir)) continue;
      const below = lookupLower(lowers, dirRel);
      fs.mkdirSync(dir);
      fs.chmodSync(dir, below?.isDirectory() ? below.mode & 0o7777 : 0o755);
      if (below?.isDirectory()) fs.lchownSync(dir, below.uid, below.gid);
    }
    const p = path.join(initDiff, rel);
    if (kind === 'dir') {
      fs.mkdirSync(p);
      fs.chmodSync(p, 0o755);
    } else if (kind === 'file') {
      fs.closeSync(fs.openSync(p, 'wx', 0o755));
      fs.chmodSync(p, 0o755);
    } else {
      fs.symlinkSync(kind, p);
    }
  }
}
