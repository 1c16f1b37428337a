import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { LaminaError } from '../../src/errors.js';
import { sha256 } from '../../src/digest/index.js';
import { openImageSource } from '../../src/transports/index.js';
import type { ImageSource } from '../../src/transports/types.js';
import { expectedImages } from '../helpers/expected.js';
import { has, hashStream, plainSave, readAll, scratch } from './helpers.js';

const SKOPEO = has('skopeo');
const exp = Object.fromEntries(expectedImages().map((i) => [i.RepoTags[0], i]));

function needSkopeo(t: TestContext): boolean {
  if (SKOPEO) return true;
  t.diagnostic('skopeo is not installed (apt-get install skopeo): OCI layouts cannot be made for this test');
  t.skip('skopeo missing');
  return false;
}

function skopeo(...args: string[]): string {
  return execFileSync('skopeo', ['--insecure-policy', ...args], { maxBuffer: 1 << 26 }).toString();
}

/** The manifest skopeo itself reads from `ref` (the oracle for which config and blobs belong to it). */
function manifestOf(ref: string): { config: { digest: string }; layers: Array<{ digest: string; mediaType: string }> } {
  return JSON.parse(skopeo('inspect', '--raw', ref));
}

function isLamina(code: string, re?: RegExp) {
  return (e: unknown) => {
    assert.ok(e instanceof LaminaError, String(e));
    assert.equal(e.code, code, e.message);
    if (re) assert.match(e.message, re);
    return true;
  };
}

/** Every layer decodes to its config's diff_id (and those are the fixture's diffIDs). */
async function checkImage(src: ImageSource, index: number, fixture: string, ref: string): Promise<void> {
  const img = src.images[index];
  const m = manifestOf(ref);
  assert.equal(sha256(img.configBytes), m.config.digest);
  const diffIDs: string[] = JSON.parse(img.configBytes.toString()).rootfs.diff_ids;
  assert.deepEqual(diffIDs, exp[fixture].diffIDs);
  assert.equal(img.layers.length, m.layers.length);
  for (let i = 0; i < img.layers.length; i++) {
    assert.equal(img.layers[i].blobDigest, m.layers[i].digest);
    assert.equal(img.layers[i].mediaType, m.layers[i].mediaType);
    assert.equal((await hashStream(await img.layers[i].open())).digest, diffIDs[i], `layer ${i}`);
  }
}

test('an OCI layout made by skopeo (oci:dir:tag): directory, tar and gzipped tar', async (t) => {
  if (!needSkopeo(t)) return;
  const dir = scratch(t, 'oci');
  const layout = path.join(dir, 'layout');
  skopeo('copy', `docker-archive:${plainSave('refapp', dir)}`, `oci:${layout}:refapp`);
  const tarFile = path.join(dir, 'layout.tar');
  execFileSync('tar', ['-C', layout, '-cf', tarFile, '.']);
  const gzFile = path.join(dir, 'layout.tar.gz');
  fs.writeFileSync(gzFile, execFileSync('gzip', ['-c', tarFile], { maxBuffer: 1 << 26 }));
  for (const input of [layout, tarFile, gzFile]) {
    const src = await openImageSource(input, { tmpDir: dir });
    try {
      assert.equal(src.format, 'oci-layout');
      assert.equal(src.images.length, 1);
      // ref.name "refapp" is only a tag: the repository is unknown, so no repoTags.
      assert.deepEqual(src.images[0].repoTags, []);
      assert.equal(src.images[0].refName, 'refapp');
      await checkImage(src, 0, 'refapp:1', `oci:${layout}:refapp`);
    } finally {
      await src.close();
    }
  }
});

test('zstd layers (skopeo --dest-compress-format zstd) and a full reference as ref.name', async (t) => {
  if (!needSkopeo(t)) return;
  const dir = scratch(t, 'oci');
  const layout = path.join(dir, 'layout');
  skopeo('copy', '--dest-compress-format', 'zstd', `docker-archive:${plainSave('refapp', dir)}`, `oci:${layout}:docker.io/library/refapp:1`);
  const m = manifestOf(`oci:${layout}:docker.io/library/refapp:1`);
  assert.ok(m.layers.every((l) => l.mediaType.endsWith('+zstd')), 'skopeo wrote zstd layers');
  const src = await openImageSource(layout, { tmpDir: dir });
  try {
    assert.deepEqual(src.images[0].repoTags, ['refapp:1']);
    assert.equal(src.images[0].refName, undefined);
    await checkImage(src, 0, 'refapp:1', `oci:${layout}:docker.io/library/refapp:1`);
  } finally {
    await src.close();
  }
});

/** One layout holding refapp (tag "app") and refbase (tag "base"), plus a nested multi-platform index. */
function multiLayout(dir: string): { layout: string; app: string; base: string } {
  const layout = path.join(dir, 'layout');
  skopeo('copy', `docker-archive:${plainSave('refapp', dir)}`, `oci:${layout}:app`);
  skopeo('copy', `docker-archive:${plainSave('refbase', dir)}`, `oci:${layout}:base`);
  const index = JSON.parse(fs.readFileSync(path.join(layout, 'index.json'), 'utf8'));
  const app = index.manifests.find((d: { annotations: Record<string, string> }) => d.annotations['org.opencontainers.image.ref.name'] === 'app');
  const base = index.manifests.find((d: { annotations: Record<string, string> }) => d.annotations['org.opencontainers.image.ref.name'] === 'base');
  const nested = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json',
    manifests: [
      { ...base, annotations: undefined, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
      { ...app, annotations: undefined, platform: { os: 'linux', architecture: 'amd64' } },
    ],
  }));
  const d = sha256(nested);
  fs.writeFileSync(path.join(layout, 'blobs/sha256', d.slice(7)), nested);
  index.manifests.push({ mediaType: 'application/vnd.oci.image.index.v1+json', digest: d, size: nested.length, annotations: { 'io.containerd.image.name': 'docker.io/library/multi:1' } });
  fs.writeFileSync(path.join(layout, 'index.json'), JSON.stringify(index));
  return { layout, app: app.digest, base: base.digest };
}

test('several images in one layout; a nested index yields the image for this platform, or the one asked for', async (t) => {
  if (!needSkopeo(t)) return;
  const dir = scratch(t, 'oci');
  const { layout } = multiLayout(dir);
  const src = await openImageSource(layout, { tmpDir: dir });
  try {
    // The nested index resolves to the amd64 entry, the same manifest as "app": merged into that image.
    assert.equal(src.images.length, 2);
    assert.equal(src.images[0].refName, 'app');
    assert.deepEqual(src.images[0].repoTags, ['multi:1']);
    assert.equal(src.images[1].refName, 'base');
    await checkImage(src, 0, 'refapp:1', `oci:${layout}:app`);
    await checkImage(src, 1, 'refbase:1', `oci:${layout}:base`);
  } finally {
    await src.close();
  }
  const arm = await openImageSource(layout, { tmpDir: dir, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } });
  try {
    const base = arm.images.find((i) => i.refName === 'base')!;
    assert.deepEqual(base.repoTags, ['multi:1']);
  } finally {
    await arm.close();
  }
  await assert.rejects(openImageSource(layout, { tmpDir: dir, platform: { os: 'linux', architecture: 's390x' } }),
    isLamina('EUNSUPPORTED', /has no image for linux\/s390x \(it has: linux\/arm64\/v8, linux\/amd64\)/));
});

test('OCI blobs that do not match their digests, and missing blobs, are refused', async (t) => {
  if (!needSkopeo(t)) return;
  const dir = scratch(t, 'oci');
  const layout = path.join(dir, 'layout');
  skopeo('copy', '--dest-oci-accept-uncompressed-layers', `docker-archive:${plainSave('refbase', dir)}`, `oci:${layout}:base`);
  const m = manifestOf(`oci:${layout}:base`);
  const layerBlob = path.join(layout, 'blobs/sha256', m.layers[0].digest.slice(7));
  const original = fs.readFileSync(layerBlob);

  // A layer whose bytes changed: found at the end of its stream.
  const tampered = Buffer.from(original);
  tampered[tampered.length - 100] ^= 0x01;
  fs.writeFileSync(layerBlob, tampered);
  const src = await openImageSource(layout, { tmpDir: dir });
  try {
    await assert.rejects(async () => readAll(await src.images[0].layers[0].open()), isLamina('EDIGEST', new RegExp(`^blob ${m.layers[0].digest} \\(.*\\) does not match its digest`)));
  } finally {
    await src.close();
  }
  fs.writeFileSync(layerBlob, original);

  // A config whose bytes changed: found when the layout is opened.
  const cfgBlob = path.join(layout, 'blobs/sha256', m.config.digest.slice(7));
  const cfg = fs.readFileSync(cfgBlob);
  fs.writeFileSync(cfgBlob, Buffer.concat([cfg, Buffer.from(' ')]));
  await assert.rejects(openImageSource(layout, { tmpDir: dir }), isLamina('EDIGEST', new RegExp(`^blob ${m.config.digest} `)));
  fs.writeFileSync(cfgBlob, cfg);

  // A layer blob that is not there.
  fs.rmSync(layerBlob);
  await assert.rejects(openImageSource(layout, { tmpDir: dir }), isLamina('EBADINPUT', new RegExp(`names layer ${m.layers[0].digest}, which is not in ${layout}`)));
});

test('index.json that is not JSON, or lists no images', async (t) => {
  const dir = scratch(t, 'oci');
  fs.writeFileSync(path.join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  fs.mkdirSync(path.join(dir, 'blobs'));
  fs.writeFileSync(path.join(dir, 'index.json'), '{"schemaVersion":2,');
  await assert.rejects(openImageSource(dir, { tmpDir: dir }), isLamina('EBADINPUT', /^index\.json in .* is not valid JSON/));
  fs.writeFileSync(path.join(dir, 'index.json'), '{"schemaVersion":2,"manifests":[]}');
  await assert.rejects(openImageSource(dir, { tmpDir: dir }), isLamina('EBADINPUT', /lists no images/));
});
