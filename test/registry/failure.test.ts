// Pulls that go wrong: a registry answer with a corrupted blob must be refused naming the blob,
// leaving the store exactly as it was; a pull killed with SIGKILL midway must, when run again,
// finish without fetching the layers it had already finished, leaving a consistent store.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { Store } from '../../src/store.js';
import { pullImage } from '../../src/transports/registry/pull.js';
import { chainIDs } from '../../src/digest/index.js';
import { fsck, formatProblem } from '../../src/fsck/index.js';
import { makeOCIImage, noise, runCli, skopeoPush, snapshot, snapshotDiff, spawnCli, startProxy, startRegistry, storeProblems, tmpDir } from './harness.js';

// These pulls go through the download worker (small pulls otherwise stay on the main thread,
// which the other test files cover), in-process and in the CLI children, which inherit it.
process.env.LAMINA_DOWNLOAD_WORKER = '1';

test('a corrupted blob is rejected naming its digest, and the store is unchanged', async (t) => {
  const reg = await startRegistry(t);
  const dir = tmpDir(t);
  const base = { 'etc/base.txt': 'base layer\n', 'bin/tool': noise(50_000, 'base') };
  // "app" shares its bottom layer with "base", which the store already has.
  const baseImg = makeOCIImage(path.join(dir, 'base'), [base], { tag: 'base' });
  const appImg = makeOCIImage(path.join(dir, 'app'), [base, { 'app/one': noise(300_000, 'one') }, { 'app/two': noise(400_000, 'two') }, { 'app/three': 'three\n' }], { tag: 'app' });
  skopeoPush(baseImg, `${reg.host}/corrupt/base:1`);
  skopeoPush(appImg, `${reg.host}/corrupt/app:1`);
  const proxy = await startProxy(t, reg, { corruptBlob: appImg.blobDigests[2] });

  const store = Store.open(path.join(dir, 'root'));
  await pullImage(store, `${proxy.host}/corrupt/base:1`);
  const before = snapshot(store.root);

  await assert.rejects(pullImage(store, `${proxy.host}/corrupt/app:1`), (e: Error) => {
    assert.match(e.message, new RegExp(`blob ${appImg.blobDigests[2]} .*does not match its digest`));
    assert.equal((e as { code?: string }).code, 'EDIGEST');
    return true;
  });
  const after = snapshot(Store.open(store.root).root);
  assert.deepEqual(snapshotDiff(before, after), []);
  assert.deepEqual(await storeProblems(Store.open(store.root)), []);

  // Through the CLI: one clear line naming the digest, exit status 1, store still unchanged.
  const r = await runCli(store.root, ['pull', `${proxy.host}/corrupt/app:1`]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, new RegExp(`^Error: blob ${appImg.blobDigests[2]} from ${proxy.host}/corrupt/app does not match its digest: the content hashes to sha256:[0-9a-f]{64}\\n$`));
  assert.deepEqual(snapshotDiff(before, snapshot(store.root)), []);

  // Once the registry answers correctly, the same pull works.
  proxy.options.corruptBlob = undefined;
  const ok = await pullImage(store, `${proxy.host}/corrupt/app:1`);
  assert.equal(ok.id, appImg.configDigest);
  assert.deepEqual(await storeProblems(store), []);
});

test('a layer whose content does not decompress to its diffID is refused, store unchanged', async (t) => {
  const reg = await startRegistry(t);
  const dir = tmpDir(t);
  const lying = makeOCIImage(path.join(dir, 'img'), [{ a: 'a\n' }, { b: noise(10_000, 'b') }], { tag: 'x' });
  // Lie in the config: the second diff_id is the first layer's (every blob digest stays valid).
  const blob = (d: string) => path.join(lying.layout, 'blobs/sha256', d.slice(7));
  const put = (b: Buffer) => {
    const d = 'sha256:' + createHash('sha256').update(b).digest('hex');
    fs.writeFileSync(blob(d), b);
    return d;
  };
  const cfg = JSON.parse(fs.readFileSync(blob(lying.configDigest), 'utf8'));
  cfg.rootfs.diff_ids[1] = cfg.rootfs.diff_ids[0];
  const newCfg = Buffer.from(JSON.stringify(cfg));
  const man = JSON.parse(fs.readFileSync(blob(lying.manifestDigest), 'utf8'));
  man.config = { ...man.config, digest: put(newCfg), size: newCfg.length };
  const newMan = Buffer.from(JSON.stringify(man));
  const index = JSON.parse(fs.readFileSync(path.join(lying.layout, 'index.json'), 'utf8'));
  index.manifests[0] = { ...index.manifests[0], digest: put(newMan), size: newMan.length };
  fs.writeFileSync(path.join(lying.layout, 'index.json'), JSON.stringify(index));
  skopeoPush(lying, `${reg.host}/lying:1`);

  const store = Store.open(path.join(dir, 'root'));
  const before = snapshot(store.root);
  await assert.rejects(pullImage(store, `${reg.host}/lying:1`), /invalid diffID for layer 1 \(blob sha256:[0-9a-f]{64}\): expected sha256:/);
  assert.deepEqual(snapshotDiff(before, snapshot(store.root)), []);
});

for (const worker of ['1', '0']) test(`a pull killed with SIGKILL midway resumes without fetching finished blobs again (download worker ${worker === '1' ? 'on' : 'off'})`, async (t) => {
  const reg = await startRegistry(t);
  const dir = tmpDir(t);
  // Small bottom layers finish early; the big ones are still streaming when the kill lands.
  const sizes = [20_000, 40_000, 1_500_000, 1_800_000, 2_000_000];
  const img = makeOCIImage(path.join(dir, 'img'), sizes.map((n, i) => ({ [`data/layer${i}.bin`]: noise(n, `kill-${i}`) })), { tag: 'k' });
  skopeoPush(img, `${reg.host}/killme:1`);
  const proxy = await startProxy(t, reg, { delayMs: 40, throttleBytes: 32 * 1024 });
  const root = path.join(dir, 'root');
  const name = `${proxy.host}/killme:1`;
  const chains = chainIDs(img.diffIDs);
  const layerDone = (i: number) => fs.existsSync(path.join(root, 'image/overlay2/layerdb/sha256', chains[i].slice(7), 'cache-id'));

  const env = { LAMINA_DOWNLOAD_WORKER: worker };
  const child = spawnCli(root, ['pull', name], { env });
  let stderr = '';
  child.stderr!.on('data', (c) => (stderr += c));
  child.stdout!.resume();
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.on('exit', (code, signal) => r({ code, signal })));
  // Kill once the bottom layer is in the store and some bytes of a bigger blob are on disk.
  const partialDir = path.join(root, 'downloads/partial');
  // Bytes of one of the big blobs (the small ones may complete between this check and the kill).
  const bigBlobs = img.blobDigests.slice(2).map((d) => d.slice(7));
  const someBytes = () => bigBlobs.some((h) => (fs.statSync(path.join(partialDir, h), { throwIfNoEntry: false })?.size ?? 0) > 0);
  const deadline = Date.now() + 60_000;
  while (!layerDone(0) || !someBytes()) {
    if (child.exitCode !== null) assert.fail(`pull ended before it could be killed: ${stderr}`);
    if (Date.now() > deadline) assert.fail('the bottom layer never landed');
    await new Promise((r) => setTimeout(r, 5));
  }
  child.kill('SIGKILL');
  const end = await exited;
  assert.equal(end.signal, 'SIGKILL');

  // What the killed run finished: layers in the store, blobs complete in the download cache.
  const finishedLayers = chains.map((_, i) => i).filter(layerDone);
  const completeBlobs = new Set(fs.existsSync(path.join(root, 'downloads/sha256')) ? fs.readdirSync(path.join(root, 'downloads/sha256')).map((h) => 'sha256:' + h) : []);
  assert.ok(finishedLayers.length >= 1 && finishedLayers.length < sizes.length, `finished ${finishedLayers.length} layers`);
  const finishedBlobs = new Set([...finishedLayers.map((i) => img.blobDigests[i]), ...completeBlobs]);
  assert.ok(finishedBlobs.size < sizes.length, 'the kill landed before every blob was finished');
  // Reopened, the store holds nothing of the killed pull: the layers it registered but never
  // published are deleted (no orphans), while their verified blobs stay in the download cache.
  const reopened = Store.open(root);
  for (const c of chains) assert.ok(!reopened.layers.has(c), `layer ${c} of the killed pull left in the store`);
  assert.deepEqual((await fsck(reopened)).problems.map(formatProblem), []);
  for (const i of finishedLayers) assert.ok(fs.existsSync(path.join(root, 'downloads/sha256', img.blobDigests[i].slice(7))), `blob of finished layer ${i} kept`);

  proxy.options.delayMs = 0;
  const before = proxy.requests.length;
  const r = await runCli(root, ['pull', name], { env });
  assert.equal(r.code, 0, r.stderr);
  const gets = new Map<string, number>();
  for (const q of proxy.requests.slice(before)) {
    const d = /\/blobs\/(sha256:[0-9a-f]{64})$/.exec(q.path.split('?')[0])?.[1];
    if (q.method === 'GET' && d) gets.set(d, (gets.get(d) ?? 0) + 1);
  }
  for (const d of finishedBlobs) assert.equal(gets.get(d) ?? 0, 0, `finished blob ${d} fetched again`);
  for (const i of finishedLayers) assert.match(r.stdout, new RegExp(`^${img.blobDigests[i].slice(7, 19)}: Download complete$`, 'm'));
  // Partially received blobs were resumed with a Range request, not fetched from the start.
  const ranged = proxy.requests.slice(before).filter((q) => q.range);
  assert.ok(ranged.length >= 1, 'at least one partly received blob was resumed');
  for (const q of ranged) assert.match(q.range!, /^bytes=[1-9][0-9]*-$/);

  const store = Store.open(root);
  assert.equal(store.resolveImage(name), img.configDigest);
  for (const c of chains) assert.ok(store.layers.has(c));
  assert.deepEqual(await storeProblems(store), []);
});

test('two pulls of one image into one root at once both succeed and leave a sound store', async (t) => {
  const reg = await startRegistry(t);
  const dir = tmpDir(t);
  const sizes = [600_000, 900_000, 1_200_000];
  const img = makeOCIImage(path.join(dir, 'img'), sizes.map((n, i) => ({ [`data/twin${i}.bin`]: noise(n, `twin-${i}`) })), { tag: 't' });
  skopeoPush(img, `${reg.host}/twins:1`);
  // Slow enough that both processes are downloading the same blobs at the same time.
  const proxy = await startProxy(t, reg, { delayMs: 20, throttleBytes: 64 * 1024 });
  const root = path.join(dir, 'root');
  Store.open(root);
  const name = `${proxy.host}/twins:1`;
  const [a, b] = await Promise.all([runCli(root, ['pull', name], { env: { LAMINA_DOWNLOAD_WORKER: '0' } }), runCli(root, ['pull', name], { env: { LAMINA_DOWNLOAD_WORKER: '0' } })]);
  assert.equal(a.code, 0, a.stderr);
  assert.equal(b.code, 0, b.stderr);
  const store = Store.open(root);
  assert.equal(store.resolveImage(name), img.configDigest);
  assert.deepEqual((await fsck(store)).problems.map(formatProblem), []);
  assert.deepEqual(await storeProblems(store), []);
});
