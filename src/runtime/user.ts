// Config.User ("name", "uid", "name:group", "uid:gid") to the numeric uid, gid and
// supplementary groups of the container process, looked up in the container's own /etc/passwd
// and /etc/group, by the rules of runc's libcontainer/user.GetExecUser that dockerd uses:
//  - a name must exist in passwd; a number may be absent (then gid 0, no groups);
//  - without an explicit group, the primary gid comes from passwd and every group listing the
//    user's name becomes a supplementary group;
//  - an explicit group replaces the gid and brings no supplementary groups.
import { LaminaError } from '../errors.js';
import { readInRoot } from './rootfs.js';

export interface ExecUser {
  uid: number;
  gid: number;
  additionalGids: number[];
  home: string;
}

interface PasswdEntry { name: string; uid: number; gid: number; home: string }
interface GroupEntry { name: string; gid: number; members: string[] }

const isNumeric = (s: string) => /^\d+$/.test(s);
const MAX_ID = 2 ** 31 - 1;

export function parsePasswd(text: string): PasswdEntry[] {
  const out: PasswdEntry[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line) continue;
    const f = line.split(':');
    out.push({ name: f[0], uid: Number.parseInt(f[2] ?? '', 10), gid: Number.parseInt(f[3] ?? '', 10), home: f[5] ?? '' });
  }
  return out;
}

export function parseGroup(text: string): GroupEntry[] {
  const out: GroupEntry[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line) continue;
    const f = line.split(':');
    out.push({ name: f[0], gid: Number.parseInt(f[2] ?? '', 10), members: (f[3] ?? '').split(',').filter(Boolean) });
  }
  return out;
}

/** Resolves `spec` against passwd and group file contents (undefined = file absent). */
export function resolveUser(spec: string, passwd: string | undefined, group: string | undefined): ExecUser {
  const [userArg, groupArg = ''] = spec.split(':', 2);
  const user: ExecUser = { uid: 0, gid: 0, additionalGids: [], home: '/' };
  const users = parsePasswd(passwd ?? '');
  const match = users.find((u) => (userArg === '' ? u.uid === 0 : isNumeric(userArg) ? u.uid === Number(userArg) : u.name === userArg));
  let matchedName = '';
  if (match) {
    matchedName = match.name;
    user.uid = match.uid;
    user.gid = match.gid;
    user.home = match.home;
  } else if (userArg !== '') {
    if (!isNumeric(userArg)) throw new LaminaError('ENOTFOUND', `unable to find user ${userArg}: no matching entries in passwd file`);
    user.uid = Number(userArg);
    if (user.uid > MAX_ID) throw new LaminaError('EINVAL', `uid ${userArg} is out of range`);
  }
  if (groupArg !== '' || matchedName !== '') {
    const groups = parseGroup(group ?? '').filter((g) =>
      groupArg === '' ? g.members.includes(matchedName) : isNumeric(groupArg) ? g.gid === Number(groupArg) : g.name === groupArg);
    if (groupArg !== '') {
      if (groups.length) user.gid = groups[0].gid;
      else if (!isNumeric(groupArg)) throw new LaminaError('ENOTFOUND', `unable to find group ${groupArg}: no matching entries in group file`);
      else {
        user.gid = Number(groupArg);
        if (user.gid > MAX_ID) throw new LaminaError('EINVAL', `gid ${groupArg} is out of range`);
      }
    } else {
      user.additionalGids = groups.map((g) => g.gid);
    }
  }
  return user;
}

/** Resolves `spec` with the container's /etc/passwd and /etc/group (read inside `rootfs`). */
export function resolveUserInRoot(rootfs: string, spec: string): ExecUser {
  // A purely numeric uid:gid needs no lookup of the group file, but passwd still gives HOME.
  const passwd = readInRoot(rootfs, '/etc/passwd')?.toString('utf8');
  const group = readInRoot(rootfs, '/etc/group')?.toString('utf8');
  return resolveUser(spec, passwd, group);
}
