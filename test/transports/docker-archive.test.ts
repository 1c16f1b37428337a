import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { LaminaError } from '../../src/errors.js';
import { sha256 } from '../../src/digest/index.js';
import { openImageSource } from '../../src/transports/index.js';
import { writeDockerArchive } from '../../src/transports/docker-archive.js';
import type { DestImage } from '../../src/transports/types.js';
import { expectedImages, fixtureSave, type ExpectedImage } from '../helpers/expected.js';
import { hashStream, plainSave, readAll, scratch, sha256File } from './helpers.js';

const images = expectedImages();
const byName = (n: 'refapp' | 'refbase'): ExpectedImage => images.find((i) => i.RepoTags[0] === `${n}:1`)!;

function isLamina(code: string, re?: RegExp) {
  return (e: unknown) => {
    assert.ok(e instanceof LaminaError, String(e));
    assert.equal(e.code, code, e.message);
    if (re) assert.match(e.message, re);
    assert.ok(!e.message.includes('\n'), 'one line');
    return true;
  };
}

/** Extracts a fixture save with GNU tar; returns the directory. */
function extractSave(name: 'refapp' | 'refbase', dir: string): string {
  const out = path.join(dir, `${name}-x`);
  fs.mkdirSync(out);
  execFileSync('tar', ['-xzf', fixtureSave(name), '-C', out]);
  return out;
}

/** A DestImage built from an extracted save: config bytes and layer tars as Docker wrote them. */
function destFromExtracted(x: string, exp: ExpectedImage): DestImage {
  const manifest = JSON.parse(fs.readFileSync(path.join(x, 'manifest.json'), 'utf8'))[0];
  return {
    configBytes: fs.readFileSync(path.join(x, manifest.Config)),
    repoTags: exp.RepoTags,
    layers: manifest.Layers.map((l: string, i: number) => ({
      diffID: exp.diffIDs[i],
      size: fs.statSync(path.join(x, l)).size,
      open: () => fs.createReadStream(path.join(x, l)),
    })),
  };
}

async function writeTo(file: string, dest: DestImage[], opts = {}): Promise<void> {
  const ws = fs.createWriteStream(file);
  try {
    await writeDockerArchive(ws, dest, opts);
  } finally {
    ws.end();
    await once(ws, 'close');
  }
}

for (const name of ['refbase', 'refapp'] as const) {
  test(`reads ${name}:1 from its docker save, gzipped as given and plain`, async (t) => {
    const exp = byName(name);
    const dir = scratch(t, 'dockerarchive');
    const staging = path.join(dir, 'staging');
    fs.mkdirSync(staging);
    for (const file of [fixtureSave(name), plainSave(name, dir)]) {
      const src = await openImageSource(file, { tmpDir: staging });
      try {
        assert.equal(src.format, 'docker-archive');
        assert.equal(src.images.length, 1);
        const img = src.images[0];
        assert.equal(sha256(img.configBytes), exp.imageID);
        assert.deepEqual(img.repoTags, exp.RepoTags);
        assert.equal(img.layers.length, exp.diffIDs.length);
        for (let i = 0; i < img.layers.length; i++) {
          const { digest, size } = await hashStream(await img.layers[i].open());
          assert.equal(digest, exp.diffIDs[i], `layer ${i}`);
          assert.equal(size, exp.layers[i].layerTarBytes);
          assert.equal(img.layers[i].storedSize, exp.layers[i].layerTarBytes);
        }
      } finally {
        await src.close();
      }
      assert.deepEqual(fs.readdirSync(staging), [], 'close() removes what the source staged');
    }
  });

  test(`writing ${name}:1 from its fixture contents reproduces the docker save byte for byte`, async (t) => {
    const dir = scratch(t, 'dockerarchive');
    const exp = byName(name);
    const dest = destFromExtracted(extractSave(name, dir), exp);
    const out = path.join(dir, 'out.tar');
    await writeTo(out, [dest]);
    assert.equal(sha256File(out), sha256File(plainSave(name, dir)));
  });
}

test('saving refapp:1 and refbase:1 together: shared layer written once, symlinked under its other v1 id', async (t) => {
  const dir = scratch(t, 'dockerarchive');
  const app = byName('refapp');
  const base = byName('refbase');
  const dests = [destFromExtracted(extractSave('refapp', dir), app), destFromExtracted(extractSave('refbase', dir), base)];
  const out = path.join(dir, 'both.tar');
  await writeTo(out, dests);
  // GNU tar as the oracle for the archive's structure.
  const listing = execFileSync('tar', ['-tvf', out]).toString().trim().split('\n');
  const names = listing.map((l) => l.split(/\s+/)[5]);
  const sorted = [...names].sort((a, b) => Buffer.compare(Buffer.from(a.replace(/\/$/, '\0')), Buffer.from(b.replace(/\/$/, '\0'))));
  assert.deepEqual(names, sorted, 'walk order');
  const baseV1 = (base.layers[0] as unknown as { saveV1LayerDir: string }).saveV1LayerDir;
  const appV1 = (app.layers[0] as unknown as { saveV1LayerDir: string }).saveV1LayerDir;
  const link = listing.find((l) => l.includes(`${baseV1}/layer.tar`))!;
  assert.match(link, new RegExp(`^lrwxrwxrwx root/root .* ${baseV1}/layer.tar -> \\.\\./${appV1}/layer.tar$`));
  assert.equal(names.filter((n) => n.endsWith('/layer.tar')).length, app.diffIDs.length + 1);
  const x = path.join(dir, 'both-x');
  fs.mkdirSync(x);
  execFileSync('tar', ['-xf', out, '-C', x]);
  assert.deepEqual(JSON.parse(fs.readFileSync(path.join(x, 'repositories'), 'utf8')), {
    refapp: { 1: (app.layers.at(-1) as unknown as { saveV1LayerDir: string }).saveV1LayerDir },
    refbase: { 1: baseV1 },
  });
  const manifest = JSON.parse(fs.readFileSync(path.join(x, 'manifest.json'), 'utf8'));
  assert.deepEqual(manifest.map((m: { RepoTags: string[] }) => m.RepoTags), [['refapp:1'], ['refbase:1']]);
  assert.equal(sha256File(path.join(x, baseV1, 'layer.tar')), base.diffIDs[0], 'the symlink leads to the layer');
  // And lamina reads its own archive, following the symlink.
  const src = await openImageSource(out, { tmpDir: dir });
  try {
    assert.deepEqual(src.images.map((i) => sha256(i.configBytes)), [app.imageID, base.imageID]);
    for (const [k, img] of src.images.entries()) {
      const exp = k === 0 ? app : base;
      for (let i = 0; i < img.layers.length; i++) assert.equal((await hashStream(await img.layers[i].open())).digest, exp.diffIDs[i]);
    }
  } finally {
    await src.close();
  }
});

test('images sharing lower layers share their v1 directories (same v1 ids), as Docker computes them', async (t) => {
  const dir = scratch(t, 'dockerarchive');
  const app = byName('refapp');
  const full = destFromExtracted(extractSave('refapp', dir), app);
  // A second image whose chain is the first five layers of refapp (its config otherwise the same).
  const cfg = JSON.parse(full.configBytes.toString());
  cfg.rootfs.diff_ids = cfg.rootfs.diff_ids.slice(0, 5);
  const part: DestImage = { configBytes: Buffer.from(JSON.stringify(cfg)), repoTags: ['part:1'], layers: full.layers.slice(0, 5) };
  const out = path.join(dir, 'x.tar');
  await writeTo(out, [full, part]);
  const manifest = JSON.parse(execFileSync('tar', ['-xOf', out, 'manifest.json']).toString());
  const [a, b] = manifest.map((m: { Layers: string[] }) => m.Layers);
  assert.deepEqual(b.slice(0, 4), a.slice(0, 4), 'non-top layers depend only on the chain');
  assert.notEqual(b[4], a[4], "the top layer's v1 id includes the image config");
  const listing = execFileSync('tar', ['-tvf', out]).toString().trim().split('\n');
  assert.equal(listing.filter((l) => l.endsWith('/VERSION')).length, 12);
  assert.ok(listing.some((l) => l.includes(`${b[4]} -> ../${a[4]}`)), 'the same diffID under a new v1 id is a symlink');
  const src = await openImageSource(out, { tmpDir: dir });
  try {
    for (let i = 0; i < 5; i++) assert.equal((await hashStream(await src.images[1].layers[i].open())).digest, app.diffIDs[i]);
  } finally {
    await src.close();
  }
});

test('one image under two tags is one manifest entry; Parent is written when the parent is in the archive', async (t) => {
  const dir = scratch(t, 'dockerarchive');
  const base = byName('refbase');
  const app = byName('refapp');
  const baseDest = destFromExtracted(extractSave('refbase', dir), base);
  const appDest = { ...destFromExtracted(extractSave('refapp', dir), app), parent: base.imageID };
  const out = path.join(dir, 'x.tar');
  await writeTo(out, [appDest, baseDest, { ...baseDest, repoTags: ['docker.io/library/refbase:latest', 'other/name:2'] }]);
  const manifest = JSON.parse(execFileSync('tar', ['-xOf', out, 'manifest.json']).toString());
  assert.equal(manifest.length, 2);
  assert.equal(manifest[0].Parent, base.imageID);
  assert.equal(manifest[1].Parent, undefined);
  assert.deepEqual(manifest[1].RepoTags, ['refbase:1', 'refbase:latest', 'other/name:2']);
  const repos = JSON.parse(execFileSync('tar', ['-xOf', out, 'repositories']).toString());
  assert.deepEqual(Object.keys(repos), ['other/name', 'refapp', 'refbase']);
  assert.deepEqual(Object.keys(repos.refbase), ['1', 'latest']);
});

test('an untagged image gets "RepoTags":null and no repositories file', async (t) => {
  const dir = scratch(t, 'dockerarchive');
  const dest = { ...destFromExtracted(extractSave('refbase', dir), byName('refbase')), repoTags: [] };
  const out = path.join(dir, 'x.tar');
  await writeTo(out, [dest]);
  const names = execFileSync('tar', ['-tf', out]).toString().trim().split('\n');
  assert.ok(!names.includes('repositories'));
  assert.match(execFileSync('tar', ['-xOf', out, 'manifest.json']).toString(), /"RepoTags":null/);
});

test('writing refuses a layer whose bytes are not its diffID or its size', async (t) => {
  const dir = scratch(t, 'dockerarchive');
  const exp = byName('refapp');
  const x = extractSave('refapp', dir);
  const dest = destFromExtracted(x, exp);
  const swapped = { ...dest, layers: dest.layers.map((l, i) => (i === 2 ? { ...l, open: dest.layers[3].open, size: dest.layers[3].size } : l)) };
  await assert.rejects(writeTo(path.join(dir, 'a.tar'), [swapped]), isLamina('EDIGEST', new RegExp(`layer ${exp.diffIDs[2]}`)));
  const short = { ...dest, layers: dest.layers.map((l, i) => (i === 1 ? { ...l, size: l.size + 512 } : l)) };
  await assert.rejects(writeTo(path.join(dir, 'b.tar'), [short]), isLamina('EBADINPUT', /produced \d+ bytes, expected/));
});

// ---------------------------------------------------------------- hostile and broken input

/** Repacks an extracted save (after `mutate`) with GNU tar. */
function repack(dir: string, name: 'refapp' | 'refbase', mutate: (x: string) => void, file: string): string {
  const x = extractSave(name, fs.mkdtempSync(path.join(dir, 'm-')));
  mutate(x);
  const out = path.join(dir, file);
  execFileSync('tar', ['-C', x, '-cf', out, '.']);
  return out;
}

test('hostile input: missing layer, config not JSON, bad manifest, layer count mismatch', async (t) => {
  const dir = scratch(t, 'dockerarchive');
  const exp = byName('refapp');
  const man = (x: string) => JSON.parse(fs.readFileSync(path.join(x, 'manifest.json'), 'utf8'));
  let missing = '';
  const noLayer = repack(dir, 'refapp', (x) => {
    missing = man(x)[0].Layers[3];
    fs.rmSync(path.join(x, missing));
  }, 'nolayer.tar');
  await assert.rejects(openImageSource(noLayer, { tmpDir: dir }), isLamina('EBADINPUT', new RegExp(`^manifest\\.json names "${missing}", which is not in ${noLayer.replace(/[.]/g, '\\.')}$`)));

  const cfgName = exp.imageID.slice(7) + '.json';
  const badCfg = repack(dir, 'refapp', (x) => fs.writeFileSync(path.join(x, cfgName), '{"architecture": "amd64", oops'), 'badcfg.tar');
  await assert.rejects(openImageSource(badCfg, { tmpDir: dir }), isLamina('EBADINPUT', new RegExp(`^config ${cfgName} is not valid JSON: `)));

  const badMan = repack(dir, 'refapp', (x) => fs.writeFileSync(path.join(x, 'manifest.json'), '[{"Config": 1}]'), 'badman.tar');
  await assert.rejects(openImageSource(badMan, { tmpDir: dir }), isLamina('EBADINPUT', /manifest\.json in .* entry 0 has no Config/));

  const fewer = repack(dir, 'refapp', (x) => {
    const m = man(x);
    m[0].Layers.pop();
    fs.writeFileSync(path.join(x, 'manifest.json'), JSON.stringify(m));
  }, 'fewer.tar');
  await assert.rejects(openImageSource(fewer, { tmpDir: dir }), isLamina('EBADINPUT', /lists 10 layers for .* but the config has 11 diff_ids/));

  const escape = repack(dir, 'refbase', (x) => {
    const m = man(x);
    m[0].Layers[0] = '../../../../etc/passwd';
    fs.writeFileSync(path.join(x, 'manifest.json'), JSON.stringify(m));
  }, 'escape.tar');
  await assert.rejects(openImageSource(escape, { tmpDir: dir }), isLamina('EBADINPUT', /names "\.\.\/\.\.\/\.\.\/\.\.\/etc\/passwd", which is not in/));
});

test('hostile input: gzip garbage, a text file, a missing file, a tar that is no image archive', async (t) => {
  const dir = scratch(t, 'dockerarchive');
  const gz = execFileSync('gzip', ['-c', plainSave('refbase', dir)], { maxBuffer: 1 << 26 });
  const garbage = path.join(dir, 'garbage.tar.gz');
  fs.writeFileSync(garbage, Buffer.concat([gz.subarray(0, 20), Buffer.alloc(10000, 0x77)]));
  await assert.rejects(openImageSource(garbage, { tmpDir: dir }), isLamina('EBADINPUT', new RegExp(`^${garbage}: corrupt gzip data: `)));
  assert.deepEqual(fs.readdirSync(dir).filter((n) => n.startsWith('outer-')), [], 'the staged file is removed on failure');

  const text = path.join(dir, 'notes.txt');
  fs.writeFileSync(text, 'these are not the layers you are looking for\n'.repeat(30));
  await assert.rejects(openImageSource(text, { tmpDir: dir }), isLamina('EBADINPUT', new RegExp(`^${text} is not an image archive`)));

  await assert.rejects(openImageSource(path.join(dir, 'nope.tar'), { tmpDir: dir }), isLamina('ENOTFOUND', /nope\.tar: no such file/));

  const plainTar = path.join(dir, 'other.tar');
  execFileSync('tar', ['-C', dir, '-cf', plainTar, 'notes.txt']);
  await assert.rejects(openImageSource(plainTar, { tmpDir: dir }), isLamina('EBADINPUT', /other\.tar is neither a docker-archive nor an OCI layout/));
});

test('a corrupt gzip layer inside the archive fails when read, naming the member', async (t) => {
  const dir = scratch(t, 'dockerarchive');
  let member = '';
  const file = repack(dir, 'refbase', (x) => {
    member = JSON.parse(fs.readFileSync(path.join(x, 'manifest.json'), 'utf8'))[0].Layers[0];
    const gz = execFileSync('gzip', ['-c', path.join(x, member)], { maxBuffer: 1 << 26 });
    fs.writeFileSync(path.join(x, member), gz.subarray(0, gz.length >> 1));
  }, 'cut.tar');
  const src = await openImageSource(file, { tmpDir: dir });
  try {
    await assert.rejects(async () => readAll(await src.images[0].layers[0].open()), isLamina('EBADINPUT', new RegExp(`^${member} in ${file}: corrupt gzip data`)));
  } finally {
    await src.close();
  }
});

// ---------------------------------------------------------------- Docker ≥25 layout

/** A Docker ≥25 style save of refapp:1: blobs/sha256/…, manifest.json pointing at them, index.json. */
function docker25Layout(dir: string, gzipLayer: number): { root: string; blobs: string[] } {
  const x = extractSave('refapp', dir);
  const root = path.join(dir, 'd25');
  fs.mkdirSync(path.join(root, 'blobs/sha256'), { recursive: true });
  const m = JSON.parse(fs.readFileSync(path.join(x, 'manifest.json'), 'utf8'))[0];
  const put = (data: Buffer) => {
    const d = sha256(data);
    fs.writeFileSync(path.join(root, 'blobs/sha256', d.slice(7)), data);
    return { digest: d, size: data.length, name: `blobs/sha256/${d.slice(7)}` };
  };
  const config = put(fs.readFileSync(path.join(x, m.Config)));
  const layers = m.Layers.map((l: string, i: number) => {
    const tar = fs.readFileSync(path.join(x, l));
    return put(i === gzipLayer ? execFileSync('gzip', ['-c', '-n'], { input: tar, maxBuffer: 1 << 26 }) : tar);
  });
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: config.digest, size: config.size },
    layers: layers.map((l: { digest: string; size: number }, i: number) => ({ mediaType: `application/vnd.oci.image.layer.v1.tar${i === gzipLayer ? '+gzip' : ''}`, digest: l.digest, size: l.size })),
  }));
  const mdesc = put(manifest);
  fs.writeFileSync(path.join(root, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: mdesc.digest, size: mdesc.size, annotations: { 'io.containerd.image.name': 'docker.io/library/refapp:1', 'org.opencontainers.image.ref.name': '1' } }] }));
  fs.writeFileSync(path.join(root, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  fs.writeFileSync(path.join(root, 'manifest.json'), JSON.stringify([{ Config: config.name, RepoTags: ['refapp:1'], Layers: layers.map((l: { name: string }) => l.name) }]));
  return { root, blobs: layers.map((l: { name: string }) => l.name) };
}

test('Docker ≥25 saves (blobs/sha256 members, manifest.json preferred over index.json) are read and verified', async (t) => {
  const dir = scratch(t, 'dockerarchive');
  const exp = byName('refapp');
  const { root } = docker25Layout(dir, 4);
  const tarFile = path.join(dir, 'd25.tar');
  execFileSync('tar', ['-C', root, '-cf', tarFile, '.']);
  for (const input of [tarFile, root]) {
    const src = await openImageSource(input, { tmpDir: dir });
    try {
      assert.equal(src.format, 'docker-archive');
      const img = src.images[0];
      assert.equal(sha256(img.configBytes), exp.imageID);
      assert.deepEqual(img.repoTags, ['refapp:1']);
      for (let i = 0; i < img.layers.length; i++) {
        assert.ok(img.layers[i].blobDigest);
        assert.equal((await hashStream(await img.layers[i].open())).digest, exp.diffIDs[i], `layer ${i}`);
      }
    } finally {
      await src.close();
    }
  }
});

test('Docker ≥25 saves: a blob whose content does not match its name fails with EDIGEST naming the digest', async (t) => {
  const dir = scratch(t, 'dockerarchive');
  const { root, blobs } = docker25Layout(dir, -1);
  const victim = path.join(root, blobs[0]);
  const bytes = fs.readFileSync(victim);
  bytes[bytes.length - 2000] ^= 0xff; // inside the end-of-archive zeros: the tar still parses
  fs.writeFileSync(victim, bytes);
  const tarFile = path.join(dir, 'd25.tar');
  execFileSync('tar', ['-C', root, '-cf', tarFile, '.']);
  const src = await openImageSource(tarFile, { tmpDir: dir });
  try {
    const digest = 'sha256:' + path.basename(blobs[0]);
    await assert.rejects(async () => readAll(await src.images[0].layers[0].open()), isLamina('EDIGEST', new RegExp(`^blob ${digest} \\(${blobs[0]} in ${tarFile}\\) does not match its digest`)));
  } finally {
    await src.close();
  }
});
