// Docker image references: parsing, normalisation to docker.io/library/…, and the short
// ("familiar") form that repositories.json and `lamina images` show.
import { LaminaError } from '../errors.js';

export const DEFAULT_DOMAIN = 'docker.io';
const LEGACY_DOMAIN = 'index.docker.io';
const OFFICIAL_PREFIX = 'library/';
export const DEFAULT_TAG = 'latest';

const COMPONENT_RE = /^[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*$/;
const DOMAIN_COMPONENT_RE = /^(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])$/;
const TAG_RE = /^[\w][\w.-]{0,127}$/;
const DIGEST_RE = /^sha256:[0-9a-f]{64}$/;
const HEX64_RE = /^[0-9a-f]{64}$/;

export interface Reference {
  /** Registry host, e.g. docker.io or localhost:5000. */
  domain: string;
  /** Repository path within the registry, e.g. library/alpine. */
  path: string;
  tag?: string;
  digest?: string;
}

function isDomain(s: string): boolean {
  if (s === 'localhost') return true;
  if (!s.includes('.') && !s.includes(':')) return false;
  const [host, port] = s.split(':', 2) as [string, string | undefined];
  if (port !== undefined && !/^[0-9]+$/.test(port)) return false;
  if (host.startsWith('[')) return /^\[[0-9a-fA-F:]+\]$/.test(host);
  return host.split('.').every((c) => DOMAIN_COMPONENT_RE.test(c));
}

/**
 * Parses a reference the way Docker's ParseNormalizedNamed does. Throws EINVAL with Docker's
 * wording for malformed input. A bare 64-hex string is refused as a name (it is an image ID).
 */
export function parseReference(input: string): Reference {
  if (input === '' || input !== input.trim()) throw new LaminaError('EINVAL', `invalid reference format: "${input}"`);
  if (HEX64_RE.test(input)) {
    throw new LaminaError('EINVAL', `invalid repository name (${input}), cannot specify 64-byte hexadecimal strings`);
  }
  let rest = input;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST_RE.test(digest)) throw new LaminaError('EINVAL', `invalid reference format: "${input}" has an invalid digest`);
  }
  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf('/');
  const colon = rest.lastIndexOf(':');
  if (colon > lastSlash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG_RE.test(tag)) throw new LaminaError('EINVAL', `invalid reference format: "${input}" has an invalid tag`);
  }
  let domain = DEFAULT_DOMAIN;
  let repoPath = rest;
  const slash = rest.indexOf('/');
  if (slash >= 0 && isDomain(rest.slice(0, slash))) {
    domain = rest.slice(0, slash);
    repoPath = rest.slice(slash + 1);
  }
  if (domain === LEGACY_DOMAIN) domain = DEFAULT_DOMAIN;
  if (repoPath !== repoPath.toLowerCase()) {
    throw new LaminaError('EINVAL', `invalid reference format: repository name (${repoPath}) must be lowercase`);
  }
  const parts = repoPath.split('/');
  if (repoPath === '' || !parts.every((p) => COMPONENT_RE.test(p))) {
    throw new LaminaError('EINVAL', `invalid reference format: "${input}"`);
  }
  if (domain === DEFAULT_DOMAIN && parts.length === 1) repoPath = OFFICIAL_PREFIX + repoPath;
  if ((domain + '/' + repoPath).length > 255) throw new LaminaError('EINVAL', `invalid reference format: repository name must not be more than 255 characters`);
  return { domain, path: repoPath, tag, digest };
}

/** Adds the default tag when the reference has neither tag nor digest (TagNameOnly). */
export function withDefaultTag(ref: Reference): Reference {
  return ref.tag || ref.digest ? ref : { ...ref, tag: DEFAULT_TAG };
}

/** Full repository name, e.g. docker.io/library/alpine. */
export function fullName(ref: Reference): string {
  return `${ref.domain}/${ref.path}`;
}

/** Short repository name as Docker shows it: alpine, user/app, localhost:5000/app. */
export function familiarName(ref: Reference): string {
  if (ref.domain === DEFAULT_DOMAIN) {
    return ref.path.startsWith(OFFICIAL_PREFIX) && ref.path.indexOf('/', OFFICIAL_PREFIX.length) < 0
      ? ref.path.slice(OFFICIAL_PREFIX.length)
      : ref.path;
  }
  return `${ref.domain}/${ref.path}`;
}

/** The familiar string form including tag and digest: `alpine:3`, `app@sha256:…`. */
export function familiarString(ref: Reference): string {
  let s = familiarName(ref);
  if (ref.tag) s += ':' + ref.tag;
  if (ref.digest) s += '@' + ref.digest;
  return s;
}
