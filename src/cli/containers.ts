// Container commands: create, ps, inspect, rename, rm.
import path from 'node:path';
import type { Store } from '../store.js';
import type { Container } from '../containers/store.js';
import { LaminaError } from '../errors.js';
import { marshalGo, marshalGoIndent } from '../images/gojson.js';
import { ellipsis, humanSize, renderTemplate, shortID, since, table } from './format.js';
import { inspectImage } from './images.js';

const out = (s: string) => process.stdout.write(s);

export interface CreateFlags {
  name?: string; entrypoint?: string; env?: string[]; workdir?: string; user?: string; hostname?: string;
  network?: string; volume?: string[]; readOnly?: boolean; rm?: boolean; tty?: boolean; interactive?: boolean; label?: string[];
}

export function createContainer(store: Store, image: string, cmd: string[], f: CreateFlags): Container {
  const imageID = store.resolveImage(image);
  const labels: Record<string, string> = {};
  for (const l of f.label ?? []) { const i = l.indexOf('='); labels[i < 0 ? l : l.slice(0, i)] = i < 0 ? '' : l.slice(i + 1); }
  return store.containers.create({
    name: f.name, imageRef: image, imageID, image: store.images.get(imageID), cmd,
    entrypoint: f.entrypoint !== undefined ? (f.entrypoint === '' ? [] : [f.entrypoint]) : undefined,
    env: f.env, workingDir: f.workdir, user: f.user, hostname: f.hostname, networkMode: f.network,
    binds: f.volume, readonlyRootfs: f.readOnly, autoRemove: f.rm, tty: f.tty, openStdin: f.interactive, labels,
  });
}

export function createCommand(store: Store, image: string, cmd: string[], f: CreateFlags): void {
  out(createContainer(store, image, cmd, f).id + '\n');
}

export function containerStatus(c: Container): { status: string; text: string } {
  const s = c.config.State;
  if (s.Running) return { status: s.Paused ? 'paused' : 'running', text: `Up ${since(s.StartedAt).replace(/ ago$/, '')}` };
  if (s.Dead) return { status: 'dead', text: 'Dead' };
  if (s.StartedAt === '0001-01-01T00:00:00Z') return { status: 'created', text: 'Created' };
  return { status: 'exited', text: `Exited (${s.ExitCode}) ${since(s.FinishedAt)}` };
}

/** Docker's GraphDriver.Data for a container: init + image lowers, rw upper. */
export function containerGraphDriver(store: Store, c: Container): Record<string, string> {
  const d = store.driver;
  const lowers = [d.diffPath(c.mount.initID), ...d.lowerDiffPaths(c.mount.initID)];
  const dir = d.dir(c.mount.mountID);
  return { LowerDir: lowers.join(':'), MergedDir: path.join(dir, 'merged'), UpperDir: path.join(dir, 'diff'), WorkDir: path.join(dir, 'work') };
}

export function inspectContainer(store: Store, c: Container): Record<string, unknown> {
  const cfg = c.config;
  const s = cfg.State;
  return {
    Id: c.id, Created: cfg.Created, Path: cfg.Path, Args: cfg.Args,
    State: { Status: containerStatus(c).status, Running: s.Running, Paused: s.Paused, Restarting: s.Restarting, OOMKilled: s.OOMKilled, Dead: s.Dead, Pid: s.Pid, ExitCode: s.ExitCode, Error: s.Error, StartedAt: s.StartedAt, FinishedAt: s.FinishedAt },
    Image: cfg.Image, ResolvConfPath: cfg.ResolvConfPath, HostnamePath: cfg.HostnamePath, HostsPath: cfg.HostsPath, LogPath: cfg.LogPath,
    Name: cfg.Name, RestartCount: cfg.RestartCount, Driver: cfg.Driver, Platform: cfg.OS, MountLabel: cfg.MountLabel,
    ProcessLabel: cfg.ProcessLabel, AppArmorProfile: cfg.AppArmorProfile, ExecIDs: null, HostConfig: c.hostConfig,
    GraphDriver: { Data: containerGraphDriver(store, c), Name: 'overlay2' },
    Mounts: [], Config: cfg.Config, NetworkSettings: cfg.NetworkSettings,
  };
}

/** `lamina inspect`: containers first, then images, as docker inspect looks them up. */
export function inspectCommand(store: Store, names: string[], opts: { format?: string; type?: string }): number {
  const found: Record<string, unknown>[] = [];
  const errors: string[] = [];
  for (const n of names) {
    let obj: Record<string, unknown> | undefined;
    if (opts.type !== 'image') {
      try { obj = inspectContainer(store, store.containers.get(store.containers.resolve(n))); } catch (e) { if (!(e instanceof LaminaError && e.code === 'ENOTFOUND')) throw e; }
    }
    if (!obj && opts.type !== 'container') {
      try { obj = inspectImage(store, store.image(store.resolveImage(n))); } catch (e) { if (!(e instanceof LaminaError && e.code === 'ENOTFOUND')) throw e; }
    }
    if (obj) found.push(obj); else errors.push(`Error: No such object: ${n}`);
  }
  if (opts.format) for (const o of found) out(renderTemplate(opts.format, o) + '\n');
  else out(marshalGoIndent(found, '    ') + '\n');
  for (const e of errors) process.stderr.write(e + '\n');
  return errors.length ? 1 : 0;
}

export async function psCommand(store: Store, opts: { all?: boolean; quiet?: boolean; noTrunc?: boolean; size?: boolean; format?: string; latest?: boolean }): Promise<void> {
  // A container whose supervisor died (killed, or a reboot) is recorded as exited first.
  await (await import('../runtime/state.js')).reconcileAll(store);
  let list = store.containers.list().filter((c) => opts.all || c.config.State.Running);
  list.sort((a, b) => Date.parse(b.config.Created) - Date.parse(a.config.Created));
  if (opts.latest) list = list.slice(0, 1);
  const rows = list.map((c) => {
    // Docker quotes arguments that contain a space.
    const command = [c.config.Path, ...c.config.Args.map((a) => (a.includes(' ') ? `'${a}'` : a))].join(' ');
    const st = containerStatus(c);
    let size = '';
    if (opts.size) size = humanSize(store.containerSize(c));
    return {
      ID: opts.noTrunc ? c.id : shortID(c.id),
      Image: String(c.config.Config.Image ?? ''),
      Command: JSON.stringify(opts.noTrunc ? command : ellipsis(command, 20)),
      CreatedAt: c.config.Created,
      RunningFor: since(c.config.Created),
      Status: st.text,
      State: st.status,
      Ports: '',
      Names: c.config.Name.replace(/^\//, ''),
      Size: size,
    };
  });
  if (opts.quiet) { for (const r of rows) out(r.ID + '\n'); return; }
  if (opts.format === 'json') { for (const r of rows) out(marshalGo(r) + '\n'); return; }
  if (opts.format) { for (const r of rows) out(renderTemplate(opts.format.replace(/^table\s*/, ''), r) + '\n'); return; }
  const header = ['CONTAINER ID', 'IMAGE', 'COMMAND', 'CREATED', 'STATUS', 'PORTS', 'NAMES'];
  if (opts.size) header.push('SIZE');
  out(table([header, ...rows.map((r) => [r.ID, r.Image, r.Command, r.RunningFor, r.Status, r.Ports, r.Names, ...(opts.size ? [r.Size] : [])])]));
}

export function renameCommand(store: Store, from: string, to: string): void {
  store.containers.rename(from, to);
}

export async function rmCommand(store: Store, names: string[], opts: { force?: boolean }): Promise<number> {
  let rc = 0;
  for (const n of names) {
    try {
      await store.removeContainer(n, { force: opts.force });
      out(n + '\n');
    } catch (e) {
      if (!(e instanceof LaminaError)) throw e;
      process.stderr.write(`Error: ${e.message}\n`);
      rc = 1;
    }
  }
  return rc;
}

export async function mountCommand(store: Store, names: string[], opts: { backend?: string }): Promise<void> {
  if (names.length === 0) {
    // Like podman mount with no argument: the mounted containers and their merged dirs.
    const { mountCount } = await import('../mount/index.js');
    for (const c of store.containers.list()) {
      if (mountCount(store.driver.mountSpec(c.mount.mountID)) > 0) out(`${shortID(c.id)}  ${path.join(store.driver.dir(c.mount.mountID), 'merged')}\n`);
    }
    return;
  }
  // The userspace engine has no mount point to offer (that would take FUSE, which is what
  // fuse-overlayfs is for): it serves `lamina fs` and `lamina cp` instead, which need no mount.
  const noMount = 'lamina fs ls|cat|find|stat CONTAINER:/path reads a container and lamina cp copies in and out of it without any mount (userspace engine)';
  if (opts.backend === 'userspace') {
    throw new LaminaError('EUNSUPPORTED', `the userspace backend cannot mount: a mount point needs the kernel or FUSE (--backend kernel or fuse-overlayfs); ${noMount}`);
  }
  for (const n of names) {
    let r: { path: string; backend: string };
    try {
      r = await store.mountContainer(n, { backend: (opts.backend as 'kernel' | 'fuse-overlayfs' | 'auto' | undefined) ?? 'auto' });
    } catch (e) {
      if (e instanceof LaminaError && e.code === 'EUNSUPPORTED' && (opts.backend ?? 'auto') === 'auto') {
        throw new LaminaError('EUNSUPPORTED', `${e.message}; ${noMount}`, { cause: e });
      }
      throw e;
    }
    out(r.path + '\n');
    // Which backend made the view goes to stderr, so `cd $(lamina mount c)` keeps working.
    process.stderr.write(`mounted with ${r.backend === 'kernel' ? 'kernel overlayfs' : r.backend}\n`);
  }
}

export async function umountCommand(store: Store, names: string[]): Promise<number> {
  let rc = 0;
  for (const n of names) {
    try {
      await store.unmountContainer(n);
      out(n + '\n');
    } catch (e) {
      if (!(e instanceof LaminaError)) throw e;
      process.stderr.write(`Error: ${e.message}\n`);
      rc = 1;
    }
  }
  return rc;
}
