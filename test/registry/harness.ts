// Test fixtures for the registry tests: the real Debian `docker-registry` (distribution 2.8) on
// 127.0.0.1 with its own config and storage in a fresh temp dir, a small HTTP proxy in front of
// it (counting requests, corrupting or slowing blobs, demanding Basic auth), a minimal token
// server issuing the RS256 JWTs the registry verifies, and helpers to run the lamina CLI.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { createHash, createSign, randomBytes } from 'node:crypto';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const FIXTURES = path.resolve(REPO, '../shared/fixtures/docker');

type After = { after: (fn: () => void | Promise<void>) => void };

export function tmpDir(t: After, prefix = 'lamina-reg-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export function have(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

async function waitFor(what: string, fn: () => Promise<boolean>, timeoutMs: number, proc?: ChildProcess, log?: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (proc && proc.exitCode !== null) throw new Error(`${what} exited with ${proc.exitCode}${log ? `:\n${fs.readFileSync(log, 'utf8').slice(-2000)}` : ''}`);
    try {
      if (await fn()) return;
    } catch {
      /* not up yet */
    }
    if (Date.now() > deadline) throw new Error(`${what} did not come up within ${timeoutMs} ms${log ? `:\n${fs.readFileSync(log, 'utf8').slice(-2000)}` : ''}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Stops a child by its pid: SIGTERM, then SIGKILL after `graceMs`. */
async function stopChild(child: ChildProcess, graceMs = 5000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  try {
    process.kill(child.pid!, 'SIGTERM');
  } catch {
    return;
  }
  const timer = setTimeout(() => {
    try {
      process.kill(child.pid!, 'SIGKILL');
    } catch {
      /* gone */
    }
  }, graceMs);
  await exited;
  clearTimeout(timer);
}

export interface TokenAuthConfig {
  realm: string;
  service: string;
  issuer: string;
  rootCertBundle: string;
}

export interface Registry {
  port: number;
  /** host:port as references spell it. */
  host: string;
  url: string;
  dataDir: string;
  stop(): Promise<void>;
}

/** Starts docker-registry on a free loopback port; stopped (by pid) and removed in t.after. */
export async function startRegistry(t: After, opts: { tokenAuth?: TokenAuthConfig; tls?: { cert: string; key: string } } = {}): Promise<Registry> {
  const dir = tmpDir(t, 'lamina-registry-');
  const dataDir = path.join(dir, 'data');
  fs.mkdirSync(dataDir);
  const port = await freePort();
  const auth = opts.tokenAuth
    ? `auth:\n  token:\n    realm: ${opts.tokenAuth.realm}\n    service: ${opts.tokenAuth.service}\n    issuer: ${opts.tokenAuth.issuer}\n    rootcertbundle: ${opts.tokenAuth.rootCertBundle}\n`
    : '';
  const config = `version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: ${dataDir}
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:${port}
  secret: lamina-test-${randomBytes(8).toString('hex')}
${opts.tls ? `  tls:\n    certificate: ${opts.tls.cert}\n    key: ${opts.tls.key}\n` : ''}${auth}`;
  const cfgFile = path.join(dir, 'config.yml');
  fs.writeFileSync(cfgFile, config);
  const log = path.join(dir, 'registry.log');
  const fd = fs.openSync(log, 'a');
  const child = spawn('docker-registry', ['serve', cfgFile], { stdio: ['ignore', fd, fd] });
  fs.closeSync(fd);
  const stop = () => stopChild(child);
  t.after(stop);
  const url = `${opts.tls ? 'https' : 'http'}://127.0.0.1:${port}`;
  const ca = opts.tls ? fs.readFileSync(opts.tls.cert) : undefined;
  await waitFor('docker-registry', async () => {
    if (ca) {
      // The certificate names a host, not 127.0.0.1: only check that TLS answers.
      const status = await new Promise<number>((resolve, reject) => {
        https.get(`${url}/v2/`, { ca, checkServerIdentity: () => undefined }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        }).on('error', reject);
      });
      return status === 200 || status === 401;
    }
    const res = await fetch(`${url}/v2/`);
    await res.arrayBuffer();
    return res.status === 200 || res.status === 401;
  }, 20_000, child, log);
  return { port, host: `127.0.0.1:${port}`, url, dataDir, stop };
}

export interface ProxyOptions {
  /** Flips one byte in the middle of this blob's body when it passes. */
  corruptBlob?: string;
  /** Sleeps this long after every `throttleBytes` of a blob body. */
  delayMs?: number;
  throttleBytes?: number;
  /** Demands these Basic credentials (401 with a Basic challenge otherwise). */
  basicAuth?: { username: string; password: string };
}

export interface Proxy {
  port: number;
  host: string;
  /** Every request seen: method and path (with query). */
  requests: Array<{ method: string; path: string; status?: number; range?: string }>;
  /** Blob GETs seen, by digest. */
  blobGets(): Map<string, number>;
  options: ProxyOptions;
  close(): Promise<void>;
}

/**
 * An HTTP proxy on a free loopback port in front of `target`. The Host header is passed on, so
 * the registry's absolute Location URLs point back at the proxy.
 */
export async function startProxy(t: After, target: Registry, options: ProxyOptions = {}): Promise<Proxy> {
  const requests: Proxy['requests'] = [];
  const sockets = new Set<net.Socket>();
  const server = http.createServer((req, res) => {
    const rec: Proxy['requests'][number] = { method: req.method!, path: req.url!, range: req.headers.range };
    requests.push(rec);
    const o = proxy.options;
    if (o.basicAuth) {
      const want = 'Basic ' + Buffer.from(`${o.basicAuth.username}:${o.basicAuth.password}`).toString('base64');
      if (req.headers.authorization !== want) {
        rec.status = 401;
        res.writeHead(401, { 'www-authenticate': 'Basic realm="lamina-test"', 'content-type': 'application/json', 'docker-distribution-api-version': 'registry/2.0' });
        res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] }));
        req.resume();
        return;
      }
    }
    const headers = { ...req.headers };
    if (o.basicAuth) delete headers.authorization;
    const up = http.request({ host: '127.0.0.1', port: target.port, method: req.method, path: req.url, headers }, async (upRes) => {
      rec.status = upRes.statusCode;
      res.writeHead(upRes.statusCode!, upRes.headers);
      const blob = /\/blobs\/(sha256:[0-9a-f]{64})$/.exec(req.url!.split('?')[0])?.[1];
      const isBlobBody = req.method === 'GET' && blob !== undefined && (upRes.statusCode === 200 || upRes.statusCode === 206);
      if (!isBlobBody) {
        upRes.pipe(res);
        return;
      }
      const total = Number(upRes.headers['content-length'] ?? '0');
      const flipAt = blob === o.corruptBlob && !req.headers.range ? Math.floor(total / 2) : -1;
      let seen = 0;
      let sinceDelay = 0;
      upRes.pause();
      try {
        for await (const c of upRes as AsyncIterable<Buffer>) {
          let chunk = c;
          if (flipAt >= seen && flipAt < seen + chunk.length) {
            chunk = Buffer.from(chunk);
            chunk[flipAt - seen] ^= 0xff;
          }
          seen += chunk.length;
          if (o.delayMs && o.throttleBytes) {
            // Sent in throttleBytes pieces with a pause after each.
            for (let off = 0; off < chunk.length; ) {
              const piece = chunk.subarray(off, off + (o.throttleBytes - sinceDelay));
              off += piece.length;
              sinceDelay += piece.length;
              if (!res.write(piece)) await new Promise((r) => res.once('drain', r));
              if (sinceDelay >= o.throttleBytes) {
                sinceDelay = 0;
                await new Promise((r) => setTimeout(r, o.delayMs));
              }
              if (res.destroyed) return;
            }
          } else if (!res.write(chunk)) {
            await new Promise((r) => res.once('drain', r));
          }
        }
        res.end();
      } catch {
        res.destroy();
      }
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  const port = await new Promise<number>((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port)));
  const close = () =>
    new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    });
  t.after(close);
  const proxy: Proxy = {
    port,
    host: `127.0.0.1:${port}`,
    requests,
    options,
    blobGets() {
      const m = new Map<string, number>();
      for (const r of requests) {
        const d = /\/blobs\/(sha256:[0-9a-f]{64})$/.exec(r.path.split('?')[0])?.[1];
        if (r.method === 'GET' && d) m.set(d, (m.get(d) ?? 0) + 1);
      }
      return m;
    },
    close,
  };
  return proxy;
}

// ---------------------------------------------------------------- token server

function b64url(b: Buffer | string): string {
  return Buffer.from(b).toString('base64url');
}

export interface TokenServer {
  url: string;
  realm: string;
  service: string;
  issuer: string;
  rootCertBundle: string;
  /** Every token request: the scopes asked for and the Basic user, if any. */
  requests: Array<{ scopes: string[]; user?: string; granted: boolean }>;
}

/**
 * A minimal token server (distribution's token.md): GET <realm>?service=&scope=… answers
 * {"token"} with an RS256 JWT whose x5c header carries a self-signed certificate (made here with
 * openssl) that the registry trusts through its rootcertbundle. With `users`, Basic credentials
 * are required and checked; every requested action is granted to a known user.
 */
export async function startTokenServer(t: After, opts: { users?: Record<string, string>; anonymousPull?: boolean } = {}): Promise<TokenServer> {
  const dir = tmpDir(t, 'lamina-token-');
  const key = path.join(dir, 'key.pem');
  const cert = path.join(dir, 'cert.pem');
  const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=lamina-test-token-issuer'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`openssl req failed: ${r.stderr}`);
  const keyPem = fs.readFileSync(key, 'utf8');
  const der = Buffer.from(fs.readFileSync(cert, 'utf8').replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
  const service = 'lamina-test-registry';
  const issuer = 'lamina-test-issuer';
  const requests: TokenServer['requests'] = [];
  const server = http.createServer((req, res) => {
    const u = new URL(req.url!, 'http://x');
    const scopes = u.searchParams.getAll('scope').flatMap((s) => s.split(' ')).filter(Boolean);
    let user: string | undefined;
    const authz = req.headers.authorization;
    if (authz?.startsWith('Basic ')) {
      const [name, ...rest] = Buffer.from(authz.slice(6), 'base64').toString().split(':');
      if (opts.users?.[name] !== rest.join(':')) {
        requests.push({ scopes, user: name, granted: false });
        res.writeHead(401, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ details: 'incorrect username or password' }));
        return;
      }
      user = name;
    } else if (opts.users && !opts.anonymousPull) {
      requests.push({ scopes, granted: false });
      res.writeHead(401, { 'content-type': 'application/json', 'www-authenticate': 'Basic realm="token"' });
      res.end(JSON.stringify({ details: 'authentication required' }));
      return;
    }
    const access = scopes.map((s) => {
      const [type, ...rest] = s.split(':');
      const actions = rest.pop()!.split(',');
      const granted = user ? actions : actions.filter((a) => a === 'pull');
      return { type, name: rest.join(':'), actions: granted };
    });
    requests.push({ scopes, user, granted: true });
    const now = Math.floor(Date.now() / 1000);
    const header = { alg: 'RS256', typ: 'JWT', x5c: [der.toString('base64')] };
    const claims = { iss: issuer, sub: user ?? '', aud: service, exp: now + 300, nbf: now - 10, iat: now, jti: randomBytes(8).toString('hex'), access };
    const signingInput = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    const sig = createSign('RSA-SHA256').update(signingInput).sign(keyPem);
    const token = `${signingInput}.${b64url(sig)}`;
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ token, access_token: token, expires_in: 300, issued_at: new Date(now * 1000).toISOString() }));
  });
  const port = await new Promise<number>((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port)));
  t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const url = `http://127.0.0.1:${port}`;
  return { url, realm: `${url}/token`, service, issuer, rootCertBundle: cert, requests };
}

// ---------------------------------------------------------------- CLI

/** lamina's CLI from source. */
export function cliEntry(): string {
  return path.join(REPO, 'src/cli/main.ts');
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs `node --import tsx <cli> --root ROOT args…`; env adds to process.env. */
export function runCli(root: string, args: string[], opts: { env?: Record<string, string>; input?: string } = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = spawnCli(root, args, opts);
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (c) => (stdout += c));
    child.stderr!.on('data', (c) => (stderr += c));
    if (opts.input !== undefined) child.stdin!.end(opts.input);
    else child.stdin!.end();
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

export function spawnCli(root: string, args: string[], opts: { env?: Record<string, string> } = {}): ChildProcess {
  return spawn(process.execPath, ['--import', 'tsx', cliEntry(), '--root', root, ...args], {
    cwd: REPO,
    env: { ...process.env, LAMINA_ROOT: '', ...opts.env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
}

// ---------------------------------------------------------------- store snapshots

/**
 * Every path under `root` with its type, mode, size and (for files) content hash: two equal
 * snapshots mean nothing in the store changed.
 */
export function snapshot(root: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (dir: string) => {
    for (const name of fs.readdirSync(dir).sort()) {
      const p = path.join(dir, name);
      const st = fs.lstatSync(p);
      const rel = path.relative(root, p);
      if (st.isDirectory()) {
        out.set(rel, `dir ${(st.mode & 0o7777).toString(8)}`);
        walk(p);
      } else if (st.isFile()) {
        out.set(rel, `file ${(st.mode & 0o7777).toString(8)} ${st.size} ${createHash('sha256').update(fs.readFileSync(p)).digest('hex')}`);
      } else if (st.isSymbolicLink()) {
        out.set(rel, `link ${fs.readlinkSync(p)}`);
      } else {
        out.set(rel, `other ${st.mode.toString(8)} ${st.rdev}`);
      }
    }
  };
  walk(root);
  return out;
}

/** Differences between two snapshots, for assertion messages. */
export function snapshotDiff(a: Map<string, string>, b: Map<string, string>): string[] {
  const diffs: string[] = [];
  for (const [k, v] of a) if (b.get(k) !== v) diffs.push(`${k}: ${v} -> ${b.get(k) ?? 'missing'}`);
  for (const [k, v] of b) if (!a.has(k)) diffs.push(`${k}: new ${v}`);
  return diffs;
}

// ---------------------------------------------------------------- test images

export interface GeneratedImage {
  /** OCI layout directory (skopeo's `oci:<dir>:<tag>`). */
  layout: string;
  tag: string;
  configDigest: string;
  diffIDs: string[];
  blobDigests: string[];
  manifestDigest: string;
}

/**
 * Builds an OCI image layout: each layer is a directory tree given as {path: content}, packed
 * by GNU tar (the oracle for the layer tar), compressed with gzip (`compression` 'zstd' uses the
 * zstd program, 'none' keeps the tar), config and manifest written by hand.
 */
export function makeOCIImage(dir: string, layers: Array<Record<string, Buffer | string>>, opts: { tag?: string; compression?: 'gzip' | 'zstd' | 'none'; architecture?: string } = {}): GeneratedImage {
  const tag = opts.tag ?? 'latest';
  const layout = path.join(dir, 'layout');
  const blobs = path.join(layout, 'blobs', 'sha256');
  fs.mkdirSync(blobs, { recursive: true });
  const put = (b: Buffer) => {
    const d = 'sha256:' + createHash('sha256').update(b).digest('hex');
    fs.writeFileSync(path.join(blobs, d.slice(7)), b);
    return d;
  };
  const diffIDs: string[] = [];
  const descs: Array<{ mediaType: string; digest: string; size: number }> = [];
  for (const [i, files] of layers.entries()) {
    const tree = path.join(dir, `tree-${i}`);
    fs.mkdirSync(tree, { recursive: true });
    for (const [p, content] of Object.entries(files)) {
      fs.mkdirSync(path.dirname(path.join(tree, p)), { recursive: true });
      fs.writeFileSync(path.join(tree, p), content);
    }
    const tar = spawnSync('tar', ['-C', tree, '--sort=name', '--owner=0', '--group=0', '--numeric-owner', '--mtime=@1600000000', '-cf', '-', '.'], { maxBuffer: 1 << 30 }).stdout;
    diffIDs.push('sha256:' + createHash('sha256').update(tar).digest('hex'));
    const c = opts.compression ?? 'gzip';
    const blob = c === 'gzip' ? spawnSync('gzip', ['-c', '-n'], { input: tar, maxBuffer: 1 << 30 }).stdout : c === 'zstd' ? spawnSync('zstd', ['-q', '-c'], { input: tar, maxBuffer: 1 << 30 }).stdout : tar;
    const mediaType = `application/vnd.oci.image.layer.v1.tar${c === 'gzip' ? '+gzip' : c === 'zstd' ? '+zstd' : ''}`;
    descs.push({ mediaType, digest: put(blob), size: blob.length });
  }
  const config = Buffer.from(JSON.stringify({
    architecture: opts.architecture ?? 'amd64',
    os: 'linux',
    config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'] },
    rootfs: { type: 'layers', diff_ids: diffIDs },
    history: diffIDs.map((_, i) => ({ created: '2020-09-13T12:26:40Z', created_by: `layer ${i}` })),
  }));
  const configDigest = put(config);
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.length },
    layers: descs,
  }));
  const manifestDigest = put(manifest);
  fs.writeFileSync(path.join(layout, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  fs.writeFileSync(path.join(layout, 'index.json'), JSON.stringify({
    schemaVersion: 2,
    manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: manifestDigest, size: manifest.length, annotations: { 'org.opencontainers.image.ref.name': tag } }],
  }));
  return { layout, tag, configDigest, diffIDs, blobDigests: descs.map((d) => d.digest), manifestDigest };
}

/** skopeo copy oci:<layout>:<tag> → docker://<dest> over plain HTTP; extra args e.g. ['--format', 'v2s2']. */
export function skopeoPush(img: GeneratedImage, dest: string, extra: string[] = []): void {
  const r = spawnSync('skopeo', ['copy', '-q', '--dest-tls-verify=false', ...extra, `oci:${img.layout}:${img.tag}`, `docker://${dest}`], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`skopeo copy to ${dest} failed: ${r.stderr}`);
}

/** Deterministic pseudo-random bytes (so layers are incompressible but reproducible). */
export function noise(n: number, seed: string): Buffer {
  const out = Buffer.allocUnsafe(n);
  let block = createHash('sha256').update(seed).digest();
  for (let off = 0; off < n; off += 32) {
    block.copy(out, off, 0, Math.min(32, n - off));
    block = createHash('sha256').update(block).digest();
  }
  return out;
}

/**
 * Checks that a store is consistent: every layerdb entry has its layer directory and short link,
 * no staging is left, every overlay2 directory belongs to a layer, every layer tar replays to its
 * diffID, and there are no download leftovers. Returns the problems found.
 */
export async function storeProblems(store: import('../../src/store.js').Store): Promise<string[]> {
  const problems: string[] = [];
  const layers = store.layers.list();
  const cacheIDs = new Set(layers.map((l) => l.cacheID));
  for (const l of layers) {
    if (!store.driver.exists(l.cacheID)) problems.push(`layer ${l.chainID}: directory ${l.cacheID} missing`);
    if (l.parent && !store.layers.has(l.parent)) problems.push(`layer ${l.chainID}: parent ${l.parent} missing`);
    const h = createHash('sha256');
    for await (const c of (await store.layers.openTar(l.chainID)) as AsyncIterable<Buffer>) h.update(c);
    if ('sha256:' + h.digest('hex') !== l.diffID) problems.push(`layer ${l.chainID}: tar does not replay to ${l.diffID}`);
  }
  for (const name of fs.readdirSync(store.driver.home)) {
    if (name === 'l') continue;
    if (!cacheIDs.has(name)) problems.push(`overlay2/${name} belongs to no layer`);
  }
  for (const link of fs.readdirSync(path.join(store.driver.home, 'l'))) {
    if (!fs.existsSync(path.join(store.driver.home, 'l', link))) problems.push(`overlay2/l/${link} dangles`);
  }
  const staging = fs.readdirSync(path.join(store.layers.dir, 'tmp'));
  if (staging.length) problems.push(`layerdb/tmp holds ${staging.join(', ')}`);
  if (fs.existsSync(path.join(store.root, 'downloads'))) problems.push('downloads/ left behind');
  return problems;
}

/**
 * Pushes an OCI layout's image with plain fetch calls (POST + PUT ?digest= per blob, then the
 * manifest), keeping every blob as it is: skopeo always compresses plain layers on the way.
 */
export async function rawPush(img: GeneratedImage, registryURL: string, repo: string, tag: string): Promise<void> {
  const blob = (d: string) => fs.readFileSync(path.join(img.layout, 'blobs/sha256', d.slice(7)));
  const manifest = blob(img.manifestDigest);
  const m = JSON.parse(manifest.toString());
  for (const d of [m.config.digest, ...m.layers.map((l: { digest: string }) => l.digest)]) {
    const start = await fetch(`${registryURL}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
    await start.arrayBuffer();
    if (start.status !== 202) throw new Error(`POST upload: ${start.status}`);
    const loc = new URL(start.headers.get('location')!, registryURL);
    loc.searchParams.set('digest', d);
    const put = await fetch(loc, { method: 'PUT', body: blob(d), headers: { 'content-type': 'application/octet-stream' } });
    await put.arrayBuffer();
    if (put.status !== 201) throw new Error(`PUT blob ${d}: ${put.status}`);
  }
  const res = await fetch(`${registryURL}/v2/${repo}/manifests/${tag}`, { method: 'PUT', body: manifest, headers: { 'content-type': m.mediaType } });
  const text = await res.text();
  if (res.status !== 201) throw new Error(`PUT manifest: ${res.status} ${text}`);
}

/** A name other than localhost that /etc/hosts maps to 127.0.0.1 (so the registry host is neither loopback by name nor an IP). */
export function loopbackAlias(): string | undefined {
  let hosts = '';
  try {
    hosts = fs.readFileSync('/etc/hosts', 'utf8');
  } catch {
    return undefined;
  }
  for (const line of hosts.split('\n')) {
    const [ip, ...names] = line.replace(/#.*/, '').trim().split(/\s+/);
    if (ip !== '127.0.0.1') continue;
    const name = names.find((n) => n && n !== 'localhost' && !n.includes('localhost') && /^[a-z0-9-]+$/i.test(n));
    if (name) return name;
  }
  return undefined;
}

/** A self-signed certificate for `host` (openssl), as {cert, key} file paths. */
export function selfSignedCert(dir: string, host: string): { cert: string; key: string } {
  const cert = path.join(dir, 'tls-cert.pem');
  const key = path.join(dir, 'tls-key.pem');
  const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', `/CN=${host}`, '-addext', `subjectAltName=DNS:${host}`], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`openssl req failed: ${r.stderr}`);
  return { cert, key };
}
