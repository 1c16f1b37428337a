import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { DirStore, TarFile, blobDigestOfPath, normalizeMemberName, verifyingStream } from '../../src/transports/archive-file.js';
import { LaminaError } from '../../src/errors.js';
import { sha256 } from '../../src/digest/index.js';
import { readAll, scratch } from './helpers.js';

/** A tree with the shapes an image archive can hold, and the files' expected contents. */
function makeTree(root: string): Map<string, Buffer> {
  const files = new Map<string, Buffer>();
  const put = (rel: string, data: Buffer) => {
    fs.mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
    fs.writeFileSync(path.join(root, rel), data);
    files.set(rel, data);
  };
  put('manifest.json', Buffer.from('[{"Config":"c.json"}]'));
  put('empty', Buffer.alloc(0));
  put('odd', randomBytes(513));
  put('big/layer.tar', randomBytes(3 * 1024 * 1024 + 77)); // spans several index chunks
  const long = `${'d'.repeat(120)}/${'n'.repeat(90)}/${'f'.repeat(110)}.json`; // needs PAX / GNU long names
  put(long, Buffer.from('{"long":true}'));
  put('ünï/名.txt', Buffer.from('utf-8 name'));
  fs.symlinkSync('big/layer.tar', path.join(root, 'top-link'));
  fs.mkdirSync(path.join(root, 'v1'));
  fs.symlinkSync('../big/layer.tar', path.join(root, 'v1/layer.tar'));
  fs.symlinkSync('../../../etc/passwd', path.join(root, 'v1/escape'));
  fs.linkSync(path.join(root, 'odd'), path.join(root, 'odd.hardlink'));
  return files;
}

for (const format of ['pax', 'gnu', 'ustar-ish (GNU default)']) {
  test(`a tar written by GNU tar (${format}) is indexed and read in place`, async (t) => {
    const dir = scratch(t, 'archive-file');
    const root = path.join(dir, 'tree');
    fs.mkdirSync(root);
    const files = makeTree(root);
    const tarPath = path.join(dir, 'a.tar');
    const fmt = format === 'pax' ? ['--format=pax'] : format === 'gnu' ? ['--format=gnu'] : [];
    execFileSync('tar', ['-C', root, ...fmt, '-cf', tarPath, '.']); // "./" prefixes on every name
    const store = await TarFile.index(tarPath, 'a.tar');
    for (const [rel, data] of files) {
      assert.ok(store.has(rel), rel);
      assert.ok(store.has('./' + rel), `./${rel}`);
      assert.equal(store.size(rel), data.length, rel);
      assert.deepEqual(await readAll(store.open(rel)), data, rel);
      if (data.length < 1 << 20) assert.deepEqual(await store.read(rel), data, rel);
    }
    // Symlinks and hard links resolve to their targets inside the archive.
    assert.deepEqual(await readAll(store.open('v1/layer.tar')), files.get('big/layer.tar'));
    assert.equal(store.size('top-link'), files.get('big/layer.tar')!.length);
    assert.deepEqual(await store.read('odd.hardlink'), files.get('odd'));
    // A link leaving the archive, directories and absent names are not files.
    assert.equal(store.has('v1/escape'), false);
    assert.equal(store.has('v1'), false);
    assert.equal(store.has('nope'), false);
    assert.equal(store.has('../a.tar'), false);
    assert.throws(() => store.open('nope'), (e: unknown) => e instanceof LaminaError && e.code === 'EBADINPUT' && /a\.tar has no file nope/.test(e.message));
  });
}

test('a truncated or non-tar file fails to index with EBADTAR naming the file', async (t) => {
  const dir = scratch(t, 'archive-file');
  const root = path.join(dir, 'tree');
  fs.mkdirSync(root);
  makeTree(root);
  const tarPath = path.join(dir, 'a.tar');
  execFileSync('tar', ['-C', root, '-cf', tarPath, '.']);
  const cut = path.join(dir, 'cut.tar');
  fs.writeFileSync(cut, fs.readFileSync(tarPath).subarray(0, 1024 * 1024 + 700));
  await assert.rejects(TarFile.index(cut, 'cut.tar'), (e: unknown) => e instanceof LaminaError && e.code === 'EBADTAR' && e.message.startsWith('cut.tar: '));
  const text = path.join(dir, 'text');
  fs.writeFileSync(text, 'hello, this is not a tar archive\n'.repeat(40));
  await assert.rejects(TarFile.index(text, 'text'), (e: unknown) => e instanceof LaminaError && e.code === 'EBADTAR' && e.message.startsWith('text: '));
});

test('DirStore reads a directory and refuses paths that leave it', async (t) => {
  const dir = scratch(t, 'archive-file');
  const files = makeTree(dir);
  const store = new DirStore(dir, 'layout');
  for (const [rel, data] of files) {
    assert.ok(store.has(rel), rel);
    assert.deepEqual(await readAll(store.open(rel)), data);
  }
  assert.equal(store.has('../' + path.basename(dir) + '/odd'), false);
  assert.equal(store.has('big'), false);
});

test('member names: normalization and blob paths', () => {
  assert.equal(normalizeMemberName('./a//b/'), 'a/b');
  assert.equal(normalizeMemberName('/abs/x'), 'abs/x');
  assert.equal(normalizeMemberName('a/../b'), 'b');
  assert.equal(normalizeMemberName('../x'), null);
  assert.equal(normalizeMemberName('a/../../x'), null);
  assert.equal(normalizeMemberName('.'), null);
  const hex = sha256('x').slice(7);
  assert.equal(blobDigestOfPath(`./blobs/sha256/${hex}`), `sha256:${hex}`);
  assert.equal(blobDigestOfPath(`blobs/sha512/${hex}`), undefined);
  assert.equal(blobDigestOfPath(`${hex}/layer.tar`), undefined);
});

test('verifyingStream passes matching content and fails with EDIGEST naming the blob otherwise', async (t) => {
  const dir = scratch(t, 'archive-file');
  const f = path.join(dir, 'blob');
  const data = randomBytes(200000);
  fs.writeFileSync(f, data);
  const good = sha256(data);
  assert.deepEqual(await readAll(verifyingStream(fs.createReadStream(f), good, `blob ${good}`, data.length)), data);
  const other = sha256('other');
  await assert.rejects(readAll(verifyingStream(fs.createReadStream(f), other, `blob ${other}`)),
    (e: unknown) => e instanceof LaminaError && e.code === 'EDIGEST' && e.message.startsWith(`blob ${other} does not match its digest`) && e.message.includes(good));
  await assert.rejects(readAll(verifyingStream(fs.createReadStream(f), good, 'blob', 5)), { code: 'EDIGEST' });
});
