// Fault injection: each store-changing command (load, commit, create, rm, rmi, pull) is SIGKILLed
// at every one of its filesystem steps in turn (LAMINA_FAULT_STEP=N, src/fsutil.ts faultPoint).
// After each kill: the store opens, fsck finds nothing (no corruption, no orphans: fsck also
// names every layer no image, container or live operation uses), what existed before is
// intact, and running the command again succeeds (or, for rm/rmi, finds its work already done)
// with the command's effect in place. LAMINA_CRASH_STRIDE=k tries every k-th step only
// (default: all steps of load/commit/create/rm/rmi, every 4th of pull's ~145, which all pass
// with LAMINA_CRASH_STRIDE=1 but take 5 minutes).
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync, execFileSync } from 'node:child_process';
import { Store } from '../../src/store.js';
import { fsck, formatProblem } from '../../src/fsck/index.js';
import { fixtureSave } from '../helpers/expected.js';
import { CLI, REPO } from '../helpers/cli.js';
import { have, startRegistry } from '../registry/harness.js';

const STRIDE_ENV = Number(process.env.LAMINA_CRASH_STRIDE) || 0;

function run(root: string, args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [CLI, '--root', root, ...args], { cwd: REPO, encoding: 'utf8', env: { ...process.env, LAMINA_ROOT: '', ...env } });
  return { code: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

interface Scenario {
  name: string;
  args: string[];
  /** The root the command starts from (a copy of it for every kill). */
  from: string;
  /** After a kill, the re-run may find the work done ("No such …"): true when it really is. */
  doneAlready?: (s: Store) => boolean;
  /** What must hold once the re-run ended (empty when it does). */
  effect: (s: Store) => string;
}

interface Before {
  refbaseID: string;
  /** refapp:1's image ID when the scenario's base has it (it must survive other commands). */
  refappID?: string;
  /** Container c1 with diff/newfile, when the base has it. */
  c1?: string;
}

/** Kills each scenario at every step; returns the number of kills and the failures found. */
async function killEverywhere(tmp: string, scenarios: Scenario[], before: Before, stride: number): Promise<{ kills: number; failures: string[] }> {
  let kills = 0;
  const failures: string[] = [];
  for (const sc of scenarios) {
    const probe = path.join(tmp, 'probe');
    execFileSync('cp', ['-a', sc.from, probe]);
    const counted = run(probe, sc.args, { LAMINA_FAULT_COUNT: '1' });
    assert.equal(counted.code, 0, `${sc.name}: ${counted.stderr}`);
    const steps = Number(/lamina-fault-steps (\d+)/.exec(counted.stderr)![1]);
    fs.rmSync(probe, { recursive: true, force: true });
    for (let k = 1; k <= steps; k += stride) {
      const root = path.join(tmp, `${sc.name}-${k}`);
      execFileSync('cp', ['-a', sc.from, root]);
      const where = `${sc.name} killed at step ${k}/${steps}`;
      try {
        const r = run(root, sc.args, { LAMINA_FAULT_STEP: String(k) });
        if (r.signal !== 'SIGKILL') { failures.push(`${where}: not killed (${r.code}): ${r.stderr}`); continue; }
        kills++;
        const s = Store.open(root);
        const report = await fsck(s);
        if (report.problems.length) { failures.push(`${where}: fsck: ${report.problems.map(formatProblem).join(' | ')}`); continue; }
        // What existed before is intact.
        if (s.resolveImage('refbase:1') !== before.refbaseID) failures.push(`${where}: refbase:1 changed`);
        if (before.refappID && sc.name !== 'rmi' && sc.name !== 'load' && s.resolveImage('refapp:1') !== before.refappID) failures.push(`${where}: refapp:1 changed`);
        if (before.c1 && sc.name !== 'rm') {
          const c = s.containers.get(before.c1);
          if (fs.readFileSync(path.join(s.driver.diffPath(c.mount.mountID), 'newfile'), 'utf8') !== 'hi\n') failures.push(`${where}: c1 lost its change`);
        }
        // Running the command again succeeds (rm/rmi: or its work was already done).
        const again = run(root, sc.args);
        if (again.code !== 0 && !(sc.doneAlready?.(Store.open(root)) && /No such|already in use/.test(again.stderr))) {
          failures.push(`${where}: re-run failed: ${again.stderr.trim()}`);
          continue;
        }
        const after = Store.open(root);
        const missing = sc.effect(after);
        if (missing) failures.push(`${where}: after the re-run ${missing}`);
        const final = await fsck(after);
        if (final.problems.length) failures.push(`${where}: fsck after re-run: ${final.problems.map(formatProblem).join(' | ')}`);
      } finally {
        fs.rmSync(root, { recursive: true, force: true });
      }
    }
  }
  return { kills, failures };
}

function tmpDir(t: TestContext): string {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lamina-crash-'));
  t.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
  return tmp;
}

test('SIGKILL at every filesystem step of load, commit, create, rm, rmi leaves a sound store', { timeout: 900_000 }, async (t) => {
  const tmp = tmpDir(t);
  // The store every run starts from: refbase:1 and refapp:1, container c1 on refbase with a change.
  const base = path.join(tmp, 'base');
  assert.equal(run(base, ['load', '-i', fixtureSave('refbase')]).code, 0);
  assert.equal(run(base, ['load', '-i', fixtureSave('refapp')]).code, 0);
  const c1 = run(base, ['create', '--name', 'c1', 'refbase:1', 'sh']).stdout.trim();
  const s0 = Store.open(base);
  fs.writeFileSync(path.join(s0.driver.diffPath(s0.containers.get(c1).mount.mountID), 'newfile'), 'hi\n');
  const before: Before = { refbaseID: s0.resolveImage('refbase:1'), refappID: s0.resolveImage('refapp:1'), c1 };
  // load onto a store without refapp: the same base minus refapp (rmi'd once, uncrashed).
  const baseNoApp = path.join(tmp, 'base-noapp');
  execFileSync('cp', ['-a', base, baseNoApp]);
  assert.equal(run(baseNoApp, ['rmi', 'refapp:1']).code, 0);

  const imageGone = (s: Store) => !s.images.has(before.refappID!);
  const scenarios: Scenario[] = [
    // Killed after its untag, rmi is finished by the next Store.open (its journal names the
    // image): the re-run finds nothing left to do.
    { name: 'rmi', args: ['rmi', 'refapp:1'], from: base, doneAlready: imageGone, effect: (s) => (imageGone(s) ? '' : 'the refapp image is still there') },
    { name: 'load', args: ['load', '-i', fixtureSave('refapp')], from: baseNoApp, effect: (s) => (s.images.has(before.refappID!) && s.repositories.entries().some((e) => e.ref === 'refapp:1') ? '' : 'refapp:1 is not loaded') },
    { name: 'commit', args: ['commit', 'c1', 'new:1'], from: base, effect: (s) => (s.repositories.entries().some((e) => e.ref === 'new:1') ? '' : 'new:1 does not exist') },
    // Killed after the record was published, the container exists: the re-run meets its name.
    { name: 'create', args: ['create', '--name', 'c2', 'refbase:1', 'sh'], from: base, doneAlready: (s) => s.containers.list().some((c) => c.config.Name === '/c2'), effect: (s) => (s.containers.list().some((c) => c.config.Name === '/c2') ? '' : 'c2 does not exist') },
    { name: 'rm', args: ['rm', 'c1'], from: base, doneAlready: (s) => !s.containers.ids().includes(c1), effect: (s) => (s.containers.ids().includes(c1) ? 'c1 still exists' : '') },
  ];
  const stride = STRIDE_ENV || 1;
  const { kills, failures } = await killEverywhere(tmp, scenarios, before, stride);
  t.diagnostic(`${kills} kills`);
  assert.deepEqual(failures, []);
  if (stride === 1) assert.ok(kills >= 200, `only ${kills} kill points`);
});

const noRegistry = have('docker-registry') ? false : 'docker-registry is not installed (scripts/ci-test.sh installs it)';

test('SIGKILL at every filesystem step of pull leaves a sound store, and the re-run pulls', { timeout: 600_000, skip: noRegistry }, async (t) => {
  const tmp = tmpDir(t);
  const reg = await startRegistry(t);
  // refapp:1 in the registry; the pulling store already has refbase:1, whose layers refapp shares.
  const pusher = path.join(tmp, 'pusher');
  assert.equal(run(pusher, ['load', '-i', fixtureSave('refapp')]).code, 0);
  const name = `${reg.host}/refapp:1`;
  assert.equal(run(pusher, ['tag', 'refapp:1', name]).code, 0);
  const pushed = run(pusher, ['push', name]);
  assert.equal(pushed.code, 0, pushed.stderr);
  const base = path.join(tmp, 'base');
  assert.equal(run(base, ['load', '-i', fixtureSave('refbase')]).code, 0);
  const refappID = Store.open(pusher).resolveImage('refapp:1');
  const before: Before = { refbaseID: Store.open(base).resolveImage('refbase:1') };
  const scenarios: Scenario[] = [{
    name: 'pull', args: ['pull', name], from: base,
    effect: (s) => (s.resolveImage(name) === refappID && !fs.existsSync(path.join(s.root, 'downloads')) ? '' : `${name} is not pulled (or downloads/ stayed)`),
  }];
  const stride = STRIDE_ENV || 4;
  const { kills, failures } = await killEverywhere(tmp, scenarios, before, stride);
  t.diagnostic(`${kills} kills (every ${stride}. step)`);
  assert.deepEqual(failures, []);
  assert.ok(kills * stride >= 100, `only ${kills} kill points`);
});
