// Commands about what containers changed and what the store holds: diff, commit, export,
// system df, and the prunes (system, image, container). Their output follows the docker 20.10
// CLI. This module is imported at start-up, so it only wires commands; the work is loaded when a
// command runs.
import type { Command } from 'commander';
import type { Store } from '../store.js';
import type { Container } from '../containers/store.js';

type GetStore = () => Promise<Store>;

const collect = (v: string, prev: string[] = []) => [...prev, v];

/** Registers diff, commit, export, system df/prune, image prune and container prune. */
export function registerChangeCommands(program: Command, getStore: GetStore): void {
  const group = (name: string, description: string) =>
    program.commands.find((c) => c.name() === name) ?? program.command(name).description(description).enablePositionalOptions();
  const container = group('container', 'Manage containers');
  const image = group('image', 'Manage images');
  const system = group('system', 'Manage lamina');

  for (const parent of [program, container]) {
    parent.command('diff')
      .description("Inspect changes to files or directories on a container's filesystem")
      .argument('<container>')
      .option('--format <format>', "'json' prints Docker's API shape: [{\"Path\":…,\"Kind\":0|1|2}]")
      .option('--backend <backend>', 'userspace, kernel or auto: accepted for symmetry; diff reads the upper dir and never mounts', 'auto')
      .action(async (name: string, opts: { format?: string; backend?: string }) => diffCommand(await getStore(), name, opts));
    parent.command('commit')
      .description("Create a new image from a container's changes")
      .argument('<container>')
      .argument('[repository]', 'REPOSITORY[:TAG]')
      .option('-a, --author <author>', 'author (e.g., "John Hannibal Smith <hannibal@a-team.com>")')
      .option('-c, --change <instruction>', 'apply a Dockerfile instruction to the created image', collect)
      .option('-m, --message <message>', 'commit message')
      .option('-p, --pause [bool]', 'pause the container during commit (lamina runs no containers: ignored)', true)
      .option('--backend <backend>', 'userspace, kernel or auto: accepted for symmetry; commit tars the upper dir and never mounts', 'auto')
      .action(async (name: string, repo: string | undefined, opts: { author?: string; change?: string[]; message?: string; backend?: string }) =>
        commitCommand(await getStore(), name, repo, opts));
    parent.command('export')
      .description("Export a container's filesystem as a tar archive")
      .argument('<container>')
      .option('-o, --output <file>', 'write to a file, instead of STDOUT')
      .option('--backend <backend>', 'userspace (the overlay engine, no mount), kernel (a read-only overlay mount), or auto: the mount if it works, else userspace', 'auto')
      .action(async (name: string, opts: { output?: string; backend?: string }) => exportCommand(await getStore(), name, opts));
  }

  system.command('df')
    .description('Show lamina disk usage')
    .option('-v, --verbose', 'show detailed information on space usage')
    .action(async (opts: { verbose?: boolean }) => dfCommand(await getStore(), opts));
  system.command('prune')
    .description('Remove unused data')
    .option('-a, --all', 'remove all unused images not just dangling ones')
    .option('-f, --force', 'do not prompt for confirmation')
    .action(async (opts: { all?: boolean; force?: boolean }) => systemPruneCommand(await getStore(), opts));
  image.command('prune')
    .description('Remove unused images')
    .option('-a, --all', 'remove all unused images, not just dangling ones')
    .option('-f, --force', 'do not prompt for confirmation')
    .action(async (opts: { all?: boolean; force?: boolean }) => imagePruneCommand(await getStore(), opts));
  container.command('prune')
    .description('Remove all stopped containers')
    .option('-f, --force', 'do not prompt for confirmation')
    .action(async (opts: { force?: boolean }) => containerPruneCommand(await getStore(), opts));
}

const out = (s: string | Buffer) => process.stdout.write(s);

// ---------------------------------------------------------------- diff, commit, export

/**
 * --backend for diff, commit and export. diff and commit work on the upper dir alone, so every
 * backend gives the same answer without mounting; export mounts with 'kernel', never with
 * 'userspace', and with 'auto' falls back to the engine when the kernel refuses (no root).
 */
async function checkBackend(backend: string | undefined): Promise<'auto' | 'kernel' | 'userspace'> {
  const b = backend ?? 'auto';
  if (b === 'auto' || b === 'kernel' || b === 'userspace') return b;
  const { LaminaError } = await import('../errors.js');
  throw new LaminaError('EINVAL', `unknown --backend "${b}": use userspace, kernel or auto`);
}

export async function diffCommand(store: Store, name: string, opts: { format?: string; backend?: string }): Promise<void> {
  await checkBackend(opts.backend);
  const { containerChanges, KIND_LETTER, KIND_NUMBER } = await import('../containers/diff.js');
  const c = store.containers.get(store.containers.resolve(name));
  const changes = containerChanges(store, c);
  if (opts.format !== undefined) {
    if (opts.format !== 'json' && opts.format !== '{{json .}}') {
      const { LaminaError } = await import('../errors.js');
      throw new LaminaError('EINVAL', `unsupported --format "${opts.format}" for diff: use json`);
    }
    const { marshalGo } = await import('../images/gojson.js');
    out(marshalGo(changes.map((ch) => ({ Path: ch.path, Kind: KIND_NUMBER[ch.kind] }))) + '\n');
    return;
  }
  const parts: Buffer[] = [];
  for (const ch of changes) parts.push(Buffer.from(KIND_LETTER[ch.kind] + ' '), ch.raw, Buffer.from('\n'));
  out(Buffer.concat(parts));
}

export async function commitCommand(store: Store, name: string, repo: string | undefined, opts: { author?: string; change?: string[]; message?: string; backend?: string }): Promise<void> {
  await checkBackend(opts.backend);
  const { commitContainer } = await import('../containers/commit.js');
  const r = await commitContainer(store, name, { reference: repo, author: opts.author, message: opts.message, changes: opts.change ?? [] });
  out(r.id + '\n');
}

export async function exportCommand(store: Store, name: string, opts: { output?: string; backend?: string }): Promise<void> {
  const backend = await checkBackend(opts.backend);
  const { exportContainer } = await import('../containers/export.js');
  const { LaminaError } = await import('../errors.js');
  const c = store.containers.get(store.containers.resolve(name));
  if (!opts.output) {
    if (process.stdout.isTTY) throw new LaminaError('EINVAL', 'cowardly refusing to save to a terminal. Use the -o flag or redirect');
    await exportContainer(store, c, process.stdout, { keepOpen: true, backend });
    return;
  }
  // Written beside the target and renamed, so a failed export leaves no partial file.
  const fs = await import('node:fs');
  const tmp = `${opts.output}.lamina-${process.pid}.tmp`;
  try {
    await exportContainer(store, c, fs.createWriteStream(tmp), { backend });
    fs.renameSync(tmp, opts.output);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}

// ---------------------------------------------------------------- system df

export interface ImageUsage {
  id: string;
  repoTags: string[];
  repoDigests: string[];
  /** Unix seconds (Docker's ImageSummary.Created). */
  created: number;
  size: number;
  sharedSize: number;
  containers: number;
}

export interface ContainerUsage {
  id: string;
  names: string[];
  image: string;
  command: string;
  created: number;
  state: string;
  status: string;
  sizeRw: number;
}

export interface DiskUsage {
  /** Sum of the sizes of all layers some image uses (Docker's LayersSize). */
  layersSize: number;
  images: ImageUsage[];
  containers: ContainerUsage[];
}

/**
 * What dockerd 20.10's SystemDiskUsage answers: the images `docker images` lists (intermediate
 * images left out) with container counts and shared sizes, every container with its rw size, and
 * the size of all layers images use.
 */
export async function diskUsage(store: Store): Promise<DiskUsage> {
  const { chainIDs } = await import('../digest/index.js');
  const { containerStatus } = await import('./containers.js');
  const records = store.listImages();
  const hasChildren = new Set(records.map((r) => r.parent).filter((p): p is string => !!p));
  const containers = store.containers.list();
  const chainsOf = (diffIDs: string[]) => chainIDs(diffIDs);
  const layerSize = new Map(store.layers.list().map((l) => [l.chainID, l.size]));

  // Layers counted in LayersSize: those of every image but untagged intermediate ones.
  const used = new Set<string>();
  const listed: Array<{ rec: (typeof records)[number]; chains: string[] }> = [];
  for (const rec of records) {
    const intermediate = rec.repoTags.length === 0 && rec.repoDigests.length === 0 && hasChildren.has(rec.id);
    if (intermediate) continue;
    const chains = chainsOf(rec.config.rootfs.diff_ids);
    for (const ch of chains) used.add(ch);
    listed.push({ rec, chains });
  }
  const refs = new Map<string, number>();
  for (const { chains } of listed) for (const ch of chains) refs.set(ch, (refs.get(ch) ?? 0) + 1);
  let layersSize = 0;
  for (const [chain, size] of layerSize) if (used.has(chain)) layersSize += size;

  const images: ImageUsage[] = listed.map(({ rec, chains }) => {
    let shared = 0;
    for (const ch of chains) if ((refs.get(ch) ?? 0) > 1) shared += layerSize.get(ch) ?? 0;
    const created = rec.config.created ? Math.floor(Date.parse(rec.config.created) / 1000) : 0;
    return {
      id: rec.id,
      repoTags: rec.repoTags.length || rec.repoDigests.length ? rec.repoTags : ['<none>:<none>'],
      repoDigests: rec.repoTags.length || rec.repoDigests.length ? rec.repoDigests : ['<none>@<none>'],
      created, size: rec.size, sharedSize: shared,
      containers: containers.filter((c) => c.config.Image === rec.id).length,
    };
  });
  images.sort((a, b) => b.created - a.created || (a.id < b.id ? -1 : 1));

  const cusage: ContainerUsage[] = containers.map((c) => {
    const st = containerStatus(c);
    return {
      id: c.id, names: [c.config.Name], image: String(c.config.Config.Image ?? ''), command: commandOf(c),
      created: Math.floor(Date.parse(c.config.Created) / 1000), state: st.status, status: st.text, sizeRw: store.containerSize(c),
    };
  });
  cusage.sort((a, b) => b.created - a.created || (a.id < b.id ? -1 : 1));
  return { layersSize, images, containers: cusage };
}

/** Docker's container Command: Path and Args, arguments with a space single-quoted. */
function commandOf(c: Container): string {
  const args = c.config.Args.map((a) => (a.includes(' ') ? `'${a}'` : a));
  return args.length ? `${c.config.Path} ${args.join(' ')}` : c.config.Path;
}

const isActive = (state: string) => state.includes('running') || state.includes('paused') || state.includes('restarting');

export async function dfCommand(store: Store, opts: { verbose?: boolean }): Promise<void> {
  const { humanSize, humanDuration, table, shortID, ellipsis } = await import('./format.js');
  const du = await diskUsage(store);
  // go-units HumanSize has 4 significant digits; the per-row SIZE of -v containers has 3.
  const human = (n: number) => humanSize(n, 4);
  const ago = (sec: number) => humanDuration(Date.now() - sec * 1000) + ' ago';
  if (!opts.verbose) {
    let imagesUsed = 0;
    for (const i of du.images) if (i.containers !== 0) imagesUsed += i.size - i.sharedSize;
    const imgReclaim = du.layersSize - imagesUsed;
    const pct = (part: number, total: number) => (total > 0 ? `${human(part)} (${Math.trunc((part * 100) / total)}%)` : human(part));
    const ctrTotal = du.containers.reduce((s, c) => s + c.sizeRw, 0);
    const ctrReclaim = du.containers.filter((c) => !isActive(c.state)).reduce((s, c) => s + c.sizeRw, 0);
    out(table([
      ['TYPE', 'TOTAL', 'ACTIVE', 'SIZE', 'RECLAIMABLE'],
      ['Images', String(du.images.length), String(du.images.filter((i) => i.containers > 0).length), human(du.layersSize), pct(imgReclaim, du.layersSize)],
      ['Containers', String(du.containers.length), String(du.containers.filter((c) => isActive(c.state)).length), human(ctrTotal), pct(ctrReclaim, ctrTotal)],
      ['Local Volumes', '0', '0', '0B', '0B'],
      ['Build Cache', '0', '0', '0B', '0B'],
    ]));
    return;
  }
  out('Images space usage:\n\n');
  out(table([
    ['REPOSITORY', 'TAG', 'IMAGE ID', 'CREATED', 'SIZE', 'SHARED SIZE', 'UNIQUE SIZE', 'CONTAINERS'],
    ...du.images.map((i) => {
      let repo = '<none>', tag = '<none>';
      const t = i.repoTags[0];
      if (t && t !== '<none>:<none>') {
        const k = t.lastIndexOf(':');
        repo = t.slice(0, k);
        tag = t.slice(k + 1);
      }
      return [repo, tag, shortID(i.id), ago(i.created), human(i.size), human(i.sharedSize), human(i.size - i.sharedSize), String(i.containers)];
    }),
  ]));
  out('\nContainers space usage:\n\n');
  out(table([
    ['CONTAINER ID', 'IMAGE', 'COMMAND', 'LOCAL VOLUMES', 'SIZE', 'CREATED', 'STATUS', 'NAMES'],
    ...du.containers.map((c) => [
      shortID(c.id), c.image, JSON.stringify(ellipsis(c.command, 20)), '0', humanSize(c.sizeRw, 3), ago(c.created), c.status,
      c.names.map((n) => n.replace(/^\//, '')).join(','),
    ]),
  ]));
  out('\nLocal Volumes space usage:\n\n');
  out(table([['VOLUME NAME', 'LINKS', 'SIZE']]));
  out(`\nBuild cache usage: ${human(0)}\n\n`);
  out(table([['CACHE ID', 'CACHE TYPE', 'SIZE', 'CREATED', 'LAST USED', 'USAGE', 'SHARED']]));
}

// ---------------------------------------------------------------- prune

export interface PruneReport {
  deleted: string[];
  reclaimed: number;
}

/** dockerd's ContainersPrune: every container that is not running, with its rw size. */
export async function pruneContainers(store: Store, warn: (m: string) => void = () => {}): Promise<PruneReport> {
  const report: PruneReport = { deleted: [], reclaimed: 0 };
  for (const c of store.containers.list()) {
    if (c.config.State.Running) continue;
    const size = store.containerSize(c);
    try {
      await store.removeContainer(c.id);
    } catch (e) {
      warn(`failed to prune container ${c.id}: ${(e as Error).message}`);
      continue;
    }
    report.reclaimed += size;
    report.deleted.push(c.id);
  }
  return report;
}

/**
 * dockerd's ImagesPrune: dangling images (untagged, no child image), or with `all` every image
 * no container uses; each deletion also prunes parent images it leaves dangling. Images a
 * container uses are skipped quietly (a conflict), as Docker does. Reclaimed = the sizes of the
 * layers that were deleted.
 */
export async function pruneImages(store: Store, all: boolean, warn: (m: string) => void = () => {}): Promise<{ lines: string[]; reclaimed: number }> {
  const { LaminaError } = await import('../errors.js');
  const { hex } = await import('../digest/index.js');
  const layerSize = new Map(store.layers.list().map((l) => [l.chainID, l.size]));
  const lines: string[] = [];
  let reclaimed = 0;
  const children = () => {
    const m = new Map<string, number>();
    for (const id of store.images.list()) {
      const p = store.images.getMetadata(id, 'parent');
      if (p) m.set(p, (m.get(p) ?? 0) + 1);
    }
    return m;
  };
  const record = (events: Array<{ kind: string; value: string }>) => {
    for (const e of events) {
      lines.push(`${e.kind}: ${e.value}`);
      if (e.kind === 'deleted') reclaimed += layerSize.get(e.value) ?? 0;
    }
  };
  // `dangling`: decided outside the root lock, so removeImage re-checks under it that no
  // reference was added meanwhile (another process may have tagged the image).
  const tryRemove = (ref: string, dangling = false): boolean => {
    try {
      record(store.removeImage(ref, { onlyUnreferenced: dangling }));
      return true;
    } catch (e) {
      if (e instanceof LaminaError && (e.code === 'EINUSE' || e.code === 'ECONFLICT' || e.code === 'ENOTFOUND')) return false;
      warn(`failed to prune image ${ref}: ${(e as Error).message}`);
      return false;
    }
  };
  /** moby's prune of parents: delete while untagged, unused and childless. */
  const pruneParents = (parent: string | undefined) => {
    while (parent && store.images.has(parent)) {
      if (store.repositories.referencesTo(parent).length) return;
      if (store.containers.usersOf(parent).length) return;
      if (children().get(parent)) return;
      const next = store.images.getMetadata(parent, 'parent');
      if (!tryRemove(parent, true)) return;
      parent = next;
    }
  };

  const kids = children();
  const candidates = store.listImages()
    .filter((img) => all || !kids.get(img.id)) // dangling mode looks at heads only
    .filter((img) => img.repoTags.length + img.repoDigests.length > 0 || !kids.get(img.id))
    .sort((a, b) => Date.parse(b.config.created ?? '0') - Date.parse(a.config.created ?? '0'));
  for (const img of candidates) {
    if (!store.images.has(img.id)) continue;
    const parent = img.parent;
    const refs = store.repositories.referencesTo(img.id);
    if (refs.length) {
      // Dangling mode deletes only images whose references are all digests.
      if (!all && refs.some((r) => r.tag)) continue;
      let removed = false;
      for (const r of refs) removed = tryRemove(r.ref) || removed;
      if (removed && !store.images.has(img.id)) pruneParents(parent);
    } else if (tryRemove(hex(img.id), true)) {
      pruneParents(parent);
    }
  }
  return { lines, reclaimed };
}

async function confirm(message: string): Promise<boolean> {
  out(`${message} [y/N] `);
  const readline = await import('node:readline');
  const rl = readline.createInterface({ input: process.stdin });
  const answer = await new Promise<string>((resolve) => {
    rl.once('line', resolve);
    rl.once('close', () => resolve(''));
  });
  rl.close();
  process.stdin.pause();
  return answer.trim().toLowerCase() === 'y';
}

async function totalLine(reclaimed: number): Promise<string> {
  const { humanSize } = await import('./format.js');
  return `Total reclaimed space: ${humanSize(reclaimed, 4)}\n`;
}

const warn = (m: string) => process.stderr.write(`WARNING: ${m}\n`);

export async function containerPruneCommand(store: Store, opts: { force?: boolean }): Promise<void> {
  if (!opts.force && !(await confirm('WARNING! This will remove all stopped containers.\nAre you sure you want to continue?'))) return;
  const r = await pruneContainers(store, warn);
  if (r.deleted.length) out(`Deleted Containers:\n${r.deleted.map((id) => id + '\n').join('')}\n`);
  out(await totalLine(r.reclaimed));
}

export async function imagePruneCommand(store: Store, opts: { all?: boolean; force?: boolean }): Promise<void> {
  const warning = opts.all
    ? 'WARNING! This will remove all images without at least one container associated to them.\nAre you sure you want to continue?'
    : 'WARNING! This will remove all dangling images.\nAre you sure you want to continue?';
  if (!opts.force && !(await confirm(warning))) return;
  const r = await pruneImages(store, !!opts.all, warn);
  if (r.lines.length) out(`Deleted Images:\n${r.lines.map((l) => l + '\n').join('')}\n`);
  out(await totalLine(r.reclaimed));
}

export async function systemPruneCommand(store: Store, opts: { all?: boolean; force?: boolean }): Promise<void> {
  // Docker's list without networks, volumes and build cache, which lamina does not keep.
  const warnings = ['all stopped containers', opts.all ? 'all images without at least one container associated to them' : 'all dangling images'];
  const message = `WARNING! This will remove:\n${warnings.map((w) => `  - ${w}\n`).join('')}\nAre you sure you want to continue?`;
  if (!opts.force && !(await confirm(message))) return;
  const c = await pruneContainers(store, warn);
  if (c.deleted.length) out(`Deleted Containers:\n${c.deleted.map((id) => id + '\n').join('')}\n`);
  const i = await pruneImages(store, !!opts.all, warn);
  if (i.lines.length) out(`Deleted Images:\n${i.lines.map((l) => l + '\n').join('')}\n`);
  out(await totalLine(c.reclaimed + i.reclaimed));
}
