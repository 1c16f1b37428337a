// The layer writer against Docker: every layer dockerd wrote for refapp:1 is extracted into a
// fresh diff dir and written again from that dir alone; the result must hash to Docker's diffID.
// Then a directory built here with every kind of entry the writer must handle, read back with
// the tar reader and GNU tar, and applied again with applyLayer.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { Readable } from 'node:stream';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import * as sys from '../../src/sys/index.js';
import { parseTarBuffer } from '../../src/tar/reader.js';
import type { TarHeader } from '../../src/tar/types.js';
import { applyLayer } from '../../src/archive/apply.js';
import {
  writeLayerTar, layerTarChunks, digestLayerTar, changesTarChunks,
} from '../../src/archive/write.js';
import { hostIdNames, idNamesWith } from '../../src/archive/users.js';
import { expectedImages, fixtureSave } from '../helpers/expected.js';

function tempDir(t: { after(fn: () => void): void }, tag: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `lamina-write-${tag}-`));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

interface Entry { h: TarHeader; data: Buffer; offset: number }

function parseEntries(tar: Buffer): Entry[] {
  const out: Entry[] = [];
  let offset = 0;
  let parts: Buffer[] = [];
  let cur: Entry | null = null;
  parseTarBuffer(tar, {
    raw(c) { offset += c.length; },
    entry(h) {
      cur = { h: { ...h, nameBytes: Buffer.from(h.nameBytes), xattrs: h.xattrs.map(([k, v]) => [k, Buffer.from(v)] as [string, Buffer]) }, data: Buffer.alloc(0), offset };
      parts = [];
    },
    data(c) { offset += c.length; parts.push(Buffer.from(c)); },
    entryEnd() { cur!.data = Buffer.concat(parts); out.push(cur!); },
  });
  return out;
}

function saveLayers(name: 'refbase' | 'refapp'): Buffer[] {
  const outer = zlib.gunzipSync(fs.readFileSync(fixtureSave(name)));
  const files = new Map<string, Buffer>();
  for (const e of parseEntries(outer)) files.set(e.h.name, e.data);
  const manifest = JSON.parse(files.get('manifest.json')!.toString());
  return manifest[0].Layers.map((l: string) => files.get(l)!);
}

function collect(chunks: Iterable<Buffer>): Buffer {
  return Buffer.concat([...chunks]);
}

/** Where two tars first differ, named by the entry of `a` that holds the offset. */
function firstDifference(a: Buffer, b: Buffer): string {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  const entries = parseEntries(a);
  const at = [...entries].reverse().find((e) => e.offset <= i);
  return `first difference at byte ${i} (lengths ${a.length}/${b.length}), near entry ${at?.h.name ?? '(start)'}`;
}

test('re-writing every Docker-written refapp layer from its extracted diff dir gives Docker\'s diffID', async (t) => {
  const image = expectedImages().find((i) => i.RepoTags.includes('refapp:1'))!;
  const layers = saveLayers('refapp');
  const host = hostIdNames();
  const work = tempDir(t, 'refapp');
  // Layer 0 was imported (GNU tar wrote it, kept verbatim); layers 1.. were written by dockerd.
  for (let i = 1; i < layers.length; i++) {
    const expected = image.layers[i];
    const diff = path.join(work, `layer${i}`);
    fs.mkdirSync(diff);
    const applied = await applyLayer(Readable.from([layers[i]]), diff);
    assert.equal(applied.diffID, expected.diffID, `layer ${i}: the fixture itself hashes to its diffID`);

    // Docker looked names up on its own host. Use this host's, except where they differ.
    const users = new Map<number, string>(), groups = new Map<number, string>();
    const originals = parseEntries(layers[i]);
    for (const { h } of originals) {
      if (host.uname(h.uid) !== h.uname) users.set(h.uid, h.uname);
      if (host.gname(h.gid) !== h.gname) groups.set(h.gid, h.gname);
    }
    if (users.size + groups.size > 0) {
      t.diagnostic(`layer ${i}: names differ on this host, taken from Docker's headers: users ${JSON.stringify([...users])} groups ${JSON.stringify([...groups])}`);
    }
    // Docker's extraction creates whiteout devices without setting their times; in the upper
    // dir Docker exported from, they had the time of the `rm`. Restore that from the header.
    for (const { h } of originals) {
      const base = path.posix.basename(h.name);
      if (base.startsWith('.wh.') && base !== '.wh..wh..opq') {
        const target = path.join(diff, path.posix.dirname(h.name), base.slice(4));
        sys.lutimesNs(target, undefined, [h.mtime, 0]);
        t.diagnostic(`layer ${i}: whiteout ${h.name} given its header mtime ${h.mtime} (extraction does not keep it)`);
      }
    }

    const names = users.size + groups.size > 0 ? idNamesWith(users, groups) : undefined;
    if (originals.some((e) => e.h.uid === 1000)) {
      // The diffID depends on the host's user database: another name for uid 1000, another layer.
      const other = digestLayerTar(diff, { names: idNamesWith(new Map([[1000, 'someone-else']]), new Map(), names) });
      assert.notEqual(other.diffID, expected.diffID);
    }
    const written = collect(layerTarChunks(diff, { names }));
    assert.ok(written.equals(layers[i]), `layer ${i}: ${firstDifference(written, layers[i])}`);
    const { diffID, size } = digestLayerTar(diff, { names });
    assert.equal(diffID, expected.diffID, `layer ${i}`);
    assert.equal(size, expected.layerTarBytes);
  }
});

/** A directory with everything the writer has rules for. Returns what the test needs to know. */
function buildTree(root: string): { inode: Map<string, string> } {
  const p = (...s: string[]) => path.join(root, ...s);
  fs.mkdirSync(p('a/sub'), { recursive: true });
  fs.writeFileSync(p('a/file.txt'), 'hello\n');
  fs.writeFileSync(p('a/Zupper'), 'sorts before lowercase\n');
  fs.writeFileSync(p('a/with space.txt'), '');
  fs.symlinkSync('file.txt', p('a/link'));
  fs.symlinkSync('/' + 'l'.repeat(149), p('a/longlink'));
  // Three names for one inode: the first in walk order carries the content.
  fs.writeFileSync(p('a/sub/h1'), 'linked\n');
  fs.linkSync(p('a/sub/h1'), p('a/h0'));
  fs.linkSync(p('a/sub/h1'), p('b-hard'));
  fs.writeFileSync(p('a/setuid'), '#!/bin/sh\n');
  fs.chmodSync(p('a/setuid'), 0o4755);
  // xattrs: only security.capability leaves; user.* and trusted.overlay.* stay behind.
  fs.writeFileSync(p('a/cap'), 'cap\n');
  sys.lsetxattr(p('a/cap'), 'user.x', 'dropped');
  sys.lsetxattr(p('a/cap'), 'security.capability', Buffer.from('0100000200040000000000000000000000000000', 'hex'));
  sys.lsetxattr(p('a'), 'trusted.overlay.origin', Buffer.from([0, 1, 2]));
  sys.lsetxattr(p('a'), 'trusted.overlay.impure', 'y');
  // Whiteouts: one alone, two sharing an inode (the kernel's shared whiteout).
  fs.mkdirSync(p('w'));
  sys.mknod(p('w/gone'), sys.S_IFCHR, 0, 0);
  sys.mknod(p('w/shared1'), sys.S_IFCHR, 0, 0);
  fs.linkSync(p('w/shared1'), p('w/shared2'));
  fs.linkSync(p('w/shared1'), p('a/shared0'));
  // Opaque directory with the sticky bit: the marker keeps only the 0777 bits.
  fs.mkdirSync(p('opq'));
  fs.chmodSync(p('opq'), 0o1777);
  sys.lsetxattr(p('opq'), 'trusted.overlay.opaque', 'y');
  fs.writeFileSync(p('opq/new'), 'n\n');
  // Not opaque: a value other than "y".
  fs.mkdirSync(p('notopq'));
  sys.lsetxattr(p('notopq'), 'trusted.overlay.opaque', 'n');
  // Devices and a fifo.
  sys.mknod(p('a/null'), sys.S_IFCHR | 0o644, 1, 3);
  sys.mknod(p('a/blk'), sys.S_IFBLK | 0o600, 259, 300000);
  sys.mknod(p('a/fifo'), sys.S_IFIFO | 0o644, 0, 0);
  // Names: non-ASCII, a long splittable path, a component over 100 bytes.
  fs.writeFileSync(p('a/ünï_名.txt'), 'u\n');
  const deep = p('d'.repeat(60), 'e'.repeat(60));
  fs.mkdirSync(deep, { recursive: true });
  fs.writeFileSync(path.join(deep, 'f.txt'), 'deep\n');
  fs.writeFileSync(path.join(deep, 'g'.repeat(120)), 'long\n');
  // Big ids.
  fs.writeFileSync(p('a/bigid'), 'id\n');
  fs.lchownSync(p('a/bigid'), 3000000, 2097151);
  fs.lchownSync(p('w/gone'), 1000, 1000);
  // A socket: Docker leaves it out.
  execFileSync('python3', ['-c', 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])', p('a/sock')]);

  // Times last: children before their directories; ns parts must be truncated, not rounded.
  const all: string[] = [];
  const walk = (d: string) => {
    for (const n of fs.readdirSync(d)) {
      const q = path.join(d, n);
      if (fs.lstatSync(q).isDirectory()) walk(q);
      all.push(q);
    }
  };
  walk(root);
  let k = 0;
  for (const q of all) sys.lutimesNs(q, [1600000000, 0], [1700000000 + k++, 999_999_999]);
  const inode = new Map<string, string>();
  for (const q of all) inode.set(path.relative(root, q), String(fs.lstatSync(q).ino));
  return { inode };
}

test('a built directory: order, header fields, whiteout/opaque conversion, xattr filtering', (t) => {
  const root = tempDir(t, 'tree');
  const src = path.join(root, 'src');
  fs.mkdirSync(src);
  buildTree(src);
  const skipped: string[] = [];
  const tar = collect(layerTarChunks(src, { onSkip: (p, why) => skipped.push(`${path.relative(src, p)}: ${why}`) }));
  assert.deepEqual(skipped, ['a/sock: sockets cannot be archived']);
  const entries = parseEntries(tar);
  const names = entries.map((e) => e.h.name);
  const host = hostIdNames();
  const deep = 'd'.repeat(60) + '/' + 'e'.repeat(60);

  // Depth-first, bytewise order of on-disk names; whiteouts renamed where the deleted name sorts.
  // Depth-first, bytewise order of the on-disk names (uppercase before lowercase, UTF-8 last);
  // whiteouts renamed where the deleted name sorts; the opaque marker right after its dir.
  assert.deepEqual(names, [
    'a/', 'a/Zupper', 'a/bigid', 'a/blk', 'a/cap', 'a/fifo', 'a/file.txt', 'a/h0', 'a/link', 'a/longlink',
    'a/null', 'a/setuid', 'a/.wh.shared0', 'a/sub/', 'a/sub/h1', 'a/with space.txt', 'a/ünï_名.txt',
    'b-hard', `${'d'.repeat(60)}/`, `${deep}/`, `${deep}/f.txt`, `${deep}/${'g'.repeat(120)}`,
    'notopq/', 'opq/', 'opq/.wh..wh..opq', 'opq/new', 'w/', 'w/.wh.gone', 'w/.wh.shared1', 'w/.wh.shared2',
  ]);
  assert.deepEqual(names, namesInWalkOrder(src), 'the same order derived from the disk');
  const byName = new Map(entries.map((e) => [e.h.name, e.h]));
  const h = (n: string) => { const e = byName.get(n); assert.ok(e, `entry ${n}`); return e; };

  // Modes carry S_IFMT; mtimes are whole seconds, truncated; no PAX for them.
  assert.equal(h('a/').mode, 0o40755);
  assert.equal(h('a/file.txt').mode, 0o100644);
  assert.equal(h('a/link').mode, 0o120777);
  assert.equal(h('a/link').linkname, 'file.txt');
  assert.equal(h('a/null').mode, 0o20644);
  assert.deepEqual([h('a/null').typeflag, h('a/null').devmajor, h('a/null').devminor], ['3', 1, 3]);
  assert.deepEqual([h('a/blk').typeflag, h('a/blk').mode, h('a/blk').devmajor, h('a/blk').devminor], ['4', 0o60600, 259, 300000]);
  assert.deepEqual([h('a/fifo').typeflag, h('a/fifo').mode], ['6', 0o10644]);
  assert.equal(h('a/setuid').mode, 0o104755);
  for (const e of entries) {
    if (e.h.name !== 'opq/.wh..wh..opq') {
      assert.equal(e.h.mtimeNsec, 0, e.h.name);
      const st = fs.lstatSync(path.join(src, e.h.name.replace(/\.wh\./, '')), { bigint: true });
      assert.equal(e.h.mtime, Number(st.mtimeNs / 1_000_000_000n), `${e.h.name} mtime truncated`);
    }
    assert.equal(e.h.atime, undefined);
    assert.equal(e.h.uname, host.uname(e.h.uid), `${e.h.name} uname from this host`);
    assert.equal(e.h.gname, host.gname(e.h.gid));
    assert.ok(!e.h.name.startsWith('./') && !e.h.name.startsWith('/'));
    const paxKeys = [...(e.h.pax?.keys() ?? [])];
    assert.ok(paxKeys.every((k) => ['path', 'linkpath', 'uid', 'SCHILY.xattr.security.capability'].includes(k)), `${e.h.name}: ${paxKeys}`);
  }

  // Hard links: a/h0 comes first in walk order and carries the content.
  assert.deepEqual([h('a/h0').typeflag, h('a/h0').size], ['0', 7]);
  for (const n of ['a/sub/h1', 'b-hard']) {
    assert.deepEqual([h(n).typeflag, h(n).linkname, h(n).size, h(n).mode], ['1', 'a/h0', 0, 0o100644]);
  }
  assert.equal(entries.find((e) => e.h.name === 'a/h0')!.data.toString(), 'linked\n');

  // xattrs: security.capability only.
  assert.deepEqual(h('a/cap').xattrs.map(([k, v]) => [k, v.toString('hex')]),
    [['security.capability', '0100000200040000000000000000000000000000']]);
  assert.deepEqual(h('a/').xattrs, []);

  // Whiteouts: regular empty files, mode 0600, owner and mtime of the device.
  const gone = h('w/.wh.gone');
  assert.deepEqual([gone.typeflag, gone.mode, gone.size, gone.uid, gone.gid, gone.linkname], ['0', 0o600, 0, 1000, 1000, '']);
  assert.equal(gone.uname, host.uname(1000));
  // Shared whiteout inode: the first (a/shared0) is clean, later ones keep the linkname quirk.
  assert.equal(h('a/.wh.shared0').linkname, '');
  assert.deepEqual([h('w/.wh.shared1').typeflag, h('w/.wh.shared1').linkname], ['0', 'a/shared0']);
  assert.deepEqual([h('w/.wh.shared2').typeflag, h('w/.wh.shared2').linkname], ['0', 'a/shared0']);
  const noQuirk = parseEntries(collect(layerTarChunks(src, { whiteoutLinknameQuirk: false })));
  assert.ok(noQuirk.filter((e) => e.h.name.includes('.wh.')).every((e) => e.h.linkname === ''));

  // Opaque: the dir entry, then the marker: mode = dir & 0777, mtime 0, owner of the dir.
  const marker = h('opq/.wh..wh..opq');
  assert.deepEqual([marker.typeflag, marker.mode, marker.size, marker.mtime, marker.uid], ['0', 0o777, 0, 0, 0]);
  assert.equal(h('opq/').mode, 0o41777);
  assert.ok(!byName.has('notopq/.wh..wh..opq'));

  // PAX only where needed: big uid, long component, non-ASCII name, 150-byte link target, xattr.
  assert.equal(h('a/bigid').uid, 3000000);
  assert.equal(h('a/bigid').pax?.get('uid')?.toString(), '3000000');
  assert.equal(h('a/bigid').gid, 2097151);
  assert.ok(h('a/ünï_名.txt').pax?.has('path'));
  assert.ok(h(`${deep}/${'g'.repeat(120)}`).pax?.has('path'));
  assert.equal(h(`${deep}/f.txt`).pax, null, 'a splittable long path stays USTAR');
  assert.equal(h('a/longlink').linkname, '/' + 'l'.repeat(149));
  assert.ok(h('a/longlink').pax?.has('linkpath'));
  assert.equal(h('a/file.txt').pax, null);

  // Ends with two zero blocks and nothing else.
  assert.ok(tar.subarray(-1024).equals(Buffer.alloc(1024)));
  assert.equal(tar.length % 512, 0);

  // GNU tar, as an independent reader, sees the same names in the same order.
  const tarPath = path.join(root, 'out.tar');
  fs.writeFileSync(tarPath, tar);
  const gnu = execFileSync('tar', ['-tf', tarPath], { encoding: 'utf8' }).split('\n').filter(Boolean);
  assert.deepEqual(gnu, names);
});

test('shared whiteouts as measured in spec §4.2 (rm /data/a.txt /data/b.txt /app/c2.txt, then commit)', (t) => {
  const root = tempDir(t, 'shared-wh');
  fs.mkdirSync(path.join(root, 'app'));
  fs.mkdirSync(path.join(root, 'data'));
  // The kernel (≥ 5.8) makes one whiteout inode and links it under every deleted name.
  sys.mknod(path.join(root, 'app/c2.txt'), sys.S_IFCHR, 0, 0);
  fs.linkSync(path.join(root, 'app/c2.txt'), path.join(root, 'data/a.txt'));
  fs.linkSync(path.join(root, 'app/c2.txt'), path.join(root, 'data/b.txt'));
  const got = parseEntries(collect(layerTarChunks(root)))
    .filter((e) => e.h.name.includes('.wh.'))
    .map((e) => [e.h.name, e.h.typeflag, e.h.mode.toString(8).padStart(7, '0'), e.h.linkname]);
  assert.deepEqual(got, [
    ['app/.wh.c2.txt', '0', '0000600', ''],
    ['data/.wh.a.txt', '0', '0000600', 'app/c2.txt'],
    ['data/.wh.b.txt', '0', '0000600', 'app/c2.txt'],
  ]);
});

/** The expected entry names, derived from the disk: a sorted depth-first walk, with Docker's renames. */
function namesInWalkOrder(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: Buffer, rel: string) => {
    const names = fs.readdirSync(dir, { encoding: 'buffer' }).sort(Buffer.compare);
    for (const nb of names) {
      const n = nb.toString();
      const r = rel ? `${rel}/${n}` : n;
      const abs = path.join(dir.toString(), n);
      const st = fs.lstatSync(abs);
      if (st.isSocket()) continue;
      if (st.isCharacterDevice() && st.rdev === 0) {
        out.push(rel ? `${rel}/.wh.${n}` : `.wh.${n}`);
      } else if (st.isDirectory()) {
        out.push(r + '/');
        if (sys.lgetxattr(abs, 'trusted.overlay.opaque')?.toString() === 'y') out.push(r + '/.wh..wh..opq');
        walk(Buffer.from(abs), r);
      } else {
        out.push(r);
      }
    }
  };
  walk(Buffer.from(root), '');
  return out;
}

test('applying the written tar gives the same tree, and writing that tree again gives the same bytes', async (t) => {
  const root = tempDir(t, 'roundtrip');
  const src = path.join(root, 'src');
  const dst = path.join(root, 'dst');
  fs.mkdirSync(src);
  fs.mkdirSync(dst);
  buildTree(src);
  fs.rmSync(path.join(src, 'a/sock'));
  // Without the quirk, so that shared whiteouts (which extraction cannot re-share) compare equal.
  const first = collect(layerTarChunks(src, { whiteoutLinknameQuirk: false }));
  const applied = await applyLayer(Readable.from([first]), dst);
  assert.equal(applied.diffID, 'sha256:' + createHash('sha256').update(first).digest('hex'));

  // Extraction leaves whiteout times alone (as Docker's does); give them the header times.
  for (const e of parseEntries(first)) {
    const base = path.posix.basename(e.h.name);
    if (base.startsWith('.wh.') && base !== '.wh..wh..opq') {
      sys.lutimesNs(path.join(dst, path.posix.dirname(e.h.name), base.slice(4)), undefined, [e.h.mtime, 0]);
    }
  }
  const second = collect(layerTarChunks(dst, { whiteoutLinknameQuirk: false }));
  assert.ok(second.equals(first), firstDifference(second, first));

  // And the trees agree on what a layer tar carries (user.* and trusted.overlay.origin excepted).
  const describe = (dir: string) => {
    const rows: string[] = [];
    const walk = (d: string, rel: string) => {
      for (const n of fs.readdirSync(d).sort()) {
        const q = path.join(d, n), r = rel ? `${rel}/${n}` : n;
        const st = fs.lstatSync(q);
        const x = sys.llistxattr(q).map((k) => `${k}=${sys.lgetxattr(q, k)!.toString('hex')}`)
          .filter((kv) => kv.startsWith('security.capability=') || kv === 'trusted.overlay.opaque=79').join(',');
        const mtime = fs.lstatSync(q, { bigint: true }).mtimeNs / 1_000_000_000n; // exact: mtimeMs rounds
        const body = st.isFile() ? createHash('sha256').update(fs.readFileSync(q)).digest('hex').slice(0, 12)
          : st.isSymbolicLink() ? fs.readlinkSync(q) : '';
        rows.push(`${r} ${st.mode.toString(8)} ${st.uid}:${st.gid} ${st.rdev} ${st.nlink} ${mtime} ${body} ${x}`);
        if (st.isDirectory()) walk(q, r);
      }
    };
    walk(dir, '');
    return rows;
  };
  const a = describe(src).filter((r) => !/^w\/shared|^a\/shared0/.test(r));
  const b = describe(dst).filter((r) => !/^w\/shared|^a\/shared0/.test(r));
  assert.deepEqual(b, a);
  for (const n of ['w/shared1', 'w/shared2', 'a/shared0']) {
    const st = fs.lstatSync(path.join(dst, n));
    assert.ok(st.isCharacterDevice() && st.rdev === 0 && (st.mode & 0o7777) === 0, n);
  }
});

test('an invalid UTF-8 file name is written byte for byte (PAX path) and its capability read', (t) => {
  const root = tempDir(t, 'bytes');
  const name = Buffer.concat([Buffer.from('bad'), Buffer.from([0xff, 0xfe]), Buffer.from('name')]);
  const abs = Buffer.concat([Buffer.from(root + '/'), name]);
  fs.writeFileSync(abs, 'x');
  execFileSync('bash', ['-c', `setfattr -n security.capability -v 0x0100000200040000000000000000000000000000 "$(printf '%s/bad\\377\\376name' "$1")"`, '_', root]);
  const entries = parseEntries(collect(layerTarChunks(root)));
  assert.equal(entries.length, 1);
  assert.ok(entries[0].h.nameBytes.equals(name));
  assert.deepEqual(entries[0].h.xattrs.map(([k]) => k), ['security.capability']);
});

test('a v3 (namespaced) capability is exported as v2, as Docker does', (t) => {
  const root = tempDir(t, 'capv3');
  const f = path.join(root, 'f');
  fs.writeFileSync(f, 'x');
  // VFS_CAP_REVISION_3: 24 bytes, the last 4 the namespace root uid.
  const v3 = Buffer.from('010000030004000000000000000000000000000000000000', 'hex');
  sys.lsetxattr(f, 'security.capability', v3);
  const stored = sys.lgetxattr(f, 'security.capability')!;
  const [e] = parseEntries(collect(layerTarChunks(root)));
  const got = e.h.xattrs[0][1];
  assert.equal(got.length, 20);
  assert.equal(got[3], 2);
  assert.ok(got.subarray(4).equals(stored.subarray(4, 20)));
});

test('streams in bounded chunks; a big file is read straight through', async (t) => {
  const root = tempDir(t, 'stream');
  const big = path.join(root, 'big');
  const content = Buffer.alloc(9 * 1024 * 1024 + 123);
  for (let i = 0; i < content.length; i += 4096) content.writeUInt32BE(i, i);
  fs.writeFileSync(big, content);
  fs.writeFileSync(path.join(root, 'small'), 'tail\n');
  const chunkSize = 256 * 1024;
  const chunks: Buffer[] = [];
  for await (const c of writeLayerTar(root, { chunkSize })) chunks.push(c as Buffer);
  assert.ok(chunks.every((c) => c.length <= chunkSize), 'no chunk over the chunk size');
  const tar = Buffer.concat(chunks);
  const entries = parseEntries(tar);
  assert.deepEqual(entries.map((e) => e.h.name), ['big', 'small']);
  assert.ok(entries[0].data.equals(content));
  assert.equal(tar.length, 512 + content.length + (512 - (content.length % 512)) + 512 + 512 + 1024);
  const { diffID, size } = digestLayerTar(root, { chunkSize });
  assert.equal(diffID, 'sha256:' + createHash('sha256').update(tar).digest('hex'));
  assert.equal(size, tar.length);
});

test('a file that shrinks while it is written fails loudly instead of writing a broken tar', (t) => {
  const root = tempDir(t, 'shrink');
  const f = path.join(root, 'f');
  fs.writeFileSync(f, Buffer.alloc(8192, 1));
  const gen = layerTarChunks(root, { chunkSize: 512 });
  const firstChunk = gen.next();
  assert.equal((firstChunk.value as Buffer).length, 512); // the header
  fs.truncateSync(f, 1000);
  assert.throws(() => { for (let r = gen.next(); !r.done; r = gen.next()); }, (e: Error & { code?: string }) => e.code === 'ECONFLICT' && /shrank from 8192 to 1000/.test(e.message));
});

test('changesTarChunks: sorted changes, bare whiteout headers, no overlay conversion', (t) => {
  const root = tempDir(t, 'changes');
  fs.mkdirSync(path.join(root, 'a'));
  fs.writeFileSync(path.join(root, 'a/new'), 'n\n');
  sys.mknod(path.join(root, 'a/dev0'), sys.S_IFCHR, 0, 0);
  const tar = collect(changesTarChunks(root, [
    { path: '/etc/gone', kind: 'delete' },
    { path: '/a/new', kind: 'add' },
    { path: '/a', kind: 'modify' },
    { path: '/a/dev0', kind: 'add' },
    { path: '/top', kind: 'delete' },
  ], { now: () => [1700000000, 500_000_000] }));
  const entries = parseEntries(tar);
  assert.deepEqual(entries.map((e) => e.h.name), ['a/', 'a/dev0', 'a/new', 'etc/.wh.gone', '.wh.top']);
  const wh = entries[3].h;
  // A Go Header with no Format: mtime rounded to the nearest second (half up), nothing else set.
  assert.deepEqual([wh.typeflag, wh.mode, wh.uid, wh.gid, wh.uname, wh.gname, wh.mtime, wh.size], ['0', 0, 0, 0, '', '', 1700000001, 0]);
  assert.deepEqual([entries[1].h.typeflag, entries[1].h.mode & 0o170000], ['3', 0o020000], 'no whiteout conversion here');
  assert.ok(tar.subarray(-1024).equals(Buffer.alloc(1024)));
});

test('user and group names come from /etc/passwd and /etc/group of the given root', (t) => {
  const root = tempDir(t, 'users');
  fs.mkdirSync(path.join(root, 'etc'));
  fs.writeFileSync(path.join(root, 'etc/passwd'), '# comment\nroot:x:0:0:root:/root:/bin/sh\n+nis:x:5:5::/:/bin/sh\nbroken:x:7\napp:x:1000:1000::/home/app:/bin/sh\ndup:x:1000:1000::/:/bin/sh\n');
  fs.writeFileSync(path.join(root, 'etc/group'), 'root:x:0:\nstaff:x:50:app\n');
  const names = hostIdNames(root);
  assert.deepEqual([names.uname(0), names.uname(1000), names.uname(5), names.uname(7), names.uname(42)], ['root', 'app', '', '', '']);
  assert.deepEqual([names.gname(0), names.gname(50), names.gname(1000)], ['root', 'staff', '']);
  // Edits are picked up.
  fs.appendFileSync(path.join(root, 'etc/group'), 'app:x:1000:\n');
  assert.equal(hostIdNames(root).gname(1000), 'app');
  const over = idNamesWith(new Map([[1000, 'cloudsdk']]), new Map(), names);
  assert.deepEqual([over.uname(1000), over.uname(0)], ['cloudsdk', 'root']);
});
