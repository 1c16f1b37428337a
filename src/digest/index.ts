// Content addresses: diffID (sha256 of an uncompressed layer tar), chainID (the chain of
// diffIDs), image ID (sha256 of the config bytes).
import { createHash } from 'node:crypto';
import { LaminaError } from '../errors.js';

/** A digest string such as `sha256:<64 hex>`. */
export type Digest = string;

const DIGEST_RE = /^sha256:[0-9a-f]{64}$/;

export function isDigest(s: string): boolean {
  return DIGEST_RE.test(s);
}

export function parseDigest(s: string, what = 'digest'): Digest {
  if (!DIGEST_RE.test(s)) throw new LaminaError('EBADINPUT', `invalid ${what} "${s}": expected sha256:<64 hex digits>`);
  return s;
}

export function sha256(data: Buffer | string): Digest {
  return 'sha256:' + createHash('sha256').update(data).digest('hex');
}

/** Hex part of a digest. */
export function hex(d: Digest): string {
  return d.startsWith('sha256:') ? d.slice(7) : d;
}

/** chainID(0) = diffID(0); chainID(n) = sha256("<chainID(n-1)> <diffID(n)>"). */
export function chainID(parent: Digest | undefined, diffID: Digest): Digest {
  return parent ? sha256(`${parent} ${diffID}`) : diffID;
}

export function chainIDs(diffIDs: Digest[]): Digest[] {
  const out: Digest[] = [];
  let prev: Digest | undefined;
  for (const d of diffIDs) {
    prev = chainID(prev, d);
    out.push(prev);
  }
  return out;
}
