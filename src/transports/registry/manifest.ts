// Manifests as registries serve them: Docker schema 2 and OCI image manifests, Docker manifest
// lists and OCI indexes (with platform selection), and the bytes lamina pushes.
import { parseDigest, type Digest } from '../../digest/index.js';
import { LaminaError } from '../../errors.js';
import { marshalGoIndent } from '../../images/gojson.js';
import { MediaType, type Platform } from '../oci-layout.js';
import type { Compression } from '../decompress.js';

export const SCHEMA1_TYPES = new Set([
  'application/vnd.docker.distribution.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.v1+prettyjws',
]);

/**
 * Every manifest type lamina reads, sent as Accept. Registry 2.8 serves an OCI manifest only to
 * a client listing the OCI type, and downgrades a schema 2 manifest to schema 1 (another digest)
 * for one not listing the Docker type (platform-notes §7).
 */
export const MANIFEST_ACCEPT = [MediaType.OCIIndex, MediaType.OCIManifest, MediaType.DockerManifestList, MediaType.DockerManifest];

export const MAX_MANIFEST_SIZE = 4 << 20;
export const MAX_CONFIG_SIZE = 8 << 20;

export const LayerMediaType = {
  DockerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  DockerTar: 'application/vnd.docker.image.rootfs.diff.tar',
  DockerZstd: 'application/vnd.docker.image.rootfs.diff.tar.zstd',
  DockerForeign: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
  OCITar: 'application/vnd.oci.image.layer.v1.tar',
  OCIGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  OCIZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
} as const;

const LAYER_TYPES = new Set<string>([
  ...Object.values(LayerMediaType),
  'application/vnd.oci.image.layer.nondistributable.v1.tar',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd',
]);

const CONFIG_TYPES = new Set<string>([MediaType.DockerConfig, MediaType.OCIConfig]);

export interface Descriptor {
  mediaType: string;
  digest: Digest;
  size: number;
  urls?: string[];
  platform?: Platform & { 'os.version'?: string };
  annotations?: Record<string, string>;
}

export interface ImageManifest {
  kind: 'manifest';
  mediaType: string;
  config: Descriptor;
  layers: Descriptor[];
}

export interface IndexManifest {
  kind: 'index';
  mediaType: string;
  manifests: Descriptor[];
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

function descriptor(v: unknown, what: string): Descriptor {
  if (!isObj(v)) throw new LaminaError('EBADINPUT', `${what} is not a descriptor`);
  if (typeof v.digest !== 'string') throw new LaminaError('EBADINPUT', `${what} has no digest`);
  if (!v.digest.startsWith('sha256:')) throw new LaminaError('EUNSUPPORTED', `${what} uses digest ${v.digest}: only sha256 is supported`);
  const size = v.size;
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) throw new LaminaError('EBADINPUT', `${what} (${v.digest}) has no valid size`);
  const d: Descriptor = { mediaType: typeof v.mediaType === 'string' ? v.mediaType : '', digest: parseDigest(v.digest, `digest of ${what}`), size };
  if (Array.isArray(v.urls)) d.urls = v.urls.filter((u): u is string => typeof u === 'string');
  if (isObj(v.platform) && typeof v.platform.os === 'string' && typeof v.platform.architecture === 'string') {
    d.platform = { os: v.platform.os, architecture: v.platform.architecture };
    if (typeof v.platform.variant === 'string' && v.platform.variant) d.platform.variant = v.platform.variant;
  }
  if (isObj(v.annotations)) {
    d.annotations = {};
    for (const [k, a] of Object.entries(v.annotations)) if (typeof a === 'string') d.annotations[k] = a;
  }
  return d;
}

/**
 * Parses manifest bytes. `contentType` is the response's Content-Type; the document's own
 * mediaType (or its shape, for OCI documents that omit it) decides when the header is generic.
 */
export function parseManifest(bytes: Buffer, contentType: string, what: string): ImageManifest | IndexManifest {
  let doc: unknown;
  try {
    doc = JSON.parse(bytes.toString('utf8'));
  } catch (e) {
    throw new LaminaError('EBADINPUT', `manifest of ${what} is not valid JSON: ${(e as Error).message}`);
  }
  if (!isObj(doc)) throw new LaminaError('EBADINPUT', `manifest of ${what} is not a JSON object`);
  let type = typeof doc.mediaType === 'string' && doc.mediaType ? doc.mediaType : contentType;
  if (SCHEMA1_TYPES.has(type) || doc.schemaVersion === 1) {
    throw new LaminaError('EUNSUPPORTED', `${what} is a Docker schema 1 manifest, which lamina does not pull (the registry should serve schema 2 or OCI)`);
  }
  if (![MediaType.OCIIndex, MediaType.OCIManifest, MediaType.DockerManifest, MediaType.DockerManifestList].includes(type as never)) {
    if (Array.isArray(doc.manifests)) type = MediaType.OCIIndex;
    else if (isObj(doc.config)) type = MediaType.OCIManifest;
    else throw new LaminaError('EUNSUPPORTED', `${what} has unsupported manifest type "${type}"`);
  }
  if (doc.schemaVersion !== 2) throw new LaminaError('EBADINPUT', `manifest of ${what} has schemaVersion ${JSON.stringify(doc.schemaVersion)}, expected 2`);
  if (type === MediaType.OCIIndex || type === MediaType.DockerManifestList) {
    if (!Array.isArray(doc.manifests)) throw new LaminaError('EBADINPUT', `index of ${what} has no manifests list`);
    return { kind: 'index', mediaType: type, manifests: doc.manifests.map((m, i) => descriptor(m, `manifests[${i}] of ${what}`)) };
  }
  if (!Array.isArray(doc.layers)) throw new LaminaError('EBADINPUT', `manifest of ${what} has no layers list`);
  const config = descriptor(doc.config, `config of ${what}`);
  const layers = doc.layers.map((l, i) => descriptor(l, `layer ${i} of ${what}`));
  if (config.mediaType && !CONFIG_TYPES.has(config.mediaType)) {
    throw new LaminaError('EUNSUPPORTED', `${what} is not a container image: its config has media type ${config.mediaType}`);
  }
  for (const [i, l] of layers.entries()) {
    if (l.mediaType && !LAYER_TYPES.has(l.mediaType)) throw new LaminaError('EUNSUPPORTED', `layer ${i} of ${what} has unsupported media type ${l.mediaType}`);
  }
  return { kind: 'manifest', mediaType: type, config, layers };
}

export function platformString(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant ? '/' + p.variant : ''}`;
}

/** Parses os/arch[/variant]; arm64 implies variant v8 and amd64 none, as containerd normalises. */
export function parsePlatform(s: string): Platform {
  const parts = s.trim().toLowerCase().split('/');
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => !p)) throw new LaminaError('EINVAL', `invalid platform "${s}": expected os/architecture[/variant]`);
  const [os, arch, variant] = parts;
  const alias: Record<string, string> = { x86_64: 'amd64', x86: '386', aarch64: 'arm64', armhf: 'arm', armel: 'arm' };
  const architecture = alias[arch] ?? arch;
  const p: Platform = { os, architecture };
  if (variant) p.variant = variant;
  else if (arch === 'armhf') p.variant = 'v7';
  else if (arch === 'armel') p.variant = 'v6';
  return p;
}

function normalVariant(p: Platform): string | undefined {
  if (p.architecture === 'arm64' && (p.variant === undefined || p.variant === 'v8')) return 'v8';
  if (p.architecture === 'arm' && p.variant === undefined) return 'v7';
  return p.variant;
}

/**
 * The index entry for `want`: exact os/arch and variant; an entry without a variant matches
 * too (after exact ones). Entries that are not images (attestations with os "unknown") never match.
 */
export function selectPlatform(index: IndexManifest, want: Platform, what: string): Descriptor {
  const candidates = index.manifests.filter((m) => m.platform && m.platform.os === want.os && m.platform.architecture === want.architecture);
  const wantVariant = normalVariant(want);
  const exact = candidates.find((m) => normalVariant(m.platform!) === wantVariant);
  const loose = candidates.find((m) => m.platform!.variant === undefined);
  const chosen = exact ?? loose;
  if (!chosen) {
    const have = index.manifests.filter((m) => m.platform).map((m) => platformString(m.platform!));
    throw new LaminaError('ENOTFOUND', `no matching manifest for ${platformString(want)} in the manifest list entries of ${what}${have.length ? ` (it has ${[...new Set(have)].join(', ')})` : ''}`);
  }
  return chosen;
}

/** What a layer media type says about compression (the bytes are sniffed anyway). */
export function compressionOfMediaType(mediaType: string): Compression | undefined {
  if (/gzip$/.test(mediaType)) return 'gzip';
  if (/zstd$/.test(mediaType)) return 'zstd';
  if (/\.tar$|v1\.tar$/.test(mediaType)) return 'none';
  return undefined;
}

export type ManifestFormat = 'docker' | 'oci';

export function layerMediaType(format: ManifestFormat, compression: Compression): string {
  if (format === 'docker') return compression === 'gzip' ? LayerMediaType.DockerGzip : compression === 'zstd' ? LayerMediaType.DockerZstd : LayerMediaType.DockerTar;
  return compression === 'gzip' ? LayerMediaType.OCIGzip : compression === 'zstd' ? LayerMediaType.OCIZstd : LayerMediaType.OCITar;
}

export interface BuiltManifest {
  bytes: Buffer;
  mediaType: string;
}

/**
 * The manifest lamina pushes. Docker schema 2 is written exactly as docker push writes it
 * (distribution's schema2 FromStruct: json.MarshalIndent with three spaces; descriptor fields in
 * the order mediaType, size, digest), so the same blobs give the same manifest digest.
 */
export function buildManifest(format: ManifestFormat, config: { digest: Digest; size: number }, layers: ReadonlyArray<{ digest: Digest; size: number; mediaType: string }>): BuiltManifest {
  const mediaType = format === 'docker' ? MediaType.DockerManifest : MediaType.OCIManifest;
  const doc = {
    schemaVersion: 2,
    mediaType,
    config: { mediaType: format === 'docker' ? MediaType.DockerConfig : MediaType.OCIConfig, size: config.size, digest: config.digest },
    layers: layers.map((l) => ({ mediaType: l.mediaType, size: l.size, digest: l.digest })),
  };
  return { bytes: Buffer.from(marshalGoIndent(doc, '   ')), mediaType };
}
