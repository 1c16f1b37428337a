// Numeric and string fields of a 512-byte tar header, decoded as Go's archive/tar does
// (octal with NUL/space padding, or GNU base-256 when the first byte has bit 0x80 set).
// Each decoder returns NaN for a malformed field so the caller can name the field in its error.

const SPACE = 0x20;

/**
 * Octal (trimmed of leading/trailing NULs and spaces, then cut at the first NUL) or base-256
 * two's complement. NaN when malformed or outside the safe integer range.
 */
export function parseNumeric(b: Uint8Array, off: number, len: number): number {
  const first = b[off];
  if (first & 0x80) return parseBase256(b, off, len);
  return parseOctal(b, off, len);
}

export function parseOctal(b: Uint8Array, off: number, len: number): number {
  let start = off;
  let end = off + len;
  while (start < end && (b[start] === 0 || b[start] === SPACE)) start++;
  while (end > start && (b[end - 1] === 0 || b[end - 1] === SPACE)) end--;
  if (start === end) return 0;
  let x = 0;
  for (let i = start; i < end; i++) {
    const c = b[i];
    if (c === 0) break; // Go cuts the trimmed field at its first NUL
    const d = c - 0x30;
    if (d < 0 || d > 7) return NaN;
    x = x * 8 + d;
  }
  return x <= Number.MAX_SAFE_INTEGER ? x : NaN;
}

function parseBase256(b: Uint8Array, off: number, len: number): number {
  const negative = (b[off] & 0x40) !== 0;
  const inv = negative ? 0xff : 0;
  let x = 0;
  for (let i = 0; i < len; i++) {
    let c = b[off + i] ^ inv;
    if (i === 0) c &= 0x7f;
    x = x * 256 + c;
    if (x > Number.MAX_SAFE_INTEGER) return NaN; // Go allows up to 2^63-1; JS numbers stop at 2^53
  }
  return negative ? -x - 1 : x;
}

/** Go's strconv.ParseInt(s, 10, 64) over ASCII bytes: optional sign, then digits only. */
export function parseDecimal(b: Uint8Array, start: number, end: number): number {
  if (start >= end) return NaN;
  let neg = false;
  let i = start;
  if (b[i] === 0x2b /* + */ || b[i] === 0x2d /* - */) {
    neg = b[i] === 0x2d;
    i++;
    if (i === end) return NaN;
  }
  let x = 0;
  for (; i < end; i++) {
    const d = b[i] - 0x30;
    if (d < 0 || d > 9) return NaN;
    x = x * 10 + d;
  }
  if (x > Number.MAX_SAFE_INTEGER) return NaN;
  return neg ? -x : x;
}

/** End of a NUL-terminated C string inside [off, off+len). */
export function cstringEnd(b: Uint8Array, off: number, len: number): number {
  const i = b.indexOf(0, off);
  return i === -1 || i > off + len ? off + len : i;
}
