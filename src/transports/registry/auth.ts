// Registry authentication: the WWW-Authenticate challenge of a 401, then Basic credentials or a
// bearer token from the challenge's realm (distribution's token.md; OAuth2 refresh-token POST
// from oauth.md when the credentials are an identity token). Tokens are cached per scope set.
import { LaminaError } from '../../errors.js';
import type { Credentials } from './credentials.js';

export interface Challenge {
  /** Lower-cased scheme: "bearer" or "basic". */
  scheme: string;
  params: Record<string, string>;
}

/**
 * Parses a WWW-Authenticate value: one or more `scheme k=v, k="quoted"` challenges separated by
 * commas (RFC 7235). Parameter names are lower-cased.
 */
export function parseChallenges(header: string): Challenge[] {
  const out: Challenge[] = [];
  let i = 0;
  const n = header.length;
  const skipWS = () => {
    while (i < n && (header[i] === ' ' || header[i] === '\t')) i++;
  };
  const token = () => {
    const start = i;
    while (i < n && !' \t,="'.includes(header[i])) i++;
    return header.slice(start, i);
  };
  let current: Challenge | undefined;
  while (i < n) {
    skipWS();
    if (header[i] === ',') {
      i++;
      continue;
    }
    const word = token();
    if (!word) {
      i++;
      continue;
    }
    skipWS();
    if (header[i] === '=' && current) {
      i++;
      skipWS();
      let value: string;
      if (header[i] === '"') {
        i++;
        value = '';
        while (i < n && header[i] !== '"') {
          if (header[i] === '\\' && i + 1 < n) i++;
          value += header[i++];
        }
        i++;
      } else {
        value = token();
      }
      current.params[word.toLowerCase()] = value;
    } else {
      current = { scheme: word.toLowerCase(), params: {} };
      out.push(current);
    }
  }
  return out;
}

/** `repository:<path>:<actions>` */
export function repositoryScope(path: string, actions: readonly string[]): string {
  return `repository:${path}:${actions.join(',')}`;
}

/** Merges scopes naming the same resource (`repository:a:pull` + `repository:a:push`). */
export function mergeScopes(scopes: readonly string[]): string[] {
  const byResource = new Map<string, Set<string>>();
  for (const s of scopes) {
    const i = s.lastIndexOf(':');
    if (i < 0) continue;
    const resource = s.slice(0, i);
    const set = byResource.get(resource) ?? new Set<string>();
    for (const a of s.slice(i + 1).split(',')) if (a) set.add(a);
    byResource.set(resource, set);
  }
  return [...byResource].map(([r, a]) => `${r}:${[...a].sort((x, y) => (x === 'pull' ? -1 : y === 'pull' ? 1 : x.localeCompare(y))).join(',')}`).sort();
}

interface CachedToken {
  value: string;
  expiresAt: number;
}

export type FetchFn = typeof fetch;

/**
 * Holds what one registry wants: after the first 401 it knows the scheme and, for bearer, the
 * realm and service; `authorization(scopes)` then yields the header to send.
 */
export class Authenticator {
  private scheme: 'basic' | 'bearer' | undefined;
  private realm = '';
  private service: string | undefined;
  private readonly tokens = new Map<string, CachedToken>();
  /** Token requests in flight, so parallel requests share one. */
  private readonly pending = new Map<string, Promise<CachedToken>>();

  constructor(
    readonly registry: string,
    readonly credentials: Credentials | undefined,
    private readonly fetchFn: FetchFn = fetch,
  ) {
    if (credentials?.registrytoken) this.scheme = 'bearer';
  }

  get knowsScheme(): boolean {
    return this.scheme !== undefined;
  }

  /** The Authorization header for a request needing `scopes`, or undefined (anonymous, or not yet challenged). */
  async authorization(scopes: readonly string[]): Promise<string | undefined> {
    if (this.credentials?.registrytoken) return `Bearer ${this.credentials.registrytoken}`;
    if (this.scheme === 'basic') return this.basicHeader();
    if (this.scheme === 'bearer') return `Bearer ${(await this.token(scopes)).value}`;
    return undefined;
  }

  private basicHeader(): string | undefined {
    const c = this.credentials;
    if (!c?.username && !c?.password) return undefined;
    return 'Basic ' + Buffer.from(`${c.username ?? ''}:${c.password ?? ''}`).toString('base64');
  }

  /**
   * Learns from a 401's WWW-Authenticate header. Returns the scopes to retry with (the request's
   * plus any the challenge names), or undefined when retrying cannot help.
   */
  async challenged(header: string | null, scopes: readonly string[], sentAuthorization: string | undefined): Promise<string[] | undefined> {
    const challenges = parseChallenges(header ?? '');
    const bearer = challenges.find((c) => c.scheme === 'bearer' && c.params.realm);
    const basic = challenges.find((c) => c.scheme === 'basic');
    if (bearer) {
      const wanted = mergeScopes([...scopes, ...(bearer.params.scope ? bearer.params.scope.split(' ') : [])]);
      const key = wanted.join(' ');
      const had = this.tokens.get(key);
      // The very token we sent for these scopes was refused: another one will not do better.
      if (had && sentAuthorization === `Bearer ${had.value}`) {
        this.tokens.delete(key);
        return undefined;
      }
      this.scheme = 'bearer';
      this.realm = bearer.params.realm;
      this.service = bearer.params.service;
      return wanted;
    }
    if (basic) {
      if (this.scheme === 'basic' || !this.basicHeader()) return undefined;
      this.scheme = 'basic';
      return [...scopes];
    }
    return undefined;
  }

  private async token(scopes: readonly string[]): Promise<CachedToken> {
    const key = mergeScopes(scopes).join(' ');
    const cached = this.tokens.get(key);
    if (cached && cached.expiresAt > Date.now()) return cached;
    let p = this.pending.get(key);
    if (!p) {
      p = this.fetchToken(mergeScopes(scopes)).finally(() => this.pending.delete(key));
      this.pending.set(key, p);
    }
    const t = await p;
    this.tokens.set(key, t);
    return t;
  }

  private async fetchToken(scopes: readonly string[]): Promise<CachedToken> {
    const c = this.credentials;
    let res: Response;
    try {
      if (c?.identitytoken) {
        const form = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: c.identitytoken, client_id: 'lamina' });
        if (this.service) form.set('service', this.service);
        if (scopes.length) form.set('scope', scopes.join(' '));
        res = await this.fetchFn(this.realm, { method: 'POST', body: form, headers: { 'content-type': 'application/x-www-form-urlencoded' } });
      } else {
        const url = new URL(this.realm);
        if (this.service) url.searchParams.set('service', this.service);
        for (const s of scopes) url.searchParams.append('scope', s);
        const headers: Record<string, string> = {};
        const basic = this.basicHeader();
        if (basic) {
          headers.authorization = basic;
          if (c?.username) url.searchParams.set('account', c.username);
        }
        res = await this.fetchFn(url, { headers });
      }
    } catch (e) {
      throw new LaminaError('EREGISTRY', `cannot get a token for ${this.registry} from ${this.realm}: ${describeFetchError(e)}`);
    }
    const text = await res.text();
    if (res.status === 401 || res.status === 403) {
      throw new LaminaError('EAUTH', `${this.registry}: the token server at ${this.realm} refused ${c ? 'the credentials' + (c.source ? ` from ${c.source}` : '') : 'anonymous access'} (HTTP ${res.status})${errorDetail(text)}`);
    }
    if (!res.ok) throw new LaminaError('EREGISTRY', `${this.registry}: the token server at ${this.realm} answered HTTP ${res.status}${errorDetail(text)}`);
    let body: { token?: string; access_token?: string; expires_in?: number; issued_at?: string };
    try {
      body = JSON.parse(text) as typeof body;
    } catch {
      throw new LaminaError('EREGISTRY', `${this.registry}: the token server at ${this.realm} did not answer JSON`);
    }
    const value = body.token || body.access_token;
    if (!value) throw new LaminaError('EREGISTRY', `${this.registry}: the token server at ${this.realm} answered without a token`);
    // Tokens live at least 60 s (token.md); renew a little before they run out.
    const lifetime = Math.max(60, typeof body.expires_in === 'number' ? body.expires_in : 60);
    const issued = body.issued_at ? Date.parse(body.issued_at) : NaN;
    const start = Number.isFinite(issued) ? Math.min(issued, Date.now()) : Date.now();
    return { value, expiresAt: start + (lifetime - 10) * 1000 };
  }

  /** Checks the credentials against the registry's scheme (for `login`): throws EAUTH when refused. */
  async verifyLogin(): Promise<void> {
    if (this.scheme === 'bearer') await this.fetchToken([]);
  }
}

function errorDetail(text: string): string {
  const t = text.trim();
  if (!t) return '';
  try {
    const j = JSON.parse(t) as { errors?: Array<{ message?: string }>; details?: string; error?: string };
    const msg = j.errors?.map((e) => e.message).filter(Boolean).join('; ') || j.details || j.error;
    if (msg) return `: ${msg}`;
  } catch {
    /* plain text */
  }
  return `: ${t.split('\n')[0].slice(0, 200)}`;
}

/** fetch() rejects with "fetch failed" and the reason in `cause`. */
export function describeFetchError(e: unknown): string {
  const err = e as Error & { cause?: Error & { code?: string } };
  if (err?.name === 'AbortError') return 'aborted';
  const cause = err?.cause;
  if (cause) return cause.code && !cause.message.includes(cause.code) ? `${cause.code}: ${cause.message}` : cause.message;
  return err?.message ?? String(e);
}
