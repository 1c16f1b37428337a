// The distribution API for one repository (distribution-spec end-1 … end-13) on Node's global
// fetch: manifests, blobs, uploads and cross-repository mounts, with authentication handled
// per request (a 401 is answered once with the challenge's credentials, then retried).
import { createHash } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { LaminaError } from '../../errors.js';
import { isDigest, type Digest } from '../../digest/index.js';
import { fullName, type Reference } from '../../images/reference.js';
import { Authenticator, describeFetchError, repositoryScope, type FetchFn } from './auth.js';
import { findCredentials, type Credentials } from './credentials.js';
import { endpointFor, type Endpoint } from './endpoint.js';
import { MANIFEST_ACCEPT, MAX_MANIFEST_SIZE } from './manifest.js';

export type Action = 'pull' | 'push';

export interface ClientOptions {
  insecureRegistries?: readonly string[];
  /** Credentials to use; undefined looks them up (lamina's config, then Docker's); null is anonymous. */
  credentials?: Credentials | null;
  /** An authenticator to share (e.g. between the repositories of one push). */
  authenticator?: Authenticator;
  fetch?: FetchFn;
}

export interface ApiRequest {
  headers?: Record<string, string>;
  body?: Buffer | string | AsyncIterable<Uint8Array> | null;
  /** Extra scopes (a mount needs pull on the source repository). */
  scopes?: readonly string[];
  signal?: AbortSignal;
}

export const USER_AGENT = 'lamina/0.1.0';

/** Registry error bodies: {"errors":[{"code","message","detail"}]}. */
function registryMessage(text: string): string | undefined {
  try {
    const j = JSON.parse(text) as { errors?: Array<{ code?: string; message?: string }> };
    const parts = (j.errors ?? []).map((e) => (e.code ? `${e.message || e.code.toLowerCase().replace(/_/g, ' ')} (${e.code})` : e.message)).filter(Boolean);
    if (parts.length) return parts.join('; ');
  } catch {
    /* not JSON */
  }
  const t = text.trim().split('\n')[0];
  return t ? t.slice(0, 300) : undefined;
}

/** A LaminaError for an unexpected response; reads (and so releases) the body. */
export async function responseError(res: Response, what: string): Promise<LaminaError> {
  let text = '';
  try {
    text = await res.text();
  } catch {
    /* the message below is enough */
  }
  const detail = registryMessage(text);
  const msg = `${what}: HTTP ${res.status}${detail ? ` ${detail}` : ''}`;
  if (res.status === 401 || res.status === 403) return new LaminaError('EAUTH', `${what}: ${res.status === 401 ? 'unauthorized' : 'denied'}${detail ? `: ${detail}` : ''}`);
  if (res.status === 404) return new LaminaError('ENOTFOUND', msg);
  return new LaminaError('EREGISTRY', msg);
}

/** Releases a response body we do not read (lets the connection be reused). */
export async function discard(res: Response): Promise<void> {
  try {
    await res.body?.cancel();
  } catch {
    /* already closed */
  }
}

export interface ManifestResponse {
  bytes: Buffer;
  mediaType: string;
  /** sha256 of the bytes (checked against the Docker-Content-Digest header). */
  digest: Digest;
}

export class RegistryClient {
  readonly endpoint: Endpoint;
  /** Repository path within the registry, e.g. library/alpine. */
  readonly repository: string;
  /** Full name, e.g. docker.io/library/alpine (distribution metadata's SourceRepository). */
  readonly name: string;
  readonly auth: Authenticator;
  private readonly scopes: string[];
  private readonly fetchFn: FetchFn;

  constructor(ref: Reference, actions: readonly Action[], opts: ClientOptions = {}) {
    this.endpoint = endpointFor(ref.domain, opts);
    this.repository = ref.path;
    this.name = fullName(ref);
    this.fetchFn = opts.fetch ?? fetch;
    const creds = opts.credentials === null ? undefined : (opts.credentials ?? findCredentials(ref.domain));
    this.auth = opts.authenticator ?? new Authenticator(ref.domain, creds, this.fetchFn);
    this.scopes = [repositoryScope(ref.path, actions)];
  }

  /** /v2/<repository>/<rest> as an absolute URL. */
  url(rest: string): string {
    return `${this.endpoint.base}/v2/${this.repository}/${rest}`;
  }

  /**
   * One API request. A 401 is answered with the credentials its challenge asks for and retried
   * once, unless the body is a stream (which cannot be sent twice); 2xx/3xx/4xx come back to the
   * caller, network failures become EREGISTRY.
   */
  async request(method: string, url: string, init: ApiRequest = {}): Promise<Response> {
    const scopes = [...this.scopes, ...(init.scopes ?? [])];
    const replayable = init.body === undefined || init.body === null || typeof init.body === 'string' || Buffer.isBuffer(init.body);
    let wanted: readonly string[] = scopes;
    for (let attempt = 0; ; attempt++) {
      const headers: Record<string, string> = { 'user-agent': USER_AGENT, ...init.headers };
      const authorization = await this.auth.authorization(wanted);
      if (authorization) headers.authorization = authorization;
      let res: Response;
      try {
        res = await this.fetchFn(url, {
          method,
          headers,
          body: init.body as BodyInit | null | undefined,
          redirect: 'follow',
          signal: init.signal,
          // Node's fetch streams a request body only in half-duplex mode.
          ...(init.body && !replayable ? { duplex: 'half' } : {}),
        } as globalThis.RequestInit);
      } catch (e) {
        if (init.signal?.aborted) throw init.signal.reason ?? e;
        // Marked transient: a blob download retries these (downloads.ts).
        throw Object.assign(new LaminaError('EREGISTRY', `${method} ${url}: ${describeFetchError(e)}`), { transient: true });
      }
      if (res.status !== 401 || attempt > 0 || !replayable) return res;
      const retry = await this.auth.challenged(res.headers.get('www-authenticate'), wanted, authorization);
      if (!retry) return res;
      await discard(res);
      wanted = retry;
    }
  }

  // ------------------------------------------------------------ manifests

  /** GET a manifest or index by tag or digest; verifies its digest (always computed from the bytes). */
  async getManifest(reference: string, what: string): Promise<ManifestResponse> {
    const res = await this.request('GET', this.url(`manifests/${reference}`), { headers: { accept: MANIFEST_ACCEPT.join(', ') } });
    if (res.status !== 200) {
      if (res.status === 404) {
        const err = await responseError(res, what);
        throw new LaminaError('ENOTFOUND', `manifest for ${what} not found: ${err.message.replace(`${what}: HTTP 404 `, '')}`);
      }
      throw await responseError(res, `manifest for ${what}`);
    }
    const length = Number(res.headers.get('content-length') ?? '0');
    if (length > MAX_MANIFEST_SIZE) {
      await discard(res);
      throw new LaminaError('EBADINPUT', `manifest for ${what} is ${length} bytes, more than the ${MAX_MANIFEST_SIZE} allowed`);
    }
    const bytes = Buffer.from(await res.arrayBuffer());
    if (bytes.length > MAX_MANIFEST_SIZE) throw new LaminaError('EBADINPUT', `manifest for ${what} is more than ${MAX_MANIFEST_SIZE} bytes`);
    const digest = 'sha256:' + createHash('sha256').update(bytes).digest('hex');
    if (isDigest(reference) && digest !== reference) {
      throw new LaminaError('EDIGEST', `manifest ${reference} of ${what} does not match its digest: the content hashes to ${digest}`);
    }
    const header = res.headers.get('docker-content-digest');
    if (header && header.startsWith('sha256:') && header !== digest) {
      throw new LaminaError('EDIGEST', `manifest for ${what}: the registry says its digest is ${header}, but the content hashes to ${digest}`);
    }
    const mediaType = (res.headers.get('content-type') ?? '').split(';')[0].trim();
    return { bytes, mediaType, digest };
  }

  /** PUT a manifest under a tag (or its digest); returns the digest the registry reports. */
  async putManifest(reference: string, bytes: Buffer, mediaType: string, what: string): Promise<Digest | undefined> {
    const res = await this.request('PUT', this.url(`manifests/${reference}`), { headers: { 'content-type': mediaType }, body: bytes });
    if (res.status !== 201 && res.status !== 200) throw await responseError(res, `pushing the manifest of ${what}`);
    await discard(res);
    return res.headers.get('docker-content-digest') ?? undefined;
  }

  // ------------------------------------------------------------ blobs

  /** HEAD a blob: its size, or undefined when the repository does not have it. */
  async statBlob(digest: Digest, signal?: AbortSignal): Promise<{ size: number } | undefined> {
    const res = await this.request('HEAD', this.url(`blobs/${digest}`), { signal });
    await discard(res);
    if (res.status === 404) return undefined;
    if (res.status !== 200) throw await responseError(res, `checking blob ${digest} in ${this.name}`);
    return { size: Number(res.headers.get('content-length') ?? '-1') };
  }

  /** GET a blob, from byte `offset` on when given (206 answers a range, 200 means the whole blob). */
  async getBlob(digest: Digest, opts: { offset?: number; end?: number; signal?: AbortSignal } = {}): Promise<Response> {
    const headers: Record<string, string> = {};
    if (opts.offset || opts.end !== undefined) headers.range = `bytes=${opts.offset ?? 0}-${opts.end ?? ''}`;
    const res = await this.request('GET', this.url(`blobs/${digest}`), { headers, signal: opts.signal });
    if (res.status !== 200 && res.status !== 206) throw await responseError(res, `fetching blob ${digest} from ${this.name}`);
    return res;
  }

  /** URL and headers (credentials included) for fetching a blob outside this client (the download worker). */
  async blobRequest(digest: Digest): Promise<{ url: string; headers: Record<string, string> }> {
    const headers: Record<string, string> = { 'user-agent': USER_AGENT };
    const authorization = await this.auth.authorization(this.scopes);
    if (authorization) headers.authorization = authorization;
    return { url: this.url(`blobs/${digest}`), headers };
  }

  /** A small blob (a config) read whole and verified against its digest. */
  async readBlob(digest: Digest, what: string, maxSize: number): Promise<Buffer> {
    const res = await this.getBlob(digest);
    const parts: Buffer[] = [];
    let n = 0;
    const hash = createHash('sha256');
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      n += chunk.length;
      if (n > maxSize) {
        await discard(res);
        throw new LaminaError('EBADINPUT', `${what} (${digest}) is larger than ${maxSize} bytes`);
      }
      const b = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
      hash.update(b);
      parts.push(b);
    }
    const got = 'sha256:' + hash.digest('hex');
    if (got !== digest) throw new LaminaError('EDIGEST', `${what} ${digest} does not match its digest: the content hashes to ${got}`);
    return Buffer.concat(parts, n);
  }

  /** The first bytes of a blob (to tell gzip, zstd and plain tar apart). */
  async blobHead(digest: Digest, n = 8): Promise<Buffer> {
    const res = await this.getBlob(digest, { offset: 0, end: n - 1 });
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    const parts: Buffer[] = [];
    let have = 0;
    try {
      while (have < n) {
        const { done, value } = await reader.read();
        if (done) break;
        parts.push(Buffer.from(value.buffer, value.byteOffset, value.byteLength));
        have += value.length;
      }
    } finally {
      await reader.cancel().catch(() => {});
    }
    return Buffer.concat(parts).subarray(0, n);
  }

  // ------------------------------------------------------------ uploads

  /** Resolves an upload Location (absolute or relative, usually carrying a query) against the API base. */
  private location(res: Response, what: string): string {
    const loc = res.headers.get('location');
    if (!loc) throw new LaminaError('EREGISTRY', `${what}: the registry answered ${res.status} without a Location`);
    return new URL(loc, this.endpoint.base + '/').toString();
  }

  /**
   * Starts an upload session, or mounts `mount.digest` from another repository of the same
   * registry (201: done, nothing to upload; 202: mounting was refused and this is a session).
   */
  async startUpload(mount?: { digest: Digest; from: string }, signal?: AbortSignal): Promise<{ mounted: true } | { mounted: false; location: string }> {
    let url = this.url('blobs/uploads/');
    const scopes: string[] = [];
    if (mount) {
      url += `?mount=${encodeURIComponent(mount.digest)}&from=${encodeURIComponent(mount.from)}`;
      scopes.push(repositoryScope(mount.from, ['pull']));
    }
    const res = await this.request('POST', url, { scopes, signal, headers: { 'content-length': '0' } });
    if (mount && res.status === 201) {
      await discard(res);
      return { mounted: true };
    }
    if (res.status !== 202) throw await responseError(res, `starting an upload to ${this.name}`);
    await discard(res);
    return { mounted: false, location: this.location(res, `starting an upload to ${this.name}`) };
  }

  /**
   * Sends a streamed body with node:http(s): a layer upload moves tens of megabytes, and fetch's
   * web-stream plumbing copies every chunk and costs about twice the CPU. A stream cannot be
   * replayed, so credentials must already be known (the upload's POST has settled them).
   */
  private async sendStream(method: string, url: string, headers: Record<string, string>, body: AsyncIterable<Uint8Array>, signal?: AbortSignal): Promise<Response> {
    const authorization = await this.auth.authorization(this.scopes);
    const u = new URL(url);
    const mod = u.protocol === 'https:' ? https : http;
    return new Promise<Response>((resolve, reject) => {
      const fail = (e: Error) => reject(signal?.aborted ? (signal.reason ?? e) : new LaminaError('EREGISTRY', `${method} ${url}: ${describeFetchError(e)}`));
      const req = mod.request(u, { method, signal, headers: { 'user-agent': USER_AGENT, ...headers, ...(authorization ? { authorization } : {}) } }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', fail);
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          const h = new Headers();
          for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) h.set(k, Array.isArray(v) ? v.join(', ') : v);
          const hasBody = chunks.length > 0 && ![101, 204, 205, 304].includes(status);
          resolve(new Response(hasBody ? Buffer.concat(chunks) : null, { status, headers: h }));
        });
      });
      req.on('error', fail);
      pipeline(Readable.from(body, { objectMode: false }), req).catch(fail);
    });
  }

  /**
   * PATCH data into an upload. With `range` it is one chunk with Content-Range/Content-Length
   * (chunked upload); without, the body streams as one request (Docker's streamed upload).
   * Returns the next Location.
   */
  async patchUpload(location: string, body: Buffer | AsyncIterable<Uint8Array>, range?: { start: number }, signal?: AbortSignal): Promise<string> {
    const headers: Record<string, string> = { 'content-type': 'application/octet-stream' };
    if (range && Buffer.isBuffer(body)) {
      headers['content-range'] = `${range.start}-${range.start + body.length - 1}`;
      headers['content-length'] = String(body.length);
    }
    const res = Buffer.isBuffer(body) ? await this.request('PATCH', location, { headers, body, signal }) : await this.sendStream('PATCH', location, headers, body, signal);
    if (res.status !== 202) throw await responseError(res, `uploading to ${this.name}`);
    await discard(res);
    return this.location(res, `uploading to ${this.name}`);
  }

  /** Closes an upload with PUT ?digest= (and the last bytes, or the whole blob for a monolithic upload). */
  async finishUpload(location: string, digest: Digest, body?: Buffer | AsyncIterable<Uint8Array>, length?: number, signal?: AbortSignal): Promise<void> {
    const url = new URL(location);
    url.searchParams.set('digest', digest);
    const headers: Record<string, string> = { 'content-type': 'application/octet-stream' };
    if (length !== undefined) headers['content-length'] = String(length);
    else if (body === undefined) headers['content-length'] = '0';
    const res = body === undefined || Buffer.isBuffer(body) ? await this.request('PUT', url.toString(), { headers, body, signal }) : await this.sendStream('PUT', url.toString(), headers, body, signal);
    if (res.status !== 201 && res.status !== 204) throw await responseError(res, `finishing the upload of ${digest} to ${this.name}`);
    await discard(res);
    const got = res.headers.get('docker-content-digest');
    if (got && got !== digest) throw new LaminaError('EDIGEST', `the registry stored ${got} for the upload of ${digest} to ${this.name}`);
  }

  /** Abandons an upload session (best effort). */
  async cancelUpload(location: string): Promise<void> {
    try {
      await discard(await this.request('DELETE', location));
    } catch {
      /* the registry expires it */
    }
  }
}
