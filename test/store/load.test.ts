// Loading Docker's own `docker save` output into a lamina root must give Docker's IDs and
// Docker's on-disk layout, and save must give back the exact layer tars.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { Readable } from 'node:stream';
import { Store } from '../../src/store.js';
import type { Digest } from '../../src/digest/index.js';
import { compareDiffDir, expectedImages, fixtureSave } from '../helpers/expected.js';
import { commitContainer } from '../../src/containers/commit.js';
import { dockerTarSplits, fixtureLayers } from '../tar/fixtures.js';

function tmpRoot(t: { after: (fn: () => void) => void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lamina-store-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const read = (p: string) => fs.readFileSync(p, 'utf8');
const modeOf = (p: string) => (fs.lstatSync(p).mode & 0o7777).toString(8).padStart(4, '0');

test('loading refbase and refapp gives Docker\'s IDs, layer contents and layout', async (t) => {
  const root = tmpRoot(t);
  const store = Store.open(path.join(root, 'lamina'));
  for (const img of expectedImages()) {
    const loaded = await store.load(fixtureSave(img.source.startsWith('refbase') ? 'refbase' : 'refapp'));
    assert.equal(loaded.length, 1);
    assert.equal(loaded[0].id, img.imageID);
    assert.deepEqual(loaded[0].refs, img.RepoTags);
  }
  const home = store.driver.home;
  for (const img of expectedImages()) {
    const rec = store.image(img.imageID);
    assert.deepEqual(rec.config.rootfs.diff_ids, img.diffIDs);
    assert.equal(rec.size, img.dockerReported.Size, `${img.source}: image Size`);
    let parentLink: string | undefined;
    let parentLower = '';
    for (const l of img.layers) {
      const layer = store.layers.get(l.chainID);
      assert.equal(layer.diffID, l.diffID);
      assert.equal(layer.size, l.dockerSizeFormula, `layer ${l.index}: size`);
      const ldir = path.join(store.layers.dir, 'sha256', l.chainID.slice(7));
      assert.equal(read(path.join(ldir, 'diff')), l.diffID);
      assert.equal(read(path.join(ldir, 'size')), String(l.dockerSizeFormula));
      assert.match(read(path.join(ldir, 'cache-id')), /^[0-9a-f]{64}$/);
      assert.equal(modeOf(ldir), '0700');
      for (const f of ['diff', 'size', 'cache-id', 'tar-split.json.gz']) assert.equal(modeOf(path.join(ldir, f)), '0644');
      if (l.index === 0) assert.equal(fs.existsSync(path.join(ldir, 'parent')), false);
      else assert.equal(read(path.join(ldir, 'parent')), img.layers[l.index - 1].chainID);

      const dir = path.join(home, layer.cacheID);
      assert.equal(modeOf(dir), '0710');
      assert.equal(modeOf(path.join(dir, 'diff')), '0755');
      const link = read(path.join(dir, 'link'));
      assert.match(link, /^[A-Z2-7]{26}$/);
      assert.equal(fs.readlinkSync(path.join(home, 'l', link)), `../${layer.cacheID}/diff`);
      if (l.index === 0) {
        assert.equal(fs.existsSync(path.join(dir, 'lower')), false, 'bottom layer has no lower');
        assert.equal(fs.existsSync(path.join(dir, 'work')), false, 'bottom layer has no work/');
      } else {
        const lower = read(path.join(dir, 'lower'));
        assert.equal(lower, `l/${parentLink}` + (parentLower ? `:${parentLower}` : ''));
        assert.equal(lower.length, 29 * l.index - 1);
        assert.equal(modeOf(path.join(dir, 'work')), '0700');
      }
      const isTop = l.index === img.layers.length - 1;
      const hasChild = expectedImages().some((o) => o.layers.length > l.index + 1 && o.chainIDs[l.index] === l.chainID);
      assert.equal(fs.existsSync(path.join(dir, 'committed')), !isTop || hasChild, `layer ${l.index}: committed marker`);
      const problems = compareDiffDir(path.join(dir, 'diff'), l);
      assert.deepEqual(problems, [], `${img.source} layer ${l.index} diff/ differs from Docker's`);
      parentLower = l.index === 0 ? '' : read(path.join(dir, 'lower'));
      parentLink = link;
    }
  }
  // Config bytes kept verbatim and repositories.json in Docker's form.
  for (const img of expectedImages()) {
    const bytes = fs.readFileSync(path.join(root, 'lamina/image/overlay2/imagedb/content/sha256', img.imageID.slice(7)));
    assert.equal('sha256:' + createHash('sha256').update(bytes).digest('hex'), img.imageID);
  }
  const repoFile = path.join(root, 'lamina/image/overlay2/repositories.json');
  assert.equal(modeOf(repoFile), '0600');
  assert.equal(read(repoFile), JSON.stringify({ Repositories: Object.fromEntries(expectedImages().map((i) => [i.RepoTags[0].split(':')[0], { [i.RepoTags[0]]: i.imageID }]).sort()) }));

  // Loading again reuses every layer (same chainIDs, same cache-ids).
  const before = store.layers.list().map((l) => `${l.chainID}=${l.cacheID}`).sort();
  await store.load(fixtureSave('refapp'));
  assert.deepEqual(store.layers.list().map((l) => `${l.chainID}=${l.cacheID}`).sort(), before);
  assert.deepEqual(fs.readdirSync(store.driver.home).sort(), [...store.layers.list().map((l) => l.cacheID), 'l'].sort());
});

test('save reproduces every layer tar byte for byte and loads into a fresh root with the same IDs', async (t) => {
  const root = tmpRoot(t);
  const store = Store.open(path.join(root, 'a'));
  await store.load(fixtureSave('refapp'));
  await store.load(fixtureSave('refbase'));
  const out = path.join(root, 'saved.tar');
  await store.saveToFile(['refapp:1', 'refbase:1'], out);
  const unpacked = path.join(root, 'unpacked');
  fs.mkdirSync(unpacked);
  execFileSync('tar', ['-xf', out, '-C', unpacked]);
  const manifest = JSON.parse(read(path.join(unpacked, 'manifest.json'))) as Array<{ Config: string; RepoTags: string[]; Layers: string[] }>;
  assert.equal(manifest.length, 2);
  for (const m of manifest) {
    const img = expectedImages().find((i) => i.RepoTags[0] === m.RepoTags[0])!;
    assert.ok(img, `unexpected RepoTags ${m.RepoTags}`);
    assert.equal('sha256:' + createHash('sha256').update(fs.readFileSync(path.join(unpacked, m.Config))).digest('hex'), img.imageID);
    assert.equal(m.Layers.length, img.diffIDs.length);
    m.Layers.forEach((l, i) => {
      const digest = 'sha256:' + createHash('sha256').update(fs.readFileSync(path.join(unpacked, l))).digest('hex');
      assert.equal(digest, img.diffIDs[i], `layer ${i} of ${m.RepoTags[0]}`);
    });
  }
  // The saved archive of refapp alone is Docker's own save, byte for byte.
  const single = path.join(root, 'refapp.tar');
  await store.saveToFile(['refapp:1'], single);
  const docker = zlib.gunzipSync(fs.readFileSync(fixtureSave('refapp')));
  assert.equal(createHash('sha256').update(fs.readFileSync(single)).digest('hex'), createHash('sha256').update(docker).digest('hex'), 'lamina save == docker save');

  const fresh = Store.open(path.join(root, 'b'));
  const loaded = await fresh.load(out);
  assert.deepEqual(loaded.map((l) => l.id).sort(), expectedImages().map((i) => i.imageID).sort());
  for (const img of expectedImages()) for (const c of img.chainIDs) assert.ok(fresh.layers.has(c));
});

test('rmi is reference counted: shared layers survive until the last image goes', async (t) => {
  const root = tmpRoot(t);
  const store = Store.open(path.join(root, 'lamina'));
  await store.load(fixtureSave('refbase'));
  await store.load(fixtureSave('refapp'));
  const [base, app] = [expectedImages().find((i) => i.RepoTags[0] === 'refbase:1')!, expectedImages().find((i) => i.RepoTags[0] === 'refapp:1')!];
  const sharedCache = store.layers.get(base.chainIDs[0]).cacheID;

  const ev = store.removeImage('refapp:1');
  assert.deepEqual(ev[0], { kind: 'untagged', value: 'refapp:1' });
  assert.deepEqual(ev.filter((e) => e.kind === 'deleted').map((e) => e.value), [app.imageID, ...app.chainIDs.slice(1).reverse()]);
  assert.ok(store.layers.has(base.chainIDs[0]), 'the shared base layer survives');
  assert.ok(fs.existsSync(path.join(store.driver.home, sharedCache, 'diff', 'bin')));
  assert.deepEqual(fs.readdirSync(store.driver.home).sort(), ['l', sharedCache].sort());
  assert.equal(fs.readdirSync(path.join(store.driver.home, 'l')).length, 1);

  store.removeImage('refbase:1');
  assert.deepEqual(fs.readdirSync(store.driver.home), ['l']);
  assert.deepEqual(fs.readdirSync(path.join(store.driver.home, 'l')), []);
  assert.deepEqual(fs.readdirSync(path.join(store.layers.dir, 'sha256')), []);
  assert.deepEqual(fs.readdirSync(path.join(root, 'lamina/image/overlay2/imagedb/content/sha256')), []);
  assert.equal(read(path.join(root, 'lamina/image/overlay2/repositories.json')), '{"Repositories":{}}');
});

test('rmi of an image with a child image: by ID a conflict that untags nothing; by its last name an untag that keeps it', async (t) => {
  const root = tmpRoot(t);
  const store = Store.open(path.join(root, 'lamina'));
  await store.load(fixtureSave('refbase'));
  const base = store.resolveImage('refbase:1');
  const c = store.containers.create({ name: 'c1', imageRef: 'refbase:1', imageID: base, image: store.images.get(base), cmd: ['sh'] });
  fs.writeFileSync(path.join(store.driver.diffPath(c.mount.mountID), 'new.txt'), 'child\n');
  const child = await commitContainer(store, c.id, { reference: 'child:1' });
  await store.removeContainer(c.id);
  assert.equal(store.images.getMetadata(child.id, 'parent'), base);

  assert.throws(() => store.removeImage(base), /^LaminaError: conflict: unable to delete [0-9a-f]{12} \(cannot be forced\) - image has dependent child images$/m);
  assert.equal(store.resolveImage('refbase:1'), base, 'the refused rmi untagged nothing');
  // As dockerd: the last name goes quietly, the image stays for its child.
  assert.deepEqual(store.removeImage('refbase:1'), [{ kind: 'untagged', value: 'refbase:1' }]);
  assert.ok(store.images.has(base));
  assert.deepEqual(fs.readdirSync(path.join(store.layers.dir, 'tmp')), [], 'no journal left behind');
  // Once the child is gone, the parent is dangling and goes by ID with its layers.
  assert.ok(store.removeImage('child:1').some((e) => e.kind === 'deleted' && e.value === child.id));
  assert.ok(store.removeImage(base).some((e) => e.kind === 'deleted' && e.value === base));
  assert.deepEqual(fs.readdirSync(path.join(store.layers.dir, 'sha256')), []);
});

test('a lost short link is a one-line error naming it, not a raw ENOENT', async (t) => {
  const root = tmpRoot(t);
  const store = Store.open(path.join(root, 'lamina'));
  await store.load(fixtureSave('refapp'));
  const top = store.image(store.resolveImage('refapp:1')).topLayer!;
  const lower = store.layers.ancestry(top)[1];
  const lid = fs.readFileSync(path.join(store.driver.dir(lower.cacheID), 'link'), 'utf8');
  fs.rmSync(path.join(store.driver.home, 'l', lid));
  assert.throws(() => store.graphDriverData(top), (e: Error & { code?: string }) => e.code === 'ENOTFOUND' && e.message.includes(`/l/${lid} does not exist`) && !e.message.includes('\n'));
});

test('rmi by ID of an image with two tags needs -f; by name it only untags', async (t) => {
  const root = tmpRoot(t);
  const store = Store.open(path.join(root, 'lamina'));
  await store.load(fixtureSave('refbase'));
  store.tag('refbase:1', 'other/name:two');
  const id = expectedImages().find((i) => i.RepoTags[0] === 'refbase:1')!.imageID;
  assert.throws(() => store.removeImage(id.slice(7, 19)), /must be forced/);
  assert.deepEqual(store.removeImage('other/name:two'), [{ kind: 'untagged', value: 'other/name:two' }]);
  assert.ok(store.images.has(id));
  const ev = store.removeImage(id.slice(7, 19), { force: false });
  assert.deepEqual(ev.map((e) => e.kind), ['untagged', 'deleted', 'deleted']);
});

test('a layer registered as large (extracted on a worker thread) is stored exactly like a small one', async (t) => {
  const root = tmpRoot(t);
  const store = Store.open(path.join(root, 'lamina'));
  const docker = dockerTarSplits();
  const parents = new Map<string, Digest | undefined>();
  for (const { image, layer, tar } of fixtureLayers()) {
    const parent = layer.index === 0 ? undefined : parents.get(`${image}/${layer.index - 1}`);
    parents.set(`${image}/${layer.index}`, layer.chainID);
    if (store.layers.has(layer.chainID)) continue;
    // The size hint is what decides: every fixture layer is small, so this one claims to be large.
    const { layer: got } = await store.layers.register(parent, Readable.from([tar]), { expectDiffID: layer.diffID, sizeHint: 1 << 30 });
    assert.equal(got.chainID, layer.chainID);
    assert.equal(got.size, layer.dockerSizeFormula, `${image} layer ${layer.index}: size`);
    const tarSplit = fs.readFileSync(store.layers.tarSplitPath(layer.chainID));
    assert.equal(zlib.gunzipSync(tarSplit).toString(), zlib.gunzipSync(docker.get(layer.chainID)!).toString(), `${image} layer ${layer.index}: tar-split`);
    const problems = compareDiffDir(store.driver.diffPath(got.cacheID), layer);
    assert.deepEqual(problems, [], `${image} layer ${layer.index}: diff/ differs from Docker's`);
  }
});
