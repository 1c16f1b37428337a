// Independent oracles for the container tests: Docker's two-tree change walk (moby
// pkg/archive ChangesDirs + addChanges, run here over two kernel overlay mounts), and a plain
// tar header listing made by Python's tarfile module.
import fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import * as sys from '../../src/sys/index.js';

export interface OracleChange { path: string; kind: 'C' | 'A' | 'D' }

function cap(p: string): Buffer | undefined {
  try {
    return sys.lgetxattr(p, 'security.capability');
  } catch {
    return undefined;
  }
}

/**
 * Docker's changes between two full trees: walks both completely and compares every pair of
 * entries with statDifferent + capability, marking parents of changes as modified.
 */
export function twoTreeChanges(newRoot: string, oldRoot: string): OracleChange[] {
  const out: OracleChange[] = [];
  const S_IFDIR = 0o040000n;
  const isDir = (st: fs.BigIntStats) => (st.mode & 0o170000n) === S_IFDIR;
  const differs = (o: fs.BigIntStats, n: fs.BigIntStats): boolean => {
    if (o.mode !== n.mode || o.uid !== n.uid || o.gid !== n.gid || o.rdev !== n.rdev) return true;
    if ((o.mode & S_IFDIR) === S_IFDIR) return false;
    const NS = 1_000_000_000n;
    const same = o.mtimeNs === n.mtimeNs || (o.mtimeNs / NS === n.mtimeNs / NS && (o.mtimeNs % NS === 0n || n.mtimeNs % NS === 0n));
    return !same || o.size !== n.size;
  };
  const walk = (rel: string, hasOld: boolean, newIsDir: boolean, added: boolean): void => {
    const start = out.length;
    const newNames = fs.readdirSync(newRoot + rel);
    const oldNames = new Set(hasOld && newIsDir ? fs.readdirSync(oldRoot + rel) : []);
    for (const name of newNames) {
      const p = `${rel}/${name}`;
      const nst = fs.lstatSync(newRoot + p, { bigint: true });
      let childAdded = false;
      const inOld = oldNames.has(name);
      if (!inOld) {
        out.push({ path: p, kind: 'A' });
        childAdded = true;
      } else {
        const ost = fs.lstatSync(oldRoot + p, { bigint: true });
        const oc = cap(oldRoot + p), nc = cap(newRoot + p);
        if (differs(ost, nst) || !((oc ?? Buffer.alloc(0)).equals(nc ?? Buffer.alloc(0)))) {
          out.push({ path: p, kind: 'C' });
          childAdded = true;
        }
        oldNames.delete(name);
      }
      if (isDir(nst)) walk(p, inOld && isDir(fs.lstatSync(oldRoot + p, { bigint: true })), true, childAdded);
    }
    for (const name of oldNames) out.push({ path: `${rel}/${name}`, kind: 'D' });
    if (out.length > start && !added && rel !== '') out.splice(start, 0, { path: rel, kind: 'C' });
  };
  walk('', true, true, false);
  return out;
}

export interface TarHeader {
  name: string; type: string; mode: number; uid: number; gid: number; uname: string; gname: string;
  size: number; mtime: number; linkname: string; pax: Record<string, string>;
}

/** Every header of a tar file, in order, as Python's tarfile reads it. */
export function tarHeaders(file: string): TarHeader[] {
  const script = `
import json, sys, tarfile
out = []
with tarfile.open(sys.argv[1], 'r:') as tf:
    for m in tf:
        out.append({'name': m.name + ('/' if m.isdir() and not m.name.endswith('/') else ''),
                    'type': m.type.decode('latin1'), 'mode': m.mode, 'uid': m.uid, 'gid': m.gid,
                    'uname': m.uname, 'gname': m.gname, 'size': m.size, 'mtime': int(m.mtime),
                    'linkname': m.linkname, 'pax': m.pax_headers})
print(json.dumps(out))
`;
  return JSON.parse(execFileSync('python3', ['-c', script, file], { encoding: 'utf8', maxBuffer: 64 << 20 }));
}
