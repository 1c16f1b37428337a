// `lamina fsck [--repair]`: checks (and repairs) a root; see src/fsck/index.ts.
import type { Command } from 'commander';
import type { Store } from '../store.js';

type GetStore = () => Promise<Store>;

export function registerFsckCommands(program: Command, getStore: GetStore): void {
  program.command('fsck')
    .description("Check the store: layer content against diffIDs, overlay2 links and lowers, references between layerdb, overlay2, imagedb, tags and containers, leftovers and stale mounts")
    .option('--repair', 'fix what can be fixed without losing data')
    .option('--fast', 'skip re-hashing layer content')
    .action(async (opts: { repair?: boolean; fast?: boolean }) => {
      const { fsck, formatProblem } = await import('../fsck/index.js');
      const store = await getStore();
      const r = await fsck(store, {
        repair: opts.repair,
        verifyContent: !opts.fast,
        onProblem: (p) => process.stdout.write(formatProblem(p) + '\n'),
      });
      const repaired = r.problems.length - r.remaining;
      process.stdout.write(`checked ${r.layers} layers, ${r.images} images, ${r.containers} containers: ` +
        (r.problems.length === 0 ? 'no problems\n' : `${r.problems.length} problem${r.problems.length > 1 ? 's' : ''}${repaired ? `, ${repaired} repaired` : ''}, ${r.remaining} remaining\n`));
      // Thrown rather than process.exitCode: main.ts sets the exit code after the action returns.
      if (r.remaining > 0) {
        const { LaminaError } = await import('../errors.js');
        throw new LaminaError('EBADINPUT', `fsck: ${r.remaining} problem${r.remaining > 1 ? 's' : ''} not repaired in ${store.root}`);
      }
    });
}
