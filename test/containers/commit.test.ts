// `lamina commit`: the layer tar as dockerd writes it (checked against the headers Docker wrote
// in the spec's measurements and in refapp's own layers), the config as NewChildImage makes it,
// and a round trip through save/load.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { pipeline } from 'node:stream/promises';
import { Store } from '../../src/store.js';
import { chainIDs } from '../../src/digest/index.js';
import { commitContainer, EMPTY_LAYER_DIFFID, processWord } from '../../src/containers/commit.js';
import * as sys from '../../src/sys/index.js';
import { expectedImages, FIXTURES } from '../helpers/expected.js';
import { applySection10Changes, createOn, mountRW, refappStore, tmpDir, unmount } from './helpers.js';
import { tarHeaders, type TarHeader } from './oracle.js';

/** The committed layer's tar as `save` would emit it (rebuilt from diff/ + tar-split), in a file. */
async function layerTarFile(t: Parameters<typeof tmpDir>[0], store: Store, imageID: string): Promise<{ file: string; diffID: string }> {
  const cfg = store.images.get(imageID);
  const ids = cfg.rootfs.diff_ids;
  const chain = chainIDs(ids)[ids.length - 1];
  const file = path.join(tmpDir(t), 'layer.tar');
  await pipeline(await store.layers.openTar(chain), fs.createWriteStream(file));
  return { file, diffID: ids[ids.length - 1] };
}

const sha256File = (f: string) => 'sha256:' + createHash('sha256').update(fs.readFileSync(f)).digest('hex');
const pick = (h: TarHeader) => ({ name: h.name, type: h.type, mode: h.mode.toString(8).padStart(7, '0'), linkname: h.linkname });

test('commit writes shared whiteouts with Docker\'s linkname quirk (spec §4.2 measurement)', async (t) => {
  const { store } = await refappStore(t);
  const c = createOn(store);
  const m = mountRW(t, store, c);
  // The container ran `rm /data/a.txt /data/b.txt /app/c2.txt`: one shared whiteout inode.
  for (const f of ['data/a.txt', 'data/b.txt', 'app/c2.txt']) fs.rmSync(`${m}/${f}`);
  const upper = store.driver.diffPath(c.mount.mountID);
  assert.equal(fs.lstatSync(`${upper}/data/a.txt`).ino, fs.lstatSync(`${upper}/app/c2.txt`).ino, 'the kernel shared one whiteout inode');

  const r = await commitContainer(store, c.id);
  const { file, diffID } = await layerTarFile(t, store, r.id);
  assert.equal(sha256File(file), diffID);
  assert.equal(r.diffID, diffID);
  const got = tarHeaders(file).map(pick);
  // Docker's measured headers for the three whiteouts, plus their parent directories.
  assert.deepEqual(got, [
    { name: 'app/', type: '5', mode: '0040755', linkname: '' },
    { name: 'app/.wh.c2.txt', type: '0', mode: '0000600', linkname: '' },
    { name: 'data/', type: '5', mode: '0040755', linkname: '' },
    { name: 'data/.wh.a.txt', type: '0', mode: '0000600', linkname: 'app/c2.txt' },
    { name: 'data/.wh.b.txt', type: '0', mode: '0000600', linkname: 'app/c2.txt' },
  ]);
  // Whiteouts carry the device's owner and mtime; the end is 1024 zero bytes, no record padding.
  const whiteoutMtime = Math.floor(fs.lstatSync(`${upper}/data/a.txt`).mtimeMs / 1000);
  assert.equal(tarHeaders(file)[3].mtime, whiteoutMtime);
  assert.equal(fs.statSync(file).size, 5 * 512 + 1024);
});

test('commit of an rm -rf + mkdir writes the opaque marker as Docker did in refapp\'s layer 3', async (t) => {
  const { store } = await refappStore(t);
  const c = createOn(store);
  const m = mountRW(t, store, c);
  fs.rmSync(`${m}/opt/olddir`, { recursive: true });
  fs.mkdirSync(`${m}/opt/olddir`);
  fs.chmodSync(`${m}/opt/olddir`, 0o755);
  fs.writeFileSync(`${m}/opt/olddir/newfile`, 'new\n');
  fs.chmodSync(`${m}/opt/olddir/newfile`, 0o644);
  const r = await commitContainer(store, c.id);
  const { file } = await layerTarFile(t, store, r.id);
  const got = tarHeaders(file);

  const docker = expectedImages().find((i) => i.RepoTags.includes('refapp:1'))!.layers[3].entries.slice().sort((a, b) => (a as { index: number } & typeof a).index - (b as { index: number } & typeof b).index);
  const typeflag: Record<string, string> = { dir: '5', file: '0', opaque: '0' };
  assert.deepEqual(got.map((h) => h.name), docker.map((e) => (e as unknown as { rawName: string }).rawName));
  for (let i = 0; i < got.length; i++) {
    const e = docker[i];
    assert.equal(got[i].type, typeflag[e.type], e.path);
    assert.equal(got[i].mode & 0o7777, parseInt(e.mode, 8), e.path);
    assert.equal(got[i].uid, e.uid);
    assert.equal(got[i].size, e.size ?? 0, e.path);
    if (e.type === 'opaque') assert.equal(got[i].mtime, e.mtime, 'the opaque marker has mtime 0');
  }
  // Docker-written headers keep the S_IFMT bits in mode, except for the opaque marker.
  assert.deepEqual(got.map((h) => h.mode.toString(8)), ['40755', '40755', '755', '100644']);
});

interface ListedEntry { type: string; perm: string; path: string; target?: string; xattrs: Record<string, string>; nlink: number }

/** Docker's upper dir of container refc1 after the §10 changes, from the diff-listing fixture. */
function dockerUpperListing(): ListedEntry[] {
  const text = fs.readFileSync(path.join(FIXTURES, 'dockerroot-diff-listing.txt'), 'utf8');
  const section = text.split('\n== ').find((s) => s.startsWith('62e8ccec44b896ad48db03f3e79ebd844d588d63de5e72e124e1a433c5aac6e0\n'))!;
  const out: ListedEntry[] = [];
  for (const line of section.split('\n')) {
    const m = /^\s+([dfclbp]) (\d{4}) \d+:\d+ \S+ (?:rdev=\S+ )?(?:nlink=(\d+) )?(\S+)(?: -> (\S+))?(?: (\{.*\}))?$/.exec(line);
    if (!m || m[4] === '.') continue;
    const xattrs = m[6] ? JSON.parse(m[6].replace(/'/g, '"')) : {};
    out.push({ type: m[1], perm: m[2], nlink: Number(m[3] ?? 1), path: m[4], target: m[5], xattrs });
  }
  return out;
}

/**
 * The headers Docker writes for an upper dir, by the rules of spec §4.2/§7: walk order (names
 * sorted in each dir), S_IFMT in modes, whiteouts as `.wh.` files mode 0600, opaque dirs
 * followed by their marker, symlink targets, only security.capability as PAX xattr.
 */
function dockerHeadersFor(listing: ListedEntry[]): Array<{ name: string; type: string; mode: string; linkname: string; pax: string[] }> {
  const walkOrder = (a: ListedEntry, b: ListedEntry) => {
    const x = a.path.split('/'), y = b.path.split('/');
    for (let i = 0; i < Math.min(x.length, y.length); i++) {
      const c = Buffer.compare(Buffer.from(x[i]), Buffer.from(y[i]));
      if (c) return c;
    }
    return x.length - y.length;
  };
  const out: Array<{ name: string; type: string; mode: string; linkname: string; pax: string[] }> = [];
  for (const e of [...listing].sort(walkOrder)) {
    const pax = Object.keys(e.xattrs).filter((k) => k === 'security.capability').map((k) => `SCHILY.xattr.${k}`);
    const perm = parseInt(e.perm, 8);
    const mode = (ifmt: number) => (ifmt | perm).toString(8).padStart(7, '0');
    if (e.type === 'd') {
      out.push({ name: e.path + '/', type: '5', mode: mode(0o40000), linkname: '', pax });
      if (e.xattrs['trusted.overlay.opaque'] === '79') out.push({ name: e.path + '/.wh..wh..opq', type: '0', mode: mode(0), linkname: '', pax: [] });
    } else if (e.type === 'c') {
      const i = e.path.lastIndexOf('/');
      out.push({ name: `${e.path.slice(0, i + 1)}.wh.${e.path.slice(i + 1)}`, type: '0', mode: '0000600', linkname: '', pax: [] });
    } else if (e.type === 'l') {
      out.push({ name: e.path, type: '2', mode: mode(0o120000), linkname: e.target!, pax });
    } else {
      out.push({ name: e.path, type: '0', mode: mode(0o100000), linkname: '', pax });
    }
  }
  return out;
}

test('commit of the §10 container gives the layer headers Docker would write for its upper dir', async (t) => {
  const { store } = await refappStore(t);
  const c = createOn(store, 'refc1');
  const m = mountRW(t, store, c);
  applySection10Changes(m);
  // What else refc1's upper held when Docker's listing was taken: a file with a capability, and
  // xattrs Docker drops from layer tars.
  fs.writeFileSync(`${m}/tmp/cap2`, 'capability holder\n');
  fs.chmodSync(`${m}/tmp/cap2`, 0o700);
  sys.lsetxattr(`${m}/tmp/cap2`, 'security.capability', Buffer.from('0100000200200000000000000000000000000000', 'hex'));
  sys.lsetxattr(`${m}/tmp/new.txt`, 'user.committed', 'yes');
  sys.lsetxattr(`${m}/tmp/new.txt`, 'trusted.custom', 't1');

  const r = await commitContainer(store, 'refc1', { reference: 'refcommit:1', message: 'msg' });
  const { file } = await layerTarFile(t, store, r.id);
  const got = tarHeaders(file).map((h) => ({ ...pick(h), pax: Object.keys(h.pax).sort() }));
  assert.deepEqual(got, dockerHeadersFor(dockerUpperListing()));
  const cap = tarHeaders(file).find((h) => h.name === 'tmp/cap2')!;
  assert.equal(Buffer.from(cap.pax['SCHILY.xattr.security.capability'], 'latin1').toString('hex'), '0100000200200000000000000000000000000000');

  // The new layer's diff/ was re-extracted from that tar: the dropped xattrs are gone there too.
  const layer = store.layers.get(chainIDs(store.images.get(r.id).rootfs.diff_ids).pop()!);
  const diff = store.driver.diffPath(layer.cacheID);
  assert.equal(sys.lgetxattr(`${diff}/tmp/new.txt`, 'user.committed'), undefined);
  assert.equal(fs.lstatSync(`${diff}/data/a.txt`).isCharacterDevice(), true);
  assert.equal(sys.lgetxattr(`${diff}/opt/olddir`, 'trusted.overlay.opaque')?.toString(), 'y');
});

test('commit → save → load into a fresh root reproduces the image ID and diffID', async (t) => {
  const { store } = await refappStore(t);
  const c = createOn(store);
  const m = mountRW(t, store, c);
  applySection10Changes(m);
  fs.writeFileSync(`${m}/big.bin`, Buffer.alloc(300_000, 7));
  const r = await commitContainer(store, c.id, { reference: 'roundtrip:1' });
  const dir = tmpDir(t);
  const archive = path.join(dir, 'rt.tar');
  await store.saveToFile(['roundtrip:1'], archive);

  const fresh = Store.open(path.join(dir, 'fresh'));
  const loaded = await fresh.load(archive);
  assert.equal(loaded[0].id, r.id);
  assert.deepEqual(fresh.images.getBytes(r.id), store.images.getBytes(r.id));
  const ids = fresh.images.get(r.id).rootfs.diff_ids;
  assert.equal(ids[ids.length - 1], r.diffID);
  // The re-extracted layer rebuilds the same tar bytes in the fresh root.
  const a = await layerTarFile(t, store, r.id);
  const b = await layerTarFile(t, fresh, r.id);
  assert.equal(sha256File(b.file), sha256File(a.file));
  // GNU tar reads it (an independent parser) and lists the same entries.
  const listing = execFileSync('tar', ['-tf', b.file], { encoding: 'utf8' }).trim().split('\n');
  assert.deepEqual(listing, tarHeaders(b.file).map((h) => h.name));
});

test('commit config: NewChildImage fields, -c changes, history, parent metadata, tag', async (t) => {
  const { store } = await refappStore(t);
  const parentID = store.resolveImage('refapp:1');
  const c = createOn(store, 'cfg', ['sleep', '3600']);
  const m = mountRW(t, store, c);
  fs.writeFileSync(`${m}/tmp/f`, 'x');
  const changes = [
    'CMD echo "hi there"', 'ENTRYPOINT ["/bin/sh", "-c"]', 'ENV A=1 B="two words"', 'ENV C=$A-${B}',
    'WORKDIR /srv', 'WORKDIR sub', 'USER 1000:1000', 'LABEL a=b "c d"="e f"', 'EXPOSE 80 53/udp 8000-8001',
  ];
  const r = await commitContainer(store, 'cfg', { reference: 'cfgimg', message: 'a message', author: 'Jane <j@x>', changes });
  const bytes = store.images.getBytes(r.id);
  const cfg = JSON.parse(bytes.toString());
  const parentBytes = store.images.getBytes(parentID).toString();
  const parent = JSON.parse(parentBytes);

  assert.deepEqual(Object.keys(cfg), ['architecture', 'author', 'config', 'container', 'container_config', 'created', 'history', 'os', 'rootfs']);
  assert.equal(cfg.architecture, parent.architecture);
  assert.equal(cfg.author, 'Jane <j@x>');
  assert.equal(cfg.container, c.id);
  assert.equal(cfg.os, 'linux');
  assert.equal(cfg.comment, undefined, 'moby keeps -m in the history entry only');
  // container_config is the container's config, byte for byte as config.v2.json holds it.
  const v2 = fs.readFileSync(path.join(store.containers.dir, c.id, 'config.v2.json'), 'utf8');
  const ccStart = v2.indexOf('"Config":') + '"Config":'.length;
  assert.ok(bytes.toString().includes(`"container_config":${v2.slice(ccStart, v2.indexOf(',"Image":"sha256:', ccStart))}`));
  // The -c changes, with the builder's semantics.
  const k = cfg.config;
  assert.deepEqual(Object.keys(k).slice(0, 7), ['Hostname', 'Domainname', 'User', 'AttachStdin', 'AttachStdout', 'AttachStderr', 'ExposedPorts']);
  assert.deepEqual(k.Cmd, ['/bin/sh', '-c', 'echo "hi there"'], 'a CMD given in the same commit survives ENTRYPOINT');
  assert.deepEqual(k.Entrypoint, ['/bin/sh', '-c']);
  assert.ok(k.Env.includes('A=1') && k.Env.includes('B=two words') && k.Env.includes('C=1-two words'));
  assert.equal(k.WorkingDir, '/srv/sub');
  assert.equal(k.User, '1000:1000');
  assert.deepEqual(k.Labels, { a: 'b', 'c d': 'e f' });
  assert.deepEqual(Object.keys(k.ExposedPorts), ['53/udp', '80/tcp', '8000/tcp', '8001/tcp']);
  assert.equal(k.Image, 'refapp:1');
  // History: the parent's entries unchanged, then the commit's.
  const histStart = parentBytes.indexOf('"history":[') + '"history":['.length;
  const parentHist = parentBytes.slice(histStart, parentBytes.indexOf('],"os"', histStart));
  assert.ok(bytes.toString().includes(`"history":[${parentHist},{`));
  const last = cfg.history[cfg.history.length - 1];
  assert.deepEqual(Object.keys(last), ['created', 'author', 'created_by', 'comment']);
  assert.equal(last.created, cfg.created);
  assert.equal(last.created_by, 'sleep 3600', 'created_by is the container Cmd joined');
  assert.equal(last.comment, 'a message');
  assert.deepEqual(cfg.rootfs.diff_ids, [...parent.rootfs.diff_ids, r.diffID]);
  // Image ID = sha256 of the bytes; parent metadata; tag with :latest.
  assert.equal(r.id, 'sha256:' + createHash('sha256').update(bytes).digest('hex'));
  assert.equal(store.images.getMetadata(r.id, 'parent'), parentID);
  assert.equal(store.resolveImage('cfgimg:latest'), r.id);
  assert.ok(store.images.getMetadata(r.id, 'lastUpdated'));

  // Unknown instructions are refused before anything is written.
  const before = store.layers.list().length;
  await assert.rejects(commitContainer(store, 'cfg', { changes: ['RUN rm -rf /'] }), /run is not a valid change command/);
  assert.equal(store.layers.list().length, before);
});

test('commit of an unchanged container adds no layer (empty_layer, as NewChildImage)', async (t) => {
  const { store } = await refappStore(t);
  const c = createOn(store);
  const layersBefore = store.layers.list().length;
  const r = await commitContainer(store, c.id);
  const cfg = JSON.parse(store.images.getBytes(r.id).toString());
  const parent = store.images.get(store.resolveImage('refapp:1'));
  assert.equal(r.diffID, undefined);
  assert.deepEqual(cfg.rootfs.diff_ids, parent.rootfs.diff_ids);
  assert.equal(cfg.history[cfg.history.length - 1].empty_layer, true);
  assert.equal(store.layers.list().length, layersBefore);
  // The empty layer tar really is 1024 zero bytes.
  assert.equal(EMPTY_LAYER_DIFFID, 'sha256:' + createHash('sha256').update(Buffer.alloc(1024)).digest('hex'));
  // Labels null → {} through moby's merge, in config and (same pointer) container_config alike.
  assert.deepEqual(cfg.config.Labels, cfg.container_config.Labels);
});

test('shell-word processing follows the builder: quotes, escapes, ${VAR:-default}', () => {
  const env = ['A=1', 'B=two words'];
  assert.equal(processWord('"$B"', env), 'two words');
  assert.equal(processWord("'$A'", env), '$A');
  assert.equal(processWord('\\$A', env), '$A');
  assert.equal(processWord('${C:-dflt}/${A:+set}', env), 'dflt/set');
  assert.equal(processWord('$A$missing.x', env), '1.x');
});

test('a mount during commit is not needed and the container stays usable after it', async (t) => {
  const { store } = await refappStore(t);
  const c = createOn(store);
  const m = mountRW(t, store, c);
  fs.writeFileSync(`${m}/tmp/a`, 'a');
  unmount(m);
  const r1 = await commitContainer(store, c.id);
  const r2 = await commitContainer(store, c.id);
  assert.notEqual(r1.id, r2.id, 'created times differ');
  assert.equal(r1.diffID, r2.diffID, 'same content, same layer');
  assert.equal(r2.createdLayer, false);
});
