// Shared set-up for the cp tests: the CLI run as users run it (binary-safe, with stdin), host
// source trees with fixed times, and oracles that describe an upper dir and a layer tar in full.
import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { execFileSync, spawnSync } from 'node:child_process';
import { CLI, REPO } from '../helpers/cli.js';
import * as sys from '../../src/sys/index.js';

export interface Run {
  code: number;
  stdout: Buffer;
  stderr: string;
}

/** Runs `lamina --root ROOT args…` with the compiled CLI. */
export function run(root: string, args: string[], input?: Buffer): Run {
  const r = spawnSync(process.execPath, [CLI, '--root', root, ...args], {
    cwd: REPO, input, maxBuffer: 1 << 28, env: { ...process.env, LAMINA_ROOT: '' },
  });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr.toString() };
}

/** Like run, and fails with the command's stderr unless it exits 0. */
export function ok(root: string, args: string[], input?: Buffer): Buffer {
  const r = run(root, args, input);
  if (r.code !== 0) throw new Error(`lamina ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return r.stdout;
}

/** A fixed time in the past for every source entry, so copied times stand apart from copy times. */
export const SOURCE_MTIME = 1_500_000_000;

/** Sets the times of everything under `dir` (deepest first; symlinks themselves). */
export function fixTimes(dir: string, seconds = SOURCE_MTIME): void {
  const walk = (p: string) => {
    const st = fs.lstatSync(p);
    if (st.isDirectory()) for (const n of fs.readdirSync(p)) walk(path.join(p, n));
    sys.lutimesNs(p, [seconds, 0], [seconds, 0]);
  };
  walk(dir);
}

export interface TreeEntry {
  path: string;
  type: string;
  mode: string;
  uid: number;
  gid: number;
  size?: number;
  sha256?: string;
  target?: string;
  rdev?: string;
  nlink?: number;
  xattrs: Record<string, string>;
  mtime: number;
}

const TYPES: Record<number, string> = { 0o100000: 'file', 0o040000: 'dir', 0o120000: 'symlink', 0o020000: 'char', 0o060000: 'block', 0o010000: 'fifo', 0o140000: 'socket' };

/**
 * Every entry under `dir` in name order, with type, mode, owner, size, content hash, link target,
 * device, link count (non-directories), xattrs (getfattr's view, trusted.overlay.origin/impure
 * left out: they are the kernel's private bookkeeping) and whole-second mtime.
 */
export function describeTree(dir: string): TreeEntry[] {
  const out: TreeEntry[] = [];
  const walk = (rel: string) => {
    for (const name of fs.readdirSync(path.join(dir, rel)).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const p = path.join(dir, r);
      const st = fs.lstatSync(p);
      const type = TYPES[st.mode & 0o170000] ?? 'unknown';
      const e: TreeEntry = {
        path: r, type, mode: (st.mode & 0o7777).toString(8), uid: st.uid, gid: st.gid,
        xattrs: xattrsOf(p), mtime: Math.floor(st.mtimeMs / 1000),
      };
      if (type === 'file') {
        e.size = st.size;
        e.sha256 = createHash('sha256').update(fs.readFileSync(p)).digest('hex');
      }
      if (type === 'symlink') e.target = fs.readlinkSync(p);
      if (type === 'char' || type === 'block') e.rdev = String(st.rdev);
      if (type !== 'dir') e.nlink = st.nlink;
      out.push(e);
      if (type === 'dir') walk(r);
    }
  };
  walk('');
  return out;
}

/** xattrs as getfattr dumps them (hex values), without the kernel's private overlay ones. */
function xattrsOf(p: string): Record<string, string> {
  const text = execFileSync('getfattr', ['-h', '-d', '-m', '-', '-e', 'hex', '--absolute-names', p], { encoding: 'utf8' });
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^([^#=][^=]*)=(.*)$/.exec(line);
    if (!m || m[1] === 'trusted.overlay.origin' || m[1] === 'trusted.overlay.impure') continue;
    out[m[1]] = m[2];
  }
  return out;
}

export interface LayerEntry {
  name: string;
  type: string;
  mode: number;
  uid: number;
  gid: number;
  uname: string;
  gname: string;
  size: number;
  mtime: number;
  linkname: string;
  devmajor: number;
  devminor: number;
  pax: Record<string, string>;
  sha256: string | null;
}

/** Every header of a tar file with a hash of its content, as Python's tarfile reads them. */
export function layerEntries(file: string): LayerEntry[] {
  const script = `
import hashlib, json, sys, tarfile
out = []
with tarfile.open(sys.argv[1], 'r:') as tf:
    for m in tf:
        h = None
        if m.isfile():
            h = hashlib.sha256(tf.extractfile(m).read()).hexdigest()
        out.append({'name': m.name + ('/' if m.isdir() and not m.name.endswith('/') else ''),
                    'type': m.type.decode('latin1'), 'mode': m.mode, 'uid': m.uid, 'gid': m.gid,
                    'uname': m.uname, 'gname': m.gname, 'size': m.size, 'mtime': int(m.mtime),
                    'linkname': m.linkname, 'devmajor': m.devmajor, 'devminor': m.devminor,
                    'pax': {k: v.encode('utf-8', 'surrogateescape').hex() for k, v in m.pax_headers.items()}, 'sha256': h})
print(json.dumps(out))
`;
  return JSON.parse(execFileSync('python3', ['-c', script, file], { encoding: 'utf8', maxBuffer: 1 << 26 }));
}
