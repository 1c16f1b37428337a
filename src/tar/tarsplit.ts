// tar-split, in the exact format Docker keeps as layerdb/sha256/<chainID>/tar-split.json.gz:
// JSON lines of "segments" (raw tar bytes that are not file content, base64) and "file" entries
// (name, size, CRC-64/ISO of the content), from which the original layer tar can be rebuilt
// byte for byte out of diff/. Recording mirrors vbatts/tar-split's asm.NewInputTarStream as
// vendored by Docker 20.10 (segment grouping, trailing-byte segments, the final empty segment);
// the JSON mirrors Go's encoding/json for storage.Entry.
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { isUtf8 } from 'node:buffer';
import { Readable, Transform, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { LaminaError } from '../errors.js';
import * as sys from '../sys/index.js';
import { Crc64 } from './crc64.js';
import type { TarHeader, TarVisitor } from './types.js';

export const TARSPLIT_FILE = 1;
export const TARSPLIT_SEGMENT = 2;

/** Raw tar bytes that are not file content. */
export interface TarSplitSegment {
  type: typeof TARSPLIT_SEGMENT;
  payload: Buffer;
  position: number;
}

/** One tar entry; its content is read back from the layer's files when assembling. */
export interface TarSplitFile {
  type: typeof TARSPLIT_FILE;
  /** Name decoded as UTF-8 (lossy only when nameBytes is not valid UTF-8). */
  name: string;
  /** Name bytes exactly as in the tar (tar-split's name_raw when not UTF-8). */
  nameBytes: Buffer;
  size: number;
  /** 8-byte big-endian CRC-64/ISO of the content; null when size is 0. */
  crc: Buffer | null;
  position: number;
}

export type TarSplitEntry = TarSplitSegment | TarSplitFile;

const O_CLOEXEC = 0o2000000;

/** tar-split reads what follows the end-of-archive marker in chunks of at most 1 MiB. */
const TRAILING_CHUNK = 1 << 20;
/** JSON is written into buffers of up to this size and handed on whole lines at a time. */
const OUT_CHUNK = 256 * 1024;
const FIRST_OUT_CHUNK = 16 * 1024;
/** tar-split JSON up to this size is compressed in one go when recording ends (see GzipFile). */
const SMALL_TARSPLIT = 1 << 20;
/**
 * gzip input waiting for the compressor (on libuv's thread pool) before recording pauses: bounds
 * memory when compression falls behind the parser.
 */
const GZIP_BACKLOG = 2 << 20;

/**
 * A TarVisitor that records tar-split. Feed it the events of a TarParser (alone or through a
 * TeeVisitor), then await finish().
 *
 * Output:
 *  - a file path: gzip (header bytes as Go writes them) written to that file (mode 0644), in
 *    one synchronous write at finish() for a small layer, streamed for a large one;
 *  - a Writable: gzip streamed into it; finish() ends it;
 *  - a function: the uncompressed JSON text, in pieces of whole lines, as it is produced;
 *  - nothing: gzip collected in memory and returned by finish().
 */
export class TarSplitRecorder implements TarVisitor {
  private readonly sink: LinesSink;
  private readonly out: JsonLines;
  private position = 0;
  private readonly seen = new Set<string>();
  private seg: Buffer = Buffer.allocUnsafe(16 * 1024);
  private segFill = 0;
  private afterEof = false;
  private readonly crc = new Crc64();
  private hashing = false;
  private finished = false;

  constructor(out?: string | Writable | ((jsonText: string) => void)) {
    if (typeof out === 'function') {
      this.sink = { write: (b) => out(b.toString('utf8')), end: async () => Buffer.alloc(0), backlog: () => undefined };
    } else if (typeof out === 'string') {
      this.sink = new GzipFile(out);
    } else {
      this.sink = new GoGzip(out);
    }
    const sink = this.sink;
    this.out = new JsonLines((b) => sink.write(b));
  }

  raw(chunk: Buffer): void {
    if (!this.afterEof) {
      this.append(chunk);
      return;
    }
    // After the end marker, tar-split stores what is left in 1 MiB segments.
    let pos = 0;
    while (pos < chunk.length) {
      const n = Math.min(TRAILING_CHUNK - this.segFill, chunk.length - pos);
      this.append(chunk.subarray(pos, pos + n));
      pos += n;
      if (this.segFill === TRAILING_CHUNK) this.flushSegment();
    }
  }

  entry(h: TarHeader): void {
    // Everything since the previous entry's content, up to and including this header.
    if (this.segFill > 0) this.flushSegment();
    // Docker's tar-split packer refuses a second entry for the same (cleaned) path.
    const key = goClean(h.nameBytes.toString('latin1'));
    if (this.seen.has(key)) {
      throw new LaminaError('EBADTAR', `tar entry ${JSON.stringify(h.name)}: duplicates of file paths not supported`);
    }
    this.seen.add(key);
    this.hashing = h.size > 0;
    if (this.hashing) this.crc.reset();
  }

  data(chunk: Buffer): void {
    this.crc.update(chunk);
  }

  entryEnd(h: TarHeader): void {
    const o = this.out;
    let name = '';
    if (h.nameBytes.length > 0) {
      // h.name is the UTF-8 decoding of nameBytes: without a U+FFFD in it the bytes were valid.
      name = !h.name.includes('\uFFFD') || isUtf8(h.nameBytes) ? `,"name":${goJsonString(h.name)}` : `,"name_raw":"${h.nameBytes.toString('base64')}"`;
    }
    o.reserve(name.length * 3 + 96);
    o.ascii('{"type":1');
    if (name) o.utf8(name);
    if (h.size !== 0) o.ascii(`,"size":${h.size}`);
    // tar-split checksums whatever content the reader yields when the size field is positive
    // (nothing for header-only types), and stores no checksum otherwise.
    if (this.hashing) {
      o.ascii(',"payload":"');
      o.crcBase64(this.crc);
      o.ascii(`","position":${this.position++}}\n`);
    } else {
      o.ascii(`,"payload":null,"position":${this.position++}}\n`);
    }
    this.hashing = false;
  }

  eof(): void {
    // The end-of-archive blocks, with the padding before them.
    if (this.segFill > 0) this.flushSegment();
    this.afterEof = true;
  }

  /**
   * Call once the parser has ended: writes the trailing segments (tar-split always ends with an
   * empty one, from its final zero-length read) and flushes the output.
   */
  async finish(): Promise<Buffer> {
    if (this.finished) throw new Error('TarSplitRecorder.finish called twice');
    this.finished = true;
    if (!this.afterEof) throw new LaminaError('EBADTAR', 'tar-split: the tar stream did not reach its end');
    if (this.segFill > 0) this.flushSegment();
    this.pushSegment('');
    this.out.flush();
    return this.sink.end();
  }

  /** Gives up after a failure: stops compressing and closes the output (nothing is flushed). */
  abort(): void {
    this.finished = true;
    this.sink.abort?.();
  }

  /**
   * A promise to wait for before feeding more input when the gzip compressor has fallen
   * behind (see GZIP_BACKLOG); undefined when there is nothing to wait for.
   */
  backpressure(): Promise<void> | undefined {
    return this.sink.backlog();
  }

  private append(chunk: Buffer): void {
    const need = this.segFill + chunk.length;
    if (need > this.seg.length) {
      const grown = Buffer.allocUnsafe(Math.max(need, this.seg.length * 2));
      this.seg.copy(grown, 0, 0, this.segFill);
      this.seg = grown;
    }
    chunk.copy(this.seg, this.segFill);
    this.segFill = need;
  }

  private flushSegment(): void {
    this.pushSegment(this.seg.toString('base64', 0, this.segFill));
    this.segFill = 0;
  }

  private pushSegment(base64: string): void {
    const o = this.out;
    o.reserve(base64.length + 64);
    o.ascii('{"type":2,"payload":"');
    o.ascii(base64);
    o.ascii(`","position":${this.position++}}\n`);
  }
}

const BASE64 = Buffer.from('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/');

/**
 * JSON text written straight into buffers (no string per line, no joining, no re-encoding);
 * each buffer handed on holds whole lines. Buffers start small (most layers are) and grow to
 * OUT_CHUNK.
 */
class JsonLines {
  private buf = Buffer.allocUnsafe(FIRST_OUT_CHUNK);
  private fill = 0;

  constructor(private readonly emit: (lines: Buffer) => void) {}

  /** Makes room for a line of up to `n` bytes. */
  reserve(n: number): void {
    if (this.fill + n <= this.buf.length) return;
    this.flush();
    if (n > this.buf.length) this.buf = Buffer.allocUnsafe(n);
  }

  /** Text known to be ASCII. */
  ascii(s: string): void {
    this.fill += this.buf.write(s, this.fill, 'latin1');
  }

  utf8(s: string): void {
    this.fill += this.buf.write(s, this.fill, 'utf8');
  }

  /** The CRC's 8-byte big-endian digest as base64 (12 characters), without a Buffer or string for it. */
  crcBase64(crc: Crc64): void {
    const b = this.buf;
    let i = this.fill;
    const hi = crc.high, lo = crc.low;
    // Bytes hi3 hi2 hi1 | hi0 lo3 lo2 | lo1 lo0 (pad): three groups of 24 bits and one of 16.
    const g0 = hi >>> 8;
    const g1 = ((hi & 0xff) << 16) | (lo >>> 16);
    const g2 = (lo & 0xffff) << 2;
    b[i++] = BASE64[g0 >>> 18]; b[i++] = BASE64[(g0 >>> 12) & 63]; b[i++] = BASE64[(g0 >>> 6) & 63]; b[i++] = BASE64[g0 & 63];
    b[i++] = BASE64[g1 >>> 18]; b[i++] = BASE64[(g1 >>> 12) & 63]; b[i++] = BASE64[(g1 >>> 6) & 63]; b[i++] = BASE64[g1 & 63];
    b[i++] = BASE64[g2 >>> 12]; b[i++] = BASE64[(g2 >>> 6) & 63]; b[i++] = BASE64[g2 & 63]; b[i++] = 0x3d; // '='
    this.fill = i;
  }

  flush(): void {
    if (this.fill === 0) return;
    this.emit(this.buf.subarray(0, this.fill));
    // A fresh buffer: the consumer may keep the one handed on.
    this.buf = Buffer.allocUnsafe(Math.min(this.buf.length * 2, OUT_CHUNK));
    this.fill = 0;
  }
}

/** Where the JSON lines go. */
interface LinesSink {
  write(lines: Buffer): void;
  /** All lines are written: the gzip bytes when collected in memory, else an empty Buffer. */
  end(): Promise<Buffer>;
  backlog(): Promise<void> | undefined;
  abort?(): void;
}

/** Patches zlib's gzip header into Go's: no extra flags (zlib writes 4 at level 1), OS 255. */
function patchGzipHeader(chunk: Buffer, at: number): void {
  if (at <= 8 && at + chunk.length > 8) chunk[8 - at] = 0x00;
  if (at <= 9 && at + chunk.length > 9) chunk[9 - at] = 0xff;
}

/**
 * tar-split into a file: JSON up to SMALL_TARSPLIT is kept and compressed in one synchronous
 * call at the end (no stream set-up, no thread-pool round trips: most layers are small);
 * past that, it is streamed through GoGzip.
 */
class GzipFile implements LinesSink {
  private pending: Buffer[] | null = [];
  private pendingBytes = 0;
  private stream: GoGzip | null = null;

  constructor(private readonly file: string) {}

  write(lines: Buffer): void {
    if (this.stream) return this.stream.write(lines);
    this.pending!.push(lines);
    this.pendingBytes += lines.length;
    if (this.pendingBytes > SMALL_TARSPLIT) {
      this.stream = new GoGzip(fs.createWriteStream(this.file, { mode: 0o644 }));
      for (const b of this.pending!) this.stream.write(b);
      this.pending = null;
    }
  }

  async end(): Promise<Buffer> {
    if (this.stream) return this.stream.end();
    const gz = zlib.gzipSync(this.pending!.length === 1 ? this.pending![0] : Buffer.concat(this.pending!), { level: zlib.constants.Z_BEST_SPEED });
    patchGzipHeader(gz, 0);
    fs.writeFileSync(this.file, gz, { mode: 0o644 });
    this.pending = null;
    return Buffer.alloc(0);
  }

  backlog(): Promise<void> | undefined {
    return this.stream?.backlog();
  }

  abort(): void {
    this.pending = null;
    this.stream?.abort();
  }
}

/**
 * gzip with Go's header bytes (1f8b 0800 00000000 00ff: no name, mtime 0, no extra flags, OS
 * 255). zlib writes XFL 4 at level 1 and OS 3, so bytes 8 and 9 are patched on their way out.
 * tar-split is never content-addressed (any gzip of the JSON reads back the same), so it is
 * compressed at level 1: a third of the time of level 6 for a slightly larger file.
 */
class GoGzip implements LinesSink {
  // zlib passes stream options through to its Transform (@types/node does not say so).
  private readonly gzip = zlib.createGzip({ level: zlib.constants.Z_BEST_SPEED, writableHighWaterMark: GZIP_BACKLOG } as zlib.ZlibOptions);
  private readonly done: Promise<void>;
  private readonly collected: Buffer[] | null;
  private drained: Promise<void> | null = null;

  constructor(out?: Writable) {
    let seen = 0;
    const patchHeader = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        patchGzipHeader(chunk, seen);
        seen += chunk.length;
        cb(null, chunk);
      },
    });
    const collected: Buffer[] | null = out ? null : [];
    this.collected = collected;
    const sink =
      out ??
      new Writable({
        write(chunk: Buffer, _enc, cb) {
          collected!.push(chunk);
          cb();
        },
      });
    this.done = pipeline(this.gzip, patchHeader, sink);
    this.done.catch(() => {}); // reported by end()
  }

  write(lines: Buffer): void {
    this.gzip.write(lines);
  }

  /** Resolves once the compressor has caught up, if it is GZIP_BACKLOG behind. */
  backlog(): Promise<void> | undefined {
    if (!this.gzip.writableNeedDrain) return undefined;
    // 'drain', or the pipeline failing (end() reports that).
    return (this.drained ??= new Promise<void>((resolve) => {
      const settle = () => {
        this.gzip.off('drain', settle);
        this.drained = null;
        resolve();
      };
      this.gzip.once('drain', settle);
      this.done.then(settle, settle);
    }));
  }

  abort(): void {
    this.gzip.destroy(); // the pipeline takes the output down with it
  }

  async end(): Promise<Buffer> {
    this.gzip.end();
    await this.done;
    return this.collected ? Buffer.concat(this.collected) : Buffer.alloc(0);
  }
}

/** Go's encoding/json string encoding (HTML-safe, as json.Encoder writes by default, Go < 1.22). */
export function goJsonString(s: string): string {
  const j = JSON.stringify(s);
  if (!GO_DIFFERS.test(j)) return j;
  return j.replace(GO_REWRITE, (m: string, esc: string | undefined) => {
    if (esc !== undefined) return esc === 'b' ? '\\u0008' : esc === 'f' ? '\\u000c' : m;
    switch (m) {
      case '<':
        return '\\u003c';
      case '>':
        return '\\u003e';
      case '&':
        return '\\u0026';
      case '\u2028':
        return '\\u2028';
      default:
        return '\\u2029';
    }
  });
}
const GO_DIFFERS = /[<>&\u2028\u2029]|\\[bf]/;
const GO_REWRITE = /\\(.)|[<>&\u2028\u2029]/g;

/** Go's path.Clean (what filepath.Clean does on Linux). */
export function goClean(p: string): string {
  // Fast path, the common case: no empty, "." or ".." component (each would start the name or
  // follow a "/"), so at most a trailing "/" differs from the clean form.
  if (p.length > 1 && p.charCodeAt(0) !== 0x2e /* . */ && !p.includes('/.') && !p.includes('//')) {
    return p.endsWith('/') ? p.slice(0, -1) : p;
  }
  const n = path.posix.normalize(p);
  return n.length > 1 && n.endsWith('/') ? n.slice(0, -1) : n;
}

// ---------------------------------------------------------------------------------------------
// Reading

/** Decodes tar-split (gzip of JSON lines) from a Buffer, synchronously. */
export function readTarSplitSync(gz: Buffer): TarSplitEntry[] {
  let text: Buffer;
  try {
    text = zlib.gunzipSync(gz);
  } catch (err) {
    throw corruptGzip(err);
  }
  const out: TarSplitEntry[] = [];
  const state = new LineDecoder();
  state.push(text, (e) => out.push(e));
  state.end((e) => out.push(e));
  return out;
}

/** Decodes tar-split (gzip of JSON lines) as a stream, with memory bounded by the longest line. */
export async function* readTarSplit(gz: Buffer | Readable): AsyncIterable<TarSplitEntry> {
  if (Buffer.isBuffer(gz)) {
    yield* readTarSplitSync(gz);
    return;
  }
  const decoder = new LineDecoder();
  const gunzip = zlib.createGunzip({ chunkSize: 256 * 1024 });
  const input = gz.pipe(gunzip);
  gz.on('error', (err) => gunzip.destroy(err));
  let batch: TarSplitEntry[] = [];
  const chunks = (input as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
  try {
  for (;;) {
    let next: IteratorResult<Buffer>;
    try {
      next = await chunks.next();
    } catch (err) {
      throw (err as { code?: string }).code?.startsWith('Z_') ? corruptGzip(err) : err;
    }
    if (next.done) break;
    decoder.push(next.value, (e) => batch.push(e));
    if (batch.length > 0) {
      yield* batch;
      batch = [];
    }
  }
  } finally {
    gunzip.destroy(); // also when the consumer stops early
  }
  decoder.end((e) => batch.push(e));
  yield* batch;
}

function corruptGzip(err: unknown): LaminaError {
  return new LaminaError('EBADINPUT', `tar-split: corrupt gzip data (${(err as Error).message})`, { cause: err });
}

/** Splits JSON text into lines and decodes each into an entry, checking names like Go's unpacker. */
class LineDecoder {
  private partial: Buffer | null = null;
  private line = 0;
  private readonly seen = new Set<string>();

  push(chunk: Buffer, emit: (e: TarSplitEntry) => void): void {
    let buf = chunk;
    if (this.partial) {
      buf = Buffer.concat([this.partial, chunk]);
      this.partial = null;
    }
    let start = 0;
    for (;;) {
      const nl = buf.indexOf(0x0a, start);
      if (nl === -1) break;
      if (nl > start) emit(this.decode(buf.toString('utf8', start, nl)));
      start = nl + 1;
    }
    if (start < buf.length) this.partial = Buffer.from(buf.subarray(start));
  }

  end(emit: (e: TarSplitEntry) => void): void {
    if (this.partial && this.partial.toString('utf8').trim() !== '') emit(this.decode(this.partial.toString('utf8')));
    this.partial = null;
  }

  private decode(text: string): TarSplitEntry {
    const n = ++this.line;
    const bad = (why: string) => new LaminaError('EBADINPUT', `tar-split line ${n}: ${why}`);
    let o: unknown;
    try {
      o = JSON.parse(text);
    } catch {
      throw bad('not valid JSON');
    }
    if (typeof o !== 'object' || o === null) throw bad('not a JSON object');
    const r = o as Record<string, unknown>;
    const position = r.position ?? 0;
    if (typeof position !== 'number') throw bad('position is not a number');
    const b64 = (v: unknown, what: string): Buffer | null => {
      if (v === null || v === undefined) return null;
      if (typeof v !== 'string') throw bad(`${what} is not a base64 string`);
      return Buffer.from(v, 'base64');
    };
    if (r.type === TARSPLIT_SEGMENT) {
      return { type: TARSPLIT_SEGMENT, payload: b64(r.payload, 'payload') ?? Buffer.alloc(0), position };
    }
    if (r.type !== TARSPLIT_FILE) throw bad(`unknown entry type ${JSON.stringify(r.type)}`);
    const size = r.size ?? 0;
    if (typeof size !== 'number' || !Number.isSafeInteger(size)) throw bad('size is not an integer');
    if (r.name !== undefined && typeof r.name !== 'string') throw bad('name is not a string');
    const nameRaw = b64(r.name_raw, 'name_raw');
    const nameBytes = nameRaw && nameRaw.length > 0 ? nameRaw : Buffer.from((r.name as string | undefined) ?? '', 'utf8');
    const crc = b64(r.payload, 'payload');
    if (size > 0 && (!crc || crc.length !== 8)) throw bad('file entry without an 8-byte CRC-64 payload');
    const key = goClean(nameBytes.toString('latin1'));
    if (this.seen.has(key)) throw bad(`duplicate file entry ${JSON.stringify(nameBytes.toString('utf8'))}`);
    this.seen.add(key);
    return { type: TARSPLIT_FILE, name: nameBytes.toString('utf8'), nameBytes, size, crc, position };
  }
}

// ---------------------------------------------------------------------------------------------
// Assembling

/**
 * Opens a layer file's content by its path relative to the layer root (no leading "/"); the
 * path bytes are in relPathBytes (names need not be UTF-8).
 */
export type LayerFileOpener = (
  relPath: string,
  entry: TarSplitFile,
  relPathBytes: Buffer,
) => AsyncIterable<Uint8Array> | Promise<AsyncIterable<Uint8Array>>;

/**
 * Where a file entry's content lives below the layer root. Docker's getter joins the name to
 * diff/ with filepath.Join, which drops "./" and duplicate slashes; climbing ".." is clamped at
 * the root here, where the extraction (chrooted in Docker) put such a file.
 */
export function tarSplitFilePath(name: string): string {
  return tarSplitFilePathBytes(Buffer.from(name, 'utf8')).toString('utf8');
}

/** tarSplitFilePath on raw name bytes (latin1 maps bytes 1:1, and "/" and "." are ASCII). */
export function tarSplitFilePathBytes(name: Buffer): Buffer {
  const clean = path.posix.normalize('/' + name.toString('latin1')).slice(1).replace(/\/$/, '');
  return Buffer.from(clean, 'latin1');
}

/**
 * Rebuilds the layer tar: segment bytes as recorded, and each file's content read from `files`
 * (a layer directory, or an opener), checked against the recorded size and CRC-64 (EDIGEST on
 * mismatch). A pull stream: nothing is read ahead of what the consumer takes.
 */
export function assembleTar(
  entries: Iterable<TarSplitEntry> | AsyncIterable<TarSplitEntry>,
  files: string | LayerFileOpener,
): Readable {
  let open: LayerFileOpener;
  let closeRoot = () => {};
  if (typeof files === 'string') {
    // Files are looked up with the layer dir as root (openat2 RESOLVE_IN_ROOT): a symlinked
    // parent such as `rootlink -> /` resolves inside the layer, as it did at extraction, and
    // can never make save or push read a file of the host.
    let rootFd = -1;
    open = (_rel, _e, relBytes) => {
      if (rootFd < 0) rootFd = fs.openSync(files, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
      return openLayerFile(rootFd, relBytes);
    };
    closeRoot = () => { if (rootFd >= 0) fs.closeSync(rootFd); rootFd = -1; };
  } else {
    open = files;
  }
  return Readable.from(assembleChunks(entries, open, closeRoot), { objectMode: false, highWaterMark: 1 << 20 });
}

async function* assembleChunks(
  entries: Iterable<TarSplitEntry> | AsyncIterable<TarSplitEntry>,
  open: LayerFileOpener,
  done: () => void,
): AsyncGenerator<Buffer> {
  try {
    yield* assembleEntries(entries, open);
  } finally {
    done();
  }
}

async function* assembleEntries(
  entries: Iterable<TarSplitEntry> | AsyncIterable<TarSplitEntry>,
  open: LayerFileOpener,
): AsyncGenerator<Buffer> {
  const crc = new Crc64();
  for await (const e of entries) {
    if (e.type === TARSPLIT_SEGMENT) {
      if (e.payload.length > 0) yield e.payload;
      continue;
    }
    if (e.size <= 0) continue; // hard links, directories, empty files: nothing stored
    const changed = (why: string) => new LaminaError('EDIGEST', `layer file ${JSON.stringify(e.name)} changed: ${why}`);
    let source: AsyncIterable<Uint8Array>;
    try {
      const rel = tarSplitFilePathBytes(e.nameBytes);
      source = await open(rel.toString('utf8'), e, rel);
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') throw changed('it is missing');
      if (code === 'ELOOP') throw changed('it is now a symbolic link');
      throw err;
    }
    crc.reset();
    let got = 0;
    for await (const piece of source) {
      const chunk = Buffer.isBuffer(piece) ? piece : Buffer.from(piece.buffer, piece.byteOffset, piece.length);
      if (got + chunk.length > e.size) throw changed(`it is larger than the recorded ${e.size} bytes`);
      got += chunk.length;
      crc.update(chunk);
      yield chunk;
    }
    if (got !== e.size) throw changed(`${got} bytes instead of the recorded ${e.size}`);
    if (!crc.digest().equals(e.crc!)) throw changed('its content does not match the recorded CRC-64');
  }
}

/**
 * Opens a layer file (failing here, not at the first read, when it is missing) and reads it in
 * 1 MiB chunks (fresh buffers: the consumer may keep them).
 */
async function openLayerFile(rootFd: number, rel: Buffer): Promise<AsyncIterable<Buffer>> {
  const fd = sys.openat2(rootFd, sys.cPath(rel), fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | O_CLOEXEC, sys.RESOLVE_IN_ROOT | sys.RESOLVE_NO_MAGICLINKS);
  return (async function* () {
    try {
      for (;;) {
        const buf = Buffer.allocUnsafe(1 << 20);
        const bytesRead = await new Promise<number>((res, rej) => fs.read(fd, buf, 0, buf.length, null, (err, n) => (err ? rej(err) : res(n))));
        if (bytesRead === 0) return;
        yield bytesRead === buf.length ? buf : buf.subarray(0, bytesRead);
      }
    } finally {
      fs.closeSync(fd);
    }
  })();
}

/** Length of the tar that the entries describe: segment bytes plus file sizes. */
export async function tarSizeFromTarSplit(source: Buffer | Readable | Iterable<TarSplitEntry> | AsyncIterable<TarSplitEntry>): Promise<number> {
  const entries = Buffer.isBuffer(source) || source instanceof Readable ? readTarSplit(source) : source;
  let total = 0;
  for await (const e of entries) total += e.type === TARSPLIT_SEGMENT ? e.payload.length : Math.max(e.size, 0);
  return total;
}
