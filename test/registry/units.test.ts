// The pieces around the protocol: where a reference's registry is and how it is reached,
// credentials from lamina's and Docker's config files and credential helpers, Docker's
// distribution metadata files, manifest parsing and platform choice.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { parseReference } from '../../src/images/reference.js';
import { endpointFor, authKeyFor, normalizeAuthKey } from '../../src/transports/registry/endpoint.js';
import { RegistryClient } from '../../src/transports/registry/client.js';
import { findCredentials, storeCredentials, eraseCredentials } from '../../src/transports/registry/credentials.js';
import { DistributionMetadata, checkHMAC, computeHMAC, hmacKey } from '../../src/images/distribution.js';
import { buildManifest, parseManifest, parsePlatform, selectPlatform } from '../../src/transports/registry/manifest.js';
import { tmpDir } from './harness.js';

const d = (c: string) => 'sha256:' + c.repeat(64);

test('Docker Hub names and endpoints', () => {
  const alpine = new RegistryClient(parseReference('alpine'), ['pull'], { credentials: null });
  assert.equal(alpine.endpoint.base, 'https://registry-1.docker.io');
  assert.equal(alpine.repository, 'library/alpine');
  assert.equal(alpine.name, 'docker.io/library/alpine');
  assert.equal(new RegistryClient(parseReference('index.docker.io/user/app:1'), ['pull'], { credentials: null }).url('manifests/1'), 'https://registry-1.docker.io/v2/user/app/manifests/1');
  assert.equal(endpointFor('registry.example.com:5000').base, 'https://registry.example.com:5000');
  assert.equal(endpointFor('localhost:5000').base, 'http://localhost:5000');
  assert.equal(endpointFor('127.0.0.1:5000').base, 'http://127.0.0.1:5000');
  assert.equal(endpointFor('127.1.2.3').base, 'http://127.1.2.3');
  assert.equal(endpointFor('[::1]:5000').base, 'http://[::1]:5000');
  assert.equal(endpointFor('reg.lan:5000', { insecureRegistries: ['reg.lan:5000'] }).base, 'http://reg.lan:5000');
  assert.equal(endpointFor('reg.lan:5000', { insecureRegistries: ['reg.lan'] }).base, 'http://reg.lan:5000');
  assert.equal(endpointFor('reg.lan:5000', { insecureRegistries: ['other.lan'] }).base, 'https://reg.lan:5000');
  assert.equal(authKeyFor('docker.io'), 'https://index.docker.io/v1/');
  assert.equal(normalizeAuthKey('https://index.docker.io/v1/'), 'docker.io');
  assert.equal(normalizeAuthKey('http://reg.lan:5000/v2/'), 'reg.lan:5000');
});

test('credentials: lamina config first, then Docker config and its credential helpers', (t) => {
  const dir = tmpDir(t);
  const saved = { XDG_CONFIG_HOME: process.env.XDG_CONFIG_HOME, DOCKER_CONFIG: process.env.DOCKER_CONFIG, PATH: process.env.PATH, LAMINA_CONFIG: process.env.LAMINA_CONFIG };
  t.after(() => {
    for (const [k, v] of Object.entries(saved)) if (v === undefined) delete process.env[k]; else process.env[k] = v;
  });
  delete process.env.LAMINA_CONFIG;
  process.env.XDG_CONFIG_HOME = path.join(dir, 'xdg');
  process.env.DOCKER_CONFIG = path.join(dir, 'docker');
  fs.mkdirSync(process.env.DOCKER_CONFIG);
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  fs.writeFileSync(path.join(process.env.DOCKER_CONFIG, 'config.json'), JSON.stringify({
    auths: { 'https://index.docker.io/v1/': { auth: b64('hubuser:hubpw') }, 'reg.lan:5000': { auth: b64('a:b:c') } },
    credHelpers: { 'helped.lan': 'lamtest' },
  }));
  assert.deepEqual(findCredentials('docker.io'), { source: path.join(dir, 'docker/config.json'), auth: b64('hubuser:hubpw'), username: 'hubuser', password: 'hubpw' });
  assert.equal(findCredentials('reg.lan:5000')?.password, 'b:c', 'passwords may contain colons');
  assert.equal(findCredentials('nowhere.lan'), undefined);

  // A credential helper on PATH (docker-credential-<name> get, server URL on stdin).
  const bin = path.join(dir, 'bin');
  fs.mkdirSync(bin);
  fs.writeFileSync(path.join(bin, 'docker-credential-lamtest'), '#!/bin/sh\nread server\n[ "$1" = get ] && [ "$server" = helped.lan ] && echo \'{"ServerURL":"helped.lan","Username":"<token>","Secret":"refresh-me"}\' && exit 0\necho "credentials not found in native keychain"; exit 1\n', { mode: 0o755 });
  process.env.PATH = `${bin}:${saved.PATH}`;
  assert.deepEqual(findCredentials('helped.lan'), { identitytoken: 'refresh-me', source: 'docker-credential-lamtest' });

  // lamina's own file wins and is written docker-compatibly.
  const file = storeCredentials('reg.lan:5000', 'mine', 'pw');
  assert.equal(file, path.join(dir, 'xdg/lamina/config.json'));
  assert.equal(fs.readFileSync(file, 'utf8'), `{\n\t"auths": {\n\t\t"reg.lan:5000": {\n\t\t\t"auth": "${b64('mine:pw')}"\n\t\t}\n\t}\n}`);
  assert.equal(findCredentials('reg.lan:5000')?.username, 'mine');
  assert.equal(eraseCredentials('reg.lan:5000'), true);
  assert.equal(findCredentials('reg.lan:5000')?.username, 'a');
  assert.equal(eraseCredentials('reg.lan:5000'), false);
});

test("Docker's distribution metadata: file layout, Go JSON, 50-entry cap, HMAC", (t) => {
  const dir = tmpDir(t);
  const dist = new DistributionMetadata(path.join(dir, 'distribution'));
  const diffID = d('a');
  dist.add(diffID, { Digest: d('b'), SourceRepository: 'docker.io/library/alpine', HMAC: '' });
  assert.equal(fs.readFileSync(path.join(dir, 'distribution/diffid-by-digest/sha256', 'b'.repeat(64)), 'utf8'), diffID);
  const file = path.join(dir, 'distribution/v2metadata-by-diffid/sha256', 'a'.repeat(64));
  assert.equal(fs.readFileSync(file, 'utf8'), `[{"Digest":"${d('b')}","SourceRepository":"docker.io/library/alpine","HMAC":""}]`);
  assert.equal(fs.statSync(file).mode & 0o777, 0o644);
  // Re-adding an entry moves it last; more than 50 keep the newest 50.
  for (let i = 0; i < 60; i++) dist.add(diffID, { Digest: d('c'), SourceRepository: `reg.lan/r${i}`, HMAC: '' });
  dist.add(diffID, { Digest: d('b'), SourceRepository: 'docker.io/library/alpine', HMAC: '' });
  const list = dist.metadataOf(diffID);
  assert.equal(list.length, 50);
  assert.equal(list[49].Digest, d('b'));
  assert.equal(list[0].SourceRepository, 'reg.lan/r11');
  dist.remove(list[49]);
  assert.equal(dist.metadataOf(diffID).length, 49);
  // HMAC key = digest of the credential JSON (dockerd's ComputeV2MetadataHMACKey), checked with sha256 of the JSON text.
  assert.equal(hmacKey().toString(), 'sha256:' + createHash('sha256').update('{}').digest('hex'));
  assert.equal(hmacKey({ username: 'u', password: 'p' }).toString(), 'sha256:' + createHash('sha256').update('{"username":"u","password":"p"}').digest('hex'));
  const key = hmacKey({ username: 'u', password: 'p' });
  const meta = { Digest: d('e'), SourceRepository: 'reg.lan/x', HMAC: computeHMAC(key, d('e'), 'reg.lan/x') };
  assert.equal(checkHMAC(meta, key), true);
  assert.equal(checkHMAC(meta, hmacKey()), false);
  assert.equal(checkHMAC({ ...meta, HMAC: '' }, undefined), true);
});

test('manifests: parsing, platform choice, and the schema 2 bytes docker push writes', () => {
  const index = parseManifest(Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.docker.distribution.manifest.list.v2+json',
    manifests: [
      { mediaType: 'application/vnd.docker.distribution.manifest.v2+json', digest: d('1'), size: 1, platform: { os: 'linux', architecture: 'arm', variant: 'v6' } },
      { mediaType: 'application/vnd.docker.distribution.manifest.v2+json', digest: d('2'), size: 1, platform: { os: 'linux', architecture: 'arm', variant: 'v7' } },
      { mediaType: 'application/vnd.docker.distribution.manifest.v2+json', digest: d('3'), size: 1, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
      { mediaType: 'application/vnd.docker.distribution.manifest.v2+json', digest: d('4'), size: 1, platform: { os: 'linux', architecture: 'amd64' } },
      { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: d('5'), size: 1, platform: { os: 'unknown', architecture: 'unknown' } },
    ],
  })), '', 'x');
  assert.equal(index.kind, 'index');
  if (index.kind !== 'index') return;
  assert.equal(selectPlatform(index, parsePlatform('linux/amd64'), 'x').digest, d('4'));
  assert.equal(selectPlatform(index, parsePlatform('linux/arm64'), 'x').digest, d('3'));
  assert.equal(selectPlatform(index, parsePlatform('linux/arm'), 'x').digest, d('2'), 'arm means arm/v7');
  assert.equal(selectPlatform(index, parsePlatform('linux/arm/v6'), 'x').digest, d('1'));
  assert.throws(() => selectPlatform(index, parsePlatform('windows/amd64'), 'x'), /no matching manifest for windows\/amd64/);
  assert.throws(() => parsePlatform('linux'), /invalid platform/);
  assert.throws(() => parseManifest(Buffer.from('{"schemaVersion":1,"fsLayers":[]}'), 'application/vnd.docker.distribution.manifest.v1+prettyjws', 'old'), /schema 1/);
  assert.throws(() => parseManifest(Buffer.from(JSON.stringify({ schemaVersion: 2, config: { mediaType: 'application/vnd.cncf.helm.config.v1+json', digest: d('6'), size: 1 }, layers: [] })), '', 'chart'), /not a container image/);
  // docker push's manifest layout: MarshalIndent with three spaces, fields mediaType, size, digest.
  const m = buildManifest('docker', { digest: d('7'), size: 10 }, [{ digest: d('8'), size: 20, mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip' }]);
  assert.equal(m.bytes.toString(), `{
   "schemaVersion": 2,
   "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
   "config": {
      "mediaType": "application/vnd.docker.container.image.v1+json",
      "size": 10,
      "digest": "${d('7')}"
   },
   "layers": [
      {
         "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
         "size": 20,
         "digest": "${d('8')}"
      }
   ]
}`);
});
