// Errors the engine raises for the union view, shaped like Node's fs errors (code, errno,
// syscall, path) so callers handle a UnionFs exactly as they handle `fs`.
import { constants as osConstants } from 'node:os';
import { SysError } from '../sys/index.js';

export type Errno =
  | 'ENOENT' | 'ENOTDIR' | 'EISDIR' | 'EEXIST' | 'ENOTEMPTY' | 'EXDEV' | 'EINVAL' | 'ELOOP'
  | 'EROFS' | 'EPERM' | 'EACCES' | 'EBUSY' | 'ENODATA' | 'EOPNOTSUPP' | 'ENAMETOOLONG';

export function fsError(code: Errno, syscall: string, unionPath: string): SysError {
  return new SysError(syscall, osConstants.errno[code], unionPath);
}

export function errCode(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | undefined)?.code;
}
