// PAX extended header records ("<len> <key>=<value>\n"), parsed as bytes because values such
// as SCHILY.xattr.* are binary. Validation follows Go's archive/tar (parsePAX, parsePAXRecord,
// validPAXRecord, parsePAXTime), so lamina accepts and rejects the same headers Docker does.
import { parseDecimal } from './numeric.js';

export const PAX_SCHILY_XATTR = 'SCHILY.xattr.';
const GNU_SPARSE_OFFSET = 'GNU.sparse.offset';
const GNU_SPARSE_NUMBYTES = 'GNU.sparse.numbytes';
export const GNU_SPARSE_MAP = 'GNU.sparse.map';

const NL = 0x0a;
const SP = 0x20;
const EQ = 0x3d;

/**
 * Records in archive order (a repeated key keeps its first position and its last value, like
 * Go's map). Values are views into `data`, which the caller must own. Returns null when the
 * data is not a valid record sequence (Go's ErrHeader).
 */
export function parsePaxRecords(data: Buffer): Map<string, Buffer> | null {
  const records = new Map<string, Buffer>();
  let sparseMap: Buffer[] | null = null;
  let pos = 0;
  const end = data.length;
  while (pos < end) {
    const sp = data.indexOf(SP, pos);
    if (sp === -1) return null;
    const n = parseDecimal(data, pos, sp);
    if (!(n >= 5) || end - pos < n) return null;
    const recEnd = pos + n;
    if (sp + 1 > recEnd - 1 || data[recEnd - 1] !== NL) return null;
    const eq = data.indexOf(EQ, sp + 1);
    if (eq === -1 || eq >= recEnd - 1) return null;
    const key = data.toString('utf8', sp + 1, eq);
    const value = data.subarray(eq + 1, recEnd - 1);
    if (!validRecord(key, value)) return null;
    pos = recEnd;

    if (key === GNU_SPARSE_OFFSET || key === GNU_SPARSE_NUMBYTES) {
      // GNU sparse 0.0 repeats these two keys; Go folds them into GNU.sparse.map.
      sparseMap ??= [];
      const expectOffset = sparseMap.length % 2 === 0;
      if ((key === GNU_SPARSE_OFFSET) !== expectOffset || value.includes(0x2c /* , */)) return null;
      sparseMap.push(value);
    } else {
      records.set(key, value);
    }
  }
  if (sparseMap) {
    const parts: Buffer[] = [];
    sparseMap.forEach((v, i) => (i === 0 ? parts.push(v) : parts.push(Buffer.from(','), v)));
    records.set(GNU_SPARSE_MAP, Buffer.concat(parts));
  }
  return records;
}

function validRecord(key: string, value: Buffer): boolean {
  if (key === '') return false;
  switch (key) {
    case 'path':
    case 'linkpath':
    case 'uname':
    case 'gname':
      return !value.includes(0);
    default:
      return !key.includes('\0');
  }
}

/** Go's parsePAXTime: "<sec>[.<frac>]" → [seconds, nanoseconds in 0..1e9), or null. */
export function parsePaxTime(v: Buffer): [number, number] | null {
  const dot = v.indexOf(0x2e /* . */);
  const secEnd = dot === -1 ? v.length : dot;
  const secs = parseDecimal(v, 0, secEnd);
  if (Number.isNaN(secs)) return null;
  if (dot === -1 || dot === v.length - 1) return [secs, 0];
  let ns = 0;
  let digits = 0;
  for (let i = dot + 1; i < v.length; i++) {
    const d = v[i] - 0x30;
    if (d < 0 || d > 9) return null;
    if (digits < 9) {
      ns = ns * 10 + d;
      digits++;
    }
  }
  for (; digits < 9; digits++) ns *= 10;
  if (ns === 0) return [secs, 0];
  // "-1.5" means -1.5 s: Go builds time.Unix(-1, -5e8), i.e. second -2 plus 5e8 ns.
  if (v[0] === 0x2d) return [secs - 1, 1e9 - ns];
  return [secs, ns];
}
