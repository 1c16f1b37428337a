// `lamina cp` into a container through the userspace engine must leave what the kernel leaves:
// the same copies go into twin containers of refapp:1, one stopped (cp writes its upper dir with
// the engine) and one mounted with kernel overlayfs (cp writes through merged/, the kernel does
// the overlay work). Then diff, the upper dirs, the committed layer tars and `cp` out must agree.
//
// What may differ, and why: a directory that only *received* entries (/tmp, /app, /data,
// /var/log, the deleted-then-recreated parents) gets its mtime from the file system at copy
// time, and a whiteout from the moment `rm` ran; the two twins are written seconds apart, so
// those times differ, in the upper dirs and in the layer tars (hence the diffIDs). Every time the
// copy itself sets (files, symlinks, and the directories the copy contains) comes from the
// source and must be equal; the test checks those against the source's fixed times.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { pipeline } from 'node:stream/promises';
import { Store } from '../../src/store.js';
import { chainIDs } from '../../src/digest/index.js';
import { countDir, forceUnmount, mountCount } from '../../src/mount/index.js';
import * as sys from '../../src/sys/index.js';
import type { MountSpec } from '../../src/overlay2/driver.js';
import { createOn, containerLowers, mountRW, refappStore, tmpDir, unmount } from '../containers/helpers.js';
import { mountOverlay } from '../union/harness.js';
import { CLI } from '../helpers/cli.js';
import { describeTree, fixTimes, layerEntries, ok, run, SOURCE_MTIME, type LayerEntry, type TreeEntry } from './harness.js';

const isRoot = process.getuid?.() === 0;

/** The host side of every copy: files, a tree with every kind of entry, a stdin tar. */
function makeSources(dir: string): { src: string; stdinTar: Buffer } {
  const s = path.join(dir, 'src');
  const w = (rel: string, text: string, mode = 0o644) => {
    fs.mkdirSync(path.dirname(path.join(s, rel)), { recursive: true });
    fs.writeFileSync(path.join(s, rel), text);
    fs.chmodSync(path.join(s, rel), mode);
  };
  w('new.txt', 'a new file\n');
  w('c1.txt', 'c1, overwritten through cp\n', 0o640);
  w('a.txt', 'a.txt, back again\n');
  w('tree/exec.sh', '#!/bin/sh\necho hi\n', 0o755);
  w('tree/setuid', 'suid\n', 0o4755);
  w('tree/empty', '', 0o600);
  w('tree/owned', 'owned by 1234:5678 on the host\n');
  fs.chownSync(path.join(s, 'tree/owned'), 1234, 5678);
  w('tree/sub/deep.txt', 'deep\n');
  w('tree/sub/sub2/leaf', 'leaf\n');
  w('tree/hard1', 'one inode, two names\n');
  fs.linkSync(path.join(s, 'tree/hard1'), path.join(s, 'tree/sub/hard2'));
  fs.symlinkSync('exec.sh', path.join(s, 'tree/rel.link'));
  fs.symlinkSync('/etc/passwd', path.join(s, 'tree/abs.link'));
  sys.mknod(path.join(s, 'tree/fifo'), sys.S_IFIFO | 0o644);
  fs.chmodSync(path.join(s, 'tree'), 0o750);
  fs.chmodSync(path.join(s, 'tree/sub'), 0o700);
  w('olddir/fresh.txt', 'fresh\n');
  fs.chmodSync(path.join(s, 'olddir'), 0o711);
  w('etc/extra.conf', 'extra=1\n');
  w('etc/os-release', 'NAME="cp test"\n');
  fs.symlinkSync('new.txt', path.join(s, 'hostlink'));
  w('owned-a', 'keeps its owner with -a\n');
  fs.chownSync(path.join(s, 'owned-a'), 1234, 5678);
  w('stdin/log1.txt', 'log one\n');
  w('stdin/nested/log2.txt', 'log two\n');
  fixTimes(s);
  // An independent tar writer for the `-` source: GNU tar, with owners that must become root.
  const stdinTar = execFileSync('tar', ['-C', path.join(s, 'stdin'), '--owner=77', '--group=88', '--numeric-owner', '-cf', '-', '.']);
  return { src: s, stdinTar };
}

/** The copies, the same for both twins: new file, overwrite of a lower file, trees, -L, -a, `-`. */
function copies(src: string, c: string): Array<{ args: string[]; stdin?: boolean }> {
  return [
    { args: [`${src}/new.txt`, `${c}:/tmp/`] },
    { args: [`${src}/c1.txt`, `${c}:/app/c1.txt`] }, // a lower file (a hard link in layer 7)
    { args: [`${src}/a.txt`, `${c}:/data/a.txt`] }, // over the whiteout of a deleted lower file
    { args: [`${src}/tree`, `${c}:/newtree`] }, // a new directory tree, renamed
    { args: [`${src}/olddir`, `${c}:/opt/`] }, // over the whiteout of a deleted lower dir
    { args: [`${src}/etc`, `${c}:/`] }, // merged into the lower /etc
    { args: ['-L', `${src}/hostlink`, `${c}:/tmp/`] },
    { args: ['-a', `${src}/owned-a`, `${c}:/tmp/owned-a`] },
    { args: [`${src}/tree/.`, `${c}:/tmp/contents`] },
    { args: ['-', `${c}:/var/log`], stdin: true },
  ];
}

/** What `rm` did in both twins before the copies (through a kernel mount, as a container would). */
function deleteSome(t: Parameters<typeof mountRW>[0], store: Store, c: Parameters<typeof mountRW>[2]): void {
  const m = mountRW(t, store, c);
  fs.rmSync(`${m}/data/a.txt`);
  fs.rmSync(`${m}/data/b.txt`);
  fs.rmSync(`${m}/opt/olddir`, { recursive: true });
  unmount(m);
}

/** Compares two descriptions entry by entry; times may differ only where the file system set both after `since`. */
function sameTrees(a: TreeEntry[], b: TreeEntry[], since: number, what: string): void {
  assert.deepEqual(a.map((e) => e.path), b.map((e) => e.path), `${what}: the same entries`);
  for (let i = 0; i < a.length; i++) {
    const x = { ...a[i] };
    const y = { ...b[i] };
    if (x.mtime !== y.mtime) {
      const whiteout = x.type === 'char' && x.rdev === '0';
      assert.ok((x.type === 'dir' || whiteout) && x.mtime >= since && y.mtime >= since, `${what}: ${x.path} mtime ${x.mtime} vs ${y.mtime}`);
      x.mtime = y.mtime = 0;
    }
    assert.deepEqual(x, y, `${what}: ${x.path}`);
  }
}

/** Compares two layer tars header by header; returns the entries whose times were copy times. */
function sameLayers(a: LayerEntry[], b: LayerEntry[], since: number): string[] {
  assert.deepEqual(a.map((e) => e.name), b.map((e) => e.name), 'the committed layers hold the same entries in the same order');
  const copyTimes: string[] = [];
  for (let i = 0; i < a.length; i++) {
    const x = { ...a[i] };
    const y = { ...b[i] };
    if (x.mtime !== y.mtime) {
      const whiteout = path.basename(x.name).startsWith('.wh.');
      assert.ok((x.type === '5' || whiteout) && x.mtime >= since && y.mtime >= since, `layer entry ${x.name}: mtime ${x.mtime} vs ${y.mtime}`);
      x.mtime = y.mtime = 0;
    }
    if (a[i].mtime >= since) copyTimes.push(x.name);
    assert.deepEqual(x, y, `layer entry ${x.name}`);
  }
  return copyTimes;
}

async function committedLayer(t: Parameters<typeof tmpDir>[0], root: string, ref: string): Promise<string> {
  const store = Store.open(root);
  const ids = store.images.get(store.resolveImage(ref)).rootfs.diff_ids;
  const file = path.join(tmpDir(t), 'layer.tar');
  await pipeline(await store.layers.openTar(chainIDs(ids)[ids.length - 1]), fs.createWriteStream(file));
  return file;
}

test('cp into a stopped container (engine) and into its kernel-mounted twin: same diff, upper dir, committed layer and bytes out', { skip: !isRoot && 'needs root (kernel overlay mounts for the twin)' }, async (t) => {
  const since = Math.floor(Date.now() / 1000) - 1;
  // Whatever happens, nothing stays mounted (registered first: it must run before the store is removed).
  const specs: MountSpec[] = [];
  t.after(() => {
    for (const spec of specs) if (mountCount(spec) > 0) forceUnmount(spec);
  });
  const { store, root } = await refappStore(t);
  const a = createOn(store, 'engine-twin');
  const b = createOn(store, 'kernel-twin');
  specs.push(store.driver.mountSpec(a.mount.mountID), store.driver.mountSpec(b.mount.mountID));
  deleteSome(t, store, a);
  deleteSome(t, store, b);
  const { src, stdinTar } = makeSources(tmpDir(t, 'lamina-cp-src-'));

  assert.match(ok(root, ['mount', '--backend', 'kernel', 'kernel-twin']).toString(), /\/merged\n$/);
  for (const [name, mounted] of [['engine-twin', false], ['kernel-twin', true]] as const) {
    for (const cp of copies(src, name)) {
      ok(root, ['cp', ...cp.args], cp.stdin ? stdinTar : undefined);
    }
    // The engine twin was never mounted; the kernel twin stayed mounted throughout.
    const c = name === 'engine-twin' ? a : b;
    assert.equal(mountCount(store.driver.mountSpec(c.mount.mountID)) > 0, mounted, `${name} mounted: ${mounted}`);
  }
  // The engine held the layer's mount lock while it wrote, and left no count file behind.
  assert.equal(fs.existsSync(path.join(countDir(store.driver.home), a.mount.mountID)), false);

  // Bytes out: the engine's view of one, the kernel's view of the other, the same tar.
  for (const p of ['/newtree', '/etc/os-release', '/tmp/contents', '/app', '/var/log/nested/']) {
    const fromEngine = ok(root, ['cp', `engine-twin:${p}`, '-']);
    const fromKernel = ok(root, ['cp', `kernel-twin:${p}`, '-']);
    if (p === '/app') {
      // /app's own mtime is a copy time; the entries below it are all equal.
      assert.deepEqual(layerEntries(await tarFile(t, fromEngine)).slice(1), layerEntries(await tarFile(t, fromKernel)).slice(1), `cp ${p} -`);
    } else {
      assert.ok(fromEngine.equals(fromKernel), `cp ${p} - gives the same bytes from both twins`);
    }
  }
  ok(root, ['umount', 'kernel-twin']);
  assert.equal(mountCount(store.driver.mountSpec(b.mount.mountID)), 0);

  // diff: identical lines, with the changes the copies must have made.
  const diffA = ok(root, ['diff', 'engine-twin']).toString();
  const diffB = ok(root, ['diff', '--backend', 'userspace', 'kernel-twin']).toString();
  assert.equal(diffA, diffB);
  for (const line of ['C /app/c1.txt', 'A /tmp/new.txt', 'A /tmp/hostlink', 'A /newtree/sub/hard2', 'C /etc/os-release', 'A /etc/extra.conf',
    'C /data/a.txt', 'D /data/b.txt', 'C /opt/olddir', 'A /opt/olddir/fresh.txt', 'A /var/log/nested/log2.txt', 'A /tmp/contents/sub/sub2/leaf']) {
    assert.ok(diffA.split('\n').includes(line), `diff has "${line}":\n${diffA}`);
  }

  // The upper dirs: the same entries, owners, modes, contents, opaque markers, link counts.
  const upperA = describeTree(store.driver.diffPath(a.mount.mountID));
  const upperB = describeTree(store.driver.diffPath(b.mount.mountID));
  sameTrees(upperA, upperB, since, 'upper dirs');
  const get = (rel: string) => upperA.find((e) => e.path === rel)!;
  assert.equal(get('opt/olddir').xattrs['trusted.overlay.opaque'], '0x79', 'a directory copied where a lower one was deleted is opaque');
  assert.deepEqual([get('data/b.txt').type, get('data/b.txt').rdev], ['char', '0'], 'the whiteout of the file that stayed deleted');
  assert.equal(get('app/c1.txt').nlink, 1, 'the overwritten lower hard link is a new file, not a copy-up');
  assert.deepEqual([get('newtree/owned').uid, get('newtree/owned').gid], [0, 0], 'copied in without -a: root:root');
  assert.deepEqual([get('var/log/log1.txt').uid, get('var/log/log1.txt').gid], [0, 0], 'a tar from stdin: root:root too');
  assert.deepEqual([get('tmp/owned-a').uid, get('tmp/owned-a').gid], [1234, 5678], '-a keeps the owner');
  assert.equal(get('newtree/setuid').mode, '4755');
  assert.equal(get('newtree/hard1').nlink, 2);
  assert.equal(get('tmp/hostlink').type, 'file', '-L copies the link target, under the link name');
  for (const e of upperA) {
    if (e.type !== 'dir' && !(e.type === 'char' && e.rdev === '0')) assert.equal(e.mtime, SOURCE_MTIME, `${e.path} keeps the source mtime`);
  }
  for (const d of ['newtree', 'newtree/sub', 'etc', 'opt/olddir', 'tmp/contents']) assert.equal(get(d).mtime, SOURCE_MTIME, `${d} keeps the source mtime`);

  // commit: the layer tars hold the same entries and headers.
  ok(root, ['commit', 'engine-twin', 'cp-engine:1']);
  ok(root, ['commit', '--backend', 'userspace', 'kernel-twin', 'cp-kernel:1']);
  const layerA = layerEntries(await committedLayer(t, root, 'cp-engine:1'));
  const layerB = layerEntries(await committedLayer(t, root, 'cp-kernel:1'));
  const copyTimes = sameLayers(layerA, layerB, since);
  // Only the directories that received entries and the whiteout of the rm carry times of their own.
  assert.deepEqual(copyTimes, ['app/', 'data/', 'data/.wh.b.txt', 'opt/', 'tmp/', 'var/log/']);
  // The rest: the copy's own times, or the image's times on directories copied up (/var); the
  // opaque marker is a header the layer writer makes up (as Docker's does).
  for (const e of layerA) {
    if (!copyTimes.includes(e.name) && !e.name.endsWith('/.wh..wh..opq')) assert.ok(e.mtime === SOURCE_MTIME || (e.type === '5' && e.mtime < since), `${e.name}: mtime ${e.mtime}`);
  }
  assert.ok(layerA.some((e) => e.name === 'opt/olddir/.wh..wh..opq'), 'the opaque marker is in the layer');
  assert.ok(layerA.some((e) => e.name === 'data/.wh.b.txt'), 'the whiteout is in the layer');
});

async function tarFile(t: Parameters<typeof tmpDir>[0], bytes: Buffer): Promise<string> {
  const f = path.join(tmpDir(t), 'out.tar');
  fs.writeFileSync(f, bytes);
  return f;
}

test('cp out of a container: to a host directory (owners: yours, or the container\'s with -a) and as a tar GNU tar reads', { skip: !isRoot && 'needs root (chown of the sources)' }, async (t) => {
  const { store, root } = await refappStore(t);
  createOn(store, 'outbound');
  const { src } = makeSources(tmpDir(t, 'lamina-cp-src-'));
  ok(root, ['cp', `${src}/tree`, 'outbound:/newtree']);
  ok(root, ['cp', '-a', `${src}/owned-a`, 'outbound:/tmp/']);
  const out = tmpDir(t, 'lamina-cp-out-');

  // A directory to a new host path: the same tree as the source, owners aside (root in the container).
  ok(root, ['cp', 'outbound:/newtree', `${out}/tree`]);
  const want = describeTree(`${src}/tree`).map((e) => (e.path === 'owned' ? { ...e, uid: 0, gid: 0 } : e));
  assert.deepEqual(describeTree(`${out}/tree`), want);
  assert.equal(fs.statSync(`${out}/tree`).mode & 0o7777, 0o750);
  assert.equal(Math.floor(fs.statSync(`${out}/tree`).mtimeMs / 1000), SOURCE_MTIME);

  // Owners out: the invoking user by default, the container's with -a.
  const me = { uid: process.getuid!(), gid: process.getgid!() };
  ok(root, ['cp', 'outbound:/tmp/owned-a', `${out}/plain`]);
  ok(root, ['cp', '-a', 'outbound:/tmp/owned-a', `${out}/archived`]);
  assert.deepEqual([fs.statSync(`${out}/plain`).uid, fs.statSync(`${out}/plain`).gid], [me.uid, me.gid]);
  assert.deepEqual([fs.statSync(`${out}/archived`).uid, fs.statSync(`${out}/archived`).gid], [1234, 5678]);

  // Into an existing directory (under the source's name), and "dir/." (its contents).
  fs.mkdirSync(`${out}/into`);
  ok(root, ['cp', 'outbound:/newtree/sub', `${out}/into`]);
  ok(root, ['cp', 'outbound:/newtree/sub/.', `${out}/into`]);
  assert.deepEqual(fs.readdirSync(`${out}/into`).sort(), ['deep.txt', 'hard2', 'sub', 'sub2']);

  // -L resolves inside the container: /app/abs.symlink -> /data/a.txt of the image, not the host's.
  ok(root, ['cp', '-L', 'outbound:/app/abs.symlink', `${out}/followed`]);
  assert.equal(fs.readFileSync(`${out}/followed`, 'utf8'), ok(root, ['fs', 'cat', 'outbound:/data/a.txt']).toString());
  ok(root, ['cp', 'outbound:/app/abs.symlink', `${out}/kept`]);
  assert.equal(fs.readlinkSync(`${out}/kept`), '/data/a.txt');

  // `-`: a tar GNU tar lists and extracts to the same tree.
  const tar = ok(root, ['cp', 'outbound:/newtree', '-']);
  const names = execFileSync('tar', ['-tf', '-'], { input: tar, encoding: 'utf8' }).trim().split('\n');
  assert.deepEqual(names, ['newtree/', 'newtree/abs.link', 'newtree/empty', 'newtree/exec.sh', 'newtree/fifo', 'newtree/hard1', 'newtree/owned',
    'newtree/rel.link', 'newtree/setuid', 'newtree/sub/', 'newtree/sub/deep.txt', 'newtree/sub/hard2', 'newtree/sub/sub2/', 'newtree/sub/sub2/leaf']);
  const gnu = tmpDir(t, 'lamina-cp-gnu-');
  execFileSync('tar', ['-C', gnu, '--same-owner', '--numeric-owner', '-xpf', '-'], { input: tar });
  assert.deepEqual(describeTree(`${gnu}/newtree`), want);
  // Headers as Docker writes them: the container's user names, whole-second times, a hard link.
  const h = layerEntries(await tarFile(t, tar));
  assert.deepEqual(h.find((e) => e.name === 'newtree/sub/hard2')!.type, '1');
  assert.equal(h.find((e) => e.name === 'newtree/sub/hard2')!.linkname, 'newtree/hard1');
  const rootName = ok(root, ['fs', 'cat', 'outbound:/etc/passwd']).toString().split('\n').find((l) => l.split(':')[2] === '0')!.split(':')[0];
  assert.equal(h[0].uname, rootName);
});

test('lamina fs reads a container\'s merged view, as a kernel mount of its layers shows it', { skip: !isRoot && 'needs root (overlay mount for the oracle)' }, async (t) => {
  const { store, root } = await refappStore(t);
  const c = createOn(store, 'viewed');
  const { src } = makeSources(tmpDir(t, 'lamina-cp-src-'));
  deleteSome(t, store, c);
  for (const cp of copies(src, 'viewed').filter((x) => !x.stdin)) ok(root, ['cp', ...cp.args]);

  // Unmounted before the directory is removed (after-hooks run in the order they were added).
  const merged = fs.mkdtempSync(path.join(os.tmpdir(), 'lamina-cp-view-'));
  let umount = () => {};
  t.after(() => {
    umount();
    fs.rmdirSync(merged);
  });
  umount = mountOverlay(merged, [store.driver.diffPath(c.mount.mountID), ...containerLowers(store, c)]);
  const env = { ...process.env, LC_ALL: 'C', TZ: 'UTC' };
  const gnu = (cmd: string, ...args: string[]) => execFileSync(cmd, args, { env, encoding: 'utf8' });
  const strip = (s: string) => s.split('\n').map((l) => (l.startsWith(merged) ? l.slice(merged.length) || '/' : l)).join('\n');
  const fsOut = (...args: string[]) => {
    return execFileSync(process.execPath, [CLI, '--root', root, 'fs', ...args], { env, encoding: 'utf8' });
  };

  assert.equal(fsOut('find', 'viewed:/'), strip(gnu('find', merged + '/')).replace(/^\/\/?\n/, '/\n'), 'find / in the kernel merge order');
  for (const dir of ['/newtree', '/opt/olddir', '/etc', '/data', '/tmp']) {
    assert.equal(fsOut('ls', '-n', `viewed:${dir}`), gnu('ls', '-ln', merged + dir), `ls -n ${dir}`);
  }
  assert.equal(fsOut('cat', 'viewed:/app/c1.txt', '/newtree/sub/hard2'), gnu('cat', merged + '/app/c1.txt', merged + '/newtree/sub/hard2'));
  assert.equal(fsOut('cat', 'viewed:/app/c1.txt'), fs.readFileSync(`${src}/c1.txt`, 'utf8'));
  // which: the rw layer provides the copied file and shadows the image's two copies of it.
  const which = fsOut('which', 'viewed:/app/c1.txt');
  assert.match(which, /^\/app\/c1.txt: file from rw layer of container viewed \//);
  assert.match(which, /shadows:\n {2}layer 7 \(sha256:[0-9a-f]+\): file\n {2}layer 4 \(sha256:[0-9a-f]+\): file\n$/);
  assert.match(fsOut('which', 'viewed:/opt/olddir'), /^\/opt\/olddir: dir from rw layer of container viewed .*\nshadows:\n {2}layer 3 /s);
  assert.match(fsOut('stat', 'viewed:/tmp/new.txt'), / Layer: rw layer of container viewed\n$/);
  // A container is looked up before an image (by name or ID prefix).
  assert.equal(fsOut('cat', `${c.id.slice(0, 12)}:/tmp/new.txt`), 'a new file\n');
  assert.equal(fsOut('cat', 'refapp:1:/app/c1.txt'), gnu('cat', path.join(store.driver.diffPath(store.layers.get(chainIDs(store.images.get(store.resolveImage('refapp:1')).rootfs.diff_ids)[7]).cacheID), 'app/c1.hardlink')));
});

test('cp follows docker cp\'s path rules and refuses what docker refuses', async (t) => {
  const { store, root } = await refappStore(t);
  createOn(store, 'rules');
  const ro = store.containers.create({
    name: 'readonly', imageRef: 'refapp:1', imageID: store.resolveImage('refapp:1'), image: store.images.get(store.resolveImage('refapp:1')),
    cmd: ['true'], readonlyRootfs: true,
  });
  const dir = tmpDir(t, 'lamina-cp-rules-');
  fs.writeFileSync(`${dir}/f.txt`, 'f\n');
  fs.mkdirSync(`${dir}/d`);
  fs.writeFileSync(`${dir}/d/inside`, 'inside\n');
  const fails = (args: string[], re: RegExp, input?: Buffer) => {
    const r = run(root, ['cp', ...args], input);
    assert.notEqual(r.code, 0, `cp ${args.join(' ')} must fail`);
    assert.match(r.stderr, re, `cp ${args.join(' ')}`);
  };
  const cat = (p: string) => ok(root, ['fs', 'cat', `rules:${p}`]).toString();

  ok(root, ['cp', `${dir}/f.txt`, 'rules:/tmp']); // an existing dir: under the source's name
  assert.equal(cat('/tmp/f.txt'), 'f\n');
  ok(root, ['cp', `${dir}/f.txt`, 'rules:tmp/g.txt']); // relative container paths start at /
  assert.equal(cat('/tmp/g.txt'), 'f\n');
  ok(root, ['cp', `${dir}/d/.`, 'rules:/tmp']); // "dir/." copies the contents
  assert.equal(cat('/tmp/inside'), 'inside\n');
  ok(root, ['cp', `${dir}/d`, 'rules:/tmp/g.txt/../d2']);
  assert.equal(cat('/tmp/d2/inside'), 'inside\n');
  // A destination symlink is followed, inside the container: /app/abs.symlink -> /data/a.txt.
  ok(root, ['cp', `${dir}/f.txt`, 'rules:/app/abs.symlink']);
  assert.equal(cat('/data/a.txt'), 'f\n');
  assert.equal(ok(root, ['fs', 'stat', 'rules:/app/abs.symlink']).toString().split('\n')[0], '  File: /app/abs.symlink -> /data/a.txt');

  fails([`${dir}/f.txt`, 'rules:/nowhere/'], /no such directory/);
  fails([`${dir}/f.txt`, 'rules:/no/such/dir/f'], /no such directory: \/no\/such\/dir/);
  fails([`${dir}/d`, 'rules:/etc/passwd'], /cannot copy a directory to \/etc\/passwd/);
  fs.mkdirSync(`${dir}/x`);
  fs.writeFileSync(`${dir}/x/tmp`, 'a file named like a directory\n');
  fails([`${dir}/x/tmp`, 'rules:/'], /cannot overwrite directory \/tmp in container rules with non-directory "tmp"/);
  fails([`${dir}/missing`, 'rules:/tmp'], /lstat .*missing: no such file or directory/);
  fails(['rules:/missing', dir], /Could not find the file \/missing in container rules/);
  fails([`${dir}/f.txt`, 'readonly:/tmp'], /read-only/);
  fails([`${dir}/f.txt`, `${dir}/g.txt`], /must specify at least one container source/);
  fails(['rules:/etc/passwd', 'readonly:/tmp'], /copying between containers is not supported/);
  fails([`${dir}/f.txt`, 'nosuch:/tmp'], /No such container: nosuch/);
  fails(['-', 'rules:/etc/passwd'], /must be a directory/, Buffer.alloc(1024));
  // A tar whose symlink points outside the destination is refused, as moby's Unpack does.
  const evil = path.join(dir, 'evil');
  fs.mkdirSync(evil);
  fs.symlinkSync('../../etc/shadow', `${evil}/escape`);
  fails(['-', 'rules:/tmp'], /invalid symlink.*would reach outside/, execFileSync('tar', ['-C', evil, '-cf', '-', 'escape']));
  // The same rule out of the container: /usr/bin/env -> ../../bin/busybox cannot land in a host dir.
  fails(['rules:/usr/bin/env', `${dir}/env`], /invalid symlink \/tmp\/\S+\/env -> "..\/..\/bin\/busybox" would reach outside \/tmp\//);
  assert.equal(fs.existsSync(`${dir}/env`), false);
  fails(['rules:/usr/bin', `${dir}/usrbin`], /invalid symlink \/tmp\/\S+\/usrbin\/env/);
  ok(root, ['cp', 'rules:/usr', `${dir}/usr`]); // from usr/bin, ../../bin/busybox stays below the destination
  assert.equal(fs.readlinkSync(`${dir}/usr/bin/env`), '../../bin/busybox');

  assert.equal(ro.id.length, 64);
});

test('cp stays inside the container: symlinks that climb out or point at host paths resolve inside it, mounted or not', { skip: !isRoot && 'needs root (kernel mount)' }, async (t) => {
  const specs: MountSpec[] = [];
  t.after(() => {
    for (const spec of specs) if (mountCount(spec) > 0) forceUnmount(spec);
  });
  const { store, root } = await refappStore(t);
  const host = tmpDir(t, 'lamina-cp-host-'); // a host directory the container's links name
  const src = path.join(tmpDir(t), 'payload');
  fs.writeFileSync(src, 'payload\n');
  for (const name of ['jail-engine', 'jail-mounted']) {
    const c = createOn(store, name);
    specs.push(store.driver.mountSpec(c.mount.mountID));
    // Made through a kernel mount, as a process in the container would make them.
    const m = mountRW(t, store, c);
    fs.symlinkSync('../'.repeat(12) + host.slice(1), `${m}/climb`);
    fs.symlinkSync(host, `${m}/absolute`);
    fs.mkdirSync(`${m}${host}`, { recursive: true });
    unmount(m);
    if (name === 'jail-mounted') ok(root, ['mount', name]);
    ok(root, ['cp', src, `${name}:/climb/one`]);
    ok(root, ['cp', src, `${name}:/absolute/two`]);
    ok(root, ['cp', `${name}:/climb/one`, `${host}-${name}-out`]);
    assert.equal(fs.readFileSync(`${host}-${name}-out`, 'utf8'), 'payload\n');
    fs.rmSync(`${host}-${name}-out`);
    if (name === 'jail-mounted') ok(root, ['umount', name]);
    assert.deepEqual(fs.readdirSync(host), [], `${name}: nothing was written on the host`);
    assert.equal(ok(root, ['fs', 'cat', `${name}:${host}/one`]).toString(), 'payload\n');
    assert.equal(ok(root, ['fs', 'cat', `${name}:${host}/two`]).toString(), 'payload\n');
  }
});
