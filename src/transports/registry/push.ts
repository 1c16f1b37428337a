// `lamina push`: every layer of the image goes up once. A layer whose compressed blob the
// registry already holds (known from Docker's distribution metadata) is only checked with HEAD, or
// mounted from another repository of the same registry; any other layer is rebuilt byte for
// byte from tar-split (so its diffID holds), compressed once while it streams to the registry,
// and its blob digest remembered for the next push. Then the config and, last, the manifest.
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Store } from '../../store.js';
import { chainIDs, sha256, type Digest } from '../../digest/index.js';
import { LaminaError } from '../../errors.js';
import { DistributionMetadata, checkHMAC, hmacKey, type V2Metadata } from '../../images/distribution.js';
import { familiarName, fullName, parseReference, withDefaultTag } from '../../images/reference.js';
import { sniffCompression, type Compression } from '../decompress.js';
import { RegistryClient, type ClientOptions } from './client.js';
import { mapLimit, shortDigest, type ProgressFn } from './events.js';
import { parallelGzip } from './gzip.js';
import { buildManifest, layerMediaType, type ManifestFormat } from './manifest.js';

export type UploadMode = 'stream' | 'chunked' | 'monolithic';

export interface PushOptions extends ClientOptions {
  /** Manifest format: Docker schema 2 (docker push's; default) or OCI. zstd layers force OCI. */
  format?: ManifestFormat;
  /** How layers that must be uploaded are compressed (default gzip, as docker push). */
  compression?: Compression;
  /** gzip level 1–9 (default 1, as crane/go-containerregistry push: the fastest, about 5% larger than 6). */
  gzipLevel?: number;
  /**
   * stream: one PATCH streaming the compressed layer, then PUT ?digest= (docker push's way);
   * chunked: PATCHes of `chunkSize` bytes with Content-Range; monolithic: compressed to a scratch
   * file first, then a single PUT with the body.
   */
  upload?: UploadMode;
  chunkSize?: number;
  /** Layers uploaded at once (dockerd's max-concurrent-uploads default is 5). */
  concurrency?: number;
  onProgress?: ProgressFn;
}

export type LayerOutcome = 'exists' | 'mounted' | 'pushed';

export interface PushedLayer {
  diffID: Digest;
  digest: Digest;
  size: number;
  mediaType: string;
  outcome: LayerOutcome;
  /** Repository a mounted blob came from. */
  from?: string;
}

export interface PushResult {
  /** Manifest digest (what RepoDigests records). */
  digest: Digest;
  /** Manifest size in bytes. */
  size: number;
  mediaType: string;
  tag: string;
  layers: PushedLayer[];
}

const MAX_MOUNT_ATTEMPTS = 3;
const DEFAULT_GZIP_LEVEL = 1;
const DEFAULT_CHUNK = 16 << 20;

/** Registry domain of a SourceRepository ("127.0.0.1:5000/app" → "127.0.0.1:5000"), or undefined. */
function repoOf(source: string): { domain: string; path: string } | undefined {
  try {
    const r = parseReference(source);
    return { domain: r.domain, path: r.path };
  } catch {
    return undefined;
  }
}

export async function pushImage(store: Store, input: string, opts: PushOptions = {}): Promise<PushResult> {
  const ref = withDefaultTag(parseReference(input));
  if (ref.digest || !ref.tag) throw new LaminaError('EINVAL', `cannot push a digest reference (${input}): push a tag`);
  const imageID = store.repositories.get(ref);
  if (!imageID || !store.images.has(imageID)) throw new LaminaError('ENOTFOUND', `An image does not exist locally with the tag: ${familiarName(ref)}`);
  const emit: ProgressFn = opts.onProgress ?? (() => {});
  const configBytes = store.images.getBytes(imageID);
  const config = store.images.get(imageID);
  const diffIDs = config.rootfs.diff_ids;
  const chains = chainIDs(diffIDs);
  for (const c of chains) if (!store.layers.has(c)) throw new LaminaError('ENOTFOUND', `layer ${c} of image ${imageID} is missing from the store`);

  const client = new RegistryClient(ref, ['pull', 'push'], opts);
  const key = hmacKey(client.auth.credentials);
  const dist = new DistributionMetadata(path.join(store.root, 'image', 'overlay2', 'distribution'));
  emit({ status: `The push refers to repository [${fullName(ref)}]` });

  // One job per distinct diffID: a layer repeated in the chain is compressed and sent once.
  const firstChain = new Map<Digest, Digest>();
  for (const [i, d] of diffIDs.entries()) if (!firstChain.has(d)) firstChain.set(d, chains[i]);
  const unique = [...firstChain.keys()];
  for (const d of [...unique].reverse()) emit({ id: shortDigest(d), status: 'Preparing' });
  const concurrency = Math.max(1, opts.concurrency ?? 5);
  if (unique.length > concurrency) for (const d of unique.slice(concurrency)) emit({ id: shortDigest(d), status: 'Waiting' });

  const done = await mapLimit(unique, concurrency, (diffID) =>
    pushLayer(store, client, dist, key, diffID, firstChain.get(diffID)!, opts, emit),
  );
  const byDiffID = new Map(done.map((l) => [l.diffID, l]));

  // Config, then the manifest (which the registry checks against the blobs it has).
  if (!(await client.statBlob(sha256(configBytes)))) {
    const { location } = await startSession(client);
    await client.finishUpload(location, sha256(configBytes), configBytes, configBytes.length);
  }
  const layers = diffIDs.map((d) => byDiffID.get(d)!);
  const compressions = layers.map((l) => l.mediaType);
  const format: ManifestFormat = opts.format ?? (compressions.some((m) => /zstd/.test(m)) ? 'oci' : 'docker');
  const manifest = buildManifest(
    format,
    { digest: sha256(configBytes), size: configBytes.length },
    layers.map((l) => ({ digest: l.digest, size: l.size, mediaType: retype(l.mediaType, format) })),
  );
  const digest = sha256(manifest.bytes);
  const reported = await client.putManifest(ref.tag, manifest.bytes, manifest.mediaType, `${familiarName(ref)}:${ref.tag}`);
  if (reported && reported !== digest) throw new LaminaError('EDIGEST', `the registry stored the manifest of ${familiarName(ref)}:${ref.tag} as ${reported}, but it hashes to ${digest}`);
  store.repositories.set({ domain: ref.domain, path: ref.path, digest }, imageID);
  emit({ status: `${ref.tag}: digest: ${digest} size: ${manifest.bytes.length}` });
  return { digest, size: manifest.bytes.length, mediaType: manifest.mediaType, tag: ref.tag, layers };
}

/** The same compression expressed in the manifest format's own media type. */
function retype(mediaType: string, format: ManifestFormat): string {
  const c: Compression = /gzip$/.test(mediaType) ? 'gzip' : /zstd$/.test(mediaType) ? 'zstd' : 'none';
  return layerMediaType(format, c);
}

async function startSession(client: RegistryClient): Promise<{ location: string }> {
  const s = await client.startUpload();
  if (s.mounted) throw new LaminaError('EREGISTRY', `${client.name} answered an upload request as a mount`);
  return { location: s.location };
}

/** Media type of a blob the registry already has, from its first bytes (or the diffID: a plain tar is its own blob). */
async function existingMediaType(client: RegistryClient, digest: Digest, diffID: Digest): Promise<string> {
  if (digest === diffID) return layerMediaType('docker', 'none');
  return layerMediaType('docker', sniffCompression(await client.blobHead(digest, 4)));
}

async function pushLayer(
  store: Store,
  client: RegistryClient,
  dist: DistributionMetadata,
  key: Buffer,
  diffID: Digest,
  chain: Digest,
  opts: PushOptions,
  emit: ProgressFn,
): Promise<PushedLayer> {
  const id = shortDigest(diffID);
  const known = dist.metadataOf(diffID).reverse(); // newest first
  const here = client.endpoint.domain;
  // 1. The target repository already has a blob of this layer.
  for (const meta of known) {
    const src = repoOf(meta.SourceRepository);
    if (!src || src.domain !== here || src.path !== client.repository) continue;
    const st = await client.statBlob(meta.Digest);
    if (!st) {
      dist.remove(meta);
      continue;
    }
    dist.tagAndAdd(diffID, key, { Digest: meta.Digest, SourceRepository: client.name });
    emit({ id, status: 'Layer already exists' });
    return { diffID, digest: meta.Digest, size: st.size, mediaType: await existingMediaType(client, meta.Digest, diffID), outcome: 'exists' };
  }
  // 2. Another repository of the same registry has it: mount (credentials that pushed it first, pulled ones next).
  const candidates = known
    .filter((m: V2Metadata) => {
      const src = repoOf(m.SourceRepository);
      return src && src.domain === here && src.path !== client.repository && (!m.HMAC || checkHMAC(m, key));
    })
    .sort((a, b) => Number(!!b.HMAC) - Number(!!a.HMAC))
    .slice(0, MAX_MOUNT_ATTEMPTS);
  let session: string | undefined;
  for (const meta of candidates) {
    const from = repoOf(meta.SourceRepository)!.path;
    const r = await client.startUpload({ digest: meta.Digest, from });
    if (r.mounted) {
      const st = await client.statBlob(meta.Digest);
      if (!st) continue;
      dist.tagAndAdd(diffID, key, { Digest: meta.Digest, SourceRepository: client.name });
      emit({ id, status: `Mounted from ${from}` });
      return { diffID, digest: meta.Digest, size: st.size, mediaType: await existingMediaType(client, meta.Digest, diffID), outcome: 'mounted', from };
    }
    // The registry opened an ordinary upload session instead; use it.
    session = r.location;
    break;
  }
  // 3. Upload: rebuild the tar from tar-split, compress once, stream it up.
  const compression = opts.compression ?? 'gzip';
  const total = await store.layers.tarSize(chain);
  const location = session ?? (await startSession(client)).location;
  let last = 0;
  const progress = (bytes: number) => {
    const now = Date.now();
    if (now - last < 100 && bytes < total) return;
    last = now;
    emit({ id, status: 'Pushing', current: bytes, total });
  };
  emit({ id, status: 'Pushing', current: 0, total });
  const up = await uploadLayer(store, client, chain, location, compression, opts, progress);
  dist.tagAndAdd(diffID, key, { Digest: up.digest, SourceRepository: client.name });
  emit({ id, status: 'Pushed' });
  return { diffID, digest: up.digest, size: up.size, mediaType: layerMediaType('docker', compression), outcome: 'pushed' };
}

/** Passes chunks through, reporting the running byte count. */
async function* counted(src: AsyncIterable<Buffer>, progress: (bytes: number) => void): AsyncGenerator<Buffer> {
  let n = 0;
  for await (const c of src) {
    n += c.length;
    progress(n);
    yield c;
  }
}

/**
 * The compressed layer: the tar rebuilt byte for byte from tar-split (progress counted in tar
 * bytes, as docker shows it), through gzip (zlib on every core, gzip.ts), zstd (the zstd program)
 * or nothing; hashed and counted into `out` as it passes.
 */
async function* compressedLayer(
  store: Store,
  chain: Digest,
  compression: Compression,
  gzipLevel: number | undefined,
  progress: (bytes: number) => void,
  out: { hash: ReturnType<typeof createHash>; size: number },
): AsyncGenerator<Buffer> {
  const tar = counted((await store.layers.openTar(chain)) as AsyncIterable<Buffer>, progress);
  let compressed: AsyncIterable<Buffer>;
  let finished: Promise<unknown> = Promise.resolve();
  if (compression === 'gzip') {
    compressed = parallelGzip(tar, { level: gzipLevel ?? DEFAULT_GZIP_LEVEL });
  } else if (compression === 'zstd') {
    const child = spawn('zstd', ['-q', '-c', '-3', '-T0'], { stdio: ['pipe', 'pipe', 'inherit'] });
    const exited = new Promise<void>((resolve, reject) => {
      child.once('error', (e) => reject(new LaminaError('EUNSUPPORTED', `zstd compression needs the zstd program: ${e.message}`)));
      child.once('close', (code, signal) => (code === 0 ? resolve() : reject(new LaminaError('EREGISTRY', `zstd exited with ${signal ?? `status ${code}`}`))));
    });
    finished = Promise.all([pipeline(tar, child.stdin), exited]);
    compressed = child.stdout;
  } else {
    compressed = tar;
  }
  finished.catch(() => {}); // awaited below; a failure also ends the read side early
  for await (const chunk of compressed) {
    out.hash.update(chunk);
    out.size += chunk.length;
    yield chunk;
  }
  await finished;
}

async function uploadLayer(
  store: Store,
  client: RegistryClient,
  chain: Digest,
  location: string,
  compression: Compression,
  opts: PushOptions,
  progress: (bytes: number) => void,
): Promise<{ digest: Digest; size: number }> {
  const out = { hash: createHash('sha256'), size: 0 };
  const body = compressedLayer(store, chain, compression, opts.gzipLevel, progress, out);
  const mode = opts.upload ?? 'stream';
  if (mode === 'stream') {
    const next = await client.patchUpload(location, body);
    const digest = 'sha256:' + out.hash.digest('hex');
    await client.finishUpload(next, digest);
    return { digest, size: out.size };
  }
  if (mode === 'chunked') {
    const chunkSize = Math.max(1, opts.chunkSize ?? DEFAULT_CHUNK);
    let loc = location;
    let sent = 0;
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    const send = async (buf: Buffer) => {
      loc = await client.patchUpload(loc, buf, { start: sent });
      sent += buf.length;
    };
    for await (const chunk of body) {
      pending.push(chunk);
      pendingBytes += chunk.length;
      while (pendingBytes >= chunkSize) {
        const all = Buffer.concat(pending, pendingBytes);
        await send(all.subarray(0, chunkSize));
        const rest = all.subarray(chunkSize);
        pending = rest.length ? [rest] : [];
        pendingBytes = rest.length;
      }
    }
    if (pendingBytes > 0) await send(Buffer.concat(pending, pendingBytes));
    const digest = 'sha256:' + out.hash.digest('hex');
    await client.finishUpload(loc, digest);
    return { digest, size: out.size };
  }
  // monolithic: the digest must be known before the PUT, so the blob is compressed to scratch first.
  const scratch = store.scratchDir('push');
  try {
    const file = path.join(scratch, 'blob');
    await pipeline(Readable.from(body), fs.createWriteStream(file));
    const digest = 'sha256:' + out.hash.digest('hex');
    await client.finishUpload(location, digest, fs.createReadStream(file, { highWaterMark: 1 << 20 }) as unknown as AsyncIterable<Uint8Array>, out.size);
    return { digest, size: out.size };
  } finally {
    fs.rmSync(scratch, { recursive: true, force: true });
  }
}
