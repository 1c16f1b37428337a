// Random access to the members of an image archive, without unpacking it: a tar file indexed in
// one pass over its headers (member -> offset, size), whose members are then read as byte
// ranges of the file; or a directory holding the same tree (an OCI layout, an unpacked save).
import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { pipeline, Readable, Transform, type TransformCallback } from 'node:stream';
import type { Digest } from '../digest/index.js';
import { LaminaError } from '../errors.js';
import { TarParser } from '../tar/reader.js';
import type { TarHeader } from '../tar/types.js';

/** The members of an archive, by their slash-separated path inside it. */
export interface MemberStore {
  /** The archive (file or directory) as the user named it, for messages. */
  readonly displayName: string;
  /** Whether `name` is a regular file (after following symlinks and hard links inside the archive). */
  has(name: string): boolean;
  size(name: string): number;
  /** Reads a whole (small) member: manifests, configs. */
  read(name: string): Promise<Buffer>;
  /** Streams a member's bytes. */
  open(name: string): Readable;
}

/** JSON documents larger than this are refused rather than read into memory. */
const MAX_JSON_BYTES = 64 << 20;
const READ_CHUNK = 1 << 20;

/**
 * A member path as Docker resolves it inside the extracted archive: `./`, duplicate and trailing
 * slashes dropped. Null when the path would leave the archive.
 */
export function normalizeMemberName(name: string): string | null {
  const n = path.posix.normalize('/' + name).slice(1).replace(/\/+$/, '');
  if (n === '' || n === '.') return null;
  // normalize('/' + x) clamps "..", so compare with a relative normalization to detect escapes.
  const rel = path.posix.normalize(name.replace(/^\/+/, ''));
  if (rel === '..' || rel.startsWith('../')) return null;
  return n;
}

/** `blobs/sha256/<hex>` names its own digest; anything else names none. */
export function blobDigestOfPath(name: string): Digest | undefined {
  const m = /^blobs\/sha256\/([0-9a-f]{64})$/.exec(normalizeMemberName(name) ?? '');
  return m ? `sha256:${m[1]}` : undefined;
}

/** Reads and parses a JSON member, with one-line errors naming the member and the archive. */
export async function readJSONMember(store: MemberStore, name: string): Promise<unknown> {
  if (!store.has(name)) throw new LaminaError('EBADINPUT', `${store.displayName} has no ${name}`);
  const bytes = await store.read(name);
  try {
    return JSON.parse(bytes.toString('utf8'));
  } catch (e) {
    throw new LaminaError('EBADINPUT', `${name} in ${store.displayName} is not valid JSON: ${(e as Error).message}`);
  }
}

/**
 * Passes `input` through while hashing it; at the end of the stream fails with EDIGEST (naming
 * `what`) when the content is not `digest`, or not `size` bytes long.
 */
export function verifyingStream(input: Readable, digest: Digest, what: string, size?: number): Readable {
  const hash = createHash('sha256');
  let n = 0;
  const t = new Transform({
    transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback) {
      n += chunk.length;
      hash.update(chunk);
      cb(null, chunk);
    },
    flush(cb: TransformCallback) {
      const got = 'sha256:' + hash.digest('hex');
      if (got !== digest) cb(new LaminaError('EDIGEST', `${what} does not match its digest: the content hashes to ${got}`));
      else if (size !== undefined && n !== size) cb(new LaminaError('EDIGEST', `${what} is ${n} bytes, but its descriptor says ${size}`));
      else cb();
    },
  });
  pipeline(input, t, () => {
    /* errors reach the consumer through t */
  });
  return t;
}

function emptyStream(): Readable {
  return new Readable({ read() { this.push(null); } });
}

// ---------------------------------------------------------------- a tar file

interface TarMember {
  offset: number;
  size: number;
  typeflag: string;
  linkname: string;
}

/** Members of a plain (uncompressed) tar file, read in place. */
export class TarFile implements MemberStore {
  private constructor(
    readonly file: string,
    readonly displayName: string,
    private readonly members: Map<string, TarMember>,
  ) {}

  /**
   * Indexes `file` with one pass over its headers. Entry contents are not read: the parser is fed
   * zeros in their place, so indexing a multi-gigabyte save costs a few reads per member.
   */
  static async index(file: string, displayName = file): Promise<TarFile> {
    const members = new Map<string, TarMember>();
    let consumed = 0; // stream offset of the next byte the parser sees
    let open: { name: string; dataEnd: number } | null = null; // the entry whose content is being passed
    let done = false;
    const parser = new TarParser({
      raw: (c) => {
        consumed += c.length;
      },
      data: (c) => {
        consumed += c.length;
      },
      entry: (h: TarHeader) => {
        const size = isHeaderOnly(h.typeflag) ? 0 : h.size;
        const name = normalizeMemberName(h.name);
        if (name !== null) members.set(name, { offset: consumed, size, typeflag: h.typeflag, linkname: h.linkname });
        // Sparse entries store fewer bytes than their size says: read those for real.
        const sparse = h.typeflag === 'S' || (h.pax !== null && [...h.pax.keys()].some((k) => k.startsWith('GNU.sparse.')));
        open = size > 0 && !sparse ? { name: h.name, dataEnd: consumed + size } : null;
      },
      entryEnd: () => {
        open = null;
      },
      eof: () => {
        done = true;
      },
    });
    const fh = await fs.promises.open(file, 'r');
    try {
      const fileSize = (await fh.stat()).size;
      const buf = Buffer.allocUnsafe(64 * 1024);
      let pos = 0;
      while (!done) {
        const current = open as { name: string; dataEnd: number } | null;
        if (current && current.dataEnd > consumed) {
          if (current.dataEnd > fileSize) {
            throw new LaminaError('EBADTAR', `tar entry ${JSON.stringify(current.name)}: unexpected end of archive: the file ends at byte ${fileSize}, inside its content`);
          }
          // Skip the content: feed zeros of the same length instead of reading it.
          const n = Math.min(current.dataEnd - consumed, ZEROS.length);
          parser.write(ZEROS.subarray(0, n));
          pos += n;
          continue;
        }
        const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
        if (bytesRead === 0) break;
        pos += bytesRead;
        parser.write(buf.subarray(0, bytesRead));
      }
      parser.end();
    } catch (e) {
      if (e instanceof LaminaError) throw new LaminaError(e.code, `${displayName}: ${e.message}`, { cause: e });
      throw e;
    } finally {
      await fh.close();
    }
    return new TarFile(file, displayName, members);
  }

  /** Member names in archive order of first appearance (for diagnostics and detection). */
  names(): string[] {
    return [...this.members.keys()];
  }

  /** Follows symlinks and hard links inside the archive to a regular file. */
  private resolve(name: string): TarMember | undefined {
    let n = normalizeMemberName(name);
    for (let hops = 0; n !== null && hops < 16; hops++) {
      const m = this.members.get(n);
      if (!m) return undefined;
      if (m.typeflag === '2') {
        // Relative to the link's directory; absolute targets are taken from the archive root.
        n = normalizeMemberName(m.linkname.startsWith('/') ? m.linkname : path.posix.join(path.posix.dirname(n), m.linkname));
      } else if (m.typeflag === '1') {
        n = normalizeMemberName(m.linkname);
      } else {
        return m.typeflag === '0' || m.typeflag === '7' ? m : undefined;
      }
    }
    return undefined;
  }

  has(name: string): boolean {
    return this.resolve(name) !== undefined;
  }

  size(name: string): number {
    return this.must(name).size;
  }

  private must(name: string): TarMember {
    const m = this.resolve(name);
    if (!m) throw new LaminaError('EBADINPUT', `${this.displayName} has no file ${name}`);
    return m;
  }

  async read(name: string): Promise<Buffer> {
    const m = this.must(name);
    if (m.size > MAX_JSON_BYTES) throw new LaminaError('EBADINPUT', `${name} in ${this.displayName} is too large (${m.size} bytes)`);
    const buf = Buffer.alloc(m.size);
    const fh = await fs.promises.open(this.file, 'r');
    try {
      let got = 0;
      while (got < m.size) {
        const { bytesRead } = await fh.read(buf, got, m.size - got, m.offset + got);
        if (bytesRead === 0) throw new LaminaError('EBADTAR', `${this.displayName}: ${name} is truncated`);
        got += bytesRead;
      }
    } finally {
      await fh.close();
    }
    return buf;
  }

  open(name: string): Readable {
    const m = this.must(name);
    if (m.size === 0) return emptyStream();
    return fs.createReadStream(this.file, { start: m.offset, end: m.offset + m.size - 1, highWaterMark: READ_CHUNK });
  }
}

const ZEROS = Buffer.alloc(1 << 20);

function isHeaderOnly(t: string): boolean {
  return t === '1' || t === '2' || t === '3' || t === '4' || t === '5' || t === '6';
}

// ---------------------------------------------------------------- a directory

/** Members of a directory tree (an OCI layout directory). Paths may not leave it. */
export class DirStore implements MemberStore {
  constructor(
    readonly dir: string,
    readonly displayName = dir,
  ) {}

  private pathOf(name: string): string | null {
    const n = normalizeMemberName(name);
    return n === null ? null : path.join(this.dir, n);
  }

  private stat(name: string): fs.Stats | undefined {
    const p = this.pathOf(name);
    if (p === null) return undefined;
    try {
      const st = fs.statSync(p);
      return st.isFile() ? st : undefined;
    } catch {
      return undefined;
    }
  }

  has(name: string): boolean {
    return this.stat(name) !== undefined;
  }

  size(name: string): number {
    const st = this.stat(name);
    if (!st) throw new LaminaError('EBADINPUT', `${this.displayName} has no file ${name}`);
    return st.size;
  }

  async read(name: string): Promise<Buffer> {
    const size = this.size(name);
    if (size > MAX_JSON_BYTES) throw new LaminaError('EBADINPUT', `${name} in ${this.displayName} is too large (${size} bytes)`);
    return fs.promises.readFile(this.pathOf(name)!);
  }

  open(name: string): Readable {
    this.size(name);
    return fs.createReadStream(this.pathOf(name)!, { highWaterMark: READ_CHUNK });
  }
}
