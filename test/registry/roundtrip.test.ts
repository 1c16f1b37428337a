// Push and pull against the real Debian docker-registry: Docker's own image (loaded from its
// `docker save`) must come back identical, the registry's blobs must be the layer tars lamina
// recorded, and Docker's distribution metadata must let later pushes skip or mount layers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { createHash, createHmac } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { Store } from '../../src/store.js';
import { pullImage } from '../../src/transports/registry/pull.js';
import { pushImage } from '../../src/transports/registry/push.js';
import type { ProgressEvent } from '../../src/transports/registry/events.js';
import { chainIDs } from '../../src/digest/index.js';
import { FIXTURES, runCli, startRegistry, tmpDir } from './harness.js';

const REFAPP = path.join(FIXTURES, 'refapp_1.docker-save.tar.gz');
const sha = (b: Buffer) => 'sha256:' + createHash('sha256').update(b).digest('hex');

async function loadRefapp(root: string): Promise<{ store: Store; id: string }> {
  const store = Store.open(root);
  const [img] = await store.load(REFAPP);
  return { store, id: img.id };
}

/** The manifest and blobs as the registry serves them (fetched independently of lamina's client). */
async function registryManifest(url: string, repo: string, ref: string): Promise<{ bytes: Buffer; type: string; digest: string | null }> {
  const res = await fetch(`${url}/v2/${repo}/manifests/${ref}`, {
    headers: { accept: 'application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json' },
  });
  assert.equal(res.status, 200, `manifest ${repo}:${ref}`);
  return { bytes: Buffer.from(await res.arrayBuffer()), type: res.headers.get('content-type')!, digest: res.headers.get('docker-content-digest') };
}

async function registryBlob(url: string, repo: string, digest: string): Promise<Buffer> {
  const res = await fetch(`${url}/v2/${repo}/blobs/${digest}`);
  assert.equal(res.status, 200, `blob ${digest}`);
  return Buffer.from(await res.arrayBuffer());
}

test('load → push → rmi → pull gives back the same image ID, diffIDs and manifest digest', async (t) => {
  const reg = await startRegistry(t);
  const dir = tmpDir(t);
  const { store, id } = await loadRefapp(path.join(dir, 'root'));
  const name = `${reg.host}/refapp:1`;
  store.tag(id, name);
  const diffIDs = store.images.get(id).rootfs.diff_ids;

  const events: ProgressEvent[] = [];
  const pushed = await pushImage(store, name, { onProgress: (e) => events.push(e) });
  assert.equal(pushed.layers.length, diffIDs.length);
  assert.ok(pushed.layers.every((l) => l.outcome === 'pushed'));
  assert.ok(events.some((e) => e.status === `The push refers to repository [${reg.host}/refapp]`));
  assert.ok(events.some((e) => e.status === `1: digest: ${pushed.digest} size: ${pushed.size}`));

  // What the registry holds: a Docker schema 2 manifest with this digest, the config bytes, and
  // gzip blobs that decompress to exactly the layer tars (diffIDs), as GNU zcat/sha256 see them.
  const m = await registryManifest(reg.url, 'refapp', '1');
  assert.equal(m.type, 'application/vnd.docker.distribution.manifest.v2+json');
  assert.equal(m.digest, pushed.digest);
  assert.equal(sha(m.bytes), pushed.digest);
  const manifest = JSON.parse(m.bytes.toString());
  assert.equal(manifest.config.digest, id);
  assert.deepEqual(await registryBlob(reg.url, 'refapp', id), store.images.getBytes(id));
  for (const [i, l] of manifest.layers.entries()) {
    assert.equal(l.mediaType, 'application/vnd.docker.image.rootfs.diff.tar.gzip');
    const blob = await registryBlob(reg.url, 'refapp', l.digest);
    assert.equal(blob.length, l.size);
    assert.equal(sha(zlib.gunzipSync(blob)), diffIDs[i], `layer ${i} decompresses to its diffID`);
  }
  // Docker's distribution metadata for the pushed layers.
  const distDir = path.join(store.root, 'image/overlay2/distribution');
  for (const [i, l] of manifest.layers.entries()) {
    assert.equal(fs.readFileSync(path.join(distDir, 'diffid-by-digest/sha256', l.digest.slice(7)), 'utf8'), diffIDs[i]);
    const meta = JSON.parse(fs.readFileSync(path.join(distDir, 'v2metadata-by-diffid/sha256', diffIDs[i].slice(7)), 'utf8'));
    assert.equal(meta.length, 1);
    assert.equal(meta[0].Digest, l.digest);
    assert.equal(meta[0].SourceRepository, `${reg.host}/refapp`);
    // dockerd's HMAC for a push without credentials: key = digest of "{}", checked with openssl.
    const key = 'sha256:' + createHash('sha256').update('{}').digest('hex');
    const oracle = execFileSync('openssl', ['dgst', '-sha256', '-hmac', key], { input: l.digest + `${reg.host}/refapp` }).toString().trim().split(' ').pop();
    assert.equal(meta[0].HMAC, oracle);
    assert.equal(meta[0].HMAC, createHmac('sha256', key).update(l.digest + `${reg.host}/refapp`).digest('hex'));
  }
  assert.ok(store.image(id).repoDigests.includes(`${reg.host}/refapp@${pushed.digest}`));

  // A second push compresses nothing: every layer is known to be there.
  const again = await pushImage(store, name);
  assert.ok(again.layers.every((l) => l.outcome === 'exists'), 'second push finds every layer');
  assert.equal(again.digest, pushed.digest);

  // rmi, then pull into the same root.
  store.removeImage('refapp:1');
  const removed = store.removeImage(name);
  assert.ok(removed.some((e) => e.kind === 'untagged' && e.value === `${reg.host}/refapp@${pushed.digest}`));
  assert.equal(store.images.has(id), false);
  for (const c of chainIDs(diffIDs)) assert.equal(store.layers.has(c), false, `layer ${c} removed`);
  const pulled = await pullImage(store, name);
  assert.equal(pulled.id, id);
  assert.equal(pulled.digest, pushed.digest);
  assert.equal(pulled.manifestDigest, pushed.digest);
  const img = store.image(id);
  assert.deepEqual(img.config.rootfs.diff_ids, diffIDs);
  assert.deepEqual(img.repoTags, [name]);
  assert.deepEqual(img.repoDigests, [`${reg.host}/refapp@${pushed.digest}`]);
  for (const c of chainIDs(diffIDs)) assert.ok(store.layers.has(c), `layer ${c}`);
  assert.equal(fs.existsSync(path.join(store.root, 'downloads')), false, 'no download leftovers');

  // And into a fresh root, through the CLI: the same image as a plain `docker load` gives.
  const fresh = path.join(dir, 'fresh');
  const r = await runCli(fresh, ['pull', name]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^1: Pulling from refapp$/m);
  assert.match(r.stdout, new RegExp(`^Digest: ${pushed.digest}$`, 'm'));
  assert.match(r.stdout, new RegExp(`^Status: Downloaded newer image for ${reg.host}/refapp:1$`, 'm'));
  assert.equal(r.stdout.trim().split('\n').pop(), name);
  const other = Store.open(fresh);
  assert.equal(other.resolveImage(name), id);
  const loaded = Store.open(path.join(dir, 'loaded'));
  await loaded.load(REFAPP);
  for (const c of chainIDs(diffIDs)) {
    const a = other.layers.get(c);
    const b = loaded.layers.get(c);
    assert.equal(a.diffID, b.diffID);
    assert.equal(a.size, b.size);
    assert.deepEqual(fs.readFileSync(other.layers.tarSplitPath(c)).length > 0, true);
  }
  // Pulling again: nothing fetched, "Image is up to date".
  const r2 = await runCli(fresh, ['pull', name]);
  assert.equal(r2.code, 0, r2.stderr);
  assert.match(r2.stdout, new RegExp(`^Status: Image is up to date for ${reg.host}/refapp:1$`, 'm'));
  // -q prints only the reference.
  const r3 = await runCli(fresh, ['pull', '-q', name]);
  assert.equal(r3.stdout, `${name}\n`);
});

test('pull by digest, tag-less RepoDigest, and pushes to another repository mount the layers', async (t) => {
  const reg = await startRegistry(t);
  const dir = tmpDir(t);
  const { store, id } = await loadRefapp(path.join(dir, 'root'));
  store.tag(id, `${reg.host}/a/app:v1`);
  const first = await pushImage(store, `${reg.host}/a/app:v1`);
  store.tag(id, `${reg.host}/b/app:v2`);
  const events: ProgressEvent[] = [];
  const second = await pushImage(store, `${reg.host}/b/app:v2`, { onProgress: (e) => events.push(e) });
  assert.ok(second.layers.every((l) => l.outcome === 'mounted' && l.from === 'a/app'), JSON.stringify(second.layers.map((l) => l.outcome)));
  assert.ok(events.some((e) => e.status === 'Mounted from a/app'));
  assert.equal(second.digest, first.digest, 'same blobs, same manifest');

  const other = Store.open(path.join(dir, 'other'));
  const byDigest = await pullImage(other, `${reg.host}/b/app@${first.digest}`);
  assert.equal(byDigest.id, id);
  const rec = other.image(id);
  assert.deepEqual(rec.repoTags, []);
  assert.deepEqual(rec.repoDigests, [`${reg.host}/b/app@${first.digest}`]);
  // A wrong digest is refused by the registry's own check (unknown manifest).
  await assert.rejects(pullImage(other, `${reg.host}/b/app@sha256:${'0'.repeat(64)}`), /not found/);
});

test('upload modes, manifest formats and compressions all round-trip', async (t) => {
  const reg = await startRegistry(t);
  const dir = tmpDir(t);
  const { store, id } = await loadRefapp(path.join(dir, 'root'));
  const diffIDs = store.images.get(id).rootfs.diff_ids;
  const cases = [
    { tag: 'chunked', opts: { upload: 'chunked' as const, chunkSize: 4096 }, type: 'application/vnd.docker.distribution.manifest.v2+json', layer: 'application/vnd.docker.image.rootfs.diff.tar.gzip' },
    { tag: 'mono', opts: { upload: 'monolithic' as const }, type: 'application/vnd.docker.distribution.manifest.v2+json', layer: 'application/vnd.docker.image.rootfs.diff.tar.gzip' },
    { tag: 'oci', opts: { format: 'oci' as const }, type: 'application/vnd.oci.image.manifest.v1+json', layer: 'application/vnd.oci.image.layer.v1.tar+gzip' },
    { tag: 'zstd', opts: { compression: 'zstd' as const }, type: 'application/vnd.oci.image.manifest.v1+json', layer: 'application/vnd.oci.image.layer.v1.tar+zstd' },
    { tag: 'plain', opts: { compression: 'none' as const }, type: 'application/vnd.docker.distribution.manifest.v2+json', layer: 'application/vnd.docker.image.rootfs.diff.tar' },
  ];
  for (const c of cases) {
    // A separate repository and a fresh root each, so no metadata shortcut applies.
    const src = Store.open(path.join(dir, `src-${c.tag}`));
    const [img] = await src.load(REFAPP);
    const name = `${reg.host}/modes-${c.tag}:x`;
    src.tag(img.id, name);
    const pushed = await pushImage(src, name, c.opts);
    assert.ok(pushed.layers.every((l) => l.outcome === 'pushed'), c.tag);
    const m = await registryManifest(reg.url, `modes-${c.tag}`, 'x');
    assert.equal(m.type, c.type, c.tag);
    const manifest = JSON.parse(m.bytes.toString());
    for (const [i, l] of manifest.layers.entries()) {
      assert.equal(l.mediaType, c.layer, `${c.tag} layer ${i}`);
      if (c.tag === 'plain') assert.equal(l.digest, diffIDs[i], 'an uncompressed blob is the layer tar itself');
      if (c.tag === 'zstd') {
        const blob = await registryBlob(reg.url, `modes-${c.tag}`, l.digest);
        assert.equal(sha(execFileSync('zstd', ['-d', '-c', '-q'], { input: blob, maxBuffer: 64 << 20 })), diffIDs[i], `zstd layer ${i} (checked with the zstd program)`);
      }
    }
    const dst = Store.open(path.join(dir, `dst-${c.tag}`));
    const pulled = await pullImage(dst, name);
    assert.equal(pulled.id, id, c.tag);
    for (const ch of chainIDs(diffIDs)) assert.ok(dst.layers.has(ch), `${c.tag}: layer ${ch}`);
  }
  assert.ok(id);
});

test('push refuses what it cannot push', async (t) => {
  const reg = await startRegistry(t);
  const dir = tmpDir(t);
  const { store } = await loadRefapp(path.join(dir, 'root'));
  await assert.rejects(pushImage(store, `${reg.host}/nope:1`), /An image does not exist locally with the tag: 127\.0\.0\.1:\d+\/nope/);
  await assert.rejects(pushImage(store, `${reg.host}/nope@sha256:${'1'.repeat(64)}`), /cannot push a digest reference/);
  await assert.rejects(pullImage(store, `${reg.host}/missing:1`), /manifest for 127\.0\.0\.1:\d+\/missing:1 not found/);
});
