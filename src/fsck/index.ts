// `lamina fsck [--repair]`: checks that a root is what Docker's overlay2 would have written and
// that every reference between its parts holds:
//   overlay2 l/        every short link points at an existing layer dir whose `link` names it
//   overlay2 <id>/     link file + l/ symlink, `lower` = the parent chain's links, work/ when it
//                      has a parent, `committed` in the parent; owned by a layer, a container's
//                      init/rw layer or a live registration; nothing mounted at a leftover merged/
//   layerdb            cache-id dir exists, parent exists, chainID = chain(parent, diffID), the
//                      layer tar rebuilt from diff/ + tar-split hashes to diffID
//   imagedb            config bytes hash to their name, every chain of an image exists
//   repositories.json  every reference points at an existing image
//   containers         record ↔ layerdb/mounts ↔ init/rw dirs; the image exists
//   leftovers          staging/removing dirs nobody is working in, stale mount counts
// Each problem is one line. With repair, what can be fixed without losing data is fixed; what
// cannot (a changed byte in diff/) says which images are affected and what to do.
//
// fsck holds the root lock for its whole run, so no metadata changes under it; extractions of
// other processes (staging dirs they hold locked) are left alone.
import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { chainID as computeChainID, chainIDs, hex, sha256, type Digest } from '../digest/index.js';
import { generateShortID } from '../overlay2/driver.js';
import { isDirLocked } from '../lock.js';
import { readOptional } from '../fsutil.js';
import { parseReference } from '../images/reference.js';
import type { Store } from '../store.js';
import type { Layer } from '../layers/store.js';

export interface Problem {
  /** One line naming the problem: which file, which entry, which digest. */
  message: string;
  /** Set when --repair fixed it: what was done. */
  repaired?: string;
  /** Set when it cannot be fixed without losing data: what the user can do. */
  advice?: string;
}

export interface FsckOptions {
  repair?: boolean;
  /** Re-hash every layer's content (the slow part); default true. */
  verifyContent?: boolean;
  /** Called with each problem as it is found (after any repair). */
  onProblem?: (p: Problem) => void;
}

export interface FsckResult {
  problems: Problem[];
  /** Problems not repaired (exit status 1 when > 0). */
  remaining: number;
  layers: number;
  images: number;
  containers: number;
}

const HEX64 = /^[0-9a-f]{64}$/;
const LID_RE = /^[A-Z2-7]{26}$/;

export function formatProblem(p: Problem): string {
  if (p.repaired) return `${p.message}: repaired (${p.repaired})`;
  if (p.advice) return `${p.message}: not repaired (${p.advice})`;
  return p.message;
}

export async function fsck(store: Store, opts: FsckOptions = {}): Promise<FsckResult> {
  const checker = new Checker(store, opts);
  store.lock.acquire();
  try {
    await checker.run();
  } finally {
    store.lock.release();
  }
  return checker.result();
}

class Checker {
  private readonly problems: Problem[] = [];
  private readonly repair: boolean;
  private readonly home: string;
  private readonly lDir: string;
  private readonly shaDir: string;
  private readonly tmpDir: string;
  private readonly mountsDir: string;
  private layers: Layer[] = [];
  private imageCount = 0;
  private containerCount = 0;

  constructor(private readonly store: Store, private readonly opts: FsckOptions) {
    this.repair = !!opts.repair;
    this.home = store.driver.home;
    this.lDir = path.join(this.home, 'l');
    this.shaDir = path.join(store.layers.dir, 'sha256');
    this.tmpDir = path.join(store.layers.dir, 'tmp');
    this.mountsDir = path.join(store.layers.dir, 'mounts');
  }

  result(): FsckResult {
    return {
      problems: this.problems,
      remaining: this.problems.filter((p) => !p.repaired).length,
      layers: this.layers.length,
      images: this.imageCount,
      containers: this.containerCount,
    };
  }

  /** Records a problem; `fix` runs only with --repair and returns what it did. */
  private report(message: string, fix?: () => string, advice?: string): void {
    const p: Problem = { message };
    if (fix && this.repair) {
      try {
        p.repaired = fix();
      } catch (e) {
        p.advice = `repair failed: ${(e as Error).message}`;
      }
    } else if (advice) {
      p.advice = advice;
    } else if (fix) {
      p.advice = 'run lamina fsck --repair';
    }
    this.problems.push(p);
    this.opts.onProblem?.(p);
  }

  async run(): Promise<void> {
    this.checkLeftovers();
    this.layers = this.readLayers();
    const owners = this.checkLayers();
    const mounts = this.checkContainers(owners);
    this.checkLayerDirs(owners, mounts);
    this.checkShortLinks();
    const images = this.checkImages();
    this.checkRepositories(images);
    this.checkUnreferenced(images);
    await this.checkStaleMounts();
    if (this.opts.verifyContent !== false) await this.verifyContent(images);
  }

  // ------------------------------------------------------------ leftovers of interrupted work

  private checkLeftovers(): void {
    const s = this.store;
    for (const name of readdir(this.shaDir)) {
      if (HEX64.test(name)) continue;
      const dir = path.join(this.shaDir, name);
      if (name.endsWith('-removing')) {
        if (isDirLocked(dir)) continue;
        this.report(`layerdb/sha256/${name}: leftover of an interrupted layer removal`, () => {
          s.layers.recover();
          return 'removal finished';
        });
      } else {
        this.report(`layerdb/sha256/${name}: unexpected entry`, undefined, 'not a layer; inspect and remove it by hand');
      }
    }
    for (const name of readdir(this.tmpDir)) {
      const dir = path.join(this.tmpDir, name);
      if (isDirLocked(dir)) continue; // a live process is extracting or holds a pin
      this.report(`layerdb/tmp/${name}: leftover staging dir of an interrupted layer registration`, () => {
        s.layers.recover();
        return 'staging dir and its layer dir removed';
      });
    }
    for (const name of readdir(s.containers.dir)) {
      if (!name.startsWith('.')) continue;
      const dir = path.join(s.containers.dir, name);
      if (isDirLocked(dir)) continue;
      this.report(`containers/${name}: leftover of an interrupted container ${name.startsWith('.create-') ? 'creation' : 'removal'}`, () => {
        s.containers.recover();
        return 'finished';
      });
    }
  }

  // ------------------------------------------------------------ layerdb

  private readLayers(): Layer[] {
    const out: Layer[] = [];
    for (const name of readdir(this.shaDir)) {
      if (!HEX64.test(name)) continue;
      const dir = path.join(this.shaDir, name);
      const chain = 'sha256:' + name;
      const cacheID = readOptional(path.join(dir, 'cache-id'));
      const diffID = readOptional(path.join(dir, 'diff'));
      if (cacheID === undefined || diffID === undefined || !HEX64.test(cacheID) || !/^sha256:[0-9a-f]{64}$/.test(diffID)) {
        this.report(`layer ${chain}: layerdb entry is incomplete (cache-id ${cacheID === undefined ? 'missing' : JSON.stringify(cacheID)}, diff ${diffID === undefined ? 'missing' : JSON.stringify(diffID)})`,
          undefined, `images using it: ${this.imagesUsing(chain)}; remove them with lamina rmi and load or pull them again`);
        continue;
      }
      const parent = readOptional(path.join(dir, 'parent')) || undefined;
      out.push({ chainID: chain, diffID, parent, cacheID, size: Number(readOptional(path.join(dir, 'size')) ?? 0) });
    }
    return out;
  }

  /** Checks each layer and its layer dir; returns cache-id → chainID of every layer. */
  private checkLayers(): Map<string, Digest> {
    const owners = new Map<string, Digest>();
    const byChain = new Map(this.layers.map((l) => [l.chainID, l]));
    // Parents first, so a repaired link is what the children's `lower` is checked against.
    const order: Layer[] = [];
    const seen = new Set<Digest>();
    const visit = (l: Layer, depth: number) => {
      if (seen.has(l.chainID) || depth > 1000) return;
      seen.add(l.chainID);
      const p = l.parent ? byChain.get(l.parent) : undefined;
      if (p) visit(p, depth + 1);
      order.push(l);
    };
    for (const l of this.layers) visit(l, 0);
    for (const l of order) {
      owners.set(l.cacheID, l.chainID);
      const what = `layer ${l.chainID}`;
      if (l.parent && !byChain.has(l.parent)) {
        this.report(`${what}: parent layer ${l.parent} does not exist`, undefined, `images using it: ${this.imagesUsing(l.chainID)}; remove them with lamina rmi and load or pull them again`);
      }
      const want = computeChainID(l.parent, l.diffID);
      if (want !== l.chainID) {
        this.report(`${what}: chainID does not match its parent ${l.parent ?? '(none)'} and diffID ${l.diffID} (expected ${want})`, undefined, 'the layerdb entry was changed; remove the images using it and load them again');
      }
      if (!fs.existsSync(path.join(this.store.layers.dir, 'sha256', hex(l.chainID), 'tar-split.json.gz'))) {
        this.report(`${what}: layerdb/sha256/${hex(l.chainID)}/tar-split.json.gz is missing`, undefined, `images using it: ${this.imagesUsing(l.chainID)}; remove them with lamina rmi and load or pull them again`);
      }
      if (!fs.existsSync(this.store.driver.dir(l.cacheID))) {
        this.report(`${what}: its cache-id dir overlay2/${l.cacheID} is missing`, undefined, `images using it: ${this.imagesUsing(l.chainID)}; remove them with lamina rmi and load or pull them again`);
        continue;
      }
      const parentCache = l.parent ? byChain.get(l.parent)?.cacheID : undefined;
      this.checkLayerDir(l.cacheID, what, parentCache, !!l.parent);
    }
    return owners;
  }

  /**
   * A layer dir's link file, l/ symlink, lower file and work dir. `parentID` is the dir below it
   * (undefined for a bottom layer, or when the parent is missing: then lower is not checked).
   */
  private checkLayerDir(id: string, what: string, parentID: string | undefined, hasParent: boolean): void {
    const dir = path.join(this.home, id);
    let link = readOptional(path.join(dir, 'link'));
    if (link === undefined || !LID_RE.test(link)) {
      const found = this.linksTo(id);
      const fix = () => {
        const lid = found[0] ?? generateShortID();
        fs.writeFileSync(path.join(dir, 'link'), lid, { mode: 0o644 });
        if (!found.length) fs.symlinkSync(`../${id}/diff`, path.join(this.lDir, lid));
        link = lid;
        return found.length ? `link file rewritten from l/${lid}` : `new short link l/${lid} made`;
      };
      this.report(`${what}: overlay2/${id}/link is ${link === undefined ? 'missing' : `invalid (${JSON.stringify(link)})`}`, fix);
    } else {
      const lpath = path.join(this.lDir, link);
      let target: string | undefined;
      try {
        target = fs.readlinkSync(lpath);
      } catch {
        target = undefined;
      }
      const lid = link;
      if (target !== `../${id}/diff`) {
        this.report(`${what}: short link overlay2/l/${lid} ${target === undefined ? 'is missing' : `points at ${target}, not ../${id}/diff`}`, () => {
          fs.rmSync(lpath, { force: true });
          fs.symlinkSync(`../${id}/diff`, lpath);
          return `l/${lid} -> ../${id}/diff recreated`;
        });
      }
    }
    if (!fs.existsSync(path.join(dir, 'diff'))) {
      this.report(`${what}: overlay2/${id}/diff is missing`, undefined, 'the layer content is lost; remove the images or containers using it');
    }
    const lowerFile = path.join(dir, 'lower');
    const lower = readOptional(lowerFile);
    if (!hasParent) {
      if (lower !== undefined) {
        this.report(`${what}: overlay2/${id}/lower exists but the layer has no parent`, () => {
          fs.rmSync(lowerFile);
          return 'lower removed';
        });
      }
      return;
    }
    if (!fs.existsSync(path.join(dir, 'work'))) {
      this.report(`${what}: overlay2/${id}/work is missing`, () => {
        fs.mkdirSync(path.join(dir, 'work'), { mode: 0o700 });
        return 'work/ recreated';
      });
    }
    if (!parentID) return;
    const expected = this.expectedLower(parentID);
    if (expected === undefined) return; // the parent's own problems are reported on it
    if (lower !== expected) {
      this.report(`${what}: overlay2/${id}/lower ${lower === undefined ? 'is missing' : `is "${abbrev(lower)}", not the parent chain's links "${abbrev(expected)}"`}`, () => {
        fs.writeFileSync(lowerFile, expected, { mode: 0o644 });
        return 'lower rewritten from the parent chain';
      });
    }
  }

  /** `l/<parent link>:<parent's lower>`, as moby's create() writes it. */
  private expectedLower(parentID: string): string | undefined {
    const pdir = path.join(this.home, parentID);
    const link = readOptional(path.join(pdir, 'link'));
    if (link === undefined || !LID_RE.test(link)) return undefined;
    const plower = readOptional(path.join(pdir, 'lower'));
    return plower ? `l/${link}:${plower}` : `l/${link}`;
  }

  private linksTo(id: string): string[] {
    const want = `../${id}/diff`;
    return readdir(this.lDir).filter((lid) => {
      try {
        return fs.readlinkSync(path.join(this.lDir, lid)) === want;
      } catch {
        return false;
      }
    });
  }

  // ------------------------------------------------------------ containers

  /** Checks container records and layerdb/mounts; returns the layer dirs containers own. */
  private checkContainers(owners: Map<string, Digest>): Set<string> {
    const s = this.store;
    const owned = new Set<string>();
    const records = new Set(s.containers.ids());
    this.containerCount = records.size;
    const byChain = new Map(this.layers.map((l) => [l.chainID, l]));
    for (const id of s.layers.listMounts()) {
      const m = s.layers.getMount(id);
      const what = `container ${id}`;
      if (!m) {
        this.report(`layerdb/mounts/${id}: has no mount-id`, () => {
          s.layers.deleteMount(id);
          return 'entry removed';
        });
        continue;
      }
      if (!records.has(id)) {
        // The record goes first on rm and comes last on create: a mounts entry alone is the
        // leftover of an interrupted create or rm, with no data worth keeping.
        this.report(`layerdb/mounts/${id}: no container record containers/${id} uses it (rw layer overlay2/${m.mountID})`, () => {
          s.layers.deleteMount(id);
          for (const d of [m.mountID, m.initID]) if (d && s.driver.exists(d)) s.driver.remove(d);
          return 'entry and its init and rw layer dirs removed';
        });
        continue;
      }
      owned.add(m.mountID);
      if (m.initID) owned.add(m.initID);
      const top = m.parent ? byChain.get(m.parent) : undefined;
      if (m.parent && !top) this.report(`${what}: its image's top layer ${m.parent} does not exist`, undefined, 'remove the container with lamina rm');
      if (m.initID !== `${m.mountID}-init`) this.report(`${what}: layerdb/mounts/${id}/init-id is "${m.initID}", not "${m.mountID}-init"`, undefined, 'remove the container with lamina rm');
      const initOK = m.initID && fs.existsSync(path.join(this.home, m.initID));
      if (!initOK) this.report(`${what}: its init layer dir overlay2/${m.initID} is missing`, undefined, 'remove the container with lamina rm');
      else this.checkLayerDir(m.initID, `${what} init layer`, top?.cacheID, !!m.parent);
      if (!fs.existsSync(path.join(this.home, m.mountID))) this.report(`${what}: its rw layer dir overlay2/${m.mountID} is missing`, undefined, 'its changes are lost; remove the container with lamina rm');
      else this.checkLayerDir(m.mountID, `${what} rw layer`, initOK ? m.initID : undefined, true);
    }
    const mounts = new Set(s.layers.listMounts());
    for (const id of records) {
      const what = `container ${id}`;
      if (!mounts.has(id)) this.report(`${what}: containers/${id} has no layerdb/mounts/${id} entry`, undefined, 'its rw layer is unknown; remove the container with lamina rm');
      let image: string | undefined;
      try {
        image = JSON.parse(fs.readFileSync(path.join(s.containers.dir, id, 'config.v2.json'), 'utf8')).Image;
      } catch (e) {
        this.report(`${what}: containers/${id}/config.v2.json is unreadable: ${(e as Error).message}`, undefined, 'remove the container with lamina rm');
        continue;
      }
      if (image && !s.images.has(image as Digest)) this.report(`${what}: its image ${image} does not exist`, undefined, 'remove the container with lamina rm');
    }
    void owners;
    return owned;
  }

  // ------------------------------------------------------------ overlay2 dirs and l/

  private checkLayerDirs(owners: Map<string, Digest>, containerDirs: Set<string>): void {
    const s = this.store;
    const live = this.liveStagingCacheIDs();
    for (const name of readdir(this.home)) {
      if (name === 'l') continue;
      if (!/^[0-9a-f]{64}(-init)?$/.test(name)) {
        this.report(`overlay2/${name}: unexpected entry`, undefined, 'not a layer dir; inspect and remove it by hand');
        continue;
      }
      if (owners.has(name) || containerDirs.has(name) || live.has(name)) {
        this.checkParentCommitted(name);
        continue;
      }
      this.report(`overlay2/${name}: orphan layer dir (no layer, container or registration uses it)`, () => {
        s.driver.remove(name);
        return 'removed with its short link';
      });
    }
  }

  /**
   * The driver writes `committed` into a layer dir once a child is created on it, and a mount of
   * a committed layer is read-only; without it, mounting the parent would write into a lower dir
   * its children share.
   */
  private checkParentCommitted(name: string): void {
    let parent: string;
    try {
      const nearest = this.store.driver.info(name).lower[0];
      if (!nearest) return; // a bottom layer
      parent = this.store.driver.resolveLink(nearest);
    } catch {
      return; // a broken link, lower or short link: checkLayers and checkShortLinks report it
    }
    if (!fs.existsSync(path.join(this.home, parent)) || fs.existsSync(path.join(this.home, parent, 'committed'))) return;
    this.report(`overlay2/${parent}: no committed marker although overlay2/${name} stands on it (a mount of it would be writable)`, () => {
      this.store.driver.markCommitted(parent);
      return 'committed written';
    });
  }

  /** cache-ids that staging dirs of live registrations are filling. */
  private liveStagingCacheIDs(): Set<string> {
    const out = new Set<string>();
    for (const name of readdir(this.tmpDir)) {
      const id = readOptional(path.join(this.tmpDir, name, 'cache-id'));
      if (id && isDirLocked(path.join(this.tmpDir, name))) out.add(id);
    }
    return out;
  }

  private checkShortLinks(): void {
    for (const lid of readdir(this.lDir)) {
      const lpath = path.join(this.lDir, lid);
      let target: string | undefined;
      try {
        target = fs.readlinkSync(lpath);
      } catch {
        target = undefined;
      }
      const m = target ? /^\.\.\/([0-9a-f]{64}(?:-init)?)\/diff$/.exec(target) : null;
      const id = m?.[1];
      const ok = id && fs.existsSync(path.join(this.home, id)) && readOptional(path.join(this.home, id, 'link')) === lid;
      if (ok) continue;
      // A live registration writes link before the symlink; its dir exists, so only a link to a
      // missing dir (or to a dir naming another link) is dangling.
      if (id && this.liveStagingCacheIDs().has(id)) continue;
      this.report(`overlay2/l/${lid}: dangling short link (${target === undefined ? 'not a symlink' : `-> ${target}`}${id && fs.existsSync(path.join(this.home, id)) ? `, overlay2/${id}/link names another` : ''})`, () => {
        fs.rmSync(lpath, { force: true });
        return 'removed';
      });
    }
  }

  // ------------------------------------------------------------ imagedb and tags

  /** Checks every image; returns image ID → its chainIDs. */
  private checkImages(): Map<Digest, Digest[]> {
    const s = this.store;
    const out = new Map<Digest, Digest[]>();
    const layerSet = new Set(this.layers.map((l) => l.chainID));
    const ids = s.images.list();
    this.imageCount = ids.length;
    for (const id of ids) {
      let bytes: Buffer;
      try {
        bytes = s.images.getBytes(id);
      } catch (e) {
        this.report(`image ${id}: config unreadable: ${(e as Error).message}`);
        continue;
      }
      if (sha256(bytes) !== id) {
        this.report(`image ${id}: imagedb/content/sha256/${hex(id)} does not hash to its name (got ${sha256(bytes)})`, undefined, 'the config was changed; remove the image with lamina rmi and load or pull it again');
        continue;
      }
      let chains: Digest[];
      try {
        chains = chainIDs(s.images.get(id).rootfs.diff_ids);
      } catch (e) {
        this.report(`image ${id}: ${(e as Error).message}`, undefined, 'remove the image with lamina rmi');
        continue;
      }
      out.set(id, chains);
      for (const c of chains) {
        if (!layerSet.has(c)) {
          this.report(`image ${id}: its layer ${c} does not exist`, undefined, 'remove the image with lamina rmi and load or pull it again');
          break;
        }
      }
      const parent = s.images.getMetadata(id, 'parent');
      if (parent && !s.images.has(parent as Digest)) {
        this.report(`image ${id}: metadata parent ${parent} does not exist`, () => {
          fs.rmSync(path.join(s.images.dir, 'metadata', 'sha256', hex(id), 'parent'), { force: true });
          return 'parent reference dropped';
        });
      }
    }
    const metaDir = path.join(s.images.dir, 'metadata', 'sha256');
    for (const name of readdir(metaDir)) {
      if (HEX64.test(name) && out.has('sha256:' + name)) continue;
      if (HEX64.test(name) && s.images.has('sha256:' + name)) continue;
      this.report(`imagedb/metadata/sha256/${name}: metadata of an image that does not exist`, () => {
        fs.rmSync(path.join(metaDir, name), { recursive: true, force: true });
        return 'removed';
      });
    }
    return out;
  }

  private checkRepositories(images: Map<Digest, Digest[]>): void {
    const repos = this.store.repositories;
    repos.invalidate();
    let entries;
    try {
      entries = repos.entries();
    } catch (e) {
      this.report((e as Error).message, undefined, 'fix or remove repositories.json by hand');
      return;
    }
    for (const e of entries) {
      if (this.store.images.has(e.image) && images.has(e.image)) continue;
      if (this.store.images.has(e.image)) continue; // a config problem, reported on the image
      this.report(`repositories.json: ${e.ref} points at image ${e.image}, which does not exist`, () => {
        repos.delete(parseReference(e.ref));
        return 'reference dropped';
      });
    }
  }

  /** Layers no image, container or live operation uses: what a killed command would leak. */
  private checkUnreferenced(images: Map<Digest, Digest[]>): void {
    const used = new Set<Digest>();
    for (const chains of images.values()) for (const c of chains) used.add(c);
    const byChain = new Map(this.layers.map((l) => [l.chainID, l]));
    const pinned = this.store.layers.pinned();
    const keep = (c: Digest | undefined) => {
      for (let x = c; x && !used.has(x); x = byChain.get(x)?.parent) used.add(x);
    };
    for (const id of this.store.layers.listMounts()) keep(this.store.layers.getMount(id)?.parent);
    for (const c of pinned) keep(c);
    for (const l of this.layers) {
      if (used.has(l.chainID)) continue;
      this.report(`layer ${l.chainID}: no image, container or operation uses it (overlay2/${l.cacheID})`, () => {
        const gone = this.store.collectUnreferenced([l.chainID]);
        return gone.length ? `deleted ${gone.length} layer${gone.length > 1 ? 's' : ''}` : 'nothing to delete';
      });
    }
  }

  // ------------------------------------------------------------ mounts

  private async checkStaleMounts(): Promise<void> {
    // merged/ dirs are made by a mount and removed by the last unmount.
    const { mountState } = await import('../mount/mountinfo.js');
    const { countDir } = await import('../mount/refcount.js');
    for (const name of readdir(this.home)) {
      if (name === 'l') continue;
      const merged = path.join(this.home, name, 'merged');
      if (!fs.existsSync(merged)) continue;
      const state = mountState(merged);
      if (state === 'none') {
        this.report(`overlay2/${name}/merged: left over with nothing mounted`, () => {
          fs.rmdirSync(merged);
          return 'removed';
        });
      } else if (state === 'dead-fuse') {
        this.report(`overlay2/${name}/merged: fuse-overlayfs mount whose daemon is gone`, undefined, `unmount it: umount -l ${merged}`);
      }
    }
    const counts = countDir(this.home);
    for (const id of readdir(counts)) {
      const merged = path.join(this.home, id, 'merged');
      if (mountState(merged) !== 'none') continue;
      this.report(`mount count ${path.join(counts, id)}: claims a mount of overlay2/${id} but nothing is mounted`, () => {
        fs.rmSync(path.join(counts, id), { force: true });
        return 'count cleared';
      });
    }
  }

  // ------------------------------------------------------------ content

  private async verifyContent(images: Map<Digest, Digest[]>): Promise<void> {
    for (const l of this.layers) {
      if (!fs.existsSync(path.join(this.home, l.cacheID, 'diff'))) continue;
      let got: string;
      try {
        const h = createHash('sha256');
        for await (const chunk of await this.store.layers.openTar(l.chainID)) h.update(chunk as Buffer);
        got = 'sha256:' + h.digest('hex');
      } catch (e) {
        got = `an error: ${(e as Error).message}`;
      }
      if (got === l.diffID) continue;
      const users = [...images].filter(([, chains]) => chains.includes(l.chainID)).map(([id]) => this.imageName(id));
      this.report(`layer ${l.chainID}: content of overlay2/${l.cacheID}/diff does not match diffID ${l.diffID} (rebuilding the tar gave ${got})`, undefined,
        `the layer is corrupt; images using it: ${users.join(', ') || 'none'}; remove them with lamina rmi and load or pull them again`);
    }
  }

  private imagesUsing(chain: Digest): string {
    const users: string[] = [];
    for (const id of this.store.images.list()) {
      try {
        if (chainIDs(this.store.images.get(id).rootfs.diff_ids).includes(chain)) users.push(this.imageName(id));
      } catch {
        // reported on the image
      }
    }
    return users.join(', ') || 'none';
  }

  private imageName(id: Digest): string {
    const refs = this.store.repositories.referencesTo(id).map((r) => r.ref);
    return refs.length ? `${hex(id).slice(0, 12)} (${refs.join(', ')})` : hex(id).slice(0, 12);
  }
}

function abbrev(s: string): string {
  return s.length > 90 ? s.slice(0, 87) + '…' : s;
}

function readdir(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return [];
    throw e;
  }
}
