// Interoperability with other registry clients, through the real docker-registry: images built
// by umoci and pushed by skopeo (OCI and Docker schema 2, gzip, zstd and plain layers, a
// multi-platform index) pull correctly into lamina; what lamina pushes, skopeo pulls back with
// the same config and layer diffIDs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { createHash } from 'node:crypto';
import { execFileSync, spawnSync } from 'node:child_process';
import { Store } from '../../src/store.js';
import { pullImage } from '../../src/transports/registry/pull.js';
import { pushImage } from '../../src/transports/registry/push.js';
import { chainIDs } from '../../src/digest/index.js';
import * as sys from '../../src/sys/index.js';
import { FIXTURES, have, makeOCIImage, noise, rawPush, runCli, skopeoPush, startRegistry, tmpDir } from './harness.js';

const sha = (b: Buffer) => 'sha256:' + createHash('sha256').update(b).digest('hex');
const run = (cmd: string, args: string[], cwd?: string) => execFileSync(cmd, args, { cwd, encoding: 'utf8', maxBuffer: 64 << 20 });

test('an umoci-built image pushed by skopeo (OCI and Docker schema 2) pulls correctly', { skip: !have('umoci') || !have('skopeo') }, async (t) => {
  const reg = await startRegistry(t);
  const dir = tmpDir(t);
  const oci = path.join(dir, 'oci');
  // Base rootfs: busybox (the static binary when installed) with a few files; then a second
  // layer made by umoci repack that deletes a file (whiteout) and adds one.
  const rootfs = path.join(dir, 'rootfs');
  fs.mkdirSync(path.join(rootfs, 'bin'), { recursive: true });
  fs.mkdirSync(path.join(rootfs, 'etc'), { recursive: true });
  const busybox = fs.existsSync('/bin/busybox') ? fs.readFileSync('/bin/busybox') : noise(300_000, 'busybox');
  fs.writeFileSync(path.join(rootfs, 'bin/busybox'), busybox, { mode: 0o755 });
  fs.symlinkSync('busybox', path.join(rootfs, 'bin/sh'));
  fs.writeFileSync(path.join(rootfs, 'etc/marker'), 'to be deleted\n');
  fs.writeFileSync(path.join(rootfs, 'etc/keep'), 'kept\n');
  run('umoci', ['init', '--layout', oci]);
  run('umoci', ['new', '--image', `${oci}:base`]);
  run('umoci', ['insert', '--image', `${oci}:base`, '--tag', 'v1', rootfs, '/']);
  run('umoci', ['config', '--image', `${oci}:v1`, '--config.cmd=/bin/sh']);
  const bundle = path.join(dir, 'bundle');
  run('umoci', ['unpack', '--image', `${oci}:v1`, bundle]);
  fs.rmSync(path.join(bundle, 'rootfs/etc/marker'));
  fs.mkdirSync(path.join(bundle, 'rootfs/opt'));
  fs.writeFileSync(path.join(bundle, 'rootfs/opt/new'), 'new\n');
  run('umoci', ['repack', '--image', `${oci}:v2`, bundle]);

  // The layout's own view: config digest and diffIDs (GNU zcat + sha256 as the oracle).
  const index = JSON.parse(fs.readFileSync(path.join(oci, 'index.json'), 'utf8'));
  const desc = index.manifests.find((m: { annotations?: Record<string, string> }) => m.annotations?.['org.opencontainers.image.ref.name'] === 'v2');
  const blob = (d: string) => fs.readFileSync(path.join(oci, 'blobs/sha256', d.slice(7)));
  const manifest = JSON.parse(blob(desc.digest).toString());
  const config = JSON.parse(blob(manifest.config.digest).toString());
  const diffIDs: string[] = manifest.layers.map((l: { digest: string }) => sha(zlib.gunzipSync(blob(l.digest))));
  assert.deepEqual(config.rootfs.diff_ids, diffIDs);
  assert.equal(diffIDs.length, 2);

  run('skopeo', ['copy', '-q', '--dest-tls-verify=false', `oci:${oci}:v2`, `docker://${reg.host}/umoci:oci`]);
  run('skopeo', ['copy', '-q', '--dest-tls-verify=false', '--format', 'v2s2', `oci:${oci}:v2`, `docker://${reg.host}/umoci:v2s2`]);

  const store = Store.open(path.join(dir, 'root'));
  const fromOCI = await pullImage(store, `${reg.host}/umoci:oci`);
  assert.equal(fromOCI.id, manifest.config.digest, 'an OCI push keeps the config bytes');
  const fromV2 = await pullImage(store, `${reg.host}/umoci:v2s2`);
  for (const id of [fromOCI.id, fromV2.id]) {
    assert.deepEqual(store.images.get(id).rootfs.diff_ids, diffIDs);
  }
  // The layer contents on disk: busybox byte for byte, the symlink, the whiteout as char 0:0.
  const chains = chainIDs(diffIDs);
  const d0 = store.driver.diffPath(store.layers.get(chains[0]).cacheID);
  const d1 = store.driver.diffPath(store.layers.get(chains[1]).cacheID);
  assert.equal(sha(fs.readFileSync(path.join(d0, 'bin/busybox'))), sha(busybox));
  assert.equal(fs.readlinkSync(path.join(d0, 'bin/sh')), 'busybox');
  assert.equal(fs.readFileSync(path.join(d0, 'etc/marker'), 'utf8'), 'to be deleted\n');
  const wh = fs.lstatSync(path.join(d1, 'etc/marker'));
  assert.ok(wh.isCharacterDevice() && wh.rdev === 0, 'etc/marker is a whiteout in the second layer');
  assert.equal(fs.readFileSync(path.join(d1, 'opt/new'), 'utf8'), 'new\n');
  assert.equal(fs.existsSync(path.join(d1, 'etc/keep')), false);
  // The layer tars replay byte for byte (what a later push sends).
  for (const [i, c] of chains.entries()) {
    const h = createHash('sha256');
    for await (const chunk of (await store.layers.openTar(c)) as AsyncIterable<Buffer>) h.update(chunk);
    assert.equal('sha256:' + h.digest('hex'), diffIDs[i]);
  }
  assert.ok(sys.lgetxattr !== undefined);
});

test('what lamina pushes, skopeo pulls with the same config and layer diffIDs', { skip: !have('skopeo') }, async (t) => {
  const reg = await startRegistry(t);
  const dir = tmpDir(t);
  const store = Store.open(path.join(dir, 'root'));
  const [img] = await store.load(path.join(FIXTURES, 'refapp_1.docker-save.tar.gz'));
  const diffIDs = store.images.get(img.id).rootfs.diff_ids;
  for (const tag of ['docker', 'oci'] as const) {
    const name = `${reg.host}/pushed:${tag}`;
    store.tag(img.id, name);
    const r = await runCli(store.root, ['push', ...(tag === 'oci' ? ['--format', 'oci'] : []), name]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^The push refers to repository \\[${reg.host}/pushed\\]$`, 'm'));
    assert.match(r.stdout, new RegExp(`^${tag}: digest: sha256:[0-9a-f]{64} size: \\d+$`, 'm'));
    // skopeo's dir: transport keeps manifest and config bytes as the registry serves them.
    const out = path.join(dir, `skopeo-${tag}`);
    run('skopeo', ['copy', '-q', '--src-tls-verify=false', `docker://${name}`, `dir:${out}`]);
    const blob = (d: string) => fs.readFileSync(path.join(out, d.slice(7)));
    const manifest = JSON.parse(fs.readFileSync(path.join(out, 'manifest.json'), 'utf8'));
    assert.equal(manifest.config.digest, img.id, `${tag}: config digest is the image ID`);
    assert.deepEqual(blob(img.id), store.images.getBytes(img.id));
    const got = manifest.layers.map((l: { digest: string }) => sha(zlib.gunzipSync(blob(l.digest))));
    assert.deepEqual(got, diffIDs, `${tag}: layer diffIDs`);
    // And into an OCI layout (skopeo converts the config there; the layers stay).
    const ociOut = path.join(dir, `skopeo-oci-${tag}`);
    run('skopeo', ['copy', '-q', '--src-tls-verify=false', `docker://${name}`, `oci:${ociOut}:x`]);
    const index = JSON.parse(fs.readFileSync(path.join(ociOut, 'index.json'), 'utf8'));
    const oblob = (d: string) => fs.readFileSync(path.join(ociOut, 'blobs/sha256', d.slice(7)));
    const om = JSON.parse(oblob(index.manifests[0].digest).toString());
    assert.deepEqual(om.layers.map((l: { digest: string }) => sha(zlib.gunzipSync(oblob(l.digest)))), diffIDs, `${tag}: OCI layout diffIDs`);
    assert.deepEqual(JSON.parse(oblob(om.config.digest).toString()).rootfs.diff_ids, diffIDs);
  }
  // skopeo's docker-archive of lamina's push loads back into lamina as the same image.
  const archive = path.join(dir, 'archive.tar');
  run('skopeo', ['copy', '-q', '--src-tls-verify=false', `docker://${reg.host}/pushed:docker`, `docker-archive:${archive}:again:1`]);
  const other = Store.open(path.join(dir, 'other'));
  const [again] = await other.load(archive);
  assert.equal(again.id, img.id);
});

test('zstd and uncompressed layers pushed by skopeo pull correctly', { skip: !have('skopeo') || !have('zstd') }, async (t) => {
  const reg = await startRegistry(t);
  const dir = tmpDir(t);
  const layers = [{ 'etc/a': 'a\n', 'bin/x': noise(100_000, 'x') }, { 'etc/b': 'b\n' }];
  for (const compression of ['zstd', 'none'] as const) {
    const img = makeOCIImage(path.join(dir, compression), layers, { tag: compression, compression });
    // skopeo compresses plain layers on the way, so those go up as they are with plain fetch calls.
    if (compression === 'none') await rawPush(img, reg.url, 'comp', compression);
    else skopeoPush(img, `${reg.host}/comp:${compression}`);
    const store = Store.open(path.join(dir, `root-${compression}`));
    const r = await pullImage(store, `${reg.host}/comp:${compression}`);
    assert.equal(r.id, img.configDigest);
    const chains = chainIDs(img.diffIDs);
    const d0 = store.driver.diffPath(store.layers.get(chains[0]).cacheID);
    assert.equal(sha(fs.readFileSync(path.join(d0, 'bin/x'))), sha(noise(100_000, 'x')));
    // Docker's distribution metadata records the blob each layer came from.
    const meta = JSON.parse(fs.readFileSync(path.join(store.root, 'image/overlay2/distribution/v2metadata-by-diffid/sha256', img.diffIDs[0].slice(7)), 'utf8'));
    assert.deepEqual(meta, [{ Digest: img.blobDigests[0], SourceRepository: `${reg.host}/comp`, HMAC: '' }]);
    // Pushing it on to another repository mounts the blobs, compression unchanged.
    store.tag(r.id, `${reg.host}/comp2:${compression}`);
    const pushed = await pushImage(store, `${reg.host}/comp2:${compression}`);
    assert.ok(pushed.layers.every((l) => l.outcome === 'mounted'));
    assert.deepEqual(pushed.layers.map((l) => l.digest), img.blobDigests);
    const want = compression === 'zstd' ? 'application/vnd.oci.image.layer.v1.tar+zstd' : 'application/vnd.docker.image.rootfs.diff.tar';
    const res = await fetch(`${reg.url}/v2/comp2/manifests/${compression}`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' } });
    const m = JSON.parse(await res.text());
    assert.ok(m.layers.every((l: { mediaType: string }) => l.mediaType === want), `${compression}: ${JSON.stringify(m.layers)}`);
  }
});

test('a multi-platform index: the default platform, --platform, and a missing one', { skip: !have('skopeo') }, async (t) => {
  const reg = await startRegistry(t);
  const dir = tmpDir(t);
  const amd = makeOCIImage(path.join(dir, 'amd'), [{ arch: 'amd64\n' }], { tag: 'amd', architecture: 'amd64' });
  const arm = makeOCIImage(path.join(dir, 'arm'), [{ arch: 'arm64\n' }], { tag: 'arm', architecture: 'arm64' });
  // One layout holding both images under an index with platforms.
  const layout = path.join(dir, 'multi');
  fs.mkdirSync(path.join(layout, 'blobs/sha256'), { recursive: true });
  for (const src of [amd.layout, arm.layout]) {
    for (const f of fs.readdirSync(path.join(src, 'blobs/sha256'))) fs.copyFileSync(path.join(src, 'blobs/sha256', f), path.join(layout, 'blobs/sha256', f));
  }
  const entry = (img: typeof amd, architecture: string, variant?: string) => {
    const bytes = fs.readFileSync(path.join(layout, 'blobs/sha256', img.manifestDigest.slice(7)));
    return { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: img.manifestDigest, size: bytes.length, platform: { os: 'linux', architecture, ...(variant ? { variant } : {}) } };
  };
  const idx = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [entry(arm, 'arm64', 'v8'), entry(amd, 'amd64')] }));
  const idxDigest = sha(idx);
  fs.writeFileSync(path.join(layout, 'blobs/sha256', idxDigest.slice(7)), idx);
  fs.writeFileSync(path.join(layout, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  fs.writeFileSync(path.join(layout, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.index.v1+json', digest: idxDigest, size: idx.length, annotations: { 'org.opencontainers.image.ref.name': 'multi' } }] }));
  const r = spawnSync('skopeo', ['copy', '-q', '--all', '--dest-tls-verify=false', `oci:${layout}:multi`, `docker://${reg.host}/multi:1`], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);

  const store = Store.open(path.join(dir, 'root'));
  const def = await pullImage(store, `${reg.host}/multi:1`);
  assert.equal(def.id, amd.configDigest, 'this machine (linux/amd64) gets the amd64 image');
  assert.equal(def.digest, idxDigest, 'RepoDigests records the index digest, as dockerd does');
  assert.equal(def.manifestDigest, amd.manifestDigest);
  assert.deepEqual(store.image(def.id).repoDigests, [`${reg.host}/multi@${idxDigest}`]);

  const other = Store.open(path.join(dir, 'arm'));
  const c = await runCli(other.root, ['pull', '--platform', 'linux/arm64', `${reg.host}/multi:1`]);
  assert.equal(c.code, 0, c.stderr);
  assert.equal(Store.open(other.root).resolveImage(`${reg.host}/multi:1`), arm.configDigest);

  const bad = await runCli(other.root, ['pull', '--platform', 'linux/s390x', `${reg.host}/multi:1`]);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /no matching manifest for linux\/s390x in the manifest list entries of 127\.0\.0\.1:\d+\/multi:1 \(it has linux\/arm64\/v8, linux\/amd64\)/);
});

/** A running Docker daemon the docker CLI can reach (not just the CLI). */
function dockerDaemon(): boolean {
  return have('docker') && spawnSync('docker', ['info', '--format', '{{.ServerVersion}}'], { stdio: 'ignore', timeout: 10_000 }).status === 0;
}

test('what lamina pushes, docker pulls as the same image', { skip: !dockerDaemon() && 'no Docker daemon on this machine' }, async (t) => {
  const reg = await startRegistry(t);
  const dir = tmpDir(t);
  const store = Store.open(path.join(dir, 'root'));
  const [img] = await store.load(path.join(FIXTURES, 'refapp_1.docker-save.tar.gz'));
  const name = `${reg.host}/fordocker:1`;
  store.tag(img.id, name);
  const pushed = await pushImage(store, name);
  // dockerd treats 127.0.0.0/8 registries as insecure (plain HTTP) by default.
  t.after(() => spawnSync('docker', ['rmi', '-f', name], { stdio: 'ignore' }));
  run('docker', ['pull', name]);
  assert.equal(run('docker', ['image', 'inspect', '--format', '{{.Id}}', name]).trim(), img.id);
  assert.match(run('docker', ['image', 'inspect', '--format', '{{json .RepoDigests}}', name]), new RegExp(pushed.digest));
});
