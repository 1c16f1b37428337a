// A tiny tar writer for tests: hand-made ustar headers (checksum included), PAX records, raw
// blocks. It exists to build archives no honest tool writes (hostile names, broken headers),
// so it does exactly what it is told and validates nothing.

export interface HeaderSpec {
  name: string;
  /** Type flag character; default '0'. */
  type?: string;
  /** Size field; default the content length for entries built with entry(). */
  size?: number;
  linkname?: string;
  mode?: number;
  uid?: number;
  gid?: number;
  mtime?: number;
  devmajor?: number;
  devminor?: number;
  /** Corrupts the stored checksum. */
  badChecksum?: boolean;
}

const BLOCK = 512;

function octal(buf: Buffer, off: number, len: number, value: number): void {
  buf.write(value.toString(8).padStart(len - 1, '0'), off, len - 1, 'latin1');
  buf[off + len - 1] = 0;
}

/** One 512-byte ustar header block. Names longer than 100 bytes need a PAX `path` record. */
export function header(spec: HeaderSpec): Buffer {
  const b = Buffer.alloc(BLOCK);
  Buffer.from(spec.name).copy(b, 0, 0, 100);
  octal(b, 100, 8, spec.mode ?? (spec.type === '5' ? 0o755 : 0o644));
  octal(b, 108, 8, spec.uid ?? 0);
  octal(b, 116, 8, spec.gid ?? 0);
  octal(b, 124, 12, spec.size ?? 0);
  octal(b, 136, 12, spec.mtime ?? 1700000000);
  b[156] = (spec.type ?? '0').charCodeAt(0);
  Buffer.from(spec.linkname ?? '').copy(b, 157, 0, 100);
  b.write('ustar\u000000', 257, 'latin1');
  octal(b, 329, 8, spec.devmajor ?? 0);
  octal(b, 337, 8, spec.devminor ?? 0);
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (const c of b) sum += c;
  if (spec.badChecksum) sum += 1;
  b.write(sum.toString(8).padStart(6, '0') + '\u0000 ', 148, 'latin1');
  return b;
}

function pad(n: number): Buffer {
  return Buffer.alloc((BLOCK - (n % BLOCK)) % BLOCK);
}

/** A header plus its content, padded to the block size. */
export function entry(spec: HeaderSpec, content: Buffer | string = ''): Buffer {
  const data = Buffer.from(content);
  return Buffer.concat([header({ size: data.length, ...spec }), data, pad(data.length)]);
}

/** A PAX extended header ('x') carrying `records` for the entry that follows. */
export function pax(records: Record<string, string | Buffer>): Buffer {
  const parts: Buffer[] = [];
  for (const [k, v] of Object.entries(records)) {
    const body = Buffer.concat([Buffer.from(` ${k}=`), Buffer.from(v), Buffer.from('\n')]);
    // The length prefix counts itself.
    let len = body.length + 1;
    while (String(len).length + body.length !== len) len = String(len).length + body.length;
    parts.push(Buffer.from(String(len)), body);
  }
  const data = Buffer.concat(parts);
  return Buffer.concat([header({ name: 'PaxHeaders/x', type: 'x', size: data.length }), data, pad(data.length)]);
}

/** The end-of-archive marker: two zero blocks. */
export function end(): Buffer {
  return Buffer.alloc(2 * BLOCK);
}

export function tar(...parts: Buffer[]): Buffer {
  return Buffer.concat([...parts, end()]);
}

export const file = (name: string, content: Buffer | string = '', spec: Partial<HeaderSpec> = {}) => entry({ name, ...spec }, content);
export const dir = (name: string, spec: Partial<HeaderSpec> = {}) => entry({ name, type: '5', ...spec });
export const symlink = (name: string, target: string, spec: Partial<HeaderSpec> = {}) => entry({ name, type: '2', linkname: target, mode: 0o777, ...spec });
export const hardlink = (name: string, target: string, spec: Partial<HeaderSpec> = {}) => entry({ name, type: '1', linkname: target, ...spec });
