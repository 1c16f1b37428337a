// `lamina run` and friends through the compiled CLI with the real runc, on a busybox image built
// from the host's busybox-static: output, the container's files in the rw layer's diff/,
// exit codes, Docker's error for a missing command, -v binds, users, and that a run leaves
// nothing behind (mounts, processes, cgroups, directories) — also 20 times in a row.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { IMAGE, leftovers, runtimeEnv, skipReason } from './harness.js';

const skip = skipReason;

test('run --rm prints the hostname, writes into the container and leaves nothing behind', { skip }, async (t) => {
  const e = await runtimeEnv(t);
  const r = e.cli('run', '--rm', IMAGE, 'sh', '-c', 'echo hi > /x; cat /etc/hostname');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^[0-9a-f]{12}\n$/, 'the default hostname is the container ID prefix');
  assert.equal(r.stderr, '');
  assert.deepEqual(leftovers(e), []);
});

test('without --rm: the hostname is the container ID, diff shows A /x, diff/x holds hi, logs in json-file format', { skip }, async (t) => {
  const e = await runtimeEnv(t);
  const r = e.cli('run', '--name', 'c1', IMAGE, 'sh', '-c', 'echo hi > /x; cat /etc/hostname; echo oops >&2');
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stderr, 'oops\n');
  const c = e.store.containers.get(e.store.containers.resolve('c1'));
  assert.equal(r.stdout, c.id.slice(0, 12) + '\n');

  const diff = e.cli('diff', 'c1');
  assert.equal(diff.code, 0, diff.stderr);
  assert.equal(diff.stdout, 'A /x\n', 'only /x changed: /etc/hostname etc. are bind mounts, the init layer is below the diff');
  assert.equal(fs.readFileSync(path.join(e.store.driver.diffPath(c.mount.mountID), 'x'), 'utf8'), 'hi\n');

  // State as dockerd records it: exited 0, started and finished, file paths set at first start.
  const s = c.config.State;
  assert.equal(s.Running, false);
  assert.equal(s.ExitCode, 0);
  assert.equal(s.Pid, 0);
  assert.ok(Date.parse(s.StartedAt) <= Date.parse(s.FinishedAt));
  assert.equal(c.config.HasBeenStartedBefore, true);
  const dir = path.join(e.root, 'containers', c.id);
  assert.equal(c.config.HostnamePath, path.join(dir, 'hostname'));
  assert.equal(c.config.LogPath, path.join(dir, `${c.id}-json.log`));
  assert.equal(fs.readFileSync(path.join(dir, 'hostname'), 'utf8'), c.id.slice(0, 12) + '\n');
  const resolv = fs.readFileSync(path.join(dir, 'resolv.conf'));
  const { createHash } = await import('node:crypto');
  assert.equal(fs.readFileSync(path.join(dir, 'resolv.conf.hash'), 'utf8'), 'sha256:' + createHash('sha256').update(resolv).digest('hex'));
  assert.deepEqual(fs.readdirSync(dir).sort(), ['config.v2.json', 'hostconfig.json', 'hostname', 'hosts', `${c.id}-json.log`, 'resolv.conf', 'resolv.conf.hash'].sort());

  const lines = fs.readFileSync(c.config.LogPath, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, string>);
  assert.deepEqual(lines.map((l) => [l.log, l.stream]).sort(), [[c.id.slice(0, 12) + '\n', 'stdout'], ['oops\n', 'stderr']].sort());
  for (const l of lines) {
    assert.deepEqual(Object.keys(l), ['log', 'stream', 'time']);
    assert.match(l.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$/);
  }
  const logs = e.cli('logs', 'c1');
  assert.equal(logs.stdout, c.id.slice(0, 12) + '\n');
  assert.equal(logs.stderr, 'oops\n');

  const ps = e.cli('ps', '-a', '--format', '{{.Names}} {{.State}} {{.Status}}');
  assert.match(ps.stdout, /^c1 exited Exited \(0\) /);

  assert.equal(e.cli('rm', 'c1').code, 0);
  assert.deepEqual(leftovers(e), []);
});

test('exit codes pass through; a missing command is exit 127 with Docker\'s message', { skip }, async (t) => {
  const e = await runtimeEnv(t);
  let r = e.cli('run', '--rm', IMAGE, 'sh', '-c', 'exit 7');
  assert.equal(r.code, 7, r.stderr);
  r = e.cli('run', '--rm', IMAGE, 'sh', '-c', 'sh -c \'kill -KILL $$\'; echo "inner $?"; exit 3');
  assert.equal(r.stdout, 'inner 137\n');
  assert.equal(r.code, 3);

  r = e.cli('run', '--rm', IMAGE, 'nope');
  assert.equal(r.code, 127);
  assert.match(r.stderr, /exec: "nope": executable file not found in \$PATH/);
  assert.equal(r.stdout, '');

  // Without --rm the failed container stays "created", with the error in its State.
  r = e.cli('run', '--name', 'bad', IMAGE, '/nope/at/all');
  assert.equal(r.code, 127);
  assert.match(r.stderr, /no such file or directory/);
  const c = e.store.containers.get(e.store.containers.resolve('bad'));
  assert.equal(c.config.State.ExitCode, 127);
  assert.match(c.config.State.Error, /OCI runtime create failed: .*\/nope\/at\/all/);
  assert.equal(e.cli('ps', '-a', '--format', '{{.State}}').stdout, 'created\n');

  r = e.cli('run', '--rm', '-u', 'nobody-here', IMAGE, 'true');
  assert.equal(r.code, 125);
  assert.match(r.stderr, /unable to find user nobody-here: no matching entries in passwd file/);

  assert.equal(e.cli('rm', 'bad').code, 0);
  assert.deepEqual(leftovers(e), []);
});

test('users, groups, environment, working directory and hostname are Docker\'s', { skip }, async (t) => {
  const e = await runtimeEnv(t);
  const envFile = path.join(e.dir, 'env');
  fs.writeFileSync(envFile, '# comment\nFROM_FILE=1\n\nBOTH=file\n');
  const r = e.cli('run', '--rm', '-u', 'app', '-w', '/work/dir', '-h', 'box', '--env-file', envFile, '-e', 'BOTH=flag', IMAGE,
    'sh', '-c', 'id; pwd; hostname; echo "$HOSTNAME $HOME $FROM_FILE $BOTH $PATH"; ls -ld /work/dir');
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.split('\n');
  // app's supplementary groups are the groups that list it in /etc/group (runc's GetExecUser).
  assert.equal(lines[0], 'uid=1000(app) gid=1000(app) groups=29(audio),50(staff)');
  assert.equal(lines[1], '/work/dir');
  assert.equal(lines[2], 'box');
  assert.equal(lines[3], 'box /home/app 1 flag /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin');
  assert.match(lines[4], /^drwxr-xr-x\s+\d+ root\s+root\s/, 'a missing WorkingDir is created 0755, root-owned');

  const n = e.cli('run', '--rm', '-u', '1234:50', IMAGE, 'id');
  assert.equal(n.stdout, 'uid=1234 gid=50(staff)\n', 'a uid absent from passwd with an explicit group has no supplementary groups');
  assert.deepEqual(leftovers(e), []);
});

test('-v binds a host directory (rw and ro); --read-only; --network none has only lo', { skip }, async (t) => {
  const e = await runtimeEnv(t);
  const host = path.join(e.dir, 'share');
  fs.mkdirSync(host);
  fs.writeFileSync(path.join(host, 'in.txt'), 'from host\n');
  let r = e.cli('run', '--rm', '-v', `${host}:/data`, IMAGE, 'sh', '-c', 'cat /data/in.txt; echo back > /data/out.txt');
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'from host\n');
  assert.equal(fs.readFileSync(path.join(host, 'out.txt'), 'utf8'), 'back\n');

  r = e.cli('run', '--rm', '-v', `${host}:/data:ro`, IMAGE, 'sh', '-c', 'cat /data/in.txt; echo x > /data/no.txt');
  assert.notEqual(r.code, 0);
  assert.equal(r.stdout, 'from host\n');
  assert.match(r.stderr, /Read-only file system/);
  assert.equal(fs.existsSync(path.join(host, 'no.txt')), false);

  // A missing bind source is created as a directory, as dockerd does.
  const fresh = path.join(e.dir, 'fresh');
  r = e.cli('run', '--rm', '-v', `${fresh}:/fresh`, IMAGE, 'sh', '-c', 'touch /fresh/made');
  assert.equal(r.code, 0, r.stderr);
  assert.ok(fs.existsSync(path.join(fresh, 'made')));

  r = e.cli('run', '--rm', '--read-only', IMAGE, 'sh', '-c', 'touch /y');
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /Read-only file system/);

  r = e.cli('run', '--rm', '--network', 'none', IMAGE, 'ls', '/sys/class/net');
  assert.equal(r.stdout, 'lo\n');
  // --network host: the host's interfaces, name, hosts and resolv.conf (copies, as libnetwork makes).
  r = e.cli('run', '--rm', '--network', 'host', IMAGE, 'sh', '-c', 'hostname; cat /etc/resolv.conf; ls /sys/class/net | wc -l');
  assert.equal(r.code, 0, r.stderr);
  const hostIfs = fs.readdirSync('/sys/class/net').length;
  assert.equal(r.stdout, `${os.hostname()}\n${fs.readFileSync('/etc/resolv.conf', 'utf8')}${hostIfs}\n`);
  r = e.cli('run', '--rm', '--network', 'bridge', IMAGE, 'true');
  assert.equal(r.code, 125);
  assert.match(r.stderr, /no bridge network/);
  assert.deepEqual(leftovers(e), []);
});

test('20 sequential run --rm leave no mounts, processes, cgroups or directories', { skip }, async (t) => {
  const e = await runtimeEnv(t);
  for (let i = 0; i < 20; i++) {
    const r = e.cli('run', '--rm', IMAGE, 'sh', '-c', `echo ${i} > /f; cat /f`);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `${i}\n`);
  }
  assert.deepEqual(leftovers(e), []);
});

test('signals sent to an attached run reach the container; its exit code comes back', { skip }, async (t) => {
  const e = await runtimeEnv(t);
  const { spawn } = await import('node:child_process');
  const { CLI } = await import('../helpers/cli.js');
  const child = spawn(process.execPath, [CLI, '--root', e.root, 'run', '--rm', '--name', 'sig', IMAGE, 'sh', '-c',
    'trap "echo got TERM; exit 42" TERM; echo ready; while :; do sleep 0.05; done'], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.after(() => { try { child.kill('SIGKILL'); } catch { /* gone */ } });
  let stdout = '';
  child.stdout.setEncoding('utf8');
  const ready = new Promise<void>((res) => child.stdout.on('data', (s: string) => { stdout += s; if (stdout.includes('ready')) res(); }));
  const exited = new Promise<number | null>((res) => child.on('close', (code) => res(code)));
  await ready;
  child.kill('SIGTERM');
  assert.equal(await exited, 42);
  assert.equal(stdout, 'ready\ngot TERM\n');
  assert.deepEqual(leftovers(e), []);
});

test('create + start -a runs attached with the container\'s exit code; logs -f follows a running container to its end', { skip }, async (t) => {
  const e = await runtimeEnv(t);
  let r = e.cli('create', '--name', 'att', IMAGE, 'sh', '-c', 'echo attached; exit 4');
  assert.equal(r.code, 0, r.stderr);
  r = e.cli('start', '-a', 'att');
  assert.equal(r.code, 4, r.stderr);
  assert.equal(r.stdout, 'attached\n');
  // A second start -a appends to the same log.
  assert.equal(e.cli('start', '-a', 'att').code, 4);
  assert.equal(e.cli('logs', 'att').stdout, 'attached\nattached\n');

  r = e.cli('run', '-d', '--name', 'follow', IMAGE, 'sh', '-c', 'for i in 1 2 3; do echo line $i; sleep 0.2; done');
  assert.equal(r.code, 0, r.stderr);
  const t0 = Date.now();
  r = e.cli('logs', '-f', 'follow');
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'line 1\nline 2\nline 3\n');
  assert.ok(Date.now() - t0 >= 300, 'logs -f returned only when the container ended');
  assert.equal(e.cli('wait', 'follow').stdout, '0\n');
  assert.equal(e.cli('rm', 'att', 'follow').code, 0);
  assert.deepEqual(leftovers(e), []);
});

test('-t gives the container a terminal when lamina runs in one (script(1) provides it)', { skip: skip || (spawnSync('script', ['--version']).status !== 0 && 'script(1) is missing') }, async (t) => {
  const e = await runtimeEnv(t);
  const { CLI } = await import('../helpers/cli.js');
  const cmd = [process.execPath, CLI, '--root', e.root, 'run', '--rm', '-t', IMAGE, 'sh', '-c', 'tty; echo "TERM=$TERM"; exit 3'].map((a) => `'${a}'`).join(' ');
  const r = spawnSync('script', ['-qec', cmd, '/dev/null'], { encoding: 'utf8', input: '', env: { ...process.env, LAMINA_ROOT: '' } });
  assert.equal(r.status, 3, r.stdout + r.stderr);
  assert.match(r.stdout, /\/dev\/pts\/0\r?\n/);
  assert.match(r.stdout, /TERM=xterm\r?\n/);
  // Without a terminal, -t is refused clearly (lamina has no daemon to own the pty).
  const n = e.cli('run', '--rm', '-t', IMAGE, 'true');
  assert.equal(n.code, 125);
  assert.match(n.stderr, /the input device is not a TTY/);
  assert.deepEqual(leftovers(e), []);
});
