// Running containers on the overlay2 store through runc (an OCI runtime), as dockerd does:
//   spec.ts       OCI config.json from config.v2.json + hostconfig.json, Docker's defaults
//   user.ts       Config.User → uid/gid/groups via the container's /etc/passwd and /etc/group
//   netfiles.ts   containers/<id>/{hostname,hosts,resolv.conf,resolv.conf.hash}
//   jsonlog.ts    containers/<id>/<id>-json.log (Docker's json-file driver)
//   lifecycle.ts  one run: mount, files, runc run, logs, State, clean-up (the supervisor)
//   shim.ts       the detached supervisor process (run -d, start, restart)
//   control.ts    start detached, stop, kill, wait
//   exec.ts, top.ts
//   state.ts      locked State updates; reaping containers whose supervisor died
export { ContainerRun, StartError, type RunIO } from './lifecycle.js';
export { startDetached, stopContainer, killContainer, killForRemoval, waitStopped, isRunning, normalizeSignal } from './control.js';
export { execInContainer, type ExecOptions } from './exec.js';
export { topContainer, parsePsOutput, type ProcessList } from './top.js';
export { reconcileContainer, reconcileAll } from './state.js';
export { runtimePaths } from './paths.js';
