// Registry pull and push, whole-process timings against the real Debian docker-registry on
// 127.0.0.1 (own config and storage in a temp dir), in one run:
//   * pull: `lamina pull` of a generated ≈100 MB, 5-layer image (download + verify + extract into
//     a fresh store) vs `skopeo copy docker://… dir:` of the same image (download + verify, no
//     extraction), alternating run by run, each into a never-used directory;
//   * push: `lamina push` of that image from a fresh store loaded from a docker-archive (so no
//     distribution metadata: every layer is rebuilt from tar-split, gzip-compressed and uploaded)
//     vs `skopeo copy docker-archive:… docker://…` (which gzips the same uncompressed layers),
//     each to a new repository; plus lamina's re-push (every layer known: HEAD only), a push
//     to another repository of the same registry (cross-repository mounts), and pushes with
//     --compression zstd and none (for what the gzip step costs).
// Usage: node --import tsx bench/registry.ts   (exported main() for bench/run.ts)
// Environment: BENCH_RUNS (5), BENCH_FS (tmpfs | ext4: where stores and skopeo dirs go),
// BENCH_LAYER_MB (20), BENCH_LAYERS (5), BENCH_TIMEOUT_MS (300000).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import zlib from 'node:zlib';
import { createHash } from 'node:crypto';
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { assertOk, run, runTimed, type RunResult } from './lib/proc.js';
import { ScratchArea, type FsKind } from './lib/scratch.js';
import { formatSummaryMs, summarize } from './lib/stats.js';
import { formatTable } from './lib/table.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const env = process.env;
const intEnv = (name: string, dflt: number) => (env[name] ? Math.max(1, Number.parseInt(env[name]!, 10)) : dflt);
const config = {
  runs: intEnv('BENCH_RUNS', 5),
  fs: (env.BENCH_FS || 'tmpfs') as FsKind,
  layerMB: intEnv('BENCH_LAYER_MB', 20),
  layers: intEnv('BENCH_LAYERS', 5),
  timeoutMs: intEnv('BENCH_TIMEOUT_MS', 300_000),
};

const WORDS = 'the quick brown fox jumps over a lazy dog while layers of images travel between registries and stores'.split(' ');

/** Deterministic content: alternating text-like (compressible) and pseudo-random (incompressible) files. */
function fileContent(seed: string, size: number, text: boolean): Buffer {
  const out = Buffer.allocUnsafe(size);
  let block = createHash('sha256').update(seed).digest();
  if (!text) {
    for (let off = 0; off < size; off += 32) {
      block.copy(out, off, 0, Math.min(32, size - off));
      block = createHash('sha256').update(block).digest();
    }
    return out;
  }
  let off = 0;
  let i = 0;
  while (off < size) {
    const w = WORDS[(block[i % 32] + i) % WORDS.length] + (block[(i + 7) % 32] < 20 ? '\n' : ' ');
    off += out.write(w, off);
    if (++i % 32 === 0) block = createHash('sha256').update(block).digest();
  }
  return out;
}

interface Generated {
  layout: string;
  archive: string;
  diffIDs: string[];
  totalTar: number;
  totalBlob: number;
  files: number;
}

/** Builds the image as an OCI layout (GNU tar layers, gzip -6) and a docker-archive of it. */
function generateImage(dir: string): Generated {
  const layout = path.join(dir, 'layout');
  const blobs = path.join(layout, 'blobs/sha256');
  fs.mkdirSync(blobs, { recursive: true });
  const put = (b: Buffer) => {
    const d = 'sha256:' + createHash('sha256').update(b).digest('hex');
    fs.writeFileSync(path.join(blobs, d.slice(7)), b);
    return d;
  };
  const diffIDs: string[] = [];
  const descs: Array<{ mediaType: string; digest: string; size: number }> = [];
  let totalTar = 0;
  let totalBlob = 0;
  let files = 0;
  for (let l = 0; l < config.layers; l++) {
    const tree = path.join(dir, `tree${l}`);
    fs.mkdirSync(path.join(tree, `data${l}`), { recursive: true });
    let bytes = 0;
    for (let i = 0; bytes < config.layerMB * 1e6; i++) {
      const size = 4096 + ((i * 7919 + l * 104729) % 400_000);
      const sub = path.join(tree, `data${l}`, `d${i % 8}`);
      fs.mkdirSync(sub, { recursive: true });
      fs.writeFileSync(path.join(sub, `f${i}.bin`), fileContent(`${l}-${i}`, size, i % 2 === 0));
      bytes += size;
      files++;
    }
    const tar = spawnSync('tar', ['-C', tree, '--sort=name', '--owner=0', '--group=0', '--numeric-owner', '--mtime=@1600000000', '-cf', '-', '.'], { maxBuffer: 1 << 30 }).stdout;
    const gz = zlib.gzipSync(tar, { level: 6 });
    diffIDs.push('sha256:' + createHash('sha256').update(tar).digest('hex'));
    descs.push({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: put(gz), size: gz.length });
    totalTar += tar.length;
    totalBlob += gz.length;
    fs.rmSync(tree, { recursive: true, force: true });
  }
  const cfg = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: diffIDs }, history: diffIDs.map(() => ({ created_by: 'bench/registry.ts' })) }));
  const man = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: put(cfg), size: cfg.length },
    layers: descs,
  }));
  const md = put(man);
  fs.writeFileSync(path.join(layout, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  fs.writeFileSync(path.join(layout, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: md, size: man.length, annotations: { 'org.opencontainers.image.ref.name': 'big' } }] }));
  const archive = path.join(dir, 'big.docker-archive.tar');
  run('skopeo', ['copy', '-q', `oci:${layout}:big`, `docker-archive:${archive}:bench/big:1`]);
  return { layout, archive, diffIDs, totalTar, totalBlob, files };
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

async function startRegistry(dir: string): Promise<{ host: string; stop: () => Promise<void> }> {
  const port = await freePort();
  fs.mkdirSync(path.join(dir, 'data'), { recursive: true });
  const cfg = path.join(dir, 'config.yml');
  fs.writeFileSync(cfg, `version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: ${path.join(dir, 'data')}\n  cache:\n    blobdescriptor: inmemory\nhttp:\n  addr: 127.0.0.1:${port}\n  secret: bench\n`);
  const child = spawn('docker-registry', ['serve', cfg], { stdio: 'ignore' });
  const deadline = Date.now() + 20_000;
  for (;;) {
    try {
      const r = await fetch(`http://127.0.0.1:${port}/v2/`);
      await r.arrayBuffer();
      if (r.ok) break;
    } catch {
      /* starting */
    }
    if (child.exitCode !== null || Date.now() > deadline) throw new Error('docker-registry did not start');
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    host: `127.0.0.1:${port}`,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}

/** dist/ built from the current sources (other modules' type errors do not stop tsc from emitting). */
function ensureBuilt(): void {
  const out = path.join(REPO, 'dist/transports/registry/pull.js');
  const newest = (dir: string): number => Math.max(0, ...fs.readdirSync(dir, { recursive: true }).map((f) => fs.statSync(path.join(dir, String(f))).mtimeMs));
  if (fs.existsSync(out) && fs.statSync(out).mtimeMs >= newest(path.join(REPO, 'src'))) return;
  console.error('[bench registry] building dist/ (npx tsc)');
  spawnSync('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: REPO, stdio: 'ignore' });
  if (!fs.existsSync(out)) throw new Error('tsc did not produce dist/transports/registry/pull.js');
}

/**
 * A private copy of dist/ (inside the repo, so node_modules still resolves): others rebuilding
 * dist/ while the benchmark runs must not swap modules under a running CLI.
 */
function snapshotDist(): string {
  const dir = path.join(REPO, '.bench-cache', 'registry-dist');
  fs.rmSync(dir, { recursive: true, force: true });
  fs.cpSync(path.join(REPO, 'dist'), dir, { recursive: true });
  return dir;
}

let DIST = path.join(REPO, 'dist');

/** argv to run the compiled lamina CLI with registry commands (main.js once it registers them). */
function laminaArgv(): string[] {
  const main = path.join(DIST, 'cli/main.js');
  if (fs.readFileSync(main, 'utf8').includes('registerRegistryCommands')) return [main];
  // Until main.ts registers them: the same commands on a bare commander program.
  const code = `import { Command } from 'commander';
import { registerRegistryCommands } from ${JSON.stringify(path.join(DIST, 'cli/registry.js'))};
import { Store } from ${JSON.stringify(path.join(DIST, 'store.js'))};
const p = new Command(); p.option('--root <dir>');
registerRegistryCommands(p, async () => Store.open(p.opts().root));
await p.parseAsync(process.argv.slice(1), { from: 'user' });`;
  return ['--input-type=module', '-e', code, '--'];
}

/**
 * skopeo remembers which compressed blob an uncompressed layer became (its blob-info cache in
 * /var/lib/containers/cache) and then skips compressing it again. Each skopeo run gets a private,
 * empty cache (a tmpfs mounted in its own mount namespace) so it does the work lamina does.
 */
function skopeoArgv(args: string[]): [string, string[]] {
  if (process.getuid?.() === 0 && fs.existsSync('/var/lib/containers')) {
    const quoted = args.map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
    return ['unshare', ['-m', 'sh', '-c', `mount -t tmpfs lamina-bench /var/lib/containers && exec skopeo ${quoted}`]];
  }
  return ['skopeo', args];
}

interface Timing {
  ms: number;
  /** user + system CPU seconds of the process tree (GNU time), when available. */
  cpuMs: number | null;
}

/** Runs one command, timed; CPU time comes from GNU time (%U + %S) when it is installed. */
function timed(cmd: string, args: string[], area: ScratchArea, what: string): Timing {
  const cpuFile = area.file('cpu');
  fs.rmSync(cpuFile, { force: true });
  const gnuTime = fs.existsSync('/usr/bin/time');
  const [file, argv] = gnuTime ? ['/usr/bin/time', ['-f', '%U %S', '-o', cpuFile, cmd, ...args]] : [cmd, args];
  const r: RunResult = runTimed(file, argv, { cwd: REPO, rssFile: area.file('rss'), timeoutMs: config.timeoutMs });
  assertOk(r, what);
  let cpuMs: number | null = null;
  try {
    const [u, sy] = fs.readFileSync(cpuFile, 'utf8').trim().split('\n').pop()!.split(' ').map(Number);
    if (Number.isFinite(u) && Number.isFinite(sy)) cpuMs = (u + sy) * 1000;
  } catch {
    /* no GNU time */
  }
  return { ms: r.ms, cpuMs };
}

export async function main(): Promise<void> {
  for (const tool of ['docker-registry', 'skopeo', 'tar']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) throw new Error(`${tool} is not installed`);
  }
  ensureBuilt();
  DIST = snapshotDist();
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'lamina-bench-registry-'));
  const area = ScratchArea.create(config.fs);
  const reg = await startRegistry(path.join(work, 'registry'));
  try {
    console.error(`[bench registry] generating a ${config.layers}-layer image of ~${config.layers * config.layerMB} MB`);
    const img = generateImage(path.join(work, 'image'));
    run('skopeo', ['copy', '-q', '--dest-tls-verify=false', `oci:${img.layout}:big`, `docker://${reg.host}/bench/big:1`]);
    const lamina = laminaArgv();
    const node = process.execPath;
    const name = `${reg.host}/bench/big:1`;

    // ---- pull
    const pullL: Timing[] = [];
    const pullS: Timing[] = [];
    for (let i = 0; i < config.runs; i++) {
      const root = area.fresh('lamina-pull');
      pullL.push(timed(node, [...lamina, '--root', root, 'pull', '-q', name], area, 'lamina pull'));
      const dir = area.fresh('skopeo-pull');
      fs.rmdirSync(dir);
      pullS.push(timed(...skopeoArgv(['copy', '-q', '--src-tls-verify=false', `docker://${name}`, `dir:${dir}`]), area, 'skopeo copy (pull)'));
      if (config.fs === 'tmpfs') {
        area.remove(root);
        area.remove(dir);
      }
    }

    // ---- push
    const pushL: Timing[] = [];
    const pushS: Timing[] = [];
    const again: Timing[] = [];
    const mount: Timing[] = [];
    const pushZstd: Timing[] = [];
    const pushNone: Timing[] = [];
    for (let i = 0; i < config.runs; i++) {
      const root = area.fresh('lamina-push');
      const setup = spawnSync(node, [path.join(DIST, 'cli/main.js'), '--root', root, 'load', '-q', '-i', img.archive], { cwd: REPO, encoding: 'utf8' });
      if (setup.status !== 0) throw new Error(`lamina load failed: ${setup.stderr}`);
      const target = `${reg.host}/bench/lamina-${i}:1`;
      const tag = spawnSync(node, [path.join(DIST, 'cli/main.js'), '--root', root, 'tag', 'bench/big:1', target], { cwd: REPO, encoding: 'utf8' });
      if (tag.status !== 0) throw new Error(`lamina tag failed: ${tag.stderr}`);
      pushL.push(timed(node, [...lamina, '--root', root, 'push', '-q', target], area, 'lamina push'));
      again.push(timed(node, [...lamina, '--root', root, 'push', '-q', target], area, 'lamina re-push'));
      const other = `${reg.host}/bench/mounted-${i}:1`;
      spawnSync(node, [path.join(DIST, 'cli/main.js'), '--root', root, 'tag', 'bench/big:1', other], { cwd: REPO });
      mount.push(timed(node, [...lamina, '--root', root, 'push', '-q', other], area, 'lamina push (mount)'));
      for (const c of ['zstd', 'none'] as const) {
        // A fresh root again: with the metadata of the push above these layers would be mounted.
        const croot = area.fresh(`lamina-push-${c}`);
        const loaded = spawnSync(node, [path.join(DIST, 'cli/main.js'), '--root', croot, 'load', '-q', '-i', img.archive], { cwd: REPO, encoding: 'utf8' });
        if (loaded.status !== 0) throw new Error(`lamina load failed: ${loaded.stderr}`);
        const t2 = `${reg.host}/bench/lamina-${c}-${i}:1`;
        spawnSync(node, [path.join(DIST, 'cli/main.js'), '--root', croot, 'tag', 'bench/big:1', t2], { cwd: REPO });
        (c === 'zstd' ? pushZstd : pushNone).push(timed(node, [...lamina, '--root', croot, 'push', '-q', '--compression', c, t2], area, `lamina push --compression ${c}`));
        if (config.fs === 'tmpfs') area.remove(croot);
      }
      pushS.push(timed(...skopeoArgv(['copy', '-q', '--dest-tls-verify=false', `docker-archive:${img.archive}`, `docker://${reg.host}/bench/skopeo-${i}:1`]), area, 'skopeo copy (push)'));
      if (config.fs === 'tmpfs') area.remove(root);
    }

    const wall = (ts: Timing[]) => summarize(ts.map((x) => x.ms));
    const cpu = (ts: Timing[]) => {
      const known = ts.map((x) => x.cpuMs).filter((v): v is number => v !== null);
      return known.length ? `${(summarize(known).median / 1000).toFixed(2)} s` : 'n/a';
    };
    const ratio = (a: Timing[], b: Timing[]) => `${(wall(a).median / wall(b).median).toFixed(2)}×`;
    const load = os.loadavg()[0].toFixed(1);
    console.log(`\nregistry benchmark: ${config.layers} layers, ${(img.totalTar / 1e6).toFixed(1)} MB of layer tars (${img.files} files), ${(img.totalBlob / 1e6).toFixed(1)} MB gzip blobs; ${config.runs} runs each, alternating; stores and skopeo dirs on ${config.fs}; docker-registry on 127.0.0.1; load average ${load} at the end`);
    console.log('wall: median (min–max); cpu: median user+system of the process');
    console.log(formatTable(['operation', 'lamina wall', 'lamina cpu', 'skopeo wall', 'skopeo cpu', 'wall ratio', 'target'], [
      ['pull (lamina: download+verify+extract; skopeo: to dir:)', formatSummaryMs(wall(pullL)), cpu(pullL), formatSummaryMs(wall(pullS)), cpu(pullS), ratio(pullL, pullS), '≤ 1.0×'],
      ['push to a new repository (rebuild tar, gzip, upload)', formatSummaryMs(wall(pushL)), cpu(pushL), formatSummaryMs(wall(pushS)), cpu(pushS), ratio(pushL, pushS), '≤ 1.0×'],
      ['lamina re-push (every layer known: HEAD)', formatSummaryMs(wall(again)), cpu(again), '', '', '', ''],
      ['lamina push to another repository (mounts)', formatSummaryMs(wall(mount)), cpu(mount), '', '', '', ''],
      ['lamina push --compression zstd (OCI manifest)', formatSummaryMs(wall(pushZstd)), cpu(pushZstd), '', '', ratio(pushZstd, pushS), ''],
      ['lamina push --compression none', formatSummaryMs(wall(pushNone)), cpu(pushNone), '', '', ratio(pushNone, pushS), ''],
    ]));
  } finally {
    await reg.stop();
    area.removeAll();
    fs.rmSync(work, { recursive: true, force: true });
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((e) => {
    console.error(e instanceof Error ? e.message : e);
    process.exit(1);
  });
}
