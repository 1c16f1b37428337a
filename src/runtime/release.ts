// What a container's run leaves to undo, in one place for the supervisor (after a normal exit)
// and for the reaper of a dead supervisor: runc's state (the container is killed if it still
// runs), the one mount reference the supervisor took, and the run directory. Callers hold the
// container's lock, so two processes never release the same run twice.
import fs from 'node:fs';
import path from 'node:path';
import type { Store } from '../store.js';
import type { Container } from '../containers/store.js';
import { unmountLayer } from '../mount/index.js';
import type { RuntimePaths } from './paths.js';
import { runcDeleteForce } from './runc.js';

/** Marker in the run directory: the supervisor holds a mount reference on the container. */
export const MOUNTED_MARKER = 'mounted';

export function releaseRuntime(store: Store, c: Container, p: RuntimePaths): void {
  if (fs.existsSync(path.join(p.runcRoot, c.id))) runcDeleteForce(p.runcRoot, c.id);
  if (fs.existsSync(path.join(p.bundle, MOUNTED_MARKER)) && store.driver.exists(c.mount.mountID)) {
    unmountLayer(store.driver.mountSpec(c.mount.mountID));
  }
  fs.rmSync(p.bundle, { recursive: true, force: true });
}
