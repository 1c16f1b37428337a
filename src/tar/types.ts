// Shapes shared by the tar reader, the tar-split recorder, the layer applier and the writer.

/** Tar type flags (POSIX + GNU). */
export const TypeFlag = {
  Reg: '0',
  Link: '1',
  Symlink: '2',
  Char: '3',
  Block: '4',
  Dir: '5',
  Fifo: '6',
  Cont: '7',
  XHeader: 'x',
  XGlobalHeader: 'g',
  GNULongName: 'L',
  GNULongLink: 'K',
  GNUSparse: 'S',
} as const;

export type TarFormat = 'v7' | 'ustar' | 'pax' | 'gnu';

/**
 * One logical tar entry after PAX / GNU long-name records have been applied, with the same
 * meaning Go's archive/tar gives its Header (lamina must agree with Go, since Docker's tar-split
 * and diffIDs come from Go).
 */
export interface TarHeader {
  /** Effective name: PAX `path`, else GNU long name, else ustar prefix + "/" + name. UTF-8 decoded. */
  name: string;
  /** The same name as raw bytes (differs from Buffer.from(name) only for invalid UTF-8). */
  nameBytes: Buffer;
  /** Effective link target: PAX `linkpath`, else GNU long link, else the linkname field. */
  linkname: string;
  /** Type flag character. A NUL (V7 regular file) is reported as '0', or '5' when the name ends in '/', as Go does. */
  typeflag: string;
  /** The whole mode field as stored (may include S_IFMT bits; Docker's writer sets them, GNU tar does not). */
  mode: number;
  uid: number;
  gid: number;
  /** Size field (PAX `size` wins). For header-only types (links, dirs, devices, fifos) no data follows whatever this says. */
  size: number;
  /** mtime seconds (may be negative); PAX `mtime` wins and supplies nanoseconds. */
  mtime: number;
  mtimeNsec: number;
  /** PAX atime/ctime when present. */
  atime?: [number, number];
  ctime?: [number, number];
  uname: string;
  gname: string;
  devmajor: number;
  devminor: number;
  /** SCHILY.xattr.* records in archive order; values are raw bytes (xattrs are binary). */
  xattrs: Array<[string, Buffer]>;
  /**
   * The PAX records of this entry's `x` header, values raw (null without one). As in Go, records of
   * a global `g` header do not apply to later entries: the `g` header is reported as an entry of
   * its own (typeflag 'g', size 0, its records here), which extractors ignore as Docker does.
   */
  pax: Map<string, Buffer> | null;
  format: TarFormat;
}

/**
 * Callbacks of the push parser. Buffers passed in may be views into the caller's chunk and are
 * only valid during the call: copy them to keep them.
 */
export interface TarVisitor {
  /**
   * Every byte of the stream that is not entry content, in stream order: header blocks
   * (including PAX and GNU meta headers and their data), padding after content, the
   * end-of-archive blocks and whatever follows them. raw + data bytes = the whole input.
   */
  raw?(chunk: Buffer): void;
  /** A logical entry begins; all of its header bytes have already gone to raw(). */
  entry(h: TarHeader): void;
  /** Content bytes of the current entry. */
  data?(chunk: Buffer): void;
  /** The current entry's content is complete (its padding follows via raw()). */
  entryEnd?(h: TarHeader): void;
  /**
   * The end-of-archive marker was seen (two zero blocks, or a clean EOF where Go's reader
   * also accepts one). Trailing bytes after it still go to raw().
   */
  eof?(): void;
}
