// uid → user name and gid → group name, for the uname/gname fields of layer tars. dockerd fills
// them from the host's user database (Go's os/user), so the diffID of a committed layer depends
// on the host's /etc/passwd and /etc/group; lamina does the same lookups.
import fs from 'node:fs';
import path from 'node:path';

/** Name lookups used by the layer writer; '' when an id has no name (Go then leaves the field empty). */
export interface IdNames {
  uname(uid: number): string;
  gname(gid: number): string;
}

interface ParsedDb {
  key: string; // file identity and mtime, to notice edits
  byId: Map<number, string>;
}

const cache = new Map<string, ParsedDb>();

/**
 * Names from `<root>/etc/passwd` and `<root>/etc/group` (root "/" = this host). The files are
 * parsed once and re-read only when they change, so calling this per layer costs two stats.
 * A missing file means no names.
 */
export function hostIdNames(root = '/'): IdNames {
  const users = loadDb(path.join(root, 'etc/passwd'), 7);
  const groups = loadDb(path.join(root, 'etc/group'), 4);
  return {
    uname: (uid) => users.get(uid) ?? '',
    gname: (gid) => groups.get(gid) ?? '',
  };
}

/**
 * Fixed names first (for example the names a reference host had), `fallback` for the rest.
 * Useful to reproduce a diffID computed on a machine whose user database differs from this one.
 */
export function idNamesWith(
  users: ReadonlyMap<number, string>,
  groups: ReadonlyMap<number, string>,
  fallback: IdNames = hostIdNames(),
): IdNames {
  return {
    uname: (uid) => users.get(uid) ?? fallback.uname(uid),
    gname: (gid) => groups.get(gid) ?? fallback.gname(gid),
  };
}

function loadDb(file: string, minFields: number): Map<number, string> {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch {
    return new Map();
  }
  const key = `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}`;
  const hit = cache.get(file);
  if (hit && hit.key === key) return hit.byId;
  const byId = parseColonFile(fs.readFileSync(file, 'utf8'), minFields);
  cache.set(file, { key, byId });
  return byId;
}

/**
 * passwd (`name:x:uid:gid:gecos:home:shell`) or group (`name:x:gid:members`): id in field 3.
 * The first line naming an id wins, as in a getpwuid/getgrgid scan of the files; comments,
 * NIS `+`/`-` lines and malformed lines are skipped, as Go's os/user does.
 */
function parseColonFile(text: string, minFields: number): Map<number, string> {
  const byId = new Map<number, string>();
  for (const line of text.split('\n')) {
    if (line === '' || line[0] === '#' || line[0] === '+' || line[0] === '-') continue;
    const parts = line.split(':');
    if (parts.length < minFields || parts[0] === '') continue;
    if (!/^[0-9]+$/.test(parts[2])) continue;
    const id = Number(parts[2]);
    if (!byId.has(id)) byId.set(id, parts[0]);
  }
  return byId;
}
