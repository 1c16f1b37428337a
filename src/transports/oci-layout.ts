// OCI image layouts (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`), as skopeo, umoci,
// buildx and Docker ≥25 write them, in a directory or packed in a tar. Every blob read is
// checked against its descriptor's digest: small ones (indexes, manifests, configs) at once,
// layers at the end of their stream.
import { parseDigest, sha256, type Digest } from '../digest/index.js';
import { LaminaError } from '../errors.js';
import { familiarString, parseReference, withDefaultTag } from '../images/reference.js';
import { readJSONMember, type MemberStore } from './archive-file.js';
import { configDiffIDs, memberLayer } from './docker-archive.js';
import type { SourceImage, SourceLayer } from './types.js';

export const MediaType = {
  OCIIndex: 'application/vnd.oci.image.index.v1+json',
  OCIManifest: 'application/vnd.oci.image.manifest.v1+json',
  OCIConfig: 'application/vnd.oci.image.config.v1+json',
  DockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  DockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  DockerConfig: 'application/vnd.docker.container.image.v1+json',
} as const;

const INDEX_TYPES = new Set<string>([MediaType.OCIIndex, MediaType.DockerManifestList]);
const MANIFEST_TYPES = new Set<string>([MediaType.OCIManifest, MediaType.DockerManifest]);
const CONFIG_TYPES = new Set<string>([MediaType.OCIConfig, MediaType.DockerConfig]);
/** Layer media types carrying a (possibly compressed) tar; compression is sniffed anyway. */
const LAYER_TYPES = new Set<string>([
  'application/vnd.oci.image.layer.v1.tar',
  'application/vnd.oci.image.layer.v1.tar+gzip',
  'application/vnd.oci.image.layer.v1.tar+zstd',
  'application/vnd.oci.image.layer.nondistributable.v1.tar',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd',
  'application/vnd.docker.image.rootfs.diff.tar',
  'application/vnd.docker.image.rootfs.diff.tar.gzip',
  'application/vnd.docker.image.rootfs.diff.tar.zstd',
  'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
]);

export const ANNOTATION_REF_NAME = 'org.opencontainers.image.ref.name';
export const ANNOTATION_CONTAINERD_NAME = 'io.containerd.image.name';

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

/** This machine's platform in OCI terms (linux/amd64 here). */
export function hostPlatform(): Platform {
  const arch: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' };
  const architecture = arch[process.arch] ?? process.arch;
  return { os: process.platform, architecture, variant: architecture === 'arm64' ? 'v8' : undefined };
}

function platformString(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant ? '/' + p.variant : ''}`;
}

interface Descriptor {
  mediaType: string;
  digest: Digest;
  size: number;
  annotations: Record<string, string>;
  platform?: Platform;
  urls?: string[];
}

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export interface ReadOCIOptions {
  /** Which image of a multi-platform index to take; defaults to hostPlatform(). */
  platform?: Platform;
}

/** Reads OCI layouts; one instance per layout. */
class LayoutReader {
  private readonly where: string;
  constructor(
    private readonly store: MemberStore,
    private readonly platform: Platform,
  ) {
    this.where = store.displayName;
  }

  private bad(msg: string): LaminaError {
    return new LaminaError('EBADINPUT', msg);
  }

  descriptor(v: unknown, what: string): Descriptor {
    if (!isObj(v)) throw this.bad(`${what} in ${this.where} is not a descriptor object`);
    const { mediaType, digest, size, annotations, platform, urls } = v;
    if (typeof digest !== 'string') throw this.bad(`${what} in ${this.where} has no digest`);
    if (!digest.startsWith('sha256:')) throw new LaminaError('EUNSUPPORTED', `${what} in ${this.where} uses digest ${digest}: only sha256 is supported`);
    const d: Descriptor = {
      mediaType: typeof mediaType === 'string' ? mediaType : '',
      digest: parseDigest(digest, `digest of ${what} in ${this.where}`),
      size: typeof size === 'number' && Number.isSafeInteger(size) && size >= 0 ? size : -1,
      annotations: {},
    };
    if (d.size < 0) throw this.bad(`${what} (${digest}) in ${this.where} has no valid size`);
    if (isObj(annotations)) {
      for (const [k, a] of Object.entries(annotations)) if (typeof a === 'string') d.annotations[k] = a;
    }
    if (isObj(platform) && typeof platform.os === 'string' && typeof platform.architecture === 'string') {
      d.platform = { os: platform.os, architecture: platform.architecture, variant: typeof platform.variant === 'string' ? platform.variant : undefined };
    }
    if (Array.isArray(urls)) d.urls = urls.filter((u): u is string => typeof u === 'string');
    return d;
  }

  blobPath(d: Descriptor): string {
    return `blobs/sha256/${d.digest.slice(7)}`;
  }

  /** A small blob, read whole and checked against its descriptor. */
  async readBlob(d: Descriptor, what: string): Promise<Buffer> {
    const p = this.blobPath(d);
    if (!this.store.has(p)) throw this.bad(`${what} ${d.digest} is not in ${this.where} (no ${p})`);
    const bytes = await this.store.read(p);
    const got = sha256(bytes);
    if (got !== d.digest) throw new LaminaError('EDIGEST', `blob ${d.digest} (${p} in ${this.where}) does not match its digest: the content hashes to ${got}`);
    if (bytes.length !== d.size) throw new LaminaError('EDIGEST', `blob ${d.digest} (${p} in ${this.where}) is ${bytes.length} bytes, but its descriptor says ${d.size}`);
    return bytes;
  }

  async readJSONBlob(d: Descriptor, what: string): Promise<Obj> {
    const bytes = await this.readBlob(d, what);
    let v: unknown;
    try {
      v = JSON.parse(bytes.toString('utf8'));
    } catch (e) {
      throw this.bad(`${what} ${d.digest} in ${this.where} is not valid JSON: ${(e as Error).message}`);
    }
    if (!isObj(v)) throw this.bad(`${what} ${d.digest} in ${this.where} is not a JSON object`);
    return v;
  }

  private manifestsOf(index: Obj, what: string): Descriptor[] {
    if (!Array.isArray(index.manifests)) throw this.bad(`${what} in ${this.where} has no manifests list`);
    return index.manifests.map((m, i) => this.descriptor(m, `${what} entry ${i}`));
  }

  private matches(p: Platform | undefined): boolean {
    if (!p) return false;
    const want = this.platform;
    if (p.os !== want.os || p.architecture !== want.architecture) return false;
    return !p.variant || !want.variant || p.variant === want.variant;
  }

  /** The one descriptor for this platform among several (exact variant preferred). */
  pick(candidates: Descriptor[], what: string): Descriptor {
    const ok = candidates.filter((d) => this.matches(d.platform));
    if (ok.length === 0) {
      const have = candidates.map((d) => (d.platform ? platformString(d.platform) : 'unknown')).join(', ');
      throw new LaminaError('EUNSUPPORTED', `${what} in ${this.where} has no image for ${platformString(this.platform)} (it has: ${have})`);
    }
    return ok.find((d) => d.platform?.variant === this.platform.variant) ?? ok[0];
  }

  /** Follows nested indexes down to one image manifest for this platform. */
  async resolveManifest(d: Descriptor, depth = 0): Promise<{ desc: Descriptor; body: Obj }> {
    if (depth > 8) throw this.bad(`indexes in ${this.where} nest too deeply`);
    const what = INDEX_TYPES.has(d.mediaType) ? 'index' : 'manifest';
    const body = await this.readJSONBlob(d, what);
    const mt = typeof body.mediaType === 'string' ? body.mediaType : d.mediaType;
    if (INDEX_TYPES.has(mt) || (mt === '' && Array.isArray(body.manifests))) {
      const children = this.manifestsOf(body, `index ${d.digest}`).filter((c) => INDEX_TYPES.has(c.mediaType) || MANIFEST_TYPES.has(c.mediaType) || c.mediaType === '');
      const chosen = children.length === 1 && !children[0].platform ? children[0] : this.pick(children, `index ${d.digest}`);
      return this.resolveManifest(chosen, depth + 1);
    }
    if (body.schemaVersion === 1) throw new LaminaError('EUNSUPPORTED', `manifest ${d.digest} in ${this.where} is Docker schema 1, which is not supported`);
    if (!MANIFEST_TYPES.has(mt) && !(mt === '' && isObj(body.config) && Array.isArray(body.layers))) {
      throw new LaminaError('EUNSUPPORTED', `manifest ${d.digest} in ${this.where} has media type "${mt}", which is not an image manifest`);
    }
    return { desc: d, body };
  }

  async image(d: Descriptor, body: Obj): Promise<SourceImage> {
    const config = this.descriptor(body.config, `config of manifest ${d.digest}`);
    if (config.mediaType && !CONFIG_TYPES.has(config.mediaType)) {
      throw new LaminaError('EUNSUPPORTED', `manifest ${d.digest} in ${this.where} is not a container image (config media type "${config.mediaType}")`);
    }
    if (!Array.isArray(body.layers)) throw this.bad(`manifest ${d.digest} in ${this.where} has no layers list`);
    const layerDescs = body.layers.map((l, i) => this.descriptor(l, `layer ${i} of manifest ${d.digest}`));
    const configBytes = await this.readBlob(config, 'config');
    const configName = this.blobPath(config);
    const diffIDs = configDiffIDs(configBytes, configName);
    if (diffIDs.length !== layerDescs.length) {
      throw this.bad(`manifest ${d.digest} in ${this.where} lists ${layerDescs.length} layers, but its config has ${diffIDs.length} diff_ids`);
    }
    const layers: SourceLayer[] = layerDescs.map((l) => {
      if (l.mediaType && !LAYER_TYPES.has(l.mediaType)) {
        throw new LaminaError('EUNSUPPORTED', `layer ${l.digest} of manifest ${d.digest} in ${this.where} has media type "${l.mediaType}", which is not a layer tar`);
      }
      const p = this.blobPath(l);
      if (!this.store.has(p)) {
        if (l.urls?.length) throw new LaminaError('EUNSUPPORTED', `foreign layer ${l.digest} is not in ${this.where} (it lives at ${l.urls[0]})`);
        throw this.bad(`manifest ${d.digest} names layer ${l.digest}, which is not in ${this.where}`);
      }
      return memberLayer(this.store, p, l.mediaType || undefined, l.digest, l.size);
    });
    return { configBytes, configName, repoTags: [], layers };
  }
}

/** The references an index entry's annotations name: full references become tags. */
function refsOf(d: Descriptor): { tags: string[]; refName?: string } {
  const tags: string[] = [];
  const tag = (s: string) => {
    try {
      const ref = parseReference(s);
      if (!ref.digest || ref.tag) tags.push(familiarString(withDefaultTag({ ...ref, digest: undefined })));
    } catch {
      /* not a reference: ignored */
    }
  };
  const containerd = d.annotations[ANNOTATION_CONTAINERD_NAME];
  const refName = d.annotations[ANNOTATION_REF_NAME];
  if (containerd) tag(containerd);
  // ref.name is a full reference when it has a repository part (Docker ≥25 and some tools),
  // else only a tag (`skopeo copy … oci:dir:tag`): then the repository is unknown.
  if (refName && /[/:]/.test(refName)) {
    if (!containerd) tag(refName);
    return { tags };
  }
  return refName ? { tags, refName } : { tags };
}

/**
 * The images of an OCI layout. Each entry of index.json is an image; an entry that is itself an
 * index (multi-platform) yields the manifest for `opts.platform` (default: this machine's).
 * Entries naming the same manifest are merged. Tags come from `io.containerd.image.name`, or from
 * `org.opencontainers.image.ref.name` when that is a full reference; a ref.name that is only a
 * tag is exposed as `refName` with no repoTags, since the repository is unknown.
 */
export async function readOCILayout(store: MemberStore, opts: ReadOCIOptions = {}): Promise<SourceImage[]> {
  const where = store.displayName;
  if (store.has('oci-layout')) {
    const layout = await readJSONMember(store, 'oci-layout');
    const version = isObj(layout) ? layout.imageLayoutVersion : undefined;
    if (typeof version !== 'string' || !version.startsWith('1.')) {
      throw new LaminaError('EUNSUPPORTED', `oci-layout in ${where} has imageLayoutVersion ${JSON.stringify(version)}; lamina reads version 1.x`);
    }
  }
  const index = await readJSONMember(store, 'index.json');
  if (!isObj(index)) throw new LaminaError('EBADINPUT', `index.json in ${where} is not a JSON object`);
  const r = new LayoutReader(store, opts.platform ?? hostPlatform());
  if (!Array.isArray(index.manifests)) throw new LaminaError('EBADINPUT', `index.json in ${where} has no manifests list`);
  const entries = index.manifests.map((m, i) => r.descriptor(m, `index.json entry ${i}`));

  // Several top-level entries for one name that differ by platform: keep this machine's.
  const byRef = new Map<string, Descriptor[]>();
  for (const e of entries) {
    if (!e.platform) continue;
    const key = e.annotations[ANNOTATION_CONTAINERD_NAME] ?? e.annotations[ANNOTATION_REF_NAME] ?? '';
    byRef.set(key, [...(byRef.get(key) ?? []), e]);
  }
  const dropped = new Set<Descriptor>();
  for (const [key, group] of byRef) {
    if (group.length < 2) continue;
    const keep = r.pick(group, key ? `index.json entries for "${key}"` : 'index.json');
    for (const e of group) if (e !== keep) dropped.add(e);
  }

  const images = new Map<Digest, SourceImage>();
  for (const e of entries) {
    if (dropped.has(e)) continue;
    if (e.mediaType && !INDEX_TYPES.has(e.mediaType) && !MANIFEST_TYPES.has(e.mediaType)) continue; // not an image (e.g. an artifact)
    const { desc, body } = await r.resolveManifest(e);
    const { tags, refName } = refsOf(e);
    let img = images.get(desc.digest);
    if (!img) {
      img = await r.image(desc, body);
      images.set(desc.digest, img);
    }
    for (const t of tags) if (!img.repoTags.includes(t)) img.repoTags.push(t);
    if (refName && img.refName === undefined) img.refName = refName;
  }
  if (images.size === 0) throw new LaminaError('EBADINPUT', `index.json in ${where} lists no images`);
  return [...images.values()];
}
