// Benchmark inputs, built once into .bench-cache/ (gitignored) and reused by later runs.
//
//   refapp_1.docker-save.tar        the refapp fixture gunzipped, so plain and .gz can both be loaded
//   large/layer.tar                 one large real-world layer: GNU tar (pax) of system dirs
//   large/large.docker-archive.tar  that layer wrapped as a one-layer docker-archive
//   large/meta.json                 what the layer holds (dirs, bytes, entries, diffID)
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { createHash } from 'node:crypto';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { run } from './proc.js';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const CACHE_DIR = path.join(REPO_ROOT, '.bench-cache');
export const SHARED_FIXTURES = process.env.LAMINA_FIXTURES || path.resolve(REPO_ROOT, '..', 'shared', 'fixtures', 'docker');
export const REFAPP_GZ = path.join(SHARED_FIXTURES, 'refapp_1.docker-save.tar.gz');

/**
 * Directories that make up the large layer: Python, Perl, C headers, man pages, zone info —
 * many small files, symlinks and some large ones, like a language runtime layer. About 265 MB and
 * 39k entries on the reference machine; missing ones are skipped, so other machines differ
 * (meta.json records what was used).
 */
export const LARGE_LAYER_DIRS = [
  'usr/lib/python3',
  'usr/share/perl',
  'usr/lib/x86_64-linux-gnu/perl',
  'usr/share/perl5',
  'usr/include',
  'usr/share/man',
  'usr/share/zoneinfo',
];

/** Same PAX-only-when-needed shape Go's archive/tar gives Docker layers: no per-file atime/ctime records. */
const GNU_TAR_CREATE = ['--format=pax', '--pax-option=delete=atime,delete=ctime', '--sort=name', '--warning=no-file-changed'];

export interface LargeLayer {
  layerTar: string;
  archive: string;
  meta: LargeLayerMeta;
}

export interface LargeLayerMeta {
  dirs: string[];
  layerBytes: number;
  entries: number;
  diffID: string;
  configDigest: string;
  builtAt: string;
}

export async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(fs.createReadStream(file, { highWaterMark: 1 << 20 }), hash);
  return hash.digest('hex');
}

/** Writes `file` through a temp name and a rename, so an interrupted build never leaves a half file. */
async function atomically(file: string, write: (tmp: string) => Promise<void> | void): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}`;
  try {
    await write(tmp);
    fs.renameSync(tmp, file);
  } finally {
    fs.rmSync(tmp, { force: true, recursive: true });
  }
}

export async function refappPlain(): Promise<string> {
  if (!fs.existsSync(REFAPP_GZ)) throw new Error(`fixture missing: ${REFAPP_GZ}`);
  fs.mkdirSync(CACHE_DIR, { recursive: true });
  const out = path.join(CACHE_DIR, 'refapp_1.docker-save.tar');
  if (!fs.existsSync(out)) {
    await atomically(out, (tmp) => pipeline(fs.createReadStream(REFAPP_GZ), zlib.createGunzip(), fs.createWriteStream(tmp)));
  }
  return out;
}

export async function largeLayer(log: (msg: string) => void): Promise<LargeLayer> {
  const dir = path.join(CACHE_DIR, 'large');
  const layerTar = path.join(dir, 'layer.tar');
  const archive = path.join(dir, 'large.docker-archive.tar');
  const metaFile = path.join(dir, 'meta.json');
  if (fs.existsSync(metaFile) && fs.existsSync(layerTar) && fs.existsSync(archive)) {
    return { layerTar, archive, meta: JSON.parse(fs.readFileSync(metaFile, 'utf8')) as LargeLayerMeta };
  }
  fs.mkdirSync(dir, { recursive: true });

  const dirs = LARGE_LAYER_DIRS.filter((d) => fs.existsSync(path.join('/', d)));
  if (dirs.length === 0) throw new Error(`none of ${LARGE_LAYER_DIRS.join(', ')} exists on this machine`);
  log(`building the large layer (once): GNU tar of /${dirs.join(', /')}`);
  // Exit status 1 from GNU tar means "some files changed while being read", harmless here.
  await atomically(layerTar, (tmp) => void run('tar', ['-C', '/', ...GNU_TAR_CREATE, '-cf', tmp, ...dirs], { okStatus: [0, 1] }));
  const layerBytes = fs.statSync(layerTar).size;
  const entries = run('tar', ['-tf', layerTar]).split('\n').filter(Boolean).length;
  const diffID = `sha256:${await sha256File(layerTar)}`;

  const { configDigest } = await wrapAsDockerArchive(layerTar, diffID, archive);
  const meta: LargeLayerMeta = { dirs, layerBytes, entries, diffID, configDigest, builtAt: new Date().toISOString() };
  fs.writeFileSync(metaFile, JSON.stringify(meta, null, 2) + '\n');
  log(`large layer: ${(layerBytes / 1e6).toFixed(1)} MB, ${entries} entries, ${diffID}`);
  return { layerTar, archive, meta };
}

/**
 * A one-layer docker-archive in `docker save` (legacy) shape: <id>/layer.tar, <config-digest>.json
 * with rootfs.diff_ids = [sha256 of the layer], manifest.json and repositories, packed with GNU tar.
 */
async function wrapAsDockerArchive(layerTar: string, diffID: string, archive: string): Promise<{ configDigest: string }> {
  const created = '2024-01-01T00:00:00Z';
  const config = {
    architecture: 'amd64',
    os: 'linux',
    created,
    config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], Cmd: ['/bin/sh'] },
    rootfs: { type: 'layers', diff_ids: [diffID] },
    history: [{ created, created_by: 'lamina bench: GNU tar of system directories' }],
  };
  const configBytes = Buffer.from(JSON.stringify(config));
  const configHex = createHash('sha256').update(configBytes).digest('hex');
  const layerID = diffID.slice('sha256:'.length);
  const manifest = [{ Config: `${configHex}.json`, RepoTags: ['bench/large:1'], Layers: [`${layerID}/layer.tar`] }];

  await atomically(archive, (tmp) => {
    const stage = `${tmp}.d`;
    try {
      fs.mkdirSync(path.join(stage, layerID), { recursive: true });
      // A hard link, not a copy: the stage holds it once, so GNU tar stores it as a regular file.
      fs.linkSync(layerTar, path.join(stage, layerID, 'layer.tar'));
      fs.writeFileSync(path.join(stage, layerID, 'VERSION'), '1.0');
      fs.writeFileSync(path.join(stage, `${configHex}.json`), configBytes);
      fs.writeFileSync(path.join(stage, 'manifest.json'), JSON.stringify(manifest));
      fs.writeFileSync(path.join(stage, 'repositories'), JSON.stringify({ 'bench/large': { '1': layerID } }));
      run('tar', ['-C', stage, ...GNU_TAR_CREATE, '-cf', tmp, `${configHex}.json`, layerID, 'manifest.json', 'repositories']);
    } finally {
      fs.rmSync(stage, { recursive: true, force: true });
    }
  });
  return { configDigest: `sha256:${configHex}` };
}

/** Reads a file once so the timed runs start from a warm page cache, whichever runs first. */
export async function warmPageCache(file: string): Promise<void> {
  for await (const _chunk of fs.createReadStream(file, { highWaterMark: 1 << 20 }));
}
