// Typed errors: every failure lamina reports carries a stable code; the CLI prints the message
// as one line and maps the code to an exit status.
export type ErrorCode =
  | 'EUNSAFEPATH'   // a tar entry would land or link outside the layer
  | 'EBADTAR'       // malformed, truncated or unsupported tar input
  | 'EDIGEST'       // content does not match its digest
  | 'EBADINPUT'     // malformed archive/manifest/config
  | 'ENOTFOUND'     // no such image, layer, container or file
  | 'EINUSE'        // still referenced (by a tag, a child image, a container)
  | 'ECONFLICT'     // ambiguous reference, name clash
  | 'EUNSUPPORTED'  // a feature this build does not provide
  | 'EAUTH'         // a registry refused the credentials (or wanted some)
  | 'EREGISTRY'     // a registry could not be reached or answered outside the protocol
  | 'EINVAL';       // bad arguments

export class LaminaError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = 'LaminaError';
  }
}

export function isLaminaError(e: unknown, code?: ErrorCode): e is LaminaError {
  return e instanceof LaminaError && (code === undefined || e.code === code);
}
