// applyLayer against real layers: Docker's own (every layer of the fixture saves, checked
// against expected.json), GNU tar's extraction of GNU-made archives (stat of every path on
// both sides), and Docker's rules for whiteouts, replaced entries, times and sizes.
// Every test runs twice: extraction on the parsing thread, and in the worker thread that large
// layers use (`offload`), with the same expectations.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { applyLayer } from '../../src/archive/apply.js';
import { cleanLayerPath } from '../../src/archive/paths.js';
import { dockerSize } from '../../src/archive/size.js';
import { isLaminaError } from '../../src/errors.js';
import * as sys from '../../src/sys/index.js';
import { LayerExtractor } from '../../src/archive/extract.js';
import { RemoteExtractor } from '../../src/archive/extract-remote.js';
import { TarParser } from '../../src/tar/reader.js';
import type { TarVisitor } from '../../src/tar/types.js';
import { compareDiffDir } from '../helpers/expected.js';
import { fixtureLayers } from '../tar/fixtures.js';
import { applyBuffer, listTree, makeDiffDir, tmpDir } from './helpers.js';
import * as T from './tarbuild.js';

const sha256hex = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Where extraction runs in the test being run (see bothWays). */
let offload = false;

/** Registers a test twice: extraction on this thread, then in the worker thread; same expectations. */
function bothWays(name: string, fn: (t: TestContext) => Promise<void>): void {
  for (const worker of [false, true]) {
    test(worker ? `${name} [worker thread]` : name, async (t) => {
      offload = worker;
      try {
        await fn(t);
      } finally {
        offload = false;
      }
    });
  }
}

bothWays('every layer of the Docker fixtures lands as Docker put it in diff/', async (t) => {
  const tmp = tmpDir(t);
  const layers = fixtureLayers();
  assert.ok(layers.length >= 12);
  let n = 0;
  for (const { image, layer, tar } of layers) {
    const diff = makeDiffDir(tmp, `layer${n++}/diff`);
    const rootBefore = fs.statSync(diff, { bigint: true });
    // A visitor fed alongside extraction sees every byte (raw + data), as the tar-split recorder needs.
    let seen = 0;
    const counter: TarVisitor = { raw: (c) => (seen += c.length), entry: () => {}, data: (c) => (seen += c.length) };
    const progress: number[] = [];
    // Odd chunk sizes put header and content boundaries everywhere.
    const r = await applyBuffer(tar, diff, n % 2 ? 4099 : 65536, { visitors: [counter], onProgress: (b) => progress.push(b), offload });
    const what = `${image} layer ${layer.index}`;
    assert.equal(r.diffID, layer.diffID, `${what}: diffID`);
    assert.equal(r.diffID, 'sha256:' + sha256hex(tar), `${what}: diffID is the sha256 of the tar`);
    assert.equal(r.tarBytes, layer.layerTarBytes, `${what}: tarBytes`);
    assert.equal(seen, tar.length, `${what}: extra visitor saw every byte`);
    assert.equal(progress.at(-1), tar.length, `${what}: progress reaches the total`);
    assert.equal(r.entries, (layer as { entryCount?: number }).entryCount ?? layer.entries.length, `${what}: entries`);
    assert.equal(r.size, layer.dockerSizeFormula, `${what}: size`);
    assert.equal(dockerSize(diff), layer.dockerSizeFormula, `${what}: dockerSize walk`);

    // Docker skips the root entry ("./"): diff/ keeps its own metadata.
    const rootEntries = layer.entries.filter((e) => e.path === '.');
    const problems = compareDiffDir(diff, { ...layer, entries: layer.entries.filter((e) => e.path !== '.') });
    assert.deepEqual(problems, [], `${what}: diff/ differs from Docker's entries`);
    const rootAfter = fs.statSync(diff, { bigint: true });
    assert.equal(rootAfter.mode & 0o7777n, 0o755n);
    for (const e of rootEntries) assert.notEqual(rootAfter.mtimeNs, BigInt(e.mtime) * 1_000_000_000n, `${what}: root mtime untouched`);
    assert.ok(rootAfter.mtimeNs >= rootBefore.mtimeNs);
    assert.ok(!listTree(diff).some((p) => path.basename(p).startsWith('.wh.')), `${what}: no .wh. names on disk`);
  }
});

// ---------------------------------------------------------------------------------------------
// GNU tar as the oracle: the same GNU-made archive extracted by GNU tar and by applyLayer.

const NS = 123456789;

/** A source tree with every kind of entry and metadata a layer can carry. */
function buildSourceTree(src: string): void {
  const mk = (rel: string, mode: number) => {
    fs.mkdirSync(path.join(src, rel), { recursive: true });
    fs.chmodSync(path.join(src, rel), mode);
  };
  const put = (rel: string, content: Buffer | string, mode = 0o644, uid = 0, gid = 0) => {
    const p = path.join(src, rel);
    fs.writeFileSync(p, content);
    fs.chownSync(p, uid, gid);
    fs.chmodSync(p, mode);
  };
  mk('etc', 0o755);
  mk('tmp', 0o1777);
  mk('srv/shared', 0o2775);
  fs.chownSync(path.join(src, 'srv/shared'), 1000, 1000);
  mk('root', 0o700);
  mk('usr/bin', 0o755);
  mk('empty', 0o555);
  put('etc/hostname', 'layer\n');
  put('etc/big.bin', randomBytes(300_000), 0o600);
  put('etc/empty', '');
  put('usr/bin/suid', '#!/bin/sh\n', 0o4755);
  put('usr/bin/sgid', '#!/bin/sh\n', 0o2711, 0, 50);
  put('usr/bin/nothing', 'x', 0o000);
  put('srv/shared/owned', 'owned by 1000', 0o640, 1000, 1000);
  put('srv/bigid', 'pax uid', 0o644, 3000000, 3000001);
  put('usr/bin/capped', 'capability holder', 0o755);
  sys.lsetxattr(path.join(src, 'usr/bin/capped'), 'security.capability', Buffer.from('0100000200040000000000000000000000000000', 'hex'));
  put('etc/attrs', 'xattrs', 0o644);
  sys.lsetxattr(path.join(src, 'etc/attrs'), 'user.comment', 'hello');
  sys.lsetxattr(path.join(src, 'etc/attrs'), 'user.bin', Buffer.from('ff00fe0a80', 'hex'));
  sys.lsetxattr(path.join(src, 'etc/attrs'), 'trusted.lamina', Buffer.from([0, 1, 2, 255]));
  sys.lsetxattr(path.join(src, 'srv'), 'user.dir', 'on a dir');
  // Hard links across directories.
  put('usr/bin/tool', 'multi-call binary', 0o755);
  fs.linkSync(path.join(src, 'usr/bin/tool'), path.join(src, 'usr/bin/tool-alias'));
  fs.linkSync(path.join(src, 'usr/bin/tool'), path.join(src, 'etc/tool-link'));
  // Symlinks: relative, absolute, dangling, long, with an xattr on the link itself.
  fs.symlinkSync('hostname', path.join(src, 'etc/hostname.link'));
  fs.symlinkSync('/etc/passwd', path.join(src, 'etc/abs.link'));
  fs.symlinkSync('../nowhere/at/all', path.join(src, 'etc/dangling'));
  fs.symlinkSync('x'.repeat(150) + '/target', path.join(src, 'etc/long.link'));
  sys.lsetxattr(path.join(src, 'etc/hostname.link'), 'trusted.onlink', 'v');
  fs.lchownSync(path.join(src, 'etc/abs.link'), 7, 8);
  // Devices and fifos.
  mk('dev', 0o755);
  sys.mknod(path.join(src, 'dev/null'), sys.S_IFCHR | 0o666, 1, 3);
  sys.mknod(path.join(src, 'dev/loop200'), sys.S_IFBLK | 0o660, 7, 200);
  sys.mknod(path.join(src, 'dev/bigminor'), sys.S_IFCHR | 0o600, 259, 70000);
  sys.mknod(path.join(src, 'dev/fifo'), sys.S_IFIFO | 0o620, 0, 0);
  // Long and non-ASCII names.
  const deep = 'a-rather-long-directory-name-for-testing/'.repeat(6) + 'and-a-file-name-that-is-also-long-enough.txt';
  fs.mkdirSync(path.join(src, path.dirname(deep)), { recursive: true });
  put(deep, 'deep');
  put('héllo-世界.txt', 'unicode');
  // Nanosecond times on everything, children before parents.
  const all: string[] = [];
  const walk = (rel: string) => {
    const p = path.join(src, rel);
    if (fs.lstatSync(p).isDirectory()) for (const n of fs.readdirSync(p)) walk(rel ? `${rel}/${n}` : n);
    all.push(rel);
  };
  walk('');
  all.forEach((rel, i) => {
    const sec = 1600000000 + i * 1000;
    sys.lutimesNs(rel ? path.join(src, rel) : src, [sec + 5, NS], [sec, (NS + i) % 1_000_000_000]);
  });
}

interface Described {
  kind: string;
  fields: Record<string, string>;
}

function describe(root: string): Map<string, Described> {
  const out = new Map<string, Described>();
  const byIno = new Map<bigint, string[]>();
  for (const rel of listTree(root)) {
    const p = path.join(root, rel);
    const st = fs.lstatSync(p, { bigint: true });
    const kind = st.isDirectory() ? 'dir' : st.isFile() ? 'file' : st.isSymbolicLink() ? 'symlink' : st.isCharacterDevice() ? 'char' : st.isBlockDevice() ? 'block' : st.isFIFO() ? 'fifo' : 'other';
    const f: Record<string, string> = {
      perm: (st.mode & 0o7777n).toString(8),
      owner: `${st.uid}:${st.gid}`,
      mtime: String(st.mtimeNs),
      rdev: String(st.rdev),
    };
    if (kind !== 'dir') f.size = String(st.size);
    if (kind === 'file') f.sha = sha256hex(fs.readFileSync(p));
    if (kind === 'symlink') f.link = fs.readlinkSync(p);
    for (const x of sys.llistxattr(p).sort()) f[`xattr ${x}`] = sys.lgetxattr(p, x)!.toString('hex');
    if (kind !== 'dir') byIno.set(st.ino, [...(byIno.get(st.ino) ?? []), rel]);
    out.set(rel, { kind, fields: f });
  }
  for (const names of byIno.values()) for (const n of names) out.get(n)!.fields.links = names.sort().join(',');
  return out;
}

for (const format of ['pax', 'gnu'] as const) {
  bothWays(`a GNU tar ${format}-format archive extracts exactly as GNU tar extracts it`, async (t) => {
    const tmp = tmpDir(t);
    const src = path.join(tmp, 'src');
    fs.mkdirSync(src);
    buildSourceTree(src);
    const archive = path.join(tmp, 'layer.tar');
    const xattrArgs = format === 'pax' ? ['--xattrs', '--xattrs-include=*'] : [];
    execFileSync('tar', [`--format=${format}`, ...xattrArgs, '--numeric-owner', '-C', src, '-cf', archive, '.']);
    const gnu = makeDiffDir(tmp, 'gnu');
    execFileSync('tar', ['-xf', archive, '-C', gnu, ...xattrArgs, '--numeric-owner', '-p', '--same-owner']);
    const ours = makeDiffDir(tmp, 'ours');
    const r = await applyLayer(fs.createReadStream(archive, { highWaterMark: 16384 }), ours, { offload });

    const want = describe(gnu);
    const got = describe(ours);
    assert.deepEqual([...got.keys()], [...want.keys()], 'same paths');
    const diffs: string[] = [];
    for (const [rel, w] of want) {
      const g = got.get(rel)!;
      if (g.kind !== w.kind) diffs.push(`${rel}: ${g.kind} != ${w.kind}`);
      for (const k of new Set([...Object.keys(w.fields), ...Object.keys(g.fields)])) {
        if (g.fields[k] !== w.fields[k]) diffs.push(`${rel}: ${k} ${g.fields[k]} != ${w.fields[k]}`);
      }
    }
    assert.deepEqual(diffs, [], 'every path agrees with GNU tar');
    assert.ok(want.size > 35);
    // The archive really carried what the comparison is about.
    if (format === 'pax') {
      assert.equal(got.get('etc/attrs')!.fields['xattr user.bin'], 'ff00fe0a80');
      assert.equal(got.get('usr/bin/capped')!.fields['xattr security.capability'], '0100000200040000000000000000000000000000');
      assert.notEqual(got.get('etc/hostname')!.fields.mtime.slice(-9), '000000000', 'nanoseconds kept');
      assert.equal(got.get('srv/bigid')!.fields.owner, '3000000:3000001');
    }
    assert.equal(got.get('usr/bin/suid')!.fields.perm, '4755');
    assert.equal(got.get('dev/loop200')!.fields.rdev, String(sys.makedev(7, 200)));
    assert.equal(r.size, dockerSize(ours), 'incremental size equals the walk');
    assert.equal(r.diffID, 'sha256:' + sha256hex(fs.readFileSync(archive)));
  });
}

test('entry names are cleaned as if joined to "/" (Python\'s posixpath.normpath as the oracle)', () => {
  const names = [
    'a', 'a/', './a/b/', '/a//b/./c/', '../../x', 'a/../../b', '.hidden/x', 'a/.b/..', '..', '/', './', '', '.',
    'a/b/../../..', 'x/./y/../z', '//abs', 'a...b/c', 'a/...', '.../x', 'dir.d/file.txt', 'a/b/c/../../../../../etc/passwd',
  ];
  const oracle = execFileSync('python3', ['-c', 'import sys,json,posixpath\nfor n in json.load(sys.stdin): print(posixpath.normpath("/" + n).lstrip("/"))'], { input: JSON.stringify(names) })
    .toString().split('\n').slice(0, names.length);
  assert.deepEqual(names.map(cleanLayerPath), oracle);
});

// ---------------------------------------------------------------------------------------------
// Docker's apply rules on hand-made layers.

async function applyTar(t: { after: (fn: () => void) => void }, tar: Buffer) {
  const tmp = tmpDir(t);
  const diff = makeDiffDir(tmp);
  const r = await applyBuffer(tar, diff, 777, { offload });
  return { diff, r, at: (rel: string) => path.join(diff, rel) };
}

bothWays('whiteouts become 0:0 char devices with mode 0 and the header owner; .wh..wh..opq makes the dir opaque', async (t) => {
  const { diff, r, at } = await applyTar(t, T.tar(
    T.dir('etc/'),
    T.file('etc/.wh.deleted', '', { mode: 0o600 }),
    T.file('etc/.wh.owned', '', { uid: 12, gid: 34 }),
    T.file('gone/deeper/.wh.x'), // implied parents
    T.dir('opt/olddir/'),
    T.file('opt/olddir/.wh..wh..opq', '', { mtime: 0 }),
    T.file('opt/olddir/newfile', 'new'),
    T.file('.wh..wh..opq'), // opaque at the layer root
  ));
  for (const [rel, owner] of [['etc/deleted', '0:0'], ['etc/owned', '12:34'], ['gone/deeper/x', '0:0']] as const) {
    const st = fs.lstatSync(at(rel));
    assert.ok(st.isCharacterDevice(), rel);
    assert.equal(st.rdev, 0);
    assert.equal(st.mode & 0o7777, 0);
    assert.equal(`${st.uid}:${st.gid}`, owner);
  }
  assert.equal(sys.lgetxattr(at('opt/olddir'), 'trusted.overlay.opaque')?.toString(), 'y');
  assert.equal(sys.lgetxattr(diff, 'trusted.overlay.opaque')?.toString(), 'y');
  assert.equal(fs.readFileSync(at('opt/olddir/newfile'), 'utf8'), 'new');
  assert.deepEqual(listTree(diff), ['etc', 'etc/deleted', 'etc/owned', 'gone', 'gone/deeper', 'gone/deeper/x', 'opt', 'opt/olddir', 'opt/olddir/newfile']);
  for (const d of ['gone', 'gone/deeper']) {
    const st = fs.lstatSync(at(d));
    assert.equal(st.mode & 0o7777, 0o755, 'implied dirs are 0755');
    assert.equal(st.uid, 0);
  }
  assert.equal(r.entries, 8);
  assert.equal(r.size, 3);
});

bothWays('invalid whiteout names and a whiteout over an entry of the same layer are refused', async (t) => {
  for (const name of ['.wh.', 'a/.wh..', 'a/.wh...']) {
    await assert.rejects(applyTar(t, T.tar(T.dir('a/'), T.file(name))), (e: unknown) => {
      assert.ok(isLaminaError(e, 'EUNSAFEPATH'), String(e));
      assert.match((e as Error).message, /invalid whiteout entry/);
      assert.ok((e as Error).message.includes(JSON.stringify(name)));
      return true;
    });
  }
  await assert.rejects(applyTar(t, T.tar(T.file('a'), T.file('.wh.a'))), (e: unknown) => isLaminaError(e, 'EBADTAR') && /"\.wh\.a".*this layer also contains/.test((e as Error).message));
});

bothWays('an entry over an existing path replaces it; a directory over a directory merges', async (t) => {
  const { diff, r, at } = await applyTar(t, T.tar(
    T.file('f', 'first version, long'),
    T.file('f', 'second'), // file over file
    T.file('d2', 'was a file'),
    T.dir('d2/', { mode: 0o700 }), // dir over file
    T.dir('tree/'),
    T.file('tree/a', 'aaaa'),
    T.dir('tree/sub/'),
    T.file('tree/sub/b', 'bbbbbbbb'),
    T.file('tree', 'now a file'), // file over a whole tree
    T.dir('m/', { mode: 0o755, uid: 1 }),
    T.file('m/keep', 'kept'),
    T.dir('m/', { mode: 0o711, uid: 2, mtime: 1234567890 }), // dir over dir: metadata only
    T.file('orig', 'ORIGINAL'),
    T.hardlink('alias', 'orig'),
    T.file('alias', 'replaced'), // replacing one name of a hard link leaves the other intact
    T.symlink('s', 'f'),
    T.dir('s/'), // dir over symlink
  ));
  assert.equal(fs.readFileSync(at('f'), 'utf8'), 'second');
  assert.ok(fs.lstatSync(at('d2')).isDirectory());
  assert.equal(fs.lstatSync(at('d2')).mode & 0o7777, 0o700);
  assert.equal(fs.readFileSync(at('tree'), 'utf8'), 'now a file');
  const m = fs.lstatSync(at('m'));
  assert.equal(m.mode & 0o7777, 0o711);
  assert.equal(m.uid, 2);
  assert.equal(m.mtimeMs, 1234567890000, 'the last dir entry sets the times');
  assert.equal(fs.readFileSync(at('m/keep'), 'utf8'), 'kept');
  assert.equal(fs.readFileSync(at('orig'), 'utf8'), 'ORIGINAL');
  assert.equal(fs.readFileSync(at('alias'), 'utf8'), 'replaced');
  assert.equal(fs.lstatSync(at('orig')).nlink, 1);
  assert.ok(fs.lstatSync(at('s')).isDirectory());
  assert.equal(r.size, dockerSize(diff));
  assert.equal(r.size, 6 + 10 + 4 + 8 + 8);
});

bothWays('the size formula counts hard links once, symlinks by target length, devices as 0', async (t) => {
  const { diff, r } = await applyTar(t, T.tar(
    T.file('a', '123456789'),
    T.hardlink('b', 'a'),
    T.hardlink('c', '/a'), // absolute targets are layer-relative
    T.symlink('l1', 'abcdefghijk'),
    T.symlink('l2', 'äöü'), // bytes, not characters
    T.entry({ name: 'null', type: '3', devmajor: 1, devminor: 3 }),
    T.entry({ name: 'fifo', type: '6' }),
    T.file('.wh.gone'),
    T.file('a2', '12'),
    T.hardlink('a3', 'a2'),
    T.file('a2', 'xyz'), // a2 replaced, its old inode survives as a3
  ));
  assert.equal(r.size, 9 + 11 + 6 + 2 + 3);
  assert.equal(dockerSize(diff), r.size);
  assert.equal(fs.lstatSync(path.join(diff, 'a')).nlink, 3);
});

bothWays('setuid bits survive chown, file capabilities survive the content write, times are Docker\'s', async (t) => {
  const { at } = await applyTar(t, T.tar(
    T.file('suid', 'x', { mode: 0o6755, uid: 5, gid: 6 }),
    T.dir('sticky/', { mode: 0o1777 }),
    T.pax({ 'SCHILY.xattr.security.capability': Buffer.from('0100000200040000000000000000000000000000', 'hex') }),
    T.file('capped', 'content written before the xattr'),
    T.pax({ mtime: '1600000000.123456789', atime: '1700000000.5' }),
    T.file('later-atime', 'a'),
    T.pax({ mtime: '1600000000.25', atime: '1500000000' }),
    T.file('earlier-atime', 'a'),
    T.pax({ mtime: '-86400.5' }),
    T.file('before-epoch', 'a'),
    T.pax({ mtime: '1650000000.000000042' }),
    T.symlink('link', '/nowhere'),
    T.pax({ mtime: '1650000001.5' }),
    T.dir('late/'),
    T.file('late/child', 'written after the dir entry'),
  ));
  const st = (rel: string) => fs.lstatSync(at(rel), { bigint: true });
  assert.equal(st('suid').mode & 0o7777n, 0o6755n);
  assert.equal(`${st('suid').uid}:${st('suid').gid}`, '5:6');
  assert.equal(st('sticky').mode & 0o7777n, 0o1777n);
  assert.equal(sys.lgetxattr(at('capped'), 'security.capability')?.toString('hex'), '0100000200040000000000000000000000000000');
  assert.equal(st('later-atime').mtimeNs, 1600000000123456789n);
  assert.equal(st('later-atime').atimeNs, 1700000000500000000n);
  assert.equal(st('earlier-atime').atimeNs, 1600000000250000000n, 'atime is never before mtime');
  assert.equal(st('before-epoch').mtimeNs, 0n, 'times before the epoch become the epoch');
  assert.equal(st('link').mtimeNs, 1650000000000000042n, 'symlink times set on the link itself');
  assert.equal(st('late').mtimeNs, 1650000001500000000n, 'directory times set after their children');
});

bothWays('the root entry is skipped, as Docker does; symlinked parents resolve inside the layer', async (t) => {
  const { diff, at } = await applyTar(t, T.tar(
    T.dir('./', { mode: 0o700, uid: 9, mtime: 1000 }),
    T.dir('/', { mode: 0o700, uid: 9, mtime: 1000 }),
    T.dir('usr/lib/'),
    T.symlink('lib', 'usr/lib'),
    T.file('lib/libc.so', 'through a relative symlink'),
    T.symlink('abs', '/usr'),
    T.file('abs/lib/via-abs', 'through an absolute symlink'),
    T.file('abs/newdir/made', 'missing name components are created in the resolved dir'),
    T.file('/etc/absolute-name', 'leading slash dropped'),
    T.file('x/../../../clamped', '.. stops at the layer root'),
  ));
  const root = fs.lstatSync(diff);
  assert.equal(root.mode & 0o7777, 0o755);
  assert.equal(root.uid, 0);
  assert.notEqual(root.mtimeMs, 1000_000);
  assert.ok(fs.lstatSync(at('lib')).isSymbolicLink());
  assert.equal(fs.readFileSync(at('usr/lib/libc.so'), 'utf8'), 'through a relative symlink');
  assert.equal(fs.readFileSync(at('usr/lib/via-abs'), 'utf8'), 'through an absolute symlink');
  assert.ok(fs.existsSync(at('usr/newdir/made')));
  assert.ok(fs.existsSync(at('etc/absolute-name')));
  assert.ok(fs.existsSync(at('clamped')));
  assert.equal(fs.existsSync(at('x')), false, 'the name is cleaned before anything is created (Go\'s filepath.Clean)');
});

bothWays('unsupported entry types and non-UTF-8 names are refused with the entry named', async (t) => {
  await assert.rejects(applyTar(t, T.tar(T.entry({ name: 'contig', type: '7' }, 'x'))), (e: unknown) => isLaminaError(e, 'EBADTAR') && /"contig": unsupported entry type "7"/.test((e as Error).message));
  const bad = T.entry({ name: 'placeholder' }, 'x');
  Buffer.from([0x66, 0xff, 0x6f, 0x00]).copy(bad, 0);
  bad.fill(0, 4, 100);
  // Re-checksum the header after patching the name.
  bad.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += bad[i];
  bad.write(sum.toString(8).padStart(6, '0') + '\u0000 ', 148, 'latin1');
  await assert.rejects(applyTar(t, T.tar(bad)), (e: unknown) => isLaminaError(e, 'EBADTAR') && /not valid UTF-8/.test((e as Error).message));
});

bothWays('memory stays bounded for a layer far larger than any buffer', async (t) => {
  const tmp = tmpDir(t);
  const diff = makeDiffDir(tmp);
  const size = 256 * 1024 * 1024;
  const block = Buffer.alloc(1024 * 1024, 0x61);
  async function* layer() {
    yield T.header({ name: 'big.bin', size });
    for (let i = 0; i < size / block.length; i++) yield block;
    yield T.end();
  }
  const before = process.memoryUsage().rss;
  let peak = before;
  const r = await applyLayer(Readable.from(layer()), diff, { onProgress: () => (peak = Math.max(peak, process.memoryUsage().rss)), offload });
  assert.equal(r.size, size);
  assert.equal(fs.statSync(path.join(diff, 'big.bin')).size, size);
  assert.ok(peak - before < 64 * 1024 * 1024, `RSS grew by ${((peak - before) / 1048576).toFixed(1)} MiB`);
});

// ---------------------------------------------------------------------------------------------
// A worker taking over mid-layer (what applyLayer does once its worker is up).

/** Extracts `tar` on this thread up to entry `k`, then hands the extractor's state to a worker. */
async function applyHandingOverAt(tar: Buffer, diff: string, k: number): Promise<{ size: number; entries: number }> {
  const local = new LayerExtractor(diff);
  const remote = new RemoteExtractor();
  await remote.whenReady();
  let seen = 0;
  let remoteMode = false;
  const parser = new TarParser({
    entry(h) {
      if (!remoteMode && seen++ === k) {
        remote.begin(local.state());
        remoteMode = true;
      }
      if (remoteMode) remote.entry(h);
      else local.entry(h);
    },
    data: (c) => (remoteMode ? remote.data(c) : local.data(c)),
    entryEnd: (h) => (remoteMode ? remote.entryEnd(h) : local.entryEnd()),
  });
  try {
    for (let i = 0; i < tar.length; i += 1000) {
      parser.write(tar.subarray(i, i + 1000));
      if (remoteMode) await remote.waitForRoom();
    }
    parser.end();
    if (remoteMode) return await remote.finish();
    remote.release();
    return { size: local.finish(), entries: local.entries };
  } catch (e) {
    throw remoteMode ? await remote.abort(e) : e;
  }
}

test('a worker taking over between any two entries carries on exactly as this thread would have', async (t) => {
  const tmp = tmpDir(t);
  // Replacements, merges, hard links and directory times that span the hand-over point.
  const tar = T.tar(
    T.dir('tree/', { mtime: 1111111111 }),
    T.file('tree/a', 'aaaa'),
    T.dir('tree/sub/', { mode: 0o750, mtime: 1222222222 }),
    T.file('tree/sub/b', 'bbbbbbbb', { uid: 7, gid: 8 }),
    T.dir('m/', { mode: 0o755, uid: 1 }),
    T.file('m/keep', 'kept'),
    T.file('orig', 'ORIGINAL'),
    T.hardlink('alias', 'orig'),
    T.symlink('s', 'tree'),
    T.file('s/via-link', 'through a symlinked parent'),
    T.dir('sg/', { mode: 0o2775, gid: 50 }),
    T.file('sg/in-setgid', 'takes the header group'),
    T.file('tree', 'now a file over the whole tree'),
    T.dir('m/', { mode: 0o711, uid: 2, mtime: 1234567890 }),
    T.file('alias', 'replaced'),
    T.file('f', 'first version, long'),
    T.file('f', 'second'),
  );
  const want = makeDiffDir(tmp, 'inline');
  const r0 = await applyBuffer(tar, want, 1000);
  const expected = describe(want);
  for (let k = 0; k <= 17; k++) {
    const diff = makeDiffDir(tmp, `handover-${k}`);
    const r = await applyHandingOverAt(tar, diff, k);
    assert.deepEqual(describe(diff), expected, `hand-over before entry ${k}`);
    assert.equal(r.size, r0.size, `hand-over before entry ${k}: size`);
    assert.equal(r.entries, r0.entries, `hand-over before entry ${k}: entries`);
  }
});

test('an extraction failure after the hand-over is reported as on one thread', async (t) => {
  const tmp = tmpDir(t);
  const tar = T.tar(T.dir('d/'), T.file('d/x', 'x'), T.entry({ name: 'contig', type: '7' }, 'x'), T.file('after', 'y'));
  for (const k of [0, 1, 2]) {
    await assert.rejects(
      applyHandingOverAt(tar, makeDiffDir(tmp, `fail-${k}`), k),
      (e: unknown) => isLaminaError(e, 'EBADTAR') && /"contig": unsupported entry type "7"/.test((e as Error).message),
    );
  }
});
