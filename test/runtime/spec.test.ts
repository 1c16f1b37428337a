// The runtime's pieces on their own (user lookup, binds, env, resolv.conf filter, json-file log
// lines, ps parsing) and Docker's defaults as the kernel applies them inside a real container:
// capabilities (decoded with util-linux setpriv's numbering), mounts, masked and read-only
// paths, namespaces.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { resolveUser } from '../../src/runtime/user.js';
import { parseBind, containerEnv, capabilities, DEFAULT_CAPABILITIES, buildSpec } from '../../src/runtime/spec.js';
import { filterResolvConf, DEFAULT_HOSTS } from '../../src/runtime/netfiles.js';
import { JsonLogWriter, parseLogLines, fixedNanoTime } from '../../src/runtime/jsonlog.js';
import { parsePsOutput } from '../../src/runtime/top.js';
import { runcError } from '../../src/runtime/runc.js';
import { IMAGE, leftovers, runtimeEnv, skipReason } from './harness.js';

const PASSWD = 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\ndup:x:1000:7::/dup:/bin/sh\n';
const GROUP = 'root:x:0:\nwheel:x:10:app,other\napp:x:1000:\nstaff:x:50:app\n';

test('resolveUser follows runc GetExecUser', () => {
  assert.deepEqual(resolveUser('', PASSWD, GROUP), { uid: 0, gid: 0, additionalGids: [], home: '/root' });
  assert.deepEqual(resolveUser('app', PASSWD, GROUP), { uid: 1000, gid: 1000, additionalGids: [10, 50], home: '/home/app' });
  // A number matches the first passwd entry with that uid; its name brings the groups.
  assert.deepEqual(resolveUser('1000', PASSWD, GROUP), { uid: 1000, gid: 1000, additionalGids: [10, 50], home: '/home/app' });
  assert.deepEqual(resolveUser('4242', PASSWD, GROUP), { uid: 4242, gid: 0, additionalGids: [], home: '/' });
  // An explicit group replaces the gid and drops supplementary groups.
  assert.deepEqual(resolveUser('app:staff', PASSWD, GROUP), { uid: 1000, gid: 50, additionalGids: [], home: '/home/app' });
  assert.deepEqual(resolveUser('app:77', PASSWD, GROUP), { uid: 1000, gid: 77, additionalGids: [], home: '/home/app' });
  assert.throws(() => resolveUser('ghost', PASSWD, GROUP), /unable to find user ghost: no matching entries in passwd file/);
  assert.throws(() => resolveUser('app:ghosts', PASSWD, GROUP), /unable to find group ghosts: no matching entries in group file/);
  // No /etc/passwd at all: numbers still work.
  assert.deepEqual(resolveUser('5:6', undefined, undefined), { uid: 5, gid: 6, additionalGids: [], home: '/' });
});

test('parseBind, env and capabilities follow the docker CLI and moby', () => {
  assert.deepEqual(parseBind('/h:/c'), { source: '/h', destination: '/c', readonly: false, propagation: 'rprivate' });
  assert.deepEqual(parseBind('/h:/c/:ro,rshared'), { source: '/h', destination: '/c', readonly: true, propagation: 'rshared' });
  assert.throws(() => parseBind('vol:/c'), /named volumes are not supported/);
  assert.throws(() => parseBind('/h:rel'), /destination must be an absolute path/);
  assert.throws(() => parseBind('/h:/c:bogus'), /invalid mode: bogus/);
  assert.deepEqual(containerEnv('h1', true, ['PATH=/bin', 'A=1', 'TERM']), ['PATH=/bin', 'HOSTNAME=h1', 'A=1']);
  assert.deepEqual(capabilities(['net_admin'], ['CAP_KILL', 'chown']), [...DEFAULT_CAPABILITIES.filter((c) => c !== 'CAP_KILL' && c !== 'CAP_CHOWN'), 'CAP_NET_ADMIN']);
  assert.deepEqual(capabilities(null, ['ALL']), []);
});

test('buildSpec: mounts sorted parents first, binds replace defaults, read-only rootfs', () => {
  const base = {
    cgroupsPath: '/lamina-test', rootfs: '/r', args: ['sh'], env: [], workingDir: '', hostname: 'h', tty: false,
    user: { uid: 0, gid: 0, additionalGids: [], home: '/' }, networkMode: 'none', readonlyRootfs: true, shmSize: 1024,
    binds: [parseBind('/x:/data/deep'), parseBind('/y:/data'), parseBind('/z:/etc/hosts:ro')],
    networkFiles: { hostnamePath: '/c/hostname', hostsPath: '/c/hosts', resolvConfPath: '/c/resolv.conf' },
  };
  const s = buildSpec(base);
  const dests = s.mounts.map((m) => m.destination);
  assert.deepEqual(dests.slice(0, 7), ['/proc', '/dev', '/dev/pts', '/sys', '/sys/fs/cgroup', '/dev/mqueue', '/dev/shm']);
  assert.ok(dests.indexOf('/data') < dests.indexOf('/data/deep'));
  assert.equal(dests.filter((d) => d === '/etc/hosts').length, 1);
  assert.deepEqual(s.mounts.find((m) => m.destination === '/etc/hosts'), { destination: '/etc/hosts', type: 'bind', source: '/z', options: ['rbind', 'ro', 'rprivate'] });
  assert.deepEqual(s.mounts.find((m) => m.destination === '/etc/hostname')!.options, ['rbind', 'ro', 'rprivate'], 'network files follow a read-only rootfs');
  assert.ok(s.mounts.find((m) => m.destination === '/sys/fs/cgroup')!.options!.includes('ro'));
  assert.deepEqual(s.mounts.find((m) => m.destination === '/dev/shm')!.options, ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=1024']);
  assert.deepEqual(s.root, { path: '/r', readonly: true });
  const host = buildSpec({ ...base, networkMode: 'host', readonlyRootfs: false, binds: [] });
  assert.deepEqual((host.linux.namespaces as Array<{ type: string }>).map((n) => n.type), ['mount', 'uts', 'pid', 'ipc']);
});

test('filterResolvConf drops localhost nameservers like libnetwork, falling back to public resolvers', () => {
  const kept = filterResolvConf(Buffer.from('search example.org\nnameserver 127.0.0.53\nnameserver 10.0.0.2\noptions edns0\n')).toString();
  assert.equal(kept, 'search example.org\nnameserver 10.0.0.2\noptions edns0\n');
  const none = filterResolvConf(Buffer.from('nameserver 127.0.0.1\nnameserver ::1\n')).toString();
  assert.equal(none, '\nnameserver 8.8.8.8\nnameserver 8.8.4.4\nnameserver 2001:4860:4860::8888\nnameserver 2001:4860:4860::8844');
  assert.match(DEFAULT_HOSTS, /^127\.0\.0\.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n/);
});

test('json-file log lines: one object per line, Go escaping, 16 KiB pieces, trailing partial line', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lamina-log-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'x-json.log');
  const w = new JsonLogWriter(file);
  w.write('stdout', Buffer.from('a <b> & "c"\nsec'));
  w.write('stderr', Buffer.from([0xff, 0x0a]));
  w.write('stdout', Buffer.from('ond\n' + 'z'.repeat(20000)));
  w.write('stdout', Buffer.from('tail'));
  w.close();
  const text = fs.readFileSync(file, 'utf8');
  const lines = text.trimEnd().split('\n');
  assert.match(lines[0], /^\{"log":"a \\u003cb\\u003e \\u0026 \\"c\\"\\n","stream":"stdout","time":"[^"]+"\}$/, 'HTML characters escaped as Go does');
  assert.match(lines[1], /^\{"log":"\\ufffd\\n","stream":"stderr","time":/, 'invalid UTF-8 becomes U+FFFD');
  const { entries, rest } = parseLogLines(text);
  assert.equal(rest, '');
  assert.deepEqual(entries.map((e) => [e.stream, e.log.length]), [['stdout', 12], ['stderr', 2], ['stdout', 7], ['stdout', 16384], ['stdout', 20000 - 16384 + 4]]);
  assert.equal(entries[2].log, 'second\n');
  assert.equal(fs.statSync(file).mode & 0o777, 0o640);
  assert.equal(fixedNanoTime('2026-01-02T03:04:05.12Z'), '2026-01-02T03:04:05.120000000Z');
  assert.equal(fixedNanoTime('2026-01-02T03:04:05Z'), '2026-01-02T03:04:05.000000000Z');
});

test('parsePsOutput keeps the container\'s lines and their threads, last column whole', () => {
  const ps = 'UID PID PPID C STIME TTY TIME CMD\nroot 1 0 0 10:00 ? 00:00:01 /sbin/init splash\nroot 42 1 0 10:01 ? 00:00:00 sh -c sleep 1\nroot - - 0 10:01 ? 00:00:00 -\nroot 43 1 0 10:01 ? 00:00:00 other\n';
  assert.deepEqual(parsePsOutput(ps, [42]), {
    titles: ['UID', 'PID', 'PPID', 'C', 'STIME', 'TTY', 'TIME', 'CMD'],
    processes: [['root', '42', '1', '0', '10:01', '?', '00:00:00', 'sh -c sleep 1'], ['root', '-', '-', '0', '10:01', '?', '00:00:00', '-']],
  });
});

test('runcError reads runc\'s JSON log and logrus text', () => {
  assert.equal(runcError('{"level":"warning","msg":"w","time":"t"}\n{"level":"error","msg":"runc run failed: x \\"y\\"","time":"t"}\n'), 'runc run failed: x "y"');
  assert.equal(runcError('time="2026-01-01T00:00:00Z" level=error msg="runc run failed: exec: \\"nope\\": not found"\n'), 'runc run failed: exec: "nope": not found');
});

test('inside a container: Docker\'s capabilities, mounts, masked and read-only paths, namespaces', { skip: skipReason }, async (t) => {
  const e = await runtimeEnv(t);
  const script = [
    'grep -E "^Cap(Eff|Bnd):" /proc/self/status',
    'cat /proc/mounts',
    'for f in /proc/keys /proc/timer_list /proc/kcore; do [ -e $f ] && echo "masked $f $(wc -c < $f)"; done',
    'echo 1 > /proc/sys/kernel/domainname 2>/dev/null && echo sys=rw || echo sys=ro',
    'ls /proc/acpi | wc -l | sed "s/^/acpi=/"',
    'echo "pid1=$(cat /proc/1/cmdline | tr "\\0" " ")"',
  ].join('; ');
  const r = e.cli('run', '--rm', IMAGE, 'sh', '-c', script);
  assert.equal(r.code, 0, r.stderr);
  const out = r.stdout;
  // The capability set, decoded with setpriv's list (its order is the kernel's numbering).
  const names = spawnSync('setpriv', ['--list-caps'], { encoding: 'utf8' }).stdout.trim().split('\n');
  let mask = 0n;
  for (const c of DEFAULT_CAPABILITIES) {
    const n = names.indexOf(c.slice(4).toLowerCase());
    assert.ok(n >= 0, c);
    mask |= 1n << BigInt(n);
  }
  const hex = mask.toString(16).padStart(16, '0');
  assert.match(out, new RegExp(`^CapEff:\\s+${hex}$`, 'm'));
  assert.match(out, new RegExp(`^CapBnd:\\s+${hex}$`, 'm'));
  const mounts = new Map(out.split('\n').filter((l) => /^\S+ \/\S* \S+ \S+ \d \d$/.test(l)).map((l) => { const f = l.split(' '); return [f[1], f] as const; }));
  assert.equal(mounts.get('/')![2], 'overlay', 'the rootfs is the merged overlay');
  assert.equal(mounts.get('/dev')![2], 'tmpfs');
  assert.match(mounts.get('/dev/shm')![3], /size=65536k/);
  assert.match(mounts.get('/sys')![3], /^ro,/);
  assert.equal(mounts.get('/dev/mqueue')![2], 'mqueue');
  assert.equal(mounts.get('/dev/pts')![2], 'devpts');
  for (const f of ['/etc/hostname', '/etc/hosts', '/etc/resolv.conf']) assert.ok(mounts.has(f), `${f} is bind-mounted`);
  // Masked files (those this kernel has) read as /dev/null.
  const maskedFiles = ['/proc/keys', '/proc/timer_list', '/proc/kcore'].filter((f) => fs.existsSync(f));
  assert.ok(maskedFiles.length > 0);
  for (const f of maskedFiles) assert.match(out, new RegExp(`^masked ${f} 0$`, 'm'), `${f} is masked with /dev/null`);
  assert.match(out, /^sys=ro$/m, '/proc/sys is read-only');
  assert.match(out, /^acpi=0$/m, '/proc/acpi is masked with an empty tmpfs');
  assert.match(out, /^pid1=sh -c /m, 'the command is pid 1 of its own pid namespace');
  assert.deepEqual(leftovers(e), []);
});
