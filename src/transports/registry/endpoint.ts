// Where a reference's registry answers: Docker Hub's API host, and whether to speak HTTPS
// (the default) or plain HTTP (loopback registries and those listed as insecure).
import { DEFAULT_DOMAIN, type Reference } from '../../images/reference.js';

/** Docker Hub's registry API host (docker.io names the index, not the API). */
export const DOCKER_HUB_API = 'registry-1.docker.io';
/** The key Docker uses for Docker Hub credentials in config.json. */
export const DOCKER_HUB_AUTH_KEY = 'https://index.docker.io/v1/';

export interface Endpoint {
  /** Registry domain as references spell it: docker.io, localhost:5000, 127.0.0.1:5000. */
  domain: string;
  /** scheme://host[:port] of the API, no trailing slash. */
  base: string;
  insecure: boolean;
}

export interface EndpointOptions {
  /** host[:port] entries (or bare hosts) to reach over plain HTTP. */
  insecureRegistries?: readonly string[];
}

/** `host` of a `host[:port]` domain (IPv6 brackets removed). */
export function hostOf(domain: string): string {
  if (domain.startsWith('[')) return domain.slice(1, domain.indexOf(']'));
  const colon = domain.lastIndexOf(':');
  return colon >= 0 ? domain.slice(0, colon) : domain;
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

/** Insecure registries from LAMINA_INSECURE_REGISTRIES (comma or space separated). */
export function envInsecureRegistries(): string[] {
  return (process.env.LAMINA_INSECURE_REGISTRIES ?? '').split(/[\s,]+/).filter(Boolean);
}

export function isInsecure(domain: string, listed: readonly string[] = []): boolean {
  const host = hostOf(domain);
  if (isLoopback(host)) return true;
  return listed.some((e) => {
    const entry = e.replace(/^[a-z]+:\/\//, '').replace(/\/+$/, '');
    return entry === domain || entry === host;
  });
}

export function endpointFor(domain: string, opts: EndpointOptions = {}): Endpoint {
  if (domain === DEFAULT_DOMAIN) return { domain, base: `https://${DOCKER_HUB_API}`, insecure: false };
  const insecure = isInsecure(domain, [...(opts.insecureRegistries ?? []), ...envInsecureRegistries()]);
  return { domain, base: `${insecure ? 'http' : 'https'}://${domain}`, insecure };
}

export function endpointForRef(ref: Reference, opts: EndpointOptions = {}): Endpoint {
  return endpointFor(ref.domain, opts);
}

/** The config.json `auths` key for a registry domain (Docker Hub's is its legacy index URL). */
export function authKeyFor(domain: string): string {
  return domain === DEFAULT_DOMAIN ? DOCKER_HUB_AUTH_KEY : domain;
}

/** host[:port] of a config.json auths key, which may be a URL (`https://host/v1/`). */
export function normalizeAuthKey(key: string): string {
  let k = key.replace(/^[a-z]+:\/\//i, '');
  const slash = k.indexOf('/');
  if (slash >= 0) k = k.slice(0, slash);
  if (k === 'index.docker.io' || k === DOCKER_HUB_API || k === 'registry.hub.docker.com') return DEFAULT_DOMAIN;
  return k;
}
