// Hostile layers: every case runs in a fresh temp tree holding canary files, a sibling dir and
// the layer dir, and the whole tree outside diff/ is snapshotted before and after (content,
// mode, owner, nlink, mtime, ctime, xattrs). Each case either is refused with a one-line error
// naming the entry, or lands confined inside diff/ the way Docker's chrooted extraction does.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { isLaminaError, type ErrorCode } from '../../src/errors.js';
import * as sys from '../../src/sys/index.js';
import { applyBuffer, listTree, makeDiffDir, snapshot, tmpDir } from './helpers.js';
import { TarSplitRecorder } from '../../src/tar/tarsplit.js';
import * as T from './tarbuild.js';

interface Arena {
  /** Root of the temp tree. */
  tmp: string;
  diff: string;
  /** Path inside diff/ for a layer-relative path. */
  at: (rel: string) => string;
}

type Outcome =
  | { refused: ErrorCode; entry?: string; message?: RegExp }
  | { confined: (a: Arena) => void };

interface Case {
  name: string;
  tar: (a: Arena) => Buffer;
  outcome: Outcome;
}

const PWNED = 'pwned';

function arena(t: { after: (fn: () => void) => void }): Arena {
  const tmp = tmpDir(t, 'lamina-hostile-');
  fs.writeFileSync(path.join(tmp, 'canary.txt'), 'canary');
  fs.mkdirSync(path.join(tmp, 'sibling/sub'), { recursive: true });
  fs.writeFileSync(path.join(tmp, 'sibling/a.txt'), 'sibling file');
  const diff = makeDiffDir(tmp, 'layer/diff');
  fs.writeFileSync(path.join(tmp, 'layer/near.txt'), 'next to diff/');
  return { tmp, diff, at: (rel) => path.join(diff, rel) };
}

const read = (p: string) => fs.readFileSync(p, 'utf8');
const isLink = (p: string) => fs.lstatSync(p).isSymbolicLink();

const cases: Case[] = [
  // --- names that climb or are absolute: clamped to the layer root, as in Docker's chroot
  {
    name: 'file name climbing with ..',
    tar: () => T.tar(T.file('../../canary.txt', PWNED)),
    outcome: { confined: ({ at }) => assert.equal(read(at('canary.txt')), PWNED) },
  },
  {
    name: 'file name climbing with .. through a PAX path record',
    tar: () => T.tar(T.pax({ path: '../../canary.txt' }), T.file('innocent', PWNED)),
    outcome: { confined: ({ at, diff }) => { assert.equal(read(at('canary.txt')), PWNED); assert.deepEqual(listTree(diff), ['canary.txt']); } },
  },
  {
    name: 'absolute file name',
    tar: ({ tmp }) => T.tar(T.pax({ path: `${tmp}/canary.txt` }), T.file('x', PWNED)),
    outcome: { confined: ({ at, tmp }) => assert.equal(read(at(`${tmp}/canary.txt`)), PWNED) },
  },
  {
    name: 'many .. then an absolute path',
    tar: ({ tmp }) => T.tar(T.pax({ path: '../'.repeat(30) + tmp.slice(1) + '/canary.txt' }), T.file('x', PWNED)),
    outcome: { confined: ({ at, tmp }) => assert.equal(read(at(`${tmp}/canary.txt`)), PWNED) },
  },
  {
    name: 'directory name climbing with ..',
    tar: () => T.tar(T.dir('../../sibling/', { mode: 0o777, uid: 4242 })),
    outcome: { confined: ({ at }) => { assert.ok(fs.lstatSync(at('sibling')).isDirectory()); assert.equal(fs.lstatSync(at('sibling')).uid, 4242); } },
  },
  {
    name: 'non-directory entries naming the root (.., /) are skipped like the root entry',
    tar: () => T.tar(T.file('..', PWNED), T.symlink('/', '/etc'), T.hardlink('.', 'x')),
    outcome: { confined: ({ diff }) => assert.deepEqual(listTree(diff), []) },
  },
  // --- symlinked parents: resolved inside the layer (chroot semantics) or refused
  {
    name: 'parent symlink to ../.. (clamped at the layer root)',
    tar: () => T.tar(T.symlink('up', '../..'), T.file('up/canary.txt', PWNED)),
    outcome: { confined: ({ at }) => { assert.ok(isLink(at('up'))); assert.equal(read(at('canary.txt')), PWNED); } },
  },
  {
    name: 'parent symlink to /',
    tar: () => T.tar(T.symlink('root', '/'), T.file('root/canary.txt', PWNED)),
    outcome: { confined: ({ at }) => assert.equal(read(at('canary.txt')), PWNED) },
  },
  {
    name: 'parent symlink to an absolute path outside',
    tar: ({ tmp }) => T.tar(T.symlink('esc', `${tmp}/sibling`), T.file('esc/pwned', PWNED)),
    outcome: { refused: 'EUNSAFEPATH', entry: 'esc/pwned', message: /does not exist in the layer \(reached through a symlink\)/ },
  },
  {
    name: 'parent symlink to a relative path outside',
    tar: () => T.tar(T.symlink('esc', '../../sibling'), T.file('esc/pwned', PWNED)),
    outcome: { refused: 'EUNSAFEPATH', entry: 'esc/pwned', message: /parent directory "sibling" does not exist/ },
  },
  {
    name: 'directory below a symlink pointing outside',
    tar: () => T.tar(T.symlink('esc', '../../sibling'), T.dir('esc/sub/', { mode: 0o777 })),
    outcome: { refused: 'EUNSAFEPATH', entry: 'esc/sub/' },
  },
  {
    name: 'parent symlink chain through a dir and ..',
    tar: () => T.tar(T.dir('d/'), T.symlink('a', 'd/../../..'), T.file('a/canary.txt', PWNED)),
    outcome: { confined: ({ at }) => assert.equal(read(at('canary.txt')), PWNED) },
  },
  {
    name: 'symlink loop in a parent',
    tar: () => T.tar(T.symlink('a', 'b'), T.symlink('b', 'a'), T.file('a/x', PWNED)),
    outcome: { refused: 'EUNSAFEPATH', entry: 'a/x', message: /too many levels of symbolic links/ },
  },
  {
    name: 'parent is a symlink to a file',
    tar: () => T.tar(T.file('f', 'f'), T.symlink('l', 'f'), T.file('l/x', PWNED)),
    outcome: { refused: 'EUNSAFEPATH', entry: 'l/x', message: /parent "f" is not a directory/ },
  },
  // --- an entry over an existing symlink replaces the symlink, never writes through it
  {
    name: 'file over a symlink to an outside file (absolute)',
    tar: ({ tmp }) => T.tar(
      T.symlink('victim', `${tmp}/canary.txt`),
      T.pax({ 'SCHILY.xattr.user.evil': 'x' }),
      T.file('victim', PWNED, { mode: 0o4777, uid: 1234 }),
    ),
    outcome: { confined: ({ at }) => { assert.ok(fs.lstatSync(at('victim')).isFile()); assert.equal(read(at('victim')), PWNED); assert.equal(sys.lgetxattr(at('victim'), 'user.evil')?.toString(), 'x'); } },
  },
  {
    name: 'file over a symlink to an outside file (relative)',
    tar: () => T.tar(T.symlink('victim', '../../canary.txt'), T.file('victim', PWNED)),
    outcome: { confined: ({ at }) => assert.equal(read(at('victim')), PWNED) },
  },
  {
    name: 'directory over a symlink to an outside directory',
    tar: ({ tmp }) => T.tar(T.symlink('victim', `${tmp}/sibling`), T.dir('victim/', { mode: 0o777, uid: 1234 })),
    outcome: { confined: ({ at }) => { const st = fs.lstatSync(at('victim')); assert.ok(st.isDirectory()); assert.equal(st.uid, 1234); } },
  },
  {
    name: 'device, fifo, symlink and hard link over symlinks pointing outside',
    tar: ({ tmp }) => T.tar(
      T.symlink('v1', `${tmp}/canary.txt`), T.entry({ name: 'v1', type: '3', devmajor: 1, devminor: 3, mode: 0o666 }),
      T.symlink('v2', `${tmp}/canary.txt`), T.entry({ name: 'v2', type: '6', mode: 0o666 }),
      T.symlink('v3', `${tmp}/canary.txt`), T.symlink('v3', '/elsewhere'),
      T.file('real', 'in layer'),
      T.symlink('v4', `${tmp}/canary.txt`), T.hardlink('v4', 'real', { mode: 0o600 }),
    ),
    outcome: {
      confined: ({ at }) => {
        assert.ok(fs.lstatSync(at('v1')).isCharacterDevice());
        assert.ok(fs.lstatSync(at('v2')).isFIFO());
        assert.equal(fs.readlinkSync(at('v3')), '/elsewhere');
        assert.equal(fs.lstatSync(at('v4')).ino, fs.lstatSync(at('real')).ino);
      },
    },
  },
  {
    name: 'symlink with xattrs, owner and times pointing outside',
    tar: ({ tmp }) => T.tar(T.pax({ 'SCHILY.xattr.trusted.evil': 'x', mtime: '1' }), T.symlink('s', `${tmp}/canary.txt`, { uid: 1234, gid: 1234 })),
    outcome: { confined: ({ at }) => { const st = fs.lstatSync(at('s')); assert.equal(st.uid, 1234); assert.equal(st.mtimeMs, 1000); assert.equal(sys.lgetxattr(at('s'), 'trusted.evil')?.toString(), 'x'); } },
  },
  // --- hard links: the target must already exist inside this layer, reached without symlinks
  {
    name: 'hard link to an absolute outside path',
    tar: ({ tmp }) => T.tar(T.hardlink('h', `${tmp}/canary.txt`)),
    outcome: { refused: 'EUNSAFEPATH', entry: 'h', message: /hard link target .* does not exist in the layer/ },
  },
  {
    name: 'hard link climbing with ..',
    tar: () => T.tar(T.hardlink('h', '../../canary.txt')),
    outcome: { refused: 'EUNSAFEPATH', entry: 'h', message: /hard link target "\.\.\/\.\.\/canary\.txt" is outside the layer/ },
  },
  {
    name: 'hard link climbing with .. even when the clamped path exists in the layer',
    tar: () => T.tar(T.file('canary.txt', 'in layer'), T.hardlink('h', 'x/../../canary.txt')),
    outcome: { refused: 'EUNSAFEPATH', entry: 'h', message: /is outside the layer/ },
  },
  {
    name: 'hard link through a symlinked directory',
    tar: ({ tmp }) => T.tar(T.symlink('esc', tmp), T.hardlink('h', 'esc/canary.txt')),
    outcome: { refused: 'EUNSAFEPATH', entry: 'h', message: /hard link target "esc\/canary\.txt": parent "esc" is a symlink/ },
  },
  {
    name: 'hard link through a symlink that stays inside the layer',
    tar: () => T.tar(T.dir('d/'), T.file('d/f', 'x'), T.symlink('s', 'd'), T.hardlink('h', 's/f')),
    outcome: { refused: 'EUNSAFEPATH', entry: 'h', message: /parent "s" is a symlink/ },
  },
  {
    name: 'hard link climbing through a PAX linkpath record',
    tar: () => T.tar(T.file('innocent', 'in layer'), T.pax({ linkpath: '../../canary.txt' }), T.hardlink('h', 'innocent')),
    outcome: { refused: 'EUNSAFEPATH', entry: 'h', message: /"\.\.\/\.\.\/canary\.txt" is outside the layer/ },
  },
  {
    name: 'hard link to a directory',
    tar: () => T.tar(T.dir('d/'), T.hardlink('h', 'd')),
    outcome: { refused: 'EUNSAFEPATH', entry: 'h', message: /is a directory/ },
  },
  {
    name: 'hard link to itself',
    tar: () => T.tar(T.file('h', 'x'), T.hardlink('h', 'h')),
    outcome: { refused: 'EUNSAFEPATH', entry: 'h', message: /does not exist in the layer/ },
  },
  {
    name: 'hard link to a symlink pointing outside links the symlink itself',
    tar: ({ tmp }) => T.tar(T.symlink('s', `${tmp}/canary.txt`), T.hardlink('h', 's', { mode: 0o777, uid: 1234, mtime: 5 })),
    outcome: { confined: ({ at, tmp }) => { assert.ok(isLink(at('h'))); assert.equal(fs.readlinkSync(at('h')), `${tmp}/canary.txt`); assert.equal(fs.lstatSync(at('h')).ino, fs.lstatSync(at('s')).ino); } },
  },
  // --- whiteouts
  {
    name: 'whiteout climbing with ..',
    tar: () => T.tar(T.file('../../.wh.canary.txt')),
    outcome: { confined: ({ at }) => { const st = fs.lstatSync(at('canary.txt')); assert.ok(st.isCharacterDevice()); assert.equal(st.rdev, 0); } },
  },
  {
    name: 'whiteout below a symlink pointing outside',
    tar: ({ tmp }) => T.tar(T.symlink('esc', tmp), T.file('esc/.wh.canary.txt')),
    outcome: { refused: 'EUNSAFEPATH', entry: 'esc/.wh.canary.txt', message: /parent "esc" is a symlink/ },
  },
  {
    name: 'whiteout below a symlink that stays inside the layer',
    tar: () => T.tar(T.dir('d/'), T.symlink('s', 'd'), T.file('s/.wh.x')),
    outcome: { refused: 'EUNSAFEPATH', entry: 's/.wh.x' },
  },
  {
    name: 'opaque marker below a symlink pointing outside',
    tar: () => T.tar(T.symlink('esc', '../../sibling'), T.file('esc/.wh..wh..opq')),
    outcome: { refused: 'EUNSAFEPATH', entry: 'esc/.wh..wh..opq' },
  },
  {
    name: 'whiteout of ..',
    tar: () => T.tar(T.dir('a/'), T.file('a/.wh..')),
    outcome: { refused: 'EUNSAFEPATH', entry: 'a/.wh..', message: /invalid whiteout entry/ },
  },
  {
    name: 'whiteout of . and of the empty name',
    tar: () => T.tar(T.file('.wh.')),
    outcome: { refused: 'EUNSAFEPATH', entry: '.wh.', message: /invalid whiteout entry/ },
  },
  {
    name: 'whiteout of ... (.wh...)',
    tar: () => T.tar(T.file('.wh...')),
    outcome: { refused: 'EUNSAFEPATH', entry: '.wh...', message: /invalid whiteout entry/ },
  },
  // --- broken tars
  {
    name: 'truncated inside file content',
    tar: () => T.entry({ name: 'big', size: 4096 }, Buffer.alloc(4096, 1)).subarray(0, 512 + 1000),
    outcome: { refused: 'EBADTAR', message: /unexpected end of archive/ },
  },
  {
    name: 'truncated inside a header block',
    tar: () => Buffer.concat([T.file('ok', 'x'), T.header({ name: 'cut' }).subarray(0, 300)]),
    outcome: { refused: 'EBADTAR', message: /unexpected end of archive/ },
  },
  {
    name: 'bad header checksum',
    tar: () => T.tar(T.file('ok', 'x'), T.entry({ name: 'evil', badChecksum: true }, 'x')),
    outcome: { refused: 'EBADTAR', message: /bad checksum/ },
  },
  {
    name: 'size field far beyond the data',
    tar: () => Buffer.concat([T.header({ name: 'huge', size: 8 * 1024 ** 3 }), Buffer.alloc(2048, 7), T.end()]),
    outcome: { refused: 'EBADTAR', message: /unexpected end of archive/ },
  },
];

// Each case runs with extraction on the parsing thread and in the worker thread large layers use.
for (const offload of [false, true]) for (const c of cases) {
  test(`hostile: ${c.name}${offload ? ' [worker thread]' : ''}`, async (t) => {
    const a = arena(t);
    const before = snapshot(a.tmp, a.diff);
    const tar = c.tar(a);
    let error: unknown;
    try {
      await applyBuffer(tar, a.diff, 509, { offload });
    } catch (e) {
      error = e;
    }
    assert.deepEqual(snapshot(a.tmp, a.diff), before, 'nothing outside diff/ changed');
    if ('refused' in c.outcome) {
      const { refused, entry, message } = c.outcome;
      assert.ok(error, 'refused');
      assert.ok(isLaminaError(error, refused), `expected ${refused}, got ${String(error)}`);
      const msg = (error as Error).message;
      assert.ok(!msg.includes('\n'), 'one line');
      if (entry !== undefined) assert.ok(msg.startsWith(`tar entry ${JSON.stringify(entry)}: `), msg);
      if (message) assert.match(msg, message);
    } else {
      assert.equal(error, undefined, `accepted (got ${String(error)})`);
      c.outcome.confined(a);
    }
  });
}

for (const offload of [false, true]) test(`hostile: a path twice in one layer is refused by the tar-split recorder before extraction sees it${offload ? ' [worker thread]' : ''}`, async (t) => {
  // The layer store runs applyLayer with the recorder as an extra visitor, as Docker runs its
  // tar-split packer: Docker answers "duplicates of file paths not supported".
  const a = arena(t);
  const before = snapshot(a.tmp, a.diff);
  const tar = T.tar(T.symlink('victim', `${a.tmp}/canary.txt`), T.file('./victim', PWNED));
  await assert.rejects(
    applyBuffer(tar, a.diff, 509, { visitors: [new TarSplitRecorder(() => {})], offload }),
    (e: unknown) => isLaminaError(e, 'EBADTAR') && (e as Error).message === 'tar entry "./victim": duplicates of file paths not supported',
  );
  assert.deepEqual(snapshot(a.tmp, a.diff), before, 'nothing outside diff/ changed');
  assert.ok(isLink(a.at('victim')), 'the second entry was never extracted');
});
