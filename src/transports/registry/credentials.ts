// Registry credentials in Docker's config.json format ({"auths": {"<registry>": {"auth":
// base64("user:password")}}}). `lamina login` writes lamina's own file
// ($XDG_CONFIG_HOME/lamina/config.json, else ~/.config/lamina/config.json; $LAMINA_CONFIG names
// the directory); lookups read it first, then Docker's ($DOCKER_CONFIG/config.json, else
// ~/.docker/config.json), including its credential helpers (credHelpers, credsStore).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { LaminaError } from '../../errors.js';
import { writeFileAtomic } from '../../fsutil.js';
import { authKeyFor, normalizeAuthKey } from './endpoint.js';

export interface Credentials {
  username?: string;
  password?: string;
  /** OAuth2 refresh token (a credential helper's "<token>" user, or config.json identitytoken). */
  identitytoken?: string;
  /** A bearer token to send as is. */
  registrytoken?: string;
  /** The base64 "user:password" as stored in config.json, kept for Docker's HMAC key. */
  auth?: string;
  /** Which file or helper they came from, for messages. */
  source?: string;
}

type ConfigFile = Record<string, unknown> & {
  auths?: Record<string, Record<string, unknown>>;
  credHelpers?: Record<string, string>;
  credsStore?: string;
};

export function laminaConfigDir(): string {
  if (process.env.LAMINA_CONFIG) return process.env.LAMINA_CONFIG;
  const xdg = process.env.XDG_CONFIG_HOME || path.join(os.homedir(), '.config');
  return path.join(xdg, 'lamina');
}

export function laminaConfigFile(): string {
  return path.join(laminaConfigDir(), 'config.json');
}

export function dockerConfigFile(): string {
  return path.join(process.env.DOCKER_CONFIG || path.join(os.homedir(), '.docker'), 'config.json');
}

function readConfig(file: string): ConfigFile | undefined {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw e;
  }
  if (text.trim() === '') return {};
  try {
    const parsed = JSON.parse(text) as unknown;
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('not a JSON object');
    return parsed as ConfigFile;
  } catch (e) {
    throw new LaminaError('EBADINPUT', `${file} is not a valid config file: ${(e as Error).message}`);
  }
}

/** The `auths` entry for a registry domain, whatever spelling of the key the file uses. */
function authEntry(cfg: ConfigFile, domain: string): Record<string, unknown> | undefined {
  const auths = cfg.auths;
  if (!auths || typeof auths !== 'object') return undefined;
  const exact = auths[authKeyFor(domain)];
  if (exact) return exact;
  for (const [key, entry] of Object.entries(auths)) if (normalizeAuthKey(key) === domain) return entry;
  return undefined;
}

function fromEntry(entry: Record<string, unknown>, source: string): Credentials | undefined {
  const creds: Credentials = { source };
  if (typeof entry.auth === 'string' && entry.auth !== '') {
    const decoded = Buffer.from(entry.auth, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) throw new LaminaError('EBADINPUT', `${source}: the stored "auth" is not base64 of user:password`);
    creds.auth = entry.auth;
    creds.username = decoded.slice(0, colon);
    creds.password = decoded.slice(colon + 1);
  }
  if (typeof entry.username === 'string' && entry.username) creds.username = entry.username;
  if (typeof entry.password === 'string' && entry.password) creds.password = entry.password;
  if (typeof entry.identitytoken === 'string' && entry.identitytoken) creds.identitytoken = entry.identitytoken;
  if (typeof entry.registrytoken === 'string' && entry.registrytoken) creds.registrytoken = entry.registrytoken;
  return creds.username || creds.identitytoken || creds.registrytoken ? creds : undefined;
}

/** Runs `docker-credential-<helper> get` for the registry; undefined when it has nothing. */
function fromHelper(helper: string, domain: string): Credentials | undefined {
  const exe = `docker-credential-${helper}`;
  const r = spawnSync(exe, ['get'], { input: authKeyFor(domain), encoding: 'utf8', timeout: 30_000 });
  if (r.error) {
    if ((r.error as NodeJS.ErrnoException).code === 'ENOENT') throw new LaminaError('EAUTH', `credential helper ${exe} is configured but not on PATH`);
    throw new LaminaError('EAUTH', `credential helper ${exe} failed: ${r.error.message}`);
  }
  if (r.status !== 0) {
    if (/credentials not found/i.test(r.stdout + r.stderr)) return undefined;
    throw new LaminaError('EAUTH', `credential helper ${exe} failed: ${(r.stderr || r.stdout).trim()}`);
  }
  let out: { Username?: string; Secret?: string };
  try {
    out = JSON.parse(r.stdout) as { Username?: string; Secret?: string };
  } catch {
    throw new LaminaError('EAUTH', `credential helper ${exe} printed something that is not JSON`);
  }
  if (!out.Secret) return undefined;
  if (out.Username === '<token>') return { identitytoken: out.Secret, source: exe };
  return { username: out.Username ?? '', password: out.Secret, source: exe };
}

/** Credentials for a registry domain (docker.io, host:port), or undefined for anonymous access. */
export function findCredentials(domain: string): Credentials | undefined {
  const lamina = laminaConfigFile();
  const own = readConfig(lamina);
  const ownEntry = own && authEntry(own, domain);
  if (ownEntry) {
    const c = fromEntry(ownEntry, lamina);
    if (c) return c;
  }
  const dockerFile = dockerConfigFile();
  const docker = readConfig(dockerFile);
  if (!docker) return undefined;
  const helper = docker.credHelpers?.[authKeyFor(domain)] ?? docker.credHelpers?.[domain] ?? docker.credsStore;
  if (typeof helper === 'string' && helper) {
    const c = fromHelper(helper, domain);
    if (c) return c;
  }
  const entry = authEntry(docker, domain);
  return entry ? fromEntry(entry, dockerFile) : undefined;
}

/** Writes user/password for a registry into lamina's config.json (0600); returns the file. */
export function storeCredentials(domain: string, username: string, password: string): string {
  const file = laminaConfigFile();
  const cfg = readConfig(file) ?? {};
  const auths = (cfg.auths && typeof cfg.auths === 'object' ? cfg.auths : {}) as Record<string, Record<string, unknown>>;
  for (const key of Object.keys(auths)) if (normalizeAuthKey(key) === domain) delete auths[key];
  auths[authKeyFor(domain)] = { auth: Buffer.from(`${username}:${password}`).toString('base64') };
  cfg.auths = auths;
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  // Docker writes config.json indented with tabs.
  writeFileAtomic(file, JSON.stringify(cfg, null, '\t'), 0o600);
  return file;
}

/** Removes a registry's entry from lamina's config.json; false when there was none. */
export function eraseCredentials(domain: string): boolean {
  const file = laminaConfigFile();
  const cfg = readConfig(file);
  if (!cfg?.auths) return false;
  let found = false;
  for (const key of Object.keys(cfg.auths)) {
    if (normalizeAuthKey(key) === domain) {
      delete cfg.auths[key];
      found = true;
    }
  }
  if (found) writeFileAtomic(file, JSON.stringify(cfg, null, '\t'), 0o600);
  return found;
}
