// image/overlay2/distribution: Docker's cache linking registry blobs to layers (moby
// distribution/metadata, V2MetadataService), so a push can skip or mount a layer the registry
// already has instead of compressing it again, and a pull knows a blob's diffID:
//   diffid-by-digest/sha256/<blob hex>       the layer's diffID, "sha256:<hex>" (no newline)
//   v2metadata-by-diffid/sha256/<diffID hex> JSON list of {Digest, SourceRepository, HMAC},
//                                            oldest first, at most 50 entries
// Namespace dirs are 0755, files 0644, written atomically (as moby's FSMetadataStore does).
import fs from 'node:fs';
import path from 'node:path';
import { createHmac, timingSafeEqual } from 'node:crypto';
import { hex, isDigest, sha256, type Digest } from '../digest/index.js';
import { LaminaError } from '../errors.js';
import { writeFileAtomic } from '../fsutil.js';
import { marshalGo } from './gojson.js';

export interface V2Metadata {
  /** The blob's digest in the registry (the compressed layer). */
  Digest: Digest;
  /** Full repository name the blob was pulled from or pushed to, e.g. docker.io/library/alpine. */
  SourceRepository: string;
  /** hex HMAC-SHA256 of Digest+SourceRepository keyed by the credentials used (see hmacKey); "" after a pull. */
  HMAC: string;
}

/** moby's maxMetadata: entries kept per diffID. */
const MAX_ENTRIES = 50;
const DIFFID_NS = 'v2metadata-by-diffid';
const DIGEST_NS = 'diffid-by-digest';

/** The credential fields moby hashes into the HMAC key (authConfigKeyInput). */
export interface HMACCredentials {
  username?: string;
  password?: string;
  auth?: string;
  identitytoken?: string;
  registrytoken?: string;
}

/**
 * moby's ComputeV2MetadataHMACKey: the digest string of the JSON of the non-empty credential
 * fields. A push without credentials still has a key (the digest of `{}`), as in dockerd.
 */
export function hmacKey(creds: HMACCredentials = {}): Buffer {
  const o: Record<string, string | undefined> = {
    username: creds.username || undefined,
    password: creds.password || undefined,
    auth: creds.auth || undefined,
    identitytoken: creds.identitytoken || undefined,
    registrytoken: creds.registrytoken || undefined,
  };
  return Buffer.from(sha256(marshalGo(o)));
}

export function computeHMAC(key: Buffer, digest: Digest, repository: string): string {
  return createHmac('sha256', key).update(digest).update(repository).digest('hex');
}

/** moby's CheckV2MetadataHMAC: true when `meta` was tagged with `key`. */
export function checkHMAC(meta: V2Metadata, key: Buffer | undefined): boolean {
  if (!meta.HMAC || !key || key.length === 0) return !meta.HMAC && (!key || key.length === 0);
  const want = Buffer.from(computeHMAC(key, meta.Digest, meta.SourceRepository), 'hex');
  const got = Buffer.from(meta.HMAC, 'hex');
  return got.length === want.length && timingSafeEqual(got, want);
}

export class DistributionMetadata {
  readonly dir: string;

  /** `dir` is image/overlay2/distribution. */
  constructor(dir: string) {
    this.dir = dir;
  }

  private file(ns: string, d: Digest): string {
    return path.join(this.dir, ns, 'sha256', hex(d));
  }

  private read(ns: string, d: Digest): string | undefined {
    try {
      return fs.readFileSync(this.file(ns, d), 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
  }

  private write(ns: string, d: Digest, data: string): void {
    const file = this.file(ns, d);
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o755 });
    writeFileAtomic(file, data, 0o644);
  }

  /** The diffID of the layer a registry blob decompresses to, if known. */
  diffIDOf(blob: Digest): Digest | undefined {
    const v = this.read(DIGEST_NS, blob);
    return v !== undefined && isDigest(v) ? v : undefined;
  }

  /** Every known registry blob of a layer, oldest first. */
  metadataOf(diffID: Digest): V2Metadata[] {
    const text = this.read(DIFFID_NS, diffID);
    if (text === undefined) return [];
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (e) {
      throw new LaminaError('EBADINPUT', `${this.file(DIFFID_NS, diffID)} is not valid JSON: ${(e as Error).message}`);
    }
    if (!Array.isArray(parsed)) return [];
    return parsed
      .filter((m): m is Record<string, unknown> => typeof m === 'object' && m !== null)
      .map((m) => ({
        Digest: String(m.Digest ?? ''),
        SourceRepository: String(m.SourceRepository ?? ''),
        HMAC: String(m.HMAC ?? ''),
      }))
      .filter((m) => isDigest(m.Digest));
  }

  /**
   * moby's Add: appends `meta` (moving an identical entry to the end), keeps the newest 50, and
   * records blob → diffID.
   */
  add(diffID: Digest, meta: V2Metadata): void {
    const list = this.metadataOf(diffID).filter(
      (m) => !(m.Digest === meta.Digest && m.SourceRepository === meta.SourceRepository && m.HMAC === meta.HMAC),
    );
    list.push({ Digest: meta.Digest, SourceRepository: meta.SourceRepository, HMAC: meta.HMAC });
    this.write(DIFFID_NS, diffID, marshalGo(list.slice(-MAX_ENTRIES)));
    this.write(DIGEST_NS, meta.Digest, diffID);
  }

  /** moby's TagAndAdd: `add` with the HMAC computed from `key`. */
  tagAndAdd(diffID: Digest, key: Buffer | undefined, meta: Omit<V2Metadata, 'HMAC'>): void {
    this.add(diffID, { ...meta, HMAC: key && key.length ? computeHMAC(key, meta.Digest, meta.SourceRepository) : '' });
  }

  /** moby's Remove: drops one entry (e.g. a blob the registry no longer has). */
  remove(meta: V2Metadata): void {
    const diffID = this.diffIDOf(meta.Digest);
    if (!diffID) return;
    const list = this.metadataOf(diffID).filter(
      (m) => !(m.Digest === meta.Digest && m.SourceRepository === meta.SourceRepository && m.HMAC === meta.HMAC),
    );
    if (list.length === 0) fs.rmSync(this.file(DIFFID_NS, diffID), { force: true });
    else this.write(DIFFID_NS, diffID, marshalGo(list));
  }
}
