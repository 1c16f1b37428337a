// Entry point of `npm run bench`: `npm run bench -- load` runs one benchmark by name, no argument
// runs them all. Benchmarks are measurements for notes, not tests: they print a table and exit 0
// unless a measured command failed.
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { largeLayer } from './lib/fixtures.js';

const here = path.dirname(fileURLToPath(import.meta.url));

const benchmarks: Record<string, { about: string; run: () => Promise<void> }> = {
  load: {
    about: 'lamina load of refapp (vs docker load) and of a large layer (vs GNU tar -x), tmpfs and ext4',
    run: async () => (await import('./load.js')).main(),
  },
  containers: {
    about: "create/rm/diff/commit as whole processes vs Docker's figures (spec §13)",
    run: async () => (await import('./containers.js')).main(),
  },
  union: {
    about: 'userspace overlay engine vs kernel overlay, fuse-overlayfs and ext4 (walk+stat, read all)',
    run: async () => (await import('./union.js')).main(),
  },
  runtime: {
    about: 'lamina run --rm vs docker run --rm (361 ms), exec, run -d/stop, runc floor (bench/runtime.ts)',
    run: async () => (await import('./runtime.js')).main(),
  },
  mount: {
    about: 'mount+umount of 12/128/200-lower containers in-process (bench/mount.ts)',
    run: async () => (await import('./mount.js')).main(),
  },
  registry: {
    about: 'lamina pull/push against a local docker-registry vs skopeo (bench/registry.ts)',
    run: async () => (await import('./registry.js')).main(),
  },
  'tar-parse': {
    about: "TarParser throughput on the large layer tar (bench/tar-parse.ts), without and with sha256",
    run: async () => {
      const { layerTar } = await largeLayer((m) => console.error(`[bench tar-parse] ${m}`));
      for (const extra of [[], ['--sha256']]) {
        const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(here, 'tar-parse.ts'), layerTar, ...extra], {
          stdio: 'inherit',
          cwd: path.dirname(here),
        });
        if (r.status !== 0) throw new Error(`bench/tar-parse.ts exited ${r.status ?? r.signal}`);
      }
    },
  },
};

async function main(): Promise<void> {
  const names = process.argv.slice(2);
  if (names.includes('--help') || names.includes('-h')) {
    console.log('usage: npm run bench [-- NAME...]\n');
    for (const [name, b] of Object.entries(benchmarks)) console.log(`  ${name.padEnd(10)} ${b.about}`);
    return;
  }
  const unknown = names.filter((n) => !(n in benchmarks));
  if (unknown.length) {
    console.error(`unknown benchmark: ${unknown.join(', ')} (known: ${Object.keys(benchmarks).join(', ')})`);
    process.exit(2);
  }
  for (const name of names.length ? names : Object.keys(benchmarks)) {
    console.log(`\n== ${name} ==`);
    await benchmarks[name].run();
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
