// Extraction on a worker thread, so that a large layer uses both cores: the parsing thread keeps
// reading, hashing and recording tar-split while the worker does the file-system calls. A
// worker takes over from a LayerExtractor on the parsing thread between two entries, with that
// extractor's state (applyLayer extracts locally while the worker starts).
//
// The parsing thread forwards the extractor's events (entry, data, entryEnd) as records in 1 MiB
// buffers, which are transferred to the worker and back with the acknowledgement for reuse (a
// binary encoding: cloning a structured message per entry costs more than the extraction saves).
// At most MAX_IN_FLIGHT buffers are outstanding, so memory stays bounded whatever the layer size.
//
// The worker replays the events in order into a LayerExtractor, so extraction is exactly what it
// is on one thread. Errors keep their stream order too: every event the worker sees has already
// passed the parsing thread's visitors, so a worker failure always belongs to an earlier entry
// than any failure the parsing thread meets later, and wins over it (see RemoteExtractor.abort).
import { Worker, type MessagePort } from 'node:worker_threads';
import { LaminaError, type ErrorCode } from '../errors.js';
import { SysError } from '../sys/index.js';
import { TypeFlag, type TarHeader, type TarVisitor } from '../tar/types.js';
import { LayerExtractor, type ExtractHeader, type ExtractorState } from './extract.js';

// Records, little-endian:
//   ENTRY  u8 op, u8 typeflag, u8 flags (HAS_ATIME), u8 0, u32 nameLen, u32 linkLen, u32 xattrs,
//          f64 mode, uid, gid, mtime, mtimeNsec, atime, atimeNsec, devmajor, devminor,
//          name bytes (as in the tar), linkname (UTF-8), then per xattr: u32 len, key (UTF-8), u32 len, value
//   DATA   u8 op, u32 length, content bytes
//   END    u8 op
const OP_ENTRY = 1;
const OP_DATA = 2;
const OP_END = 3;
const HAS_ATIME = 1;
const ENTRY_FIXED = 16 + 9 * 8;
const DATA_FIXED = 5;
const BATCH_BYTES = 1 << 20;
/** Batches posted and not yet acknowledged before the parsing thread waits. */
const MAX_IN_FLIGHT = 4;

type Request =
  | { type: 'start'; state: ExtractorState }
  | { type: 'batch'; buf: ArrayBuffer; length: number }
  | { type: 'finish' }
  | { type: 'abort' };

type Reply =
  | { type: 'ready' }
  | { type: 'ack'; buf: ArrayBuffer }
  | { type: 'error'; error: WireError }
  | { type: 'done'; result: { size: number; entries: number } | null };

/**
 * A worker kept between layers (unreferenced, so it never keeps the process alive): an image's
 * next large layer skips the worker's start-up and finds its code already optimised.
 */
let idleWorker: Worker | null = null;
/** Workers whose extraction code is loaded (they said 'ready'). */
const booted = new WeakSet<Worker>();
/** The idle worker's own listeners (an idle worker that dies is simply forgotten). */
const onIdleError = (): void => {};
function onIdleExit(this: Worker): void {
  if (idleWorker === this) idleWorker = null;
}

function startWorker(): Worker {
  const w = import.meta.url.endsWith('.ts')
    ? // Run from the TypeScript sources (tests, under tsx): the worker needs tsx's loader too.
      new Worker(
        `import('tsx/esm/api').then((tsx) => tsx.register()).then(() => import(${JSON.stringify(new URL('./extract-worker.ts', import.meta.url).href)}))`,
        { eval: true, stdout: false, stderr: false },
      )
    : new Worker(new URL('./extract-worker.js', import.meta.url), { stdout: false, stderr: false });
  w.once('message', () => booted.add(w)); // the first message a worker sends is 'ready'
  return w;
}

function takeWorker(): Worker {
  const w = idleWorker;
  if (w === null) return startWorker();
  idleWorker = null;
  w.off('error', onIdleError).off('exit', onIdleExit);
  w.ref();
  return w;
}

/** Keeps a worker that finished cleanly for the next layer (one is enough), else ends it. */
function releaseWorker(w: Worker): void {
  if (idleWorker !== null) {
    void w.terminate();
    return;
  }
  idleWorker = w;
  w.unref();
  w.on('error', onIdleError).on('exit', onIdleExit);
}

// ---------------------------------------------------------------- parsing thread

/**
 * The parsing thread's end: a TarVisitor that feeds a LayerExtractor running in a worker, once
 * begin() has handed it the state to carry on from.
 */
export class RemoteExtractor implements TarVisitor {
  private readonly worker: Worker;
  private buf: Buffer | null = null;
  private view: DataView | null = null;
  private fill = 0;
  private readonly pool: ArrayBuffer[] = [];
  private inFlight = 0;
  /** Whether the current entry's content goes to the worker (only regular files use it). */
  private forwardData = false;
  /** The worker's failure (or its death), rebuilt on this thread. */
  private failure: unknown = null;
  private wake: (() => void) | null = null;
  private result: { size: number; entries: number } | null = null;
  /** begin() was called: the worker owns the layer. */
  private started = false;
  /** No more replies will come (the worker finished, was released, or died). */
  private done = false;

  private readonly onMessage = (m: Reply): void => this.onReply(m);
  private readonly onError = (e: unknown): void => this.onDeath(e);
  private readonly onExit = (code: number): void => this.onDeath(new Error(`layer extraction worker exited (code ${code})`));

  /** Takes an idle worker or starts one; nothing is extracted until begin(). */
  constructor() {
    this.worker = takeWorker();
    this.worker.on('message', this.onMessage).on('error', this.onError).on('exit', this.onExit);
  }

  /** Whether the worker is up and could take over now. */
  get isReady(): boolean {
    return this.failure === null && !this.done && booted.has(this.worker);
  }

  /** Resolves once the worker is up; throws if it cannot start. */
  async whenReady(): Promise<void> {
    while (this.failure === null && !this.done && !booted.has(this.worker)) await this.nextReply();
    if (this.failure !== null) throw this.failure;
  }

  /** Hands the layer over: the worker carries on from `state` (a LayerExtractor's, between entries). */
  begin(state: ExtractorState): void {
    this.started = true;
    this.worker.postMessage({ type: 'start', state } satisfies Request);
  }

  /** Not needed after all (the layer ended before the worker was up): keeps it for a later layer. */
  release(): void {
    if (this.started || this.done) return;
    this.done = true;
    this.worker.off('message', this.onMessage).off('error', this.onError).off('exit', this.onExit);
    if (this.failure === null) releaseWorker(this.worker);
    else void this.worker.terminate();
  }

  entry(h: TarHeader): void {
    if (h.typeflag === TypeFlag.XGlobalHeader) return; // the extractor ignores it
    const link = h.linkname;
    let need = ENTRY_FIXED + h.nameBytes.length + link.length * 3;
    for (const [k, v] of h.xattrs) need += 8 + k.length * 3 + v.length;
    const b = this.reserve(need);
    const d = this.view!;
    let p = this.fill;
    const at = h.atime;
    b[p] = OP_ENTRY;
    b[p + 1] = h.typeflag.charCodeAt(0);
    b[p + 2] = at ? HAS_ATIME : 0;
    b[p + 3] = 0;
    d.setUint32(p + 4, h.nameBytes.length, true);
    const linkAt = p + ENTRY_FIXED + h.nameBytes.length;
    const linkLen = link.length === 0 ? 0 : b.write(link, linkAt, 'utf8');
    d.setUint32(p + 8, linkLen, true);
    d.setUint32(p + 12, h.xattrs.length, true);
    d.setFloat64(p + 16, h.mode, true);
    d.setFloat64(p + 24, h.uid, true);
    d.setFloat64(p + 32, h.gid, true);
    d.setFloat64(p + 40, h.mtime, true);
    d.setFloat64(p + 48, h.mtimeNsec, true);
    d.setFloat64(p + 56, at ? at[0] : 0, true);
    d.setFloat64(p + 64, at ? at[1] : 0, true);
    d.setFloat64(p + 72, h.devmajor, true);
    d.setFloat64(p + 80, h.devminor, true);
    h.nameBytes.copy(b, p + ENTRY_FIXED);
    p = linkAt + linkLen;
    for (const [k, v] of h.xattrs) {
      const kl = b.write(k, p + 4, 'utf8');
      d.setUint32(p, kl, true);
      p += 4 + kl;
      d.setUint32(p, v.length, true);
      v.copy(b, p + 4);
      p += 4 + v.length;
    }
    this.fill = p;
    this.forwardData = h.typeflag === TypeFlag.Reg;
  }

  data(chunk: Buffer): void {
    if (!this.forwardData) return;
    for (let off = 0; off < chunk.length; ) {
      const b = this.reserve(DATA_FIXED + 1);
      const n = Math.min(chunk.length - off, b.length - this.fill - DATA_FIXED);
      b[this.fill] = OP_DATA;
      this.view!.setUint32(this.fill + 1, n, true);
      chunk.copy(b, this.fill + DATA_FIXED, off, off + n);
      this.fill += DATA_FIXED + n;
      off += n;
    }
  }

  entryEnd(h: TarHeader): void {
    if (h.typeflag === TypeFlag.XGlobalHeader) return;
    this.reserve(1)[this.fill++] = OP_END;
  }

  /**
   * Posts what is pending, then waits while too many batches are in flight. Throws the worker's
   * failure once there is one. Call between input chunks.
   */
  async waitForRoom(): Promise<void> {
    this.flush();
    while (this.failure === null && this.inFlight >= MAX_IN_FLIGHT) await this.nextReply();
    if (this.failure !== null) throw this.failure;
  }

  /** After the last event: directory times and the size, computed by the worker. */
  async finish(): Promise<{ size: number; entries: number }> {
    if (!this.done) {
      this.flush();
      this.worker.postMessage({ type: 'finish' } satisfies Request);
      await this.settle();
    }
    if (this.failure !== null) throw this.failure;
    return this.result!;
  }

  /**
   * The parsing thread failed with `error` (or the input did): lets the worker replay what it was
   * sent, so an earlier entry's extraction failure is the one reported, as on one thread; closes
   * the worker's open file. Returns the error to throw. The layer directory is quiet afterwards.
   */
  async abort(error: unknown): Promise<unknown> {
    if (!this.done) {
      this.flush();
      this.worker.postMessage({ type: 'abort' } satisfies Request);
      await this.settle();
    }
    return this.failure ?? error;
  }

  /** The current buffer, with at least `n` free bytes (a fresh one if needed). */
  private reserve(n: number): Buffer {
    if (this.buf !== null && this.buf.length - this.fill >= n) return this.buf;
    this.flush();
    const ab = n <= BATCH_BYTES ? this.pool.pop() ?? Buffer.allocUnsafeSlow(BATCH_BYTES).buffer : Buffer.allocUnsafeSlow(n).buffer;
    this.buf = Buffer.from(ab as ArrayBuffer);
    this.view = new DataView(ab as ArrayBuffer);
    this.fill = 0;
    return this.buf;
  }

  private flush(): void {
    if (this.buf === null || this.fill === 0) return;
    const buf = this.buf.buffer as ArrayBuffer;
    if (this.failure === null && !this.done) {
      this.worker.postMessage({ type: 'batch', buf, length: this.fill } satisfies Request, [buf]);
      this.inFlight++;
    }
    this.buf = null;
    this.view = null;
    this.fill = 0;
  }

  private onReply(m: Reply): void {
    switch (m.type) {
      case 'ready':
        break;
      case 'ack':
        this.inFlight--;
        if (m.buf.byteLength === BATCH_BYTES && this.pool.length < MAX_IN_FLIGHT) this.pool.push(m.buf);
        break;
      case 'error':
        this.failure ??= fromWire(m.error);
        break;
      case 'done':
        this.result = m.result;
        this.done = true;
        this.worker.off('message', this.onMessage).off('error', this.onError).off('exit', this.onExit);
        // A worker whose extraction failed is not trusted with another one.
        if (this.failure === null) releaseWorker(this.worker);
        else void this.worker.terminate();
        break;
    }
    this.notify();
  }

  private onDeath(e: unknown): void {
    if (this.done) return;
    this.failure ??= e;
    this.done = true;
    this.notify();
  }

  private notify(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  private nextReply(): Promise<void> {
    return new Promise((resolve) => (this.wake = resolve));
  }

  /** Waits for the worker's final reply (or its death). */
  private async settle(): Promise<void> {
    while (!this.done) await this.nextReply();
  }
}

// ---------------------------------------------------------------- worker thread

/**
 * The worker's end: each 'start' begins a layer; its batches are replayed into a fresh
 * LayerExtractor, and one failure stops all later work on that layer.
 */
export function serveExtraction(port: MessagePort): void {
  let extractor: LayerExtractor = null!;
  port.postMessage({ type: 'ready' } satisfies Reply);
  let failed = false;
  const fail = (e: unknown) => {
    failed = true;
    extractor.close();
    port.postMessage({ type: 'error', error: toWire(e) } satisfies Reply);
  };
  port.on('message', (m: Request) => {
    switch (m.type) {
      case 'start':
        extractor = LayerExtractor.from(m.state);
        failed = false;
        break;
      case 'batch':
        if (!failed) {
          try {
            replay(extractor, m.buf, m.length);
          } catch (e) {
            fail(e);
          }
        }
        port.postMessage({ type: 'ack', buf: m.buf } satisfies Reply, [m.buf]);
        break;
      case 'finish': {
        let result: { size: number; entries: number } | null = null;
        if (!failed) {
          try {
            result = { size: extractor.finish(), entries: extractor.entries };
          } catch (e) {
            fail(e);
          }
        }
        port.postMessage({ type: 'done', result } satisfies Reply);
        break;
      }
      case 'abort':
        extractor.close();
        port.postMessage({ type: 'done', result: null } satisfies Reply);
        break;
    }
  });
}

function replay(extractor: LayerExtractor, ab: ArrayBuffer, length: number): void {
  const b = Buffer.from(ab, 0, length);
  const d = new DataView(ab, 0, length);
  for (let p = 0; p < length; ) {
    switch (b[p]) {
      case OP_ENTRY: {
        const nameLen = d.getUint32(p + 4, true);
        const linkLen = d.getUint32(p + 8, true);
        let xattrCount = d.getUint32(p + 12, true);
        const nameAt = p + ENTRY_FIXED;
        const linkAt = nameAt + nameLen;
        const xattrs: Array<[string, Buffer]> = [];
        let q = linkAt + linkLen;
        for (; xattrCount > 0; xattrCount--) {
          const kl = d.getUint32(q, true);
          const k = b.toString('utf8', q + 4, q + 4 + kl);
          q += 4 + kl;
          const vl = d.getUint32(q, true);
          xattrs.push([k, b.subarray(q + 4, q + 4 + vl)]);
          q += 4 + vl;
        }
        const h: ExtractHeader = {
          typeflag: String.fromCharCode(b[p + 1]),
          name: b.toString('utf8', nameAt, linkAt),
          nameBytes: b.subarray(nameAt, linkAt),
          linkname: linkLen === 0 ? '' : b.toString('utf8', linkAt, linkAt + linkLen),
          mode: d.getFloat64(p + 16, true),
          uid: d.getFloat64(p + 24, true),
          gid: d.getFloat64(p + 32, true),
          mtime: d.getFloat64(p + 40, true),
          mtimeNsec: d.getFloat64(p + 48, true),
          atime: b[p + 2] & HAS_ATIME ? [d.getFloat64(p + 56, true), d.getFloat64(p + 64, true)] : undefined,
          devmajor: d.getFloat64(p + 72, true),
          devminor: d.getFloat64(p + 80, true),
          xattrs,
        };
        extractor.entry(h);
        p = q;
        break;
      }
      case OP_DATA: {
        const n = d.getUint32(p + 1, true);
        extractor.data(b.subarray(p + DATA_FIXED, p + DATA_FIXED + n));
        p += DATA_FIXED + n;
        break;
      }
      default: // OP_END
        extractor.entryEnd();
        p += 1;
    }
  }
}

// ---------------------------------------------------------------- errors across threads

/** An error as it crosses the thread boundary: what callers look at (class, code, message, syscall fields). */
interface WireError {
  kind: 'lamina' | 'sys' | 'error' | 'value';
  name?: string;
  message: string;
  code?: string;
  errno?: number;
  syscall?: string;
  path?: string;
}

function toWire(e: unknown): WireError {
  if (e instanceof LaminaError) return { kind: 'lamina', message: e.message, code: e.code };
  if (e instanceof Error) {
    const x = e as NodeJS.ErrnoException;
    return { kind: e instanceof SysError ? 'sys' : 'error', name: e.name, message: e.message, code: x.code, errno: x.errno, syscall: x.syscall, path: x.path };
  }
  return { kind: 'value', message: String(e) };
}

function fromWire(w: WireError): unknown {
  if (w.kind === 'lamina') return new LaminaError(w.code as ErrorCode, w.message);
  if (w.kind === 'value') return w.message;
  const e = new Error(w.message) as NodeJS.ErrnoException;
  if (w.kind === 'sys') Object.setPrototypeOf(e, SysError.prototype);
  if (w.name && w.name !== 'Error') e.name = w.name;
  for (const k of ['code', 'errno', 'syscall', 'path'] as const) {
    if (w[k] !== undefined) (e as unknown as Record<string, unknown>)[k] = w[k];
  }
  return e;
}
