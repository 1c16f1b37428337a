// Layer blobs on their way from a registry into the store, kept under <root>/downloads so a pull
// that is killed can be resumed without fetching them again:
//   downloads/partial/<hex>   bytes received so far (resumed with an HTTP Range request)
//   downloads/sha256/<hex>    complete blobs whose digest and size were verified
//   downloads/locks/<hex>     flock'ed while a process downloads the blob (two pulls of one image
//                             must not append to one partial file); removed by its holder
// Nothing here is part of Docker's layout; a finished pull leaves the directory empty and
// removes it. Store.open's scratch wipe (tmp/) would defeat resuming, hence the own directory.
// Blobs are fetched on a worker thread (download-worker.ts) when one is given, else here.
// Both write the partial file in batches, flushed at least every 200 ms, so a reader can follow it.
import fs from 'node:fs';
import path from 'node:path';
import { createHash, type Hash } from 'node:crypto';
import { hex, type Digest } from '../../digest/index.js';
import { LaminaError } from '../../errors.js';
import { Worker } from 'node:worker_threads';
import { discard, type RegistryClient } from './client.js';
import type { GetJob, WorkerReply } from './download-worker.js';
import { describeFetchError } from './auth.js';
import { faultPoint } from '../../fsutil.js';
import { lockFile } from '../../lock.js';

export const DOWNLOADS_DIR = 'downloads';
/** Downloads nobody came back for are dropped after this long. */
const STALE_MS = 7 * 24 * 3600 * 1000;
/** Received bytes are written in batches of about this size. */
const WRITE_BATCH = 1 << 20;
const FLUSH_MS = 200;
/** Attempts for a blob whose connection breaks (each resumes where the last stopped). */
const ATTEMPTS = 4;

export interface BlobDescriptor {
  digest: Digest;
  size: number;
}

export class DownloadCache {
  readonly dir: string;
  private readonly completeDir: string;
  private readonly partialDir: string;
  private readonly locksDir: string;

  constructor(storeRoot: string) {
    this.dir = path.join(storeRoot, DOWNLOADS_DIR);
    this.completeDir = path.join(this.dir, 'sha256');
    this.partialDir = path.join(this.dir, 'partial');
    this.locksDir = path.join(this.dir, 'locks');
  }

  completePath(d: Digest): string {
    return path.join(this.completeDir, hex(d));
  }

  partialPath(d: Digest): string {
    return path.join(this.partialDir, hex(d));
  }

  private ensureDirs(): void {
    for (const d of [this.dir, this.completeDir, this.partialDir, this.locksDir]) fs.mkdirSync(d, { recursive: true, mode: 0o700 });
  }

  /** A complete, already verified blob of the right size left by an earlier (interrupted) pull. */
  hasComplete(blob: BlobDescriptor): boolean {
    const st = fs.statSync(this.completePath(blob.digest), { throwIfNoEntry: false });
    return !!st && st.isFile() && st.size === blob.size;
  }

  remove(d: Digest): void {
    fs.rmSync(this.completePath(d), { force: true });
    fs.rmSync(this.partialPath(d), { force: true });
  }

  /** Removes the directories when nothing is left in them, and old leftovers. */
  tidy(): void {
    const now = Date.now();
    for (const sub of [this.completeDir, this.partialDir]) {
      let names: string[];
      try {
        names = fs.readdirSync(sub);
      } catch {
        continue;
      }
      for (const n of names) {
        const p = path.join(sub, n);
        const st = fs.statSync(p, { throwIfNoEntry: false });
        if (st && now - st.mtimeMs > STALE_MS) fs.rmSync(p, { force: true });
      }
    }
    for (const d of [this.completeDir, this.partialDir, this.locksDir, this.dir]) {
      try {
        fs.rmdirSync(d);
      } catch {
        /* not empty, or gone */
      }
    }
  }

  /**
   * Fetches a blob into the cache and verifies it (size and sha256) before it counts as
   * complete. Bytes an earlier attempt left in partial/ are kept and only the rest is requested.
   * Returns the path of the complete blob and whether this call created any file.
   */
  async download(
    client: RegistryClient,
    blob: BlobDescriptor,
    opts: { signal?: AbortSignal; onProgress?: (bytes: number) => void; onResume?: (offset: number) => void; onWait?: () => void; worker?: DownloadWorker } = {},
  ): Promise<{ file: string; created: boolean }> {
    const done = this.completePath(blob.digest);
    if (this.hasComplete(blob)) return { file: done, created: false };
    // Two pulls of one blob must not append to one partial file: the second waits, then reuses it.
    const unlock = await lockFile(path.join(this.locksDir, hex(blob.digest)), { signal: opts.signal, onWait: opts.onWait, ensureDir: () => this.ensureDirs() });
    try {
      // Another process may have finished it while this one waited.
      if (this.hasComplete(blob)) return { file: done, created: false };
      return await this.downloadLocked(client, blob, opts);
    } finally {
      unlock();
    }
  }

  private async downloadLocked(
    client: RegistryClient,
    blob: BlobDescriptor,
    opts: { signal?: AbortSignal; onProgress?: (bytes: number) => void; onResume?: (offset: number) => void; worker?: DownloadWorker },
  ): Promise<{ file: string; created: boolean }> {
    const done = this.completePath(blob.digest);
    const partial = this.partialPath(blob.digest);
    const created = !fs.existsSync(partial);
    if (opts.worker) {
      const { url, headers } = await client.blobRequest(blob.digest);
      try {
        await opts.worker.run({ url, headers, partial, complete: done, digest: blob.digest, size: blob.size, label: client.name }, opts);
        return { file: done, created };
      } catch (e) {
        // A refused token (expired, or the registry wants another) is renewed here, in-thread;
        // a worker that could not run at all leaves the download to this thread too.
        const workerFailed = (e as { workerFailed?: boolean }).workerFailed === true;
        if (!(e instanceof LaminaError && (e.code === 'EAUTH' || workerFailed))) throw e;
        if (opts.signal?.aborted) throw e;
      }
    }
    for (let attempt = 1; ; attempt++) {
      if (opts.signal?.aborted) throw opts.signal.reason;
      // Whatever an earlier attempt (or an earlier, killed process) received is kept.
      const hash = createHash('sha256');
      let have = 0;
      const st = fs.statSync(partial, { throwIfNoEntry: false });
      if (st?.isFile() && st.size > 0 && st.size < blob.size) {
        have = await hashFile(partial, hash);
        opts.onResume?.(have);
      } else {
        fs.rmSync(partial, { force: true });
      }
      try {
        have = await this.fetchInto(client, blob, partial, have, hash, opts);
      } catch (e) {
        const transient = e instanceof LaminaError && (e as TransientError).transient === true;
        if (!transient || attempt >= ATTEMPTS || opts.signal?.aborted) throw e;
        if ((e as TransientError).restart) fs.rmSync(partial, { force: true });
        await new Promise((r) => setTimeout(r, 250 * 2 ** (attempt - 1)));
        continue;
      }
      const got = 'sha256:' + hash.digest('hex');
      if (have !== blob.size || got !== blob.digest) {
        fs.rmSync(partial, { force: true });
        if (have !== blob.size) throw new LaminaError('EDIGEST', `blob ${blob.digest} from ${client.name} is ${have} bytes, but the manifest says ${blob.size}`);
        throw new LaminaError('EDIGEST', `blob ${blob.digest} from ${client.name} does not match its digest: the content hashes to ${got}`);
      }
      faultPoint();
      fs.renameSync(partial, done);
      return { file: done, created };
    }
  }

  /** One GET (ranged when `have` > 0); appends to `partial`; returns the byte count now in it. */
  private async fetchInto(
    client: RegistryClient,
    blob: BlobDescriptor,
    partial: string,
    have: number,
    hash: Hash,
    opts: { signal?: AbortSignal; onProgress?: (bytes: number) => void },
  ): Promise<number> {
    const res = await client.getBlob(blob.digest, { offset: have > 0 ? have : undefined, signal: opts.signal });
    if (have > 0 && res.status === 200) {
      // The registry ignored the range: start over.
      await discard(res);
      throw transientError(`${client.name} does not resume blob downloads`, true);
    }
    const fh = await fs.promises.open(partial, have > 0 ? 'a' : 'w', 0o600);
    let batch: Buffer[] = [];
    let batched = 0;
    let lastFlush = Date.now();
    const flush = async () => {
      lastFlush = Date.now();
      if (batched === 0) return;
      const bufs = batch;
      batch = [];
      batched = 0;
      await fh.writev(bufs);
    };
    try {
      const reader = (res.body as ReadableStream<Uint8Array>).getReader();
      for (;;) {
        let r: ReadableStreamReadResult<Uint8Array>;
        try {
          r = await reader.read();
        } catch (e) {
          if (opts.signal?.aborted) throw opts.signal.reason ?? e;
          throw transientError(`fetching blob ${blob.digest} from ${client.name}: ${describeFetchError(e)}`);
        }
        if (r.done) break;
        const chunk = Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength);
        if (have + chunk.length > blob.size) {
          await reader.cancel().catch(() => {});
          throw new LaminaError('EDIGEST', `blob ${blob.digest} from ${client.name} is larger than the ${blob.size} bytes the manifest says`);
        }
        hash.update(chunk);
        batch.push(chunk);
        batched += chunk.length;
        have += chunk.length;
        // Batched for throughput, but flushed at least every FLUSH_MS so a killed pull keeps what it received.
        if (batched >= WRITE_BATCH || Date.now() - lastFlush >= FLUSH_MS) await flush();
        opts.onProgress?.(have);
      }
      await flush();
    } finally {
      await fh.close();
    }
    return have;
  }
}

/** A broken connection: worth another attempt (from scratch when `restart`). */
type TransientError = LaminaError & { transient?: boolean; restart?: boolean };

function transientError(message: string, restart = false): TransientError {
  return Object.assign(new LaminaError('EREGISTRY', message), { transient: true, restart });
}

/** The download worker (download-worker.ts), with one promise per blob it fetches. */
export class DownloadWorker {
  private readonly worker: Worker;
  private nextID = 1;
  private readonly jobs = new Map<number, { resolve: () => void; reject: (e: Error) => void; onProgress?: (bytes: number) => void; onResume?: (offset: number) => void }>();
  private failed: Error | undefined;

  private constructor(worker: Worker) {
    this.worker = worker;
    worker.on('message', (m: WorkerReply) => {
      const job = this.jobs.get(m.id);
      if (!job) return;
      if (m.kind === 'progress') job.onProgress?.(m.bytes);
      else if (m.kind === 'resumed') job.onResume?.(m.offset);
      else {
        this.jobs.delete(m.id);
        if (m.kind === 'done') job.resolve();
        else job.reject(new LaminaError(m.code, m.message));
      }
    });
    const fail = (e: Error) => {
      this.failed ??= Object.assign(new LaminaError('EREGISTRY', `the download worker failed: ${e.message}`), { workerFailed: true });
      for (const j of this.jobs.values()) j.reject(this.failed);
      this.jobs.clear();
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`exited with status ${code}`)));
  }

  /** Starts the worker (from the .ts source when running under tsx, the .js build otherwise). */
  static start(): DownloadWorker {
    if (!import.meta.url.endsWith('.ts')) return new DownloadWorker(new Worker(new URL('./download-worker.js', import.meta.url)));
    // Running from source (tests, under tsx): the worker registers tsx's loader before importing the .ts module.
    const url = new URL('./download-worker.ts', import.meta.url).href;
    const boot = `import('tsx/esm/api').then((tsx) => { tsx.register(); return import(${JSON.stringify(url)}); })`;
    return new DownloadWorker(new Worker(boot, { eval: true }));
  }

  run(job: Omit<GetJob, 'op' | 'id'>, opts: { signal?: AbortSignal; onProgress?: (bytes: number) => void; onResume?: (offset: number) => void }): Promise<void> {
    if (this.failed) return Promise.reject(this.failed);
    const id = this.nextID++;
    return new Promise<void>((resolve, reject) => {
      const onAbort = () => this.worker.postMessage({ op: 'cancel', id });
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      const settle = () => opts.signal?.removeEventListener('abort', onAbort);
      this.jobs.set(id, {
        resolve: () => (settle(), resolve()),
        reject: (e) => (settle(), reject(opts.signal?.aborted ? (opts.signal.reason ?? e) : e)),
        onProgress: opts.onProgress,
        onResume: opts.onResume,
      });
      this.worker.postMessage({ op: 'get', id, ...job } satisfies GetJob);
    });
  }

  async close(): Promise<void> {
    this.worker.removeAllListeners('exit');
    await this.worker.terminate();
  }
}

async function hashFile(file: string, hash: Hash): Promise<number> {
  let n = 0;
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) {
    hash.update(chunk);
    n += chunk.length;
  }
  return n;
}
