// Store.open(root) wires the parts of a lamina root, which is laid out exactly as a Docker data
// root with the overlay2 driver:
//   <root>/overlay2/                 layer directories (overlay2/)
//   <root>/image/overlay2/layerdb/   chainID → layer (layers/)
//   <root>/image/overlay2/imagedb/   image configs (images/)
//   <root>/image/overlay2/repositories.json
//   <root>/tmp/                      scratch (decompressed archives)
import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import { LaminaError } from './errors.js';
import { chainID as computeChainID, chainIDs, hex, type Digest } from './digest/index.js';
import { Overlay2Driver } from './overlay2/driver.js';
import { LayerStore, type Layer } from './layers/store.js';
import { ContainerStore, type Container } from './containers/store.js';
import { dockerSize } from './archive/size.js';
import { ImageDB, parseImageConfig, type ImageConfig } from './images/imagedb.js';
import { Repositories } from './images/repositories.js';
import { familiarString, parseReference, withDefaultTag, type Reference } from './images/reference.js';
import { goNow } from './images/gojson.js';
import { RootLock, isDirLocked, lockDir } from './lock.js';
import { faultPoint, removeDeadTempFiles } from './fsutil.js';
import type { DestImage } from './transports/types.js';
import type { Writable } from 'node:stream';

export const DRIVER = 'overlay2';

/** Default root: /var/lib/lamina as root, $XDG_DATA_HOME/lamina otherwise; LAMINA_ROOT overrides. */
export function defaultRoot(): string {
  if (process.env.LAMINA_ROOT) return process.env.LAMINA_ROOT;
  if (process.getuid?.() === 0) return '/var/lib/lamina';
  const xdg = process.env.XDG_DATA_HOME || path.join(os.homedir(), '.local', 'share');
  return path.join(xdg, 'lamina');
}

export interface ImageRecord {
  id: Digest;
  config: ImageConfig;
  repoTags: string[];
  repoDigests: string[];
  /** Top layer chainID (undefined for an image without layers). */
  topLayer?: Digest;
  /** Sum of the image's layer sizes (Docker's Size). */
  size: number;
  /** imagedb metadata parent, if any. */
  parent?: Digest;
  lastUpdated?: string;
}

export type LoadEvent =
  | { kind: 'layer-start'; index: number; count: number; diffID: Digest; storedSize?: number }
  | { kind: 'layer-progress'; index: number; bytes: number; storedSize?: number; diffID: Digest }
  | { kind: 'layer-done'; index: number; diffID: Digest; existed: boolean }
  | { kind: 'tag-moved'; ref: string; from: Digest }
  | { kind: 'loaded'; id: Digest; refs: string[] };

export interface RemoveEvent { kind: 'untagged' | 'deleted'; value: string }

export class Store {
  readonly root: string;
  readonly driver: Overlay2Driver;
  readonly layers: LayerStore;
  readonly images: ImageDB;
  readonly repositories: Repositories;
  readonly containers: ContainerStore;
  readonly tmpDir: string;
  /** Serialises metadata changes between lamina processes (src/lock.ts). */
  readonly lock: RootLock;

  private constructor(root: string) {
    this.root = path.resolve(root);
    this.driver = new Overlay2Driver(path.join(this.root, 'overlay2'));
    const imageRoot = path.join(this.root, 'image', DRIVER);
    this.layers = new LayerStore(path.join(imageRoot, 'layerdb'), this.driver);
    this.images = new ImageDB(path.join(imageRoot, 'imagedb'));
    this.repositories = new Repositories(path.join(imageRoot, 'repositories.json'));
    this.containers = new ContainerStore(path.join(this.root, 'containers'), this.driver, this.layers);
    this.tmpDir = path.join(this.root, 'tmp');
    this.lock = new RootLock(this.root);
    this.layers.lock = this.lock;
    this.repositories.lock = this.lock;
    this.containers.lock = this.lock;
    this.containers.imageExists = (id) => this.images.has(id);
  }

  /** Opens (creating if needed) a root and finishes whatever an interrupted process left. */
  static open(root: string = defaultRoot()): Store {
    const s = new Store(root);
    fs.mkdirSync(s.root, { recursive: true, mode: 0o710 });
    s.driver.init();
    fs.mkdirSync(path.join(s.root, 'image'), { recursive: true, mode: 0o700 });
    fs.mkdirSync(path.join(s.root, 'image', DRIVER), { recursive: true, mode: 0o700 });
    fs.mkdirSync(path.join(s.root, 'image', DRIVER, 'distribution'), { recursive: true, mode: 0o700 });
    s.layers.init();
    s.images.init();
    s.containers.init();
    fs.mkdirSync(s.tmpDir, { recursive: true, mode: 0o700 });
    // Under the root lock, and skipping what live processes hold: other lamina processes may be
    // working in this root right now.
    s.lock.hold(() => {
      s.layers.recover();
      s.containers.recover();
      s.collectJournals();
      const imageRoot = path.join(s.root, 'image', DRIVER);
      removeDeadTempFiles(imageRoot);
      removeDeadTempFiles(path.join(imageRoot, 'imagedb', 'content', 'sha256'));
      const meta = path.join(imageRoot, 'imagedb', 'metadata', 'sha256');
      for (const n of fs.readdirSync(meta)) removeDeadTempFiles(path.join(meta, n));
      for (const n of fs.readdirSync(s.tmpDir)) {
        const p = path.join(s.tmpDir, n);
        if (!isDirLocked(p)) fs.rmSync(p, { recursive: true, force: true });
      }
    });
    return s;
  }

  /**
   * Finishes what killed loads, commits and rmis left (their journals in layerdb/tmp): layers
   * they listed, and the layers stacked on those, that nothing references any more are deleted.
   * Runs under the root lock.
   */
  private collectJournals(): void {
    for (const j of this.layers.deadJournals()) {
      // An rmi killed after its untag: the image it was deleting goes, if still unnamed and unused.
      if (j.image && this.images.has(j.image) && this.isImageUnused(j.image)) this.images.delete(j.image);
      j.drop();
      this.collectUnreferenced(j.chains);
    }
  }

  /** No reference names the image, no container uses it, no image has it as parent. */
  private isImageUnused(id: Digest): boolean {
    this.repositories.invalidate();
    if (this.repositories.referencesTo(id).length) return false;
    if (this.containers.usersOf(id).length) return false;
    return !this.hasChildImages(id);
  }

  /** Some image records `id` as its parent (imagedb metadata). */
  private hasChildImages(id: Digest): boolean {
    return this.images.list().some((other) => other !== id && this.images.getMetadata(other, 'parent') === id);
  }

  /** Deletes the given layers and their descendants that nothing references, leaves first. */
  collectUnreferenced(chains: Digest[]): Digest[] {
    const deleted: Digest[] = [];
    const candidates = new Set(chains.filter((c) => this.layers.has(c)));
    const all = this.layers.list();
    for (let grew = true; grew;) {
      grew = false;
      for (const l of all) {
        if (l.parent && candidates.has(l.parent) && !candidates.has(l.chainID)) {
          candidates.add(l.chainID);
          grew = true;
        }
      }
    }
    for (let progress = true; progress;) {
      progress = false;
      for (const c of candidates) {
        if (!this.layers.has(c) || this.isLayerReferenced(c)) continue;
        this.layers.delete(c);
        deleted.push(c);
        candidates.delete(c);
        progress = true;
      }
    }
    return deleted;
  }

  /** A fresh scratch directory under <root>/tmp; the caller removes it. */
  scratchDir(prefix: string): string {
    // Locked until the process ends, so another process's Store.open leaves it alone.
    return this.lock.hold(() => {
      const dir = fs.mkdtempSync(path.join(this.tmpDir, prefix + '-'));
      lockDir(dir);
      return dir;
    });
  }

  // ---------------------------------------------------------------- images

  /** Resolves a reference, a full or short image ID to an image ID (Docker's lookup order). */
  resolveImage(refOrID: string): Digest {
    const idMatch = /^(?:sha256:)?([0-9a-f]{64})$/.exec(refOrID);
    if (idMatch && this.images.has('sha256:' + idMatch[1])) return 'sha256:' + idMatch[1];
    let ref: Reference | undefined;
    try {
      ref = withDefaultTag(parseReference(refOrID));
    } catch {
      ref = undefined;
    }
    if (ref) {
      const id = this.repositories.get(ref);
      if (id && this.images.has(id)) return id;
    }
    const short = /^(?:sha256:)?([0-9a-f]{1,63})$/.exec(refOrID);
    if (short) {
      const matches = this.images.list().filter((id) => hex(id).startsWith(short[1]));
      if (matches.length === 1) return matches[0];
      if (matches.length > 1) throw new LaminaError('ECONFLICT', `image ID prefix "${refOrID}" is ambiguous: it matches ${matches.length} images`);
    }
    throw new LaminaError('ENOTFOUND', `No such image: ${refOrID}`);
  }

  image(id: Digest): ImageRecord {
    const config = this.images.get(id);
    const refs = this.repositories.referencesTo(id);
    const chains = chainIDs(config.rootfs.diff_ids);
    const topLayer = chains[chains.length - 1];
    let size = 0;
    for (const c of chains) size += this.layers.has(c) ? this.layers.get(c).size : 0;
    const parent = this.images.getMetadata(id, 'parent');
    return {
      id,
      config,
      repoTags: refs.filter((r) => r.tag).map((r) => r.ref),
      repoDigests: refs.filter((r) => r.digest).map((r) => r.ref),
      topLayer,
      size,
      parent: parent || undefined,
      lastUpdated: this.images.getMetadata(id, 'lastUpdated'),
    };
  }

  listImages(): ImageRecord[] {
    const out: ImageRecord[] = [];
    for (const id of this.images.list()) {
      try {
        out.push(this.image(id));
      } catch (e) {
        // Deleted by an rmi in another process since the listing: not an image any more.
        if (!(e instanceof LaminaError && e.code === 'ENOTFOUND')) throw e;
      }
    }
    return out;
  }

  /** Points TARGET at the image SOURCE resolves to (`lamina tag`). */
  tag(source: string, target: string): Digest {
    const id = this.resolveImage(source);
    const ref = withDefaultTag(parseReference(target));
    if (ref.digest) throw new LaminaError('EINVAL', `refusing to create a tag with a digest reference: ${target}`);
    return this.lock.hold(() => {
      if (!this.images.has(id)) throw new LaminaError('ENOTFOUND', `No such image: ${source}`);
      this.repositories.set(ref, id);
      this.images.setMetadata(id, 'lastUpdated', goNow());
      return id;
    });
  }

  // ---------------------------------------------------------------- load

  /**
   * `lamina load`: every image of a docker-archive or OCI layout. Layers already present (same
   * chainID) are reused without reading them. On failure, layers this load created are removed
   * again and no tag or config is written.
   */
  async load(file: string, onEvent: (e: LoadEvent) => void = () => {}): Promise<Array<{ id: Digest; refs: string[] }>> {
    const scratch = this.scratchDir('load');
    const created: Digest[] = [];
    let pinned: Digest[] = [];
    const results: Array<{ id: Digest; refs: string[] }> = [];
    let unpin = () => {};
    try {
      // Loaded on demand: commands that never read an archive start faster without them.
      const { openImageSource } = await import('./transports/index.js');
      const source = await openImageSource(file, { tmpDir: scratch });
      try {
        const plans = source.images.map((img) => {
          const config = parseImageConfig(img.configBytes, img.configName);
          const diffIDs = config.rootfs.diff_ids;
          if (diffIDs.length !== img.layers.length) {
            throw new LaminaError('EBADINPUT', `${img.configName} lists ${diffIDs.length} diff_ids but the archive has ${img.layers.length} layers for it`);
          }
          const refs = img.repoTags.map((t) => withDefaultTag(parseReference(t)));
          return { img, config, diffIDs, refs };
        });
        // Pinned: no concurrent rmi deletes a layer this load reuses or is about to stand on.
        pinned = plans.flatMap((p) => chainIDs(p.diffIDs));
        unpin = this.layers.pin(pinned);
        for (const { img, diffIDs } of plans) {
          let parent: Digest | undefined;
          for (let i = 0; i < diffIDs.length; i++) {
            const diffID = diffIDs[i];
            const chain = computeChainID(parent, diffID);
            const layer = img.layers[i];
            onEvent({ kind: 'layer-start', index: i, count: diffIDs.length, diffID, storedSize: layer.storedSize });
            if (this.layers.has(chain)) {
              onEvent({ kind: 'layer-done', index: i, diffID, existed: true });
              parent = chain;
              continue;
            }
            const input = await layer.open();
            const r = await this.layers.register(parent, input, {
              expectDiffID: diffID,
              label: `layer ${i} (${layer.name})`,
              sizeHint: layer.storedSize,
              onProgress: (bytes) => onEvent({ kind: 'layer-progress', index: i, bytes, storedSize: layer.storedSize, diffID }),
            });
            if (r.created) created.push(r.layer.chainID);
            onEvent({ kind: 'layer-done', index: i, diffID, existed: !r.created });
            parent = chain;
          }
        }
        this.lock.acquire();
        try {
        for (const { img, refs } of plans) {
          const id = this.images.put(img.configBytes);
          const names: string[] = [];
          for (const ref of refs) {
            const prev = this.repositories.set(ref, id);
            if (prev) onEvent({ kind: 'tag-moved', ref: familiarString(ref), from: prev });
            names.push(familiarString(ref));
          }
          if (refs.length) this.images.setMetadata(id, 'lastUpdated', goNow());
          onEvent({ kind: 'loaded', id, refs: names });
          results.push({ id, refs: names });
        }
        } finally {
          this.lock.release();
        }
      } finally {
        await source.close();
      }
    } catch (e) {
      // The layers this load created go again, and so do those an rmi in another process left
      // to us while the pin kept it from deleting them (nothing references them any more).
      unpin();
      this.lock.hold(() => this.collectUnreferenced([...created, ...pinned]));
      throw e;
    } finally {
      unpin();
      fs.rmSync(scratch, { recursive: true, force: true });
    }
    return results;
  }

  /**
   * A layer is referenced when an image's top layer is it, a child layer stands on it, or a
   * container's rw layer does.
   */
  isLayerReferenced(chain: Digest): boolean {
    if (this.layers.children(chain).length) return true;
    // A load, commit or registration in flight in some process relies on it.
    if (this.layers.pinned().has(chain)) return true;
    if (this.layers.listMounts().some((c) => this.layers.getMount(c)?.parent === chain)) return true;
    return this.images.list().some((id) => {
      const ids = this.images.get(id).rootfs.diff_ids;
      return ids.length > 0 && chainIDs(ids)[ids.length - 1] === chain;
    });
  }

  // ---------------------------------------------------------------- rmi

  /**
   * `lamina rmi`: untags the reference; when no reference is left (or an ID was given), deletes
   * the image and every layer of its chain that no other image or layer still uses.
   */
  removeImage(refOrID: string, opts: { force?: boolean; onlyUnreferenced?: boolean } = {}): RemoveEvent[] {
    // Every decision and deletion under the root lock: what is referenced must not change meanwhile.
    return this.lock.hold(() => {
      this.repositories.invalidate();
      return this.removeImageLocked(refOrID, opts);
    });
  }

  private removeImageLocked(refOrID: string, opts: { force?: boolean; onlyUnreferenced?: boolean }): RemoveEvent[] {
    const id = this.resolveImage(refOrID);
    const events: RemoveEvent[] = [];
    const refs = this.repositories.referencesTo(id);
    // prune decided outside the lock that the image was dangling: not if it was tagged since.
    if (opts.onlyUnreferenced && refs.length) throw new LaminaError('ECONFLICT', `image ${hex(id).slice(0, 12)} was tagged by another lamina process`);
    const users = this.containers.usersOf(id);
    const byID = /^(?:sha256:)?[0-9a-f]{1,64}$/.test(refOrID);
    const hasChildren = this.hasChildImages(id);
    // By ID, a child image is a conflict no force overrides, found before anything is untagged.
    if (byID && hasChildren) {
      throw new LaminaError('EINUSE', `conflict: unable to delete ${hex(id).slice(0, 12)} (cannot be forced) - image has dependent child images`);
    }
    const lastName = refs.filter((r) => r.tag).length <= 1;
    if (users.length && !opts.force && lastName) {
      const what = byID ? `delete ${hex(id).slice(0, 12)} (must be forced) - image is being used by stopped container ${users[0].id.slice(0, 12)}` : `remove repository reference "${refOrID}" (must force) - container ${users[0].id.slice(0, 12)} is using its referenced image ${hex(id).slice(0, 12)}`;
      throw new LaminaError('EINUSE', `conflict: unable to ${what}`);
    }
    const byRef = byID ? undefined : withDefaultTag(parseReference(refOrID));
    // When this rmi will delete the image, say so in a journal before the first untag: killed
    // after it, the next Store.open finishes the deletion instead of leaving an unnamed image.
    const byName = !!byRef && this.repositories.get(byRef) === id;
    const willDelete = !users.length && !hasChildren && (!byName || refs.filter((r) => r.tag).length <= 1);
    const done = willDelete ? this.layers.journal('gc', chainIDs(this.images.get(id).rootfs.diff_ids), id) : () => {};
    try {
      return this.untagAndDelete(id, byName ? byRef : undefined, refs, users.length > 0 || hasChildren, opts, events);
    } finally {
      done();
    }
  }

  /** `kept`: a container or a child image still uses the image, so it is only untagged. */
  private untagAndDelete(id: Digest, byRef: Reference | undefined, refs: Array<{ ref: string; tag?: string; digest?: string }>, kept: boolean, opts: { force?: boolean }, events: RemoveEvent[]): RemoveEvent[] {
    if (byRef) {
      faultPoint();
      // Removing by name untags only, unless this was the last name.
      this.repositories.delete(byRef);
      events.push({ kind: 'untagged', value: familiarString(byRef) });
      const rest = this.repositories.referencesTo(id);
      if (rest.filter((r) => r.tag).length > 0) return events;
      for (const r of rest) {
        this.repositories.delete(parseReference(r.ref));
        events.push({ kind: 'untagged', value: r.ref });
      }
    } else {
      const tags = refs.filter((r) => r.tag);
      if (tags.length > 1 && !opts.force) {
        throw new LaminaError('ECONFLICT', `conflict: unable to delete ${hex(id).slice(0, 12)} (must be forced) - image is referenced in multiple repositories`);
      }
      for (const r of refs) {
        this.repositories.delete(parseReference(r.ref));
        events.push({ kind: 'untagged', value: r.ref });
      }
    }
    // An image a container or a child image still uses stays, untagged (as Docker leaves it:
    // rmi -f with a container; by name with a child, where dockerd untags quietly).
    if (kept) return events;
    const chains = chainIDs(this.images.get(id).rootfs.diff_ids);
    faultPoint();
    this.images.delete(id);
    events.push({ kind: 'deleted', value: id });
    for (let i = chains.length - 1; i >= 0; i--) {
      const chain = chains[i];
      if (!this.layers.has(chain) || this.isLayerReferenced(chain)) break;
      this.layers.delete(chain);
      events.push({ kind: 'deleted', value: chain });
    }
    return events;
  }

  // ---------------------------------------------------------------- save

  /** `lamina save`: a docker-archive (Docker 20.10's layout) that `docker load` accepts. */
  async save(refs: string[], out: Writable): Promise<void> {
    const byID = new Map<Digest, DestImage>();
    const order: DestImage[] = [];
    for (const r of refs) {
      const id = this.resolveImage(r);
      let dest = byID.get(id);
      if (!dest) {
        const config = this.images.get(id);
        const chains = chainIDs(config.rootfs.diff_ids);
        const layers = [];
        for (const chain of chains) {
          if (!this.layers.has(chain)) throw new LaminaError('ENOTFOUND', `layer ${chain} of image ${id} is missing from the store`);
          const layer = this.layers.get(chain);
          layers.push({ diffID: layer.diffID, size: await this.layers.tarSize(chain), open: () => this.layers.openTar(chain) });
        }
        const parent = this.images.getMetadata(id, 'parent');
        dest = { configBytes: this.images.getBytes(id), repoTags: [], layers, parent: parent || undefined };
        byID.set(id, dest);
        order.push(dest);
      }
      // A name given on the command line is saved with its tag; an ID saves the image untagged.
      if (!/^(?:sha256:)?[0-9a-f]{1,64}$/.test(r)) {
        const ref = withDefaultTag(parseReference(r));
        const name = familiarString(ref);
        if (!ref.digest && !dest.repoTags.includes(name)) dest.repoTags.push(name);
      }
    }
    const { writeDockerArchive } = await import('./transports/docker-archive.js');
    await writeDockerArchive(out, order);
  }

  /** save() into a file, written beside it and renamed so a failed save leaves no partial file. */
  async saveToFile(refs: string[], file: string): Promise<void> {
    const tmp = `${file}.lamina-${process.pid}.tmp`;
    try {
      const ws = fs.createWriteStream(tmp);
      const closed = new Promise<void>((res, rej) => { ws.on('close', res); ws.on('error', rej); });
      await this.save(refs, ws);
      ws.end();
      await closed;
      fs.renameSync(tmp, file);
    } catch (e) {
      fs.rmSync(tmp, { force: true });
      throw e;
    }
  }

  // ---------------------------------------------------------------- containers

  /** Docker's container SIZE: the size formula over the rw layer's diff/. */
  containerSize(c: Container): number {
    return dockerSize(this.driver.diffPath(c.mount.mountID));
  }

  /**
   * `lamina rm`: refuses a running or mounted container unless forced (-f stops nothing yet
   * but drops every mount reference, whichever process took it); then the record, the mounts
   * entry and the init and rw layers go.
   */
  async removeContainer(idOrName: string, opts: { force?: boolean } = {}): Promise<string> {
    const id = this.containers.resolve(idOrName);
    const c = this.containers.get(id);
    if (c.config.State.Running && !opts.force) {
      throw new LaminaError('EINUSE', `You cannot remove a running container ${id}. Stop the container before attempting removal or force remove`);
    }
    if (c.config.State.Running) {
      // rm -f of a running container: kill it (and its supervisor) first, as Docker does.
      await (await import('./runtime/control.js')).killForRemoval(this, id);
    }
    const { forceUnmount, mountCount } = await import('./mount/index.js');
    if (this.driver.exists(c.mount.mountID)) {
      const spec = this.driver.mountSpec(c.mount.mountID);
      const refs = mountCount(spec);
      if (refs > 0 && !opts.force) {
        throw new LaminaError('EINUSE', `You cannot remove a mounted container ${id} (${refs} mount reference${refs > 1 ? 's' : ''}). Unmount it with "lamina umount" or force remove`);
      }
      if (refs > 0) forceUnmount(spec);
    }
    this.containers.remove(id);
    return id;
  }

  /** `lamina mount`: Docker's Get() on the container's rw layer; the view stays until umount. */
  async mountContainer(idOrName: string, opts: { backend?: 'kernel' | 'fuse-overlayfs' | 'auto' } = {}): Promise<{ id: string; path: string; backend: string }> {
    const id = this.containers.resolve(idOrName);
    const c = this.containers.get(id);
    const { mountLayer } = await import('./mount/index.js');
    const r = mountLayer(this.driver.mountSpec(c.mount.mountID), { backend: opts.backend ?? 'auto' });
    return { id, path: r.path, backend: r.backend };
  }

  /** `lamina umount`: drops one reference; the last one unmounts and removes merged/. */
  async unmountContainer(idOrName: string): Promise<{ id: string; unmounted: boolean }> {
    const id = this.containers.resolve(idOrName);
    const c = this.containers.get(id);
    const { unmountLayer, mountCount } = await import('./mount/index.js');
    const spec = this.driver.mountSpec(c.mount.mountID);
    if (mountCount(spec) === 0) throw new LaminaError('EINVAL', `container ${id} is not mounted`);
    return { id, ...unmountLayer(spec) };
  }

  // ---------------------------------------------------------------- paths

  /** Docker's GraphDriver.Data for an image's top layer. */
  graphDriverData(topLayer: Digest | undefined): Record<string, string> | null {
    if (!topLayer) return null;
    const layer: Layer = this.layers.get(topLayer);
    const dir = this.driver.dir(layer.cacheID);
    const data: Record<string, string> = {};
    const lowers = this.driver.lowerDiffPaths(layer.cacheID);
    if (lowers.length) data.LowerDir = lowers.join(':');
    data.MergedDir = path.join(dir, 'merged');
    data.UpperDir = path.join(dir, 'diff');
    data.WorkDir = path.join(dir, 'work');
    return data;
  }
}

