// Reads ../shared/fixtures/docker/expected.json (Docker's own answers) and compares a layer's
// diff/ directory with the entries Docker recorded for that layer.
import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import * as sys from '../../src/sys/index.js';

export const FIXTURES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../shared/fixtures/docker');

export interface ExpectedEntry {
  path: string; type: string; mode: string; uid: number; gid: number; mtime: number;
  size?: number; sha256?: string; linkname?: string; target?: string;
  devmajor?: number; devminor?: number; xattrsHex?: Record<string, string>;
}
export interface ExpectedLayer { index: number; diffID: string; chainID: string; dockerSizeFormula: number; layerTarBytes: number; entries: ExpectedEntry[] }
export interface ExpectedImage { source: string; imageID: string; RepoTags: string[]; diffIDs: string[]; chainIDs: string[]; saveTarball: string; layers: ExpectedLayer[]; dockerReported: { Size: number } }

export function expectedImages(): ExpectedImage[] {
  return JSON.parse(fs.readFileSync(path.join(FIXTURES, 'expected.json'), 'utf8')).images;
}

export function fixtureSave(name: 'refbase' | 'refapp'): string {
  return path.join(FIXTURES, `${name}_1.docker-save.tar.gz`);
}

/**
 * Lists the differences between `diffDir` and Docker's entries for the layer (empty when they
 * agree): every expected path present with its type, mode, owner, size, content hash, link
 * target, device numbers, xattrs and mtime; whiteouts as char 0:0 mode 0; opaque dirs with
 * trusted.overlay.opaque=y; hard links sharing an inode; and nothing else on disk.
 */
export function compareDiffDir(diffDir: string, layer: ExpectedLayer): string[] {
  const problems: string[] = [];
  const expectedPaths = new Set<string>();
  for (const e of layer.entries) {
    // Docker never applies the root entry ("./") to diff/ itself: moby's Unpack skips it.
    if (e.path === '.') continue;
    const rel = e.type === 'whiteout' || e.type === 'opaque' ? e.target! : e.path;
    if (e.type !== 'opaque') expectedPaths.add(rel);
    const p = rel === '.' ? diffDir : path.join(diffDir, rel);
    let st: fs.Stats;
    try {
      st = fs.lstatSync(p);
    } catch {
      problems.push(`${rel}: missing`);
      continue;
    }
    const perm = (st.mode & 0o7777).toString(8).padStart(4, '0');
    const want = (cond: boolean, what: string) => { if (!cond) problems.push(`${rel}: ${what}`); };
    switch (e.type) {
      case 'whiteout':
        want(st.isCharacterDevice() && st.rdev === 0, `whiteout should be char 0:0, is mode ${st.mode.toString(8)} rdev ${st.rdev}`);
        want((st.mode & 0o7777) === 0, `whiteout mode should be 0000, is ${perm}`);
        want(st.uid === e.uid && st.gid === e.gid, `whiteout owner ${st.uid}:${st.gid}`);
        continue;
      case 'opaque':
        want(st.isDirectory(), 'opaque target is not a directory');
        want(sys.lgetxattr(p, 'trusted.overlay.opaque')?.toString() === 'y', 'missing trusted.overlay.opaque=y');
        continue;
      case 'dir': want(st.isDirectory(), 'not a directory'); break;
      case 'file':
        want(st.isFile(), 'not a regular file');
        want(st.size === e.size, `size ${st.size} != ${e.size}`);
        if (st.isFile()) want(createHash('sha256').update(fs.readFileSync(p)).digest('hex') === e.sha256, 'content differs');
        break;
      case 'symlink':
        want(st.isSymbolicLink(), 'not a symlink');
        if (st.isSymbolicLink()) want(fs.readlinkSync(p) === e.linkname, `link target ${fs.readlinkSync(p)} != ${e.linkname}`);
        break;
      case 'hardlink': {
        const t = fs.lstatSync(path.join(diffDir, e.linkname!));
        want(st.ino === t.ino, `not a hard link to ${e.linkname}`);
        break;
      }
      case 'char': case 'block':
        want(e.type === 'char' ? st.isCharacterDevice() : st.isBlockDevice(), `not a ${e.type} device`);
        want(st.rdev === Number(sys.makedev(e.devmajor ?? 0, e.devminor ?? 0)), `device numbers ${st.rdev}`);
        break;
      case 'fifo': want(st.isFIFO(), 'not a fifo'); break;
    }
    if (e.type !== 'symlink') want(perm === e.mode, `mode ${perm} != ${e.mode}`);
    want(st.uid === e.uid && st.gid === e.gid, `owner ${st.uid}:${st.gid} != ${e.uid}:${e.gid}`);
    const sec = Number(fs.lstatSync(p, { bigint: true }).mtimeNs / 1_000_000_000n);
    want(sec === e.mtime, `mtime ${sec} != ${e.mtime}`);
    const names = sys.llistxattr(p).filter((n) => !n.startsWith('trusted.overlay.'));
    const wantX = e.xattrsHex ?? {};
    want(names.sort().join(',') === Object.keys(wantX).sort().join(','), `xattrs [${names}] != [${Object.keys(wantX)}]`);
    for (const [k, v] of Object.entries(wantX)) want(sys.lgetxattr(p, k)?.toString('hex') === v, `xattr ${k} differs`);
  }
  // Nothing on disk that Docker did not have.
  const walk = (dir: string, rel: string) => {
    for (const n of fs.readdirSync(dir)) {
      const r = rel ? `${rel}/${n}` : n;
      if (!expectedPaths.has(r)) problems.push(`${r}: unexpected entry on disk`);
      const st = fs.lstatSync(path.join(dir, n));
      if (st.isDirectory()) walk(path.join(dir, n), r);
    }
  };
  walk(diffDir, '');
  return problems;
}
