import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { collect, fixtureLayers, Collector } from './fixtures.js';
import { TarParser } from '../../src/tar/reader.js';
import type { TarHeader } from '../../src/tar/types.js';
import type { ExpectedEntry } from '../helpers/expected.js';

/** expected.json's normalisation: leading "./" and "/" and the trailing "/" removed, root = ".". */
function normalize(name: string): string {
  let p = name;
  for (;;) {
    if (p.startsWith('./')) p = p.slice(2);
    else if (p.startsWith('/')) p = p.slice(1);
    else break;
  }
  while (p.endsWith('/')) p = p.slice(0, -1);
  return p === '' || p === '.' ? '.' : p;
}

function typeOf(h: TarHeader): string {
  const base = h.name.replace(/\/$/, '').split('/').pop()!;
  if (base === '.wh..wh..opq') return 'opaque';
  if (base.startsWith('.wh.')) return 'whiteout';
  switch (h.typeflag) {
    case '0': return 'file';
    case '1': return 'hardlink';
    case '2': return 'symlink';
    case '3': return 'char';
    case '4': return 'block';
    case '5': return 'dir';
    case '6': return 'fifo';
    default: return `typeflag ${h.typeflag}`;
  }
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

test('every fixture layer parses to the entries Docker reported, and raw+data rebuild the tar', () => {
  const layers = fixtureLayers();
  assert.ok(layers.length >= 11, `found ${layers.length} layers`);
  for (const { image, layer, tar } of layers) {
    const where = `${image} layer ${layer.index}`;
    const c = collect(tar);
    assert.equal(c.eofCount, 1, `${where}: eof once`);
    assert.equal('sha256:' + sha256(c.bytes), layer.diffID, `${where}: raw+data bytes rebuild the tar`);
    assert.equal(c.entries.length, layer.entries.length, `${where}: entry count`);
    const byPath = new Map<string, ExpectedEntry & { index: number; rawName: string }>();
    for (const e of layer.entries) byPath.set(e.path, e as ExpectedEntry & { index: number; rawName: string });
    c.entries.forEach(({ header: h, content }, i) => {
      const e = byPath.get(normalize(h.name));
      assert.ok(e, `${where}: unexpected entry ${h.name}`);
      const at = `${where} ${h.name}`;
      assert.equal(e.index, i, `${at}: index`);
      assert.equal(e.rawName, h.name, `${at}: raw name`);
      assert.equal(typeOf(h), e.type, `${at}: type`);
      assert.equal((h.mode & 0o7777).toString(8).padStart(4, '0'), e.mode, `${at}: mode`);
      assert.equal(h.uid, e.uid, `${at}: uid`);
      assert.equal(h.gid, e.gid, `${at}: gid`);
      assert.equal(h.mtime, e.mtime, `${at}: mtime`);
      if (e.type === 'file') {
        assert.equal(h.size, e.size, `${at}: size`);
        assert.equal(sha256(content), e.sha256, `${at}: content`);
      } else {
        assert.equal(content.length, 0, `${at}: no content`);
      }
      if (e.linkname !== undefined) assert.equal(h.linkname, e.linkname, `${at}: linkname`);
      if (e.devmajor !== undefined) assert.equal(h.devmajor, e.devmajor, `${at}: devmajor`);
      if (e.devminor !== undefined) assert.equal(h.devminor, e.devminor, `${at}: devminor`);
      const xattrs = Object.fromEntries(h.xattrs.map(([k, v]) => [k, v.toString('hex')]));
      assert.deepEqual(xattrs, e.xattrsHex ?? {}, `${at}: xattrs`);
    });
  }
});

test('the parser gives the same events whatever the chunking', () => {
  // The smaller layers byte by byte; all of them in awkward chunk sizes.
  for (const { tar } of fixtureLayers()) {
    const whole = collect(tar);
    for (const size of tar.length < 64 * 1024 ? [1, 7, 511, 512, 513, 4096] : [7, 511, 513, 65536]) {
      const c = new Collector();
      const p = new TarParser(c);
      for (let i = 0; i < tar.length; i += size) p.write(tar.subarray(i, i + size));
      p.end();
      assert.ok(c.bytes.equals(tar), `chunk ${size}: bytes`);
      assert.deepEqual(
        c.entries.map((e) => [e.header, sha256(e.content)]),
        whole.entries.map((e) => [e.header, sha256(e.content)]),
        `chunk ${size}: entries`,
      );
    }
  }
});

// ---------------------------------------------------------------------------------------------
// Archives made by GNU tar, compared with the files they were made from.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import * as sys from '../../src/sys/index.js';
import { isLaminaError } from '../../src/errors.js';
import { fixChecksum, patchOctal } from './fixtures.js';

function run(cmd: string, args: string[], cwd?: string): void {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr}`);
}

function tmpdir(t: { after: (fn: () => void) => void }): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'lamina-tar-'));
  t.after(() => fs.rmSync(d, { recursive: true, force: true }));
  return d;
}

const LONG_PATH = ['a'.repeat(100), 'b'.repeat(100), 'c'.repeat(95)].join('/') + '/file-at-300.txt';
const LONG_TARGET = 'target/'.repeat(21) + 'end'; // 150 characters

/** A tree holding every kind of entry the reader must understand. */
function makeTree(root: string): void {
  fs.mkdirSync(path.join(root, 'dir'), { mode: 0o750 });
  fs.writeFileSync(path.join(root, 'dir/file.txt'), 'hello\n', { mode: 0o640 });
  sys.lsetxattr(path.join(root, 'dir/file.txt'), 'user.comment', 'a comment');
  sys.lsetxattr(path.join(root, 'dir/file.txt'), 'user.bin', Buffer.from([0xff, 0x00, 0xfe, 0x0a, 0x80]));
  fs.mkdirSync(path.join(root, path.dirname(LONG_PATH)), { recursive: true });
  fs.writeFileSync(path.join(root, LONG_PATH), 'deep\n');
  assert.ok(LONG_PATH.length > 300);
  assert.equal(LONG_TARGET.length, 150);
  fs.symlinkSync(LONG_TARGET, path.join(root, 'longlink'));
  fs.symlinkSync('dir/file.txt', path.join(root, 'shortlink'));
  fs.writeFileSync(path.join(root, 'hard1'), 'x'.repeat(1000));
  fs.linkSync(path.join(root, 'hard1'), path.join(root, 'hard2'));
  sys.mknod(path.join(root, 'null'), sys.S_IFCHR | 0o644, 1, 3);
  sys.mknod(path.join(root, 'blk'), sys.S_IFBLK | 0o600, 7, 200);
  run('mkfifo', ['-m', '0644', path.join(root, 'fifo')]);
  fs.writeFileSync(path.join(root, 'biguid'), 'owned\n');
  fs.chownSync(path.join(root, 'biguid'), 3000000, 3000001);
  fs.writeFileSync(path.join(root, 'ünï_名.txt'), 'unicode\n');
  fs.writeFileSync(path.join(root, 'suid'), '#!/bin/sh\n', { mode: 0o755 });
  fs.chmodSync(path.join(root, 'suid'), 0o4755);
  fs.writeFileSync(path.join(root, 'nstime'), 'ns\n');
  sys.lutimesNs(path.join(root, 'nstime'), undefined, [1700000000, 123456789]);
  fs.writeFileSync(path.join(root, 'old'), 'before 1970\n');
  sys.lutimesNs(path.join(root, 'old'), undefined, [-315619200, 0]); // 1960-01-01
  fs.writeFileSync(path.join(root, 'empty'), '');
}

function majorOf(rdev: bigint): number {
  return Number(((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn));
}
function minorOf(rdev: bigint): number {
  return Number((rdev & 0xffn) | ((rdev >> 12n) & ~0xffn));
}

/** Every parsed entry agrees with the file it came from, and every file was archived once. */
function compareWithTree(root: string, c: ReturnType<typeof collect>, opts: { xattrs: boolean }): void {
  const seen = new Set<string>();
  const firstByInode = new Map<bigint, string>();
  for (const { header: h, content } of c.entries) {
    const rel = normalize(h.name);
    assert.ok(!seen.has(rel), `${rel} archived twice`);
    seen.add(rel);
    const p = rel === '.' ? root : path.join(root, rel);
    const st = fs.lstatSync(p, { bigint: true });
    const at = `${h.name}`;
    assert.equal(h.mode & 0o7777, Number(st.mode & 0o7777n), `${at}: mode`);
    assert.equal(h.uid, Number(st.uid), `${at}: uid`);
    assert.equal(h.gid, Number(st.gid), `${at}: gid`);
    if (h.pax?.has('mtime')) assert.equal(BigInt(h.mtime) * 1_000_000_000n + BigInt(h.mtimeNsec), st.mtimeNs, `${at}: mtime ns`);
    else assert.equal(BigInt(h.mtime), st.mtimeNs / 1_000_000_000n - (st.mtimeNs < 0n && st.mtimeNs % 1_000_000_000n !== 0n ? 1n : 0n), `${at}: mtime`);
    switch (h.typeflag) {
      case '0':
        assert.ok(st.isFile(), `${at}: file`);
        assert.equal(h.size, Number(st.size), `${at}: size`);
        assert.ok(content.equals(fs.readFileSync(p)), `${at}: content`);
        firstByInode.set(st.ino, rel);
        break;
      case '1':
        assert.equal(h.linkname && normalize(h.linkname), firstByInode.get(st.ino), `${at}: hard link target`);
        assert.equal(content.length, 0);
        break;
      case '2':
        assert.ok(st.isSymbolicLink(), `${at}: symlink`);
        assert.equal(h.linkname, fs.readlinkSync(p), `${at}: link target`);
        break;
      case '3':
      case '4':
        assert.ok(h.typeflag === '3' ? st.isCharacterDevice() : st.isBlockDevice(), `${at}: device type`);
        assert.equal(h.devmajor, majorOf(st.rdev), `${at}: devmajor`);
        assert.equal(h.devminor, minorOf(st.rdev), `${at}: devminor`);
        break;
      case '5':
        assert.ok(st.isDirectory(), `${at}: dir`);
        break;
      case '6':
        assert.ok(st.isFIFO(), `${at}: fifo`);
        break;
      default:
        assert.fail(`${at}: unexpected typeflag ${h.typeflag}`);
    }
    if (opts.xattrs) {
      const want = Object.fromEntries(sys.llistxattr(p).sort().map((n) => [n, sys.lgetxattr(p, n)!.toString('hex')]));
      const got = Object.fromEntries(h.xattrs.map(([k, v]) => [k, v.toString('hex')]).sort());
      assert.deepEqual(got, want, `${at}: xattrs`);
    }
  }
  const onDisk = new Set<string>(['.']);
  const walk = (dir: string, rel: string) => {
    for (const n of fs.readdirSync(dir)) {
      const r = rel ? `${rel}/${n}` : n;
      onDisk.add(r);
      if (fs.lstatSync(path.join(dir, n)).isDirectory()) walk(path.join(dir, n), r);
    }
  };
  walk(root, '');
  assert.deepEqual([...seen].sort(), [...onDisk].sort());
}

test('GNU tar --format=pax: xattrs, long path and link, hard link, devices, fifo, big uid, ns mtime, unicode', (t) => {
  const dir = tmpdir(t);
  const root = path.join(dir, 'root');
  fs.mkdirSync(root);
  makeTree(root);
  const tarFile = path.join(dir, 'pax.tar');
  run('tar', ['--format=pax', '--xattrs', "--xattrs-include=*", '-cf', tarFile, '-C', root, '.']);
  const tar = fs.readFileSync(tarFile);
  const c = collect(tar);
  assert.ok(c.bytes.equals(tar), 'raw + data = input');
  assert.equal(c.eofCount, 1);
  compareWithTree(root, c, { xattrs: true });
  const byName = new Map(c.entries.map((e) => [normalize(e.header.name), e.header]));
  assert.equal(byName.get('nstime')!.mtimeNsec, 123456789);
  assert.equal(byName.get('biguid')!.uid, 3000000);
  assert.equal(byName.get('longlink')!.linkname, LONG_TARGET);
  assert.ok(byName.has(LONG_PATH));
  assert.deepEqual(byName.get('dir/file.txt')!.xattrs.find(([k]) => k === 'user.bin')![1], Buffer.from([0xff, 0, 0xfe, 0x0a, 0x80]));
  assert.equal(byName.get('dir/file.txt')!.format, 'pax');
});

test('GNU tar --format=gnu: long names and links (L/K), base-256 uid and negative mtime', (t) => {
  const dir = tmpdir(t);
  const root = path.join(dir, 'root');
  fs.mkdirSync(root);
  makeTree(root);
  const tarFile = path.join(dir, 'gnu.tar');
  run('tar', ['--format=gnu', '-cf', tarFile, '-C', root, '.']);
  const tar = fs.readFileSync(tarFile);
  const c = collect(tar);
  assert.ok(c.bytes.equals(tar), 'raw + data = input');
  compareWithTree(root, c, { xattrs: false });
  assert.ok(tar.includes('././@LongLink'), 'GNU long-name records were used');
  const big = c.entries.find((e) => normalize(e.header.name) === 'biguid')!;
  assert.equal(tar[big.headerEnd - 512 + 108] & 0x80, 0x80, 'uid stored in base-256');
  const old = c.entries.find((e) => normalize(e.header.name) === 'old')!;
  assert.equal(tar[old.headerEnd - 512 + 136] & 0xc0, 0xc0, 'negative mtime stored in base-256');
  assert.equal(old.header.format, 'gnu');
});

test('sparse files are rejected with an error naming the entry', (t) => {
  const dir = tmpdir(t);
  const root = path.join(dir, 'root');
  fs.mkdirSync(root);
  const fd = fs.openSync(path.join(root, 'holes.img'), 'w');
  fs.writeSync(fd, 'data', 0);
  fs.writeSync(fd, 'more data', 8 * 1024 * 1024);
  fs.closeSync(fd);
  for (const format of ['gnu', 'pax']) {
    const tarFile = path.join(dir, `sparse-${format}.tar`);
    run('tar', [`--format=${format}`, '-S', '-cf', tarFile, '-C', root, '.']);
    assert.throws(
      () => collect(fs.readFileSync(tarFile)),
      (e: unknown) => isLaminaError(e, 'EBADTAR') && /tar entry "\.\/holes\.img": sparse files are not supported/.test(e.message),
      format,
    );
  }
});

test('header-only types carry no data whatever their size field says', (t) => {
  const dir = tmpdir(t);
  const root = path.join(dir, 'root');
  fs.mkdirSync(root);
  fs.symlinkSync('somewhere', path.join(root, 'a-link'));
  fs.writeFileSync(path.join(root, 'b-file'), 'after\n');
  const tarFile = path.join(dir, 'ho.tar');
  run('tar', ['--format=ustar', '-cf', tarFile, '-C', root, 'a-link', 'b-file']);
  const tar = fs.readFileSync(tarFile);
  patchOctal(tar, 0, 124, 12, 4096); // the symlink header claims 4096 bytes
  const c = collect(tar);
  assert.deepEqual(c.entries.map((e) => [e.header.name, e.header.typeflag, e.header.size, e.content.toString()]), [
    ['a-link', '2', 4096, ''],
    ['b-file', '0', 6, 'after\n'],
  ]);
});

test('malformed archives fail with one clear EBADTAR line', (t) => {
  const dir = tmpdir(t);
  const root = path.join(dir, 'root');
  fs.mkdirSync(root);
  fs.writeFileSync(path.join(root, 'a'), 'z'.repeat(1000));
  const tarFile = path.join(dir, 'one.tar');
  run('tar', ['--format=ustar', '-cf', tarFile, '-C', root, 'a']);
  const good = fs.readFileSync(tarFile); // header 0-512, content 512-1512, padding to 1536, end marker
  const fails = (buf: Buffer, re: RegExp) =>
    assert.throws(() => collect(buf), (e: unknown) => isLaminaError(e, 'EBADTAR') && re.test(e.message) && !e.message.includes('\n'), String(re));
  const ok = (buf: Buffer) => assert.equal(collect(buf).entries.length, 1);

  fails(good.subarray(0, 300), /unexpected end of archive inside a header block at offset 0/);
  fails(good.subarray(0, 1000), /tar entry "a": unexpected end of archive: 488 of 1000 content bytes present/);
  fails(good.subarray(0, 1536 + 700), /unexpected end of archive inside a header block at offset 2048/);
  // Go's reader accepts these ends: at a block boundary, inside padding, after one zero block.
  ok(good.subarray(0, 1536));
  ok(good.subarray(0, 1520));
  ok(good.subarray(0, 2048));

  const bigSize = Buffer.from(good.subarray(0, 1536 + 1024));
  patchOctal(bigSize, 0, 124, 12, 100000);
  fails(bigSize, /tar entry "a": unexpected end of archive: 2048 of 100000 content bytes present/);

  const badSum = Buffer.from(good);
  badSum[0] ^= 1;
  fails(badSum, /^invalid tar header at offset 0: bad checksum$/);

  const badSecond = Buffer.concat([good.subarray(0, 1536), good.subarray(0, 512)]);
  badSecond[1536 + 10] ^= 0x40;
  fails(badSecond, /^invalid tar header at offset 1536: bad checksum$/);

  fails(Buffer.from('this is not a tar archive at all, just some text '.repeat(20)), /^invalid tar header at offset 0: bad checksum$/);

  const zeroThenData = Buffer.concat([good.subarray(0, 1536), Buffer.alloc(512), good.subarray(0, 512)]);
  fails(zeroThenData, /^invalid tar header at offset 2048: a zero block followed by a non-zero block$/);

  const badMode = Buffer.from(good);
  badMode.write('09', 100, 'latin1');
  fixChecksum(badMode, 0);
  fails(badMode, /^invalid tar header at offset 0: bad mode field$/);
});

test('a PAX global header is reported as its own entry and does not apply to later entries (as in Go)', (t) => {
  const dir = tmpdir(t);
  const root = path.join(dir, 'root');
  fs.mkdirSync(root);
  fs.writeFileSync(path.join(root, 'f'), 'content\n');
  const tarFile = path.join(dir, 'g.tar');
  run('tar', ['--format=pax', '--pax-option=comment=global note,uname=ghost', '-cf', tarFile, '-C', root, 'f']);
  const tar = fs.readFileSync(tarFile);
  const c = collect(tar);
  assert.ok(c.bytes.equals(tar));
  assert.deepEqual(c.entries.map((e) => e.header.typeflag), ['g', '0']);
  const [g, f] = c.entries.map((e) => e.header);
  assert.equal(g.size, 0);
  assert.equal(g.pax?.get('comment')?.toString(), 'global note');
  assert.equal(f.name, 'f');
  assert.equal(f.uname, 'root', 'the global uname record is not applied');
  assert.equal(f.pax?.has('comment') ?? false, false);
});
