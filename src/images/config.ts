// Docker's container config (the image config's `config` object) in Go struct field order, as
// moby marshals it into image configs and inspect output.
/** The container config as Docker's Go struct marshals it: every field, in struct order. */
export function goContainerConfig(c: Record<string, unknown> | null | undefined): Record<string, unknown> | null {
  if (!c) return null;
  const ordered: Record<string, unknown> = {
    Hostname: c.Hostname ?? '', Domainname: c.Domainname ?? '', User: c.User ?? '',
    AttachStdin: c.AttachStdin ?? false, AttachStdout: c.AttachStdout ?? false, AttachStderr: c.AttachStderr ?? false,
  };
  if (c.ExposedPorts) ordered.ExposedPorts = c.ExposedPorts;
  Object.assign(ordered, { Tty: c.Tty ?? false, OpenStdin: c.OpenStdin ?? false, StdinOnce: c.StdinOnce ?? false, Env: c.Env ?? null, Cmd: c.Cmd ?? null });
  if (c.Healthcheck) ordered.Healthcheck = c.Healthcheck;
  if (c.ArgsEscaped) ordered.ArgsEscaped = c.ArgsEscaped;
  Object.assign(ordered, { Image: c.Image ?? '', Volumes: c.Volumes ?? null, WorkingDir: c.WorkingDir ?? '', Entrypoint: c.Entrypoint ?? null });
  if (c.NetworkDisabled) ordered.NetworkDisabled = c.NetworkDisabled;
  if (c.MacAddress) ordered.MacAddress = c.MacAddress;
  Object.assign(ordered, { OnBuild: c.OnBuild ?? null, Labels: c.Labels ?? null });
  if (c.StopSignal) ordered.StopSignal = c.StopSignal;
  if (c.StopTimeout !== undefined) ordered.StopTimeout = c.StopTimeout;
  if (c.Shell) ordered.Shell = c.Shell;
  return ordered;
}

