// `lamina fs …` on a Docker-made image, checked against the classic tools run on a kernel
// overlay mount of the same layers (GNU ls, find, cat, stat) and against Docker's own layer
// listing (expected.json) for `fs which`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { Writable } from 'node:stream';
import { Command } from 'commander';
import { Store } from '../../src/store.js';
import { registerFsCommands, openImage, parseTarget, globRegex } from '../../src/cli/fs.js';
import { expectedImages, fixtureSave } from '../helpers/expected.js';
import { mountOverlay } from './harness.js';

const isRoot = process.getuid?.() === 0;

class Capture extends Writable {
  text = '';
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.text += chunk.toString();
    cb();
  }
}

test('parseTarget splits IMAGE:/path, and keeps registry ports and tags in the reference', () => {
  assert.deepEqual(parseTarget('busybox'), { ref: 'busybox', path: '/' });
  assert.deepEqual(parseTarget('busybox:latest:/etc/passwd'), { ref: 'busybox:latest', path: '/etc/passwd' });
  assert.deepEqual(parseTarget('localhost:5000/a/b:1.0:/x y'), { ref: 'localhost:5000/a/b:1.0', path: '/x y' });
  assert.throws(() => parseTarget(':/etc'), /expected IMAGE:\/path/);
});

test('find --name globs follow fnmatch', () => {
  assert.ok(globRegex('*.txt').test('a.txt'));
  assert.ok(!globRegex('*.txt').test('a.txt~'));
  assert.ok(globRegex('c?.txt').test('c1.txt'));
  assert.ok(globRegex('[ab].txt').test('b.txt'));
  assert.ok(!globRegex('[!ab].txt').test('a.txt'));
  assert.ok(globRegex('with space.txt').test('with space.txt'));
});

test('lamina fs on the refapp image matches GNU tools on a kernel mount and Docker\'s layers', { skip: !isRoot && 'needs root (overlay mount for the oracle)' }, async (t) => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'lamina-fs-cli-'));
  let unmount = () => {};
  // node:test runs after-hooks in the order they were added: unmount, then remove.
  t.after(() => {
    unmount();
    fs.rmSync(root, { recursive: true, force: true });
  });
  const store = Store.open(path.join(root, 'lamina'));
  await store.load(fixtureSave('refapp'));
  const img = expectedImages().find((i) => i.source.startsWith('refapp'))!;
  const ref = img.RepoTags[0];
  const view = await openImage(store, ref);
  const merged = path.join(root, 'merged');
  fs.mkdirSync(merged);
  unmount = mountOverlay(merged, view.layers.map((l) => l.dir));

  const savedTZ = process.env.TZ;
  process.env.TZ = 'UTC';
  t.after(() => {
    if (savedTZ === undefined) delete process.env.TZ;
    else process.env.TZ = savedTZ;
  });
  const run = async (...args: string[]) => {
    const out = new Capture();
    const program = new Command().exitOverride();
    registerFsCommands(program, async () => store, out);
    await program.parseAsync(['fs', ...args], { from: 'user' });
    return out.text;
  };
  const gnu = (cmd: string, ...args: string[]) => execFileSync(cmd, args, { env: { ...process.env, LC_ALL: 'C', TZ: 'UTC' }, encoding: 'utf8' });

  for (const dir of ['/', '/bin', '/data', '/app', '/opt/olddir', '/etc']) {
    assert.equal(await run('ls', '-n', `${ref}:${dir}`), gnu('ls', '-ln', merged + dir), `ls -n ${dir}`);
    // At the root, '..' is the image's root for the engine but the host's parent dir for the mount.
    const noDotDot = (s: string) => (dir === '/' ? s.replace(/\n[^\n]* \.\.\n/, '\n') : s);
    assert.equal(noDotDot(await run('ls', '-n', '-a', `${ref}:${dir}`)), noDotDot(gnu('ls', '-lna', merged + dir)), `ls -na ${dir}`);
    assert.equal(await run('ls', `${ref}:${dir}`), gnu('ls', merged + dir), `ls ${dir}`);
  }
  assert.equal(await run('ls', '-n', `${ref}:/data/null`), gnu('ls', '-ln', merged + '/data/null').replace(merged, ''), 'ls -n of a device');
  // Names come from the image's own /etc/passwd and /etc/group.
  const passwd = fs.readFileSync(merged + '/etc/passwd', 'utf8');
  const rootName = passwd.split('\n').find((l) => l.split(':')[2] === '0')!.split(':')[0];
  assert.match(await run('ls', '-l', `${ref}:/etc/passwd`), new RegExp(` ${rootName} +`));

  // find walks in readdir order, which must be the kernel's merge order line for line.
  const strip = (s: string) => s.split('\n').map((l) => (l.startsWith(merged) ? l.slice(merged.length) || '/' : l)).join('\n');
  assert.equal(await run('find', `${ref}:/`), strip(gnu('find', merged + '/')).replace(/^\/\/?\n/, '/\n'), 'find /');
  assert.equal(await run('find', `${ref}:/data`), strip(gnu('find', merged + '/data')), 'find /data');
  assert.equal(await run('find', `${ref}:/`, '--name', '*.txt', '--type', 'f'), strip(gnu('find', merged + '/', '-name', '*.txt', '-type', 'f')).replace(/^\/\//gm, '/'), 'find -name -type');
  assert.equal(await run('find', `${ref}:/app`, '--maxdepth', '1'), strip(gnu('find', merged + '/app', '-maxdepth', '1')), 'find -maxdepth');

  assert.equal(await run('cat', `${ref}:/etc/os-release`, '/app/c1.symlink'), gnu('cat', merged + '/etc/os-release', merged + '/app/c1.symlink'));

  const st = await run('stat', `${ref}:/etc/passwd`);
  const kst = fs.statSync(merged + '/etc/passwd');
  assert.match(st, new RegExp(`^  File: /etc/passwd\\n  Size: ${kst.size} `));
  assert.match(st, new RegExp(`Access: \\(0${(kst.mode & 0o7777).toString(8)}/-`));
  assert.match(await run('stat', `${ref}:/app/c1.symlink`), /File: \/app\/c1.symlink -> /);

  const tree = await run('tree', `${ref}:/data`);
  const dirs = gnu('find', merged + '/data', '-mindepth', '1', '-type', 'd').trim().split('\n').filter(Boolean).length;
  const files = gnu('find', merged + '/data', '-mindepth', '1', '!', '-type', 'd').trim().split('\n').filter(Boolean).length;
  assert.ok(tree.startsWith('/data\n'));
  assert.ok(tree.endsWith(`\n${dirs} director${dirs === 1 ? 'y' : 'ies'}, ${files} files\n`), tree);
  assert.match(tree, /├── a\.txt\n/);

  // which: the provider is the topmost layer Docker recorded the path in; the others are shadowed.
  const holders = (p: string) => img.layers.filter((l) => l.entries.some((e) => e.path === p)).map((l) => l.index).reverse();
  for (const p of ['data/perm.sh', 'bin/capfile', 'etc/xattr.txt', 'app/c1.txt', 'etc/passwd']) {
    const h = holders(p);
    const text = await run('which', `${ref}:/${p}`);
    assert.match(text, new RegExp(`^/${p}: file from layer ${h[0]} `), text);
    for (const lower of h.slice(1)) assert.match(text, new RegExp(`\\n  layer ${lower} \\(sha256:`), text);
  }
  const dirText = await run('which', `${ref}:/app`);
  assert.match(dirText, new RegExp(`^/app: directory merged from ${holders('app').length} layers`));
  // /opt/olddir was made opaque in layer 3: layer 1's copy is hidden, not merged.
  const opaque = await run('which', `${ref}:/opt/olddir`);
  assert.match(opaque, /^\/opt\/olddir: dir from layer 3 /);
  assert.match(opaque, /shadows:\n  layer 1 \(sha256:[0-9a-f]+\): dir/);
  await assert.rejects(run('which', `${ref}:/etc/deleteme`), { code: 'ENOENT' });
});
