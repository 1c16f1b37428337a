// image/overlay2/imagedb: config bytes under their sha256 (content/) and per-image metadata
// (metadata/<id>/{parent,lastUpdated}). Only this module writes there.
import fs from 'node:fs';
import path from 'node:path';
import { LaminaError } from '../errors.js';
import { sha256, hex, type Digest } from '../digest/index.js';
import { writeFileAtomic } from '../fsutil.js';

/** The fields of an image config lamina reads. The bytes stay authoritative. */
export interface ImageConfig {
  architecture?: string;
  os?: string;
  variant?: string;
  created?: string;
  author?: string;
  comment?: string;
  container?: string;
  docker_version?: string;
  config?: Record<string, unknown> | null;
  container_config?: Record<string, unknown> | null;
  history?: Array<{ created?: string; author?: string; created_by?: string; comment?: string; empty_layer?: boolean }>;
  rootfs: { type: string; diff_ids: Digest[] };
  [key: string]: unknown;
}

/** Parses and checks the parts of a config the store relies on. `name` is for messages. */
export function parseImageConfig(bytes: Buffer, name: string): ImageConfig {
  let cfg: unknown;
  try {
    cfg = JSON.parse(bytes.toString('utf8'));
  } catch (e) {
    throw new LaminaError('EBADINPUT', `config ${name} is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof cfg !== 'object' || cfg === null || Array.isArray(cfg)) {
    throw new LaminaError('EBADINPUT', `config ${name} is not a JSON object`);
  }
  const c = cfg as ImageConfig;
  if (!c.rootfs || c.rootfs.type !== 'layers' || !Array.isArray(c.rootfs.diff_ids)) {
    throw new LaminaError('EBADINPUT', `config ${name} has no rootfs of type "layers" with diff_ids`);
  }
  for (const d of c.rootfs.diff_ids) {
    if (typeof d !== 'string' || !/^sha256:[0-9a-f]{64}$/.test(d)) {
      throw new LaminaError('EBADINPUT', `config ${name} lists an invalid diff_id ${JSON.stringify(d)}`);
    }
  }
  return c;
}

export class ImageDB {
  readonly dir: string;
  private readonly contentDir: string;
  private readonly metadataDir: string;

  constructor(dir: string) {
    this.dir = dir;
    this.contentDir = path.join(dir, 'content', 'sha256');
    this.metadataDir = path.join(dir, 'metadata', 'sha256');
  }

  init(): void {
    for (const d of [this.dir, path.join(this.dir, 'content'), this.contentDir, path.join(this.dir, 'metadata'), this.metadataDir]) {
      fs.mkdirSync(d, { recursive: true, mode: 0o700 });
    }
  }

  /** Stores config bytes verbatim; returns the image ID (sha256 of the bytes). Idempotent. */
  put(configBytes: Buffer): Digest {
    const id = sha256(configBytes);
    const file = path.join(this.contentDir, hex(id));
    if (!fs.existsSync(file)) writeFileAtomic(file, configBytes, 0o600);
    return id;
  }

  has(id: Digest): boolean {
    return fs.existsSync(path.join(this.contentDir, hex(id)));
  }

  getBytes(id: Digest): Buffer {
    try {
      return fs.readFileSync(path.join(this.contentDir, hex(id)));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new LaminaError('ENOTFOUND', `No such image: ${id}`);
      throw e;
    }
  }

  get(id: Digest): ImageConfig {
    return parseImageConfig(this.getBytes(id), `imagedb/content/sha256/${hex(id)}`);
  }

  /** All image IDs, as `sha256:<hex>`. */
  list(): Digest[] {
    try {
      return fs.readdirSync(this.contentDir).filter((n) => /^[0-9a-f]{64}$/.test(n)).map((n) => 'sha256:' + n);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
  }

  delete(id: Digest): void {
    fs.rmSync(path.join(this.metadataDir, hex(id)), { recursive: true, force: true });
    fs.rmSync(path.join(this.contentDir, hex(id)), { force: true });
  }

  private metaFile(id: Digest, key: string): string {
    return path.join(this.metadataDir, hex(id), key);
  }

  getMetadata(id: Digest, key: 'parent' | 'lastUpdated'): string | undefined {
    try {
      return fs.readFileSync(this.metaFile(id, key), 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
  }

  setMetadata(id: Digest, key: 'parent' | 'lastUpdated', value: string): void {
    fs.mkdirSync(path.join(this.metadataDir, hex(id)), { recursive: true, mode: 0o700 });
    writeFileAtomic(this.metaFile(id, key), value, 0o600);
  }
}
