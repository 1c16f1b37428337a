// Hostile archives through `lamina load`: each is refused with one clear line and leaves the
// store exactly as it was, or (only where Docker does) is confined inside the new layer. In
// every case nothing outside the store changes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { createHash } from 'node:crypto';
import * as sys from '../../src/sys/index.js';
import { marshalGo } from '../../src/images/gojson.js';
import { file, dir, symlink, hardlink, pax, tar, entry } from '../archive/tarbuild.js';
import { lamina } from '../helpers/cli.js';
import { fixtureSave } from '../helpers/expected.js';

const sha = (b: Buffer) => 'sha256:' + createHash('sha256').update(b).digest('hex');

/** A docker-archive with the given layer tars; `diffIDs` defaults to their real digests. */
function archive(layers: Buffer[], opts: { diffIDs?: string[]; config?: Buffer; dropLayer?: number; tag?: string } = {}): Buffer {
  const diffIDs = opts.diffIDs ?? layers.map(sha);
  const config = opts.config ?? Buffer.from(marshalGo({
    architecture: 'amd64', config: { Cmd: ['sh'] }, created: '2026-01-01T00:00:00Z', os: 'linux',
    rootfs: { type: 'layers', diff_ids: diffIDs },
  }));
  const cfgName = sha(config).slice(7) + '.json';
  const members: Buffer[] = [];
  const names: string[] = [];
  layers.forEach((l, i) => {
    const n = `layer${i}/layer.tar`;
    names.push(n);
    if (i !== opts.dropLayer) members.push(dir(`layer${i}/`), file(n, l));
  });
  const manifest = [{ Config: cfgName, RepoTags: [opts.tag ?? 'hostile:1'], Layers: names }];
  return tar(file(cfgName, config), ...members, file('manifest.json', JSON.stringify(manifest)));
}

const baseLayer = tar(dir('etc/'), file('etc/passwd', 'root:x:0:0:root:/root:/bin/sh\n'), dir('tmp/'));

/** Every path under `root` with type, mode, owner, size, content hash, link target, xattrs;
 * mtimes of non-directories (a directory's mtime moves when a staging entry comes and goes). */
function snapshot(root: string): string[] {
  const out: string[] = [];
  const visit = (p: string, rel: string) => {
    const st = fs.lstatSync(p, { bigint: true });
    let line = `${rel} mode=${st.mode.toString(8)} owner=${st.uid}:${st.gid} nlink=${st.isDirectory() ? '-' : st.nlink} rdev=${st.rdev}`;
    if (!st.isDirectory()) line += ` mtime=${st.mtimeNs}`;
    if (st.isFile()) line += ` size=${st.size} sha=${createHash('sha256').update(fs.readFileSync(p)).digest('hex')}`;
    if (st.isSymbolicLink()) line += ` -> ${fs.readlinkSync(p)}`;
    for (const x of sys.llistxattr(p).sort()) line += ` ${x}=${sys.lgetxattr(p, x)?.toString('hex')}`;
    out.push(line);
    if (st.isDirectory()) for (const n of fs.readdirSync(p).sort()) visit(path.join(p, n), `${rel}/${n}`);
  };
  visit(root, '.');
  return out;
}

interface Case { name: string; archive: () => Buffer; error: RegExp }

const refused: Case[] = [
  { name: 'file below a symlink that points outside', archive: () => archive([baseLayer, tar(symlink('esc', '../../../outside'), file('esc/pwned', 'x'))]), error: /tar entry "esc\/pwned"/ },
  { name: 'hard link to an absolute path outside', archive: () => archive([tar(hardlink('passwd', '/etc/passwd'))]), error: /tar entry "passwd"/ },
  { name: 'hard link climbing with ..', archive: () => archive([tar(file('a', 'x'), hardlink('b', '../../outside/canary'))]), error: /tar entry "b"/ },
  { name: 'hard link through PAX linkpath', archive: () => archive([tar(pax({ linkpath: '../../../outside/canary' }), hardlink('c', 'x'))]), error: /tar entry "c"/ },
  { name: 'hard link through a symlinked dir', archive: () => archive([tar(symlink('up', '../../outside'), hardlink('h', 'up/canary'))]), error: /tar entry "h"/ },
  { name: 'whiteout below a symlinked dir', archive: () => archive([baseLayer, tar(symlink('s', '/tmp'), file('s/.wh.x'))]), error: /tar entry "s\/\.wh\.x"/ },
  { name: 'invalid whiteout .wh..', archive: () => archive([tar(file('.wh..'))]), error: /invalid whiteout/ },
  { name: 'truncated layer', archive: () => archive([tar(file('big', 'y'.repeat(4000))).subarray(0, 2000)], { diffIDs: [sha(tar(file('big', 'y'.repeat(4000))).subarray(0, 2000))] }), error: /unexpected end of archive|truncated/ },
  { name: 'bad header checksum', archive: () => archive([Buffer.concat([entry({ name: 'x', badChecksum: true }, 'x'), Buffer.alloc(1024)])]), error: /checksum/ },
  { name: 'size field far beyond the data', archive: () => archive([Buffer.concat([entry({ name: 'huge', size: 1 << 30 }), Buffer.alloc(1024)])]), error: /unexpected end|truncated/ },
  { name: 'duplicate path in one layer', archive: () => archive([tar(symlink('d', '/etc'), file('d', 'x'))]), error: /duplicates of file paths not supported/ },
  { name: 'diffID mismatch', archive: () => archive([baseLayer], { diffIDs: [sha(Buffer.from('other'))] }), error: /invalid diffID for layer 0/ },
  { name: 'second layer hostile after a good new first layer', archive: () => archive([baseLayer, tar(hardlink('p', '/etc/shadow'))]), error: /tar entry "p"/ },
  { name: 'manifest naming a missing layer', archive: () => archive([baseLayer], { dropLayer: 0 }), error: /layer0\/layer\.tar/ },
  { name: 'config that is not JSON', archive: () => archive([baseLayer], { config: Buffer.from('{not json') }), error: /not valid JSON/ },
  { name: 'gzip garbage', archive: () => Buffer.concat([Buffer.from([0x1f, 0x8b, 8, 0]), Buffer.from('garbage'.repeat(50))]), error: /gzip/ },
];

test('hostile archives are refused with one line naming the problem; the store and its surroundings stay exactly as they were', async (t) => {
  const top = fs.mkdtempSync(path.join(os.tmpdir(), 'lamina-hostile-'));
  t.after(() => fs.rmSync(top, { recursive: true, force: true }));
  const root = path.join(top, 'root');
  fs.mkdirSync(path.join(top, 'outside'));
  fs.writeFileSync(path.join(top, 'outside', 'canary'), 'canary\n');
  let r = lamina(root, 'load', '-i', fixtureSave('refbase'));
  assert.equal(r.code, 0, r.stderr);
  const before = snapshot(top);
  for (const c of refused) {
    const f = path.join(os.tmpdir(), `lamina-hostile-input-${process.pid}.tar`);
    fs.writeFileSync(f, c.archive());
    try {
      r = lamina(root, 'load', '-i', f);
    } finally {
      fs.rmSync(f, { force: true });
    }
    assert.equal(r.code, 1, `${c.name}: exit code (stdout ${r.stdout})`);
    assert.match(r.stderr, /^Error: [^\n]+\n$/, `${c.name}: one line on stderr, got ${JSON.stringify(r.stderr)}`);
    assert.match(r.stderr, c.error, c.name);
    assert.deepEqual(snapshot(top), before, `${c.name}: something changed`);
  }
});

test('names Docker confines are confined inside the new layer; nothing outside changes', async (t) => {
  const top = fs.mkdtempSync(path.join(os.tmpdir(), 'lamina-confine-'));
  t.after(() => fs.rmSync(top, { recursive: true, force: true }));
  const root = path.join(top, 'root');
  fs.mkdirSync(path.join(top, 'outside'));
  const outsideBefore = () => { const s = snapshot(top); return s.filter((l) => !l.startsWith('./root')); };
  const before = outsideBefore();
  const layer = tar(
    file('../../../outside/dotdot', 'a'),
    pax({ path: '../../outside/paxpath' }), file('ignored', 'b'),
    file('/abs/name', 'c'),
    symlink('rootlink', '/'), file('rootlink/through-root', 'd'),
  );
  const f = path.join(top, 'confined.tar');
  fs.writeFileSync(f, archive([layer], { tag: 'confined:1' }));
  const r = lamina(root, 'load', '-i', f);
  assert.equal(r.code, 0, r.stderr);
  fs.rmSync(f);
  assert.deepEqual(outsideBefore(), before);
  const inspect = JSON.parse(lamina(root, 'image', 'inspect', 'confined:1').stdout);
  const diff = inspect[0].GraphDriver.Data.UpperDir as string;
  for (const [p, content] of [['outside/dotdot', 'a'], ['outside/paxpath', 'b'], ['abs/name', 'c'], ['through-root', 'd']]) {
    assert.equal(fs.readFileSync(path.join(diff, p), 'utf8'), content, p);
  }
  // The layer still saves back to the very bytes that were loaded.
  const saved = path.join(top, 'saved.tar');
  assert.equal(lamina(root, 'save', '-o', saved, 'confined:1').code, 0);
  const unpacked = path.join(top, 'unpacked');
  fs.mkdirSync(unpacked);
  const { execFileSync } = await import('node:child_process');
  execFileSync('tar', ['-xf', saved, '-C', unpacked]);
  const manifest = JSON.parse(fs.readFileSync(path.join(unpacked, 'manifest.json'), 'utf8'));
  assert.equal(sha(fs.readFileSync(path.join(unpacked, manifest[0].Layers[0]))), sha(layer));
  void zlib;
});
