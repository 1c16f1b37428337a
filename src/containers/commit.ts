// `lamina commit`: a container's rw layer becomes a new image, as dockerd 20.10 makes it
// (daemon/commit.go CreateImageFromContainer, daemon/images/image_commit.go CommitImage,
// image/image.go NewChildImage):
//  - the layer tar is written from the upper dir in Docker's exact format (archive/write.ts)
//    and streamed into the layer store, which extracts it, records tar-split and computes the
//    diffID in the same pass; nothing is buffered whole;
//  - an empty change (the 1024-zero-byte tar, diffID 5f70bf18…) adds no layer: rootfs keeps the
//    parent's diff_ids and the history entry says empty_layer, as NewChildImage does;
//  - config = the container's config with the -c instructions applied (builder semantics), then
//    merged with the container's config; container_config = the container's config; history =
//    the parent's + {created, author, created_by: the container's Cmd joined, comment};
//    top-level keys sorted (Image.MarshalJSON goes through a map); no top-level comment (moby
//    keeps -m in the history entry only; `docker inspect` shows it from there);
//  - imagedb metadata `parent` = the source image; the tag, when given, moves to the new image.
import fs from 'node:fs';
import { constants as osConstants } from 'node:os';
import type { Digest } from '../digest/index.js';
import { chainIDs } from '../digest/index.js';
import { LaminaError } from '../errors.js';
import { writeLayerTar } from '../archive/write.js';
import { goContainerConfig } from '../images/config.js';
import { goNow, goTime, marshalGo, parseGoTime, sortKeys } from '../images/gojson.js';
import type { ImageConfig } from '../images/imagedb.js';
import { parseReference } from '../images/reference.js';
import type { Store } from '../store.js';
import { lockDir } from '../lock.js';
import path from 'node:path';

/** diffID of the empty layer tar (1024 zero bytes): moby's layer.IsEmpty. */
export const EMPTY_LAYER_DIFFID = 'sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef';

/**
 * `docker_version` written into committed configs. Docker writes its daemon version; lamina is no
 * Docker daemon, so it writes none (Go's omitempty then leaves the key out, as for any image
 * built by a non-Docker tool). Change it here if a consumer insists on the key.
 */
export const COMMIT_DOCKER_VERSION = '';

export interface CommitOptions {
  /** REPOSITORY[:TAG] to point at the new image (":latest" when no tag is given). */
  reference?: string;
  /** -m: the history entry's comment. */
  message?: string;
  /** -a: author, top-level and in the history entry. */
  author?: string;
  /** -c: Dockerfile instructions applied to the config (CMD, ENTRYPOINT, ENV, …). */
  changes?: string[];
}

export interface CommitResult {
  id: Digest;
  /** diffID of the new layer; undefined when the change was empty and no layer was added. */
  diffID?: Digest;
  /** Whether the layer store gained a layer (false when it existed or the change was empty). */
  createdLayer: boolean;
  /** The familiar name the image was tagged with. */
  tagged?: string;
}

type Config = Record<string, unknown>;

export async function commitContainer(store: Store, nameOrID: string, o: CommitOptions = {}): Promise<CommitResult> {
  const id = store.containers.resolve(nameOrID);
  // While it commits, the container can't be removed (rm sees its dir locked) and the image's
  // layers can't be deleted (pinned); a crash leaves the pin as a journal for Store.open.
  const release = store.lock.hold(() => {
    store.containers.get(id); // still there?
    let unlock: () => void;
    try {
      unlock = lockDir(path.join(store.containers.dir, id));
    } catch {
      throw new LaminaError('EINUSE', `container ${id} is in use by another lamina process`);
    }
    const image = store.containers.get(id).config.Image;
    const ids = image && store.images.has(image) ? store.images.get(image).rootfs.diff_ids : [];
    const unpin = store.layers.pin(ids.length ? [chainIDs(ids)[ids.length - 1]] : []);
    return () => { unpin(); unlock(); };
  });
  try {
    return await commitLocked(store, id, o);
  } finally {
    release();
  }
}

async function commitLocked(store: Store, id: string, o: CommitOptions): Promise<CommitResult> {
  const c = store.containers.get(id);
  const state = c.config.State;
  if (state.Dead) throw new LaminaError('ECONFLICT', `You cannot commit container ${id} which is Dead`);
  if (state.RemovalInProgress) throw new LaminaError('ECONFLICT', `You cannot commit container ${id} which is being removed`);

  // Everything that can be refused is checked before any layer is written.
  const containerConfig = c.config.Config as Config;
  const newConfig = buildFromConfig(containerConfig, o.changes ?? []);
  mergeConfig(newConfig, containerConfig);
  if (o.reference) checkReference(o.reference);
  let parent: ImageConfig | undefined;
  if (c.config.Image) parent = store.images.get(c.config.Image);

  const parentDiffIDs = parent?.rootfs.diff_ids ?? [];
  const parentChain = parentDiffIDs.length ? chainIDs(parentDiffIDs)[parentDiffIDs.length - 1] : undefined;
  const upper = store.driver.diffPath(c.mount.mountID);
  let diffID: Digest = EMPTY_LAYER_DIFFID;
  let createdLayer = false;
  // The new layer stays pinned until the image that references it is written: it may be one
  // another process registered (same change on the same parent) and is about to rmi.
  let unpinLayer = () => {};
  if (fs.readdirSync(upper).length > 0) {
    const r = await store.layers.register(parentChain, writeLayerTar(upper), { label: `the rw layer of container ${id}`, pinResult: true });
    diffID = r.layer.diffID;
    createdLayer = r.created;
    unpinLayer = r.unpin;
    // Only sockets in the upper dir give an empty tar: moby registers and releases that layer.
    if (diffID === EMPTY_LAYER_DIFFID && r.created) {
      unpinLayer();
      store.layers.delete(r.layer.chainID);
      createdLayer = false;
    }
  }
  const emptyLayer = diffID === EMPTY_LAYER_DIFFID;

  let imageID: Digest;
  try {
    const bytes = Buffer.from(childImageConfig(parent, {
      containerID: id,
      author: o.author ?? '',
      comment: o.message ?? '',
      config: newConfig,
      containerConfig,
      os: c.config.OS || 'linux',
      diffID: emptyLayer ? undefined : diffID,
    }));
    imageID = store.lock.hold(() => {
      const put = store.images.put(bytes);
      if (c.config.Image) store.images.setMetadata(put, 'parent', c.config.Image);
      // Tagged in the same locked section: until then the image is dangling to other processes
      // (an image prune there would delete it).
      if (o.reference) store.tag(put, o.reference);
      return put;
    });
  } catch (e) {
    unpinLayer();
    // Unless another process has come to rely on the layer meanwhile (found it registered).
    const chain = chainIDs([...parentDiffIDs, diffID])[parentDiffIDs.length];
    if (createdLayer) store.lock.hold(() => { if (store.layers.has(chain) && !store.isLayerReferenced(chain)) store.layers.delete(chain); });
    throw e;
  } finally {
    unpinLayer();
  }
  return { id: imageID, diffID: emptyLayer ? undefined : diffID, createdLayer, tagged: o.reference };
}

/** The docker CLI's check of REPOSITORY[:TAG] (a malformed name or a digest is refused up front). */
function checkReference(reference: string): void {
  const ref = parseReference(reference);
  if (ref.digest) throw new LaminaError('EINVAL', `refusing to create a tag with a digest reference: ${reference}`);
}

export interface ChildConfig {
  containerID: string;
  author: string;
  comment: string;
  config: Config;
  containerConfig: Config;
  os: string;
  /** The new layer's diffID; undefined for an empty layer. */
  diffID?: Digest;
  /** Creation time (Go time string); default now. */
  created?: string;
}

/** image.NewChildImage + Image.MarshalJSON: the new config's exact bytes. */
export function childImageConfig(parent: ImageConfig | undefined, child: ChildConfig): string {
  const created = child.created ?? goNow();
  const history: unknown[] = (parent?.history ?? []).map(goHistory);
  const cmd = child.containerConfig.Cmd as string[] | null | undefined;
  history.push(goHistory({
    created,
    author: child.author,
    created_by: (cmd ?? []).join(' '),
    comment: child.comment,
    empty_layer: child.diffID === undefined,
  }));
  const diffIDs = [...(parent?.rootfs.diff_ids ?? []), ...(child.diffID ? [child.diffID] : [])];
  const top = new Map<string, unknown>();
  top.set('architecture', parent?.architecture || goArch());
  if (child.author) top.set('author', child.author);
  top.set('config', goConfig(child.config));
  top.set('container', child.containerID);
  top.set('container_config', goConfig(child.containerConfig));
  top.set('created', created);
  if (COMMIT_DOCKER_VERSION) top.set('docker_version', COMMIT_DOCKER_VERSION);
  top.set('history', history);
  top.set('os', child.os);
  if (parent?.variant) top.set('variant', parent.variant);
  const osVersion = parent?.['os.version'];
  if (typeof osVersion === 'string' && osVersion) top.set('os.version', osVersion);
  const osFeatures = parent?.['os.features'];
  if (Array.isArray(osFeatures) && osFeatures.length) top.set('os.features', osFeatures);
  // RootFS.DiffIDs is omitempty.
  top.set('rootfs', diffIDs.length ? { type: 'layers', diff_ids: diffIDs } : { type: 'layers' });
  return marshalGo(top);
}

/** A history entry as Go's image.History marshals it (time normalised, empty fields omitted). */
function goHistory(h: { created?: string; author?: string; created_by?: string; comment?: string; empty_layer?: boolean }): Record<string, unknown> {
  return {
    created: h.created ? goTime(parseGoTime(h.created)) : '0001-01-01T00:00:00Z',
    author: h.author || undefined,
    created_by: h.created_by || undefined,
    comment: h.comment || undefined,
    empty_layer: h.empty_layer || undefined,
  };
}

/** A container config in Go struct order, its maps with sorted keys (Go maps). */
function goConfig(c: Config): Record<string, unknown> | null {
  const mapOrNull = (v: unknown) => (v && typeof v === 'object' ? sortKeys(v as Record<string, unknown>) : null);
  const ports = c.ExposedPorts && Object.keys(c.ExposedPorts as object).length ? sortKeys(c.ExposedPorts as Record<string, unknown>) : undefined;
  return goContainerConfig({
    ...c,
    ExposedPorts: ports,
    Healthcheck: c.Healthcheck ? goHealth(c.Healthcheck as Config) : undefined,
    Shell: Array.isArray(c.Shell) && c.Shell.length ? c.Shell : undefined,
    Volumes: mapOrNull(c.Volumes),
    Labels: mapOrNull(c.Labels),
  });
}

function goHealth(h: Config): Record<string, unknown> {
  const nz = (v: unknown) => (v ? v : undefined);
  return { Test: Array.isArray(h.Test) && h.Test.length ? h.Test : undefined, Interval: nz(h.Interval), Timeout: nz(h.Timeout), StartPeriod: nz(h.StartPeriod), Retries: nz(h.Retries) };
}

/** Go's runtime.GOARCH for this machine. */
function goArch(): string {
  const map: Record<string, string> = { x64: 'amd64', ia32: '386', arm64: 'arm64', arm: 'arm', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64', mips: 'mips', mipsel: 'mipsle', loong64: 'loong64' };
  return map[process.arch] ?? process.arch;
}

// ---------------------------------------------------------------- config merge

const isEmpty = (v: unknown) => v === null || v === undefined || (Array.isArray(v) ? v.length === 0 : typeof v === 'object' ? Object.keys(v as object).length === 0 : v === '');

/**
 * moby daemon/commit.go merge(): fills what the committed config leaves empty from the
 * container's config. Mutates `user` (Go nil = null/undefined, empty = [] / {}).
 */
export function mergeConfig(user: Config, image: Config): void {
  if (!user.User) user.User = image.User ?? '';
  if (isEmpty(user.ExposedPorts)) user.ExposedPorts = image.ExposedPorts;
  else if (image.ExposedPorts) {
    for (const p of Object.keys(image.ExposedPorts as object)) (user.ExposedPorts as Config)[p] ??= {};
  }
  if (isEmpty(user.Env)) user.Env = image.Env;
  else {
    const env = user.Env as string[];
    for (const e of (image.Env as string[] | null) ?? []) {
      const k = e.split('=')[0];
      if (!env.some((u) => u.split('=')[0] === k)) env.push(e);
    }
  }
  if (!user.Labels) user.Labels = {};
  for (const [k, v] of Object.entries((image.Labels as Record<string, string> | null) ?? {})) {
    if (!(k in (user.Labels as Config))) (user.Labels as Config)[k] = v;
  }
  if (isEmpty(user.Entrypoint)) {
    if (isEmpty(user.Cmd)) {
      user.Cmd = image.Cmd;
      user.ArgsEscaped = image.ArgsEscaped;
    }
    if (user.Entrypoint === null || user.Entrypoint === undefined) user.Entrypoint = image.Entrypoint;
  }
  if (image.Healthcheck) {
    if (!user.Healthcheck) user.Healthcheck = image.Healthcheck;
    else {
      const u = user.Healthcheck as Config, i = image.Healthcheck as Config;
      if (isEmpty(u.Test)) u.Test = i.Test;
      for (const k of ['Interval', 'Timeout', 'StartPeriod', 'Retries']) if (!u[k]) u[k] = i[k];
    }
  }
  if (!user.WorkingDir) user.WorkingDir = image.WorkingDir ?? '';
  if (isEmpty(user.Volumes)) user.Volumes = image.Volumes;
  else Object.assign(user.Volumes as Config, image.Volumes ?? {});
  if (!user.StopSignal) user.StopSignal = image.StopSignal;
}

// ---------------------------------------------------------------- -c instructions

/** The instructions `docker commit --change` accepts (moby builder validCommitCommands). */
const COMMIT_COMMANDS = new Set(['cmd', 'entrypoint', 'healthcheck', 'env', 'expose', 'label', 'onbuild', 'user', 'volume', 'workdir', 'stopsignal']);

/**
 * moby dockerfile.BuildFromConfig: applies Dockerfile instructions to a copy of `config`. With no
 * changes the config itself is returned (moby returns the same pointer, so the merge that follows
 * changes the container config too).
 */
export function buildFromConfig(config: Config, changes: readonly string[]): Config {
  if (changes.length === 0) return config;
  const lines = dockerfileLines(changes.join('\n'));
  for (const l of lines) {
    if (!COMMIT_COMMANDS.has(l.cmd)) throw new LaminaError('EINVAL', `${l.cmd} is not a valid change command`);
  }
  const cfg = structuredClone(config);
  let cmdSet = false;
  for (const l of lines) {
    const env = (cfg.Env as string[] | null) ?? [];
    const expand = (w: string) => processWord(w, env);
    switch (l.cmd) {
      case 'cmd': {
        cfg.Cmd = resolveCmdLine(l.rest, cfg);
        delete cfg.ArgsEscaped;
        if (!(Array.isArray(cfg.Cmd) && cfg.Cmd.length === 0)) cmdSet = true;
        break;
      }
      case 'entrypoint':
        cfg.Entrypoint = resolveCmdLine(l.rest, cfg);
        delete cfg.ArgsEscaped;
        if (!cmdSet) cfg.Cmd = null;
        break;
      case 'env': {
        const pairs = nameValues(l.rest, 'ENV').map(([k, v]) => [expand(k), expand(v)]);
        const out = [...env];
        for (const [k, v] of pairs) {
          const i = out.findIndex((e) => e.split('=')[0] === k);
          if (i >= 0) out[i] = `${k}=${v}`;
          else out.push(`${k}=${v}`);
        }
        cfg.Env = out;
        break;
      }
      case 'label': {
        const labels = (cfg.Labels as Record<string, string> | null) ?? {};
        for (const [k, v] of nameValues(l.rest, 'LABEL')) labels[expand(k)] = expand(v);
        cfg.Labels = labels;
        break;
      }
      case 'workdir': {
        const p = expand(l.rest.trim());
        if (!p) throw new LaminaError('EINVAL', 'WORKDIR requires exactly one argument');
        // normalizeWorkdir: a relative path is joined to the current one; an absolute one is kept as written.
        cfg.WorkingDir = p.startsWith('/') ? p : posixJoin('/', String(cfg.WorkingDir ?? ''), p);
        break;
      }
      case 'user': {
        const u = expand(l.rest.trim());
        if (!u) throw new LaminaError('EINVAL', 'USER requires exactly one argument');
        cfg.User = u;
        break;
      }
      case 'expose': {
        const words = splitWords(l.rest).map(expand);
        if (!words.length) throw new LaminaError('EINVAL', 'EXPOSE requires at least one argument');
        const ports = (cfg.ExposedPorts as Config | null) ?? {};
        for (const w of words) for (const p of parsePortSpec(w)) ports[p] = {};
        cfg.ExposedPorts = ports;
        break;
      }
      case 'volume': {
        const json = parseJSONArray(l.rest);
        const vols = (json ?? splitWords(l.rest)).map((v) => expand(v.trim()));
        if (!vols.length) throw new LaminaError('EINVAL', 'VOLUME requires at least one argument');
        const volumes = (cfg.Volumes as Config | null) ?? {};
        for (const v of vols) {
          if (!v) throw new LaminaError('EINVAL', 'VOLUME specified can not be an empty string');
          volumes[v] = {};
        }
        cfg.Volumes = volumes;
        break;
      }
      case 'stopsignal': {
        const sig = expand(l.rest.trim());
        if (!isSignal(sig)) throw new LaminaError('EINVAL', `Invalid signal: ${sig}`);
        cfg.StopSignal = sig;
        break;
      }
      case 'onbuild': {
        const trigger = l.rest.trim().split(/\s+/)[0]?.toUpperCase() ?? '';
        if (!trigger) throw new LaminaError('EINVAL', 'ONBUILD requires at least one argument');
        if (trigger === 'ONBUILD') throw new LaminaError('EINVAL', 'Chaining ONBUILD via `ONBUILD ONBUILD` isn\'t allowed');
        if (trigger === 'MAINTAINER' || trigger === 'FROM') throw new LaminaError('EINVAL', `${trigger} isn't allowed as an ONBUILD trigger`);
        cfg.OnBuild = [...((cfg.OnBuild as string[] | null) ?? []), l.original.replace(/^\s*ONBUILD\s+/i, '')];
        break;
      }
      case 'healthcheck':
        cfg.Healthcheck = parseHealthcheck(l.rest);
        break;
    }
  }
  return cfg;
}

interface DockerfileLine { cmd: string; rest: string; original: string }

/** Dockerfile lines: comments and blank lines dropped, `\` continuations joined. */
function dockerfileLines(text: string): DockerfileLine[] {
  const out: DockerfileLine[] = [];
  let pending = '';
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\r$/, '');
    if (!pending && /^\s*#/.test(line)) continue;
    if (/\\\s*$/.test(line)) {
      pending += line.replace(/\\\s*$/, '');
      continue;
    }
    const full = (pending + line).trim();
    pending = '';
    if (!full) continue;
    const m = /^(\S+)\s*([\s\S]*)$/.exec(full)!;
    out.push({ cmd: m[1].toLowerCase(), rest: m[2], original: full });
  }
  if (pending.trim()) {
    const m = /^(\S+)\s*([\s\S]*)$/.exec(pending.trim())!;
    out.push({ cmd: m[1].toLowerCase(), rest: m[2], original: pending.trim() });
  }
  return out;
}

function parseJSONArray(rest: string): string[] | undefined {
  const t = rest.trim();
  if (!t.startsWith('[')) return undefined;
  try {
    const v = JSON.parse(t);
    if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return v;
  } catch {
    // not JSON: the shell form
  }
  return undefined;
}

/** CMD/ENTRYPOINT: the exec (JSON) form as given, the shell form behind the shell (default /bin/sh -c). */
function resolveCmdLine(rest: string, cfg: Config): string[] {
  const json = parseJSONArray(rest);
  if (json) return json;
  const shell = Array.isArray(cfg.Shell) && cfg.Shell.length ? (cfg.Shell as string[]) : ['/bin/sh', '-c'];
  const line = rest.trim();
  return line ? [...shell, line] : [...shell];
}

/**
 * ENV/LABEL arguments: `key=value ...` (words split on unquoted whitespace, quotes kept for the
 * expansion step) or the legacy `key value`.
 */
function nameValues(rest: string, what: string): Array<[string, string]> {
  const words = splitWords(rest);
  if (!words.length) throw new LaminaError('EINVAL', `${what} requires at least one argument`);
  if (!words[0].includes('=')) {
    const m = /^(\S+)\s+([\s\S]+)$/.exec(rest.trim());
    if (!m) throw new LaminaError('EINVAL', `${what} must have two arguments`);
    return [[m[1], m[2]]];
  }
  return words.map((w) => {
    const i = w.indexOf('=');
    if (i < 0) throw new LaminaError('EINVAL', `Syntax error - can't find = in "${w}". Must be of the form: name=value`);
    return [w.slice(0, i), w.slice(i + 1)] as [string, string];
  });
}

/** Splits on whitespace outside quotes; quotes and backslashes stay in the words. */
function splitWords(s: string): string[] {
  const words: string[] = [];
  let cur = '';
  let quote = '';
  let inWord = false;
  for (let i = 0; i < s.length; i++) {
    const ch = s[i];
    if (!quote && /\s/.test(ch)) {
      if (inWord) words.push(cur);
      cur = '';
      inWord = false;
      continue;
    }
    inWord = true;
    if (ch === '\\' && quote !== "'" && i + 1 < s.length) {
      cur += ch + s[++i];
      continue;
    }
    if (quote) {
      if (ch === quote) quote = '';
    } else if (ch === '"' || ch === "'") {
      quote = ch;
    }
    cur += ch;
  }
  if (inWord) words.push(cur);
  return words;
}

/**
 * The builder's shell-word processing (one word, whitespace kept): quotes removed, backslash
 * escapes, $VAR and ${VAR}, ${VAR:-word}, ${VAR:+word} from the environment before the instruction.
 */
export function processWord(word: string, env: readonly string[]): string {
  const vars = new Map<string, string>();
  for (const e of env) {
    const i = e.indexOf('=');
    if (i > 0) vars.set(e.slice(0, i), e.slice(i + 1));
  }
  let pos = 0;
  const peek = () => word[pos];
  const name = (): string => {
    const m = /^[A-Za-z0-9_]+/.exec(word.slice(pos));
    if (!m) return '';
    pos += m[0].length;
    return m[0];
  };
  const dollar = (): string => {
    pos++; // '$'
    if (peek() !== '{') {
      const n = name();
      return n ? vars.get(n) ?? '' : '$';
    }
    pos++; // '{'
    const n = name();
    if (!n) throw new LaminaError('EINVAL', `bad substitution in "${word}"`);
    if (peek() === '}') {
      pos++;
      return vars.get(n) ?? '';
    }
    if (peek() !== ':') throw new LaminaError('EINVAL', `missing ':' in substitution in "${word}"`);
    pos++;
    const mod = word[pos++];
    const alt = until('}');
    pos++; // '}'
    const v = vars.get(n);
    if (mod === '-') return v ? v : alt;
    if (mod === '+') return v ? alt : '';
    if (mod === '?') {
      if (!v) throw new LaminaError('EINVAL', `${n}: ${alt || 'is not allowed to be unset'}`);
      return v;
    }
    throw new LaminaError('EINVAL', `unsupported modifier (${mod}) in substitution in "${word}"`);
  };
  const until = (stop: string | undefined): string => {
    let out = '';
    while (pos < word.length && word[pos] !== stop) {
      const ch = word[pos];
      if (ch === "'") {
        const end = word.indexOf("'", pos + 1);
        if (end < 0) throw new LaminaError('EINVAL', `unexpected end of statement while looking for matching single-quote in "${word}"`);
        out += word.slice(pos + 1, end);
        pos = end + 1;
      } else if (ch === '"') {
        pos++;
        while (pos < word.length && word[pos] !== '"') {
          if (word[pos] === '$') {
            out += dollar();
            continue;
          }
          if (word[pos] === '\\' && pos + 1 < word.length && '"$\\'.includes(word[pos + 1])) pos++;
          out += word[pos++];
        }
        if (pos >= word.length) throw new LaminaError('EINVAL', `unexpected end of statement while looking for matching double-quote in "${word}"`);
        pos++;
      } else if (ch === '\\') {
        pos++;
        if (pos < word.length) out += word[pos++];
      } else if (ch === '$') {
        out += dollar();
      } else {
        out += ch;
        pos++;
      }
    }
    return out;
  };
  return until(undefined);
}

/** nat.ParsePortSpec for EXPOSE: "80", "80/udp", "8000-8002/tcp" → "80/tcp" … */
function parsePortSpec(spec: string): string[] {
  const m = /^(?:.*:)?(\d+)(?:-(\d+))?(?:\/([A-Za-z]+))?$/.exec(spec);
  const proto = (m?.[3] ?? 'tcp').toLowerCase();
  if (!m || !['tcp', 'udp', 'sctp'].includes(proto)) throw new LaminaError('EINVAL', `Invalid containerPort: ${spec}`);
  const lo = Number(m[1]), hi = m[2] ? Number(m[2]) : lo;
  if (lo > 65535 || hi > 65535 || hi < lo) throw new LaminaError('EINVAL', `Invalid range specified for the Port: ${spec}`);
  const out: string[] = [];
  for (let p = lo; p <= hi; p++) out.push(`${p}/${proto}`);
  return out;
}

function isSignal(s: string): boolean {
  if (/^\d+$/.test(s)) return Number(s) > 0 && Number(s) < 65;
  const name = s.toUpperCase().replace(/^SIG/, '');
  return /^RTMIN\+\d+$|^RTMAX-\d+$/.test(name) || Object.prototype.hasOwnProperty.call(osConstants.signals, 'SIG' + name);
}

/** HEALTHCHECK NONE | [--interval=D] [--timeout=D] [--start-period=D] [--retries=N] CMD … */
function parseHealthcheck(rest: string): Config {
  let s = rest.trim();
  const flags: Record<string, string> = {};
  for (let m = /^--([a-z-]+)=(\S*)\s*/.exec(s); m; m = /^--([a-z-]+)=(\S*)\s*/.exec(s)) {
    flags[m[1]] = m[2];
    s = s.slice(m[0].length);
  }
  const m = /^(\S+)\s*([\s\S]*)$/.exec(s);
  const typ = m?.[1].toUpperCase() ?? '';
  if (typ === 'NONE') {
    if (m![2].trim() || Object.keys(flags).length) throw new LaminaError('EINVAL', 'HEALTHCHECK NONE takes no arguments');
    return { Test: ['NONE'] };
  }
  if (typ !== 'CMD') throw new LaminaError('EINVAL', `Unknown type "${typ}" in HEALTHCHECK (try CMD)`);
  const json = parseJSONArray(m![2]);
  const test = json ? ['CMD', ...json] : ['CMD-SHELL', m![2].trim()];
  const h: Config = { Test: test };
  const durations: Array<[string, string]> = [['interval', 'Interval'], ['timeout', 'Timeout'], ['start-period', 'StartPeriod']];
  for (const [flag, field] of durations) {
    if (flags[flag] === undefined) continue;
    const ns = parseGoDuration(flags[flag]);
    if (ns !== 0 && ns < 1_000_000) throw new LaminaError('EINVAL', `${field} "${flags[flag]}" cannot be less than 1ms`);
    if (ns) h[field] = ns;
  }
  if (flags.retries !== undefined) {
    const r = Number(flags.retries);
    if (!Number.isInteger(r) || r < 0) throw new LaminaError('EINVAL', '--retries cannot be negative');
    if (r) h.Retries = r;
  }
  for (const f of Object.keys(flags)) {
    if (!['interval', 'timeout', 'start-period', 'retries'].includes(f)) throw new LaminaError('EINVAL', `Unknown flag: ${f}`);
  }
  return h;
}

/** Go's time.ParseDuration, in nanoseconds. */
function parseGoDuration(s: string): number {
  if (s === '0') return 0;
  const units: Record<string, number> = { ns: 1, us: 1e3, 'µs': 1e3, 'μs': 1e3, ms: 1e6, s: 1e9, m: 60e9, h: 3600e9 };
  const re = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/y;
  let total = 0;
  let pos = 0;
  while (pos < s.length) {
    re.lastIndex = pos;
    const m = re.exec(s);
    if (!m) throw new LaminaError('EINVAL', `time: invalid duration "${s}"`);
    total += Number(m[1]) * units[m[2]];
    pos = re.lastIndex;
  }
  if (!s.length) throw new LaminaError('EINVAL', `time: invalid duration "${s}"`);
  return Math.round(total);
}

function posixJoin(...parts: string[]): string {
  const segs: string[] = [];
  for (const part of parts.join('/').split('/')) {
    if (!part || part === '.') continue;
    if (part === '..') segs.pop();
    else segs.push(part);
  }
  return '/' + segs.join('/');
}
