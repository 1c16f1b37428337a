// The overlay2 graph driver's directory tree, as moby's overlay2 driver lays it out:
//   <home>/l/<LID> -> ../<id>/diff        26-char base32 short names keep mount options short
//   <home>/<id>/{diff/,link,lower,work/,committed}
// Only this module writes under <root>/overlay2. It never mounts: it describes layers; the
// mount backends (later) consume what it describes.
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { LaminaError } from '../errors.js';
import { faultPoint } from '../fsutil.js';

const LINK_DIR = 'l';
const ID_RE = /^[0-9a-f]{64}(-init)?$/;
const LID_RE = /^[A-Z2-7]{26}$/;
/** The kernel's OVL_MAX_STACK; Docker stops at 128, containers/storage at 500. */
export const MAX_DEPTH = 500;

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

/** moby: 17 random bytes, standard base32, first 26 characters. */
export function generateShortID(): string {
  const bytes = randomBytes(17);
  let out = '';
  let bits = 0, value = 0;
  for (const b of bytes) {
    value = (value << 8) | b;
    bits += 8;
    while (bits >= 5 && out.length < 26) {
      out += BASE32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  return out;
}

/** A random 64-hex id, like moby's stringid.GenerateRandomID (cache-ids and mount-ids). */
export function generateID(): string {
  return randomBytes(32).toString('hex');
}

/**
 * What a layer's view would be, as data (mounts are data): a backend (kernel overlayfs,
 * fuse-overlayfs, the userspace union engine) turns it into a view at `target`.
 * Paths are relative to `home` (the overlay2 dir), as Docker's short mount strings are.
 */
export interface MountSpec {
  /** The layer directory name under overlay2/ (cache-id or mount-id). */
  id: string;
  /** Absolute path of the overlay2 dir; every relative path below is relative to it. */
  home: string;
  /**
   * Lower dirs, nearest first. For an rw mount they are the `l/<LID>` links of the layers
   * below; for a read-only mount of a committed layer the first one is the layer's own
   * `<id>/diff` (as moby does).
   */
  lowers: string[];
  /** `<id>/diff` for an rw mount; undefined for a read-only one. */
  upper?: string;
  /** `<id>/work` for an rw mount. */
  work?: string;
  /** `<id>/merged`, where the view appears. */
  target: string;
  readonly: boolean;
  /**
   * Set when the layer needs no mount at all: a bottom layer (no `lower` file) is used as its
   * `diff/` directly, as moby's Get() returns it.
   */
  direct?: string;
}

export interface LayerDirInfo {
  id: string;
  link: string;
  /** Short names of the lower layers, nearest first (empty for a bottom layer). */
  lower: string[];
}

export class Overlay2Driver {
  readonly home: string;

  constructor(home: string) {
    this.home = home;
  }

  /** Creates `<home>` (0710) and `l/` (0700) if missing. */
  init(): void {
    fs.mkdirSync(this.home, { recursive: true, mode: 0o710 });
    fs.mkdirSync(path.join(this.home, LINK_DIR), { recursive: true, mode: 0o700 });
  }

  dir(id: string): string {
    if (!ID_RE.test(id)) throw new LaminaError('EINVAL', `invalid layer directory id "${id}"`);
    return path.join(this.home, id);
  }

  diffPath(id: string): string {
    return path.join(this.dir(id), 'diff');
  }

  exists(id: string): boolean {
    return fs.existsSync(this.dir(id));
  }

  /**
   * Creates a layer directory on top of `parent` (a layer id) the way moby's create() does.
   * Returns whether the parent's `committed` marker was newly written, so a caller rolling
   * back can restore the parent exactly.
   */
  create(id: string, parent?: string): { createdCommitted: boolean } {
    const dir = this.dir(id);
    let parentInfo: LayerDirInfo | undefined;
    if (parent) {
      parentInfo = this.info(parent);
      if (parentInfo.lower.length + 1 > MAX_DEPTH) {
        throw new LaminaError('EUNSUPPORTED', `cannot create layer ${id}: max depth of ${MAX_DEPTH} layers exceeded`);
      }
    }
    fs.mkdirSync(dir, { mode: 0o710 });
    fs.chmodSync(dir, 0o710); // mkdir's mode is filtered by the umask
    faultPoint();
    fs.mkdirSync(path.join(dir, 'diff'), { mode: 0o755 });
    fs.chmodSync(path.join(dir, 'diff'), 0o755);
    faultPoint();
    // `link` is written before the l/ symlink exists, so whatever instant a crash hits, the
    // layer dir names every short link that may point at it (remove() relies on it).
    this.newShortLink(id);
    let createdCommitted = false;
    if (parentInfo) {
      fs.mkdirSync(path.join(dir, 'work'), { mode: 0o700 });
      faultPoint();
      if (this.markCommitted(parentInfo.id)) {
        createdCommitted = true;
        faultPoint();
      }
      const lower = [parentInfo.link, ...parentInfo.lower].map((l) => `${LINK_DIR}/${l}`).join(':');
      fs.writeFileSync(path.join(dir, 'lower'), lower, { mode: 0o644 });
      faultPoint();
    }
    return { createdCommitted };
  }

  private newShortLink(id: string): string {
    const linkFile = path.join(this.dir(id), 'link');
    for (let attempt = 0; attempt < 5; attempt++) {
      const lid = generateShortID();
      fs.writeFileSync(linkFile, lid, { mode: 0o644 });
      faultPoint();
      try {
        fs.symlinkSync(`../${id}/diff`, path.join(this.home, LINK_DIR, lid));
        faultPoint();
        return lid;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
    }
    throw new LaminaError('ECONFLICT', `could not allocate a unique short link for layer ${id}`);
  }

  /** Reads `link` and `lower` of a layer directory. */
  info(id: string): LayerDirInfo {
    const dir = this.dir(id);
    let link: string;
    try {
      link = fs.readFileSync(path.join(dir, 'link'), 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new LaminaError('ENOTFOUND', `layer directory ${dir} is missing or has no link file`);
      throw e;
    }
    if (!LID_RE.test(link)) throw new LaminaError('EBADINPUT', `${dir}/link holds "${link}", not a 26-character short name`);
    let lower: string[] = [];
    try {
      const raw = fs.readFileSync(path.join(dir, 'lower'), 'utf8');
      lower = raw === '' ? [] : raw.split(':').map((s) => s.replace(/^l\//, ''));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    return { id, link, lower };
  }

  /** moby's Get(): how the layer would be mounted (see MountSpec). */
  mountSpec(id: string): MountSpec {
    const info = this.info(id);
    const dir = this.dir(id);
    const base = { id, home: this.home, target: `${id}/merged` };
    if (info.lower.length === 0) return { ...base, lowers: [], readonly: false, direct: path.join(dir, 'diff') };
    const lowers = info.lower.map((l) => `${LINK_DIR}/${l}`);
    if (fs.existsSync(path.join(dir, 'committed'))) {
      return { ...base, lowers: [`${id}/diff`, ...lowers], readonly: true };
    }
    return { ...base, lowers, upper: `${id}/diff`, work: `${id}/work`, readonly: false };
  }

  /** Resolves a short link name to the layer id it points at. */
  resolveLink(lid: string): string {
    let target: string;
    try {
      target = fs.readlinkSync(path.join(this.home, LINK_DIR, lid));
    } catch (e) {
      // Its layer was removed (by another lamina process), or the link was lost (fsck --repair).
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new LaminaError('ENOTFOUND', `short link ${this.home}/${LINK_DIR}/${lid} does not exist: its layer is gone or the link was lost (lamina fsck finds which)`);
      throw e;
    }
    const m = /^\.\.\/([^/]+)\/diff$/.exec(target);
    if (!m) throw new LaminaError('EBADINPUT', `${this.home}/l/${lid} points at "${target}", not ../<id>/diff`);
    return m[1];
  }

  /** Absolute `diff/` paths of the lower layers, nearest first (what inspect shows as LowerDir). */
  lowerDiffPaths(id: string): string[] {
    return this.info(id).lower.map((lid) => this.diffPath(this.resolveLink(lid)));
  }

  /**
   * Removes a layer directory and its short link (moby's Remove). `parent`, when given with
   * `dropCommitted`, also removes the parent's `committed` marker this layer's creation wrote.
   */
  remove(id: string, opts: { parent?: string; dropCommitted?: boolean } = {}): void {
    const dir = this.dir(id);
    let link: string | undefined;
    try {
      link = fs.readFileSync(path.join(dir, 'link'), 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    if (link && LID_RE.test(link)) fs.rmSync(path.join(this.home, LINK_DIR, link), { force: true });
    else this.removeLinksTo(id); // no usable link file: look for any short link to this layer
    faultPoint();
    fs.rmSync(dir, { recursive: true, force: true });
    faultPoint();
    // Only while no other layer dir stands on the parent: another process may have created a
    // child on it meanwhile (or published the same chain this layer duplicated), and moby keeps
    // `committed` on every layer that has a child.
    if (opts.parent && opts.dropCommitted && !this.hasChildDirs(opts.parent)) fs.rmSync(path.join(this.dir(opts.parent), 'committed'), { force: true });
  }

  /**
   * Writes the empty `committed` marker (0600) moby puts in a layer dir once a child stands on
   * it (a mount of a committed layer is read-only); returns whether it was missing.
   */
  markCommitted(id: string): boolean {
    const committed = path.join(this.dir(id), 'committed');
    if (fs.existsSync(committed)) return false;
    fs.writeFileSync(committed, '', { mode: 0o600 });
    return true;
  }

  /** Whether any layer dir lists `id` as its nearest lower (a scan: only for rollbacks). */
  hasChildDirs(id: string): boolean {
    const want = `${LINK_DIR}/${this.info(id).link}`;
    return this.list().some((d) => {
      try {
        return fs.readFileSync(path.join(this.home, d, 'lower'), 'utf8').split(':')[0] === want;
      } catch {
        return false; // a bottom layer, or gone meanwhile
      }
    });
  }

  /** Removes every l/ entry that points at `../<id>/diff` (a scan: only for repairs). */
  removeLinksTo(id: string): void {
    const want = `../${id}/diff`;
    const ldir = path.join(this.home, LINK_DIR);
    for (const lid of fs.readdirSync(ldir)) {
      try {
        if (fs.readlinkSync(path.join(ldir, lid)) === want) fs.rmSync(path.join(ldir, lid), { force: true });
      } catch {
        // not a symlink, or gone meanwhile
      }
    }
  }

  /** Directory names under <home> other than l/ (for consistency checks and tours). */
  list(): string[] {
    return fs.readdirSync(this.home).filter((n) => n !== LINK_DIR);
  }
}
