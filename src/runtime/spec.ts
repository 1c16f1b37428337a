// The OCI runtime spec (config.json) for a container, built from its config.v2.json and
// hostconfig.json the way dockerd 20.10 builds it (moby oci/defaults.go DefaultLinuxSpec plus
// daemon/oci_linux.go): Docker's default mounts, capabilities, masked and read-only paths,
// device rules and namespaces; the process from Path/Args, Env, WorkingDir and User; the
// hostname/hosts/resolv.conf files and -v binds mounted over the rootfs (the merged overlay).
// Not mirrored: the seccomp and AppArmor profiles, and libnetwork's prestart hook.
import { LaminaError } from '../errors.js';
import type { ExecUser } from './user.js';
import type { NetworkFiles } from './netfiles.js';

export interface OciMount { destination: string; type: string; source: string; options?: string[] }
export interface OciProcess {
  terminal?: boolean;
  consoleSize?: { height: number; width: number };
  user: { uid: number; gid: number; additionalGids?: number[] };
  args: string[];
  env: string[];
  cwd: string;
  capabilities: { bounding: string[]; effective: string[]; inheritable: string[]; permitted: string[] };
  oomScoreAdj?: number;
}
export interface OciSpec {
  ociVersion: string;
  process: OciProcess;
  root: { path: string; readonly?: boolean };
  hostname?: string;
  mounts: OciMount[];
  linux: Record<string, unknown>;
}

export const DEFAULT_PATH_ENV = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** moby oci/caps DefaultCapabilities, in its order. */
export const DEFAULT_CAPABILITIES = [
  'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FSETID', 'CAP_FOWNER', 'CAP_MKNOD', 'CAP_NET_RAW', 'CAP_SETGID',
  'CAP_SETUID', 'CAP_SETFCAP', 'CAP_SETPCAP', 'CAP_NET_BIND_SERVICE', 'CAP_SYS_CHROOT', 'CAP_KILL', 'CAP_AUDIT_WRITE',
];

const ALL_CAPABILITIES = [
  'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_DAC_READ_SEARCH', 'CAP_FOWNER', 'CAP_FSETID', 'CAP_KILL', 'CAP_SETGID', 'CAP_SETUID',
  'CAP_SETPCAP', 'CAP_LINUX_IMMUTABLE', 'CAP_NET_BIND_SERVICE', 'CAP_NET_BROADCAST', 'CAP_NET_ADMIN', 'CAP_NET_RAW',
  'CAP_IPC_LOCK', 'CAP_IPC_OWNER', 'CAP_SYS_MODULE', 'CAP_SYS_RAWIO', 'CAP_SYS_CHROOT', 'CAP_SYS_PTRACE', 'CAP_SYS_PACCT',
  'CAP_SYS_ADMIN', 'CAP_SYS_BOOT', 'CAP_SYS_NICE', 'CAP_SYS_RESOURCE', 'CAP_SYS_TIME', 'CAP_SYS_TTY_CONFIG', 'CAP_MKNOD',
  'CAP_LEASE', 'CAP_AUDIT_WRITE', 'CAP_AUDIT_CONTROL', 'CAP_SETFCAP', 'CAP_MAC_OVERRIDE', 'CAP_MAC_ADMIN', 'CAP_SYSLOG',
  'CAP_WAKE_ALARM', 'CAP_BLOCK_SUSPEND', 'CAP_AUDIT_READ',
];

export const DEFAULT_MASKED_PATHS = [
  '/proc/asound', '/proc/acpi', '/proc/kcore', '/proc/keys', '/proc/latency_stats', '/proc/timer_list',
  '/proc/timer_stats', '/proc/sched_debug', '/proc/scsi', '/sys/firmware',
];
export const DEFAULT_READONLY_PATHS = ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'];

/** Device cgroup rules of DefaultLinuxSpec: deny all, allow null/zero/full/random/urandom/tty/console, deny fuse. */
const DEFAULT_DEVICE_RULES = [
  { allow: false, access: 'rwm' },
  { allow: true, type: 'c', major: 1, minor: 5, access: 'rwm' },
  { allow: true, type: 'c', major: 1, minor: 3, access: 'rwm' },
  { allow: true, type: 'c', major: 1, minor: 9, access: 'rwm' },
  { allow: true, type: 'c', major: 1, minor: 8, access: 'rwm' },
  { allow: true, type: 'c', major: 5, minor: 0, access: 'rwm' },
  { allow: true, type: 'c', major: 5, minor: 1, access: 'rwm' },
  { allow: false, type: 'c', major: 10, minor: 229, access: 'rwm' },
];

function defaultMounts(shmSize: number): OciMount[] {
  return [
    { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
    { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
    { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'] },
    { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
    { destination: '/sys/fs/cgroup', type: 'cgroup', source: 'cgroup', options: ['ro', 'nosuid', 'noexec', 'nodev'] },
    { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
    { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', `size=${shmSize}`] },
  ];
}

/** A -v HOST:CTR[:OPTS] bind as moby parses it (bind mounts only: lamina has no named volumes). */
export interface Bind { source: string; destination: string; readonly: boolean; propagation: string }

const PROPAGATIONS = new Set(['private', 'rprivate', 'shared', 'rshared', 'slave', 'rslave']);

export function parseBind(spec: string): Bind {
  const parts = spec.split(':');
  if (parts.length < 2 || parts.length > 3 || !parts[0] || !parts[1]) {
    throw new LaminaError('EINVAL', `invalid volume specification: '${spec}'`);
  }
  const [source, destination, opts = ''] = parts;
  if (!source.startsWith('/')) {
    throw new LaminaError('EUNSUPPORTED', `invalid volume specification: '${spec}': named volumes are not supported, the source must be an absolute host path`);
  }
  if (!destination.startsWith('/')) throw new LaminaError('EINVAL', `invalid volume specification: '${spec}': invalid mount config: the destination must be an absolute path`);
  if (destination === '/') throw new LaminaError('EINVAL', `invalid volume specification: '${spec}': invalid mount config: destination can't be '/'`);
  const b: Bind = { source, destination: destination.replace(/\/+$/, ''), readonly: false, propagation: 'rprivate' };
  for (const o of opts ? opts.split(',') : []) {
    if (o === 'ro') b.readonly = true;
    else if (o === 'rw') b.readonly = false;
    else if (PROPAGATIONS.has(o)) b.propagation = o;
    else if (o !== 'z' && o !== 'Z' && o !== 'nocopy') throw new LaminaError('EINVAL', `invalid volume specification: '${spec}': invalid mode: ${o}`);
  }
  return b;
}

/**
 * Docker's CreateDaemonEnvironment: PATH, HOSTNAME (and TERM with a tty) first, then the
 * container's Env replacing same-named entries or appending; an entry without "=" removes one.
 */
export function containerEnv(hostname: string, tty: boolean, env: readonly string[]): string[] {
  const out = [`PATH=${DEFAULT_PATH_ENV}`, `HOSTNAME=${hostname}`];
  if (tty) out.push('TERM=xterm');
  return replaceOrAppendEnv(out, env);
}

export function replaceOrAppendEnv(base: string[], overrides: readonly string[]): string[] {
  const out = [...base];
  for (const kv of overrides) {
    const eq = kv.indexOf('=');
    const key = eq < 0 ? kv : kv.slice(0, eq);
    const i = out.findIndex((e) => (e.indexOf('=') < 0 ? e : e.slice(0, e.indexOf('='))) === key);
    if (eq < 0) {
      if (i >= 0) out.splice(i, 1);
    } else if (i >= 0) out[i] = kv;
    else out.push(kv);
  }
  return out;
}

/** The bounding (= effective, inheritable, permitted) set after --cap-add / --cap-drop. */
export function capabilities(capAdd: readonly string[] | null, capDrop: readonly string[] | null): string[] {
  const norm = (c: string) => {
    const u = c.toUpperCase();
    return u === 'ALL' ? u : u.startsWith('CAP_') ? u : 'CAP_' + u;
  };
  const add = (capAdd ?? []).map(norm);
  const drop = (capDrop ?? []).map(norm);
  let caps = add.includes('ALL') ? [...ALL_CAPABILITIES] : [...DEFAULT_CAPABILITIES];
  for (const c of add) {
    if (c === 'ALL') continue;
    if (!ALL_CAPABILITIES.includes(c)) throw new LaminaError('EINVAL', `unknown capability: "${c}"`);
    if (!caps.includes(c)) caps.push(c);
  }
  if (drop.includes('ALL')) caps = caps.filter((c) => add.includes(c));
  else caps = caps.filter((c) => !drop.includes(c));
  return caps;
}

export interface SpecInput {
  /** The container's cgroup (see paths.ts cgroupsPath). */
  cgroupsPath: string;
  /** The merged rootfs. */
  rootfs: string;
  /** argv: config.v2.json Path + Args. */
  args: string[];
  /** Config.Env. */
  env: string[];
  workingDir: string;
  hostname: string;
  tty: boolean;
  user: ExecUser;
  networkMode: string;
  readonlyRootfs: boolean;
  shmSize: number;
  binds: Bind[];
  networkFiles: NetworkFiles;
  capAdd?: string[] | null;
  capDrop?: string[] | null;
  maskedPaths?: string[] | null;
  readonlyPaths?: string[] | null;
}

/** Path depth as moby's mount sort counts it (number of components of the cleaned path). */
function depth(p: string): number {
  return p.split('/').filter(Boolean).length;
}

export function buildSpec(i: SpecInput): OciSpec {
  const caps = capabilities(i.capAdd ?? null, i.capDrop ?? null);
  const userMounts: OciMount[] = [];
  const bindOptions = (ro: boolean, propagation: string) => ['rbind', ...(ro ? ['ro'] : []), propagation];
  // Network files first (resolv.conf, hostname, hosts as in moby's NetworkMounts), then binds;
  // a bind onto one of the same destinations replaces it.
  const net = i.networkFiles;
  const netMounts: Array<[string, string]> = [['/etc/resolv.conf', net.resolvConfPath], ['/etc/hostname', net.hostnamePath], ['/etc/hosts', net.hostsPath]];
  const bindDests = new Set(i.binds.map((b) => b.destination));
  for (const [dest, src] of netMounts) {
    if (!bindDests.has(dest)) userMounts.push({ destination: dest, type: 'bind', source: src, options: bindOptions(i.readonlyRootfs, 'rprivate') });
  }
  for (const b of i.binds) userMounts.push({ destination: b.destination, type: 'bind', source: b.source, options: bindOptions(b.readonly, b.propagation) });
  // Parents before children (a stable sort by depth, as moby sorts its mounts).
  userMounts.sort((a, b) => depth(a.destination) - depth(b.destination));
  const userDests = new Set(userMounts.map((m) => m.destination));
  const overridesDev = userDests.has('/dev');
  const mounts = defaultMounts(i.shmSize).filter((m) => !userDests.has(m.destination) && !(overridesDev && m.destination.startsWith('/dev/')));
  if (i.readonlyRootfs) {
    for (const m of mounts) {
      if (['/proc', '/dev/pts', '/dev/shm', '/dev/mqueue', '/dev'].includes(m.destination)) continue;
      if (!m.options?.includes('ro')) m.options = [...(m.options ?? []), 'ro'];
    }
  }
  mounts.push(...userMounts);

  const namespaces = [{ type: 'mount' }, ...(i.networkMode === 'host' ? [] : [{ type: 'network' }]), { type: 'uts' }, { type: 'pid' }, { type: 'ipc' }];
  const process: OciProcess = {
    terminal: i.tty || undefined,
    user: { uid: i.user.uid, gid: i.user.gid, ...(i.user.additionalGids.length ? { additionalGids: i.user.additionalGids } : {}) },
    args: i.args,
    env: containerEnv(i.hostname, i.tty, i.env),
    cwd: i.workingDir || '/',
    capabilities: { bounding: caps, effective: [...caps], inheritable: [...caps], permitted: [...caps] },
    oomScoreAdj: 0,
  };
  if (!process.terminal) delete process.terminal;
  const linux: Record<string, unknown> = {
    resources: { devices: DEFAULT_DEVICE_RULES.map((r) => ({ ...r })) },
    cgroupsPath: i.cgroupsPath,
    namespaces,
    maskedPaths: i.maskedPaths ?? DEFAULT_MASKED_PATHS,
    readonlyPaths: i.readonlyPaths ?? DEFAULT_READONLY_PATHS,
  };
  return {
    ociVersion: '1.0.2-dev',
    process,
    root: { path: i.rootfs, ...(i.readonlyRootfs ? { readonly: true } : {}) },
    hostname: i.hostname,
    mounts,
    linux,
  };
}
