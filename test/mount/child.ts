// A second lamina process for the cross-process tests: `node --import tsx child.ts OP SPEC_JSON [N]`
// with OP mount | unmount | cycle (N mount+unmount pairs). Prints the last result as JSON, or
// {"error": code, "message": …} and exits 2 when lamina reports an error.
import { mountLayer, unmountLayer } from '../../src/mount/index.js';
import { LaminaError } from '../../src/errors.js';
import type { MountSpec } from '../../src/overlay2/driver.js';

const [op, specJson, n] = process.argv.slice(2);
const spec = JSON.parse(specJson) as MountSpec;
let out: unknown;
try {
  if (op === 'mount') out = mountLayer(spec);
  else if (op === 'unmount') out = unmountLayer(spec);
  else if (op === 'cycle') {
    for (let i = 0; i < Number(n); i++) {
      mountLayer(spec);
      out = unmountLayer(spec);
    }
  } else throw new Error(`unknown op ${op}`);
} catch (e) {
  if (!(e instanceof LaminaError)) throw e;
  process.stdout.write(JSON.stringify({ error: e.code, message: e.message }) + '\n');
  process.exit(2);
}
process.stdout.write(JSON.stringify(out) + '\n');
