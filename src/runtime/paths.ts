// Where the runtime keeps what only lives while containers run. Like dockerd's exec root
// (/run/docker) it is on tmpfs as root, so a reboot clears it together with the containers:
//
//   <run>/runc/<root hash>/             runc's --root state dir (private: /run/runc is untouched)
//   <run>/containers/<root hash>/<id>/  one running container: the bundle (config.json), runc's
//                                       pid file and log, the supervisor's pid. It exists exactly
//                                       while the supervisor holds the container's mount reference.
//
// <run> is /run/lamina as root (LAMINA_RUN_DIR overrides, as for the mount counts). Nothing is
// added under <root>/containers/<id>/, which keeps Docker's exact file set.
import path from 'node:path';
import { createHash } from 'node:crypto';
import { mountRunDir } from '../mount/refcount.js';

/** The run directory shared with the mount reference counts (<run>/mounts). */
export function runBase(): string {
  return path.dirname(mountRunDir());
}

/** A short stable name for a store root, so two roots never share runc state or bundles. */
export function rootHash(root: string): string {
  return createHash('sha256').update(path.resolve(root)).digest('hex').slice(0, 16);
}

export interface RuntimePaths {
  /** runc --root. */
  runcRoot: string;
  /** The container's bundle / run directory. */
  bundle: string;
  /** runc writes the container's init pid here once the process runs. */
  pidFile: string;
  /** runc's own log (JSON lines), read for the error when a start fails. */
  runcLog: string;
  /** "<pid> <start time>" of the process supervising the container. */
  supervisorFile: string;
}

export function runtimePaths(root: string, id: string): RuntimePaths {
  const h = rootHash(root);
  const base = runBase();
  const bundle = path.join(base, 'containers', h, id);
  return {
    runcRoot: path.join(base, 'runc', h),
    bundle,
    pidFile: path.join(bundle, 'init.pid'),
    runcLog: path.join(bundle, 'runc.log'),
    supervisorFile: path.join(bundle, 'supervisor'),
  };
}

/**
 * The container's cgroup, relative to each hierarchy's root (v1 controllers and the v2 hybrid
 * tree): one flat directory per container, named after the store and the container. runc
 * removes a container's own cgroup at exit but not its parents, and a shared parent could not
 * be removed without racing a container that is starting.
 */
export function cgroupsPath(root: string, id: string): string {
  return `/lamina-${rootHash(root)}-${id}`;
}
