// The fuse-overlayfs backend: what containers/storage does when kernel overlayfs cannot be
// mounted (no privileges): run `fuse-overlayfs -o <relative option string> <target>` with the
// working directory set to <home>. The program daemonizes once the mount is up, so the spawn
// returns with the view in place. Unmounting is `fusermount3 -u` (umount2 as root).
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import type { MountSpec } from '../overlay2/driver.js';
import { LaminaError } from '../errors.js';
import * as sys from '../sys/index.js';
import { overlayData } from './kernel.js';
import { findMount } from './mountinfo.js';

// child_process is loaded only when a FUSE mount is made or taken down: the kernel path (the
// common one) should not pay for it at start-up.
const require = createRequire(import.meta.url);
function run(file: string, args: string[], cwd?: string) {
  const { spawnSync } = require('node:child_process') as typeof import('node:child_process');
  return spawnSync(file, args, { cwd, stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8', timeout: 60_000 });
}

/** The first executable `name` on PATH, or undefined. */
export function onPath(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin').split(':')) {
    if (!dir) continue;
    const file = path.join(dir, name);
    try {
      fs.accessSync(file, fs.constants.X_OK);
      return file;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** fuse-overlayfs's stderr without its harmless chatter. */
function stderrText(s: string | undefined): string {
  return (s ?? '').split('\n').filter((l) => l && !/unknown argument ignored/.test(l)).join('; ');
}

export function mountFuse(spec: MountSpec): void {
  const home = path.resolve(spec.home);
  const target = path.join(home, spec.target);
  const bin = onPath('fuse-overlayfs');
  if (!bin) throw new LaminaError('EUNSUPPORTED', `cannot mount ${target} with fuse-overlayfs: fuse-overlayfs is not on PATH`);
  // Relative paths keep the argument short for deep stacks; fuse-overlayfs opens the layers
  // before it leaves <home>.
  const r = run(bin, ['-o', overlayData(spec, 'relative', false), target], home);
  if (r.error) throw new LaminaError('EUNSUPPORTED', `cannot run ${bin}: ${r.error.message}`);
  if (r.status !== 0) {
    throw new LaminaError(
      'EUNSUPPORTED',
      `fuse-overlayfs could not mount ${target} (${spec.lowers.length} lower layers): ${stderrText(r.stderr) || `exit ${r.status ?? r.signal}`}`,
    );
  }
  const entry = findMount(target);
  if (!entry || !entry.fsType.startsWith('fuse')) {
    throw new LaminaError('EUNSUPPORTED', `fuse-overlayfs exited 0 but nothing is mounted at ${target}`);
  }
}

export function unmountFuse(target: string): void {
  if (process.getuid?.() === 0) {
    try {
      sys.umount2(target, sys.MNT_DETACH);
      return;
    } catch (e) {
      if ((e as sys.SysError).code === 'EINVAL') return;
      throw new LaminaError('EUNSUPPORTED', `cannot unmount ${target}: umount2 failed with ${(e as sys.SysError).code}`, { cause: e });
    }
  }
  const bin = onPath('fusermount3') ?? onPath('fusermount');
  if (!bin) throw new LaminaError('EUNSUPPORTED', `cannot unmount ${target}: neither fusermount3 nor fusermount is on PATH`);
  const r = run(bin, ['-u', '-z', target]);
  if (r.status !== 0) {
    throw new LaminaError('EUNSUPPORTED', `${path.basename(bin)} -u could not unmount ${target}: ${r.stderr.trim() || `exit ${r.status ?? r.signal}`}`);
  }
}
