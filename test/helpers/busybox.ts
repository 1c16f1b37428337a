// Test images from the host's static busybox (src/build/busybox.ts), built inside the tests:
// `loadBusybox(store)` builds the docker-archive in a scratch dir and loads it.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Store } from '../../src/store.js';
import { buildBusyboxArchive, BUSYBOX, BUSYBOX_TAG, type BusyboxImageOptions } from '../../src/build/busybox.js';

export { BUSYBOX, BUSYBOX_TAG };

export const hasBusybox = (): boolean => fs.existsSync(BUSYBOX);

/** Builds the busybox docker-archive into `file` (scratch files go in a temp dir removed here). */
export async function writeBusyboxArchive(file: string, opts: BusyboxImageOptions = {}): Promise<string> {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'lamina-bb-'));
  try {
    return (await buildBusyboxArchive(work, file, opts)).repoTag;
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

/** Builds the busybox image and loads it into `store`; returns its tag. */
export async function loadBusybox(store: Store, opts: BusyboxImageOptions = {}): Promise<string> {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'lamina-bb-'));
  try {
    const file = path.join(work, 'busybox.tar');
    const { repoTag } = await buildBusyboxArchive(work, file, opts);
    await store.load(file);
    return repoTag;
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}
