// Shared by the archive tests: temp dirs, feeding a buffer to applyLayer in chunks, and a
// snapshot of a whole tree (to prove that nothing outside a layer dir changed).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { applyLayer, type ApplyOptions, type ApplyResult } from '../../src/archive/apply.js';
import * as sys from '../../src/sys/index.js';

export function tmpDir(t: { after: (fn: () => void) => void }, prefix = 'lamina-apply-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A fresh diff dir (0755) inside `parent`. */
export function makeDiffDir(parent: string, name = 'diff'): string {
  const d = path.join(parent, name);
  fs.mkdirSync(d, { recursive: true });
  fs.chmodSync(d, 0o755);
  return d;
}

/** Splits a buffer into chunks of `size` bytes (odd sizes exercise every boundary case). */
export function* chunks(buf: Buffer, size: number): Generator<Buffer> {
  for (let off = 0; off < buf.length; off += size) yield buf.subarray(off, Math.min(off + size, buf.length));
}

export function applyBuffer(tar: Buffer, diffDir: string, chunkSize = 65536, opts?: ApplyOptions): Promise<ApplyResult> {
  return applyLayer(Readable.from(chunks(tar, chunkSize)), diffDir, opts);
}

/**
 * Everything observable about every path under `root` (except below `skip`): type, mode,
 * owner, size, nlink, rdev, mtime and ctime in ns (ctime catches chmod/chown/xattr/link changes),
 * content hash, link target, xattrs. atime is left out: reading content changes it.
 */
export function snapshot(root: string, skip: string): Map<string, string> {
  const out = new Map<string, string>();
  const visit = (p: string, rel: string) => {
    const st = fs.lstatSync(p, { bigint: true });
    const parts = [
      `mode=${st.mode.toString(8)}`, `uid=${st.uid}`, `gid=${st.gid}`, `nlink=${st.nlink}`, `rdev=${st.rdev}`,
      `mtime=${st.mtimeNs}`, `ctime=${st.ctimeNs}`, `ino=${st.ino}`,
    ];
    if (st.isFile()) parts.push(`size=${st.size}`, `sha=${createHash('sha256').update(fs.readFileSync(p)).digest('hex')}`);
    if (st.isSymbolicLink()) parts.push(`link=${fs.readlinkSync(p)}`);
    for (const x of sys.llistxattr(p).sort()) parts.push(`x:${x}=${sys.lgetxattr(p, x)?.toString('hex')}`);
    out.set(rel, parts.join(' '));
    if (st.isDirectory()) {
      for (const n of fs.readdirSync(p).sort()) {
        const c = path.join(p, n);
        if (c === skip) continue;
        visit(c, rel === '.' ? n : `${rel}/${n}`);
      }
    }
  };
  visit(root, '.');
  return out;
}

/** Every path under `dir` (relative, sorted), directories included. */
export function listTree(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string, rel: string) => {
    for (const n of fs.readdirSync(d).sort()) {
      const r = rel ? `${rel}/${n}` : n;
      out.push(r);
      if (fs.lstatSync(path.join(d, n)).isDirectory()) walk(path.join(d, n), r);
    }
  };
  walk(dir, '');
  return out;
}
