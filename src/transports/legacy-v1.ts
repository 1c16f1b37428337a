// The legacy v1 image JSON and v1 ids that Docker 20.10's `docker save` writes per layer
// (`<v1id>/json`). Docker derives them by decoding the config into its Go structs
// (image.V1Image, container.Config) and marshalling those again, so unknown fields vanish, Go
// struct order and omitempty apply, and maps come out sorted. This module replays that decoding.
import { chainIDs, hex, parseDigest, sha256, type Digest } from '../digest/index.js';
import { LaminaError } from '../errors.js';
import { goTime, marshalGo, parseGoTime, type GoTime } from '../images/gojson.js';

export interface LegacyLayer {
  /** 64 hex digits: the `<v1id>/` directory name. */
  v1id: string;
  /** Content of `<v1id>/json`. */
  json: string;
  diffID: Digest;
}

export interface LegacyImage {
  layers: LegacyLayer[];
  /** The config's `created`, which Docker uses as the mtime of the saved files. */
  created: GoTime;
}

type Obj = Record<string, unknown>;

/** Go's field lookup when decoding: the exact key, else a case-insensitive match; last one wins. */
function fieldsOf(obj: Obj): (name: string) => unknown {
  const lower = new Map<string, unknown>();
  for (const [k, v] of Object.entries(obj)) lower.set(k.toLowerCase(), v);
  return (name) => (Object.prototype.hasOwnProperty.call(obj, name) ? obj[name] : lower.get(name.toLowerCase()));
}

class Decoder {
  constructor(private readonly where: string) {}

  fail(field: string, want: string, got: unknown): never {
    const kind = got === null ? 'null' : Array.isArray(got) ? 'array' : typeof got;
    throw new LaminaError('EBADINPUT', `${this.where}: cannot read ${field}: expected ${want}, found ${kind}`);
  }

  str(v: unknown, field: string): string {
    if (v === undefined || v === null) return '';
    if (typeof v !== 'string') this.fail(field, 'a string', v);
    return v;
  }

  bool(v: unknown, field: string): boolean {
    if (v === undefined || v === null) return false;
    if (typeof v !== 'boolean') this.fail(field, 'a boolean', v);
    return v;
  }

  int(v: unknown, field: string): number {
    if (v === undefined || v === null) return 0;
    if (typeof v !== 'number' || !Number.isInteger(v)) this.fail(field, 'an integer', v);
    return v;
  }

  /** []string: null stays null (nil), [] stays []. */
  strings(v: unknown, field: string): string[] | null {
    if (v === undefined || v === null) return null;
    if (!Array.isArray(v)) this.fail(field, 'an array of strings', v);
    return v.map((s, i) => this.str(s, `${field}[${i}]`));
  }

  /** strslice.StrSlice: also accepts a single string. */
  strSlice(v: unknown, field: string): string[] | null {
    if (typeof v === 'string') return [v];
    return this.strings(v, field);
  }

  object(v: unknown, field: string): Obj | null {
    if (v === undefined || v === null) return null;
    if (typeof v !== 'object' || Array.isArray(v)) this.fail(field, 'an object', v);
    return v as Obj;
  }

  /** map[string]string (written with sorted keys). */
  stringMap(v: unknown, field: string): Map<string, string> | null {
    const o = this.object(v, field);
    if (!o) return null;
    return new Map(Object.entries(o).map(([k, s]) => [k, this.str(s, `${field}.${k}`)]));
  }

  /** map[string]struct{} (Volumes, ExposedPorts). */
  setMap(v: unknown, field: string): Map<string, Obj> | null {
    const o = this.object(v, field);
    if (!o) return null;
    return new Map(Object.entries(o).map(([k, e]) => {
      this.object(e, `${field}.${k}`);
      return [k, {}];
    }));
  }

  time(v: unknown, field: string): GoTime {
    if (v === undefined || v === null) return ZERO_TIME;
    if (typeof v !== 'string') this.fail(field, 'an RFC 3339 time', v);
    try {
      return parseGoTime(v);
    } catch {
      throw new LaminaError('EBADINPUT', `${this.where}: cannot read ${field}: "${v}" is not an RFC 3339 time`);
    }
  }
}

/** Go's zero time.Time, 0001-01-01T00:00:00Z. */
const ZERO_TIME: GoTime = { sec: -62135596800, nsec: 0 };
const EPOCH: GoTime = { sec: 0, nsec: 0 };

/** container.Config (API 1.41), marshal-ready: Go field order, omitempty fields undefined when empty. */
function containerConfig(d: Decoder, v: unknown, field: string): Obj {
  const o = d.object(v, field) ?? {};
  const f = fieldsOf(o);
  const nonEmpty = <T extends { length?: number; size?: number }>(x: T | null): T | undefined =>
    x === null || (x.length ?? x.size) === 0 ? undefined : x;
  let healthcheck: Obj | undefined;
  const hc = d.object(f('Healthcheck'), `${field}.Healthcheck`);
  if (hc) {
    const h = fieldsOf(hc);
    healthcheck = {
      Test: nonEmpty(d.strings(h('Test'), `${field}.Healthcheck.Test`)),
      Interval: d.int(h('Interval'), `${field}.Healthcheck.Interval`) || undefined,
      Timeout: d.int(h('Timeout'), `${field}.Healthcheck.Timeout`) || undefined,
      StartPeriod: d.int(h('StartPeriod'), `${field}.Healthcheck.StartPeriod`) || undefined,
      Retries: d.int(h('Retries'), `${field}.Healthcheck.Retries`) || undefined,
    };
  }
  const stopTimeout = f('StopTimeout');
  return {
    Hostname: d.str(f('Hostname'), `${field}.Hostname`),
    Domainname: d.str(f('Domainname'), `${field}.Domainname`),
    User: d.str(f('User'), `${field}.User`),
    AttachStdin: d.bool(f('AttachStdin'), `${field}.AttachStdin`),
    AttachStdout: d.bool(f('AttachStdout'), `${field}.AttachStdout`),
    AttachStderr: d.bool(f('AttachStderr'), `${field}.AttachStderr`),
    ExposedPorts: nonEmpty(d.setMap(f('ExposedPorts'), `${field}.ExposedPorts`)),
    Tty: d.bool(f('Tty'), `${field}.Tty`),
    OpenStdin: d.bool(f('OpenStdin'), `${field}.OpenStdin`),
    StdinOnce: d.bool(f('StdinOnce'), `${field}.StdinOnce`),
    Env: d.strings(f('Env'), `${field}.Env`),
    Cmd: d.strSlice(f('Cmd'), `${field}.Cmd`),
    Healthcheck: healthcheck,
    ArgsEscaped: d.bool(f('ArgsEscaped'), `${field}.ArgsEscaped`) || undefined,
    Image: d.str(f('Image'), `${field}.Image`),
    Volumes: d.setMap(f('Volumes'), `${field}.Volumes`),
    WorkingDir: d.str(f('WorkingDir'), `${field}.WorkingDir`),
    Entrypoint: d.strSlice(f('Entrypoint'), `${field}.Entrypoint`),
    NetworkDisabled: d.bool(f('NetworkDisabled'), `${field}.NetworkDisabled`) || undefined,
    MacAddress: d.str(f('MacAddress'), `${field}.MacAddress`) || undefined,
    OnBuild: d.strings(f('OnBuild'), `${field}.OnBuild`),
    Labels: d.stringMap(f('Labels'), `${field}.Labels`),
    StopSignal: d.str(f('StopSignal'), `${field}.StopSignal`) || undefined,
    // *int: present (even 0) unless null or absent.
    StopTimeout: stopTimeout === undefined || stopTimeout === null ? undefined : d.int(stopTimeout, `${field}.StopTimeout`),
    Shell: nonEmpty(d.strSlice(f('Shell'), `${field}.Shell`)),
  };
}

/** image.V1Image fields as decoded from an image config. */
interface V1Image {
  id: string;
  parent: string;
  comment: string;
  created: GoTime;
  container: string;
  containerConfig: Obj;
  dockerVersion: string;
  author: string;
  config: Obj | undefined;
  architecture: string;
  variant: string;
  os: string;
  size: number;
}

function zeroV1Image(d: Decoder, created: GoTime): V1Image {
  return {
    id: '', parent: '', comment: '', created, container: '', containerConfig: containerConfig(d, null, 'container_config'),
    dockerVersion: '', author: '', config: undefined, architecture: '', variant: '', os: '', size: 0,
  };
}

function decodeV1Image(d: Decoder, cfg: Obj): V1Image {
  const f = fieldsOf(cfg);
  const config = f('config');
  return {
    id: d.str(f('id'), 'id'),
    // image.Image's own `parent` field shadows V1Image.Parent, so the v1 parent is never read.
    parent: '',
    comment: d.str(f('comment'), 'comment'),
    created: d.time(f('created'), 'created'),
    container: d.str(f('container'), 'container'),
    containerConfig: containerConfig(d, f('container_config'), 'container_config'),
    dockerVersion: d.str(f('docker_version'), 'docker_version'),
    author: d.str(f('author'), 'author'),
    config: config === undefined || config === null ? undefined : containerConfig(d, config, 'config'),
    architecture: d.str(f('architecture'), 'architecture'),
    variant: d.str(f('variant'), 'variant'),
    os: d.str(f('os'), 'os'),
    size: d.int(f('Size'), 'Size'),
  };
}

/** V1Image in Go field order with its omitempty rules. */
function v1Object(v: V1Image): Obj {
  return {
    id: v.id || undefined,
    parent: v.parent || undefined,
    comment: v.comment || undefined,
    created: goTime(v.created),
    container: v.container || undefined,
    container_config: v.containerConfig,
    docker_version: v.dockerVersion || undefined,
    author: v.author || undefined,
    config: v.config,
    architecture: v.architecture || undefined,
    variant: v.variant || undefined,
    os: v.os || undefined,
    Size: v.size || undefined,
  };
}

/** v1.CreateID: sha256 of the v1 JSON without id, plus layer_id and parent, keys sorted. */
function createV1ID(v: V1Image, layerID: Digest, parent: Digest | undefined): string {
  const m = new Map(Object.entries(v1Object({ ...v, id: '' })));
  m.set('layer_id', layerID);
  if (parent) m.set('parent', parent);
  return hex(sha256(marshalGo(m)));
}

/**
 * The per-layer v1 ids and JSON files `docker save` (20.10) writes for an image config, bottom
 * layer first. Throws EBADINPUT when the config does not decode as Docker's structs would.
 */
export function legacyImage(configBytes: Buffer, configName: string): LegacyImage {
  let cfg: unknown;
  try {
    cfg = JSON.parse(configBytes.toString('utf8'));
  } catch (e) {
    throw new LaminaError('EBADINPUT', `config ${configName} is not valid JSON: ${(e as Error).message}`);
  }
  const d = new Decoder(`config ${configName}`);
  const top = d.object(cfg, 'the config');
  if (!top) throw new LaminaError('EBADINPUT', `config ${configName} is not a JSON object`);
  const rootfs = d.object(fieldsOf(top)('rootfs'), 'rootfs');
  const rawDiffIDs = rootfs ? fieldsOf(rootfs)('diff_ids') : undefined;
  if (!Array.isArray(rawDiffIDs)) throw new LaminaError('EBADINPUT', `config ${configName} has no rootfs.diff_ids`);
  if (rawDiffIDs.length === 0) throw new LaminaError('EUNSUPPORTED', `config ${configName} has no layers: an empty image cannot be saved (Docker: "empty export - not implemented")`);
  const diffIDs = rawDiffIDs.map((x) => parseDigest(String(x), `diff_id in config ${configName}`));
  const img = decodeV1Image(d, top);
  const chains = chainIDs(diffIDs);
  const layers: LegacyLayer[] = [];
  let parent: Digest | undefined;
  for (let i = 0; i < diffIDs.length; i++) {
    // Lower layers get an empty v1 image created at the epoch; the top one is the image itself.
    const v = i === diffIDs.length - 1 ? { ...img } : zeroV1Image(d, EPOCH);
    const v1id = createV1ID(v, chains[i], parent);
    v.id = v1id;
    if (parent) v.parent = hex(parent);
    v.os = img.os; // set after the id is computed, as Docker does
    layers.push({ v1id, json: marshalGo(v1Object(v)), diffID: diffIDs[i] });
    parent = 'sha256:' + v1id;
  }
  return { layers, created: img.created };
}
