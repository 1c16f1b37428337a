// Registry commands: pull, push, login, logout (and `image pull` / `image push`), with output
// like the docker CLI's: per-layer progress redrawn in place on a terminal, one line per status
// change otherwise, only the reference with -q.
import type { Command } from 'commander';
import { createInterface } from 'node:readline';
import type { Store } from '../store.js';
import { LaminaError } from '../errors.js';
import { DEFAULT_DOMAIN, parseReference } from '../images/reference.js';
import { authKeyFor, normalizeAuthKey } from '../transports/registry/endpoint.js';
import type { ProgressEvent, ProgressFn } from '../transports/registry/events.js';
import { LayerProgress } from './progress.js';

const out = (s: string) => process.stdout.write(s);

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/** Renders progress events: a redrawn block on a TTY, a line per status change otherwise. */
function progressPrinter(quiet: boolean): { emit: ProgressFn; finish: () => void } {
  if (quiet) return { emit: () => {}, finish: () => {} };
  if (process.stdout.isTTY) {
    let bars: LayerProgress | undefined;
    return {
      emit: (e: ProgressEvent) => {
        if (!e.id) {
          bars?.finish();
          bars = undefined;
          out(e.status + '\n');
          return;
        }
        bars ??= new LayerProgress(process.stdout);
        const final = e.current === undefined;
        bars.update(e.id, e.status, e.current, e.total, final);
      },
      finish: () => bars?.finish(),
    };
  }
  const last = new Map<string, string>();
  return {
    emit: (e: ProgressEvent) => {
      // Docker's non-terminal output skips progress updates and repeats.
      if (e.current !== undefined) return;
      if (e.id) {
        if (last.get(e.id) === e.status) return;
        last.set(e.id, e.status);
        out(`${e.id}: ${e.status}\n`);
      } else {
        out(e.status + '\n');
      }
    },
    finish: () => {},
  };
}

interface CommonOpts {
  insecureRegistry?: string[];
  quiet?: boolean;
}

export async function pullCommand(store: Store, name: string, opts: CommonOpts & { platform?: string }): Promise<void> {
  const [{ pullImage }, { parsePlatform }] = await Promise.all([import('../transports/registry/pull.js'), import('../transports/registry/manifest.js')]);
  const ref = parseReference(name);
  if (!ref.tag && !ref.digest && !opts.quiet) out('Using default tag: latest\n');
  const printer = progressPrinter(!!opts.quiet);
  try {
    const r = await pullImage(store, name, {
      insecureRegistries: opts.insecureRegistry,
      platform: opts.platform ? parsePlatform(opts.platform) : undefined,
      onProgress: printer.emit,
    });
    printer.finish();
    out(r.canonical + '\n');
  } finally {
    printer.finish();
  }
}

export async function pushCommand(
  store: Store,
  name: string,
  opts: CommonOpts & { format?: string; compression?: string; gzipLevel?: string; upload?: string; chunkSize?: string },
): Promise<void> {
  const { pushImage } = await import('../transports/registry/push.js');
  const { fullName, withDefaultTag } = await import('../images/reference.js');
  const ref = parseReference(name);
  if (!ref.tag && !ref.digest && !opts.quiet) out('Using default tag: latest\n');
  const pick = <T extends string>(v: string | undefined, allowed: readonly T[], flag: string): T | undefined => {
    if (v === undefined) return undefined;
    if (!allowed.includes(v as T)) throw new LaminaError('EINVAL', `invalid ${flag} "${v}": expected ${allowed.join(', ')}`);
    return v as T;
  };
  const chunkSize = opts.chunkSize !== undefined ? Number(opts.chunkSize) : undefined;
  if (chunkSize !== undefined && (!Number.isSafeInteger(chunkSize) || chunkSize <= 0)) throw new LaminaError('EINVAL', `invalid --chunk-size "${opts.chunkSize}"`);
  const gzipLevel = opts.gzipLevel !== undefined ? Number(opts.gzipLevel) : undefined;
  if (gzipLevel !== undefined && !(Number.isInteger(gzipLevel) && gzipLevel >= 1 && gzipLevel <= 9)) throw new LaminaError('EINVAL', `invalid --gzip-level "${opts.gzipLevel}": expected 1 to 9`);
  const printer = progressPrinter(!!opts.quiet);
  try {
    await pushImage(store, name, {
      gzipLevel,
      insecureRegistries: opts.insecureRegistry,
      format: pick(opts.format, ['docker', 'oci'] as const, '--format'),
      compression: pick(opts.compression, ['gzip', 'zstd', 'none'] as const, '--compression'),
      upload: pick(opts.upload, ['stream', 'chunked', 'monolithic'] as const, '--upload'),
      chunkSize,
      onProgress: printer.emit,
    });
    printer.finish();
    if (opts.quiet) {
      const r = withDefaultTag(ref);
      out(`${fullName(r)}:${r.tag}\n`);
    }
  } finally {
    printer.finish();
  }
}

/** The registry domain a login/logout argument names (a host, host:port or URL); Docker Hub by default. */
export function serverDomain(server: string | undefined): string {
  if (!server) return DEFAULT_DOMAIN;
  return normalizeAuthKey(server);
}

async function readLine(prompt: string, hidden: boolean): Promise<string> {
  const rl = createInterface({ input: process.stdin, output: process.stdout, terminal: true });
  if (hidden) {
    // Echo nothing while the password is typed.
    (rl as unknown as { _writeToOutput: (s: string) => void })._writeToOutput = (s: string) => {
      if (s.includes(prompt)) process.stdout.write(prompt);
    };
  }
  try {
    return await new Promise<string>((resolve) => rl.question(prompt, resolve));
  } finally {
    rl.close();
    if (hidden) out('\n');
  }
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
}

export async function loginCommand(server: string | undefined, opts: { username?: string; password?: string; passwordStdin?: boolean; insecureRegistry?: string[] }): Promise<void> {
  const { verifyLogin } = await import('../transports/registry/login.js');
  const { storeCredentials } = await import('../transports/registry/credentials.js');
  const domain = serverDomain(server);
  let username = opts.username;
  let password = opts.password;
  if (opts.passwordStdin) {
    if (password !== undefined) throw new LaminaError('EINVAL', '--password and --password-stdin are mutually exclusive');
    if (!username) throw new LaminaError('EINVAL', 'Must provide --username with --password-stdin');
    password = await readStdin();
  } else if (password !== undefined) {
    process.stderr.write('WARNING! Using --password via the CLI is insecure. Use --password-stdin.\n');
  }
  if (!username) {
    if (!process.stdin.isTTY) throw new LaminaError('EINVAL', 'Cannot perform an interactive login from a non TTY device');
    username = (await readLine('Username: ', false)).trim();
  }
  if (!username) throw new LaminaError('EINVAL', 'Error: Non-null Username Required');
  if (password === undefined) {
    if (!process.stdin.isTTY) throw new LaminaError('EINVAL', 'Cannot perform an interactive login from a non TTY device');
    password = await readLine('Password: ', true);
  }
  if (!password) throw new LaminaError('EINVAL', 'Error: Password Required');
  await verifyLogin(domain, { username, password }, { insecureRegistries: opts.insecureRegistry });
  const file = storeCredentials(domain, username, password);
  process.stderr.write(`WARNING! Your password will be stored unencrypted in ${file}.\n`);
  out('Login Succeeded\n');
}

export async function logoutCommand(server: string | undefined): Promise<void> {
  const { eraseCredentials } = await import('../transports/registry/credentials.js');
  const domain = serverDomain(server);
  if (!eraseCredentials(domain)) {
    out(`Not logged in to ${authKeyFor(domain)}\n`);
    return;
  }
  out(`Removing login credentials for ${authKeyFor(domain)}\n`);
}

/** Adds pull, push, login and logout (and `image pull` / `image push` when the image group exists). */
export function registerRegistryCommands(program: Command, getStore: () => Promise<Store>): void {
  const addPull = (cmd: Command) =>
    cmd
      .description('Download an image from a registry')
      .argument('<name>', 'NAME[:TAG|@DIGEST]')
      .option('-q, --quiet', 'suppress verbose output')
      .option('--platform <platform>', 'set platform if server is multi-platform capable (default: this machine\'s)')
      .option('--insecure-registry <host>', 'use plain HTTP for this registry (repeatable; localhost and 127.0.0.0/8 always are)', collect, [])
      .action(async (name: string, opts) => pullCommand(await getStore(), name, opts));
  const addPush = (cmd: Command) =>
    cmd
      .description('Upload an image to a registry')
      .argument('<name>', 'NAME[:TAG]')
      .option('-q, --quiet', 'suppress verbose output')
      .option('--format <format>', 'manifest format: docker (schema 2, the default) or oci')
      .option('--compression <algorithm>', 'compression for uploaded layers: gzip (default), zstd or none')
      .option('--gzip-level <n>', 'gzip level 1 (fastest, the default) to 9 (smallest)')
      .option('--upload <mode>', 'blob upload: stream (default), chunked or monolithic')
      .option('--chunk-size <bytes>', 'PATCH size for --upload chunked (default 16 MiB)')
      .option('--insecure-registry <host>', 'use plain HTTP for this registry (repeatable)', collect, [])
      .action(async (name: string, opts) => pushCommand(await getStore(), name, opts));
  addPull(program.command('pull'));
  addPush(program.command('push'));
  const image = program.commands.find((c) => c.name() === 'image');
  if (image) {
    addPull(image.command('pull'));
    addPush(image.command('push'));
  }
  program
    .command('login')
    .description('Log in to a registry (credentials go to lamina\'s config.json)')
    .argument('[server]', 'registry host[:port]; Docker Hub when omitted')
    .option('-u, --username <username>', 'username')
    .option('-p, --password <password>', 'password')
    .option('--password-stdin', 'take the password from stdin')
    .option('--insecure-registry <host>', 'use plain HTTP for this registry (repeatable)', collect, [])
    .action(async (server: string | undefined, opts) => loginCommand(server, opts));
  program
    .command('logout')
    .description('Log out from a registry')
    .argument('[server]', 'registry host[:port]; Docker Hub when omitted')
    .action(async (server: string | undefined) => logoutCommand(server));
}
