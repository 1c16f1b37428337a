// `lamina pull`: manifest (platform chosen from an index) → config → layer blobs downloaded in
// parallel (on a worker thread for big pulls) into the resumable download cache, and applied
// bottom-up through the layer store while they arrive: each layer's stream ends only once its
// whole blob is verified against its digest (and the layer store checks the diffID), so nothing
// unverified is ever published. Only when every layer is in place are the config, the tags and
// Docker's distribution metadata written. A failure removes every layer and file this pull
// created, so the store is as before. A killed pull leaves verified (or partly received) blobs
// in the download cache for the next run; the layers it registered but never published are
// deleted by the next Store.open (its pin journal names them).
import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import type { Store } from '../../store.js';
import { chainIDs, sha256, type Digest } from '../../digest/index.js';
import { LaminaError } from '../../errors.js';
import { parseImageConfig } from '../../images/imagedb.js';
import { DistributionMetadata } from '../../images/distribution.js';
import { familiarString, fullName, parseReference, withDefaultTag, type Reference } from '../../images/reference.js';
import { decompressStream } from '../decompress.js';
import { verifyingStream } from '../archive-file.js';
import { hostPlatform, type Platform } from '../oci-layout.js';
import { RegistryClient, type ClientOptions } from './client.js';
import { DownloadCache, DownloadWorker } from './downloads.js';
import { shortDigest, type ProgressFn } from './events.js';
import { MAX_CONFIG_SIZE, parseManifest, platformString, selectPlatform, type Descriptor, type ImageManifest } from './manifest.js';

export interface PullOptions extends ClientOptions {
  /** Image to take from a multi-platform index (default: this machine's). Checked against the config when given. */
  platform?: Platform;
  /** Blobs downloaded at once (dockerd's max-concurrent-downloads default is 3). */
  concurrency?: number;
  onProgress?: ProgressFn;
}

export interface PullResult {
  /** Image ID (the config digest). */
  id: Digest;
  /** Canonical reference, as docker prints it last: docker.io/library/alpine:latest. */
  canonical: string;
  /** Short form: alpine:latest. */
  familiar: string;
  /** The digest recorded in RepoDigests: the index's when the image came from one. */
  digest: Digest;
  /** Digest of the image manifest itself. */
  manifestDigest: Digest;
  /** A tag moved or a layer was downloaded ("Downloaded newer image" vs "Image is up to date"). */
  newer: boolean;
  /** Blobs fetched from the registry by this run. */
  fetched: Digest[];
}

function canonicalString(ref: Reference): string {
  return fullName(ref) + (ref.tag ? ':' + ref.tag : '') + (ref.digest ? '@' + ref.digest : '');
}

export async function pullImage(store: Store, input: string, opts: PullOptions = {}): Promise<PullResult> {
  const ref = withDefaultTag(parseReference(input));
  const emit: ProgressFn = opts.onProgress ?? (() => {});
  const what = familiarString(ref);
  const client = new RegistryClient(ref, ['pull'], opts);
  emit({ status: `${ref.digest ?? ref.tag}: Pulling from ${ref.path}` });

  // Manifest, through the index when there is one.
  const top = await client.getManifest(ref.digest ?? ref.tag!, what);
  const parsedTop = parseManifest(top.bytes, top.mediaType, what);
  let manifest: ImageManifest;
  let manifestDigest = top.digest;
  if (parsedTop.kind === 'index') {
    const platform = opts.platform ?? hostPlatform();
    const entry = selectPlatform(parsedTop, platform, what);
    const m = await client.getManifest(entry.digest, `${what} (${platformString(platform)})`);
    const parsed = parseManifest(m.bytes, m.mediaType, `${what} (${platformString(platform)})`);
    if (parsed.kind !== 'manifest') throw new LaminaError('EUNSUPPORTED', `${what}: the ${platformString(platform)} entry of the index is itself an index`);
    manifest = parsed;
    manifestDigest = m.digest;
  } else {
    manifest = parsedTop;
  }

  // Config: the image ID is its digest; its diff_ids are what the layers must decompress to.
  const configBytes = await client.readBlob(manifest.config.digest, `config of ${what}`, MAX_CONFIG_SIZE);
  if (configBytes.length !== manifest.config.size) {
    throw new LaminaError('EDIGEST', `config ${manifest.config.digest} of ${what} is ${configBytes.length} bytes, but the manifest says ${manifest.config.size}`);
  }
  const config = parseImageConfig(configBytes, `config ${manifest.config.digest} of ${what}`);
  if (opts.platform && config.os && config.architecture && (config.os !== opts.platform.os || config.architecture !== opts.platform.architecture)) {
    throw new LaminaError('ENOTFOUND', `image ${what} was found but is ${config.os}/${config.architecture}, not the requested ${platformString(opts.platform)}`);
  }
  const diffIDs = config.rootfs.diff_ids;
  if (diffIDs.length !== manifest.layers.length) {
    throw new LaminaError('EBADINPUT', `${what}: the config lists ${diffIDs.length} diff_ids but the manifest has ${manifest.layers.length} layers`);
  }
  const imageID = sha256(configBytes);

  const fetched: Digest[] = [];
  const created: Digest[] = [];
  const chains = chainIDs(diffIDs);
  const cache = new DownloadCache(store.root);
  // Pinned until the image is published: no concurrent rmi deletes a layer this pull stands on,
  // and if this process dies, the next Store.open deletes the layers it registered but never
  // published (nothing is leaked). Their blobs stay in the download cache until the image is
  // published, so the re-run applies them again without fetching them.
  let unpin = store.layers.pin(chains);
  let tagMoved = false;
  try {
    if (!(store.images.has(imageID) && chains.every((c) => store.layers.has(c)))) {
      await pullLayers(store, client, cache, manifest.layers, diffIDs, chains, { ...opts, onProgress: emit, fetched, created });
    }
    // Docker's distribution metadata (which blob each layer came from), the config, the tag (when
    // pulled by tag) and repo@digest, as dockerd records them: published under the root lock, so
    // an rmi in another process sees all of it or none.
    const dist = new DistributionMetadata(path.join(store.root, 'image', 'overlay2', 'distribution'));
    store.lock.hold(() => {
      for (const c of chains) {
        if (!store.layers.has(c)) throw new LaminaError('ENOTFOUND', `layer ${c} of ${what} was removed while it was pulled`);
      }
      for (const [i, layer] of manifest.layers.entries()) dist.add(diffIDs[i], { Digest: layer.digest, SourceRepository: client.name, HMAC: '' });
      const stored = store.images.put(configBytes);
      if (stored !== imageID) throw new LaminaError('EDIGEST', `config of ${what} was stored as ${stored}, expected ${imageID}`);
      store.repositories.invalidate();
      if (ref.tag && !ref.digest) {
        tagMoved = store.repositories.get(ref) !== imageID;
        store.repositories.set(ref, imageID);
      }
      store.repositories.set({ domain: ref.domain, path: ref.path, digest: top.digest }, imageID);
    });
  } catch (e) {
    // The layers this pull registered go again (unless something else now uses them), and so
    // do those an rmi elsewhere left to us while our pin kept it from deleting them.
    unpin();
    unpin = () => {};
    store.lock.hold(() => store.collectUnreferenced([...created, ...chains]));
    throw e;
  } finally {
    unpin();
  }
  for (const layer of manifest.layers) cache.remove(layer.digest);
  cache.tidy();
  const newer = tagMoved || fetched.length > 0;
  emit({ status: `Digest: ${top.digest}` });
  emit({ status: `Status: ${newer ? 'Downloaded newer image' : 'Image is up to date'} for ${what}` });
  return { id: imageID, canonical: canonicalString(ref), familiar: what, digest: top.digest, manifestDigest, newer, fetched };
}

/** Blob bytes to fetch from which the download worker pays for its start-up. */
const WORKER_MIN_BYTES = 8 << 20;

interface LayerJob {
  desc: Descriptor;
  /** Settles when the blob is complete and verified in the cache (its path) or failed. */
  result?: Promise<string>;
  settled: boolean;
  /** Wakes readers following the blob's partial file (more bytes, or settled). */
  wakers: Array<() => void>;
}

function wake(job: LayerJob): void {
  const w = job.wakers;
  job.wakers = [];
  for (const f of w) f();
}

/** Resolves at the job's next progress or settlement (or after 100 ms, whichever is first). */
function nextGrowth(job: LayerJob): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, 100);
    job.wakers.push(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/**
 * The blob's bytes as they arrive: reads the cache's partial file while the download writes it,
 * and ends only once the download has completed and verified the whole blob (a failed download
 * fails this stream). A blob already complete is read from its file.
 */
async function* followBlob(cache: DownloadCache, job: LayerJob, counter: { bytes: number }): AsyncGenerator<Buffer> {
  let fh: fs.promises.FileHandle | undefined;
  while (!fh && !job.settled) {
    try {
      fh = await fs.promises.open(cache.partialPath(job.desc.digest), 'r');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      await nextGrowth(job);
    }
  }
  let followingComplete = !fh;
  if (!fh) fh = await fs.promises.open(await job.result!, 'r');
  let pos = 0;
  try {
    for (;;) {
      const buf = Buffer.allocUnsafe(1 << 20);
      const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
      if (bytesRead > 0) {
        pos += bytesRead;
        counter.bytes = pos;
        yield buf.subarray(0, bytesRead);
        continue;
      }
      if (job.settled) {
        const complete = await job.result!; // a failed download fails the layer
        if (pos >= job.desc.size || followingComplete) return;
        // The rest is in the complete blob. Not in the partial file we opened: the download may
        // have replaced it (a killed run's empty or full-size leftover is started afresh), and
        // then ours is an unlinked file that never grows.
        await fh.close();
        fh = await fs.promises.open(complete, 'r');
        followingComplete = true;
        continue;
      }
      await nextGrowth(job);
    }
  } finally {
    await fh.close();
  }
}

/**
 * Downloads and registers the layers not yet in the store (bottom-up), recording the ones it
 * registered in `opts.created`. Blobs stay in the cache for the caller to remove once the image
 * is published; on failure the blob files this call started are removed.
 */
async function pullLayers(
  store: Store,
  client: RegistryClient,
  cache: DownloadCache,
  layers: Descriptor[],
  diffIDs: Digest[],
  chains: Digest[],
  opts: PullOptions & { onProgress: ProgressFn; fetched: Digest[]; created: Digest[] },
): Promise<void> {
  const emit = opts.onProgress;
  // A layer present means its whole chain below is present.
  let present = 0;
  for (let i = chains.length - 1; i >= 0; i--) {
    if (store.layers.has(chains[i])) {
      present = i + 1;
      break;
    }
  }
  const jobs = new Map<Digest, LayerJob>();
  for (let i = 0; i < layers.length; i++) {
    if (i < present) {
      emit({ id: shortDigest(layers[i].digest), status: 'Already exists' });
      continue;
    }
    if (!jobs.has(layers[i].digest)) jobs.set(layers[i].digest, { desc: layers[i], settled: false, wakers: [] });
  }
  for (const job of jobs.values()) emit({ id: shortDigest(job.desc.digest), status: 'Pulling fs layer' });

  // Big transfers run on a worker thread while this one extracts; small ones are not worth
  // starting it (LAMINA_DOWNLOAD_WORKER=1 always uses it, =0 never).
  let toFetch = 0;
  for (const j of jobs.values()) if (!cache.hasComplete(j.desc)) toFetch += j.desc.size;
  const workerMode = process.env.LAMINA_DOWNLOAD_WORKER;
  const useWorker = toFetch > 0 && workerMode !== '0' && (workerMode === '1' || toFetch >= WORKER_MIN_BYTES);
  const worker = useWorker ? DownloadWorker.start() : undefined;
  const abort = new AbortController();
  const createdFiles = new Set<Digest>();
  const concurrency = Math.max(1, opts.concurrency ?? 3);

  // Downloads run in layer order, `concurrency` at a time; each job's promise settles when its
  // blob is complete and verified in the cache.
  const queue = [...jobs.values()];
  let running = 0;
  const waiters: Array<() => void> = [];
  const slot = async () => {
    while (running >= concurrency) await new Promise<void>((r) => waiters.push(r));
    running++;
  };
  const release = () => {
    running--;
    waiters.shift()?.();
  };
  for (const [n, job] of queue.entries()) {
    const id = shortDigest(job.desc.digest);
    if (n >= concurrency && !cache.hasComplete(job.desc)) emit({ id, status: 'Waiting' });
    job.result = (async () => {
      if (cache.hasComplete(job.desc)) {
        emit({ id, status: 'Download complete' });
        return cache.completePath(job.desc.digest);
      }
      await slot();
      try {
        if (abort.signal.aborted) throw abort.signal.reason;
        // Files this pull starts are removed again if it fails; partial ones left by a killed run stay.
        if (!fs.existsSync(cache.partialPath(job.desc.digest))) createdFiles.add(job.desc.digest);
        let last = 0;
        const r = await cache.download(client, job.desc, {
          signal: abort.signal,
          worker,
          onWait: () => emit({ id, status: 'Waiting for another lamina process downloading it' }),
          onProgress: (bytes) => {
            wake(job);
            const now = Date.now();
            if (now - last < 100 && bytes < job.desc.size) return;
            last = now;
            emit({ id, status: 'Downloading', current: bytes, total: job.desc.size });
          },
        });
        opts.fetched.push(job.desc.digest);
        emit({ id, status: 'Verifying Checksum' });
        emit({ id, status: 'Download complete' });
        return r.file;
      } catch (e) {
        if (!abort.signal.aborted) abort.abort(e);
        throw e;
      } finally {
        release();
      }
    })();
    job.result.catch(() => {}).finally(() => {
      job.settled = true;
      wake(job);
    }); // awaited below; this only keeps an early failure from being "unhandled"
  }

  try {
    let parent = present > 0 ? chains[present - 1] : undefined;
    // On top of a layer that was already there, the first new layer waits for every blob to be
    // verified: registering it marks that parent `committed`, which a rollback through the layer
    // store cannot take back. On an empty chain, applying overlaps with the downloads.
    if (present > 0) await Promise.race([Promise.all([...jobs.values()].map((j) => j.result)), aborted(abort.signal)]);
    for (let i = present; i < layers.length; i++) {
      const desc = layers[i];
      const job = jobs.get(desc.digest)!;
      const id = shortDigest(desc.digest);
      if (store.layers.has(chains[i])) {
        // Another process registered it meanwhile.
        await Promise.race([job.result!, aborted(abort.signal)]);
        parent = chains[i];
      } else {
        // Applied while it downloads; hashed here too, so what is applied is what was verified.
        const read = { bytes: 0 };
        const source = Readable.from(followBlob(cache, job, read), { objectMode: false, highWaterMark: 1 << 20 });
        abort.signal.addEventListener('abort', () => source.destroy(abort.signal.reason as Error), { once: true });
        const checked = verifyingStream(source, desc.digest, `blob ${desc.digest} from ${client.name}`, desc.size);
        const tar = await decompressStream(checked, { name: `layer blob ${desc.digest}` });
        let last = 0;
        const r = await store.layers.register(parent, tar, {
          expectDiffID: diffIDs[i],
          label: `layer ${i} (blob ${desc.digest})`,
          // The blob's size tells the applier a large layer is coming (it then extracts on a worker).
          sizeHint: desc.size,
          onProgress: () => {
            const now = Date.now();
            if (now - last < 100) return;
            last = now;
            emit({ id, status: 'Extracting', current: read.bytes, total: desc.size });
          },
        });
        if (r.created) opts.created.push(r.layer.chainID);
        parent = r.layer.chainID;
      }
      emit({ id, status: 'Pull complete' });
    }
  } catch (e) {
    if (!abort.signal.aborted) abort.abort(e);
    await Promise.allSettled([...jobs.values()].map((j) => j.result));
    for (const d of createdFiles) cache.remove(d);
    cache.tidy();
    throw e;
  } finally {
    await worker?.close();
  }
}

/** A promise that rejects when `signal` aborts (with its reason). */
function aborted(signal: AbortSignal): Promise<never> {
  return new Promise((_, reject) => {
    if (signal.aborted) reject(signal.reason);
    else signal.addEventListener('abort', () => reject(signal.reason), { once: true });
  });
}
