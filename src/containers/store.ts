// <root>/containers/<id>/{config.v2.json,hostconfig.json}: container records as dockerd keeps
// them, and the container lifecycle on top of the layer store: create (init layer + rw layer +
// layerdb/mounts entry + record), rename, rm. Only this module writes under <root>/containers.
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { LaminaError } from '../errors.js';
import { chainIDs, type Digest } from '../digest/index.js';
import { marshalGo, goNow } from '../images/gojson.js';
import { goContainerConfig } from '../images/config.js';
import type { ImageConfig } from '../images/imagedb.js';
import { generateID, type Overlay2Driver } from '../overlay2/driver.js';
import type { LayerStore, MountRecord } from '../layers/store.js';
import { faultPoint, fsyncDir, removeDeadTempFiles, syncFileSystems, writeFileAtomic } from '../fsutil.js';
import { isDirLocked, RootLock } from '../lock.js';
import { setupInitLayer } from './initlayer.js';
import { NAME_RE, randomName } from './names.js';

const ZERO_TIME = '0001-01-01T00:00:00Z';

export interface ContainerState {
  Running: boolean; Paused: boolean; Restarting: boolean; OOMKilled: boolean; RemovalInProgress: boolean; Dead: boolean;
  Pid: number; ExitCode: number; Error: string; StartedAt: string; FinishedAt: string; Health: unknown;
}

/** config.v2.json, with Docker's top-level keys (values typed loosely: they round-trip). */
export interface ContainerConfigV2 {
  StreamConfig: Record<string, never>;
  State: ContainerState;
  ID: string;
  Created: string;
  Managed: boolean;
  Path: string;
  Args: string[];
  Config: Record<string, unknown>;
  Image: Digest;
  NetworkSettings: Record<string, unknown>;
  LogPath: string;
  Name: string;
  Driver: string;
  OS: string;
  MountLabel: string;
  ProcessLabel: string;
  RestartCount: number;
  HasBeenStartedBefore: boolean;
  HasBeenManuallyStopped: boolean;
  MountPoints: Record<string, unknown>;
  SecretReferences: unknown;
  ConfigReferences: unknown;
  AppArmorProfile: string;
  HostnamePath: string;
  HostsPath: string;
  ShmPath: string;
  ResolvConfPath: string;
  SeccompProfile: string;
  NoNewPrivileges: boolean;
  LocalLogCacheMeta: { HaveNotifyEnabled: boolean };
  [key: string]: unknown;
}

export interface Container {
  id: string;
  config: ContainerConfigV2;
  hostConfig: Record<string, unknown>;
  mount: MountRecord;
}

export interface CreateOptions {
  name?: string;
  /** The reference as the user typed it (Config.Image). */
  imageRef: string;
  imageID: Digest;
  image: ImageConfig;
  cmd?: string[];
  entrypoint?: string[];
  env?: string[];
  workingDir?: string;
  user?: string;
  hostname?: string;
  networkMode?: string;
  binds?: string[];
  readonlyRootfs?: boolean;
  autoRemove?: boolean;
  tty?: boolean;
  openStdin?: boolean;
  labels?: Record<string, string>;
}

/** Docker's hostconfig.json for a container created with defaults (spec §6 fixture). */
function defaultHostConfig(o: CreateOptions): Record<string, unknown> {
  return {
    Binds: o.binds?.length ? o.binds : null, ContainerIDFile: '', LogConfig: { Type: 'json-file', Config: {} },
    NetworkMode: o.networkMode ?? 'default', PortBindings: {}, RestartPolicy: { Name: 'no', MaximumRetryCount: 0 },
    AutoRemove: !!o.autoRemove, VolumeDriver: '', VolumesFrom: null, CapAdd: null, CapDrop: null, CgroupnsMode: 'host',
    Dns: [], DnsOptions: [], DnsSearch: [], ExtraHosts: null, GroupAdd: null, IpcMode: 'private', Cgroup: '', Links: null,
    OomScoreAdj: 0, PidMode: '', Privileged: false, PublishAllPorts: false, ReadonlyRootfs: !!o.readonlyRootfs,
    SecurityOpt: null, UTSMode: '', UsernsMode: '', ShmSize: 67108864, Runtime: 'runc', ConsoleSize: [0, 0],
    Isolation: '', CpuShares: 0, Memory: 0, NanoCpus: 0, CgroupParent: '', BlkioWeight: 0, BlkioWeightDevice: [],
    BlkioDeviceReadBps: null, BlkioDeviceWriteBps: null, BlkioDeviceReadIOps: null, BlkioDeviceWriteIOps: null,
    CpuPeriod: 0, CpuQuota: 0, CpuRealtimePeriod: 0, CpuRealtimeRuntime: 0, CpusetCpus: '', CpusetMems: '',
    Devices: [], DeviceCgroupRules: null, DeviceRequests: null, KernelMemory: 0, KernelMemoryTCP: 0,
    MemoryReservation: 0, MemorySwap: 0, MemorySwappiness: null, OomKillDisable: false, PidsLimit: null,
    Ulimits: null, CpuCount: 0, CpuPercent: 0, IOMaximumIOps: 0, IOMaximumBandwidth: 0,
    MaskedPaths: ['/proc/asound', '/proc/acpi', '/proc/kcore', '/proc/keys', '/proc/latency_stats', '/proc/timer_list', '/proc/timer_stats', '/proc/sched_debug', '/proc/scsi', '/sys/firmware'],
    ReadonlyPaths: ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'],
  };
}

export class ContainerStore {
  readonly dir: string;
  private readonly driver: Overlay2Driver;
  private readonly layers: LayerStore;
  /** The root lock; Store sets the shared one. */
  lock: RootLock;
  /** Whether an image exists (Store sets it): create re-checks it under the lock. */
  imageExists: (id: Digest) => boolean = () => true;

  constructor(dir: string, driver: Overlay2Driver, layers: LayerStore) {
    this.dir = dir;
    this.driver = driver;
    this.layers = layers;
    this.lock = new RootLock(path.dirname(dir));
  }

  init(): void {
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o710 });
  }

  private containerDir(id: string): string {
    return path.join(this.dir, id);
  }

  ids(): string[] {
    try {
      return fs.readdirSync(this.dir).filter((n) => /^[0-9a-f]{64}$/.test(n));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
  }

  get(id: string): Container {
    const dir = this.containerDir(id);
    let config: ContainerConfigV2;
    try {
      config = JSON.parse(fs.readFileSync(path.join(dir, 'config.v2.json'), 'utf8'));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new LaminaError('ENOTFOUND', `No such container: ${id}`);
      throw new LaminaError('EBADINPUT', `${dir}/config.v2.json is not valid JSON: ${(e as Error).message}`);
    }
    let hostConfig: Record<string, unknown>;
    try {
      hostConfig = JSON.parse(fs.readFileSync(path.join(dir, 'hostconfig.json'), 'utf8')) as Record<string, unknown>;
    } catch (e) {
      // Removed by another process between the two reads (rm renames the dir away first).
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new LaminaError('ENOTFOUND', `No such container: ${id}`);
      throw e;
    }
    const mount = this.layers.getMount(id);
    if (!mount) throw new LaminaError('ENOTFOUND', `container ${id} has no layerdb/mounts entry`);
    return { id, config, hostConfig, mount };
  }

  list(): Container[] {
    const out: Container[] = [];
    for (const id of this.ids()) {
      try {
        out.push(this.get(id));
      } catch (e) {
        if (!(e instanceof LaminaError && e.code === 'ENOTFOUND')) throw e;
      }
    }
    return out;
  }

  /** Resolves a full ID, a unique ID prefix or a name (with or without the leading "/"). */
  resolve(idOrName: string): string {
    if (/^[0-9a-f]{64}$/.test(idOrName) && fs.existsSync(this.containerDir(idOrName))) return idOrName;
    const all = this.list();
    const byName = all.find((c) => c.config.Name === '/' + idOrName.replace(/^\//, ''));
    if (byName) return byName.id;
    if (/^[0-9a-f]+$/.test(idOrName)) {
      const m = all.filter((c) => c.id.startsWith(idOrName));
      if (m.length === 1) return m[0].id;
      if (m.length > 1) throw new LaminaError('ECONFLICT', `multiple IDs found with provided prefix: ${idOrName}`);
    }
    throw new LaminaError('ENOTFOUND', `No such container: ${idOrName}`);
  }

  /** Writes config.v2.json (0600) and hostconfig.json (0644) atomically. */
  save(c: { id: string; config: ContainerConfigV2; hostConfig: Record<string, unknown> }): void {
    const dir = this.containerDir(c.id);
    writeFileAtomic(path.join(dir, 'config.v2.json'), marshalGo(c.config), 0o600);
    writeFileAtomic(path.join(dir, 'hostconfig.json'), marshalGo(c.hostConfig), 0o644);
  }

  /**
   * `lamina create`: the init layer and the rw layer on top of the image's top layer, the
   * layerdb/mounts entry, then the record, published last with one rename (until then the
   * container does not exist). On failure everything made so far is removed.
   */
  create(o: CreateOptions): Container {
    // Under the root lock: the name check, the image and its layers must hold until published.
    return this.lock.hold(() => this.createLocked(o));
  }

  private createLocked(o: CreateOptions): Container {
    if (!this.imageExists(o.imageID)) throw new LaminaError('ENOTFOUND', `No such image: ${o.imageRef}`);
    let name = o.name;
    const taken = new Set(this.list().map((c) => c.config.Name));
    if (name !== undefined) {
      if (!NAME_RE.test(name)) throw new LaminaError('EINVAL', `Invalid container name (${name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed`);
      name = name.replace(/^\//, '');
      if (taken.has('/' + name)) {
        const other = this.list().find((c) => c.config.Name === '/' + name)!;
        throw new LaminaError('ECONFLICT', `Conflict. The container name "/${name}" is already in use by container "${other.id}". You have to remove (or rename) that container to be able to reuse that name.`);
      }
    } else {
      name = randomName((n) => taken.has('/' + n));
    }
    const id = generateID();
    const mountID = generateID();
    const initID = `${mountID}-init`;
    const diffIDs = o.image.rootfs.diff_ids;
    const top = diffIDs.length ? chainIDs(diffIDs)[diffIDs.length - 1] : undefined;
    if (top && !this.layers.has(top)) throw new LaminaError('ENOTFOUND', `No such image: ${o.imageRef} (its layer ${top} is gone)`);
    const topLayer = top ? this.layers.get(top) : undefined;
    // The stage is made first and named after the mount id: a crash at any later step leaves a
    // dir that tells recover() which layer dirs and mounts entry to drop.
    const stage = path.join(this.dir, `.create-${mountID}`);
    let step = 0;
    try {
      const config = this.buildConfig(id, name, o);
      fs.mkdirSync(stage, { mode: 0o710 });
      fs.chmodSync(stage, 0o710);
      faultPoint();
      this.driver.create(initID, topLayer?.cacheID);
      step = 1;
      const lowers = topLayer ? [this.driver.diffPath(topLayer.cacheID), ...this.driver.lowerDiffPaths(topLayer.cacheID)] : [];
      setupInitLayer(this.driver.diffPath(initID), lowers);
      faultPoint();
      this.driver.create(mountID, initID);
      step = 2;
      this.layers.saveMount(id, { mountID, initID, parent: top });
      step = 3;
      faultPoint();
      fs.writeFileSync(path.join(stage, 'config.v2.json'), marshalGo(config), { mode: 0o600 });
      fs.writeFileSync(path.join(stage, 'hostconfig.json'), marshalGo(defaultHostConfig(o)), { mode: 0o644 });
      // The record, the mounts entry and both layer dirs durable before the record is published.
      syncFileSystems(stage, this.driver.home);
      faultPoint();
      fs.renameSync(stage, this.containerDir(id));
      fsyncDir(this.dir);
      faultPoint();
      return this.get(id);
    } catch (e) {
      fs.rmSync(stage, { recursive: true, force: true });
      if (step >= 3) this.layers.deleteMount(id);
      if (step >= 2) this.driver.remove(mountID);
      if (step >= 1 || this.driver.exists(initID)) this.driver.remove(initID);
      throw e;
    }
  }

  private buildConfig(id: string, name: string, o: CreateOptions): ContainerConfigV2 {
    const img = (o.image.config ?? {}) as Record<string, unknown>;
    const entrypoint = o.entrypoint ?? (img.Entrypoint as string[] | null) ?? null;
    const cmd = o.cmd?.length ? o.cmd : o.entrypoint ? null : ((img.Cmd as string[] | null) ?? null);
    const argv = [...(entrypoint ?? []), ...(cmd ?? [])];
    if (argv.length === 0) throw new LaminaError('EINVAL', 'No command specified');
    const env = [...((img.Env as string[] | null) ?? [])];
    for (const kv of o.env ?? []) {
      const k = kv.split('=')[0];
      const i = env.findIndex((e) => e.split('=')[0] === k);
      if (i >= 0) env[i] = kv; else env.push(kv);
    }
    const config = goContainerConfig({
      ...img,
      Hostname: o.hostname ?? id.slice(0, 12),
      Domainname: '',
      User: o.user ?? img.User ?? '',
      AttachStdin: !!o.openStdin, AttachStdout: true, AttachStderr: true,
      Tty: !!o.tty, OpenStdin: !!o.openStdin, StdinOnce: !!o.openStdin,
      Env: env.length ? env : null,
      Cmd: cmd,
      Image: o.imageRef,
      Volumes: img.Volumes ?? null,
      WorkingDir: o.workingDir ?? img.WorkingDir ?? '',
      Entrypoint: entrypoint,
      OnBuild: null,
      Labels: { ...((img.Labels as Record<string, string> | null) ?? {}), ...(o.labels ?? {}) },
    })!;
    return {
      StreamConfig: {},
      State: { Running: false, Paused: false, Restarting: false, OOMKilled: false, RemovalInProgress: false, Dead: false, Pid: 0, ExitCode: 0, Error: '', StartedAt: ZERO_TIME, FinishedAt: ZERO_TIME, Health: null },
      ID: id,
      Created: goNow(),
      Managed: false,
      Path: argv[0],
      Args: argv.slice(1),
      Config: config,
      Image: o.imageID,
      NetworkSettings: {
        Bridge: '', SandboxID: '', HairpinMode: false, LinkLocalIPv6Address: '', LinkLocalIPv6PrefixLen: 0,
        Networks: null, Service: null, Ports: null, SandboxKey: '', SecondaryIPAddresses: null, SecondaryIPv6Addresses: null,
        IsAnonymousEndpoint: false, HasSwarmEndpoint: false,
      },
      LogPath: '',
      Name: '/' + name,
      Driver: 'overlay2',
      OS: 'linux',
      MountLabel: '',
      ProcessLabel: '',
      RestartCount: 0,
      HasBeenStartedBefore: false,
      HasBeenManuallyStopped: false,
      MountPoints: {},
      SecretReferences: null,
      ConfigReferences: null,
      AppArmorProfile: '',
      HostnamePath: '',
      HostsPath: '',
      ShmPath: '',
      ResolvConfPath: '',
      SeccompProfile: '',
      NoNewPrivileges: false,
      LocalLogCacheMeta: { HaveNotifyEnabled: false },
    };
  }

  rename(idOrName: string, newName: string): void {
    const id = this.resolve(idOrName);
    if (!NAME_RE.test(newName)) throw new LaminaError('EINVAL', `Invalid container name (${newName}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed`);
    const n = '/' + newName.replace(/^\//, '');
    const c = this.get(id);
    if (c.config.Name === n) throw new LaminaError('EINVAL', `Renaming a container with the same name as its current name`);
    const other = this.list().find((x) => x.config.Name === n);
    if (other) throw new LaminaError('ECONFLICT', `Conflict. The container name "${n}" is already in use by container "${other.id}". You have to remove (or rename) that container to be able to reuse that name.`);
    c.config.Name = n;
    this.save(c);
  }

  /**
   * Removes the record first (renamed aside, then deleted), then the layerdb/mounts entry and
   * the init and rw layer dirs with their l/ links. The caller has unmounted the container.
   */
  remove(id: string): void {
    this.lock.hold(() => {
      const c = this.get(id);
      if (isDirLocked(this.containerDir(id))) throw new LaminaError('EINUSE', `container ${id} is in use by another lamina process (commit?)`);
      const aside = path.join(this.dir, `.removing-${id}`);
      faultPoint();
      fs.renameSync(this.containerDir(id), aside);
      // Durable before its layers go: after a power loss the container is gone or intact.
      fsyncDir(this.dir);
      faultPoint();
      // Layer dirs before the mounts entry: until the entry goes, recover() knows what to remove.
      if (this.driver.exists(c.mount.mountID)) this.driver.remove(c.mount.mountID);
      faultPoint();
      if (c.mount.initID && this.driver.exists(c.mount.initID)) this.driver.remove(c.mount.initID);
      faultPoint();
      this.layers.deleteMount(id);
      faultPoint();
      fs.rmSync(aside, { recursive: true, force: true });
    });
  }

  /** Finishes removals and creations a crash interrupted (their dot-dirs). */
  recover(): void {
    for (const n of fs.readdirSync(this.dir)) {
      const created = /^\.create-([0-9a-f]{64})$/.exec(n);
      if (created) {
        const mountID = created[1];
        for (const c of this.layers.listMounts()) {
          if (this.layers.getMount(c)?.mountID === mountID) this.layers.deleteMount(c);
        }
        for (const d of [mountID, `${mountID}-init`]) if (this.driver.exists(d)) this.driver.remove(d);
        fs.rmSync(path.join(this.dir, n), { recursive: true, force: true });
        continue;
      }
      if (n.startsWith('.create-')) fs.rmSync(path.join(this.dir, n), { recursive: true, force: true });
      const m = /^\.removing-([0-9a-f]{64})$/.exec(n);
      if (m) {
        const mount = this.layers.getMount(m[1]);
        if (mount) {
          if (this.driver.exists(mount.mountID)) this.driver.remove(mount.mountID);
          if (mount.initID && this.driver.exists(mount.initID)) this.driver.remove(mount.initID);
          this.layers.deleteMount(m[1]);
        }
        fs.rmSync(path.join(this.dir, n), { recursive: true, force: true });
      }
    }
    for (const id of this.ids()) removeDeadTempFiles(this.containerDir(id));
  }

  /** Images used by containers (by image ID), for rmi's conflict check. */
  usersOf(imageID: Digest): Container[] {
    return this.list().filter((c) => c.config.Image === imageID);
  }
}

