// The detached supervisor of one container (lamina's containerd-shim): started by `run -d`,
// `start` and `restart` in its own session, it runs the container through ContainerRun — holding
// its stdio and writing the json-file log — reports the start on fd 3 to the lamina command that
// spawned it, then waits for the exit, records it and cleans up, long after that command ended.
//
//   node shim.js <root> <container id>      fd 3: one line, "started <pid>" or "failed <code> <json message>"
import fs from 'node:fs';
import { Store } from '../store.js';
import { ContainerRun, StartError } from './lifecycle.js';

const STATUS_FD = 3;

function report(line: string): void {
  try {
    fs.writeSync(STATUS_FD, line + '\n');
    fs.closeSync(STATUS_FD);
  } catch {
    // the lamina command is gone; the container runs on regardless
  }
}

async function main(): Promise<void> {
  const [root, id] = process.argv.slice(2);
  // No terminal signals reach a new session, but a stray SIGHUP/SIGINT must not orphan the run;
  // SIGTERM is passed on to the container, as containerd-shim does.
  process.on('SIGHUP', () => {});
  process.on('SIGINT', () => {});
  let run: ContainerRun;
  try {
    const store = Store.open(root);
    run = await ContainerRun.start(store, id, { forwardSignals: ['SIGTERM'] });
  } catch (e) {
    const code = e instanceof StartError ? e.exitCode : 128;
    report(`failed ${code} ${JSON.stringify((e as Error).message)}`);
    process.exitCode = 1;
    return;
  }
  report(`started ${run.pid}`);
  await run.wait();
  process.exit(0);
}

await main();
