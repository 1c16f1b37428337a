// `lamina cp` (and `lamina container cp`): docker cp's command line. The work is in
// containers/cp.ts, loaded only when the command runs.
import type { Command } from 'commander';
import type { Store } from '../store.js';

type GetStore = () => Promise<Store>;

export interface CpCliOptions {
  archive?: boolean;
  followLink?: boolean;
}

/** Registers `cp` at the top level and under `container`. */
export function registerCpCommands(program: Command, getStore: GetStore): void {
  const container = program.commands.find((c) => c.name() === 'container')
    ?? program.command('container').description('Manage containers').enablePositionalOptions();
  for (const parent of [program, container]) {
    parent.command('cp')
      .description('Copy files/folders between a container and the local filesystem')
      .usage('[OPTIONS] CONTAINER:SRC_PATH DEST_PATH|-\n       lamina cp [OPTIONS] SRC_PATH|- CONTAINER:DEST_PATH')
      .argument('<src>', 'CONTAINER:SRC_PATH, a local path, or - for a tar stream on STDIN')
      .argument('<dest>', 'CONTAINER:DEST_PATH, a local path, or - for a tar stream on STDOUT')
      .option('-a, --archive', 'archive mode (copy all uid/gid information)')
      .option('-L, --follow-link', 'always follow symbol link in SRC_PATH')
      .addHelpText('after', [
        '',
        'Copied into a container, files belong to root:root (with -a: their owners on the host);',
        'copied out, to you (with -a: their owners in the container).',
        'A mounted or running container is written through its mount; otherwise lamina writes the',
        "container's upper directory itself with its userspace overlay engine (no mount needed).",
      ].join('\n'))
      .action(async (src: string, dest: string, opts: CpCliOptions) => cpCommand(await getStore(), src, dest, opts));
  }
}

export async function cpCommand(store: Store, src: string, dest: string, opts: CpCliOptions): Promise<void> {
  const { splitCpArg, copyFromContainer, copyToContainer } = await import('../containers/cp.js');
  const { LaminaError } = await import('../errors.js');
  const s = splitCpArg(src);
  const d = splitCpArg(dest);
  if (s.container !== undefined && d.container !== undefined) throw new LaminaError('EINVAL', 'copying between containers is not supported');
  if (s.container === undefined && d.container === undefined) throw new LaminaError('EINVAL', 'must specify at least one container source');
  const copy = { archive: opts.archive, followLink: opts.followLink };
  if (s.container !== undefined) {
    const to = d.path === '-' ? { tar: process.stdout } : { hostPath: d.path };
    await copyFromContainer(store, s.container, s.path, to, copy);
    return;
  }
  if (s.path === '-' && process.stdin.isTTY) throw new LaminaError('EINVAL', 'cp - expects a tar stream on STDIN, not a terminal');
  const from = s.path === '-' ? { tar: process.stdin } : { hostPath: s.path };
  await copyToContainer(store, d.container!, d.path, from, copy);
}
