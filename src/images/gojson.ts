// JSON exactly as Go's encoding/json writes it, because image IDs, v1 ids and every metadata file
// Docker reads are hashes or byte-compares of Go output. Callers build plain objects in Go struct
// field order (JS keeps insertion order for non-numeric keys); Go *maps* are written with their
// keys sorted, which a `Map` (or `sortKeys`) expresses.
//
// Mirrors Go ≤ 1.21 as used by dockerd 20.10: compact; `<`, `>`, `&`, U+2028, U+2029 escaped;
// \b and \f written as \u0008 / \u000c (Go 1.22 changed that); other non-ASCII raw UTF-8.
import { LaminaError } from '../errors.js';

/** Bytes emitted verbatim after Go's compaction (json.RawMessage). */
export class RawJSON {
  constructor(readonly json: string | Buffer) {}
}

/** A Go string holding arbitrary bytes: invalid UTF-8 becomes one \ufffd per bad byte, as in Go. */
export class GoBytesString {
  constructor(readonly bytes: Buffer) {}
}

export interface GoTime {
  /** Seconds since the Unix epoch (may be negative). */
  sec: number;
  /** 0..999999999 */
  nsec: number;
  /** Zone offset in seconds east of UTC; 0 or absent prints "Z". */
  offset?: number;
}

/**
 * Serializes like Go's json.Marshal: objects keep their key order (Go struct order), `Map`s are
 * written with sorted keys (Go maps), `undefined` properties are left out (omitempty), bigint is
 * an integer, numbers use Go's float64 format, Date is a Go time.
 */
export function marshalGo(value: unknown): string {
  const out: string[] = [];
  encode(value, out);
  return out.join('');
}

/** json.MarshalIndent(value, prefix, indent). */
export function marshalGoIndent(value: unknown, indent: string, prefix = ''): string {
  return indentGo(marshalGo(value), prefix, indent);
}

/** A Go map level: the same entries, written with their keys in Go's (byte-wise) order. */
export function sortKeys<T>(obj: Record<string, T> | Map<string, T>): Map<string, T> {
  const entries = obj instanceof Map ? [...obj.entries()] : Object.entries(obj);
  entries.sort((a, b) => compareGoStrings(a[0], b[0]));
  return new Map(entries);
}

/** Go's string order: byte-wise over UTF-8 (differs from JS order only above U+FFFF vs U+E000–U+FFFF). */
export function compareGoStrings(a: string, b: string): number {
  if (a === b) return 0;
  if (ASCII_RE.test(a) && ASCII_RE.test(b)) return a < b ? -1 : 1;
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

const ASCII_RE = /^[\x00-\x7f]*$/;

function encode(v: unknown, out: string[]): void {
  if (v === null) {
    out.push('null');
    return;
  }
  switch (typeof v) {
    case 'string':
      out.push(quoteGo(v));
      return;
    case 'boolean':
      out.push(v ? 'true' : 'false');
      return;
    case 'number':
      out.push(formatGoFloat(v));
      return;
    case 'bigint':
      out.push(v.toString());
      return;
    case 'object':
      break;
    default:
      throw new LaminaError('EINVAL', `json: unsupported value of type ${typeof v}`);
  }
  if (Array.isArray(v)) {
    out.push('[');
    for (let i = 0; i < v.length; i++) {
      if (i) out.push(',');
      if (v[i] === undefined) throw new LaminaError('EINVAL', 'json: undefined array element');
      encode(v[i], out);
    }
    out.push(']');
    return;
  }
  if (v instanceof Map) {
    out.push('{');
    const keys = [...v.keys()].map(String).sort(compareGoStrings);
    let first = true;
    for (const k of keys) {
      const val = v.get(k);
      if (val === undefined) continue;
      if (!first) out.push(',');
      first = false;
      out.push(quoteGo(k), ':');
      encode(val, out);
    }
    out.push('}');
    return;
  }
  if (v instanceof RawJSON) {
    out.push(compactGo(v.json));
    return;
  }
  if (v instanceof GoBytesString) {
    out.push(quoteGoBytes(v.bytes));
    return;
  }
  if (v instanceof Date) {
    out.push('"', goTime(v), '"');
    return;
  }
  if (Buffer.isBuffer(v)) {
    // Go marshals []byte as base64.
    out.push('"', v.toString('base64'), '"');
    return;
  }
  out.push('{');
  let first = true;
  for (const k of Object.keys(v)) {
    const val = (v as Record<string, unknown>)[k];
    if (val === undefined) continue;
    if (!first) out.push(',');
    first = false;
    out.push(quoteGo(k), ':');
    encode(val, out);
  }
  out.push('}');
}

/** strconv.AppendFloat(f, 'f' or 'e', -1, 64) as encoding/json picks it. JS agrees except for -0. */
export function formatGoFloat(n: number): string {
  if (!Number.isFinite(n)) throw new LaminaError('EINVAL', `json: unsupported value: ${n}`);
  if (n === 0) return Object.is(n, -0) ? '-0' : '0';
  // Both switch to exponent form below 1e-6 and from 1e21, both print the shortest round-trip
  // digits, and both write exponents as e-7 / e+21.
  return String(n);
}

// Characters a Go string can write raw: anything but controls, quote, backslash, the HTML trio,
// U+2028/U+2029 and (lone) surrogates.
const NEEDS_ESCAPE = /[\u0000-\u001f"\\<>&\u2028\u2029\ud800-\udfff]/;
const HEX = '0123456789abcdef';

/** A JSON string literal as Go writes it (HTML-safe). */
export function quoteGo(s: string): string {
  if (!NEEDS_ESCAPE.test(s)) return '"' + s + '"';
  let r = '"';
  let start = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    let esc: string | null = null;
    if (c < 0x20 || c === 0x22 || c === 0x5c || c === 0x3c || c === 0x3e || c === 0x26) {
      esc = c === 0x22 ? '\\"' : c === 0x5c ? '\\\\' : c === 0x0a ? '\\n' : c === 0x0d ? '\\r' : c === 0x09 ? '\\t' : '\\u00' + HEX[c >> 4] + HEX[c & 15];
    } else if (c === 0x2028 || c === 0x2029) {
      esc = c === 0x2028 ? '\\u2028' : '\\u2029';
    } else if (c >= 0xd800 && c <= 0xdfff) {
      const next = i + 1 < s.length ? s.charCodeAt(i + 1) : 0;
      if (c <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) {
        i++; // a valid pair is one non-BMP character, written raw
        continue;
      }
      esc = '\\ufffd'; // a lone surrogate has no UTF-8 form; Go writes invalid input as U+FFFD
    }
    if (esc !== null) {
      r += s.slice(start, i) + esc;
      start = i + 1;
    }
  }
  return r + s.slice(start) + '"';
}

/** A JSON string literal for a Go string holding raw bytes (Go's per-byte \ufffd for invalid UTF-8). */
export function quoteGoBytes(b: Buffer): string {
  let r = '"';
  let i = 0;
  let start = 0;
  const flush = (end: number) => {
    if (end > start) r += b.toString('utf8', start, end);
  };
  while (i < b.length) {
    const c = b[i];
    if (c < 0x80) {
      if (c < 0x20 || c === 0x22 || c === 0x5c || c === 0x3c || c === 0x3e || c === 0x26) {
        flush(i);
        r += quoteGo(String.fromCharCode(c)).slice(1, -1);
        start = i + 1;
      }
      i++;
      continue;
    }
    const n = utf8SeqLen(b, i);
    if (n === 0) {
      flush(i);
      r += '\\ufffd';
      start = ++i;
      continue;
    }
    if (n === 3 && b[i] === 0xe2 && b[i + 1] === 0x80 && (b[i + 2] === 0xa8 || b[i + 2] === 0xa9)) {
      flush(i);
      r += b[i + 2] === 0xa8 ? '\\u2028' : '\\u2029';
      start = i + 3;
    }
    i += n;
  }
  flush(b.length);
  return r + '"';
}

/** Length of the valid UTF-8 sequence at b[i] (Go's utf8.DecodeRune rules), or 0 if invalid. */
function utf8SeqLen(b: Buffer, i: number): number {
  const c = b[i];
  const cont = (k: number) => i + k < b.length && (b[i + k] & 0xc0) === 0x80;
  if (c >= 0xc2 && c <= 0xdf) return cont(1) ? 2 : 0;
  if (c >= 0xe0 && c <= 0xef) {
    if (!cont(1) || !cont(2)) return 0;
    const c1 = b[i + 1];
    if (c === 0xe0 && c1 < 0xa0) return 0; // overlong
    if (c === 0xed && c1 > 0x9f) return 0; // surrogates
    return 3;
  }
  if (c >= 0xf0 && c <= 0xf4) {
    if (!cont(1) || !cont(2) || !cont(3)) return 0;
    const c1 = b[i + 1];
    if (c === 0xf0 && c1 < 0x90) return 0;
    if (c === 0xf4 && c1 > 0x8f) return 0;
    return 4;
  }
  return 0;
}

/**
 * json.Compact with HTML escaping, as Go applies it to a RawMessage: insignificant whitespace
 * removed, `<`, `>`, `&`, U+2028, U+2029 inside strings escaped, everything else verbatim.
 */
export function compactGo(json: string | Buffer): string {
  const s = typeof json === 'string' ? json : json.toString('utf8');
  let r = '';
  let start = 0;
  let inString = false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) {
        i++;
        continue;
      }
      if (c === 0x22) inString = false;
      else if (c === 0x3c || c === 0x3e || c === 0x26 || c === 0x2028 || c === 0x2029) {
        r += s.slice(start, i) + '\\u' + c.toString(16).padStart(4, '0');
        start = i + 1;
      }
      continue;
    }
    if (c === 0x22) inString = true;
    else if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) {
      r += s.slice(start, i);
      start = i + 1;
    }
  }
  return r + s.slice(start);
}

/** json.Indent over compact JSON: newline + prefix + indent×depth; `{}` and `[]` stay compact. */
function indentGo(compact: string, prefix: string, indent: string): string {
  let r = '';
  let depth = 0;
  let inString = false;
  let start = 0;
  const newline = () => '\n' + prefix + indent.repeat(depth);
  for (let i = 0; i < compact.length; i++) {
    const c = compact[i];
    if (inString) {
      if (c === '\\') i++;
      else if (c === '"') inString = false;
      continue;
    }
    if (c === '"') {
      inString = true;
      continue;
    }
    if (c === '{' || c === '[') {
      const close = compact[i + 1];
      if ((c === '{' && close === '}') || (c === '[' && close === ']')) {
        i++;
        continue;
      }
      depth++;
      r += compact.slice(start, i + 1) + newline();
      start = i + 1;
    } else if (c === '}' || c === ']') {
      depth--;
      r += compact.slice(start, i) + newline() + c;
      start = i + 1;
    } else if (c === ',') {
      r += compact.slice(start, i + 1) + newline();
      start = i + 1;
    } else if (c === ':') {
      r += compact.slice(start, i + 1) + ' ';
      start = i + 1;
    }
  }
  return r + compact.slice(start);
}

// ---------------------------------------------------------------- time

/**
 * A time as Go's time.Time MarshalJSON writes it (RFC 3339 with nanoseconds, trailing zeros
 * trimmed): "2026-11-28T18:42:40.6710964Z".
 */
export function goTime(t: Date | GoTime): string {
  let sec: number, nsec: number, offset: number;
  if (t instanceof Date) {
    const ms = t.getTime();
    if (!Number.isFinite(ms)) throw new LaminaError('EINVAL', 'invalid date');
    sec = Math.floor(ms / 1000);
    nsec = (ms - sec * 1000) * 1e6;
    offset = 0;
  } else {
    sec = t.sec;
    nsec = t.nsec;
    offset = t.offset ?? 0;
  }
  if (!Number.isInteger(sec) || !Number.isInteger(nsec) || nsec < 0 || nsec > 999_999_999) {
    throw new LaminaError('EINVAL', `invalid time ${sec}.${nsec}`);
  }
  const local = sec + offset;
  const days = Math.floor(local / 86400);
  const secOfDay = local - days * 86400;
  const [y, m, d] = civilFromDays(days);
  if (y < 0 || y > 9999) throw new LaminaError('EINVAL', `json: Time.MarshalJSON: year outside of range [0,9999]`);
  let s = `${pad(y, 4)}-${pad(m, 2)}-${pad(d, 2)}T${pad(Math.floor(secOfDay / 3600), 2)}:${pad(Math.floor(secOfDay / 60) % 60, 2)}:${pad(secOfDay % 60, 2)}`;
  if (nsec) s += '.' + pad(nsec, 9).replace(/0+$/, '');
  if (offset === 0) return s + 'Z';
  const abs = Math.abs(offset);
  return `${s}${offset < 0 ? '-' : '+'}${pad(Math.floor(abs / 3600), 2)}:${pad(Math.floor(abs / 60) % 60, 2)}`;
}

const RFC3339_RE = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:[.,](\d+))?(Z|[+-]\d{2}:\d{2})$/;

/** Parses what Go's time.Time UnmarshalJSON accepts (RFC 3339, any number of fraction digits). */
export function parseGoTime(s: string): GoTime {
  const m = RFC3339_RE.exec(s);
  if (!m) throw new LaminaError('EBADINPUT', `invalid time "${s}": not RFC 3339`);
  const [y, mo, d, h, mi, se] = m.slice(1, 7).map(Number);
  if (mo < 1 || mo > 12 || d < 1 || d > daysIn(y, mo) || h > 23 || mi > 59 || se > 59) {
    throw new LaminaError('EBADINPUT', `invalid time "${s}": field out of range`);
  }
  const nsec = m[7] ? Number(m[7].slice(0, 9).padEnd(9, '0')) : 0;
  let offset = 0;
  if (m[8] !== 'Z') {
    const oh = Number(m[8].slice(1, 3));
    const om = Number(m[8].slice(4, 6));
    if (oh > 23 || om > 59) throw new LaminaError('EBADINPUT', `invalid time "${s}": zone offset out of range`);
    offset = (m[8][0] === '-' ? -1 : 1) * (oh * 3600 + om * 60);
  }
  const sec = daysFromCivil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se - offset;
  return { sec, nsec, offset };
}

function pad(n: number, w: number): string {
  return String(n).padStart(w, '0');
}

function daysIn(y: number, m: number): number {
  if (m === 2) return (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0 ? 29 : 28;
  return [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][m - 1];
}

// Proleptic Gregorian calendar <-> days since 1970-01-01 (Howard Hinnant's algorithms); Date
// cannot be used because it maps years 0–99 to 1900–1999 and lacks nanoseconds.
function daysFromCivil(y: number, m: number, d: number): number {
  y -= m <= 2 ? 1 : 0;
  const era = Math.floor(y / 400);
  const yoe = y - era * 400;
  const doy = Math.floor((153 * (m + (m > 2 ? -3 : 9)) + 2) / 5) + d - 1;
  const doe = yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy;
  return era * 146097 + doe - 719468;
}

function civilFromDays(z: number): [number, number, number] {
  z += 719468;
  const era = Math.floor(z / 146097);
  const doe = z - era * 146097;
  const yoe = Math.floor((doe - Math.floor(doe / 1460) + Math.floor(doe / 36524) - Math.floor(doe / 146096)) / 365);
  const doy = doe - (365 * yoe + Math.floor(yoe / 4) - Math.floor(yoe / 100));
  const mp = Math.floor((5 * doy + 2) / 153);
  const d = doy - Math.floor((153 * mp + 2) / 5) + 1;
  const m = mp < 10 ? mp + 3 : mp - 9;
  return [era * 400 + yoe + (m <= 2 ? 1 : 0), m, d];
}

/** The current time with sub-millisecond digits, as Go's time.Now() would marshal it. */
export function goNow(): string {
  const ns = BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e6));
  return goTime({ sec: Number(ns / 1_000_000_000n), nsec: Number(ns % 1_000_000_000n) });
}
