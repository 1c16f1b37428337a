// Streaming, synchronous push parser for tar, agreeing with Go's archive/tar reader (which is what
// Docker extracts layers and records tar-split with). Every input byte is handed to the visitor
// exactly once, either as raw() (headers, meta records, padding, end marker, trailing bytes) or
// as data() (entry content, as views into the caller's chunks), so one pass can extract, hash
// and record tar-split at the same time.
import { LaminaError } from '../errors.js';
import { cstringEnd, parseDecimal, parseNumeric, parseOctal } from './numeric.js';
import { GNU_SPARSE_MAP, PAX_SCHILY_XATTR, parsePaxRecords, parsePaxTime } from './pax.js';
import type { TarFormat, TarHeader, TarVisitor } from './types.js';

const BLOCK = 512;
/** Go refuses PAX and GNU long-name records above 1 MiB (CVE-2022-2879); so do we. */
const MAX_SPECIAL_FILE = 1 << 20;
const ZERO_BLOCK = Buffer.alloc(BLOCK);

// Parser states.
const S_HEADER = 0; // expecting a header block
const S_SPECIAL = 1; // collecting the data of an x / g / L / K meta entry
const S_DATA = 2; // content of the current entry
const S_PAD = 3; // padding after content or meta data
const S_ZERO = 4; // one zero block seen: the next block must be zero too (end of archive)
const S_TRAILER = 5; // after the end-of-archive marker: everything is raw
const S_FAILED = 6;

// Header field offsets.
const O_NAME = 0, O_MODE = 100, O_UID = 108, O_GID = 116, O_SIZE = 124, O_MTIME = 136;
const O_CHKSUM = 148, O_TYPE = 156, O_LINK = 157, O_MAGIC = 257;
const O_UNAME = 265, O_GNAME = 297, O_DEVMAJOR = 329, O_DEVMINOR = 337, O_PREFIX = 345;
const O_GNU_ATIME = 345, O_GNU_CTIME = 357, O_STAR_ATIME = 476, O_STAR_CTIME = 488, O_STAR_TRAILER = 508;

type BlockFormat = 'v7' | 'ustar' | 'star' | 'gnu';

/** Type flags that never carry data, whatever their size field says (Go's isHeaderOnlyType). */
function isHeaderOnly(t: string): boolean {
  return t === '1' || t === '2' || t === '3' || t === '4' || t === '5' || t === '6';
}

/** One decoded header block, before PAX / GNU meta records are applied. */
interface RawHeader {
  offset: number;
  format: BlockFormat;
  typeflag: string;
  nameBytes: Buffer;
  linkBytes: Buffer;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  uname: string;
  gname: string;
  devmajor: number;
  devminor: number;
  atime?: [number, number];
  ctime?: [number, number];
}

export class TarParser {
  private readonly v: TarVisitor;
  private state = S_HEADER;
  /** Absolute stream offset of the current chunk's first byte. */
  private base = 0;
  /** Partial header block carried across chunks. */
  private readonly hdrBuf = Buffer.allocUnsafe(BLOCK);
  private hdrFill = 0;
  /** Content bytes left in the current entry, then padding bytes left. */
  private remaining = 0;
  private pad = 0;
  private current: TarHeader | null = null;
  // Meta records waiting for the next real header.
  private paxLocal: Map<string, Buffer> | null = null;
  private longName: Buffer | null = null;
  private longLink: Buffer | null = null;
  private sawGnuMeta = false;
  // The x / g / L / K entry whose data is being collected.
  private special: RawHeader | null = null;
  private specialBuf: Buffer = ZERO_BLOCK;
  private specialFill = 0;
  private eofSeen = false;
  private error: LaminaError | null = null;

  constructor(visitor: TarVisitor) {
    this.v = visitor;
  }

  /** Bytes consumed so far. */
  get position(): number {
    return this.base;
  }

  write(chunk: Buffer): void {
    if (this.error) throw this.error;
    try {
      this.consume(chunk);
    } catch (e) {
      releaseSumView();
      this.state = S_FAILED;
      if (e instanceof LaminaError) this.error = e;
      throw e;
    }
  }

  /** The input is complete: fails on a truncated archive, else reports eof() if not yet seen. */
  end(): void {
    if (this.error) throw this.error;
    const at = this.base;
    let problem: string | null = null;
    switch (this.state) {
      case S_HEADER:
      case S_ZERO:
        // Go accepts EOF at a block boundary, and after exactly one zero block.
        if (this.hdrFill !== 0) problem = `unexpected end of archive inside a header block at offset ${at - this.hdrFill}`;
        break;
      case S_PAD: // Go stops cleanly when the stream ends inside padding
      case S_TRAILER:
        break;
      case S_DATA: {
        const h = this.current!;
        const dataSize = isHeaderOnly(h.typeflag) ? 0 : h.size;
        problem = `tar entry ${JSON.stringify(h.name)}: unexpected end of archive: ${dataSize - this.remaining} of ${dataSize} content bytes present`;
        break;
      }
      case S_SPECIAL:
        problem = `unexpected end of archive inside the ${metaName(this.special!.typeflag)} at offset ${this.special!.offset}`;
        break;
      default:
        throw new LaminaError('EBADTAR', 'tar parser used after a failure');
    }
    if (problem) {
      this.state = S_FAILED;
      this.error = new LaminaError('EBADTAR', problem);
      throw this.error;
    }
    this.state = S_TRAILER;
    if (!this.eofSeen) {
      this.eofSeen = true;
      this.v.eof?.();
    }
  }

  private consume(chunk: Buffer): void {
    const len = chunk.length;
    const v = this.v;
    let pos = 0;
    let rawStart = 0; // start of the raw run not yet handed to v.raw
    while (pos < len) {
      switch (this.state) {
        case S_HEADER:
        case S_ZERO: {
          let block: Buffer;
          let boff: number;
          if (this.hdrFill === 0 && len - pos >= BLOCK) {
            block = chunk;
            boff = pos;
            pos += BLOCK;
          } else {
            const n = Math.min(BLOCK - this.hdrFill, len - pos);
            chunk.copy(this.hdrBuf, this.hdrFill, pos, pos + n);
            this.hdrFill += n;
            pos += n;
            if (this.hdrFill < BLOCK) break;
            this.hdrFill = 0;
            block = this.hdrBuf;
            boff = 0;
          }
          const offset = this.base + pos - BLOCK;
          // A header never starts with a NUL (its name would be empty), so most blocks skip the compare.
          const isZero = block[boff] === 0 && block.compare(ZERO_BLOCK, 0, BLOCK, boff, boff + BLOCK) === 0;
          if (this.state === S_ZERO) {
            if (!isZero) throw badHeader(offset, 'a zero block followed by a non-zero block');
            if (pos > rawStart) v.raw?.(chunk.subarray(rawStart, pos));
            rawStart = pos;
            this.state = S_TRAILER;
            this.eofSeen = true;
            v.eof?.();
            break;
          }
          if (isZero) {
            this.state = S_ZERO;
            break;
          }
          const h = decodeHeader(block, boff, offset);
          const cur = this.onHeader(h);
          if (cur) {
            // A real entry: its header bytes go out before entry().
            if (pos > rawStart) v.raw?.(chunk.subarray(rawStart, pos));
            rawStart = pos;
            v.entry(cur);
            if (this.remaining === 0) {
              this.current = null;
              v.entryEnd?.(cur);
            }
          }
          break;
        }
        case S_DATA: {
          if (pos > rawStart) v.raw?.(chunk.subarray(rawStart, pos));
          const n = Math.min(this.remaining, len - pos);
          v.data?.(chunk.subarray(pos, pos + n));
          pos += n;
          rawStart = pos;
          this.remaining -= n;
          if (this.remaining === 0) {
            const cur = this.current!;
            this.current = null;
            this.state = this.pad > 0 ? S_PAD : S_HEADER;
            v.entryEnd?.(cur);
          }
          break;
        }
        case S_PAD: {
          const n = Math.min(this.pad, len - pos);
          pos += n;
          this.pad -= n;
          if (this.pad === 0) this.state = S_HEADER;
          break;
        }
        case S_SPECIAL: {
          const n = Math.min(this.specialBuf.length - this.specialFill, len - pos);
          chunk.copy(this.specialBuf, this.specialFill, pos, pos + n);
          this.specialFill += n;
          pos += n;
          if (this.specialFill === this.specialBuf.length) {
            const g = this.finishSpecial();
            if (g) {
              // Go hands a global header to its caller as an entry of its own.
              if (pos > rawStart) v.raw?.(chunk.subarray(rawStart, pos));
              rawStart = pos;
              v.entry(g);
              v.entryEnd?.(g);
            }
          }
          break;
        }
        case S_TRAILER:
          pos = len;
          break;
        default:
          throw new LaminaError('EBADTAR', 'tar parser used after a failure');
      }
    }
    if (len > rawStart) v.raw?.(chunk.subarray(rawStart, len));
    this.base += len;
    releaseSumView(); // the chunk is the caller's: keep no reference to it
  }

  /**
   * A non-zero header block: meta entries start collecting, real entries become current.
   * Returns the entry to report now, if any.
   */
  private onHeader(h: RawHeader): TarHeader | null {
    const t = h.typeflag;
    if (t === 'x' || t === 'g' || t === 'L' || t === 'K') {
      if (h.size < 0) throw badHeader(h.offset, 'negative size');
      if (h.size > MAX_SPECIAL_FILE) {
        throw new LaminaError('EBADTAR', `invalid tar header at offset ${h.offset}: ${metaName(t)} of ${h.size} bytes exceeds the 1 MiB limit`);
      }
      this.special = h;
      this.specialBuf = Buffer.allocUnsafe(h.size);
      this.specialFill = 0;
      this.pad = padding(h.size);
      this.remaining = 0;
      if (h.size > 0) {
        this.state = S_SPECIAL;
        return null;
      }
      return this.finishSpecial(); // a global header without records is still an entry
    }
    if (t === 'S') throw sparseError(h, this.effectiveName(h));
    // Go checks the block's own size before applying PAX records, then the merged one.
    if (h.size < 0 && !isHeaderOnly(t)) throw badHeader(h.offset, 'negative size');

    const hdr = this.applyMeta(h);
    const dataSize = isHeaderOnly(hdr.typeflag) ? 0 : hdr.size;
    if (dataSize < 0) throw badHeader(h.offset, `tar entry ${JSON.stringify(hdr.name)}: negative size`);
    if (hdr.pax && isPaxSparse(hdr.pax)) {
      const real = hdr.pax.get('GNU.sparse.name'); // the stored name is a GNUSparseFile.* placeholder
      throw sparseError(h, real && real.length > 0 ? real.toString('utf8') : hdr.name);
    }
    this.current = hdr;
    this.remaining = dataSize;
    this.pad = padding(dataSize);
    this.state = dataSize > 0 ? S_DATA : S_HEADER;
    return hdr;
  }

  /** Data of a meta entry is complete. Returns the entry to report for a global header. */
  private finishSpecial(): TarHeader | null {
    const h = this.special!;
    const data = this.specialBuf;
    this.special = null;
    this.specialBuf = ZERO_BLOCK;
    this.state = this.pad > 0 ? S_PAD : S_HEADER;
    switch (h.typeflag) {
      case 'x':
      case 'g': {
        const records = parsePaxRecords(data);
        if (!records) throw badHeader(h.offset, `invalid PAX record in the ${metaName(h.typeflag)}`);
        if (h.typeflag === 'x') {
          this.paxLocal = records; // Go keeps only the latest x header
          return null;
        }
        // Go reports a global header as its own entry (name, records, xattrs only) and does not
        // apply its records to later entries; pending local meta records are dropped with it.
        this.paxLocal = null;
        this.longName = this.longLink = null;
        this.sawGnuMeta = false;
        const g = this.applyMeta({ ...h, typeflag: 'g' }, records);
        return {
          name: g.name,
          nameBytes: g.nameBytes,
          linkname: '',
          typeflag: 'g',
          mode: 0,
          uid: 0,
          gid: 0,
          size: 0,
          mtime: 0,
          mtimeNsec: 0,
          uname: '',
          gname: '',
          devmajor: 0,
          devminor: 0,
          xattrs: g.xattrs,
          pax: records,
          format: 'pax',
        };
      }
      case 'L':
        this.longName = data.subarray(0, cstringEnd(data, 0, data.length));
        this.sawGnuMeta = true;
        return null;
      default: // 'K'
        this.longLink = data.subarray(0, cstringEnd(data, 0, data.length));
        this.sawGnuMeta = true;
        return null;
    }
  }

  private effectiveName(h: RawHeader): string {
    const p = this.paxLocal?.get('path');
    return (p && p.length > 0 ? p : this.longName && this.longName.length > 0 ? this.longName : h.nameBytes).toString('utf8');
  }

  /** Go's mergePAX plus GNU long names; consumes the pending meta records. */
  private applyMeta(h: RawHeader, records: Map<string, Buffer> | null = this.paxLocal): TarHeader {
    let nameBytes = h.nameBytes;
    let linkBytes = h.linkBytes;
    let { uid, gid, size, uname, gname } = h;
    let mtime = h.mtime;
    let mtimeNsec = 0;
    let atime = h.atime;
    let ctime = h.ctime;
    let xattrs: Array<[string, Buffer]> = [];
    let format: TarFormat = h.format === 'gnu' ? 'gnu' : h.format === 'v7' ? 'v7' : 'ustar';
    if (records) {
      format = 'pax';
      for (const [k, val] of records) {
        if (val.length === 0) continue; // Go keeps the header field when a record is empty
        switch (k) {
          case 'path':
            nameBytes = val;
            break;
          case 'linkpath':
            linkBytes = val;
            break;
          case 'uname':
            uname = val.toString('utf8');
            break;
          case 'gname':
            gname = val.toString('utf8');
            break;
          case 'uid':
            uid = paxInt(val, h, k);
            break;
          case 'gid':
            gid = paxInt(val, h, k);
            break;
          case 'size':
            size = paxInt(val, h, k);
            break;
          case 'mtime':
            [mtime, mtimeNsec] = paxTime(val, h, k);
            break;
          case 'atime':
            atime = paxTime(val, h, k);
            break;
          case 'ctime':
            ctime = paxTime(val, h, k);
            break;
          default:
            if (k.startsWith(PAX_SCHILY_XATTR)) xattrs.push([k.slice(PAX_SCHILY_XATTR.length), val]);
        }
      }
    }
    if (this.longName && this.longName.length > 0) nameBytes = this.longName;
    if (this.longLink && this.longLink.length > 0) linkBytes = this.longLink;
    if (this.sawGnuMeta && format !== 'pax') format = 'gnu';
    this.paxLocal = null;
    this.longName = this.longLink = null;
    this.sawGnuMeta = false;

    let typeflag = h.typeflag;
    if (typeflag === '\0') {
      // V7 regular file; legacy archives mark directories with a trailing slash.
      typeflag = nameBytes.length > 0 && nameBytes[nameBytes.length - 1] === 0x2f ? '5' : '0';
    }
    const hdr: TarHeader = {
      name: nameBytes.toString('utf8'),
      nameBytes,
      linkname: linkBytes.toString('utf8'),
      typeflag,
      mode: h.mode,
      uid,
      gid,
      size,
      mtime,
      mtimeNsec,
      uname,
      gname,
      devmajor: h.devmajor,
      devminor: h.devminor,
      xattrs,
      pax: records,
      format,
    };
    if (atime) hdr.atime = atime;
    if (ctime) hdr.ctime = ctime;
    return hdr;
  }
}

/** A visitor that forwards every event to several visitors, in order. */
export class TeeVisitor implements TarVisitor {
  private readonly visitors: TarVisitor[];
  constructor(...visitors: TarVisitor[]) {
    this.visitors = visitors;
  }
  raw(chunk: Buffer): void {
    for (const v of this.visitors) v.raw?.(chunk);
  }
  entry(h: TarHeader): void {
    for (const v of this.visitors) v.entry(h);
  }
  data(chunk: Buffer): void {
    for (const v of this.visitors) v.data?.(chunk);
  }
  entryEnd(h: TarHeader): void {
    for (const v of this.visitors) v.entryEnd?.(h);
  }
  eof(): void {
    for (const v of this.visitors) v.eof?.();
  }
}

/** Parses a whole in-memory tar (tests, small archives). */
export function parseTarBuffer(tar: Buffer, visitor: TarVisitor): void {
  const p = new TarParser(visitor);
  p.write(tar);
  p.end();
}

function padding(n: number): number {
  return (BLOCK - (n % BLOCK)) % BLOCK;
}

function metaName(t: string): string {
  switch (t) {
    case 'x':
      return 'PAX extended header';
    case 'g':
      return 'PAX global header';
    case 'L':
      return 'GNU long name';
    default:
      return 'GNU long link';
  }
}

function badHeader(offset: number, why: string): LaminaError {
  return new LaminaError('EBADTAR', `invalid tar header at offset ${offset}: ${why}`);
}

function sparseError(h: RawHeader, name: string): LaminaError {
  return new LaminaError('EBADTAR', `tar entry ${JSON.stringify(name)}: sparse files are not supported (header at offset ${h.offset})`);
}

function paxInt(v: Buffer, h: RawHeader, key: string): number {
  const n = parseDecimal(v, 0, v.length);
  if (Number.isNaN(n)) {
    throw badHeader(h.offset, `invalid PAX ${key} value ${JSON.stringify(v.toString('utf8'))}`);
  }
  return n;
}

function paxTime(v: Buffer, h: RawHeader, key: string): [number, number] {
  const t = parsePaxTime(v);
  if (!t) throw badHeader(h.offset, `invalid PAX ${key} value ${JSON.stringify(v.toString('utf8'))}`);
  return t;
}

/** Go's readGNUSparsePAXHeaders: which PAX record sets make an entry a GNU sparse file. */
function isPaxSparse(pax: Map<string, Buffer>): boolean {
  const major = pax.get('GNU.sparse.major')?.toString('latin1') ?? '';
  const minor = pax.get('GNU.sparse.minor')?.toString('latin1') ?? '';
  if (major === '0' && (minor === '0' || minor === '1')) return true;
  if (major === '1' && minor === '0') return true;
  if (major !== '' || minor !== '') return false;
  return (pax.get(GNU_SPARSE_MAP)?.length ?? 0) > 0;
}

/**
 * Go's header checksum check: the stored value must be the unsigned or the signed sum of the
 * block's bytes, with the checksum field counted as spaces. The unsigned sum is computed first
 * (the signed one only matters when it differs).
 */
function checksumOk(b: Buffer, o: number): boolean {
  const stored = parseOctal(b, o + O_CHKSUM, 8);
  if (Number.isNaN(stored)) return false;
  let unsigned = byteSum(b, o);
  let field = 0;
  for (let i = o + O_CHKSUM, end = i + 8; i < end; i++) field += b[i];
  unsigned += 8 * 0x20 - field;
  if (stored === unsigned) return true;
  let high = 0; // bytes >= 0x80 outside the field, to derive the signed sum
  for (let i = o, end = o + BLOCK; i < end; i++) if (b[i] & 0x80 && (i < o + O_CHKSUM || i >= o + O_CHKSUM + 8)) high++;
  return stored === unsigned - 256 * high;
}

/** A 32-bit view of the chunk headers are read from, while it is being parsed. */
const NO_VIEW = new Int32Array(0);
let sumView: Int32Array = NO_VIEW;
let sumViewOf: ArrayBufferLike | null = null;

function releaseSumView(): void {
  sumView = NO_VIEW;
  sumViewOf = null;
}

/** Sum of the 512 bytes at b[o]: four bytes per step, in two 16-bit lanes, when aligned. */
function byteSum(b: Buffer, o: number): number {
  const at = b.byteOffset + o;
  if ((at & 3) !== 0) {
    let sum = 0;
    for (let i = o, end = o + BLOCK; i < end; i++) sum += b[i];
    return sum;
  }
  if (sumViewOf !== b.buffer) {
    sumView = new Int32Array(b.buffer, 0, b.buffer.byteLength >>> 2);
    sumViewOf = b.buffer;
  }
  // Each lane collects at most 128 * 2 * 255 < 2^16, so the lanes never carry into each other.
  let lanes = 0;
  for (let i = at >>> 2, end = i + BLOCK / 4; i < end; i++) {
    const w = sumView[i];
    lanes = (lanes + (w & 0x00ff00ff) + ((w >>> 8) & 0x00ff00ff)) | 0;
  }
  return (lanes & 0xffff) + (lanes >>> 16);
}

function numericField(b: Buffer, o: number, off: number, len: number, offset: number, what: string): number {
  const n = parseNumeric(b, o + off, len);
  if (Number.isNaN(n)) throw badHeader(offset, `bad ${what} field`);
  return n;
}

/** Decodes one non-zero header block as Go's readHeader does, verifying its checksum. */
function decodeHeader(b: Buffer, o: number, offset: number): RawHeader {
  if (!checksumOk(b, o)) throw badHeader(offset, 'bad checksum');

  let format: BlockFormat = 'v7';
  if (bytesAt(b, o + O_MAGIC, MAGIC_USTAR)) {
    format = bytesAt(b, o + O_STAR_TRAILER, TRAILER_STAR) ? 'star' : 'ustar';
  } else if (bytesAt(b, o + O_MAGIC, MAGIC_GNU)) {
    format = 'gnu';
  }

  const typeflag = String.fromCharCode(b[o + O_TYPE]);
  let nameBytes = copyCString(b, o + O_NAME, 100);
  const h: RawHeader = {
    offset,
    format,
    typeflag,
    nameBytes,
    linkBytes: copyCString(b, o + O_LINK, 100),
    mode: numericField(b, o, O_MODE, 8, offset, 'mode'),
    uid: numericField(b, o, O_UID, 8, offset, 'uid'),
    gid: numericField(b, o, O_GID, 8, offset, 'gid'),
    size: numericField(b, o, O_SIZE, 12, offset, 'size'),
    mtime: numericField(b, o, O_MTIME, 12, offset, 'mtime'),
    uname: '',
    gname: '',
    devmajor: 0,
    devminor: 0,
  };
  if (format === 'v7') return h;

  h.uname = b.toString('utf8', o + O_UNAME, cstringEnd(b, o + O_UNAME, 32));
  h.gname = b.toString('utf8', o + O_GNAME, cstringEnd(b, o + O_GNAME, 32));
  h.devmajor = numericField(b, o, O_DEVMAJOR, 8, offset, 'devmajor');
  h.devminor = numericField(b, o, O_DEVMINOR, 8, offset, 'devminor');

  let prefix: Buffer | null = null;
  if (format === 'ustar') {
    prefix = copyCString(b, o + O_PREFIX, 155);
  } else if (format === 'star') {
    prefix = copyCString(b, o + O_PREFIX, 131);
    h.atime = [numericField(b, o, O_STAR_ATIME, 12, offset, 'atime'), 0];
    h.ctime = [numericField(b, o, O_STAR_CTIME, 12, offset, 'ctime'), 0];
  } else {
    // GNU: atime/ctime live where ustar keeps its prefix. Go falls back to reading them as a
    // prefix when they do not parse (tars written by Go before 1.8).
    const at = b[o + O_GNU_ATIME] !== 0 ? parseNumeric(b, o + O_GNU_ATIME, 12) : 0;
    const ct = b[o + O_GNU_CTIME] !== 0 ? parseNumeric(b, o + O_GNU_CTIME, 12) : 0;
    if (Number.isNaN(at) || Number.isNaN(ct)) {
      const p = copyCString(b, o + O_PREFIX, 155);
      if (!p.some((c) => c >= 0x80)) prefix = p;
    } else {
      if (b[o + O_GNU_ATIME] !== 0) h.atime = [at, 0];
      if (b[o + O_GNU_CTIME] !== 0) h.ctime = [ct, 0];
    }
  }
  if (prefix && prefix.length > 0) {
    nameBytes = Buffer.concat([prefix, SLASH, nameBytes]);
    h.nameBytes = nameBytes;
  }
  return h;
}

const SLASH = Buffer.from('/');
const MAGIC_USTAR = Buffer.from('ustar\0', 'latin1');
const MAGIC_GNU = Buffer.from('ustar  \0', 'latin1'); // magic "ustar " + version " \0"
const TRAILER_STAR = Buffer.from('tar\0', 'latin1');

function bytesAt(b: Buffer, off: number, want: Buffer): boolean {
  for (let i = 0; i < want.length; i++) if (b[off + i] !== want[i]) return false;
  return true;
}

const EMPTY = Buffer.alloc(0);

/** The NUL-terminated string field as bytes of its own (the block may be reused by the caller). */
function copyCString(b: Buffer, off: number, len: number): Buffer {
  const end = cstringEnd(b, off, len);
  if (end === off) return EMPTY;
  const out = Buffer.allocUnsafe(end - off);
  b.copy(out, 0, off, end);
  return out;
}
