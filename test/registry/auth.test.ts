// Authentication against real servers: the Debian docker-registry configured for token auth,
// with a minimal token server (in the test) issuing RS256 JWTs the registry verifies against a
// certificate made with openssl; Basic auth demanded by a proxy; login/logout writing a
// docker-compatible config.json; anonymous access refused with a clear message.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Store } from '../../src/store.js';
import { pullImage } from '../../src/transports/registry/pull.js';
import { pushImage } from '../../src/transports/registry/push.js';
import { parseChallenges } from '../../src/transports/registry/auth.js';
import { FIXTURES, loopbackAlias, makeOCIImage, runCli, selfSignedCert, startProxy, startRegistry, startTokenServer, tmpDir } from './harness.js';

const REFAPP = path.join(FIXTURES, 'refapp_1.docker-save.tar.gz');

test('WWW-Authenticate challenges parse as distribution and Docker Hub send them', () => {
  assert.deepEqual(parseChallenges('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"'), [
    { scheme: 'bearer', params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:library/alpine:pull' } },
  ]);
  assert.deepEqual(parseChallenges('Basic realm="Registry Realm", Bearer realm="http://a/t",error="insufficient_scope",scope="repository:x:pull,push"'), [
    { scheme: 'basic', params: { realm: 'Registry Realm' } },
    { scheme: 'bearer', params: { realm: 'http://a/t', error: 'insufficient_scope', scope: 'repository:x:pull,push' } },
  ]);
  assert.deepEqual(parseChallenges('Bearer realm="a\\"b"'), [{ scheme: 'bearer', params: { realm: 'a"b' } }]);
});

test('token auth: the registry verifies the JWTs, push needs credentials, pull works anonymously', async (t) => {
  const tokens = await startTokenServer(t, { users: { alice: 's3cret' }, anonymousPull: true });
  const reg = await startRegistry(t, { tokenAuth: { realm: tokens.realm, service: tokens.service, issuer: tokens.issuer, rootCertBundle: tokens.rootCertBundle } });
  // The registry really demands a token.
  const ping = await fetch(`${reg.url}/v2/`);
  await ping.arrayBuffer();
  assert.equal(ping.status, 401);
  assert.match(ping.headers.get('www-authenticate') ?? '', /^Bearer realm="http:\/\/127\.0\.0\.1:\d+\/token",service="lamina-test-registry"/);

  const dir = tmpDir(t);
  const store = Store.open(path.join(dir, 'root'));
  const [img] = await store.load(REFAPP);
  const name = `${reg.host}/team/app:1`;
  store.tag(img.id, name);

  // Anonymous: the token server grants pull only, so the registry refuses the upload.
  await assert.rejects(pushImage(store, name, { credentials: null }), (e: Error & { code?: string }) => {
    assert.equal(e.code, 'EAUTH');
    assert.match(e.message, /unauthorized|denied/);
    return true;
  });
  // Wrong password: the token server refuses, named in the message.
  await assert.rejects(pushImage(store, name, { credentials: { username: 'alice', password: 'wrong' } }), /token server at http:\/\/127\.0\.0\.1:\d+\/token refused the credentials \(HTTP 401\)/);

  const pushed = await pushImage(store, name, { credentials: { username: 'alice', password: 's3cret' } });
  const granted = tokens.requests.filter((r) => r.user === 'alice' && r.granted);
  assert.ok(granted.some((r) => r.scopes.includes('repository:team/app:pull,push')), JSON.stringify(tokens.requests));

  // Pull anonymously (pull-only token), into another root.
  const other = Store.open(path.join(dir, 'other'));
  const pulled = await pullImage(other, name, { credentials: null });
  assert.equal(pulled.id, img.id);
  assert.equal(pulled.digest, pushed.digest);
  assert.ok(tokens.requests.some((r) => !r.user && r.granted && r.scopes.includes('repository:team/app:pull')));

  // Pushing to a second repository mounts from the first: the token covers both scopes.
  store.tag(img.id, `${reg.host}/team/copy:1`);
  const mounted = await pushImage(store, `${reg.host}/team/copy:1`, { credentials: { username: 'alice', password: 's3cret' } });
  assert.ok(mounted.layers.every((l) => l.outcome === 'mounted'));
  assert.ok(tokens.requests.some((r) => r.scopes.includes('repository:team/app:pull') && r.scopes.includes('repository:team/copy:pull,push')));
});

test('login stores docker-compatible credentials that push and pull then use; logout removes them', async (t) => {
  const tokens = await startTokenServer(t, { users: { bob: 'hunter2' } });
  const reg = await startRegistry(t, { tokenAuth: { realm: tokens.realm, service: tokens.service, issuer: tokens.issuer, rootCertBundle: tokens.rootCertBundle } });
  const dir = tmpDir(t);
  const configHome = path.join(dir, 'xdg');
  const env = { XDG_CONFIG_HOME: configHome, DOCKER_CONFIG: path.join(dir, 'no-docker') };
  const root = path.join(dir, 'root');
  const store = Store.open(root);
  const [img] = await store.load(REFAPP);
  store.tag(img.id, `${reg.host}/private/app:1`);

  // Without credentials nothing works (no anonymous pull here).
  const denied = await runCli(root, ['push', `${reg.host}/private/app:1`], { env });
  assert.equal(denied.code, 1);
  assert.match(denied.stderr, /^Error: .*refused anonymous access \(HTTP 401\)/m);

  const bad = await runCli(root, ['login', '-u', 'bob', '--password-stdin', reg.host], { env, input: 'nope\n' });
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /refused the credentials/);
  assert.equal(fs.existsSync(path.join(configHome, 'lamina/config.json')), false);

  const ok = await runCli(root, ['login', '-u', 'bob', '--password-stdin', reg.host], { env, input: 'hunter2\n' });
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(ok.stdout, 'Login Succeeded\n');
  const file = path.join(configHome, 'lamina/config.json');
  assert.equal(fs.statSync(file).mode & 0o777, 0o600);
  assert.deepEqual(JSON.parse(fs.readFileSync(file, 'utf8')), { auths: { [reg.host]: { auth: Buffer.from('bob:hunter2').toString('base64') } } });

  const push = await runCli(root, ['push', `${reg.host}/private/app:1`], { env });
  assert.equal(push.code, 0, push.stderr);
  const pull = await runCli(path.join(dir, 'other'), ['pull', `${reg.host}/private/app:1`], { env });
  assert.equal(pull.code, 0, pull.stderr);

  const out = await runCli(root, ['logout', reg.host], { env });
  assert.equal(out.stdout, `Removing login credentials for ${reg.host}\n`);
  assert.deepEqual(JSON.parse(fs.readFileSync(file, 'utf8')), { auths: {} });
  const again = await runCli(root, ['logout', reg.host], { env });
  assert.equal(again.stdout, `Not logged in to ${reg.host}\n`);

  // Docker's own config.json is read too (here through DOCKER_CONFIG).
  fs.mkdirSync(env.DOCKER_CONFIG);
  fs.writeFileSync(path.join(env.DOCKER_CONFIG, 'config.json'), JSON.stringify({ auths: { [`http://${reg.host}`]: { auth: Buffer.from('bob:hunter2').toString('base64') } } }));
  const viaDocker = await runCli(path.join(dir, 'third'), ['pull', `${reg.host}/private/app:1`], { env });
  assert.equal(viaDocker.code, 0, viaDocker.stderr);
});

test('basic auth: credentials are sent when the registry asks for them', async (t) => {
  const reg = await startRegistry(t);
  const proxy = await startProxy(t, reg, { basicAuth: { username: 'carol', password: 'pw' } });
  const dir = tmpDir(t);
  const img = makeOCIImage(path.join(dir, 'img'), [{ 'hello.txt': 'hello\n' }], { tag: 'b' });
  const store = Store.open(path.join(dir, 'root'));
  // Uploaded through lamina itself: load the layout, push through the proxy with credentials.
  const [loaded] = await store.load(img.layout);
  store.tag(loaded.id, `${proxy.host}/basic:1`);
  await assert.rejects(pushImage(store, `${proxy.host}/basic:1`, { credentials: null }), /unauthorized/);
  await assert.rejects(pushImage(store, `${proxy.host}/basic:1`, { credentials: { username: 'carol', password: 'bad' } }), /unauthorized/);
  await pushImage(store, `${proxy.host}/basic:1`, { credentials: { username: 'carol', password: 'pw' } });
  const other = Store.open(path.join(dir, 'other'));
  const pulled = await pullImage(other, `${proxy.host}/basic:1`, { credentials: { username: 'carol', password: 'pw' } });
  assert.equal(pulled.id, img.configDigest);
  // login checks Basic credentials against /v2/.
  const env = { XDG_CONFIG_HOME: path.join(dir, 'xdg'), DOCKER_CONFIG: path.join(dir, 'no-docker') };
  const bad = await runCli(path.join(dir, 'r'), ['login', '-u', 'carol', '-p', 'bad', proxy.host], { env });
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /incorrect username or password/);
  const ok = await runCli(path.join(dir, 'r'), ['login', '-u', 'carol', '-p', 'pw', proxy.host], { env });
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stderr, /WARNING! Using --password via the CLI is insecure/);
});

test('HTTPS by default (trusting NODE_EXTRA_CA_CERTS), plain HTTP only for loopback or --insecure-registry', { skip: !loopbackAlias() && 'no non-localhost name for 127.0.0.1 in /etc/hosts' }, async (t) => {
  const alias = loopbackAlias()!;
  const dir = tmpDir(t);
  const tls = selfSignedCert(dir, alias);
  const reg = await startRegistry(t, { tls });
  const host = `${alias}:${reg.port}`;
  const root = path.join(dir, 'root');
  const store = Store.open(root);
  const [img] = await store.load(REFAPP);
  store.tag(img.id, `${host}/secure/app:1`);
  const env = { NODE_EXTRA_CA_CERTS: tls.cert, XDG_CONFIG_HOME: path.join(dir, 'xdg'), DOCKER_CONFIG: path.join(dir, 'nodocker') };

  // Unknown CA: refused by TLS verification, said so.
  const untrusted = await runCli(root, ['push', `${host}/secure/app:1`], { env: { ...env, NODE_EXTRA_CA_CERTS: '' } });
  assert.equal(untrusted.code, 1);
  assert.match(untrusted.stderr, new RegExp(`https://${alias}:${reg.port}/v2/secure/app/blobs/uploads/: .*(self.signed|certificate)`, 'i'));
  // Trusted: push and pull over HTTPS.
  const push = await runCli(root, ['push', `${host}/secure/app:1`], { env });
  assert.equal(push.code, 0, push.stderr);
  const pull = await runCli(path.join(dir, 'other'), ['pull', `${host}/secure/app:1`], { env });
  assert.equal(pull.code, 0, pull.stderr);
  assert.equal(Store.open(path.join(dir, 'other')).resolveImage(`${host}/secure/app:1`), img.id);
  // --insecure-registry makes it plain HTTP, which this TLS registry does not speak.
  const insecure = await runCli(path.join(dir, 'third'), ['pull', '--insecure-registry', host, `${host}/secure/app:1`], { env });
  assert.equal(insecure.code, 1);
  assert.match(insecure.stderr, /HTTP 400 Client sent an HTTP request to an HTTPS server/);
});
