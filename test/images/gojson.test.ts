import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  GoBytesString, RawJSON, compareGoStrings, formatGoFloat, goTime, marshalGo, marshalGoIndent, parseGoTime, quoteGo, sortKeys,
} from '../../src/images/gojson.js';
import { FIXTURES, expectedImages, fixtureSave } from '../helpers/expected.js';

const sha256hex = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

type Obj = Record<string, unknown>;

/** container.Config's map-typed fields are Go maps: written sorted. Everything else keeps struct order. */
function containerConfig(c: Obj | null): unknown {
  if (c === null) return null;
  const out: Obj = {};
  for (const [k, v] of Object.entries(c)) {
    out[k] = (k === 'Labels' || k === 'Volumes' || k === 'ExposedPorts') && v !== null ? sortKeys(v as Obj) : v;
  }
  return out;
}

/** An image config as moby re-marshals it: top level through a map (sorted), nested levels in struct order. */
function remarshalConfig(bytes: Buffer): string {
  const cfg = JSON.parse(bytes.toString('utf8')) as Obj;
  const top: Obj = { ...cfg };
  if ('config' in top) top.config = containerConfig(top.config as Obj | null);
  if ('container_config' in top) top.container_config = containerConfig(top.container_config as Obj | null);
  return marshalGo(sortKeys(top));
}

function tmp(t: { after: (fn: () => void) => void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lamina-gojson-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('re-marshalling the configs inside both docker saves reproduces their bytes (sha256 = image ID)', () => {
  for (const img of expectedImages()) {
    const name = img.imageID.slice(7) + '.json';
    // GNU tar extracts the member: an oracle independent of lamina's tar code.
    const bytes = execFileSync('tar', ['-xzOf', path.join(FIXTURES, img.saveTarball), name], { maxBuffer: 1 << 24 });
    assert.equal('sha256:' + sha256hex(bytes), img.imageID);
    const again = remarshalConfig(bytes);
    assert.equal(again, bytes.toString('utf8'), `config ${name}`);
    assert.equal('sha256:' + sha256hex(again), img.imageID);
  }
});

test("re-marshalling every config in Docker's imagedb, and the container's config.v2.json / hostconfig.json, is byte-identical", (t) => {
  const dir = tmp(t);
  execFileSync('tar', ['-xzf', path.join(FIXTURES, 'dockerroot-metadata-snapshot.tar.gz'), '-C', dir]);
  const contentDir = path.join(dir, 'image/overlay2/imagedb/content/sha256');
  const ids = fs.readdirSync(contentDir);
  assert.ok(ids.length >= 2);
  for (const id of ids) {
    const bytes = fs.readFileSync(path.join(contentDir, id));
    assert.equal(sha256hex(bytes), id, 'the fixture file is named by its hash');
    assert.equal(sha256hex(remarshalConfig(bytes)), id, `imagedb config ${id}`);
  }
  // Go structs all the way down (maps in them are already sorted in the document, and JSON.parse keeps that order).
  const ctrDir = path.join(dir, 'containers');
  for (const c of fs.readdirSync(ctrDir)) {
    for (const f of ['config.v2.json', 'hostconfig.json']) {
      // Docker writes these with json.Encoder, which adds a newline.
      const text = fs.readFileSync(path.join(ctrDir, c, f), 'utf8');
      assert.equal(marshalGo(JSON.parse(text)) + '\n', text, `${c}/${f}`);
    }
  }
  // repositories.json: a map of maps.
  const repos = fs.readFileSync(path.join(dir, 'image/overlay2/repositories.json'), 'utf8');
  const parsed = JSON.parse(repos) as { Repositories: Record<string, Record<string, string>> };
  const sorted = sortKeys(Object.fromEntries(Object.entries(parsed.Repositories).map(([k, v]) => [k, sortKeys(v)])));
  assert.equal(marshalGo({ Repositories: sorted }), repos);
});

test('goTime reproduces every timestamp Docker wrote in the fixtures', (t) => {
  const dir = tmp(t);
  execFileSync('tar', ['-xzf', path.join(FIXTURES, 'dockerroot-metadata-snapshot.tar.gz'), '-C', dir]);
  const stamps = new Set<string>();
  const metaDir = path.join(dir, 'image/overlay2/imagedb/metadata/sha256');
  for (const id of fs.readdirSync(metaDir)) {
    const f = path.join(metaDir, id, 'lastUpdated');
    if (fs.existsSync(f)) stamps.add(fs.readFileSync(f, 'utf8'));
  }
  const contentDir = path.join(dir, 'image/overlay2/imagedb/content/sha256');
  for (const id of fs.readdirSync(contentDir)) {
    const text = fs.readFileSync(path.join(contentDir, id), 'utf8');
    for (const m of text.matchAll(/"created":"([^"]+)"/g)) stamps.add(m[1]);
  }
  const ctr = fs.readdirSync(path.join(dir, 'containers'))[0];
  const cfg = fs.readFileSync(path.join(dir, 'containers', ctr, 'config.v2.json'), 'utf8');
  for (const m of cfg.matchAll(/"(?:Created|StartedAt|FinishedAt)":"([^"]+)"/g)) stamps.add(m[1]);
  assert.ok(stamps.size > 10);
  assert.ok(stamps.has('0001-01-01T00:00:00Z'), 'the zero time is among them');
  for (const s of stamps) assert.equal(goTime(parseGoTime(s)), s);
});

test('goTime: Date input, nanoseconds trimmed, zone offsets, the epoch', () => {
  // Date only has milliseconds: compare with the same instant given as sec/nsec.
  const d = new Date(Date.UTC(2026, 10, 28, 18, 42, 40, 671));
  assert.equal(goTime(d), goTime({ sec: Math.floor(d.getTime() / 1000), nsec: 671_000_000 }));
  assert.equal(goTime({ sec: 0, nsec: 0 }), new Date(0).toISOString().replace('.000Z', 'Z'));
  const iso = new Date(Date.UTC(2026, 10, 28, 18, 42, 40)).toISOString().replace('.000Z', '');
  const sec = Date.UTC(2026, 10, 28, 18, 42, 40) / 1000;
  assert.equal(goTime({ sec, nsec: 671_096_400 }), `${iso}.6710964Z`); // the spec's example
  assert.equal(goTime({ sec, nsec: 1 }), `${iso}.000000001Z`);
  const plus2 = parseGoTime('2026-11-28T20:42:40.5+02:00');
  assert.equal(plus2.sec, sec);
  assert.equal(goTime(plus2), '2026-11-28T20:42:40.5+02:00');
  assert.equal(goTime(parseGoTime('2026-11-28T18:42:40.000000000Z')), `${iso}Z`);
  assert.throws(() => parseGoTime('2026-13-01T00:00:00Z'), { code: 'EBADINPUT' });
  assert.throws(() => parseGoTime('yesterday'), { code: 'EBADINPUT' });
});

test('strings are escaped as Go does (spec §5.2): HTML characters, U+2028/9, controls, invalid UTF-8', () => {
  assert.equal(marshalGo('a<b>&c'), '"a\\u003cb\\u003e\\u0026c"');
  assert.equal(marshalGo('x\u2028y\u2029'), '"x\\u2028y\\u2029"');
  assert.equal(marshalGo('"\\\n\r\t'), '"\\"\\\\\\n\\r\\t"');
  assert.equal(marshalGo('\u0000\u0008\u000c\u001f\u007f'), '"\\u0000\\u0008\\u000c\\u001f\u007f"');
  assert.equal(marshalGo('ünï_名 😀'), '"ünï_名 😀"', 'other non-ASCII stays raw');
  assert.equal(marshalGo('a\ud800b'), '"a\\ufffdb"', 'a lone surrogate has no UTF-8 form');
  // Go replaces each invalid byte by itself: E2 82 (a truncated sequence) is two U+FFFD.
  assert.equal(marshalGo(new GoBytesString(Buffer.from([0x61, 0xe2, 0x82, 0x62, 0xff, 0xc3, 0xa9]))), '"a\\ufffd\\ufffdb\\ufffdé"');
  assert.equal(marshalGo(new GoBytesString(Buffer.from('<\u2028>', 'utf8'))), '"\\u003c\\u2028\\u003e"');
  assert.equal(quoteGo('plain'), '"plain"');
});

test('numbers: integers plain, floats in Go float64 format, bigint as integer', () => {
  assert.equal(marshalGo([0, -0, 1, -17, 123456789, 2 ** 53]), '[0,-0,1,-17,123456789,9007199254740992]');
  assert.equal(formatGoFloat(1.5), '1.5');
  assert.equal(formatGoFloat(0.000001), '0.000001');
  assert.equal(formatGoFloat(1e-7), '1e-7');
  assert.equal(formatGoFloat(1.25e-10), '1.25e-10');
  assert.equal(formatGoFloat(1e20), '100000000000000000000');
  assert.equal(formatGoFloat(1e21), '1e+21');
  assert.equal(marshalGo(9223372036854775807n), '9223372036854775807');
  assert.throws(() => marshalGo(NaN), { code: 'EINVAL' });
});

test('objects keep their order, Maps and sortKeys sort by bytes, undefined is omitted, RawJSON is compacted', () => {
  assert.equal(marshalGo({ b: 1, a: [true, null], c: undefined }), '{"b":1,"a":[true,null]}');
  // JS objects put integer-like keys first; a Map written by marshalGo sorts as Go does.
  assert.equal(marshalGo(sortKeys({ b: 1, '10': 2, '9': 3, a: 4 })), '{"10":2,"9":3,"a":4,"b":1}');
  assert.equal(marshalGo(new Map([['é', 1], ['z', 2], ['\u{1F600}', 3], ['\uffff', 4]])), '{"z":2,"é":1,"\uffff":4,"😀":3}');
  assert.ok(compareGoStrings('\uffff', '\u{1F600}') < 0, 'byte order, not UTF-16 order');
  assert.equal(marshalGo({ r: new RawJSON(' { "a" : [1, 2] , "h":"<x>" } ') }), '{"r":{"a":[1,2],"h":"\\u003cx\\u003e"}}');
  assert.equal(marshalGo([]), '[]');
  assert.equal(marshalGo({}), '{}');
});

test('marshalGoIndent matches json.MarshalIndent (python json.dumps as the oracle for ASCII data)', () => {
  const value = { Id: 'sha256:abc', RepoTags: ['a:1', 'b:2'], Empty: [], Obj: {}, Nested: { x: 1, y: [{ z: null }] }, Flag: false };
  const py = execFileSync('python3', ['-c', 'import json,sys; print(json.dumps(json.load(sys.stdin), indent=4), end="")'], { input: JSON.stringify(value) }).toString();
  assert.equal(marshalGoIndent(value, '    '), py);
  assert.equal(marshalGoIndent({ a: [1] }, '\t', '>'), '{\n>\t"a": [\n>\t\t1\n>\t]\n>}');
});

test('the fixture configs are readable as saved files too (sanity of the helper paths)', () => {
  assert.ok(fs.existsSync(fixtureSave('refapp')));
});
