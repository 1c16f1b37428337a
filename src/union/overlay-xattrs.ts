// The overlay xattrs the engine reads and writes, in the namespace the kernel would use:
// `trusted.overlay.*` normally, `user.overlay.*` for a `userxattr` mount (§11 of the spec).
import fs from 'node:fs';
import { lgetxattr, llistxattr, lsetxattr } from '../sys/index.js';

export interface OverlayXattrNames {
  prefix: string;
  opaque: string;
  redirect: string;
  whiteout: string;
}

export function overlayXattrNames(userxattr: boolean): OverlayXattrNames {
  const prefix = userxattr ? 'user.overlay.' : 'trusted.overlay.';
  return { prefix, opaque: prefix + 'opaque', redirect: prefix + 'redirect', whiteout: prefix + 'whiteout' };
}

/** What a real directory's overlay xattrs say about it. */
export interface DirMarks {
  /** 'y' (opaque), 'x' (may hold xwhiteouts) or undefined. */
  opaque?: string;
  redirect?: string;
}

const NO_MARKS: DirMarks = {};

/**
 * Reads a real directory's opaque and redirect xattrs. One llistxattr call in the common case
 * (no overlay xattrs at all); the values are fetched only when present.
 */
export function readDirMarks(dir: string, x: OverlayXattrNames): DirMarks {
  let names: string[];
  try {
    names = llistxattr(dir);
  } catch {
    return NO_MARKS;
  }
  if (names.length === 0) return NO_MARKS;
  let marks: DirMarks | undefined;
  for (const n of names) {
    if (n === x.opaque) {
      const v = lgetxattr(dir, n);
      if (v !== undefined && v.length === 1) (marks ??= {}).opaque = String.fromCharCode(v[0]);
    } else if (n === x.redirect) {
      const v = lgetxattr(dir, n);
      if (v !== undefined && v.length > 0) (marks ??= {}).redirect = v.toString();
    }
  }
  return marks ?? NO_MARKS;
}

/** A char 0:0 device: the whiteout the kernel creates and honours in every layer. */
export function isWhiteoutStat(st: fs.Stats | fs.BigIntStats): boolean {
  return (Number(st.mode) & fs.constants.S_IFMT) === fs.constants.S_IFCHR && Number(st.rdev) === 0;
}

/** An xwhiteout candidate: an empty regular file carrying the overlay whiteout xattr. */
export function isXwhiteoutFile(file: string, st: fs.Stats | fs.BigIntStats, x: OverlayXattrNames): boolean {
  if ((Number(st.mode) & fs.constants.S_IFMT) !== fs.constants.S_IFREG || Number(st.size) !== 0) return false;
  try {
    return lgetxattr(file, x.whiteout) !== undefined;
  } catch {
    return false;
  }
}

/**
 * Copies every xattr of `src` onto `dst` except the overlay's own ones, as copy-up does
 * (user.*, non-overlay trusted.*, security.* including security.capability, ACLs).
 */
export function copyXattrs(src: string, dst: string, x: OverlayXattrNames): void {
  for (const name of llistxattr(src)) {
    if (isOverlayPrivate(name, x)) continue;
    const value = lgetxattr(src, name);
    if (value !== undefined) lsetxattr(dst, name, value);
  }
}

/**
 * The overlay's own bookkeeping (opaque, redirect, origin, …), which a union never shows.
 * Escaped names (`trusted.overlay.overlay.*`, an overlay xattr set through a union, kept for
 * nested overlays) are not private: they are copied up and listed unescaped.
 */
export function isOverlayPrivate(name: string, x: OverlayXattrNames): boolean {
  return name.startsWith(x.prefix) && !name.startsWith(x.prefix + 'overlay');
}

const ESCAPE = 'overlay.';
const XATTR_NAME_MAX = 255;

/**
 * The real name behind an xattr name used on the union: `trusted.overlay.X` is stored as
 * `trusted.overlay.overlay.X` (ovl_xattr_escape_name); undefined when that is too long.
 */
export function escapeXattrName(name: string, x: OverlayXattrNames): string | undefined {
  if (!name.startsWith(x.prefix)) return name;
  const escaped = x.prefix + ESCAPE + name.slice(x.prefix.length);
  return Buffer.byteLength(escaped) > XATTR_NAME_MAX ? undefined : escaped;
}

/** The names a union lists for a real file's xattr names (ovl_listxattr). */
export function visibleXattrNames(names: string[], x: OverlayXattrNames): string[] {
  const out: string[] = [];
  for (const n of names) {
    if (!n.startsWith(x.prefix)) out.push(n);
    else if (n.startsWith(x.prefix + 'overlay')) out.push(x.prefix + n.slice(x.prefix.length + ESCAPE.length));
  }
  return out;
}
