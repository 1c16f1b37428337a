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
/** JSON text is handed on in batches of about this many characters. */
const BATCH_CHARS = 64 * 1024;

/**
 * A TarVisitor that records tar-split. Feed it the events of a TarParser (alone or through a
 * TeeVisitor), then await finish().
 *
 * Output:
 *  - a Writable: gzip (header bytes as Go writes them) streamed into it; finish() ends it;
 *  - a function: the uncompressed JSON text, in pieces, as it is produced;
 *  - nothing: gzip collected in memory and returned by finish().
 */
export class TarSplitRecorder implements TarVisitor {
  private readonly gz: GoGzip | null;
  private readonly emitText: (text: string) => void;
  private batch: string[] = [];
  private batchChars = 0;
  private position = 0;
  private readonly seen = new Set<string>();
  private seg: Buffer = Buffer.allocUnsafe(16 * 1024);
  private segFill = 0;
  private afterEof = false;
  private readonly crc = new Crc64();
  private hashing = false;
  private finished = false;

  constructor(out?: Writable | ((jsonText: string) => void)) {
    if (typeof out === 'function') {
      this.gz = null;
      this.emitText = out;
    } else {
      const gz = new GoGzip(out);
      this.gz = gz;
      this.emitText = (text) => gz.write(text);
    }
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
    let line = '{"type":1';
    if (h.nameBytes.length > 0) {
      line += isUtf8(h.nameBytes) ? `,"name":${goJsonString(h.nameBytes.toString('utf8'))}` : `,"name_raw":"${h.nameBytes.toString('base64')}"`;
    }
    if (h.size !== 0) line += `,"size":${h.size}`;
    // tar-split checksums whatever content the reader yields when the size field is positive
    // (nothing for header-only types), and stores no checksum otherwise.
    line += this.hashing ? `,"payload":"${this.crc.digest().toString('base64')}"` : ',"payload":null';
    this.hashing = false;
    this.push(`${line},"position":${this.position++}}\n`);
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
    this.flushBatch();
    return this.gz ? this.gz.end() : Buffer.alloc(0);
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
    this.push(`{"type":2,"payload":"${base64}","position":${this.position++}}\n`);
  }

  private push(line: string): void {
    this.batch.push(line);
    this.batchChars += line.length;
    if (this.batchChars >= BATCH_CHARS) this.flushBatch();
  }

  private flushBatch(): void {
    if (this.batch.length === 0) return;
    const text = this.batch.length === 1 ? this.batch[0] : this.batch.join('');
    this.batch = [];
    this.batchChars = 0;
    this.emitText(text);
  }
}

/**
 * gzip with Go's header bytes (1f8b 0800 00000000 00ff: no name, mtime 0, OS 255); zlib writes
 * OS 3, so byte 9 of the output is patched on its way out.
 */
class GoGzip {
  private readonly gzip = zlib.createGzip();
  private readonly done: Promise<void>;
  private readonly collected: Buffer[] | null;

  constructor(out?: Writable) {
    let seen = 0;
    const patchOs = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        if (seen <= 9 && seen + chunk.length > 9) chunk[9 - seen] = 0xff;
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
    this.done = pipeline(this.gzip, patchOs, sink);
    this.done.catch(() => {}); // reported by end()
  }

  write(text: string): void {
    this.gzip.write(text);
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
