// Fixture access for the tar tests: the layer tars inside Docker's `docker save` outputs (read
// with lamina's own parser) and Docker's tar-split files from the metadata snapshot.
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { parseTarBuffer } from '../../src/tar/reader.js';
import type { TarHeader, TarVisitor } from '../../src/tar/types.js';
import { expectedImages, FIXTURES, type ExpectedLayer } from '../helpers/expected.js';

/** One parsed entry with its content gathered (tests only: archives are small). */
export interface CollectedEntry {
  header: TarHeader;
  content: Buffer;
  /** Stream offset just past the entry's last header block. */
  headerEnd: number;
}

/** Collects entries and checks that raw + data bytes rebuild the input in order. */
export class Collector implements TarVisitor {
  readonly entries: CollectedEntry[] = [];
  readonly stream: Buffer[] = [];
  eofCount = 0;
  private seen = 0;
  private parts: Buffer[] = [];
  private open = false;
  raw(chunk: Buffer): void {
    this.stream.push(Buffer.from(chunk));
    this.seen += chunk.length;
  }
  entry(h: TarHeader): void {
    this.open = true;
    this.parts = [];
    this.entries.push({ header: h, content: Buffer.alloc(0), headerEnd: this.seen });
  }
  data(chunk: Buffer): void {
    this.seen += chunk.length;
    this.stream.push(Buffer.from(chunk));
    this.parts.push(Buffer.from(chunk));
  }
  entryEnd(h: TarHeader): void {
    const last = this.entries[this.entries.length - 1];
    if (!this.open || last.header !== h) throw new Error('entryEnd without matching entry');
    this.open = false;
    last.content = Buffer.concat(this.parts);
  }
  eof(): void {
    this.eofCount++;
  }
  get bytes(): Buffer {
    return Buffer.concat(this.stream);
  }
}

export function collect(tar: Buffer): Collector {
  const c = new Collector();
  parseTarBuffer(tar, c);
  return c;
}

export interface FixtureLayer {
  image: string;
  layer: ExpectedLayer;
  tar: Buffer;
}

let cachedLayers: FixtureLayer[] | null = null;

/** Every layer tar of both fixture saves, with Docker's expectations for it. */
export function fixtureLayers(): FixtureLayer[] {
  if (cachedLayers) return cachedLayers;
  const out: FixtureLayer[] = [];
  for (const img of expectedImages()) {
    const save = zlib.gunzipSync(fs.readFileSync(path.join(FIXTURES, path.basename(img.saveTarball ?? `${img.source}`))));
    const files = new Map<string, Buffer>();
    for (const e of collect(save).entries) files.set(e.header.name, e.content);
    for (const layer of img.layers) {
      const dir = (layer as ExpectedLayer & { saveV1LayerDir: string }).saveV1LayerDir;
      const tar = files.get(`${dir}/layer.tar`);
      if (!tar) throw new Error(`${img.source}: no ${dir}/layer.tar in the save`);
      out.push({ image: img.RepoTags[0] ?? img.imageID, layer, tar });
    }
  }
  cachedLayers = out;
  return out;
}

/** Rewrites a header field (zero-padded octal) and fixes the block's checksum, for crafting test input. */
export function patchOctal(tar: Buffer, headerStart: number, fieldOffset: number, fieldLength: number, value: number): void {
  const text = value.toString(8).padStart(fieldLength - 1, '0') + '\0';
  tar.write(text, headerStart + fieldOffset, 'latin1');
  fixChecksum(tar, headerStart);
}

export function fixChecksum(tar: Buffer, headerStart: number): void {
  tar.fill(0x20, headerStart + 148, headerStart + 156);
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += tar[headerStart + i];
  tar.write(sum.toString(8).padStart(6, '0') + '\0 ', headerStart + 148, 'latin1');
}

let cachedTarSplits: Map<string, Buffer> | null = null;

/** Docker's tar-split.json.gz (still compressed) per chainID, from the metadata snapshot. */
export function dockerTarSplits(): Map<string, Buffer> {
  if (cachedTarSplits) return cachedTarSplits;
  const snap = zlib.gunzipSync(fs.readFileSync(path.join(FIXTURES, 'dockerroot-metadata-snapshot.tar.gz')));
  const out = new Map<string, Buffer>();
  for (const e of collect(snap).entries) {
    const m = /layerdb\/sha256\/([0-9a-f]{64})\/tar-split\.json\.gz$/.exec(e.header.name);
    if (m) out.set(`sha256:${m[1]}`, e.content);
  }
  cachedTarSplits = out;
  return out;
}
