// Opening an image input whatever its shape: a docker-archive tar or an OCI layout (directory or
// tar), plain or compressed; the content decides, never the file name.
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { pipeline } from 'node:stream/promises';
import { LaminaError, isLaminaError } from '../errors.js';
import { DirStore, TarFile, type MemberStore } from './archive-file.js';
import { decompressStream, sniffCompression } from './decompress.js';
import { readDockerArchive } from './docker-archive.js';
import { readOCILayout, type Platform } from './oci-layout.js';
import type { ImageSource } from './types.js';

export type { ImageSource, SourceImage, SourceLayer, DestImage, DestLayer } from './types.js';
export { writeDockerArchive } from './docker-archive.js';
export { hostPlatform, type Platform } from './oci-layout.js';

export interface OpenImageSourceOptions {
  /** A staging directory the caller owns (and removes); a compressed archive is unpacked here once. */
  tmpDir: string;
  /** For multi-platform OCI indexes; defaults to this machine's platform. */
  platform?: Platform;
}

/**
 * Opens `file`: a docker-archive (`docker save` output of any Docker version), an OCI image
 * layout directory, or an OCI layout packed as a tar; tars may be gzip- or zstd-compressed.
 * Refuses anything else with one line naming the file.
 */
export async function openImageSource(file: string, opts: OpenImageSourceOptions): Promise<ImageSource> {
  let st: fs.Stats;
  try {
    st = await fs.promises.stat(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new LaminaError('ENOTFOUND', `${file}: no such file or directory`);
    throw new LaminaError('EBADINPUT', `${file}: cannot read: ${(e as Error).message}`);
  }
  if (st.isDirectory()) {
    const store = new DirStore(file);
    return fromStore(store, opts, async () => {});
  }
  if (!st.isFile()) throw new LaminaError('EBADINPUT', `${file} is not a regular file or a directory`);

  let tarPath = file;
  let staged: string | null = null;
  const cleanup = async () => {
    if (staged) await fs.promises.rm(staged, { force: true });
  };
  try {
    const compression = sniffCompression(await readHead(file, 4));
    if (compression !== 'none') {
      // Layers are read at random later, so the outer stream is decoded once, to the staging dir.
      staged = path.join(opts.tmpDir, `outer-${randomBytes(6).toString('hex')}.tar`);
      const decoded = await decompressStream(fs.createReadStream(file, { highWaterMark: 1 << 20 }), file);
      await pipeline(decoded, fs.createWriteStream(staged, { flags: 'wx', highWaterMark: 1 << 20 }));
      tarPath = staged;
    }
    let store: TarFile;
    try {
      store = await TarFile.index(tarPath, file);
    } catch (e) {
      if (isLaminaError(e, 'EBADTAR')) {
        const what = compression === 'none' ? '' : ` (${compression}-compressed)`;
        throw new LaminaError('EBADINPUT', `${file} is not an image archive: its content${what} is not a valid tar (${(e.cause as Error | undefined)?.message ?? e.message})`);
      }
      throw e;
    }
    return await fromStore(store, opts, cleanup);
  } catch (e) {
    await cleanup();
    throw e;
  }
}

async function fromStore(store: MemberStore, opts: OpenImageSourceOptions, close: () => Promise<void>): Promise<ImageSource> {
  // A Docker ≥25 save holds both manifest.json and index.json; manifest.json is what docker load reads.
  if (store.has('manifest.json')) {
    return { format: 'docker-archive', images: await readDockerArchive(store), close };
  }
  if (store.has('index.json')) {
    return { format: 'oci-layout', images: await readOCILayout(store, { platform: opts.platform }), close };
  }
  throw new LaminaError('EBADINPUT', `${store.displayName} is neither a docker-archive nor an OCI layout: it has no manifest.json or index.json`);
}

async function readHead(file: string, n: number): Promise<Buffer> {
  const fh = await fs.promises.open(file, 'r');
  try {
    const buf = Buffer.alloc(n);
    const { bytesRead } = await fh.read(buf, 0, n, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}
