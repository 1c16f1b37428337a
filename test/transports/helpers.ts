// Shared bits of the transport tests: scratch dirs, fixture copies, stream hashing.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { gunzipSync } from 'node:zlib';
import type { Readable } from 'node:stream';
import { fixtureSave } from '../helpers/expected.js';

export function scratch(t: { after: (fn: () => void | Promise<void>) => void }, tag = 'transports'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `lamina-${tag}-`));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** The uncompressed `docker save` tar of a fixture image, written into `dir`. */
export function plainSave(name: 'refbase' | 'refapp', dir: string): string {
  const p = path.join(dir, `${name}.tar`);
  fs.writeFileSync(p, gunzipSync(fs.readFileSync(fixtureSave(name))));
  return p;
}

export async function hashStream(r: Readable): Promise<{ digest: string; size: number }> {
  const h = createHash('sha256');
  let size = 0;
  for await (const c of r as AsyncIterable<Buffer>) {
    h.update(c);
    size += c.length;
  }
  return { digest: 'sha256:' + h.digest('hex'), size };
}

export async function readAll(r: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of r as AsyncIterable<Buffer>) parts.push(c);
  return Buffer.concat(parts);
}

export function sha256File(p: string): string {
  // openssl is the project's preferred oracle for digests.
  const out = execFileSync('openssl', ['dgst', '-sha256', '-r', p]).toString();
  return 'sha256:' + out.split(' ')[0];
}

export function has(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Children of this process whose command is `name` (to check that spawned decoders were reaped). */
export function childProcesses(name: string): number[] {
  let out: string;
  try {
    out = execFileSync('ps', ['-o', 'pid=,comm=', '--ppid', String(process.pid)]).toString();
  } catch {
    return []; // ps exits 1 when there are none
  }
  return out.split('\n').map((l) => l.trim().split(/\s+/)).filter((f) => f[1] === name).map((f) => Number(f[0]));
}
