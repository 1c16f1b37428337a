// Image commands: load, images, image inspect, history, tag, save, rmi.
import fs from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Store, ImageRecord } from '../store.js';
import { chainIDs, hex } from '../digest/index.js';
import { LaminaError } from '../errors.js';
import { marshalGoIndent, marshalGo } from '../images/gojson.js';
import { goContainerConfig } from '../images/config.js';
import { ellipsis, humanSize, renderTemplate, shortID, since, table } from './format.js';
import { LayerProgress } from './progress.js';

const out = (s: string) => process.stdout.write(s);

export async function loadCommand(store: Store, opts: { input?: string; quiet?: boolean }): Promise<void> {
  let file = opts.input;
  let spooled: string | undefined;
  if (!file) {
    if (process.stdin.isTTY) throw new LaminaError('EINVAL', 'requested load from stdin, but stdin is empty');
    // A docker-archive needs random access (manifest.json comes last), so stdin is spooled.
    spooled = path.join(store.scratchDir('stdin'), 'archive');
    await pipeline(process.stdin, fs.createWriteStream(spooled));
    file = spooled;
  } else if (!fs.existsSync(file)) {
    throw new LaminaError('ENOTFOUND', `open ${file}: no such file or directory`);
  }
  const tty = process.stdout.isTTY && !opts.quiet;
  const progress = tty ? new LayerProgress(process.stdout) : undefined;
  const loadedBytes = new Map<string, number>();
  try {
    await store.load(file, (e) => {
      switch (e.kind) {
        case 'layer-start':
          progress?.update(shortID(e.diffID), 'Loading layer', 0, e.storedSize, true);
          break;
        case 'layer-progress':
          loadedBytes.set(e.diffID, e.bytes);
          progress?.update(shortID(e.diffID), 'Loading layer', e.bytes, e.storedSize && e.bytes <= e.storedSize ? e.storedSize : undefined);
          break;
        case 'layer-done':
          if (e.existed) progress?.update(shortID(e.diffID), 'Already exists', undefined, undefined, true);
          else progress?.update(shortID(e.diffID), 'Loading layer', loadedBytes.get(e.diffID) ?? 0, loadedBytes.get(e.diffID) ?? 0, true);
          break;
        case 'tag-moved':
          progress?.finish();
          out(`The image ${e.ref} already exists, renaming the old one with ID ${e.from} to empty string\n`);
          break;
        case 'loaded':
          progress?.finish();
          if (e.refs.length === 0) out(`Loaded image ID: ${e.id}\n`);
          for (const r of e.refs) out(`Loaded image: ${r}\n`);
          break;
      }
    });
  } finally {
    if (spooled) fs.rmSync(path.dirname(spooled), { recursive: true, force: true });
  }
}

/** The rows `lamina images` shows: one per tag, or one `<none>` row for an untagged image. */
function imageRows(store: Store, all: boolean): Array<{ img: ImageRecord; repo: string; tag: string; digest: string }> {
  const images = store.listImages();
  const parents = new Set(images.map((i) => i.parent).filter(Boolean));
  const rows: Array<{ img: ImageRecord; repo: string; tag: string; digest: string }> = [];
  for (const img of images) {
    if (img.repoTags.length === 0) {
      // Untagged images with children are intermediate build steps: shown with -a only.
      if (!all && parents.has(img.id) && img.repoDigests.length === 0) continue;
      const d = img.repoDigests[0];
      rows.push({ img, repo: d ? d.slice(0, d.indexOf('@')) : '<none>', tag: '<none>', digest: d ? d.slice(d.indexOf('@') + 1) : '<none>' });
      continue;
    }
    for (const t of img.repoTags) {
      const i = t.lastIndexOf(':');
      const repo = t.slice(0, i);
      const digest = img.repoDigests.find((d) => d.startsWith(repo + '@'));
      rows.push({ img, repo, tag: t.slice(i + 1), digest: digest ? digest.slice(digest.indexOf('@') + 1) : '<none>' });
    }
  }
  // docker sorts by creation time, newest first.
  rows.sort((a, b) => Date.parse(b.img.config.created ?? '0') - Date.parse(a.img.config.created ?? '0') || a.repo.localeCompare(b.repo) || a.tag.localeCompare(b.tag));
  return rows;
}

export function imagesCommand(store: Store, opts: { all?: boolean; quiet?: boolean; digests?: boolean; noTrunc?: boolean; format?: string; repo?: string }): void {
  let rows = imageRows(store, !!opts.all);
  if (opts.repo) {
    const [name, tag] = opts.repo.split(/:(?=[^/]*$)/);
    rows = rows.filter((r) => r.repo === name && (!tag || r.tag === tag));
  }
  const id = (img: ImageRecord) => (opts.noTrunc ? img.id : shortID(img.id));
  if (opts.quiet) {
    const seen = new Set<string>();
    for (const r of rows) if (!seen.has(r.img.id)) { seen.add(r.img.id); out(id(r.img) + '\n'); }
    return;
  }
  const fields = (r: (typeof rows)[number]) => ({
    Containers: 'N/A',
    CreatedAt: r.img.config.created ? new Date(r.img.config.created).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' +0000 UTC') : '',
    CreatedSince: since(r.img.config.created),
    Digest: r.digest,
    ID: id(r.img),
    Repository: r.repo,
    SharedSize: 'N/A',
    Size: humanSize(r.img.size),
    Tag: r.tag,
    UniqueSize: 'N/A',
    VirtualSize: humanSize(r.img.size),
  });
  if (opts.format === 'json') {
    for (const r of rows) out(marshalGo(fields(r)) + '\n');
    return;
  }
  if (opts.format) {
    const tpl = opts.format.replace(/^table\s*/, '');
    for (const r of rows) out(renderTemplate(tpl, fields(r)) + '\n');
    return;
  }
  const header = opts.digests ? ['REPOSITORY', 'TAG', 'DIGEST', 'IMAGE ID', 'CREATED', 'SIZE'] : ['REPOSITORY', 'TAG', 'IMAGE ID', 'CREATED', 'SIZE'];
  const body = rows.map((r) => {
    const f = fields(r);
    return opts.digests ? [f.Repository, f.Tag, f.Digest, f.ID, f.CreatedSince, f.Size] : [f.Repository, f.Tag, f.ID, f.CreatedSince, f.Size];
  });
  out(table([header, ...body]));
}

/** `docker image inspect`'s object for one image. */
export function inspectImage(store: Store, img: ImageRecord): Record<string, unknown> {
  const c = img.config;
  const o: Record<string, unknown> = {
    Id: img.id,
    RepoTags: img.repoTags,
    RepoDigests: img.repoDigests,
    Parent: img.parent ?? '',
    // moby falls back to the last history entry's comment (where commit -m puts it).
    Comment: c.comment ?? c.history?.[c.history.length - 1]?.comment ?? '',
    Created: c.created ?? '',
    Container: c.container ?? '',
    ContainerConfig: goContainerConfig((c.container_config as Record<string, unknown>) ?? {}),
    DockerVersion: c.docker_version ?? '',
    Author: c.author ?? '',
    Config: goContainerConfig(c.config as Record<string, unknown> | null),
    Architecture: c.architecture ?? '',
  };
  if (c.variant) o.Variant = c.variant;
  Object.assign(o, {
    Os: c.os ?? '',
    Size: img.size,
    VirtualSize: img.size,
    GraphDriver: { Data: store.graphDriverData(img.topLayer), Name: 'overlay2' },
    RootFS: { Type: c.rootfs.type, Layers: c.rootfs.diff_ids },
    Metadata: { LastTagTime: img.lastUpdated ?? '0001-01-01T00:00:00Z' },
  });
  return o;
}

export function imageInspectCommand(store: Store, refs: string[], opts: { format?: string }): number {
  const found: Record<string, unknown>[] = [];
  const errors: string[] = [];
  for (const r of refs) {
    try {
      found.push(inspectImage(store, store.image(store.resolveImage(r))));
    } catch (e) {
      if (e instanceof LaminaError && e.code === 'ENOTFOUND') errors.push(`Error: No such image: ${r}`);
      else throw e;
    }
  }
  if (opts.format) {
    for (const o of found) out(renderTemplate(opts.format, o) + '\n');
  } else {
    out(marshalGoIndent(found, '    ') + '\n');
  }
  for (const e of errors) process.stderr.write(e + '\n');
  return errors.length ? 1 : 0;
}

export function historyCommand(store: Store, ref: string, opts: { noTrunc?: boolean; quiet?: boolean; human?: boolean; format?: string }): void {
  const id = store.resolveImage(ref);
  const img = store.image(id);
  const history = img.config.history ?? [];
  const chains = chainIDs(img.config.rootfs.diff_ids);
  // Map each non-empty history step to its layer, bottom up.
  const sizes: number[] = [];
  let li = 0;
  for (const h of history) {
    if (h.empty_layer) sizes.push(0);
    else {
      const chain = chains[li++];
      sizes.push(chain && store.layers.has(chain) ? store.layers.get(chain).size : 0);
    }
  }
  const rows = history.map((h, i) => ({ h, size: sizes[i] })).reverse();
  const human = opts.human !== false;
  const body = rows.map(({ h, size }, i) => {
    const imageID = i === 0 ? (opts.noTrunc ? id : shortID(id)) : '<missing>';
    const createdBy = (h.created_by ?? '').replace(/\t/g, ' ');
    return [
      imageID,
      human ? since(h.created) : (h.created ?? ''),
      opts.noTrunc ? createdBy : ellipsis(createdBy, 45),
      human ? humanSize(size) : String(size),
      h.comment ?? '',
    ];
  });
  if (opts.quiet) {
    for (const r of body) out(r[0] + '\n');
    return;
  }
  if (opts.format) {
    for (const r of body) out(renderTemplate(opts.format.replace(/^table\s*/, ''), { ID: r[0], CreatedSince: r[1], CreatedBy: r[2], Size: r[3], Comment: r[4] }) + '\n');
    return;
  }
  out(table([['IMAGE', 'CREATED', 'CREATED BY', 'SIZE', 'COMMENT'], ...body]));
}

export async function saveCommand(store: Store, refs: string[], opts: { output?: string }): Promise<void> {
  if (!opts.output) {
    if (process.stdout.isTTY) throw new LaminaError('EINVAL', 'cowardly refusing to save to a terminal. Use the -o flag or redirect');
    await store.save(refs, process.stdout);
    return;
  }
  await store.saveToFile(refs, opts.output);
}

export function rmiCommand(store: Store, refs: string[], opts: { force?: boolean }): number {
  let rc = 0;
  for (const r of refs) {
    try {
      for (const ev of store.removeImage(r, { force: opts.force })) out(`${ev.kind === 'untagged' ? 'Untagged' : 'Deleted'}: ${ev.value}\n`);
    } catch (e) {
      if (!(e instanceof LaminaError)) throw e;
      process.stderr.write(`Error: ${e.message}\n`);
      rc = 1;
    }
  }
  return rc;
}

export function tagCommand(store: Store, source: string, target: string): void {
  store.tag(source, target);
}


