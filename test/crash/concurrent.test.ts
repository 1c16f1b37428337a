// Concurrency acceptance test (issue 7): 8 lamina processes run at once for
// LAMINA_CONCURRENCY_SECONDS (default 60) against one root whose images share layers (refapp is
// built FROM refbase): load, create, cp, commit, rm, rmi, tag and the readers images, ps, image
// inspect and history, each worker picking at random. Shared layers are contended on purpose:
// rmi refapp:1 while others load it and create from it, rmi by image ID of other workers'
// commits, and commits of identical changes, which register the same chain on the same parent at
// the same time.
//
// Every failed command must have failed with the answer its interleaving makes right ("No such
// image", an in-use conflict), from an explicit allow-list per operation; anything else (a stack
// trace, EEXIST, ENOENT on an internal path, a digest mismatch, a signal, a timeout) fails the
// test with the command, its stderr and the seed. At the end no command left anything behind, fsck
// finds nothing, and the containers and the workers' tags are exactly what the commands' outputs
// say they are. LAMINA_CONCURRENCY_SEED=n replays the workers' random choices (not the timing).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { Readable } from 'node:stream';
import { Store } from '../../src/store.js';
import { fsck, formatProblem } from '../../src/fsck/index.js';
import { chainIDs } from '../../src/digest/index.js';
import { writeLayerTar } from '../../src/archive/write.js';
import { commitContainer } from '../../src/containers/commit.js';
import { expectedImages, fixtureSave } from '../helpers/expected.js';
import { CLI, REPO } from '../helpers/cli.js';

const WORKERS = 8;
const SECONDS = Number(process.env.LAMINA_CONCURRENCY_SECONDS) || 60;
/**
 * Each command sleeps a random 0..JITTER_MS ms around every root-lock section (src/lock.ts), so
 * the gaps between its locked sections, where another process can change what it checked, are
 * wide enough to be hit in a minute. LAMINA_CONCURRENCY_JITTER_MS overrides (0: off).
 */
const JITTER_MS = Number(process.env.LAMINA_CONCURRENCY_JITTER_MS ?? 20);
/** A command this slow is hung (a lock never released), not merely slow. */
const COMMAND_TIMEOUT_MS = 180_000;
/** The notice a process blocked on the root lock prints: expected, not an error. */
const WAITING = /^waiting for another lamina process holding .*lamina\.lock…$/;

/** The failures an interleaving can make right, by kind: each matches one whole stderr line. */
const ALLOWED = {
  'no such image': /^Error: No such image: \S+$/,
  'no such container': /^Error: No such container: \S+$/,
  'in use: container uses the referenced image': /^Error: conflict: unable to remove repository reference "[^"]+" \(must force\) - container [0-9a-f]{12} is using its referenced image [0-9a-f]{12}$/,
  'in use: image used by a stopped container': /^Error: conflict: unable to delete [0-9a-f]{12} \(must be forced\) - image is being used by stopped container [0-9a-f]{12}$/,
  'conflict: referenced in multiple repositories': /^Error: conflict: unable to delete [0-9a-f]{12} \(must be forced\) - image is referenced in multiple repositories$/,
  'in use: dependent child images': /^Error: conflict: unable to delete [0-9a-f]{12} \(cannot be forced\) - image has dependent child images$/,
  'in use by another lamina process': /^Error: .* is in use by another lamina process\b[^\n]*$/,
} as const;
type Kind = keyof typeof ALLOWED;
const RMI_BY_NAME: Kind[] = ['no such image', 'in use: container uses the referenced image', 'in use by another lamina process'];
const RMI_BY_ID: Kind[] = ['no such image', 'in use: image used by a stopped container', 'conflict: referenced in multiple repositories', 'in use: dependent child images', 'in use by another lamina process'];
const RMI_FORCED: Kind[] = ['no such image', 'in use: dependent child images', 'in use by another lamina process'];

interface Result { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string; timedOut: boolean; start: number; end: number }

/** mulberry32: a small seeded PRNG, so a seed replays every worker's choices. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A tag change the commands' outputs prove, with the time span in which it happened. */
interface TagEvent { ref: string; kind: 'set' | 'unset'; id?: string; start: number; end: number }

test(`${WORKERS} lamina processes running load/create/cp/commit/rm/rmi/tag at once leave a consistent store`, { timeout: SECONDS * 1000 + 900_000 }, async (t) => {
  const seed = process.env.LAMINA_CONCURRENCY_SEED ? Number(process.env.LAMINA_CONCURRENCY_SEED) : Math.floor(Math.random() * 2 ** 31);
  t.diagnostic(`seed ${seed} (LAMINA_CONCURRENCY_SEED=${seed} replays the choices), ${WORKERS} workers, ${SECONDS} s, lock jitter ${JITTER_MS} ms`);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lamina-conc-'));
  const running = new Map<number, ChildProcess>();
  t.after(() => {
    for (const [pid, child] of running) if (child.exitCode === null && child.signalCode === null) process.kill(pid, 'SIGKILL');
    fs.rmSync(tmp, { recursive: true, force: true });
  });
  const root = path.join(tmp, 'root');
  // A host file every worker copies in unchanged: commits of it register the same chain.
  const shared = path.join(tmp, 'shared.txt');
  fs.writeFileSync(shared, 'the same change in every container\n');
  fs.utimesSync(shared, 1_000_000_000, 1_000_000_000);

  const fixtureID = new Map<string, string>();
  for (const img of expectedImages()) for (const tag of img.RepoTags) fixtureID.set(tag, img.imageID);
  const BASE = fixtureID.get('refbase:1')!;
  const APP = fixtureID.get('refapp:1')!;
  assert.ok(BASE && APP, 'expected.json names refbase:1 and refapp:1');

  function run(args: string[]): Promise<Result> {
    return new Promise((resolve, reject) => {
      const start = performance.now();
      const child = spawn(process.execPath, [CLI, '--root', root, ...args], {
        cwd: REPO, env: { ...process.env, LAMINA_ROOT: '', LAMINA_LOCK_JITTER_MS: String(JITTER_MS) }, stdio: ['ignore', 'pipe', 'pipe'],
      });
      running.set(child.pid!, child);
      let stdout = '', stderr = '', timedOut = false;
      child.stdout!.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
      child.stderr!.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
      const timer = setTimeout(() => { timedOut = true; child.kill('SIGKILL'); }, COMMAND_TIMEOUT_MS);
      child.on('error', reject);
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        running.delete(child.pid!);
        resolve({ code, signal, stdout, stderr, timedOut, start, end: performance.now() });
      });
    });
  }

  // ------------------------------------------------------------ what the commands' outputs prove
  const stats = { commands: 0, ok: 0, byOp: new Map<string, { ok: number; failed: number }>(), failuresByKind: new Map<string, number>() };
  const errors: string[] = [];
  const tagEvents: TagEvent[] = [];
  /** Image IDs any worker may rmi or tag: the fixtures' and every commit's. */
  const pool: string[] = [BASE, APP];

  /** everyLine: a command about several names reports each failed one on its own line. */
  interface Op { name: string; args: string[]; allow: Kind[]; everyLine?: boolean; after?: (r: Result) => void }

  function record(op: Op, r: Result): void {
    stats.commands++;
    const per = stats.byOp.get(op.name) ?? { ok: 0, failed: 0 };
    stats.byOp.set(op.name, per);
    const lines = r.stderr.split('\n').filter((l) => l !== '' && !WAITING.test(l));
    const where = `\`lamina ${op.args.join(' ')}\` (seed ${seed})`;
    if (r.timedOut) { errors.push(`${where}: timed out after ${COMMAND_TIMEOUT_MS / 1000} s; stderr: ${r.stderr}`); return; }
    if (r.signal) { errors.push(`${where}: killed by ${r.signal}; stderr: ${r.stderr}`); return; }
    if (r.code === 0) {
      if (lines.length) { errors.push(`${where}: succeeded but wrote to stderr: ${lines.join(' | ')}`); return; }
      stats.ok++;
      per.ok++;
      op.after?.(r);
      return;
    }
    per.failed++;
    const kindOf = (line: string) => op.allow.find((k) => ALLOWED[k].test(line));
    const kind = lines.length === 1 || (op.everyLine && lines.length > 1 && lines.every(kindOf)) ? kindOf(lines[0]) : undefined;
    if (r.code !== 1 || !kind) {
      errors.push(`${where}: exit ${r.code}, not an answer this interleaving allows (${op.allow.join(', ') || 'none: it must succeed'}); stderr:\n${r.stderr}`);
      return;
    }
    stats.failuresByKind.set(`${op.name}: ${kind}`, (stats.failuresByKind.get(`${op.name}: ${kind}`) ?? 0) + 1);
    op.after?.(r);
  }

  /** rmi's stdout: every `Untagged: wN:*` is a proven unset; `Deleted: <image>` leaves the pool. */
  function afterRmi() {
    return (r: Result) => {
      // A refusal untagged nothing (rmi checks every conflict before its first untag).
      if (r.code !== 0) return;
      for (const line of r.stdout.split('\n')) {
        const u = /^Untagged: (w\d+:\S+)$/.exec(line);
        if (u) tagEvents.push({ ref: u[1], kind: 'unset', start: r.start, end: r.end });
        const d = /^Deleted: (sha256:[0-9a-f]{64})$/.exec(line);
        if (d && d[1] !== BASE && d[1] !== APP) { const i = pool.indexOf(d[1]); if (i >= 0) pool.splice(i, 1); }
      }
    };
  }

  function setTag(ref: string, id: string, r: Result): void {
    tagEvents.push({ ref, kind: 'set', id, start: r.start, end: r.end });
  }

  // ------------------------------------------------------------ the workers
  const deadline = performance.now() + SECONDS * 1000;
  const liveContainers = new Set<string>();

  async function worker(n: number): Promise<void> {
    const rand = prng(seed * 31 + n + 1);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)];
    const mine: string[] = []; // container names this worker created and has not removed
    let nextContainer = 1;
    const tags = [`w${n}:1`, `w${n}:2`, `w${n}:3`];

    const ops: Array<[number, () => Op | undefined]> = [
      [4, () => ({ name: 'load refapp', args: ['load', '-q', '-i', fixtureSave('refapp')], allow: [] })],
      [2, () => ({ name: 'load refbase', args: ['load', '-q', '-i', fixtureSave('refbase')], allow: [] })],
      [6, () => {
        if (mine.length >= 4) return undefined;
        const name = `w${n}-c${nextContainer++}`;
        const image = pick(['refapp:1', 'refapp:1', 'refapp:1', 'refbase:1', pick(tags)]);
        return { name: 'create', args: ['create', '--name', name, image, 'sh'], allow: ['no such image'], after: (r) => { if (r.code === 0) { mine.push(name); liveContainers.add(name); } } };
      }],
      [3, () => (mine.length ? { name: 'cp', args: ['cp', shared, `${pick(mine)}:/shared.txt`], allow: [] } : undefined)],
      [5, () => {
        if (!mine.length) return undefined;
        const tag = pick(tags);
        return { name: 'commit', args: ['commit', pick(mine), tag], allow: [], after: (r) => { pool.push(r.stdout.trim()); setTag(tag, r.stdout.trim(), r); } };
      }],
      [2, () => {
        if (!mine.length) return undefined;
        const name = mine.splice(Math.floor(rand() * mine.length), 1)[0];
        // Only this worker creates, commits and removes its containers: rm must succeed.
        return { name: 'rm', args: ['rm', name], allow: [], after: (r) => { if (r.code === 0) liveContainers.delete(name); else mine.push(name); } };
      }],
      [2, () => ({ name: 'rmi refapp:1', args: ['rmi', 'refapp:1'], allow: RMI_BY_NAME, after: afterRmi() })],
      [1, () => ({ name: 'rmi refbase:1', args: ['rmi', 'refbase:1'], allow: RMI_BY_NAME, after: afterRmi() })],
      [3, () => { const tag = pick(tags); return { name: 'rmi own tag', args: ['rmi', tag], allow: RMI_BY_NAME, after: afterRmi() }; }],
      [3, () => { const id = pick(pool); return { name: 'rmi image ID', args: ['rmi', id], allow: RMI_BY_ID, after: afterRmi() }; }],
      [1, () => { const id = pick(pool); return { name: 'rmi -f image ID', args: ['rmi', '-f', id], allow: RMI_FORCED, after: afterRmi() }; }],
      [2, () => {
        const source = pick(['refapp:1', 'refbase:1', pick(pool)]);
        const tag = pick(tags);
        const id = source === 'refapp:1' ? APP : source === 'refbase:1' ? BASE : source;
        return { name: 'tag', args: ['tag', source, tag], allow: ['no such image'], after: (r) => { if (r.code === 0) setTag(tag, id, r); } };
      }],
      [3, () => ({ name: 'images', args: ['images', '-a'], allow: [] })],
      [3, () => ({ name: 'ps', args: ['ps', '-a'], allow: [] })],
      // Many names in one process: a reader busy long enough to meet rmis half-way.
      [2, () => ({ name: 'image inspect', args: ['image', 'inspect', '-f', '{{.Id}} {{.GraphDriver.Data.LowerDir}}', ...Array.from({ length: 40 }, () => pick(['refapp:1', 'refbase:1', ...tags]))], allow: ['no such image'], everyLine: true })],
      [1, () => ({ name: 'history', args: ['history', pick(['refapp:1', 'refbase:1', ...tags])], allow: ['no such image'] })],
    ];
    const total = ops.reduce((s, [w]) => s + w, 0);
    while (performance.now() < deadline && !errors.length) {
      let op: Op | undefined;
      while (!op) {
        let x = rand() * total;
        const [, make] = ops.find(([w]) => (x -= w) < 0) ?? ops[ops.length - 1];
        op = make();
      }
      const r = await run(op.args);
      record(op, r); // a wrong answer is recorded in errors, which stops every worker
    }
  }

  const started = performance.now();
  await Promise.all(Array.from({ length: WORKERS }, (_, i) => worker(i + 1)));
  const elapsed = (performance.now() - started) / 1000;

  const byOp = [...stats.byOp].sort().map(([k, v]) => `${k} ${v.ok}/${v.ok + v.failed}`).join(', ');
  t.diagnostic(`${stats.commands} commands in ${elapsed.toFixed(1)} s (${(stats.commands / elapsed).toFixed(1)}/s): ${stats.ok} succeeded, ${stats.commands - stats.ok} failed`);
  t.diagnostic(`succeeded/ran by operation: ${byOp}`);
  t.diagnostic(`failures by kind: ${[...stats.failuresByKind].sort().map(([k, v]) => `${k} ×${v}`).join('; ') || 'none'}`);
  assert.deepEqual(errors, [], `commands failed with answers no interleaving makes right (seed ${seed})`);

  // ------------------------------------------------------------ nothing left behind
  // Every command exited normally, so none may have left work for recovery: looked at before
  // Store.open, which would silently finish it.
  const leftovers: string[] = [];
  const layerdb = path.join(root, 'image', 'overlay2', 'layerdb');
  for (const n of fs.readdirSync(path.join(layerdb, 'tmp'))) leftovers.push(`layerdb/tmp/${n}`);
  for (const n of fs.readdirSync(path.join(layerdb, 'sha256'))) if (!/^[0-9a-f]{64}$/.test(n)) leftovers.push(`layerdb/sha256/${n}`);
  for (const n of fs.readdirSync(path.join(root, 'containers'))) if (n.startsWith('.')) leftovers.push(`containers/${n}`);
  for (const n of fs.readdirSync(path.join(root, 'tmp'))) leftovers.push(`tmp/${n}`);
  const walk = (dir: string, rel: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      if (/\.tmp$/.test(e.name)) leftovers.push(`${rel}/${e.name}`);
      if (e.isDirectory()) walk(path.join(dir, e.name), `${rel}/${e.name}`);
    }
  };
  walk(path.join(root, 'image'), 'image');
  walk(path.join(root, 'containers'), 'containers');
  assert.deepEqual(leftovers, [], `leftovers of commands that exited (seed ${seed})`);

  // ------------------------------------------------------------ a consistent store
  const store = Store.open(root);
  const report = await fsck(store);
  assert.deepEqual(report.problems.map(formatProblem), [], `fsck (seed ${seed})`);
  const problems: string[] = [];
  for (const id of store.images.list()) {
    for (const c of chainIDs(store.images.get(id).rootfs.diff_ids)) if (!store.layers.has(c)) problems.push(`image ${id}: layer ${c} missing`);
  }
  // moby writes `committed` into every layer dir a child layer dir is created on, and never
  // removes it; a read-only mount of an image layer depends on it.
  const layerDirs = store.driver.list().filter((d) => /^[0-9a-f]{64}(-init)?$/.test(d));
  const linkOf = new Map<string, string>();
  for (const d of layerDirs) linkOf.set(fs.readFileSync(path.join(store.driver.home, d, 'link'), 'utf8'), d);
  for (const d of layerDirs) {
    const lower = fs.existsSync(path.join(store.driver.home, d, 'lower')) ? fs.readFileSync(path.join(store.driver.home, d, 'lower'), 'utf8') : '';
    if (!lower) continue;
    const parent = linkOf.get(lower.split(':')[0].replace(/^l\//, ''));
    if (parent && !fs.existsSync(path.join(store.driver.home, parent, 'committed'))) problems.push(`overlay2/${parent} has the child overlay2/${d} but no committed marker`);
  }
  const names = new Set<string>();
  for (const c of store.containers.list()) {
    names.add(c.config.Name.slice(1));
    for (const d of [c.mount.initID, c.mount.mountID]) if (!store.driver.exists(d)) problems.push(`container ${c.config.Name}: layer dir overlay2/${d} missing`);
    if (!store.images.has(c.config.Image)) problems.push(`container ${c.config.Name}: image ${c.config.Image} missing`);
  }
  for (const n of liveContainers) if (!names.has(n)) problems.push(`container ${n}: created and never removed, but gone`);
  for (const n of names) if (!liveContainers.has(n)) problems.push(`container ${n}: removed (or never created), but there`);

  // Each wN:* tag is set only by worker N, one command at a time; any worker's rmi may unset it.
  // Its final value follows from the last set and the unsets that could have come after it.
  const refs = new Map(store.repositories.entries().map((e) => [e.ref, e.image] as const));
  const wtags = new Set([...tagEvents.map((e) => e.ref), ...[...refs.keys()].filter((r) => /^w\d+:/.test(r))]);
  for (const ref of wtags) {
    const sets = tagEvents.filter((e) => e.ref === ref && e.kind === 'set').sort((a, b) => a.end - b.end);
    const last = sets[sets.length - 1];
    const now = refs.get(ref);
    if (!last) {
      if (now) problems.push(`tag ${ref} points at ${now} but no command set it`);
      continue;
    }
    const unsets = tagEvents.filter((e) => e.ref === ref && e.kind !== 'set' && e.end > last.start);
    const surelyAfter = unsets.some((e) => e.kind === 'unset' && e.start > last.end);
    if (surelyAfter) {
      if (now) problems.push(`tag ${ref} points at ${now}, but an rmi untagged it after it was last set`);
    } else if (now !== last.id && !(now === undefined && unsets.length)) {
      problems.push(`tag ${ref} points at ${now ?? 'nothing'}, but was last set to ${last.id}${unsets.length ? ' (or untagged by an rmi)' : ''}`);
    }
  }
  assert.deepEqual(problems, [], `store consistency (seed ${seed})`);
});

// ------------------------------------------------------------ interleavings replayed in order
// The races the random run above can only hit by chance, each forced in one process: two
// "processes" here are two Store objects on one root, which share nothing but the disk and the
// root lock file (the lock is re-entrant per Store, as per process).

/** A fresh root with refbase loaded, and a tar of one small file (the change being registered). */
async function rootWithBase(t: { after: (fn: () => void) => void }): Promise<{ root: string; change: Buffer }> {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lamina-conc-'));
  t.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
  const root = path.join(tmp, 'root');
  await Store.open(root).load(fixtureSave('refbase'));
  const dir = path.join(tmp, 'change');
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'same.txt'), 'the same change\n');
  fs.utimesSync(path.join(dir, 'same.txt'), 1_000_000_000, 1_000_000_000);
  const chunks: Buffer[] = [];
  for await (const c of writeLayerTar(dir)) chunks.push(c as Buffer);
  return { root, change: Buffer.concat(chunks) };
}

test('two registrations of the same layer on a fresh parent: the one that loses keeps the parent\'s committed marker', async (t) => {
  const { root, change } = await rootWithBase(t);
  const a = Store.open(root), b = Store.open(root);
  const ids = a.images.get(a.resolveImage('refbase:1')).rootfs.diff_ids;
  const parent = chainIDs(ids)[ids.length - 1];
  const committed = path.join(a.driver.dir(a.layers.get(parent).cacheID), 'committed');
  assert.equal(fs.existsSync(committed), false, 'refbase\'s top layer has no child yet');
  // A starts first (its first locked section writes `committed` on the parent), but its input
  // arrives only once B has published the chain, so A's copy is the one dropped.
  let bPublished = () => {};
  const gate = new Promise<void>((resolve) => { bPublished = resolve; });
  const late = Readable.from((async function* () { await gate; yield change; })());
  const pa = a.layers.register(parent, late);
  const pb = b.layers.register(parent, Readable.from([change])).finally(() => bPublished());
  const [ra, rb] = await Promise.all([pa, pb]);
  assert.deepEqual([ra.created, rb.created], [false, true]);
  assert.ok(fs.existsSync(committed), 'the parent of a layer dir keeps its committed marker, as moby leaves it');
  // Nothing else of A's attempt is left: with the bare registration collected, fsck is clean.
  assert.deepEqual(a.collectUnreferenced([rb.layer.chainID]), [rb.layer.chainID]);
  assert.deepEqual((await fsck(Store.open(root))).problems.map(formatProblem), []);
});

test('a layer a commit found already registered stays while another process removes the only image using it', async (t) => {
  const { root, change } = await rootWithBase(t);
  const a = Store.open(root), b = Store.open(root);
  const base = a.resolveImage('refbase:1');
  // A commits a container with the change: image IA is the only one using the new layer X.
  const c = a.containers.create({ name: 'ca', imageRef: 'refbase:1', imageID: base, image: a.images.get(base), cmd: ['sh'] });
  const diff = a.driver.diffPath(c.mount.mountID);
  fs.writeFileSync(path.join(diff, 'same.txt'), 'the same change\n');
  fs.utimesSync(path.join(diff, 'same.txt'), 1_000_000_000, 1_000_000_000);
  const ia = await commitContainer(a, c.id);
  // B, committing the same change, registers it as commit does and finds X there ...
  const ids = b.images.get(base).rootfs.diff_ids;
  const r = await b.layers.register(chainIDs(ids)[ids.length - 1], Readable.from([change]), { pinResult: true });
  assert.equal(r.created, false);
  assert.equal(r.layer.diffID, ia.diffID, 'the same change gives the same layer');
  // ... and before B writes its image, A removes its container and IA.
  await a.removeContainer(c.id);
  const events = a.removeImage(ia.id);
  assert.ok(b.layers.has(r.layer.chainID), `X was deleted under B (rmi: ${JSON.stringify(events)})`);
  r.unpin();
  // Once B's image would have referenced it, nothing is left over: here B gives up instead.
  assert.deepEqual(a.collectUnreferenced([r.layer.chainID]), [r.layer.chainID]);
});
