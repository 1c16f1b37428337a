// UnionFs as an API: what the differential test does not reach. Read-only unions, streams,
// flags, error shapes, construction errors, directory reading of big directories, and copy-up
// of a large file through a write stream, checked against the kernel on the same layers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { pipeline } from 'node:stream/promises';
import { spawnSync } from 'node:child_process';
import { Readable } from 'node:stream';
import { UnionFs } from '../../src/union/index.js';
import { readRawDir } from '../../src/union/dirents.js';
import { LaminaError } from '../../src/errors.js';
import { buildLayers, makeUpper, mountOverlay, planFromSpec, scratchTmpfs, snapshotRealTree, diffMaps } from './harness.js';

const isRoot = process.getuid?.() === 0;
const skip = !isRoot && 'needs root (tmpfs, overlay mounts, trusted xattrs)';

function twoLayers(root: string): string[] {
  return buildLayers(planFromSpec([
    [
      { path: '/etc', kind: 'dir' },
      { path: '/etc/hosts', kind: 'file', data: Buffer.from('127.0.0.1 top\n') },
      { path: '/etc/gone', kind: 'whiteout' },
      { path: '/link', kind: 'symlink', target: '/etc/hosts' },
      { path: '/rel', kind: 'symlink', target: 'etc/../etc/hosts' },
      { path: '/loop', kind: 'symlink', target: 'loop' },
    ],
    [
      { path: '/etc', kind: 'dir' },
      { path: '/etc/hosts', kind: 'file', data: Buffer.from('old\n') },
      { path: '/etc/gone', kind: 'file' },
      { path: '/etc/passwd', kind: 'file', data: Buffer.from('root:x:0:0::/root:/bin/sh\n') },
    ],
  ]), root);
}

test('a read-only union: reads work, every write fails with EROFS, nothing on disk changes', { skip }, (t) => {
  const root = scratchTmpfs(t, 'lamina-union-ro-');
  const lowers = twoLayers(root);
  const before = lowers.map((l) => snapshotRealTree(l, { ctime: true, symlinkCtime: false }));
  const u = new UnionFs({ lowers });
  assert.equal(u.writable, false);
  assert.equal(u.readFile('/etc/hosts', 'utf8'), '127.0.0.1 top\n');
  assert.equal(u.readFile('/link', 'utf8'), '127.0.0.1 top\n', 'absolute symlinks resolve inside the union');
  assert.equal(u.readFile('rel', 'utf8'), '127.0.0.1 top\n', 'relative union paths start at the root');
  assert.equal(u.realpath('/rel'), '/etc/hosts');
  assert.deepEqual(u.readdir('/etc').sort(), ['hosts', 'passwd']);
  assert.equal(u.exists('/etc/gone'), false);
  assert.throws(() => u.stat('/loop'), { code: 'ELOOP' });
  assert.throws(() => u.readFile('/etc'), { code: 'EISDIR' });
  assert.throws(() => u.readdir('/etc/hosts'), { code: 'ENOTDIR' });
  assert.throws(() => u.lstat('/etc/hosts/x'), { code: 'ENOTDIR' });
  assert.throws(() => u.lstat('/nope/x'), (e: NodeJS.ErrnoException) => e.code === 'ENOENT' && e.path === '/nope/x' && e.message.includes('/nope/x'));
  for (const write of [
    () => u.writeFile('/etc/hosts', 'x'), () => u.writeFile('/new', 'x'), () => u.mkdir('/d'), () => u.unlink('/etc/hosts'),
    () => u.rmdir('/etc'), () => u.rename('/etc/hosts', '/h'), () => u.symlink('x', '/s'), () => u.link('/etc/hosts', '/h2'),
    () => u.chmod('/etc/hosts', 0o600), () => u.lchown('/etc/hosts', 1, 1), () => u.utimes('/etc/hosts', 0, 0),
    () => u.setxattr('/etc/hosts', 'user.a', 'b'), () => u.truncate('/etc/hosts', 0), () => u.open('/etc/hosts', 'r+'),
  ]) {
    assert.throws(write, { code: 'EROFS' });
  }
  assert.equal(u.open('/etc/hosts', 'r') > 0, true);
  lowers.forEach((l, i) => assert.deepEqual(diffMaps(before[i], snapshotRealTree(l, { ctime: true, symlinkCtime: false }), 'before', 'after'), []));
});

test('streams: reading a merged file, and copy-up of a large lower file through a write stream matches the kernel', { skip }, async (t) => {
  const root = scratchTmpfs(t, 'lamina-union-streams-');
  const big = Buffer.alloc(3 << 20);
  for (let i = 0; i < big.length; i += 4096) big.writeUInt32LE(i, i);
  const plan = planFromSpec([[{ path: '/big', kind: 'file', data: big, mode: 0o4750, uid: 1000, gid: 1000, xattrs: [['user.note', Buffer.from('kept')]] }], [{ path: '/other', kind: 'file' }]]);
  const make = (side: string) => {
    const dir = path.join(root, side);
    fs.mkdirSync(dir);
    return { lowers: buildLayers(plan, dir), ...makeUpper(dir), dir };
  };
  const k = make('k');
  const e = make('e');
  const u = new UnionFs({ lowers: e.lowers, upper: e.upper, work: e.work });
  const hash = createHash('sha256');
  await pipeline(u.createReadStream('/big'), hash);
  assert.equal(hash.digest('hex'), createHash('sha256').update(big).digest('hex'));

  const extra = Buffer.from('appended through the union\n');
  await pipeline(Readable.from([extra]), u.createWriteStream('/big', { flags: 'a' }));
  const merged = path.join(k.dir, 'merged');
  fs.mkdirSync(merged);
  const unmount = mountOverlay(merged, k.lowers, k.upper, k.work);
  try {
    await pipeline(Readable.from([extra]), fs.createWriteStream(merged + '/big', { flags: 'a' }));
  } finally {
    unmount();
  }
  assert.deepEqual(diffMaps(snapshotRealTree(k.upper), snapshotRealTree(e.upper), 'kernel', 'engine'), []);
  assert.deepEqual(u.readFile('/big'), Buffer.concat([big, extra]));
  const st = u.stat('/big');
  assert.equal(st.mode & 0o7777, 0o4750, 'setuid survives copy-up');
  assert.equal(st.uid, 1000);
  assert.equal(u.getxattr('/big', 'user.note').toString(), 'kept');
});

test('open() takes node:fs flag strings and numbers; O_EXCL and O_NOFOLLOW behave as open(2)', { skip }, (t) => {
  const root = scratchTmpfs(t, 'lamina-union-open-');
  const lowers = twoLayers(root);
  const { upper, work } = makeUpper(root);
  const u = new UnionFs({ lowers, upper, work });
  assert.throws(() => u.open('/etc/hosts', 'wx'), { code: 'EEXIST' });
  assert.throws(() => u.open('/link', 'wx'), { code: 'EEXIST' }, 'O_EXCL does not follow a final symlink');
  assert.throws(() => u.open('/link', fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW), { code: 'ELOOP' });
  assert.throws(() => u.open('/etc/hosts', 'bogus'), (e) => e instanceof LaminaError && e.code === 'EINVAL');
  fs.closeSync(u.open('/etc/new', 'wx', 0o600));
  assert.equal(u.lstat('/etc/new').mode & 0o777, 0o600 & ~process.umask());
  assert.ok(fs.existsSync(path.join(upper, 'etc', 'new')), 'created in the upper dir');
  const fd = u.open('/etc/hosts', 'r');
  fs.closeSync(fd);
  assert.equal(fs.existsSync(path.join(upper, 'etc', 'hosts')), false, 'a read-only open copies nothing up');
  fs.closeSync(u.open('/etc/hosts', 'r+'));
  assert.ok(fs.existsSync(path.join(upper, 'etc', 'hosts')), 'a write open copies up even without writing');
});

test('construction checks its layers', { skip }, (t) => {
  const root = scratchTmpfs(t, 'lamina-union-ctor-');
  const lowers = twoLayers(root);
  const { upper, work } = makeUpper(root);
  assert.throws(() => new UnionFs({ lowers: [] }), (e) => e instanceof LaminaError && e.code === 'EINVAL');
  assert.throws(() => new UnionFs({ lowers: [path.join(root, 'missing')] }), (e) => e instanceof LaminaError && e.code === 'ENOTFOUND' && e.message.includes('missing'));
  assert.throws(() => new UnionFs({ lowers, upper }), (e) => e instanceof LaminaError && e.code === 'EINVAL' && e.message.includes('work dir'));
  const elsewhere = fs.mkdtempSync(path.join(os.tmpdir(), 'lamina-union-work-'));
  t.after(() => fs.rmSync(elsewhere, { recursive: true, force: true }));
  assert.throws(() => new UnionFs({ lowers, upper, work: elsewhere }), (e) => e instanceof LaminaError && e.message.includes('file system'));
  new UnionFs({ lowers, upper, work });
  const inner = fs.lstatSync(path.join(work, 'work'));
  assert.ok(inner.isDirectory());
  assert.equal(inner.mode & 0o777, 0, 'work/work is mode 000, as the kernel makes it');
});

test('big directories are read completely (the short-read shortcut) on tmpfs and ext4', { skip }, (t) => {
  const ext4 = fs.mkdtempSync(path.join(os.tmpdir(), 'lamina-union-bigdir-'));
  t.after(() => fs.rmSync(ext4, { recursive: true, force: true }));
  for (const base of [scratchTmpfs(t, 'lamina-union-bigdir-'), ext4]) {
    const dir = path.join(base, 'd');
    fs.mkdirSync(dir);
    // Long names fill getdents buffers quickly: 1500 × ~200 bytes takes several 64 KiB reads.
    const names = Array.from({ length: 1500 }, (_, i) => `${String(i).padStart(5, '0')}-${'x'.repeat(180)}`);
    for (const n of names) fs.writeFileSync(path.join(dir, n), '');
    const full = readRawDir(dir, true, false).names;
    const short = readRawDir(dir, true, true).names;
    assert.deepEqual(short, full);
    assert.deepEqual([...full].sort(), [...names].sort());
    const u = new UnionFs({ lowers: [base] });
    assert.equal(u.readdir('/d').length, names.length);
  }
});

test('origin() tells which layers serve a path and which it shadows', { skip }, (t) => {
  const root = scratchTmpfs(t, 'lamina-union-origin-');
  const lowers = twoLayers(root);
  const u = new UnionFs({ lowers });
  assert.deepEqual(u.origin('/etc/hosts'), { path: '/etc/hosts', type: 'file', layers: [0], shadowed: [{ layer: 1, type: 'file' }] });
  assert.deepEqual(u.origin('/etc'), { path: '/etc', type: 'dir', layers: [0, 1], shadowed: [] });
  assert.deepEqual(u.origin('/etc/passwd'), { path: '/etc/passwd', type: 'file', layers: [1], shadowed: [] });
  assert.throws(() => u.origin('/etc/gone'), { code: 'ENOENT' });
});

test('without CAP_SYS_ADMIN the engine cannot see opaque dirs, and says so once instead of silently', { skip: skip || (!fs.existsSync('/usr/bin/setpriv') && 'setpriv (util-linux) is not installed') }, (t) => {
  const root = scratchTmpfs(t, 'lamina-union-nocap-');
  const layers = buildLayers(planFromSpec([
    [{ path: '/d', kind: 'dir', opaque: true }, { path: '/d/new', kind: 'file' }],
    [{ path: '/d', kind: 'dir' }, { path: '/d/hidden', kind: 'file' }],
  ]), root);
  const script = `import { UnionFs } from ${JSON.stringify(path.resolve('src/union/index.ts'))};
    const u = new UnionFs({ lowers: ${JSON.stringify(layers)} });
    new UnionFs({ lowers: ${JSON.stringify(layers)} });
    console.log(u.readdir('/d').sort().join(','));`;
  const run = (prefix: string[]) => spawnSync(prefix[0], [...prefix.slice(1), process.execPath, '--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8' });
  // With the capability: the opaque dir hides the lower file, and nothing is said.
  const full = run(['env']);
  assert.equal(full.status, 0, full.stderr);
  assert.equal(full.stdout.trim(), 'new');
  assert.equal(full.stderr, '');
  // Without it, listxattr omits trusted.* names: the lower file shows, and one warning says why.
  const dropped = run(['setpriv', '--bounding-set=-sys_admin', '--inh-caps=-sys_admin']);
  assert.equal(dropped.status, 0, dropped.stderr);
  assert.equal(dropped.stdout.trim(), 'hidden,new');
  const warnings = dropped.stderr.split('\n').filter((l) => l.startsWith('warning:'));
  assert.equal(warnings.length, 1, dropped.stderr);
  assert.match(warnings[0], /without CAP_SYS_ADMIN the trusted\.overlay\.\* xattrs cannot be read/);
});
