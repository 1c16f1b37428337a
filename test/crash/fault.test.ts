// Fault injection: each store-changing command (load, commit, create, rm, rmi) is SIGKILLed at
// every one of its filesystem steps in turn (LAMINA_FAULT_STEP=N, src/fsutil.ts faultPoint).
// After each kill: the store opens, fsck finds nothing (no corruption, no orphans), what existed
// before is intact, and running the command again succeeds (or, for rm/rmi, finds its work
// already done). LAMINA_CRASH_STRIDE=k tries every k-th step only (default 1: all of them).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync, execFileSync } from 'node:child_process';
import { Store } from '../../src/store.js';
import { fsck, formatProblem } from '../../src/fsck/index.js';
import { fixtureSave } from '../helpers/expected.js';
import { CLI, REPO } from '../helpers/cli.js';

function run(root: string, args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [CLI, '--root', root, ...args], { cwd: REPO, encoding: 'utf8', env: { ...process.env, LAMINA_ROOT: '', ...env } });
  return { code: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

test('SIGKILL at every filesystem step of load, commit, create, rm, rmi leaves a sound store', { timeout: 600_000 }, async (t) => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lamina-crash-'));
  t.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
  const stride = Number(process.env.LAMINA_CRASH_STRIDE) || 1;
  // The store every run starts from: refbase:1 and refapp:1, container c1 on refbase with a change.
  const base = path.join(tmp, 'base');
  assert.equal(run(base, ['load', '-i', fixtureSave('refbase')]).code, 0);
  assert.equal(run(base, ['load', '-i', fixtureSave('refapp')]).code, 0);
  const c1 = run(base, ['create', '--name', 'c1', 'refbase:1', 'sh']).stdout.trim();
  const before = Store.open(base);
  fs.writeFileSync(path.join(before.driver.diffPath(before.containers.get(c1).mount.mountID), 'newfile'), 'hi\n');
  const refbaseID = before.resolveImage('refbase:1');
  const refappID = before.resolveImage('refapp:1');

  const scenarios: Array<{ name: string; args: string[]; doneAlready?: (s: Store) => boolean }> = [
    // Killed after the untag was written, rmi has done what the name asked: refapp:1 is gone
    // (the untagged image stays, as after an interrupted docker rmi; `rmi <id>` removes it).
    { name: 'rmi', args: ['rmi', 'refapp:1'], doneAlready: (s) => !s.repositories.entries().some((e) => e.ref === 'refapp:1') },
    { name: 'load', args: ['load', '-i', fixtureSave('refapp')] },
    { name: 'commit', args: ['commit', 'c1', 'new:1'] },
    // Killed after the record was published, the container exists: the re-run meets its name.
    { name: 'create', args: ['create', '--name', 'c2', 'refbase:1', 'sh'], doneAlready: (s) => s.containers.list().some((c) => c.config.Name === '/c2') },
    { name: 'rm', args: ['rm', 'c1'], doneAlready: (s) => !s.containers.ids().includes(c1) },
  ];
  // load onto a store without refapp: the same base minus refapp (rmi'd once, uncrashed).
  const baseNoApp = path.join(tmp, 'base-noapp');
  execFileSync('cp', ['-a', base, baseNoApp]);
  assert.equal(run(baseNoApp, ['rmi', 'refapp:1']).code, 0);

  let kills = 0;
  const failures: string[] = [];
  for (const sc of scenarios) {
    const from = sc.name === 'load' ? baseNoApp : base;
    const probe = path.join(tmp, 'probe');
    execFileSync('cp', ['-a', from, probe]);
    const counted = run(probe, sc.args, { LAMINA_FAULT_COUNT: '1' });
    assert.equal(counted.code, 0, `${sc.name}: ${counted.stderr}`);
    const steps = Number(/lamina-fault-steps (\d+)/.exec(counted.stderr)![1]);
    fs.rmSync(probe, { recursive: true, force: true });
    for (let k = 1; k <= steps; k += stride) {
      const root = path.join(tmp, `${sc.name}-${k}`);
      execFileSync('cp', ['-a', from, root]);
      const where = `${sc.name} killed at step ${k}/${steps}`;
      try {
        const r = run(root, sc.args, { LAMINA_FAULT_STEP: String(k) });
        if (r.signal !== 'SIGKILL') { failures.push(`${where}: not killed (${r.code}): ${r.stderr}`); continue; }
        kills++;
        const s = Store.open(root);
        const report = await fsck(s);
        if (report.problems.length) { failures.push(`${where}: fsck: ${report.problems.map(formatProblem).join(' | ')}`); continue; }
        // What existed before is intact.
        if (s.resolveImage('refbase:1') !== refbaseID) failures.push(`${where}: refbase:1 changed`);
        if (sc.name !== 'rmi' && sc.name !== 'load' && s.resolveImage('refapp:1') !== refappID) failures.push(`${where}: refapp:1 changed`);
        if (sc.name !== 'rm') {
          const c = s.containers.get(c1);
          if (fs.readFileSync(path.join(s.driver.diffPath(c.mount.mountID), 'newfile'), 'utf8') !== 'hi\n') failures.push(`${where}: c1 lost its change`);
        }
        // Running the command again succeeds (rm/rmi: or its work was already done).
        const again = run(root, sc.args);
        if (again.code !== 0 && !(sc.doneAlready?.(Store.open(root)) && /No such|already in use/.test(again.stderr))) {
          failures.push(`${where}: re-run failed: ${again.stderr.trim()}`);
          continue;
        }
        const final = await fsck(Store.open(root));
        if (final.problems.length) failures.push(`${where}: fsck after re-run: ${final.problems.map(formatProblem).join(' | ')}`);
      } finally {
        fs.rmSync(root, { recursive: true, force: true });
      }
    }
  }
  t.diagnostic(`${kills} kills`);
  assert.deepEqual(failures, []);
  if (stride === 1) assert.ok(kills >= 200, `only ${kills} kill points`);
});
