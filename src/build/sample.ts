// Builds the demo's sample image from the files lamina ships in demo/: each layer directory is
// staged with the entries git cannot hold (symlinks, hard links, whiteouts, opaque dirs),
// written as a Docker-format layer tar, and packed with its config into a docker-archive —
// no Docker, no network. Fixed modes and mtimes make the image ID the same on every machine.
import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { pipeline } from 'node:stream/promises';
import * as sys from '../sys/index.js';
import { writeLayerTar } from '../archive/write.js';
import { writeDockerArchive } from '../transports/docker-archive.js';
import { marshalGo } from '../images/gojson.js';
import { goContainerConfig } from '../images/config.js';
import type { DestLayer } from '../transports/types.js';

export const DEMO_DIR = fileURLToPath(new URL('../../demo/', import.meta.url));

interface LayerSpec {
  dir: string;
  createdBy: string;
  symlinks?: Record<string, string>;
  hardlinks?: Record<string, string>;
  whiteouts?: string[];
  opaque?: string[];
}
interface ImageSpec {
  repoTag: string;
  created: string;
  mtime: number;
  config: Record<string, unknown>;
  layers: LayerSpec[];
}

/** Copies a shipped layer dir into `stage` with the spec's fixed modes, owner and mtimes. */
function stageLayer(src: string, stage: string, spec: LayerSpec, mtime: number): void {
  const t: [number, number] = [mtime, 0];
  const dirs: string[] = [stage];
  const copy = (from: string, to: string) => {
    for (const name of fs.readdirSync(from).sort()) {
      const f = path.join(from, name), d = path.join(to, name);
      const st = fs.lstatSync(f);
      if (st.isDirectory()) {
        fs.mkdirSync(d, { mode: 0o755 });
        fs.chmodSync(d, 0o755);
        dirs.push(d);
        copy(f, d);
      } else if (st.isFile()) {
        fs.copyFileSync(f, d);
        fs.chmodSync(d, name.endsWith('.sh') ? 0o755 : 0o644);
      }
    }
  };
  copy(src, stage);
  const parentOf = (rel: string) => {
    const dir = path.dirname(path.join(stage, rel));
    if (!fs.existsSync(dir)) {
      fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
      dirs.push(dir);
    }
  };
  for (const [rel, target] of Object.entries(spec.symlinks ?? {})) { parentOf(rel); fs.symlinkSync(target, path.join(stage, rel)); }
  for (const [rel, target] of Object.entries(spec.hardlinks ?? {})) { parentOf(rel); fs.linkSync(path.join(stage, target), path.join(stage, rel)); }
  // Whiteouts and opaque markers in the form the kernel and Docker keep them in diff/.
  for (const rel of spec.whiteouts ?? []) { parentOf(rel); sys.mknod(path.join(stage, rel), sys.S_IFCHR, 0, 0); }
  for (const rel of spec.opaque ?? []) sys.lsetxattr(path.join(stage, rel), 'trusted.overlay.opaque', 'y');
  const all = (dir: string): string[] => fs.readdirSync(dir).flatMap((n) => {
    const p = path.join(dir, n);
    return fs.lstatSync(p).isDirectory() ? [p, ...all(p)] : [p];
  });
  for (const p of all(stage)) {
    fs.lchownSync(p, 0, 0);
    if (!fs.lstatSync(p).isDirectory()) sys.lutimesNs(p, t, t);
  }
  // Directories last, deepest first, so creating children does not move their mtimes again.
  for (const d of dirs.sort((a, b) => b.length - a.length)) sys.lutimesNs(d, t, t);
}

/**
 * Writes the sample image as a docker-archive at `outFile`, staging under `workDir`.
 * Returns the archive path and the image's tag.
 */
export async function buildSampleArchive(workDir: string, outFile: string): Promise<{ repoTag: string }> {
  const spec = JSON.parse(fs.readFileSync(path.join(DEMO_DIR, 'image.json'), 'utf8')) as ImageSpec;
  const layers: DestLayer[] = [];
  const history: Array<Record<string, unknown>> = [];
  for (const [i, l] of spec.layers.entries()) {
    const stage = path.join(workDir, `layer${i}`);
    fs.mkdirSync(stage, { mode: 0o755 });
    stageLayer(path.join(DEMO_DIR, l.dir), stage, l, spec.mtime);
    const tarFile = path.join(workDir, `layer${i}.tar`);
    await pipeline(writeLayerTar(stage), fs.createWriteStream(tarFile));
    const diffID = 'sha256:' + createHash('sha256').update(fs.readFileSync(tarFile)).digest('hex');
    layers.push({ diffID, size: fs.statSync(tarFile).size, open: () => fs.createReadStream(tarFile) });
    history.push({ created: spec.created, created_by: l.createdBy });
  }
  // Top-level keys sorted (moby marshals a map there); nested objects in Go struct order.
  const config = {
    architecture: 'amd64',
    config: goContainerConfig(spec.config),
    created: spec.created,
    history,
    os: 'linux',
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffID) },
  };
  const configBytes = Buffer.from(marshalGo(config));
  const out = fs.createWriteStream(outFile);
  await writeDockerArchive(out, [{ configBytes, repoTags: [spec.repoTag], layers }]);
  await new Promise<void>((res, rej) => out.end((e?: Error | null) => (e ? rej(e) : res())));
  return { repoTag: spec.repoTag };
}
