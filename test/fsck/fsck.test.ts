// fsck against real damage done to a real store (refapp:1 from Docker's own save): each kind
// of damage is named in one line; --repair restores what can be restored and names the rest.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Store } from '../../src/store.js';
import { fsck } from '../../src/fsck/index.js';
import { parseReference } from '../../src/images/reference.js';
import { generateID } from '../../src/overlay2/driver.js';
import { fixtureSave } from '../helpers/expected.js';
import { lamina } from '../helpers/cli.js';

/** The first regular file with content under dir (depth-first). */
function someFile(dir: string): string | undefined {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isFile() && fs.statSync(p).size > 0) return p;
    if (e.isDirectory()) {
      const f = someFile(p);
      if (f) return f;
    }
  }
  return undefined;
}

test('fsck names each kind of damage and --repair restores what can be restored', async (t) => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lamina-fsck-'));
  t.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
  const root = path.join(tmp, 'root');
  let store = Store.open(root);
  await store.load(fixtureSave('refapp'));
  const clean = await fsck(store);
  assert.deepEqual(clean.problems, [], 'a freshly loaded store is clean');

  const imageID = store.resolveImage('refapp:1');
  const chains = store.image(imageID).topLayer ? store.layers.ancestry(store.image(imageID).topLayer!).reverse() : [];
  assert.ok(chains.length >= 4, 'refapp has enough layers for the damage below');
  const home = store.driver.home;
  // 1. a deleted l/ link (layer 1)
  const l1 = chains[1];
  const link1 = fs.readFileSync(path.join(home, l1.cacheID, 'link'), 'utf8');
  fs.rmSync(path.join(home, 'l', link1));
  // 2. a truncated lower file (layer 2)
  const l2 = chains[2];
  const lowerFile = path.join(home, l2.cacheID, 'lower');
  const lowerBefore = fs.readFileSync(lowerFile, 'utf8');
  fs.writeFileSync(lowerFile, lowerBefore.slice(0, 10));
  // 3. a changed byte in a layer's diff/ (the first layer with a non-empty file)
  const corrupt = chains.find((l) => someFile(store.driver.diffPath(l.cacheID)))!;
  const victim = someFile(store.driver.diffPath(corrupt.cacheID))!;
  const bytes = fs.readFileSync(victim);
  bytes[0] ^= 0x01;
  fs.writeFileSync(victim, bytes);
  // 4. an orphan cache-id dir
  const orphan = generateID();
  fs.mkdirSync(path.join(home, orphan, 'diff'), { recursive: true });
  // 5. a layerdb entry whose cache-id dir is gone (the top layer)
  const top = chains[chains.length - 1];
  fs.rmSync(path.join(home, top.cacheID), { recursive: true });
  // 6. a tag pointing at a missing image
  const missing = 'sha256:' + 'ab'.repeat(32);
  store.repositories.set(parseReference('ghost:1'), missing as `sha256:${string}`);
  // 7. a parent layer dir without its committed marker (the bottom layer, which layer 1 stands on)
  const committed0 = path.join(home, chains[0].cacheID, 'committed');
  assert.ok(fs.existsSync(committed0), 'the loader marked the bottom layer committed');
  fs.rmSync(committed0);

  const cli = lamina(root, 'fsck');
  assert.equal(cli.code, 1, cli.stdout + cli.stderr);
  const out = cli.stdout;
  const line = (re: RegExp) => out.split('\n').find((l) => re.test(l));
  assert.ok(line(new RegExp(`layer ${l1.chainID}: short link overlay2/l/${link1} is missing`)), out);
  assert.ok(line(new RegExp(`layer ${l2.chainID}: overlay2/${l2.cacheID}/lower is "`)), out);
  assert.ok(line(new RegExp(`layer ${corrupt.chainID}: content of overlay2/${corrupt.cacheID}/diff does not match diffID.*refapp:1`)), out);
  assert.ok(line(new RegExp(`overlay2/${orphan}: orphan layer dir`)), out);
  assert.ok(line(new RegExp(`layer ${top.chainID}: its cache-id dir overlay2/${top.cacheID} is missing`)), out);
  assert.ok(line(new RegExp(`repositories.json: ghost:1 points at image ${missing}, which does not exist`)), out);
  assert.ok(line(new RegExp(`overlay2/${chains[0].cacheID}: no committed marker although overlay2/${chains[1].cacheID} stands on it`)), out);

  const rep = lamina(root, 'fsck', '--repair');
  assert.equal(rep.code, 1, 'the corrupt and the missing layer cannot be repaired');
  assert.match(rep.stdout, /short link .* is missing: repaired/);
  assert.match(rep.stdout, /does not match diffID .*: not repaired \(the layer is corrupt; images using it: [0-9a-f]{12} \(refapp:1\); remove them with lamina rmi and load or pull them again\)/);
  // What was repaired is back as it was.
  assert.equal(fs.readlinkSync(path.join(home, 'l', link1)), `../${l1.cacheID}/diff`);
  assert.equal(fs.readFileSync(lowerFile, 'utf8'), lowerBefore);
  assert.equal(fs.existsSync(path.join(home, orphan)), false);
  assert.equal(fs.statSync(committed0).mode & 0o777, 0o600);
  store = Store.open(root);
  assert.equal(store.repositories.get(parseReference('ghost:1')), undefined);
  assert.equal(store.repositories.get(parseReference('refapp:1')), imageID);

  const after = await fsck(store);
  const left = after.problems.map((p) => p.message);
  assert.ok(left.some((m) => m.includes(`content of overlay2/${corrupt.cacheID}/diff`)), left.join('\n'));
  assert.ok(left.some((m) => m.includes(`its cache-id dir overlay2/${top.cacheID} is missing`)), left.join('\n'));
  assert.ok(left.every((m) => !/short link|lower|orphan|ghost|committed/.test(m)), left.join('\n'));

  // The advice works: rmi + load again gives a clean store.
  assert.equal(lamina(root, 'rmi', 'refapp:1').code, 0);
  const rest = await fsck(Store.open(root), { repair: true });
  void rest;
  assert.equal(lamina(root, 'load', '-i', fixtureSave('refapp')).code, 0);
  const final = lamina(root, 'fsck');
  assert.equal(final.code, 0, final.stdout + final.stderr);
});
