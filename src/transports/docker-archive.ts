// docker-archive: the `docker save` / `docker load` tarball.
//
// Reading accepts both layouts Docker has written: ≤24 (`manifest.json`, `<id>.json`,
// `<v1id>/layer.tar`) and ≥25 (`manifest.json` naming `blobs/sha256/<hex>` members, next to an
// OCI `index.json`). Writing produces Docker 20.10's layout byte for byte (on-disk spec §8).
import { createHash } from 'node:crypto';
import type { Readable, Writable } from 'node:stream';
import { sha256, type Digest } from '../digest/index.js';
import { LaminaError } from '../errors.js';
import { marshalGo } from '../images/gojson.js';
import { familiarName, familiarString, parseReference, withDefaultTag } from '../images/reference.js';
import { encodeHeader, END_OF_ARCHIVE, padding, type WriteHeader } from '../tar/writer.js';
import { decompressStream } from './decompress.js';
import { legacyImage } from './legacy-v1.js';
import { blobDigestOfPath, readJSONMember, type MemberStore, verifyingStream } from './archive-file.js';
import type { DestImage, DestLayer, SourceImage, SourceLayer } from './types.js';

// ---------------------------------------------------------------- reading

interface ManifestItem {
  Config: string;
  RepoTags: string[];
  Layers: string[];
}

function parseManifest(value: unknown, where: string): ManifestItem[] {
  const bad = (why: string) => new LaminaError('EBADINPUT', `manifest.json in ${where} ${why}`);
  if (!Array.isArray(value)) throw bad('is not a JSON array');
  return value.map((item, i) => {
    if (typeof item !== 'object' || item === null || Array.isArray(item)) throw bad(`entry ${i} is not an object`);
    const { Config, RepoTags, Layers } = item as Record<string, unknown>;
    if (typeof Config !== 'string' || Config === '') throw bad(`entry ${i} has no Config`);
    if (!Array.isArray(Layers) || !Layers.every((l) => typeof l === 'string')) throw bad(`entry ${i} has no Layers list`);
    if (RepoTags !== undefined && RepoTags !== null && (!Array.isArray(RepoTags) || !RepoTags.every((t) => typeof t === 'string'))) {
      throw bad(`entry ${i} has a RepoTags value that is not a list of strings`);
    }
    return { Config, RepoTags: (RepoTags as string[] | null | undefined) ?? [], Layers: Layers as string[] };
  });
}

/** The diff_ids of a config, or a clear error when it is not an image config. */
export function configDiffIDs(configBytes: Buffer, configName: string): string[] {
  let cfg: unknown;
  try {
    cfg = JSON.parse(configBytes.toString('utf8'));
  } catch (e) {
    throw new LaminaError('EBADINPUT', `config ${configName} is not valid JSON: ${(e as Error).message}`);
  }
  const rootfs = typeof cfg === 'object' && cfg !== null ? (cfg as Record<string, unknown>).rootfs : undefined;
  const diffIDs = typeof rootfs === 'object' && rootfs !== null ? (rootfs as Record<string, unknown>).diff_ids : undefined;
  if (!Array.isArray(diffIDs) || !diffIDs.every((d) => typeof d === 'string')) {
    throw new LaminaError('EBADINPUT', `config ${configName} has no rootfs.diff_ids list`);
  }
  return diffIDs as string[];
}

/** A layer stored as a member (or file) of the source, decoded by magic when opened. */
export function memberLayer(store: MemberStore, name: string, mediaType?: string, blobDigest?: Digest, expectSize?: number): SourceLayer {
  const size = store.size(name);
  return {
    name: `${name} in ${store.displayName}`,
    storedSize: size,
    blobDigest,
    mediaType,
    async open(): Promise<Readable> {
      let raw = store.open(name);
      if (blobDigest) raw = verifyingStream(raw, blobDigest, `blob ${blobDigest} (${name} in ${store.displayName})`, expectSize);
      return decompressStream(raw, `${name} in ${store.displayName}`);
    },
  };
}

/** Reads the images of a docker-archive whose members `store` gives access to. */
export async function readDockerArchive(store: MemberStore): Promise<SourceImage[]> {
  const where = store.displayName;
  const manifest = parseManifest(await readJSONMember(store, 'manifest.json'), where);
  if (manifest.length === 0) throw new LaminaError('EBADINPUT', `manifest.json in ${where} lists no images`);
  const images: SourceImage[] = [];
  for (const item of manifest) {
    const missing = [item.Config, ...item.Layers].find((n) => !store.has(n));
    if (missing !== undefined) throw new LaminaError('EBADINPUT', `manifest.json names "${missing}", which is not in ${where}`);
    const configBlob = blobDigestOfPath(item.Config);
    const configBytes = await store.read(item.Config);
    if (configBlob && sha256(configBytes) !== configBlob) {
      throw new LaminaError('EDIGEST', `blob ${configBlob} (${item.Config} in ${where}) does not match its digest: the content hashes to ${sha256(configBytes)}`);
    }
    const diffIDs = configDiffIDs(configBytes, item.Config);
    if (diffIDs.length !== item.Layers.length) {
      throw new LaminaError('EBADINPUT', `manifest.json in ${where} lists ${item.Layers.length} layers for ${item.Config}, but the config has ${diffIDs.length} diff_ids`);
    }
    images.push({
      configBytes,
      configName: item.Config,
      repoTags: item.RepoTags,
      layers: item.Layers.map((l) => memberLayer(store, l, undefined, blobDigestOfPath(l))),
    });
  }
  return images;
}

// ---------------------------------------------------------------- writing

export interface WriteDockerArchiveOptions {
  /** Hash each layer tar while writing it and fail with EDIGEST if it is not its diffID (default true). */
  verifyDiffIDs?: boolean;
}

/** A member of the archive being written; the tar lists members in file-tree walk order. */
type OutEntry =
  | { kind: 'file'; name: string; mtime: number; data: Buffer }
  | { kind: 'dir'; name: string; mtime: number; children: OutEntry[] }
  | { kind: 'layer'; name: string; mtime: number; layer: DestLayer }
  | { kind: 'symlink'; name: string; mtime: number; target: string };

/**
 * The mtime Docker's save gives files stamped with `created`: system.Chtimes turns times before
 * the epoch or past 2262 (int64 nanoseconds) into the epoch; the tar header keeps whole seconds.
 */
function tarMtime(sec: number): number {
  return sec < 0 || sec > 9_223_372_036 ? 0 : sec;
}

function byteOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

/**
 * Writes `images` as Docker 20.10's `docker save` would: `<v1id>/{VERSION,json,layer.tar}`,
 * `<imageID>.json`, `manifest.json` and `repositories`, walked in name order, USTAR headers owned
 * by root, 1024 zero bytes at the end. A layer shared by several images is written once; where
 * the same diffID recurs under another v1 id, Docker writes a symlink to the first copy, and so
 * does this. `repoTags` are familiar references (`name:tag`). Does not end `out`.
 */
export async function writeDockerArchive(out: Writable, images: DestImage[], opts: WriteDockerArchiveOptions = {}): Promise<void> {
  const verify = opts.verifyDiffIDs ?? true;
  // One manifest entry per image ID, tags merged in order (Docker groups references by image).
  const byID = new Map<Digest, { image: DestImage; tags: string[] }>();
  for (const image of images) {
    const id = sha256(image.configBytes);
    const seen = byID.get(id);
    const tags = image.repoTags.map((t) => withDefaultTag(parseReference(t))).filter((r) => !r.digest);
    const strings = tags.map((r) => familiarString(r));
    if (seen) {
      for (const t of strings) if (!seen.tags.includes(t)) seen.tags.push(t);
    } else {
      byID.set(id, { image, tags: [...new Set(strings)] });
    }
  }

  const top: OutEntry[] = [];
  const savedV1 = new Set<string>();
  const diffIDPaths = new Map<Digest, string>();
  const manifest: Array<Record<string, unknown>> = [];
  const repos = new Map<string, Map<string, string>>();
  for (const [id, { image, tags }] of byID) {
    const idHex = id.slice(7);
    const legacy = legacyImage(image.configBytes, `${idHex}.json`);
    if (legacy.layers.length !== image.layers.length) {
      throw new LaminaError('EINVAL', `image ${id}: the config lists ${legacy.layers.length} layers but ${image.layers.length} were given`);
    }
    const mtime = tarMtime(legacy.created.sec);
    const layerPaths: string[] = [];
    legacy.layers.forEach((l, i) => {
      const layer = image.layers[i];
      if (layer.diffID !== l.diffID) throw new LaminaError('EINVAL', `image ${id}: layer ${i} is ${layer.diffID} but the config says ${l.diffID}`);
      layerPaths.push(`${l.v1id}/layer.tar`);
      if (savedV1.has(l.v1id)) return;
      savedV1.add(l.v1id);
      const first = diffIDPaths.get(l.diffID);
      const tarEntry: OutEntry = first
        ? { kind: 'symlink', name: `${l.v1id}/layer.tar`, mtime, target: `../${first}` }
        : { kind: 'layer', name: `${l.v1id}/layer.tar`, mtime, layer };
      if (!first) diffIDPaths.set(l.diffID, `${l.v1id}/layer.tar`);
      top.push({
        kind: 'dir', name: l.v1id, mtime, children: [
          { kind: 'file', name: `${l.v1id}/VERSION`, mtime, data: Buffer.from('1.0') },
          { kind: 'file', name: `${l.v1id}/json`, mtime, data: Buffer.from(l.json) },
          tarEntry,
        ],
      });
    });
    top.push({ kind: 'file', name: `${idHex}.json`, mtime, data: image.configBytes });
    const topV1 = legacy.layers[legacy.layers.length - 1].v1id;
    for (const t of tags) {
      const ref = parseReference(t);
      const name = familiarName(ref);
      let m = repos.get(name);
      if (!m) repos.set(name, (m = new Map()));
      m.set(ref.tag!, topV1);
    }
    const parent = image.parent && image.parent !== id && byID.has(image.parent) ? image.parent : undefined;
    manifest.push({ Config: `${idHex}.json`, RepoTags: tags.length ? tags : null, Layers: layerPaths, Parent: parent });
  }
  // json.Encoder.Encode adds a newline; both files get the epoch as mtime.
  top.push({ kind: 'file', name: 'manifest.json', mtime: 0, data: Buffer.from(marshalGo(manifest) + '\n') });
  if (repos.size) top.push({ kind: 'file', name: 'repositories', mtime: 0, data: Buffer.from(marshalGo(repos) + '\n') });

  const sink = new Sink(out);
  try {
    await emitEntries(sink, top, verify);
    await sink.write(END_OF_ARCHIVE);
  } finally {
    sink.release();
  }
}

/** filepath.Walk order: siblings by name bytes, a directory's members right after it. */
async function emitEntries(sink: Sink, entries: OutEntry[], verify: boolean): Promise<void> {
  for (const e of [...entries].sort((a, b) => byteOrder(baseName(a.name), baseName(b.name)))) {
    switch (e.kind) {
      case 'dir':
        await sink.write(header(e.name + '/', '5', 0o40755, 0, e.mtime));
        await emitEntries(sink, e.children, verify);
        break;
      case 'file':
        await sink.write(header(e.name, '0', 0o100644, e.data.length, e.mtime));
        await sink.write(e.data);
        await sink.write(padding(e.data.length));
        break;
      case 'symlink':
        await sink.write(header(e.name, '2', 0o120777, 0, e.mtime, e.target));
        break;
      case 'layer':
        await sink.write(header(e.name, '0', 0o100644, e.layer.size, e.mtime));
        await copyLayer(sink, e.layer, verify);
        await sink.write(padding(e.layer.size));
        break;
    }
  }
}

function baseName(name: string): string {
  return name.slice(name.lastIndexOf('/') + 1);
}

function header(name: string, typeflag: string, mode: number, size: number, mtime: number, linkname?: string): Buffer {
  const h: WriteHeader = { name, typeflag, mode, uid: 0, gid: 0, size, mtime, uname: 'root', gname: 'root' };
  if (linkname !== undefined) h.linkname = linkname;
  return encodeHeader(h);
}

async function copyLayer(sink: Sink, layer: DestLayer, verify: boolean): Promise<void> {
  const hash = verify ? createHash('sha256') : null;
  let n = 0;
  const src = await layer.open();
  for await (const chunk of src as AsyncIterable<Buffer>) {
    n += chunk.length;
    if (n > layer.size) {
      src.destroy();
      throw new LaminaError('EBADINPUT', `layer ${layer.diffID} produced more than its ${layer.size} bytes`);
    }
    hash?.update(chunk);
    await sink.write(chunk);
  }
  if (n !== layer.size) throw new LaminaError('EBADINPUT', `layer ${layer.diffID} produced ${n} bytes, expected ${layer.size}`);
  if (hash) {
    const got = 'sha256:' + hash.digest('hex');
    if (got !== layer.diffID) throw new LaminaError('EDIGEST', `layer ${layer.diffID} replayed as a tar with digest ${got}`);
  }
}

/** Writes to a Writable honouring backpressure, failing if the stream errors or closes. */
class Sink {
  private failure: Error | null = null;
  private readonly onError = (e: Error) => {
    this.failure ??= e;
  };
  constructor(private readonly out: Writable) {
    out.on('error', this.onError);
  }

  release(): void {
    this.out.off('error', this.onError);
  }

  async write(chunk: Buffer): Promise<void> {
    if (chunk.length === 0) return;
    if (this.failure) throw this.failure;
    if (this.out.destroyed || this.out.writableEnded) throw new LaminaError('EINVAL', 'the output stream was closed while writing the archive');
    if (this.out.write(chunk)) return;
    await new Promise<void>((resolve, reject) => {
      const done = (e?: Error) => {
        this.out.off('drain', onDrain);
        this.out.off('error', onError);
        this.out.off('close', onClose);
        if (e) reject(e);
        else resolve();
      };
      const onDrain = () => done();
      const onError = (e: Error) => done(e);
      const onClose = () => done(this.failure ?? new LaminaError('EINVAL', 'the output stream was closed while writing the archive'));
      this.out.on('drain', onDrain);
      this.out.on('error', onError);
      this.out.on('close', onClose);
    });
  }
}
