// Commands that run containers: run, start, stop, kill, restart, exec, logs, wait, top. This
// module is imported at start-up, so it only wires commands; the runtime is loaded when one runs.
//
// Exit codes follow the docker CLI: `run` exits with the container's code, 125 when lamina
// itself fails, 126 when the command cannot be invoked, 127 when it is not found.
import fs from 'node:fs';
import type { Command } from 'commander';
import type { Store } from '../store.js';
import type { CreateFlags } from './containers.js';

type GetStore = () => Promise<Store>;

const collect = (v: string, prev: string[] = []) => [...prev, v];
const out = (s: string) => process.stdout.write(s);
const err = (s: string) => process.stderr.write(s);

/** Signals an attached CLI passes on to the container (docker's sig-proxy). */
const PROXIED: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2', 'SIGWINCH'];

/**
 * Ends the command with `code`. Output to pipes, files and terminals is synchronous on Linux,
 * so nothing written is lost.
 */
function exitWith(code: number): void {
  if (code !== 0) process.exit(code);
}

const message = (e: unknown) => (e instanceof Error ? e.message : String(e));

async function runtime() {
  return import('../runtime/index.js');
}

/** docker's --env-file: KEY=VALUE lines; a bare KEY takes this process's value (or is dropped). */
export function readEnvFile(file: string): string[] {
  const env: string[] = [];
  for (const raw of fs.readFileSync(file, 'utf8').split('\n')) {
    const line = raw.replace(/^\s+/, '');
    if (!line || line.startsWith('#')) continue;
    const eq = line.indexOf('=');
    if (eq < 0) {
      const key = line.trimEnd();
      if (/\s/.test(key)) throw new Error(`variable '${key}' contains whitespaces`);
      if (process.env[key] !== undefined) env.push(`${key}=${process.env[key]}`);
      continue;
    }
    env.push(line);
  }
  return env;
}

interface RunFlags extends CreateFlags { detach?: boolean; envFile?: string[] }

/** docker run's exit code for a failed start. */
function startFailureCode(e: unknown): number {
  const msg = message(e);
  if (/executable file not found|no such file or directory/i.test(msg)) return 127;
  if (/permission denied/i.test(msg)) return 126;
  return 125;
}

/**
 * Runs the container attached in this process (the supervisor is lamina itself): output goes
 * to the terminal and the json-file log; signals are passed on. Resolves with the exit code.
 */
async function runAttached(store: Store, id: string, interactive: boolean): Promise<number> {
  // Only the supervisor's module: `run` is the command whose start-up time is measured.
  const { ContainerRun } = await import('../runtime/lifecycle.js');
  const tty = !!(store.containers.get(id).config.Config as { Tty?: boolean }).Tty;
  const run = await ContainerRun.start(store, id, {
    // With -t the terminal is runc's console (it must be on stdin), so input reaches it even without -i.
    stdin: interactive || tty ? 'inherit' : 'ignore',
    stdout: (b) => process.stdout.write(b),
    stderr: (b) => process.stderr.write(b),
    forwardSignals: PROXIED,
  });
  return run.wait();
}

async function runCommand(store: Store, image: string, cmd: string[], f: RunFlags): Promise<void> {
  if (f.network !== undefined && !['none', 'host', 'default'].includes(f.network)) {
    const why = f.network === 'bridge' ? 'lamina has no bridge network (use --network none or host)' : `network ${f.network} not found`;
    err(`lamina: Error: ${why}.\nSee 'lamina run --help'.\n`);
    return exitWith(125);
  }
  if (f.detach && f.tty) {
    err(`lamina: Error: a detached container cannot have a terminal (-t): lamina has no daemon to hold it.\nSee 'lamina run --help'.\n`);
    return exitWith(125);
  }
  let id: string;
  try {
    const env = [...(f.envFile ?? []).flatMap(readEnvFile), ...(f.env ?? [])];
    const { createContainer } = await import('./containers.js');
    id = createContainer(store, image, cmd, { ...f, env }).id;
  } catch (e) {
    err(`lamina: Error: ${message(e)}.\nSee 'lamina run --help'.\n`);
    return exitWith(125);
  }
  try {
    if (f.detach) {
      await (await import('../runtime/control.js')).startDetached(store, id);
      out(id + '\n');
      return;
    }
    exitWith(await runAttached(store, id, !!f.interactive));
  } catch (e) {
    err(`lamina: Error: ${message(e)}.\n`);
    exitWith(startFailureCode(e));
  }
}

/** Resolves a name or ID, or prints docker's error and returns undefined. */
function resolve(store: Store, name: string): string | undefined {
  try {
    return store.containers.resolve(name);
  } catch (e) {
    err(`Error: ${message(e)}\n`);
    return undefined;
  }
}

async function startCommand(store: Store, names: string[], f: { attach?: boolean; interactive?: boolean }): Promise<void> {
  const rt = await runtime();
  if (f.attach || f.interactive) {
    if (names.length > 1) { err('Error: you cannot start and attach multiple containers at once\n'); return exitWith(1); }
    const id = resolve(store, names[0]);
    if (!id) return exitWith(1);
    try {
      if (await rt.isRunning(store, id)) {
        err(`Error: container ${names[0]} is already running; lamina cannot attach to a running container\n`);
        return exitWith(1);
      }
      return exitWith(await runAttached(store, id, !!f.interactive));
    } catch (e) {
      err(`Error: ${message(e)}\nError: failed to start containers: ${names[0]}\n`);
      return exitWith(1);
    }
  }
  const failed: string[] = [];
  for (const n of names) {
    const id = resolve(store, n);
    if (!id) { failed.push(n); continue; }
    try {
      if (!(await rt.isRunning(store, id))) await rt.startDetached(store, id);
      out(n + '\n');
    } catch (e) {
      err(`Error: ${message(e)}\n`);
      failed.push(n);
    }
  }
  if (failed.length) { err(`Error: failed to start containers: ${failed.join(', ')}\n`); exitWith(1); }
}

/**
 * Applies `act` to each named container (in parallel for stop, as docker does; in order
 * otherwise), printing the name on success and one error line on failure; exits 1 if any failed.
 */
async function eachContainer(store: Store, names: string[], parallel: boolean, act: (id: string, name: string) => Promise<void>): Promise<void> {
  let rc = 0;
  const one = async (n: string) => {
    const id = resolve(store, n);
    if (!id) { rc = 1; return; }
    try {
      await act(id, n);
      out(n + '\n');
    } catch (e) {
      err(`Error: ${message(e)}\n`);
      rc = 1;
    }
  };
  if (parallel) await Promise.all(names.map(one));
  else for (const n of names) await one(n);
  exitWith(rc);
}

async function stopCommand(store: Store, names: string[], f: { time?: string }): Promise<void> {
  const rt = await runtime();
  await eachContainer(store, names, true, (id) => rt.stopContainer(store, id, f.time === undefined ? undefined : Number(f.time)));
}

async function killCommand(store: Store, names: string[], f: { signal?: string }): Promise<void> {
  const rt = await runtime();
  await eachContainer(store, names, false, (id, n) => rt.killContainer(store, id, f.signal ?? 'SIGKILL', n));
}

async function restartCommand(store: Store, names: string[], f: { time?: string }): Promise<void> {
  const rt = await runtime();
  await eachContainer(store, names, false, async (id) => {
    await rt.stopContainer(store, id, f.time === undefined ? undefined : Number(f.time));
    await rt.startDetached(store, id);
  });
}

interface ExecFlags { interactive?: boolean; tty?: boolean; env?: string[]; envFile?: string[]; workdir?: string; user?: string; detach?: boolean }

async function execCommand(store: Store, name: string, cmd: string[], f: ExecFlags): Promise<void> {
  const id = resolve(store, name);
  if (!id) return exitWith(1);
  const rt = await runtime();
  try {
    const env = [...(f.envFile ?? []).flatMap(readEnvFile), ...(f.env ?? [])];
    const code = await rt.execInContainer(store, id, {
      cmd, env, workdir: f.workdir, user: f.user, tty: f.tty, interactive: f.interactive, forwardSignals: PROXIED,
    });
    exitWith(code);
  } catch (e) {
    err(`Error: ${message(e)}\n`);
    exitWith(e instanceof rt.StartError ? e.exitCode : 1);
  }
}

async function logsCommand(store: Store, name: string, f: { follow?: boolean; tail?: string; timestamps?: boolean }): Promise<void> {
  const id = resolve(store, name);
  if (!id) return exitWith(1);
  const { parseLogLines, fixedNanoTime } = await import('../runtime/jsonlog.js');
  const c = store.containers.get(id);
  const file = c.config.LogPath || `${store.containers.dir}/${id}/${id}-json.log`;
  const tail = f.tail === undefined || f.tail === 'all' ? Infinity : Number(f.tail);
  if (!Number.isFinite(tail) && f.tail !== undefined && f.tail !== 'all') { err(`Error: invalid value for --tail: ${f.tail}\n`); return exitWith(1); }
  const emit = (entries: Array<{ log: string; stream: string; time: string }>) => {
    for (const e of entries) {
      const line = (f.timestamps ? fixedNanoTime(e.time) + ' ' : '') + e.log;
      (e.stream === 'stderr' ? process.stderr : process.stdout).write(line);
    }
  };
  let offset = 0;
  let rest = '';
  const readNew = (): Array<{ log: string; stream: string; time: string }> => {
    let fd: number;
    try { fd = fs.openSync(file, 'r'); } catch { return []; }
    try {
      const size = fs.fstatSync(fd).size;
      if (size <= offset) return [];
      const buf = Buffer.alloc(size - offset);
      const n = fs.readSync(fd, buf, 0, buf.length, offset);
      offset += n;
      const r = parseLogLines(rest + buf.toString('utf8', 0, n));
      rest = r.rest;
      return r.entries;
    } finally {
      fs.closeSync(fd);
    }
  };
  const first = readNew();
  emit(tail === Infinity ? first : tail <= 0 ? [] : first.slice(-tail));
  if (!f.follow) return;
  const rt = await runtime();
  for (;;) {
    const running = await rt.isRunning(store, id).catch(() => false);
    emit(readNew());
    if (!running) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  emit(readNew());
}

async function waitCommand(store: Store, names: string[]): Promise<void> {
  const rt = await runtime();
  let rc = 0;
  for (const n of names) {
    const id = resolve(store, n);
    if (!id) { rc = 1; continue; }
    const code = await rt.waitStopped(store, id);
    out(`${code ?? 0}\n`);
  }
  exitWith(rc);
}

/** docker top's table: text/tabwriter with minwidth 20, padding 3. */
function topTable(rows: string[][]): string {
  const cols = Math.max(...rows.map((r) => r.length));
  const widths: number[] = [];
  for (let c = 0; c < cols - 1; c++) widths.push(Math.max(20, ...rows.map((r) => (r[c] ?? '').length + 3)));
  return rows.map((r) => r.map((cell, c) => (c < r.length - 1 ? cell.padEnd(widths[c]) : cell)).join('')).join('\n') + '\n';
}

async function topCommand(store: Store, name: string, psArgs: string[]): Promise<void> {
  const id = resolve(store, name);
  if (!id) return exitWith(1);
  try {
    const list = await (await runtime()).topContainer(store, id, psArgs.length ? psArgs.join(' ').split(' ') : ['-ef']);
    out(topTable([list.titles, ...list.processes]));
  } catch (e) {
    err(`Error: ${message(e)}\n`);
    exitWith(1);
  }
}

/** Adds run/start/stop/kill/restart/exec/logs/wait/top to `program` and to `program container`. */
export function registerRunCommands(program: Command, getStore: GetStore): void {
  const container = program.commands.find((c) => c.name() === 'container')
    ?? program.command('container').description('Manage containers').enablePositionalOptions();
  for (const parent of [program, container]) {
    parent.command('run')
      .description('Run a command in a new container')
      .argument('<image>').argument('[command...]')
      .option('-d, --detach', 'run container in background and print container ID')
      .option('--rm', 'automatically remove the container when it exits')
      .option('--name <name>', 'assign a name to the container')
      .option('--entrypoint <cmd>', 'overwrite the default ENTRYPOINT of the image')
      .option('-e, --env <KEY=VALUE>', 'set environment variables', collect)
      .option('--env-file <file>', 'read in a file of environment variables', collect)
      .option('-w, --workdir <dir>', 'working directory inside the container')
      .option('-u, --user <user>', 'username or UID (format: <name|uid>[:<group|gid>])')
      .option('-h, --hostname <name>', 'container host name')
      .option('--network <mode>', 'network mode: none (default: an empty network namespace) or host')
      .option('-v, --volume <HOST:CTR[:ro]>', 'bind mount a host directory', collect)
      .option('--read-only', "mount the container's root filesystem as read only")
      .option('-t, --tty', 'allocate a pseudo-TTY')
      .option('-i, --interactive', 'keep STDIN open')
      .option('-l, --label <KEY=VALUE>', 'set metadata on a container', collect)
      .passThroughOptions()
      .action(async (image: string, cmd: string[], f: RunFlags) => runCommand(await getStore(), image, cmd, f));
    parent.command('start')
      .description('Start one or more stopped containers')
      .argument('<container...>')
      .option('-a, --attach', "attach STDOUT/STDERR and forward signals")
      .option('-i, --interactive', "attach container's STDIN")
      .action(async (names: string[], f) => startCommand(await getStore(), names, f));
    parent.command('stop')
      .description('Stop one or more running containers')
      .argument('<container...>')
      .option('-t, --time <seconds>', 'seconds to wait for stop before killing it (default 10)')
      .action(async (names: string[], f) => stopCommand(await getStore(), names, f));
    parent.command('kill')
      .description('Kill one or more running containers')
      .argument('<container...>')
      .option('-s, --signal <signal>', 'signal to send to the container', 'KILL')
      .action(async (names: string[], f) => killCommand(await getStore(), names, f));
    parent.command('restart')
      .description('Restart one or more containers')
      .argument('<container...>')
      .option('-t, --time <seconds>', 'seconds to wait for stop before killing the container (default 10)')
      .action(async (names: string[], f) => restartCommand(await getStore(), names, f));
    parent.command('exec')
      .description('Run a command in a running container')
      .argument('<container>').argument('<command...>')
      .option('-i, --interactive', 'keep STDIN open')
      .option('-t, --tty', 'allocate a pseudo-TTY')
      .option('-e, --env <KEY=VALUE>', 'set environment variables', collect)
      .option('--env-file <file>', 'read in a file of environment variables', collect)
      .option('-w, --workdir <dir>', 'working directory inside the container')
      .option('-u, --user <user>', 'username or UID (format: <name|uid>[:<group|gid>])')
      .passThroughOptions()
      .action(async (name: string, cmd: string[], f: ExecFlags) => execCommand(await getStore(), name, cmd, f));
    parent.command('logs')
      .description('Fetch the logs of a container')
      .argument('<container>')
      .option('-f, --follow', 'follow log output')
      .option('-n, --tail <lines>', 'number of lines to show from the end of the logs (default "all")')
      .option('-t, --timestamps', 'show timestamps')
      .action(async (name: string, f) => logsCommand(await getStore(), name, f));
    parent.command('wait')
      .description('Block until one or more containers stop, then print their exit codes')
      .argument('<container...>')
      .action(async (names: string[]) => waitCommand(await getStore(), names));
    parent.command('top')
      .description('Display the running processes of a container')
      .argument('<container>').argument('[ps-options...]')
      .passThroughOptions()
      .action(async (name: string, psArgs: string[]) => topCommand(await getStore(), name, psArgs));
  }
}
