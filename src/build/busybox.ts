// A tiny runnable image built from the host's static busybox (Debian's busybox-static): one
// layer holding bin/busybox, a symlink per applet, /etc/passwd, /etc/group and the usual empty
// directories, packed as a docker-archive. Used by the container tests, the runtime benchmark
// and the demo; nothing is downloaded. Fixed modes, owners and mtimes make the layer's diffID
// depend only on the busybox binary.
import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { pipeline } from 'node:stream/promises';
import * as sys from '../sys/index.js';
import { LaminaError } from '../errors.js';
import { writeLayerTar } from '../archive/write.js';
import { writeDockerArchive } from '../transports/docker-archive.js';
import { marshalGo } from '../images/gojson.js';
import { goContainerConfig } from '../images/config.js';

export const BUSYBOX = '/bin/busybox';
export const BUSYBOX_TAG = 'lamina-busybox:1';

const MTIME = 1767225600; // 2026-01-01T00:00:00Z
const CREATED = '2026-01-01T00:00:00Z';

/** Users of the image: root, a plain user with a supplementary group, nobody. */
const PASSWD = [
  'root:x:0:0:root:/root:/bin/sh',
  'daemon:x:1:1:daemon:/usr/sbin:/bin/false',
  'app:x:1000:1000:app user:/home/app:/bin/sh',
  'nobody:x:65534:65534:nobody:/nonexistent:/bin/false',
].join('\n') + '\n';
const GROUP = [
  'root:x:0:',
  'daemon:x:1:',
  'tty:x:5:',
  'staff:x:50:app',
  'app:x:1000:',
  'audio:x:29:app,nobody',
  'nogroup:x:65534:',
].join('\n') + '\n';

export interface BusyboxImageOptions {
  repoTag?: string;
  /** Image config overrides (Entrypoint, Cmd, Env, WorkingDir, User, Labels…). */
  config?: Record<string, unknown>;
}

/** The applet names the static busybox provides (`busybox --list`). */
export function busyboxApplets(binary = BUSYBOX): string[] {
  const r = spawnSync(binary, ['--list'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) {
    throw new LaminaError('ENOTFOUND', `cannot run ${binary} --list (install busybox-static): ${r.error?.message ?? r.stderr.trim()}`);
  }
  return r.stdout.split('\n').filter((n) => n && n !== 'busybox' && !n.includes('/'));
}

/** Stages the layer's root directory at `stage` (which must not exist). */
export function stageBusyboxRootfs(stage: string, binary = BUSYBOX): void {
  const applets = busyboxApplets(binary);
  const dirs: Array<[string, number]> = [
    ['', 0o755], ['bin', 0o755], ['etc', 0o755], ['root', 0o700], ['tmp', 0o1777],
    ['home', 0o755], ['home/app', 0o755], ['usr', 0o755], ['usr/bin', 0o755], ['var', 0o755],
  ];
  for (const [rel, mode] of dirs) {
    const d = path.join(stage, rel);
    fs.mkdirSync(d);
    fs.chmodSync(d, mode);
  }
  fs.copyFileSync(binary, path.join(stage, 'bin/busybox'));
  fs.chmodSync(path.join(stage, 'bin/busybox'), 0o755);
  for (const a of applets) fs.symlinkSync('busybox', path.join(stage, 'bin', a));
  fs.writeFileSync(path.join(stage, 'etc/passwd'), PASSWD, { mode: 0o644 });
  fs.writeFileSync(path.join(stage, 'etc/group'), GROUP, { mode: 0o644 });
  const t: [number, number] = [MTIME, 0];
  const walk = (rel: string): void => {
    for (const n of fs.readdirSync(path.join(stage, rel))) {
      const r = rel ? `${rel}/${n}` : n;
      const p = path.join(stage, r);
      const st = fs.lstatSync(p);
      if (st.isDirectory()) walk(r);
      fs.lchownSync(p, r.startsWith('home/app') ? 1000 : 0, r.startsWith('home/app') ? 1000 : 0);
      if (!st.isDirectory()) sys.lutimesNs(p, t, t);
    }
  };
  walk('');
  // Directories last, deepest first, so creating children does not move their mtimes again.
  for (const [rel] of [...dirs].reverse()) sys.lutimesNs(path.join(stage, rel), t, t);
}

/**
 * Writes the busybox image as a docker-archive at `outFile`, staging under `workDir` (an
 * existing scratch directory the caller removes). Returns the image's tag.
 */
export async function buildBusyboxArchive(workDir: string, outFile: string, opts: BusyboxImageOptions = {}): Promise<{ repoTag: string; diffID: string }> {
  const repoTag = opts.repoTag ?? BUSYBOX_TAG;
  const stage = path.join(workDir, 'busybox-rootfs');
  stageBusyboxRootfs(stage);
  const tarFile = path.join(workDir, 'busybox-layer.tar');
  await pipeline(writeLayerTar(stage), fs.createWriteStream(tarFile));
  fs.rmSync(stage, { recursive: true, force: true });
  const diffID = 'sha256:' + createHash('sha256').update(fs.readFileSync(tarFile)).digest('hex');
  const config = {
    architecture: 'amd64',
    config: goContainerConfig({
      Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
      Cmd: ['sh'],
      ...opts.config,
    }),
    created: CREATED,
    history: [{ created: CREATED, created_by: `COPY busybox-static (${BUSYBOX}) and its applet links /` }],
    os: 'linux',
    rootfs: { type: 'layers', diff_ids: [diffID] },
  };
  const out = fs.createWriteStream(outFile);
  await writeDockerArchive(out, [{
    configBytes: Buffer.from(marshalGo(config)),
    repoTags: [repoTag],
    layers: [{ diffID, size: fs.statSync(tarFile).size, open: () => fs.createReadStream(tarFile) }],
  }]);
  await new Promise<void>((res, rej) => out.end((e?: Error | null) => (e ? rej(e) : res())));
  fs.rmSync(tarFile, { force: true });
  return { repoTag, diffID };
}
