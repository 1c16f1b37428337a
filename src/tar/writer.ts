// Tar header encoder that produces the same bytes as Go's archive/tar Writer, which is what
// dockerd writes layer tars with (diffIDs are hashes of those bytes, so "close enough" is wrong).
// It mirrors Writer.WriteHeader for a Header whose Format is PAX, the way Docker's
// FileInfoHeader sets it: USTAR whenever every field fits (splitting a long path into
// prefix + name when Go would), otherwise a PAX 'x' header followed by a USTAR-shaped block that
// holds Go's fallback values. Strings are handled as bytes, like Go strings.
import { LaminaError } from '../errors.js';

export const BLOCK_SIZE = 512;
/** Two zero blocks, as Go's Writer.Close writes them (no padding to a 10240-byte record). */
export const END_OF_ARCHIVE: Buffer = Buffer.alloc(2 * BLOCK_SIZE);

const ZERO_BLOCK = Buffer.alloc(BLOCK_SIZE);

/** Go refuses PAX data over 1 MiB (maxSpecialFileSize). */
const MAX_PAX_DATA = 1 << 20;

// Field offsets and sizes of the USTAR block.
const NAME = 0, NAME_LEN = 100;
const MODE = 100, UID = 108, GID = 116, NUM_LEN = 8;
const SIZE = 124, MTIME = 136, BIG_LEN = 12;
const CHKSUM = 148, TYPEFLAG = 156, LINKNAME = 157;
const MAGIC = 257, VERSION = 263, UNAME = 265, GNAME = 297, OWNER_LEN = 32;
const DEVMAJOR = 329, DEVMINOR = 337, PREFIX = 345, PREFIX_LEN = 155;

const MAGIC_USTAR = Buffer.from('ustar\0', 'latin1');
const VERSION_USTAR = Buffer.from('00', 'latin1');

/** PAX keys Go derives from Header fields; PAXRecords may not override them. */
const BASIC_KEYS = new Set(['path', 'linkpath', 'size', 'uid', 'gid', 'uname', 'gname', 'mtime', 'atime', 'ctime']);

type Bytes = string | Buffer;

/**
 * What Go's tar.Header carries, as far as the writer uses it. Times are whole seconds plus an
 * optional nanosecond part; a non-zero `mtimeNsec`, or any `atime`/`ctime`, makes Go choose PAX
 * (Docker truncates mtime to seconds and drops atime/ctime, so its headers stay USTAR).
 * Callers imitating a Go Header *without* a Format (Go then rounds ModTime to the nearest second
 * and ignores atime/ctime) do that rounding themselves; see roundToSecond().
 */
export interface WriteHeader {
  name: Bytes;
  /** One character; '\0' is promoted to '5' for names ending in '/', else '0' (Go's TypeRegA rule). */
  typeflag: string;
  /** Written as given: Docker includes the S_IFMT bits. */
  mode: number;
  uid?: number;
  gid?: number;
  size?: number;
  mtime?: number;
  mtimeNsec?: number;
  atime?: [number, number];
  ctime?: [number, number];
  linkname?: Bytes;
  uname?: Bytes;
  gname?: Bytes;
  devmajor?: number;
  devminor?: number;
  /** Go's Header.Xattrs: become `SCHILY.xattr.<name>` records (values are binary). */
  xattrs?: Iterable<readonly [string, Bytes]>;
  /** Go's Header.PAXRecords: extra records; keys Go derives from fields are ignored unless equal. */
  paxRecords?: Iterable<readonly [string, Bytes]>;
}

/** Zero bytes that pad `size` bytes of content to the next 512-byte boundary. */
export function padding(size: number): Buffer {
  const n = paddingLength(size);
  return n === 0 ? EMPTY : ZERO_BLOCK.subarray(0, n);
}
const EMPTY: Buffer = Buffer.alloc(0);

export function paddingLength(size: number): number {
  return (BLOCK_SIZE - (size % BLOCK_SIZE)) % BLOCK_SIZE;
}

/** Go's time.Time.Round(time.Second) for a [sec, nsec] pair: halfway rounds up. */
export function roundToSecond(sec: number, nsec: number): number {
  return nsec >= 500_000_000 ? sec + 1 : sec;
}

/** Go's Header.FileInfoHeader typeflags that never carry data (isHeaderOnlyType). */
export function isHeaderOnlyType(t: string): boolean {
  return t === '1' || t === '2' || t === '3' || t === '4' || t === '5' || t === '6';
}

/**
 * The header block(s) Go's Writer.WriteHeader emits for `h`: one 512-byte USTAR block, or a PAX
 * 'x' header + its records (padded) + the main block. Content and its padding are the caller's.
 */
export function encodeHeader(h: WriteHeader): Buffer {
  const name = bytes(h.name);
  const linkname = bytes(h.linkname ?? EMPTY);
  const uname = bytes(h.uname ?? EMPTY);
  const gname = bytes(h.gname ?? EMPTY);
  const uid = h.uid ?? 0, gid = h.gid ?? 0, size = h.size ?? 0;
  const mtime = h.mtime ?? 0, mtimeNsec = h.mtimeNsec ?? 0;
  const devmajor = h.devmajor ?? 0, devminor = h.devminor ?? 0;
  let typeflag = h.typeflag;
  if (typeflag === '\0' || typeflag === '') typeflag = endsWithSlash(name) ? '5' : '0';
  if (typeflag.length !== 1) throw bad(name, `type flag "${typeflag}" is not one character`);

  // Go's allowedFormats, restricted to USTAR | PAX (the Header's Format is PAX).
  let ustarOk = true;
  let preferPax = false;
  const pax = new Map<string, Buffer>();
  const extra = h.paxRecords ? new Map(Array.from(h.paxRecords, ([k, v]) => [k, bytes(v)] as const)) : null;
  const keepIfEqual = (key: string, value: Buffer) => {
    const v = extra?.get(key);
    if (v && v.equals(value)) pax.set(key, v);
  };
  const verifyString = (s: Buffer, fieldLen: number, paxKey: string) => {
    if (s.length > fieldLen || !isASCII(s)) {
      if (paxKey !== 'path' || !splitUSTARPath(s)) ustarOk = false;
      pax.set(paxKey, s); // recorded even when USTAR can split the path; used only if PAX wins
    }
    keepIfEqual(paxKey, s);
  };
  const verifyNumeric = (n: number, fieldLen: number, paxKey: string | null, what: string) => {
    if (!fitsInOctal(fieldLen, n)) {
      // Neither USTAR nor PAX can hold it; Go only has GNU left, which a PAX Header excludes.
      if (paxKey === null) throw bad(name, `${what} ${n} does not fit its field`);
      ustarOk = false;
      pax.set(paxKey, Buffer.from(String(n), 'latin1'));
    }
    if (paxKey !== null) keepIfEqual(paxKey, Buffer.from(String(n), 'latin1'));
  };
  const verifyTime = (ts: [number, number] | undefined, paxKey: 'mtime' | 'atime' | 'ctime') => {
    if (!ts) return;
    const isMtime = paxKey === 'mtime';
    const fitsOctal = fitsInOctal(BIG_LEN, ts[0]);
    if (!isMtime || !fitsOctal) ustarOk = false;
    if (!isMtime || !fitsOctal || ts[1] !== 0) {
      preferPax = true;
      pax.set(paxKey, Buffer.from(formatPAXTime(ts[0], ts[1]), 'latin1'));
    }
    keepIfEqual(paxKey, Buffer.from(formatPAXTime(ts[0], ts[1]), 'latin1'));
  };

  verifyString(name, NAME_LEN, 'path');
  verifyString(linkname, NAME_LEN, 'linkpath');
  verifyString(uname, OWNER_LEN, 'uname');
  verifyString(gname, OWNER_LEN, 'gname');
  verifyNumeric(h.mode, NUM_LEN, null, 'mode');
  verifyNumeric(uid, NUM_LEN, 'uid', 'uid');
  verifyNumeric(gid, NUM_LEN, 'gid', 'gid');
  verifyNumeric(size, BIG_LEN, 'size', 'size');
  verifyNumeric(devmajor, NUM_LEN, null, 'device major');
  verifyNumeric(devminor, NUM_LEN, null, 'device minor');
  verifyTime([mtime, mtimeNsec], 'mtime');
  verifyTime(h.atime, 'atime');
  verifyTime(h.ctime, 'ctime');

  switch (typeflag) {
    case '0': case '3': case '4': case '6': case 'S':
      if (endsWithSlash(name)) throw bad(name, 'a non-directory entry name may not end in "/"');
      break;
    case 'x': case 'g': case 'L': case 'K':
      throw bad(name, `type flag "${typeflag}" is written by the encoder itself, not by callers`);
  }
  if (!isHeaderOnlyType(typeflag) && size < 0) throw bad(name, 'negative size');

  let forcePax = false;
  if (h.xattrs) {
    for (const [k, v] of h.xattrs) {
      pax.set('SCHILY.xattr.' + k, bytes(v));
      forcePax = true;
    }
  }
  if (extra && extra.size > 0) {
    for (const [k, v] of extra) {
      if (!pax.has(k) && !BASIC_KEYS.has(k) && !k.startsWith('GNU.sparse.')) pax.set(k, v);
    }
    forcePax = true;
  }
  for (const [k, v] of pax) {
    if (!validPAXRecord(k, v)) throw bad(name, `PAX record "${k}" cannot hold this value (NUL byte)`);
  }
  if (forcePax || preferPax) ustarOk = false;

  if (ustarOk) return ustarBlock(name, linkname, uname, gname, typeflag, h.mode, uid, gid, size, mtime, devmajor, devminor);
  return paxBlocks(name, linkname, uname, gname, typeflag, h.mode, uid, gid, size, mtime, devmajor, devminor, pax);
}

function ustarBlock(
  name: Buffer, linkname: Buffer, uname: Buffer, gname: Buffer, typeflag: string,
  mode: number, uid: number, gid: number, size: number, mtime: number, devmajor: number, devminor: number,
): Buffer {
  const blk = Buffer.alloc(BLOCK_SIZE);
  let prefix: Buffer = EMPTY;
  const split = splitUSTARPath(name);
  if (split) [prefix, name] = split;
  templateV7Plus(blk, name, linkname, uname, gname, typeflag, mode, uid, gid, size, mtime, devmajor, devminor);
  formatString(blk, PREFIX, PREFIX_LEN, prefix);
  setUstarMagicAndChecksum(blk);
  return blk;
}

function paxBlocks(
  name: Buffer, linkname: Buffer, uname: Buffer, gname: Buffer, typeflag: string,
  mode: number, uid: number, gid: number, size: number, mtime: number, devmajor: number, devminor: number,
  records: Map<string, Buffer>,
): Buffer {
  // Records sorted by key bytes, as Go sorts its string keys.
  const keys = [...records.keys()];
  if (keys.length > 1) keys.sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  const parts = keys.map((k) => formatPAXRecord(k, records.get(k)!));
  const data = Buffer.concat(parts);
  if (data.length > MAX_PAX_DATA) throw bad(name, `PAX header data of ${data.length} bytes exceeds 1 MiB`);

  const dataBlocks = Math.ceil(data.length / BLOCK_SIZE);
  const out = Buffer.alloc((2 + dataBlocks) * BLOCK_SIZE);

  // The 'x' header: Go's writeRawFile with name <dir>/PaxHeaders.0/<base>.
  const x = out.subarray(0, BLOCK_SIZE);
  let xName = toASCII(paxHeaderName(name));
  if (xName.length > NAME_LEN) xName = xName.subarray(0, NAME_LEN);
  xName = trimTrailingSlashes(xName);
  x[TYPEFLAG] = 0x78; // 'x'
  formatString(x, NAME, NAME_LEN, xName);
  formatOctal(x, MODE, NUM_LEN, 0);
  formatOctal(x, UID, NUM_LEN, 0);
  formatOctal(x, GID, NUM_LEN, 0);
  formatOctal(x, SIZE, BIG_LEN, data.length);
  formatOctal(x, MTIME, BIG_LEN, 0);
  setUstarMagicAndChecksum(x);
  data.copy(out, BLOCK_SIZE);

  // The main block: V7 + USTAR fields with non-ASCII bytes dropped, values that do not fit as 0,
  // and no prefix split.
  const main = out.subarray((1 + dataBlocks) * BLOCK_SIZE);
  templateV7Plus(main, toASCII(name), toASCII(linkname), toASCII(uname), toASCII(gname),
    typeflag, mode, uid, gid, size, mtime, devmajor, devminor);
  setUstarMagicAndChecksum(main);
  return out;
}

function templateV7Plus(
  blk: Buffer, name: Buffer, linkname: Buffer, uname: Buffer, gname: Buffer, typeflag: string,
  mode: number, uid: number, gid: number, size: number, mtime: number, devmajor: number, devminor: number,
): void {
  blk[TYPEFLAG] = typeflag.charCodeAt(0);
  formatString(blk, NAME, NAME_LEN, name);
  formatString(blk, LINKNAME, NAME_LEN, linkname);
  formatOctal(blk, MODE, NUM_LEN, mode);
  formatOctal(blk, UID, NUM_LEN, uid);
  formatOctal(blk, GID, NUM_LEN, gid);
  formatOctal(blk, SIZE, BIG_LEN, size);
  formatOctal(blk, MTIME, BIG_LEN, mtime);
  formatString(blk, UNAME, OWNER_LEN, uname);
  formatString(blk, GNAME, OWNER_LEN, gname);
  formatOctal(blk, DEVMAJOR, NUM_LEN, devmajor);
  formatOctal(blk, DEVMINOR, NUM_LEN, devminor);
}

/** Magic "ustar\0", version "00", then the checksum as six octal digits, NUL, space. */
function setUstarMagicAndChecksum(blk: Buffer): void {
  MAGIC_USTAR.copy(blk, MAGIC);
  VERSION_USTAR.copy(blk, VERSION);
  blk.fill(0x20, CHKSUM, CHKSUM + 8);
  let sum = 0;
  for (let i = 0; i < BLOCK_SIZE; i++) sum += blk[i];
  formatOctal(blk, CHKSUM, 7, sum);
  blk[CHKSUM + 7] = 0x20;
}

/**
 * Go's formatString: copy (truncating), NUL-terminate when there is room, and when a truncated
 * value leaves '/' in the last byte, cut the run of trailing slashes with a NUL (for readers
 * that would take a truncated file name for a directory).
 */
function formatString(blk: Buffer, off: number, len: number, s: Buffer): void {
  const n = s.copy(blk, off, 0, Math.min(len, s.length));
  if (n < len) blk[off + n] = 0;
  if (s.length > len && blk[off + len - 1] === 0x2f) {
    let k = len - 1;
    while (k > 0 && s[k - 1] === 0x2f) k--;
    blk[off + k] = 0;
  }
}

/** Go's formatOctal: zero-padded octal leaving room for a NUL; a value that does not fit is written as 0. */
function formatOctal(blk: Buffer, off: number, len: number, x: number): void {
  if (!fitsInOctal(len, x)) x = 0;
  const digits = x.toString(8);
  const s = digits.length < len - 1 ? digits.padStart(len - 1, '0') : digits;
  const n = blk.write(s, off, Math.min(len, s.length), 'latin1');
  if (n < len) blk[off + n] = 0;
}

export function fitsInOctal(len: number, x: number): boolean {
  return Number.isSafeInteger(x) && x >= 0 && (len >= 22 || x < 8 ** (len - 1));
}

/** Go's splitUSTARPath: longest prefix ≤ 155 bytes, name ≤ 100, for ASCII paths over 100 bytes. */
export function splitUSTARPath(name: Buffer): [Buffer, Buffer] | null {
  let length = name.length;
  if (length <= NAME_LEN || !isASCII(name)) return null;
  if (length > PREFIX_LEN + 1) length = PREFIX_LEN + 1;
  else if (name[length - 1] === 0x2f) length--;
  const i = name.lastIndexOf(0x2f, length - 1);
  const nlen = name.length - i - 1;
  if (i <= 0 || nlen > NAME_LEN || nlen === 0 || i > PREFIX_LEN) return null;
  return [name.subarray(0, i), name.subarray(i + 1)];
}

/** Go's formatPAXRecord: "<len> <key>=<value>\n", <len> counting the whole record. */
export function formatPAXRecord(key: string, value: Buffer): Buffer {
  const k = Buffer.from(key);
  const n = k.length + value.length + 3;
  let size = n + String(n).length;
  const len = n + String(size).length;
  if (len !== size) size = len;
  const head = Buffer.from(`${size} `, 'latin1');
  const rec = Buffer.allocUnsafe(size);
  let o = head.copy(rec, 0);
  o += k.copy(rec, o);
  rec[o++] = 0x3d; // '='
  o += value.copy(rec, o);
  rec[o] = 0x0a;
  return rec;
}

/** Go's formatPAXTime: "<sec>" or "<sec>.<nsec>" without trailing zeros; negative times too. */
export function formatPAXTime(sec: number, nsec: number): string {
  if (nsec === 0) return String(sec);
  let sign = '';
  if (sec < 0) {
    sign = '-';
    sec = -(sec + 1);
    nsec = 1e9 - nsec;
  }
  return `${sign}${sec}.${String(nsec).padStart(9, '0')}`.replace(/0+$/, '');
}

function validPAXRecord(k: string, v: Buffer): boolean {
  if (k === '' || k.includes('=')) return false;
  switch (k) {
    case 'path': case 'linkpath': case 'uname': case 'gname':
      return !v.includes(0);
    default:
      return !k.includes('\0');
  }
}

/** Go's isASCII: every byte in 1..0x7f (multi-byte UTF-8 and invalid bytes are all ≥ 0x80). */
function isASCII(s: Buffer): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c >= 0x80 || c === 0) return false;
  }
  return true;
}

/** Go's toASCII: the same bytes minus NULs and everything ≥ 0x80. */
function toASCII(s: Buffer): Buffer {
  if (isASCII(s)) return s;
  const out = Buffer.allocUnsafe(s.length);
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c < 0x80 && c !== 0) out[n++] = c;
  }
  return out.subarray(0, n);
}

/** path.Join(dir, "PaxHeaders.0", file) with (dir, file) = path.Split(name), as Go builds it. */
function paxHeaderName(name: Buffer): Buffer {
  const s = name.toString('latin1'); // byte-preserving: only '/' and '.' matter below
  const slash = s.lastIndexOf('/');
  const dir = s.slice(0, slash + 1);
  const file = s.slice(slash + 1);
  const joined = [dir, 'PaxHeaders.0', file].filter((p) => p !== '').join('/');
  return Buffer.from(cleanPath(joined), 'latin1');
}

/** Go's path.Clean. */
export function cleanPath(p: string): string {
  if (p === '') return '.';
  const rooted = p[0] === '/';
  const out: string[] = [];
  for (const part of p.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (out.length > 0 && out[out.length - 1] !== '..') out.pop();
      else if (!rooted) out.push('..');
      continue;
    }
    out.push(part);
  }
  const body = out.join('/');
  if (rooted) return '/' + body;
  return body === '' ? '.' : body;
}

function trimTrailingSlashes(b: Buffer): Buffer {
  let n = b.length;
  while (n > 0 && b[n - 1] === 0x2f) n--;
  return b.subarray(0, n);
}

function endsWithSlash(b: Buffer): boolean {
  return b.length > 0 && b[b.length - 1] === 0x2f;
}

function bytes(s: Bytes): Buffer {
  return typeof s === 'string' ? Buffer.from(s) : s;
}

function bad(name: Buffer, why: string): LaminaError {
  return new LaminaError('EINVAL', `cannot encode tar header for "${name.toString()}": ${why}`);
}
