// Stand-in for src/cli/main.ts until it calls registerCpCommands (harness.ts picks main.js as soon
// as it does): the same --root option and error handling, the cp command only.
import { Command, CommanderError } from 'commander';
import { registerCpCommands } from '../../src/cli/cp.js';
import { LaminaError } from '../../src/errors.js';

process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw e;
});
const program = new Command();
program.name('lamina').option('--root <dir>', 'root of the lamina store').enablePositionalOptions().exitOverride();
registerCpCommands(program, async () => {
  const { Store, defaultRoot } = await import('../../src/store.js');
  return Store.open(program.opts().root ?? defaultRoot());
});
try {
  await program.parseAsync(process.argv);
} catch (e) {
  if (e instanceof CommanderError) process.exitCode = e.exitCode === 0 ? 0 : 125;
  else if (e instanceof LaminaError || (e as NodeJS.ErrnoException)?.code) {
    process.stderr.write(`Error: ${(e as Error).message}\n`);
    process.exitCode = 1;
  } else throw e;
}
