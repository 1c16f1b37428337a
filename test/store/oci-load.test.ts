// OCI image layouts as other tools write them, loaded through the CLI: skopeo's conversion of
// the Docker fixture (gzip and zstd layers) and an image umoci builds (a "/" root entry).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import zlib from 'node:zlib';
import { lamina } from '../helpers/cli.js';
import { expectedImages, fixtureSave } from '../helpers/expected.js';

const have = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;

function tmp(t: { after: (fn: () => void) => void }): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'lamina-oci-'));
  t.after(() => fs.rmSync(d, { recursive: true, force: true }));
  return d;
}

for (const compress of ['gzip', 'zstd'] as const) {
  test(`an OCI layout written by skopeo (${compress} layers) loads with the fixture's diffIDs`, { skip: have('skopeo') ? false : 'skopeo is not installed (scripts/ci-test.sh installs it)' }, (t) => {
    const dir = tmp(t);
    const app = expectedImages().find((i) => i.RepoTags[0] === 'refapp:1')!;
    const layout = path.join(dir, 'layout');
    // skopeo 1.9 reads docker-archive only uncompressed.
    const plain = path.join(dir, 'refapp.tar');
    fs.writeFileSync(plain, zlib.gunzipSync(fs.readFileSync(fixtureSave('refapp'))));
    execFileSync('skopeo', ['--insecure-policy', 'copy', '-q', '--dest-compress-format', compress, `docker-archive:${plain}`, `oci:${layout}:refapp-oci`], { stdio: 'pipe' });
    // The layout as a directory, and packed into a tar.
    const packed = path.join(dir, 'layout.tar');
    execFileSync('tar', ['-cf', packed, '-C', layout, '.']);
    for (const input of [layout, packed]) {
      const root = path.join(dir, `root-${path.basename(input)}`);
      const r = lamina(root, 'load', '-i', input);
      assert.equal(r.code, 0, r.stderr);
      const id = /^Loaded image ID: (sha256:[0-9a-f]{64})$/m.exec(r.stdout)?.[1];
      assert.ok(id, `no image ID in ${JSON.stringify(r.stdout)}`);
      const [info] = JSON.parse(lamina(root, 'image', 'inspect', id).stdout);
      assert.deepEqual(info.RootFS.Layers, app.diffIDs);
      // The manifest's config digest is the image ID (skopeo rewrote the config for OCI).
      const index = JSON.parse(fs.readFileSync(path.join(layout, 'index.json'), 'utf8'));
      const manifest = JSON.parse(fs.readFileSync(path.join(layout, 'blobs/sha256', index.manifests[0].digest.slice(7)), 'utf8'));
      assert.equal(id, manifest.config.digest);
      // Layers stored uncompressed-equivalent: save gives back the exact layer tars.
      const saved = path.join(dir, `saved-${path.basename(input)}.tar`);
      assert.equal(lamina(root, 'save', '-o', saved, id).code, 0);
      const out = path.join(dir, `unpacked-${path.basename(input)}`);
      fs.mkdirSync(out);
      execFileSync('tar', ['-xf', saved, '-C', out]);
      const m = JSON.parse(fs.readFileSync(path.join(out, 'manifest.json'), 'utf8'));
      m[0].Layers.forEach((l: string, i: number) => {
        assert.equal('sha256:' + createHash('sha256').update(fs.readFileSync(path.join(out, l))).digest('hex'), app.diffIDs[i]);
      });
    }
  });
}

test('an image built with umoci (root entry "/", gzip layer) loads and its files land in diff/', { skip: have('umoci') ? false : 'umoci is not installed (scripts/ci-test.sh installs it)' }, (t) => {
  const dir = tmp(t);
  const layout = path.join(dir, 'lay');
  const bundle = path.join(dir, 'bundle');
  execFileSync('umoci', ['init', '--layout', layout]);
  execFileSync('umoci', ['new', '--image', `${layout}:base`]);
  execFileSync('umoci', ['unpack', '--image', `${layout}:base`, bundle]);
  fs.mkdirSync(path.join(bundle, 'rootfs/etc'), { recursive: true });
  fs.writeFileSync(path.join(bundle, 'rootfs/etc/hello'), 'hello from umoci\n');
  fs.symlinkSync('hello', path.join(bundle, 'rootfs/etc/hi'));
  execFileSync('umoci', ['repack', '--image', `${layout}:base`, bundle]);
  const root = path.join(dir, 'root');
  const r = lamina(root, 'load', '-i', layout);
  assert.equal(r.code, 0, r.stderr);
  const id = /Loaded image ID: (sha256:[0-9a-f]{64})/.exec(r.stdout)![1];
  const [info] = JSON.parse(lamina(root, 'image', 'inspect', id).stdout);
  assert.equal(info.RootFS.Layers.length, 1);
  const diff = info.GraphDriver.Data.UpperDir;
  assert.equal(fs.readFileSync(path.join(diff, 'etc/hello'), 'utf8'), 'hello from umoci\n');
  assert.equal(fs.readlinkSync(path.join(diff, 'etc/hi')), 'hello');
  // The layer's diffID in umoci's config is what lamina computed.
  const index = JSON.parse(fs.readFileSync(path.join(layout, 'index.json'), 'utf8'));
  const manifest = JSON.parse(fs.readFileSync(path.join(layout, 'blobs/sha256', index.manifests[0].digest.slice(7)), 'utf8'));
  const config = JSON.parse(fs.readFileSync(path.join(layout, 'blobs/sha256', manifest.config.digest.slice(7)), 'utf8'));
  assert.deepEqual(info.RootFS.Layers, config.rootfs.diff_ids);
});
