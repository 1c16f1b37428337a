// What every image transport (docker-archive, oci-layout, later registry) hands to the store,
// and what the store hands back to write an archive. Transports know formats, not the store.
import type { Readable } from 'node:stream';
import type { Digest } from '../digest/index.js';

export interface SourceLayer {
  /** Where the layer comes from, for messages: the archive member or blob path. */
  name: string;
  /** Bytes as stored (compressed size for a gzip/zstd blob), when known. For progress. */
  storedSize?: number;
  /** The digest of the stored blob when the format names one (OCI descriptors). Verified while reading. */
  blobDigest?: Digest;
  mediaType?: string;
  /** Opens the uncompressed layer tar (gzip and zstd are detected by magic and decoded). */
  open(): Promise<Readable>;
}

export interface SourceImage {
  /** Config JSON exactly as stored: the image ID is its sha256. */
  configBytes: Buffer;
  /** Config file/blob name, for messages. */
  configName: string;
  /** References as the archive names them (`name:tag`), possibly empty. */
  repoTags: string[];
  /**
   * OCI layouts only: the `org.opencontainers.image.ref.name` annotation when it is a bare tag
   * (`skopeo copy … oci:dir:tag` writes those), so the repository is unknown and repoTags is
   * empty. The CLI can warn, or the user can tag the image.
   */
  refName?: string;
  /** Bottom layer first; one per non-empty rootfs.diff_ids entry. */
  layers: SourceLayer[];
}

export interface ImageSource {
  /** What kind of input this was, e.g. "docker-archive" or "oci-layout". */
  readonly format: string;
  readonly images: SourceImage[];
  /** Removes temporary files the source made. */
  close(): Promise<void>;
}

export interface DestLayer {
  diffID: Digest;
  /** Exact byte length of the uncompressed layer tar. */
  size: number;
  /** Streams the layer tar byte for byte (replayed from diff/ + tar-split). */
  open(): Readable | Promise<Readable>;
}

export interface DestImage {
  configBytes: Buffer;
  /** Familiar references (`name:tag`) to record in manifest.json and `repositories`. */
  repoTags: string[];
  /**
   * The parent image ID (imagedb metadata `parent`), if any. Written as manifest.json's
   * `Parent` only when that image is saved in the same archive, as Docker does.
   */
  parent?: Digest;
  /** Bottom layer first. */
  layers: DestLayer[];
}
