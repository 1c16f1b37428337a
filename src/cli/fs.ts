// `lamina fs ls|stat|cat|tree|find|which TARGET[:/path]`: look inside a container or an image
// without mounting it. TARGET names a container (by name or ID) or, failing that, an image. The
// layers are read through the userspace overlay engine (src/union), so these work without FUSE
// or a kernel mount: an image shows what a new container of it would see, a container its
// merged view (its rw layer over its init layer over the image). Opaque directories are marked
// with trusted.overlay.opaque, which only CAP_SYS_ADMIN (in the initial user namespace) can
// read. Output follows the classic tools: `ls -l`, `stat`, `cat`, `tree`, `find`.
import type { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Command } from 'commander';
import type { Store } from '../store.js';
import type { Digest } from '../digest/index.js';
import { LaminaError } from '../errors.js';
import type { UnionFs, EntryType } from '../union/index.js';

/** What one union layer is: an image layer (index 0 = base, and its diffID) or a container's own. */
export interface ViewLayer {
  dir: string;
  /** Image layer index (0 = base); -1 for a container's rw and init layers. */
  index: number;
  diffID?: Digest;
  /** How the layer is named in output ("layer 3 (sha256:…)", "rw layer of container web"). */
  label: string;
}

/** An image or a container opened as a read-only union, and what each of the union's layers is. */
export interface ImageView {
  union: UnionFs;
  /** The image (for a container: the image it was created from, when it has one). */
  imageID: Digest;
  /** The container's ID when the view is a container's. */
  containerID?: string;
  /** Per union layer, top first (as UnionFs numbers them). */
  layers: ViewLayer[];
}

/** Splits `REF:/path` (the path must be absolute; `REF` alone means the root). */
export function parseTarget(arg: string): { ref: string; path: string } {
  const i = arg.indexOf(':/');
  if (i < 0) return { ref: arg, path: '/' };
  if (i === 0) throw new LaminaError('EINVAL', `"${arg}": expected IMAGE:/path or CONTAINER:/path`);
  return { ref: arg.slice(0, i), path: arg.slice(i + 1) };
}

function imageLabel(index: number, diffID: Digest): string {
  return `layer ${index} (${diffID.slice(0, 19)})`;
}

/** The image's layers, top first, with their directories. */
async function imageLayers(store: Store, imageID: Digest, ref: string): Promise<ViewLayer[]> {
  const { chainIDs } = await import('../digest/index.js');
  const diffIDs = store.images.get(imageID).rootfs.diff_ids;
  return chainIDs(diffIDs).map((chain, index) => {
    if (!store.layers.has(chain)) throw new LaminaError('ENOTFOUND', `image ${ref}: layer ${chain} (diff ${diffIDs[index]}) is missing from the store`);
    return { index, diffID: diffIDs[index], dir: store.driver.diffPath(store.layers.get(chain).cacheID), label: imageLabel(index, diffIDs[index]) };
  }).reverse();
}

/** Opens an image's layers as a read-only union (the engine is loaded only when a command runs). */
export async function openImage(store: Store, ref: string): Promise<ImageView> {
  const { UnionFs } = await import('../union/index.js');
  const imageID = store.resolveImage(ref);
  const layers = await imageLayers(store, imageID, ref);
  if (layers.length === 0) throw new LaminaError('EUNSUPPORTED', `image ${ref} has no layers to look into`);
  return { union: new UnionFs({ lowers: layers.map((l) => l.dir) }), imageID, layers };
}

/**
 * Opens a container's merged view read-only: its rw layer's upper dir stacked over its init
 * layer and the image layers. Reading the upper dir directly is safe while the container is
 * mounted: the engine only reads, and reads what the kernel wrote.
 */
export async function openContainer(store: Store, ref: string): Promise<ImageView> {
  const { UnionFs } = await import('../union/index.js');
  const c = store.containers.get(store.containers.resolve(ref));
  const d = store.driver;
  const name = c.config.Name.replace(/^\//, '') || c.id.slice(0, 12);
  const lowers = d.lowerDiffPaths(c.mount.initID);
  const image = c.config.Image ? await imageLayers(store, c.config.Image, c.config.Image) : [];
  // The init layer's lowers are the image's layers; label them by the image when they agree.
  const below: ViewLayer[] = image.length === lowers.length && image.every((l, i) => l.dir === lowers[i])
    ? image
    : lowers.map((dir) => ({ dir, index: -1, label: `lower layer ${dir.split('/').slice(-2, -1)[0]}` }));
  const layers: ViewLayer[] = [
    { dir: d.diffPath(c.mount.mountID), index: -1, label: `rw layer of container ${name}` },
    { dir: d.diffPath(c.mount.initID), index: -1, label: `init layer of container ${name}` },
    ...below,
  ];
  return { union: new UnionFs({ lowers: layers.map((l) => l.dir) }), imageID: c.config.Image, containerID: c.id, layers };
}

/** A container when `ref` names one (by name or ID), else an image, as `docker inspect` looks them up. */
export async function openTarget(store: Store, ref: string): Promise<ImageView> {
  try {
    return await openContainer(store, ref);
  } catch (e) {
    if (!(e instanceof LaminaError && e.code === 'ENOTFOUND' && /^No such container/.test(e.message))) throw e;
  }
  return openImage(store, ref);
}

// ------------------------------------------------------------------ formatting helpers

const S_IFMT = 0o170000;

export function modeString(mode: number): string {
  const t: Record<number, string> = { 0o140000: 's', 0o120000: 'l', 0o100000: '-', 0o060000: 'b', 0o040000: 'd', 0o020000: 'c', 0o010000: 'p' };
  const bit = (m: number, c: string) => (mode & m ? c : '-');
  const special = (x: boolean, set: boolean, lower: string, upper: string, plain: string) => (set ? (x ? lower : upper) : x ? plain : '-');
  return (t[mode & S_IFMT] ?? '?')
    + bit(0o400, 'r') + bit(0o200, 'w') + special((mode & 0o100) !== 0, (mode & 0o4000) !== 0, 's', 'S', 'x')
    + bit(0o040, 'r') + bit(0o020, 'w') + special((mode & 0o010) !== 0, (mode & 0o2000) !== 0, 's', 'S', 'x')
    + bit(0o004, 'r') + bit(0o002, 'w') + special((mode & 0o001) !== 0, (mode & 0o1000) !== 0, 't', 'T', 'x');
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** `ls -l`'s date: month, day and time for the last six months, the year otherwise (local time). */
export function lsDate(mtimeMs: number, now = Date.now()): string {
  const d = new Date(mtimeMs);
  const day = String(d.getDate()).padStart(2, ' ');
  const sixMonths = (365.2425 / 2) * 24 * 3600 * 1000;
  const recent = mtimeMs <= now && now - mtimeMs < sixMonths;
  const tail = recent ? `${String(d.getHours()).padStart(2, '0')}:${String(d.getMinutes()).padStart(2, '0')}` : ` ${d.getFullYear()}`;
  return `${MONTHS[d.getMonth()]} ${day} ${tail}`;
}

function major(dev: number): number {
  return ((dev >>> 8) & 0xfff) | (Math.floor(dev / 2 ** 32) & ~0xfff);
}

function minor(dev: number): number {
  return (dev & 0xff) | ((dev >>> 12) & 0xfff00);
}

/** uid/gid → name maps read from the image's own /etc/passwd and /etc/group. */
class Names {
  private users = new Map<number, string>();
  private groups = new Map<number, string>();
  constructor(union: UnionFs, numeric: boolean) {
    if (numeric) return;
    for (const [file, map] of [['/etc/passwd', this.users], ['/etc/group', this.groups]] as const) {
      let text: string;
      try {
        text = union.readFile(file, 'utf8');
      } catch {
        continue;
      }
      for (const line of text.split('\n')) {
        const f = line.split(':');
        if (f.length >= 3 && /^\d+$/.test(f[2]) && !map.has(Number(f[2]))) map.set(Number(f[2]), f[0]);
      }
    }
  }
  user(uid: number): string {
    return this.users.get(uid) ?? String(uid);
  }
  group(gid: number): string {
    return this.groups.get(gid) ?? String(gid);
  }
}

function joinPath(dir: string, name: string): string {
  return dir === '/' ? '/' + name : dir.replace(/\/+$/, '') + '/' + name;
}

function baseName(p: string): string {
  const t = p.replace(/\/+$/, '');
  return t === '' ? '/' : t.slice(t.lastIndexOf('/') + 1);
}

function byteOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

function typeName(mode: number, size: number): string {
  switch (mode & S_IFMT) {
    case 0o100000: return size === 0 ? 'regular empty file' : 'regular file';
    case 0o040000: return 'directory';
    case 0o120000: return 'symbolic link';
    case 0o020000: return 'character special file';
    case 0o060000: return 'block special file';
    case 0o010000: return 'fifo';
    case 0o140000: return 'socket';
    default: return 'weird file';
  }
}

function layerLabel(v: ImageView, unionLayer: number): string {
  return v.layers[unionLayer].label;
}

// ------------------------------------------------------------------ commands

export interface LsOptions { long?: boolean; all?: boolean; numeric?: boolean; directory?: boolean; layer?: boolean }

/** `ls`: names one per line, or `ls -l` lines (with `--layer`, the layer serving each entry). */
export function fsLs(v: ImageView, p: string, opts: LsOptions, out: Writable): void {
  const u = v.union;
  const long = opts.long || opts.numeric;
  const top = long || opts.directory ? u.lstat(p) : u.stat(p);
  const entries: Array<{ name: string; path: string }> = [];
  let listing = false;
  if (top.isDirectory() && !opts.directory) {
    listing = true;
    for (const name of u.readdir(p).sort(byteOrder)) {
      if (!opts.all && name.startsWith('.')) continue;
      entries.push({ name, path: joinPath(p, name) });
    }
    if (opts.all) entries.unshift({ name: '.', path: p }, { name: '..', path: joinPath(p, '..') });
  } else {
    entries.push({ name: p, path: p });
  }
  if (!long) {
    out.write(entries.map((e) => e.name + '\n').join(''));
    return;
  }
  const names = new Names(u, opts.numeric ?? false);
  const rows = entries.map((e) => {
    const st = u.lstat(e.path);
    const isDev = st.isCharacterDevice() || st.isBlockDevice();
    return {
      mode: modeString(st.mode), nlink: String(st.nlink), user: names.user(st.uid), group: names.group(st.gid),
      size: isDev ? '' : String(st.size), maj: isDev ? String(major(st.rdev)) : '', min: isDev ? String(minor(st.rdev)) : '',
      date: lsDate(st.mtimeMs), name: e.name + (st.isSymbolicLink() ? ' -> ' + u.readlink(e.path) : ''),
      layer: opts.layer ? layerLabel(v, u.origin(e.path).layers[0]) : '', blocks: st.blocks,
    };
  });
  const w = (k: 'nlink' | 'user' | 'group' | 'size' | 'maj' | 'min') => Math.max(0, ...rows.map((r) => r[k].length));
  const majW = w('maj');
  const minW = w('min');
  const sizeW = Math.max(w('size'), majW || minW ? majW + 2 + minW : 0);
  const lines: string[] = [];
  // GNU ls counts 1 KiB blocks (st_blocks is in 512-byte units).
  if (listing) lines.push(`total ${Math.ceil(rows.reduce((s, r) => s + r.blocks, 0) / 2)}`);
  for (const r of rows) {
    const size = r.maj ? `${r.maj.padStart(majW)}, ${r.min.padStart(minW)}`.padStart(sizeW) : r.size.padStart(sizeW);
    const layer = opts.layer ? ` ${r.layer}` : '';
    // Like GNU ls: names are left-aligned, bare numeric IDs right-aligned.
    const id = (s: string, width: number) => (/^\d+$/.test(s) ? s.padStart(width) : s.padEnd(width));
    lines.push(`${r.mode} ${r.nlink.padStart(w('nlink'))} ${id(r.user, w('user'))} ${id(r.group, w('group'))} ${size} ${r.date}${layer} ${r.name}`);
  }
  out.write(lines.join('\n') + '\n');
}

function statTime(ms: number, ns: bigint): string {
  const d = new Date(ms);
  const pad = (n: number, w = 2) => String(n).padStart(w, '0');
  const off = -d.getTimezoneOffset();
  const tz = `${off >= 0 ? '+' : '-'}${pad(Math.floor(Math.abs(off) / 60))}${pad(Math.abs(off) % 60)}`;
  const frac = (((ns % 1_000_000_000n) + 1_000_000_000n) % 1_000_000_000n).toString().padStart(9, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${frac} ${tz}`;
}

/** `stat` (GNU layout), plus the layer the entry comes from. `deref` follows a final symlink (stat -L). */
export function fsStat(v: ImageView, p: string, opts: { deref?: boolean }, out: Writable): void {
  const u = v.union;
  const st = opts.deref ? u.stat(p, { bigint: true }) : u.lstat(p, { bigint: true });
  const mode = Number(st.mode);
  const names = new Names(u, false);
  const uid = Number(st.uid);
  const gid = Number(st.gid);
  const file = (mode & S_IFMT) === 0o120000 ? `${p} -> ${u.readlink(p)}` : p;
  const origin = u.origin(opts.deref ? u.realpath(p) : p);
  const devLine = (mode & S_IFMT) === 0o020000 || (mode & S_IFMT) === 0o060000
    ? `Device type: ${major(Number(st.rdev))},${minor(Number(st.rdev))}` : '';
  out.write([
    `  File: ${file}`,
    `  Size: ${String(st.size).padEnd(15)} Blocks: ${String(st.blocks).padEnd(10)} IO Block: ${String(st.blksize).padEnd(6)} ${typeName(mode, Number(st.size))}`,
    `Inode: ${String(st.ino).padEnd(15)} Links: ${String(st.nlink).padEnd(10)} ${devLine}`.trimEnd(),
    `Access: (${(mode & 0o7777).toString(8).padStart(4, '0')}/${modeString(mode)})  Uid: (${String(uid).padStart(5)}/${names.user(uid).padStart(8)})   Gid: (${String(gid).padStart(5)}/${names.group(gid).padStart(8)})`,
    `Access: ${statTime(Number(st.atimeMs), st.atimeNs)}`,
    `Modify: ${statTime(Number(st.mtimeMs), st.mtimeNs)}`,
    `Change: ${statTime(Number(st.ctimeMs), st.ctimeNs)}`,
    ` Layer: ${origin.layers.map((l) => layerLabel(v, l)).join(', ')}`,
  ].join('\n') + '\n');
}

/** `cat`: the files' contents, following symlinks. */
export async function fsCat(v: ImageView, paths: string[], out: Writable): Promise<void> {
  for (const p of paths) {
    const st = v.union.stat(p);
    if (st.isDirectory()) throw new LaminaError('EINVAL', `${p}: Is a directory`);
    await pipeline(v.union.createReadStream(p), out, { end: false });
  }
}

/** `tree`: the hierarchy under a directory, then a count of directories and files. */
export function fsTree(v: ImageView, p: string, opts: { all?: boolean; level?: number }, out: Writable): void {
  const u = v.union;
  let dirs = 0;
  let files = 0;
  const lines: string[] = [p];
  const walk = (dir: string, prefix: string, depth: number) => {
    if (opts.level !== undefined && depth > opts.level) return;
    const names = u.readdir(dir).filter((n) => opts.all || !n.startsWith('.')).sort(byteOrder);
    names.forEach((name, i) => {
      const last = i === names.length - 1;
      const child = joinPath(dir, name);
      const st = u.lstat(child);
      let label = name;
      if (st.isSymbolicLink()) {
        const target = u.readlink(child);
        label += ` -> ${target}`;
        let isDir = false;
        try {
          isDir = u.stat(child).isDirectory();
        } catch {
          isDir = false;
        }
        if (isDir) dirs++;
        else files++;
      } else if (st.isDirectory()) {
        dirs++;
      } else {
        files++;
      }
      lines.push(prefix + (last ? '└── ' : '├── ') + label);
      if (st.isDirectory()) walk(child, prefix + (last ? '    ' : '│   '), depth + 1);
    });
  };
  if (!u.stat(p).isDirectory()) throw new LaminaError('EINVAL', `${p}: not a directory`);
  walk(p, '', 1);
  lines.push('', `${dirs} director${dirs === 1 ? 'y' : 'ies'}, ${files} file${files === 1 ? '' : 's'}`);
  out.write(lines.join('\n') + '\n');
}

const FIND_TYPES: Record<string, EntryType> = { f: 'file', d: 'dir', l: 'symlink', c: 'char', b: 'block', p: 'fifo', s: 'socket' };

/** find's -name glob: *, ? and [...] on the last path component. */
export function globRegex(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i];
    if (c === '*') re += '.*';
    else if (c === '?') re += '.';
    else if (c === '[') {
      const j = glob.indexOf(']', i + 2);
      if (j < 0) re += '\\[';
      else {
        re += '[' + glob.slice(i + 1, j).replace(/^!/, '^').replace(/\\/g, '\\\\') + ']';
        i = j;
      }
    } else if (c === '\\' && i + 1 < glob.length) re += '\\' + glob[++i];
    else re += c.replace(/[.+^${}()|\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`, 's');
}

/** `find`: every path under a directory in readdir order (the kernel's merge order), optionally filtered. */
export function fsFind(v: ImageView, p: string, opts: { name?: string; type?: string; maxdepth?: number }, out: Writable): void {
  const u = v.union;
  const nameRe = opts.name !== undefined ? globRegex(opts.name) : undefined;
  const types = opts.type?.split(',').map((t) => {
    const e = FIND_TYPES[t];
    if (!e) throw new LaminaError('EINVAL', `find: unknown type "${t}" (use f, d, l, c, b, p, s)`);
    return e;
  });
  const lines: string[] = [];
  const visit = (path: string, type: EntryType, depth: number) => {
    if ((!nameRe || nameRe.test(baseName(path))) && (!types || types.includes(type))) lines.push(path);
    if (type !== 'dir' || (opts.maxdepth !== undefined && depth >= opts.maxdepth)) return;
    for (const e of u.readdirTypes(path)) visit(joinPath(path, e.name), e.type, depth + 1);
  };
  const st = u.lstat(p);
  visit(p, st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isFile() ? 'file' : 'unknown', 0);
  out.write(lines.map((l) => l + '\n').join(''));
}

/** Which layer provides a path, and which lower layers it shadows (or, for a directory, merges). */
export function fsWhich(v: ImageView, p: string, out: Writable): void {
  const o = v.union.origin(p);
  const lines: string[] = [];
  const layerDesc = (l: number) => `${layerLabel(v, l)} ${v.layers[l].dir}`;
  if (o.type === 'dir' && o.layers.length > 1) {
    lines.push(`${o.path}: directory merged from ${o.layers.length} layers:`);
    for (const l of o.layers) lines.push(`  ${layerDesc(l)}`);
  } else {
    lines.push(`${o.path}: ${o.type} from ${layerDesc(o.layers[0])}`);
  }
  if (o.shadowed.length) {
    lines.push('shadows:');
    for (const s of o.shadowed) lines.push(`  ${layerLabel(v, s.layer)}: ${s.type === 'whiteout' ? 'a whiteout' : s.type}`);
  }
  out.write(lines.join('\n') + '\n');
}

// ------------------------------------------------------------------ commander wiring

/**
 * Adds `fs` (ls, stat, cat, tree, find, which) to the program. main.ts calls this once; the
 * store is opened only when a subcommand runs.
 */
export function registerFsCommands(program: Command, getStore: () => Promise<Store>, out: Writable = process.stdout): Command {
  const fsCmd = program.command('fs').description('Look inside a container or an image without mounting it (CONTAINER|IMAGE[:/path])');
  const open = async (target: string) => {
    const { ref, path } = parseTarget(target);
    return { view: await openTarget(await getStore(), ref), path };
  };
  fsCmd.command('ls').description('List a directory, like ls').argument('<target>', 'CONTAINER|IMAGE[:/path]')
    .option('-l', 'long listing format').option('-a, --all', 'do not ignore entries starting with .')
    .option('-n, --numeric-uid-gid', 'like -l, with numeric user and group IDs')
    .option('-d, --directory', 'list directories themselves, not their contents')
    .option('--layer', 'with -l: show the layer each entry comes from')
    .action(async (target: string, o) => {
      const { view, path } = await open(target);
      fsLs(view, path, { long: o.l, all: o.all, numeric: o.numericUidGid, directory: o.directory, layer: o.layer }, out);
    });
  fsCmd.command('stat').description('Display file status, like stat').argument('<target>', 'CONTAINER|IMAGE:/path')
    .option('-L, --dereference', 'follow links')
    .action(async (target: string, o) => {
      const { view, path } = await open(target);
      fsStat(view, path, { deref: o.dereference }, out);
    });
  fsCmd.command('cat').description('Print files, like cat').argument('<target>', 'CONTAINER|IMAGE:/path').argument('[more...]', 'more /paths in the same container or image')
    .action(async (target: string, more: string[]) => {
      const { view, path } = await open(target);
      await fsCat(view, [path, ...more], out);
    });
  fsCmd.command('tree').description('Show a directory tree, like tree').argument('<target>', 'CONTAINER|IMAGE[:/path]')
    .option('-a', 'all files, including hidden ones').option('-L <level>', 'descend at most LEVEL directories', (s) => Number(s))
    .action(async (target: string, o) => {
      const { view, path } = await open(target);
      fsTree(view, path, { all: o.a, level: o.L }, out);
    });
  fsCmd.command('find').description('Walk a directory tree, like find').argument('<target>', 'CONTAINER|IMAGE[:/path]')
    .option('--name <glob>', 'base name matches a shell pattern').option('--type <types>', 'f, d, l, c, b, p, s (comma separated)')
    .option('--maxdepth <n>', 'descend at most N levels', (s) => Number(s))
    .action(async (target: string, o) => {
      const { view, path } = await open(target);
      fsFind(view, path, { name: o.name, type: o.type, maxdepth: o.maxdepth }, out);
    });
  fsCmd.command('which').description('Show which layer provides a path and which layers it shadows').argument('<target>', 'CONTAINER|IMAGE:/path')
    .action(async (target: string) => {
      const { view, path } = await open(target);
      fsWhich(view, path, out);
    });
  return fsCmd;
}
