// Stand-in for src/cli/main.ts until it calls registerRegistryCommands (harness.cliEntry picks
// main.ts as soon as it does): the same --root option and error handling, registry commands only.
import { Command, CommanderError } from 'commander';
import { registerRegistryCommands } from '../../src/cli/registry.js';
import { LaminaError } from '../../src/errors.js';

const program = new Command();
program.name('lamina').option('--root <dir>', 'root of the lamina store').exitOverride();
registerRegistryCommands(program, async () => {
  const { Store, defaultRoot } = await import('../../src/store.js');
  return Store.open(program.opts().root ?? defaultRoot());
});
try {
  await program.parseAsync(process.argv);
} catch (e) {
  if (e instanceof CommanderError) process.exitCode = e.exitCode === 0 ? 0 : 125;
  else if (e instanceof LaminaError) {
    process.stderr.write(`Error: ${e.message}\n`);
    process.exitCode = 1;
  } else throw e;
}
