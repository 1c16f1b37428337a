// The image commands through the real CLI process: Docker's output shapes and exit codes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expectedImages, fixtureSave } from '../helpers/expected.js';
import { lamina } from '../helpers/cli.js';

test('load, images, inspect, history, tag, save and rmi through the CLI', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lamina-cli-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const root = path.join(dir, 'root');
  const app = expectedImages().find((i) => i.RepoTags[0] === 'refapp:1')!;

  let r = lamina(root, 'load', '-i', fixtureSave('refapp'));
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'Loaded image: refapp:1\n');

  r = lamina(root, 'images');
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trimEnd().split('\n');
  assert.match(lines[0], /^REPOSITORY\s{3,}TAG\s{3,}IMAGE ID\s{3,}CREATED\s{3,}SIZE$/);
  assert.match(lines[1], new RegExp(`^refapp\\s+1\\s+${app.imageID.slice(7, 19)}\\s+.+ ago\\s+1\\.98MB$`));
  // Columns line up (tabwriter): each header starts where its values start.
  assert.equal(lines[0].indexOf('IMAGE ID'), lines[1].indexOf(app.imageID.slice(7, 19)));

  r = lamina(root, 'images', '--format', 'json');
  const row = JSON.parse(r.stdout.trim());
  assert.equal(row.Repository, 'refapp');
  assert.equal(row.Tag, '1');
  assert.equal(row.ID, app.imageID.slice(7, 19));

  r = lamina(root, 'images', '-q');
  assert.equal(r.stdout, app.imageID.slice(7, 19) + '\n');

  r = lamina(root, 'image', 'inspect', 'refapp:1');
  assert.equal(r.code, 0, r.stderr);
  const [info] = JSON.parse(r.stdout);
  assert.equal(info.Id, app.imageID);
  assert.deepEqual(info.RepoTags, ['refapp:1']);
  assert.deepEqual(info.RootFS, { Type: 'layers', Layers: app.diffIDs });
  assert.equal(info.Size, app.dockerReported.Size);
  assert.equal(info.GraphDriver.Name, 'overlay2');
  const data = info.GraphDriver.Data;
  assert.deepEqual(Object.keys(data), ['LowerDir', 'MergedDir', 'UpperDir', 'WorkDir']);
  assert.equal(data.LowerDir.split(':').length, app.diffIDs.length - 1);
  for (const d of [data.UpperDir, ...data.LowerDir.split(':')]) assert.ok(fs.statSync(d).isDirectory(), d);
  assert.match(data.UpperDir, new RegExp(`^${root}/overlay2/[0-9a-f]{64}/diff$`));
  assert.equal(info.Config.WorkingDir, '/work/dir');
  assert.match(r.stdout, /^\[\n    \{\n        "Id": /, 'indented like docker inspect');

  r = lamina(root, 'image', 'inspect', 'nope:1');
  assert.equal(r.code, 1);
  assert.equal(r.stderr, 'Error: No such image: nope:1\n');
  assert.equal(r.stdout.trim(), '[]');

  r = lamina(root, 'history', 'refapp:1');
  assert.equal(r.code, 0, r.stderr);
  const hist = r.stdout.trimEnd().split('\n');
  const config = JSON.parse(lamina(root, 'image', 'inspect', '--format', '{{json .RootFS}}', 'refapp:1').stdout);
  assert.deepEqual(config.Layers, app.diffIDs);
  assert.match(hist[0], /^IMAGE\s+CREATED\s+CREATED BY\s+SIZE\s+COMMENT$/);
  assert.ok(hist[1].startsWith(app.imageID.slice(7, 19)));
  assert.ok(hist.slice(2).every((l) => l.startsWith('<missing>')));
  assert.equal(hist.length - 1, (JSON.parse(fs.readFileSync(path.join(root, 'image/overlay2/imagedb/content/sha256', app.imageID.slice(7)), 'utf8')).history as unknown[]).length);

  r = lamina(root, 'tag', 'refapp:1', 'localhost:5000/team/app:v2');
  assert.equal(r.code, 0, r.stderr);
  r = lamina(root, 'images', '--format', '{{.Repository}}:{{.Tag}}');
  assert.deepEqual(r.stdout.trim().split('\n').sort(), ['localhost:5000/team/app:v2', 'refapp:1']);

  const out = path.join(dir, 'out.tar');
  r = lamina(root, 'save', '-o', out, 'localhost:5000/team/app:v2');
  assert.equal(r.code, 0, r.stderr);
  assert.ok(fs.statSync(out).size > 2_000_000);

  r = lamina(root, 'rmi', 'localhost:5000/team/app:v2');
  assert.equal(r.stdout, 'Untagged: localhost:5000/team/app:v2\n');
  r = lamina(root, 'rmi', 'refapp:1');
  assert.equal(r.code, 0, r.stderr);
  const rmLines = r.stdout.trimEnd().split('\n');
  assert.equal(rmLines[0], 'Untagged: refapp:1');
  assert.equal(rmLines[1], `Deleted: ${app.imageID}`);
  assert.deepEqual(rmLines.slice(2), app.chainIDs.slice().reverse().map((c) => `Deleted: ${c}`));

  r = lamina(root, 'load', '-i', path.join(dir, 'missing.tar'));
  assert.equal(r.code, 1);
  assert.equal(r.stderr.split('\n').filter(Boolean).length, 1, 'one-line error');
  assert.match(r.stderr, /missing\.tar/);
});
