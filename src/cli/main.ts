#!/usr/bin/env node
// lamina's command line. Each command group lives in its own module, loaded only when that
// command runs, so start-up stays close to Node's own.
import { Command, CommanderError } from 'commander';

// A closed pipe (`lamina images | head -1`) ends the command quietly, as with other CLIs.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw e;
});

const program = new Command();
program
  .name('lamina')
  .description("Docker's overlay2 storage, daemonless: load, inspect, save and remove images in Docker's exact on-disk layout")
  .option('--root <dir>', 'root of the lamina store (default: $LAMINA_ROOT, /var/lib/lamina as root, else $XDG_DATA_HOME/lamina)')
  .version('0.1.0', '-v, --version')
  .enablePositionalOptions()
  .showHelpAfterError(false)
  .exitOverride();

async function store() {
  const { Store, defaultRoot } = await import('../store.js');
  return Store.open(program.opts().root ?? defaultRoot());
}

async function images() {
  return import('./images.js');
}

async function containers() {
  return import('./containers.js');
}

let exitCode = 0;
const collect = (v: string, prev: string[] = []) => [...prev, v];

function addLoad(cmd: Command): Command {
  return cmd
    .description('Load an image from a tar archive (docker-archive, OCI layout dir or tar; plain, gzip) or STDIN')
    .option('-i, --input <file>', 'read from tar archive file, instead of STDIN')
    .option('-q, --quiet', 'suppress the load output')
    .action(async (opts) => (await images()).loadCommand(await store(), opts));
}
function addImages(cmd: Command): Command {
  return cmd
    .description('List images')
    .argument('[repository]', 'REPOSITORY[:TAG]')
    .option('-a, --all', 'show all images (default hides intermediate images)')
    .option('-q, --quiet', 'only show image IDs')
    .option('--digests', 'show digests')
    .option('--no-trunc', "don't truncate output")
    .option('--format <format>', "'json', or a Go template such as '{{.Repository}}:{{.Tag}}'")
    .action(async (repo, opts) => (await images()).imagesCommand(await store(), { ...opts, noTrunc: opts.trunc === false, repo }));
}
function addInspect(cmd: Command): Command {
  return cmd
    .description('Display detailed information on one or more images')
    .argument('<image...>')
    .option('-f, --format <format>', 'format the output using a Go template')
    .action(async (refs, opts) => { exitCode = (await images()).imageInspectCommand(await store(), refs, opts); });
}
function addHistory(cmd: Command): Command {
  return cmd
    .description('Show the history of an image')
    .argument('<image>')
    .option('--no-trunc', "don't truncate output")
    .option('-q, --quiet', 'only show image IDs')
    .option('-H, --human [bool]', 'print sizes and dates in human readable format', true)
    .option('--format <format>', 'format the output using a Go template')
    .action(async (ref, opts) => (await images()).historyCommand(await store(), ref, { ...opts, noTrunc: opts.trunc === false, human: opts.human !== 'false' }));
}
function addTag(cmd: Command): Command {
  return cmd
    .description('Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE')
    .argument('<source>').argument('<target>')
    .action(async (s, t) => (await images()).tagCommand(await store(), s, t));
}
function addSave(cmd: Command): Command {
  return cmd
    .description('Save one or more images to a tar archive (streamed to STDOUT by default)')
    .argument('<image...>')
    .option('-o, --output <file>', 'write to a file, instead of STDOUT')
    .action(async (refs, opts) => (await images()).saveCommand(await store(), refs, opts));
}
function addRmi(cmd: Command): Command {
  return cmd
    .description('Remove one or more images')
    .argument('<image...>')
    .option('-f, --force', 'force removal of the image')
    .action(async (refs, opts) => { exitCode = (await images()).rmiCommand(await store(), refs, opts); });
}

addLoad(program.command('load'));
addImages(program.command('images'));
addHistory(program.command('history'));
addTag(program.command('tag'));
addSave(program.command('save'));
addRmi(program.command('rmi'));
program
  .command('inspect')
  .description('Return low-level information on containers or images')
  .argument('<name...>')
  .option('-f, --format <format>', 'format the output using a Go template')
  .option('--type <type>', 'return JSON for the specified type (container or image)')
  .action(async (names, opts) => { exitCode = (await containers()).inspectCommand(await store(), names, opts); });

function addCreate(cmd: Command): Command {
  return cmd
    .description('Create a new container')
    .argument('<image>').argument('[command...]')
    .option('--name <name>', 'assign a name to the container')
    .option('--entrypoint <cmd>', 'overwrite the default ENTRYPOINT of the image')
    .option('-e, --env <KEY=VALUE>', 'set environment variables', collect)
    .option('-w, --workdir <dir>', 'working directory inside the container')
    .option('-u, --user <user>', 'username or UID')
    .option('-h, --hostname <name>', 'container host name')
    .option('--network <mode>', 'network mode (none, host)')
    .option('-v, --volume <HOST:CTR[:ro]>', 'bind mount a volume', collect)
    .option('--read-only', "mount the container's root filesystem as read only")
    .option('-t, --tty', 'allocate a pseudo-TTY')
    .option('-i, --interactive', 'keep STDIN open')
    .option('-l, --label <KEY=VALUE>', 'set metadata on a container', collect)
    .passThroughOptions()
    .action(async (image, cmd, opts) => (await containers()).createCommand(await store(), image, cmd, opts));
}
function addPs(cmd: Command): Command {
  return cmd
    .description('List containers')
    .option('-a, --all', 'show all containers (default shows just running)')
    .option('-q, --quiet', 'only display container IDs')
    .option('-s, --size', 'display total file sizes')
    .option('-l, --latest', 'show the latest created container')
    .option('--no-trunc', "don't truncate output")
    .option('--format <format>', "'json', or a Go template")
    .action(async (opts) => (await containers()).psCommand(await store(), { ...opts, noTrunc: opts.trunc === false }));
}
function addRename(cmd: Command): Command {
  return cmd.description('Rename a container').argument('<container>').argument('<new-name>')
    .action(async (a, b) => (await containers()).renameCommand(await store(), a, b));
}
function addRm(cmd: Command): Command {
  return cmd.description('Remove one or more containers').argument('<container...>')
    .option('-f, --force', 'force the removal of a running container')
    .action(async (names, opts) => { exitCode = await (await containers()).rmCommand(await store(), names, opts); });
}

function addMount(cmd: Command): Command {
  return cmd.description("Mount a container's root filesystem and print its merged path").argument('[container...]')
    .option('--backend <name>', 'kernel, fuse-overlayfs, userspace or auto', 'auto')
    .action(async (names, opts) => (await containers()).mountCommand(await store(), names, opts));
}
function addUmount(cmd: Command): Command {
  return cmd.description("Unmount a container's root filesystem (the last reference removes merged/)").argument('<container...>')
    .action(async (names) => { exitCode = await (await containers()).umountCommand(await store(), names); });
}

addCreate(program.command('create'));
addMount(program.command('mount'));
addUmount(program.command('umount').alias('unmount'));
addPs(program.command('ps'));
addRename(program.command('rename'));
addRm(program.command('rm'));
const container = program.command('container').description('Manage containers').enablePositionalOptions();
addCreate(container.command('create'));
addPs(container.command('ls').alias('list').alias('ps'));
addRename(container.command('rename'));
addRm(container.command('rm').alias('remove'));
addMount(container.command('mount'));
addUmount(container.command('umount').alias('unmount'));
container.command('inspect').description('Display detailed information on one or more containers').argument('<container...>')
  .option('-f, --format <format>', 'format the output using a Go template')
  .action(async (names, opts) => { exitCode = (await containers()).inspectCommand(await store(), names, { ...opts, type: 'container' }); });

const image = program.command('image').description('Manage images');
addLoad(image.command('load'));
addImages(image.command('ls').alias('list'));
addInspect(image.command('inspect'));
addHistory(image.command('history'));
addTag(image.command('tag'));
addSave(image.command('save'));
addRmi(image.command('rm').alias('remove'));

// The command groups other modules define are loaded only when this command line may use them:
// a command defined above runs without them (loading them costs ~15 ms of every start-up);
// help, the container and image groups (which they extend) and every other command load them.
const OWN_COMMANDS = new Set(['load', 'images', 'history', 'tag', 'save', 'rmi', 'inspect', 'create', 'mount', 'umount', 'unmount', 'ps', 'rename', 'rm', 'demo']);
if (!OWN_COMMANDS.has(commandWord(process.argv.slice(2)) ?? '')) {
  const [changes, registry, fsCmds, cp, run, fsck] = await Promise.all([
    import('./changes.js'), import('./registry.js'), import('./fs.js'), import('./cp.js'), import('./run.js'), import('./fsck.js'),
  ]);
  changes.registerChangeCommands(program, store);
  registry.registerRegistryCommands(program, store);
  fsCmds.registerFsCommands(program, store);
  cp.registerCpCommands(program, store);
  run.registerRunCommands(program, store);
  fsck.registerFsckCommands(program, store);
}

/** The command the arguments name (after the global options), or undefined (e.g. for --help). */
function commandWord(args: string[]): string | undefined {
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '--root') i++; // its value
    else if (a === '-h' || a === '--help') return undefined;
    else if (!a.startsWith('-')) return a;
  }
  return undefined;
}

program
  .command('demo')
  .description("Build a small sample image from files lamina ships, load it and tour what landed on disk")
  .action(async () => (await import('./demo.js')).demoCommand(await store()));

async function main(): Promise<void> {
  try {
    await program.parseAsync(process.argv);
    // A command either returns its status through exitCode or sets process.exitCode itself.
    if (exitCode !== 0) process.exitCode = exitCode;
  } catch (e) {
    if (e instanceof CommanderError) {
      // --help and --version exit 0; usage errors exit 125 like the docker CLI.
      process.exitCode = e.exitCode === 0 ? 0 : 125;
      return;
    }
    const { LaminaError } = await import('../errors.js');
    if (e instanceof LaminaError) {
      process.stderr.write(`Error: ${e.message}\n`);
      process.exitCode = 1;
      return;
    }
    const err = e as NodeJS.ErrnoException;
    if (err && typeof err.code === 'string' && err.message) {
      process.stderr.write(`Error: ${err.message}\n`);
      process.exitCode = 1;
      return;
    }
    throw e;
  }
}

await main();
