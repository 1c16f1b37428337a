// Detached containers: `run -d` returns while a shim process supervises the container; logs,
// exec, top, stop, start, kill, wait, restart work from separate lamina processes against the
// State in config.v2.json; a supervisor killed with SIGKILL is noticed and its container
// cleaned up. Every test ends with nothing left behind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { IMAGE, leftovers, runtimeEnv, skipReason, waitFor, type Env } from './harness.js';
import { runtimePaths } from '../../src/runtime/paths.js';
import { CLI } from '../helpers/cli.js';

const skip = skipReason;
const TICKER = 'trap "echo got TERM; exit 42" TERM; i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.1; done';

function state(e: Env, name: string) {
  return e.store.containers.get(e.store.containers.resolve(name)).config.State;
}

function logOf(e: Env, name: string): string {
  return e.cli('logs', name).stdout;
}

test('run -d, logs, exec, top, stop, start, kill, wait, restart', { skip }, async (t) => {
  const e = await runtimeEnv(t);
  let r = e.cli('run', '-d', '--name', 'd1', IMAGE, 'sh', '-c', TICKER);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^[0-9a-f]{64}\n$/);
  const id = r.stdout.trim();

  // The lamina command has exited; the container runs on under its supervisor.
  const s1 = state(e, 'd1');
  assert.equal(s1.Running, true);
  assert.ok(s1.Pid > 0 && fs.existsSync(`/proc/${s1.Pid}`));
  const sup = Number(fs.readFileSync(runtimePaths(e.root, id).supervisorFile, 'utf8').split(' ')[0]);
  assert.ok(fs.readFileSync(`/proc/${sup}/cmdline`, 'latin1').includes('shim'), 'the supervisor is the shim');
  assert.match(e.cli('ps', '--format', '{{.Names}} {{.State}} {{.Status}}').stdout, /^d1 running Up /);

  assert.ok(await waitFor(() => /tick 3\n/.test(logOf(e, 'd1'))), 'logs show the output');
  assert.match(logOf(e, 'd1'), /^tick 0\ntick 1\ntick 2\ntick 3\n/);
  const tail = e.cli('logs', '--tail', '1', 'd1').stdout;
  assert.match(tail, /^tick \d+\n$/);
  assert.match(e.cli('logs', '-t', '--tail', '1', 'd1').stdout, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z tick \d+\n$/);

  // exec: environment, exit codes, stdin, user, missing command.
  r = e.cli('exec', '-e', 'X=1', '-w', '/tmp', 'd1', 'sh', '-c', 'echo "$HOSTNAME $X $(pwd)"; exit 5');
  assert.equal(r.code, 5);
  assert.equal(r.stdout, `${id.slice(0, 12)} 1 /tmp\n`);
  r = e.cli('exec', '-u', 'app', 'd1', 'id', '-u');
  assert.equal(r.stdout, '1000\n');
  const piped = spawnSync(process.execPath, [CLI, '--root', e.root, 'exec', '-i', 'd1', 'sh', '-c', 'tr a-z A-Z'], { input: 'shout\n', encoding: 'utf8' });
  assert.equal(piped.stdout, 'SHOUT\n');
  r = e.cli('exec', 'd1', 'nope');
  assert.equal(r.code, 127);
  assert.match(r.stderr, /exec: "nope": executable file not found in \$PATH/);

  r = e.cli('top', 'd1');
  assert.equal(r.code, 0, r.stderr);
  const header = r.stdout.split('\n')[0].trim().split(/\s+/);
  assert.deepEqual(header, ['UID', 'PID', 'PPID', 'C', 'STIME', 'TTY', 'TIME', 'CMD']);
  assert.match(r.stdout, new RegExp(`\\n\\S+\\s+${s1.Pid}\\s.*sh -c trap`));

  // stop: SIGTERM (the trap answers), State records it and the container is marked as stopped by hand.
  r = e.cli('stop', 'd1');
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'd1\n');
  const c = e.store.containers.get(id);
  assert.equal(c.config.State.Running, false);
  assert.equal(c.config.State.ExitCode, 42);
  assert.equal(c.config.HasBeenManuallyStopped, true);
  assert.match(logOf(e, 'd1'), /got TERM\n$/);
  assert.match(e.cli('ps', '-a', '--format', '{{.Status}}').stdout, /^Exited \(42\) /);
  const mountsAfterStop = fs.readFileSync('/proc/self/mountinfo', 'utf8').includes(e.root);
  assert.equal(mountsAfterStop, false, 'a stopped container is unmounted');

  // start again: the log grows, same container.
  r = e.cli('start', 'd1');
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'd1\n');
  assert.equal(state(e, 'd1').Running, true);
  assert.ok(await waitFor(() => (logOf(e, 'd1').match(/tick 0\n/g) ?? []).length === 2), 'the second run logs to the same file');

  // kill + wait: 128+9.
  const waiter = spawnSync(process.execPath, [CLI, '--root', e.root, 'kill', 'd1'], { encoding: 'utf8' });
  assert.equal(waiter.stdout, 'd1\n');
  r = e.cli('wait', 'd1');
  assert.equal(r.stdout, '137\n');
  r = e.cli('kill', 'd1');
  assert.equal(r.code, 1);
  assert.match(r.stderr, /Container [0-9a-f]{64} is not running/);

  // restart of a stopped container starts it.
  r = e.cli('restart', 'd1');
  assert.equal(r.code, 0, r.stderr);
  assert.equal(state(e, 'd1').Running, true);
  r = e.cli('stop', '-t', '5', 'd1');
  assert.equal(r.code, 0, r.stderr);

  assert.equal(e.cli('rm', 'd1').code, 0);
  assert.deepEqual(leftovers(e), []);
});

test('stop -t kills a container that ignores SIGTERM; run -d --rm is removed when it stops', { skip }, async (t) => {
  const e = await runtimeEnv(t);
  let r = e.cli('run', '-d', '--rm', '--name', 'stubborn', IMAGE, 'sh', '-c', 'while :; do sleep 0.1; done');
  assert.equal(r.code, 0, r.stderr);
  const t0 = Date.now();
  r = e.cli('stop', '-t', '1', 'stubborn');
  assert.equal(r.code, 0, r.stderr);
  const took = Date.now() - t0;
  assert.ok(took >= 1000, `waited the timeout before SIGKILL (${took} ms)`);
  assert.equal(e.cli('ps', '-a', '-q').stdout, '', '--rm removed it');
  assert.deepEqual(leftovers(e), []);
});

test('a supervisor killed with SIGKILL is noticed: its container is stopped and cleaned up', { skip }, async (t) => {
  const e = await runtimeEnv(t);
  const r = e.cli('run', '-d', '--name', 'orphan', IMAGE, 'sh', '-c', 'while :; do sleep 0.1; done');
  assert.equal(r.code, 0, r.stderr);
  const id = r.stdout.trim();
  const sup = Number(fs.readFileSync(runtimePaths(e.root, id).supervisorFile, 'utf8').split(' ')[0]);
  process.kill(sup, 'SIGKILL');
  assert.ok(await waitFor(() => !fs.existsSync(`/proc/${sup}`)));
  // reconcileAll (for ps) finds it; any command that looks at the container would too.
  const { reconcileAll } = await import('../../src/runtime/state.js');
  assert.equal(await reconcileAll(e.store), 1);
  assert.equal(await reconcileAll(e.store), 0, 'once is enough');
  const s = e.cli('stop', 'orphan');
  assert.equal(s.code, 0, s.stderr);
  const st = state(e, 'orphan');
  assert.equal(st.Running, false);
  assert.equal(st.ExitCode, 255);
  assert.match(st.Error, /supervising the container exited/);
  assert.equal(fs.existsSync(path.join(e.run, 'containers')) && fs.readdirSync(path.join(e.run, 'containers')).some((h) => fs.readdirSync(path.join(e.run, 'containers', h)).length > 0), false);
  // It can be started again.
  assert.equal(e.cli('start', 'orphan').code, 0);
  assert.equal(state(e, 'orphan').Running, true);
  assert.equal(e.cli('kill', 'orphan').code, 0);
  assert.equal(e.cli('wait', 'orphan').stdout, '137\n');
  assert.equal(e.cli('rm', 'orphan').code, 0);
  assert.deepEqual(leftovers(e), []);
});

test('killForRemoval (for rm -f) stops a running container so removal leaves nothing behind', { skip }, async (t) => {
  const e = await runtimeEnv(t);
  const r = e.cli('run', '-d', '--name', 'doomed', IMAGE, 'sh', '-c', 'while :; do sleep 0.1; done');
  assert.equal(r.code, 0, r.stderr);
  const id = r.stdout.trim();
  const { killForRemoval } = await import('../../src/runtime/control.js');
  await killForRemoval(e.store, id);
  assert.equal(state(e, 'doomed').Running, false);
  assert.equal(state(e, 'doomed').ExitCode, 137);
  await e.store.removeContainer(id, { force: true });
  assert.deepEqual(leftovers(e), []);
});
