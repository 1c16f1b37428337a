// Applying a layer tar to an overlay2 `diff/` directory, in one streaming pass that also
// yields the diffID (sha256 of the uncompressed tar) and Docker's layer size.
//
// The extraction itself (Docker's semantics: whiteouts, replacement, confinement, times) is
// extract.ts's LayerExtractor. It runs on this thread, or for a large layer in a worker thread
// (extract-remote.ts) so that parsing, hashing and tar-split recording overlap with the
// file-system calls: extraction starts here, and the worker takes over between two entries as
// soon as it is up (starting one takes 100 ms or more). The result on disk and the errors
// reported are the same either way.
import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { Digest } from '../digest/index.js';
import { LaminaError } from '../errors.js';
import { TarParser, TeeVisitor } from '../tar/reader.js';
import type { TarVisitor } from '../tar/types.js';
import { LayerExtractor } from './extract.js';

export interface ApplyResult {
  /** sha256 of every input byte, trailing bytes after the end-of-archive marker included. */
  diffID: Digest;
  /** Docker's size formula over diff/ (see size.ts). */
  size: number;
  /** Tar entries seen (PAX global headers excluded), whiteouts and the root entry included. */
  entries: number;
  /** Input bytes consumed. */
  tarBytes: number;
}

export interface ApplyOptions {
  /** Extra visitors fed the same parse events before extraction sees them (e.g. the tar-split recorder). */
  visitors?: TarVisitor[];
  /** Called after each input chunk with the total number of bytes consumed so far. */
  onProgress?: (bytes: number) => void;
  /**
   * Awaited after each input chunk, e.g. to let a visitor's output drain; errors it throws fail
   * the application.
   */
  backpressure?: () => Promise<void> | undefined;
  /**
   * About how many input bytes to expect (the layer blob's size, compressed or not): from
   * OFFLOAD_MIN_BYTES on, the file-system work runs in a worker thread.
   */
  sizeHint?: number;
  /**
   * Overrides sizeHint: true extracts everything in the worker (waiting for it to start: for
   * tests and measurements), false never uses one.
   */
  offload?: boolean;
}

/**
 * From this input size on, a worker is started for the file-system calls. Starting one costs
 * the other core 100 ms or more; smaller layers are done about as soon on one thread.
 */
export const OFFLOAD_MIN_BYTES = 16 << 20;

/**
 * Extracts an uncompressed layer tar into `diffDir` (an existing directory, normally empty).
 * Throws EUNSAFEPATH for an entry that would land or link outside the layer, EBADTAR for a
 * malformed tar or an entry Docker would not extract. On failure diffDir is left half written
 * (the caller removes it); nothing outside it is ever touched, and nothing writes to it any
 * more once this returns or throws.
 */
export async function applyLayer(input: Readable, diffDir: string, opts: ApplyOptions = {}): Promise<ApplyResult> {
  const root = path.resolve(diffDir);
  const st = fs.lstatSync(root, { throwIfNoEntry: false });
  if (!st?.isDirectory()) throw new LaminaError('EINVAL', `layer directory ${root} does not exist or is not a directory`);
  const rootSetgid = (st.mode & 0o2000) !== 0;
  const offload = opts.offload ?? (opts.sizeHint ?? 0) >= OFFLOAD_MIN_BYTES;
  const sink = offload ? await handOverSink(root, rootSetgid, opts.offload === true) : localSink(root, rootSetgid);

  const extra = opts.visitors ?? [];
  const parser = new TarParser(extra.length > 0 ? new TeeVisitor(...extra, sink.visitor) : sink.visitor);
  const hash = createHash('sha256');
  let tarBytes = 0;
  try {
    for await (const chunk of input as AsyncIterable<Buffer>) {
      hash.update(chunk);
      parser.write(chunk);
      tarBytes += chunk.length;
      opts.onProgress?.(tarBytes);
      const extracted = sink.ready();
      if (extracted) await extracted;
      const drained = opts.backpressure?.();
      if (drained) await drained;
    }
    parser.end();
    const { size, entries } = await sink.finish();
    return { diffID: 'sha256:' + hash.digest('hex'), size, entries, tarBytes };
  } catch (e) {
    throw await sink.abort(e);
  }
}

/** Where extraction runs: the visitor fed the parse events, and how the pass starts and ends. */
interface ExtractSink {
  visitor: TarVisitor;
  /** Between input chunks: a promise to wait for before the next one, if any. */
  ready(): Promise<void> | undefined;
  finish(): Promise<{ size: number; entries: number }>;
  /** After a failure: the error to report (the earliest in stream order). */
  abort(e: unknown): Promise<unknown>;
}

const noWait = (): undefined => undefined;

function localSink(root: string, rootSetgid: boolean): ExtractSink {
  const extractor = new LayerExtractor(root, rootSetgid);
  return {
    visitor: extractor,
    ready: noWait,
    finish: async () => ({ size: extractor.finish(), entries: extractor.entries }),
    abort: async (e) => {
      extractor.close();
      return e;
    },
  };
}

/**
 * Extraction on this thread until a worker is up, then in the worker: at the first entry after
 * it is ready, this thread's extractor hands its state over and every later event goes there.
 * If the layer ends first (or the worker cannot start), it was all extracted here.
 */
async function handOverSink(root: string, rootSetgid: boolean, workerFromStart: boolean): Promise<ExtractSink> {
  const { RemoteExtractor } = await import('./extract-remote.js');
  const local = new LayerExtractor(root, rootSetgid);
  const remote = new RemoteExtractor();
  if (workerFromStart) await remote.whenReady();
  let handedOver = false;
  const visitor: TarVisitor = {
    entry(h) {
      if (!handedOver && remote.isReady) {
        remote.begin(local.state());
        handedOver = true;
      }
      if (handedOver) remote.entry(h);
      else local.entry(h);
    },
    data(chunk) {
      if (handedOver) remote.data(chunk);
      else local.data(chunk);
    },
    entryEnd(h) {
      if (handedOver) remote.entryEnd(h);
      else local.entryEnd();
    },
  };
  return {
    visitor,
    ready: () => (handedOver ? remote.waitForRoom() : undefined),
    finish: async () => {
      if (handedOver) return remote.finish();
      remote.release();
      return { size: local.finish(), entries: local.entries };
    },
    abort: async (e) => {
      if (handedOver) return remote.abort(e);
      local.close();
      remote.release();
      return e;
    },
  };
}
