// image/overlay2/layerdb: read-only layers keyed by chainID, as moby's layer store keeps them:
//   sha256/<chainID hex>/{diff,parent,size,cache-id,tar-split.json.gz}   (dir 0700, files 0644)
//   tmp/       staging for layers being registered (write-set-<random>)
//   mounts/    container rw layers (later issue)
// Only this module writes under layerdb/. Layer directories themselves belong to overlay2/.
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { LaminaError } from '../errors.js';
import { chainID as computeChainID, hex, type Digest } from '../digest/index.js';
import { Overlay2Driver, generateID } from '../overlay2/driver.js';
import type * as TarSplit from '../tar/tarsplit.js';
import { faultPoint, fsyncDir, readOptional, syncFileSystems } from '../fsutil.js';
import { isDirLocked, lockDir, RootLock } from '../lock.js';

export interface Layer {
  chainID: Digest;
  diffID: Digest;
  /** Parent chainID; undefined for a bottom layer. */
  parent?: Digest;
  /** Docker's size formula over diff/ (bytes). */
  size: number;
  cacheID: string;
}

export interface RegisterOptions {
  /** The diffID the image config promises; a different one fails the registration. */
  expectDiffID?: Digest;
  /** Label for messages, e.g. "layer 3 (abc/layer.tar)". */
  label?: string;
  onProgress?: (bytes: number) => void;
  /**
   * About how many bytes the input holds (the layer blob's stored size, compressed or not): a
   * large layer is extracted on a worker thread while this one parses, hashes and records.
   */
  sizeHint?: number;
  /**
   * Pin the resulting layer (see pin()) in the same locked section that publishes it or finds
   * it already there; the caller releases it with `unpin` once an image references the layer.
   * For callers that cannot pin the chain up front because they learn its diffID only here
   * (commit): between this call and their image write, an rmi in another process could
   * otherwise delete a layer they found already registered.
   */
  pinResult?: boolean;
}

const TARSPLIT = 'tar-split.json.gz';

/** layerdb/mounts/<container>: the container's init and rw layer dirs and its image's top layer. */
export interface MountRecord {
  mountID: string;
  initID: string;
  /** chainID of the image's top layer (absent for an image without layers). */
  parent?: Digest;
}

export class LayerStore {
  readonly dir: string;
  readonly driver: Overlay2Driver;
  private readonly shaDir: string;
  private readonly tmpDir: string;
  private cache = new Map<Digest, Layer>();
  /** The root lock; Store sets the shared one. */
  lock: RootLock;

  constructor(dir: string, driver: Overlay2Driver) {
    this.dir = dir;
    this.driver = driver;
    this.shaDir = path.join(dir, 'sha256');
    this.tmpDir = path.join(dir, 'tmp');
    this.lock = new RootLock(path.dirname(path.dirname(path.dirname(dir))));
  }

  init(): void {
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    for (const d of [this.shaDir, this.tmpDir, path.join(this.dir, 'mounts')]) fs.mkdirSync(d, { recursive: true, mode: 0o755 });
  }

  /**
   * Finishes what an interrupted process left: `-removing` layers are deleted (their layer
   * directories too) and staging dirs in tmp/ are dropped together with the layer directory
   * they were filling.
   */
  recover(): void {
    for (const name of safeReaddir(this.shaDir)) {
      if (!name.endsWith('-removing')) continue;
      const dir = path.join(this.shaDir, name);
      if (isDirLocked(dir)) continue;
      const cacheID = readOptional(path.join(dir, 'cache-id'));
      if (cacheID && /^[0-9a-f]{64}$/.test(cacheID) && this.driver.exists(cacheID)) this.driver.remove(cacheID);
      fs.rmSync(dir, { recursive: true, force: true });
    }
    for (const name of safeReaddir(this.tmpDir)) {
      const dir = path.join(this.tmpDir, name);
      if (isDirLocked(dir)) continue; // a live process is extracting into it, or it is a pin
      if (/^(pin|gc)-/.test(name)) continue; // journals: Store.open collects their layers
      const cacheID = readOptional(path.join(dir, 'cache-id'));
      if (cacheID && /^[0-9a-f]{64}$/.test(cacheID) && this.driver.exists(cacheID) && !this.isCacheIDUsed(cacheID)) {
        this.driver.remove(cacheID);
      }
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }

  private isCacheIDUsed(cacheID: string): boolean {
    return this.list().some((l) => l.cacheID === cacheID);
  }

  private layerDir(chain: Digest): string {
    return path.join(this.shaDir, hex(chain));
  }

  /** Asks the disk, not the cache: another process may have removed the layer. */
  has(chain: Digest): boolean {
    if (fs.existsSync(path.join(this.layerDir(chain), 'cache-id'))) return true;
    this.cache.delete(chain);
    return false;
  }

  /**
   * Keeps `chains` from being deleted by any lamina process until the returned function runs
   * (or this process ends): a locked dir in tmp/ listing them, which rmi's reference check reads.
   */
  pin(chains: Digest[]): () => void {
    return this.journal('pin', chains);
  }

  /**
   * A journal of chains an operation may leave unreferenced: `pin` also protects them from other
   * processes (see pin()); `gc` only records them (rmi, which also names the image it is
   * deleting). If the process dies before release, the next Store.open finishes the work: the
   * image goes if nothing names or uses it, then whichever of the chains (and their
   * descendants) nothing references.
   */
  journal(kind: 'pin' | 'gc', chains: Digest[], image?: Digest): () => void {
    return this.lock.hold(() => {
      const dir = path.join(this.tmpDir, `${kind}-${randomBytes(8).toString('hex')}`);
      fs.mkdirSync(dir, { mode: 0o700 });
      const unlock = lockDir(dir);
      // A crash while these are written happens before the operation changed anything, so a
      // partial journal is harmless (recovery only deletes what nothing names or uses).
      fs.writeFileSync(path.join(dir, 'chains'), chains.join('\n'), { mode: 0o600 });
      if (image) fs.writeFileSync(path.join(dir, 'image'), image, { mode: 0o600 });
      let done = false;
      return () => {
        if (done) return;
        done = true;
        fs.rmSync(dir, { recursive: true, force: true });
        unlock();
      };
    });
  }

  /** Journals of dead processes: their chains (and image), and a function that removes the journal. */
  deadJournals(): Array<{ chains: Digest[]; image?: Digest; drop: () => void }> {
    const out: Array<{ chains: Digest[]; image?: Digest; drop: () => void }> = [];
    for (const name of safeReaddir(this.tmpDir)) {
      if (!/^(pin|gc)-/.test(name)) continue;
      const dir = path.join(this.tmpDir, name);
      if (isDirLocked(dir)) continue;
      const chains = (readOptional(path.join(dir, 'chains')) ?? '').split('\n').filter(Boolean) as Digest[];
      const image = readOptional(path.join(dir, 'image')) as Digest | undefined;
      out.push({ chains, image: image || undefined, drop: () => fs.rmSync(dir, { recursive: true, force: true }) });
    }
    return out;
  }

  /** Chains that live pins and registrations (their parents) rely on. */
  pinned(): Set<Digest> {
    const out = new Set<Digest>();
    for (const name of safeReaddir(this.tmpDir)) {
      const dir = path.join(this.tmpDir, name);
      const list = readOptional(path.join(dir, name.startsWith('pin-') ? 'chains' : 'parent'));
      if (!list || !isDirLocked(dir)) continue;
      for (const c of list.split('\n')) if (c) out.add(c as Digest);
    }
    return out;
  }

  get(chain: Digest): Layer {
    const cached = this.cache.get(chain);
    if (cached) return cached;
    const dir = this.layerDir(chain);
    const diffID = readOptional(path.join(dir, 'diff'));
    const cacheID = readOptional(path.join(dir, 'cache-id'));
    if (diffID === undefined || cacheID === undefined) throw new LaminaError('ENOTFOUND', `layer ${chain} does not exist`);
    const parent = readOptional(path.join(dir, 'parent'));
    const size = Number(readOptional(path.join(dir, 'size')) ?? '0');
    const layer: Layer = { chainID: chain, diffID, parent: parent || undefined, size, cacheID };
    this.cache.set(chain, layer);
    return layer;
  }

  /** Every registered layer. */
  list(): Layer[] {
    return safeReaddir(this.shaDir)
      .filter((n) => /^[0-9a-f]{64}$/.test(n))
      .map((n) => this.get('sha256:' + n));
  }

  /** The chain from `chain` down to the bottom layer (top first). */
  ancestry(chain: Digest): Layer[] {
    const out: Layer[] = [];
    for (let c: Digest | undefined = chain; c; c = out[out.length - 1].parent) out.push(this.get(c));
    return out;
  }

  /**
   * Applies a layer tar on top of `parent` in one streaming pass (extract + diffID + tar-split)
   * and publishes it under its chainID with one rename. If the chainID already exists, the new
   * copy is dropped and the existing layer returned (as moby does). On any failure nothing of
   * the attempt stays behind.
   */
  async register(parent: Digest | undefined, input: Readable, opts: RegisterOptions = {}): Promise<{ layer: Layer; created: boolean; unpin: () => void }> {
    const cacheID = generateID();
    const stage = path.join(this.tmpDir, `write-set-${randomBytes(16).toString('hex')}`);
    let createdCommitted = false;
    let published = false;
    let abortRecorder = () => {};
    let unlockStage = () => {};
    let parentLayer: Layer | undefined;
    try {
      // Set up under the root lock; the stage stays flock'ed while the layer is extracted outside
      // it, so recovery in other processes leaves it alone and rmi sees `parent` as in use.
      this.lock.hold(() => {
        if (parent) {
          this.cache.delete(parent);
          if (!this.has(parent)) throw new LaminaError('ENOTFOUND', `layer ${parent} does not exist (removed by another lamina process?)`);
          parentLayer = this.get(parent);
        }
        fs.mkdirSync(stage, { mode: 0o700 });
        unlockStage = lockDir(stage);
        faultPoint();
        // Recorded first, so recovery after a crash knows which layer directory to drop.
        fs.writeFileSync(path.join(stage, 'cache-id'), cacheID, { mode: 0o644 });
        if (parent) fs.writeFileSync(path.join(stage, 'parent'), parent, { mode: 0o644 });
        faultPoint();
        ({ createdCommitted } = this.driver.create(cacheID, parentLayer?.cacheID));
      });
      // Loaded on demand, so commands that never apply a layer start faster.
      const [{ applyLayer }, { TarSplitRecorder }] = await Promise.all([import('../archive/apply.js'), loadTarSplit()]);
      const recorder = new TarSplitRecorder(path.join(stage, TARSPLIT));
      abortRecorder = () => recorder.abort();
      const result = await applyLayer(input, this.driver.diffPath(cacheID), {
        visitors: [recorder],
        onProgress: opts.onProgress,
        backpressure: () => recorder.backpressure(),
        sizeHint: opts.sizeHint,
      });
      await recorder.finish();
      const label = opts.label ?? 'layer';
      if (opts.expectDiffID && result.diffID !== opts.expectDiffID) {
        throw new LaminaError('EDIGEST', `invalid diffID for ${label}: expected ${opts.expectDiffID}, got ${result.diffID}`);
      }
      const chain = computeChainID(parent, result.diffID);
      fs.writeFileSync(path.join(stage, 'diff'), result.diffID, { mode: 0o644 });
      fs.writeFileSync(path.join(stage, 'size'), String(result.size), { mode: 0o644 });
      // Durable before it is published (outside the root lock: a flush can take a while).
      syncFileSystems(stage, this.driver.diffPath(cacheID));
      faultPoint();
      return this.lock.hold(() => {
        // Re-checked under the lock: another process may have published the same chain meanwhile.
        if (this.has(chain)) return { layer: this.get(chain), created: false, unpin: opts.pinResult ? this.pin([chain]) : () => {} };
        fs.renameSync(stage, this.layerDir(chain));
        fsyncDir(this.shaDir);
        published = true;
        faultPoint();
        const layer: Layer = { chainID: chain, diffID: result.diffID, parent, size: result.size, cacheID };
        this.cache.set(chain, layer);
        return { layer, created: true, unpin: opts.pinResult ? this.pin([chain]) : () => {} };
      });
    } finally {
      if (!published) {
        abortRecorder();
        this.lock.hold(() => {
          if (this.driver.exists(cacheID)) this.driver.remove(cacheID, { parent: parentLayer?.cacheID, dropCommitted: createdCommitted });
          fs.rmSync(stage, { recursive: true, force: true });
        });
      }
      unlockStage();
    }
  }

  /** Layers whose parent is `chain`. */
  children(chain: Digest): Layer[] {
    return this.list().filter((l) => l.parent === chain);
  }

  /**
   * Deletes a layer (it must have no children; the caller has checked image and container
   * references). Renamed to `<chain>-<random>-removing` first, so a crash mid-way is finished
   * by recover().
   */
  delete(chain: Digest): void {
    this.lock.hold(() => {
      this.cache.delete(chain);
      const layer = this.get(chain);
      if (this.children(chain).length) throw new LaminaError('EINUSE', `layer ${chain} still has child layers`);
      if (this.pinned().has(chain)) throw new LaminaError('EINUSE', `layer ${chain} is in use by another lamina process`);
      const removing = path.join(this.shaDir, `${hex(chain)}-${randomBytes(8).toString('hex')}-removing`);
      faultPoint();
      fs.renameSync(this.layerDir(chain), removing);
      // Durable before the layer dir goes: after a power loss the layer is gone or intact.
      fsyncDir(this.shaDir);
      this.cache.delete(chain);
      faultPoint();
      this.driver.remove(layer.cacheID);
      faultPoint();
      fs.rmSync(removing, { recursive: true, force: true });
    });
  }

  // ---------------------------------------------------------------- container rw layers

  private mountDir(container: string): string {
    if (!/^[0-9a-f]{64}$/.test(container)) throw new LaminaError('EINVAL', `invalid container id "${container}"`);
    return path.join(this.dir, 'mounts', container);
  }

  /**
   * Records a container's rw layer (moby's CreateRWLayer): mounts/<container>/{init-id,
   * mount-id,parent}, written in a staging dir and published with one rename.
   */
  saveMount(container: string, m: MountRecord): void {
    const stage = path.join(this.tmpDir, `mount-${randomBytes(8).toString('hex')}`);
    fs.mkdirSync(stage, { mode: 0o755 });
    try {
      fs.writeFileSync(path.join(stage, 'init-id'), m.initID, { mode: 0o644 });
      fs.writeFileSync(path.join(stage, 'mount-id'), m.mountID, { mode: 0o644 });
      if (m.parent) fs.writeFileSync(path.join(stage, 'parent'), m.parent, { mode: 0o644 });
      fs.chmodSync(stage, 0o755);
      faultPoint();
      fs.renameSync(stage, this.mountDir(container));
      faultPoint();
    } catch (e) {
      fs.rmSync(stage, { recursive: true, force: true });
      throw e;
    }
  }

  getMount(container: string): MountRecord | undefined {
    const dir = this.mountDir(container);
    const mountID = readOptional(path.join(dir, 'mount-id'));
    if (mountID === undefined) return undefined;
    return { mountID, initID: readOptional(path.join(dir, 'init-id')) ?? '', parent: readOptional(path.join(dir, 'parent')) || undefined };
  }

  /** Container ids that have an rw layer record. */
  listMounts(): string[] {
    return safeReaddir(path.join(this.dir, 'mounts')).filter((n) => /^[0-9a-f]{64}$/.test(n));
  }

  deleteMount(container: string): void {
    fs.rmSync(this.mountDir(container), { recursive: true, force: true });
  }

  /** The tar-split record of a layer (gzip bytes as stored). */
  tarSplitPath(chain: Digest): string {
    return path.join(this.layerDir(chain), TARSPLIT);
  }

  /** Exact byte length of the layer tar, from tar-split alone. */
  async tarSize(chain: Digest): Promise<number> {
    const { tarSizeFromTarSplit } = await loadTarSplit();
    return tarSizeFromTarSplit(fs.readFileSync(this.tarSplitPath(chain)));
  }

  /** Streams the original layer tar, byte for byte, from diff/ + tar-split. */
  async openTar(chain: Digest): Promise<Readable> {
    const { assembleTar, readTarSplit } = await loadTarSplit();
    const layer = this.get(chain);
    const diff = this.driver.diffPath(layer.cacheID);
    return assembleTar(readTarSplit(fs.readFileSync(this.tarSplitPath(chain))), diff);
  }
}

let tarSplitModule: Promise<typeof TarSplit> | undefined;
function loadTarSplit(): Promise<typeof TarSplit> {
  return (tarSplitModule ??= import('../tar/tarsplit.js'));
}

function safeReaddir(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
}

