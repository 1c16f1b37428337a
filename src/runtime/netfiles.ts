// containers/<id>/{hostname,hosts,resolv.conf,resolv.conf.hash}: the files dockerd (and its
// libnetwork sandbox) writes at every start and bind-mounts over the init layer's empty
// placeholders. Contents as Docker 20.10 writes them (spec §6 fixture):
//  - hostname: the host name and a newline;
//  - hosts: libnetwork's default entries (no container address: lamina's networks are "none"
//    and "host"); with --network host, a copy of the host's /etc/hosts;
//  - resolv.conf: the host's resolv.conf without localhost nameservers (they cannot be reached
//    from a network namespace), Google's resolvers when none is left; with --network host, a
//    copy. resolv.conf.hash holds "sha256:<hex>" of what was written (not for a copy).
import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';

export const DEFAULT_HOSTS = [
  '127.0.0.1\tlocalhost',
  '::1\tlocalhost ip6-localhost ip6-loopback',
  'fe00::0\tip6-localnet',
  'ff00::0\tip6-mcastprefix',
  'ff02::1\tip6-allnodes',
  'ff02::2\tip6-allrouters',
].join('\n') + '\n';

const DEFAULT_DNS_V4 = ['nameserver 8.8.8.8', 'nameserver 8.8.4.4'];
const DEFAULT_DNS_V6 = ['nameserver 2001:4860:4860::8888', 'nameserver 2001:4860:4860::8844'];

// libnetwork resolvconf: `(?m)^nameserver\s+((127\.([0-9]{1,3}\.){2}[0-9]{1,3})|(::1)$)\s*\n*`.
// JS has no `$` that matches only before "\n" in multiline mode the way Go's does, but the
// expression is the same: a 127.x.y.z or ::1 (at end of line) nameserver line, its trailing
// blanks and newlines.
const LOCALHOST_NS = /^nameserver[ \t\r\f\v]+(?:127\.(?:[0-9]{1,3}\.){2}[0-9]{1,3}|::1(?=\n|$))\s*\n*/gm;
const NAMESERVER = /^\s*nameserver\s*([^\s]+)\s*$/gm;

/** libnetwork's FilterResolvDNS(content, ipv6Enabled=true), as used for a sandbox's resolv.conf. */
export function filterResolvConf(content: Buffer): Buffer {
  let text = content.toString('latin1').replace(LOCALHOST_NS, '');
  const left = [...text.matchAll(NAMESERVER)];
  if (left.length === 0) text += '\n' + [...DEFAULT_DNS_V4, ...DEFAULT_DNS_V6].join('\n');
  return Buffer.from(text, 'latin1');
}

export interface NetworkFiles {
  hostnamePath: string;
  hostsPath: string;
  resolvConfPath: string;
}

function readHost(file: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return Buffer.alloc(0);
    throw e;
  }
}

function writeFile(file: string, data: string | Buffer): void {
  fs.writeFileSync(file, data, { mode: 0o644 });
}

/** Writes the four files into the container directory `dir`; returns the three mounted paths. */
export function writeNetworkFiles(dir: string, hostname: string, networkMode: string): NetworkFiles {
  const files: NetworkFiles = {
    hostnamePath: path.join(dir, 'hostname'),
    hostsPath: path.join(dir, 'hosts'),
    resolvConfPath: path.join(dir, 'resolv.conf'),
  };
  writeFile(files.hostnamePath, hostname + '\n');
  const host = networkMode === 'host';
  writeFile(files.hostsPath, host ? readHost('/etc/hosts') : DEFAULT_HOSTS);
  if (host) {
    // libnetwork copies the host's file for the default sandbox and writes no hash.
    writeFile(files.resolvConfPath, readHost('/etc/resolv.conf'));
  } else {
    const resolv = filterResolvConf(readHost('/etc/resolv.conf'));
    writeFile(files.resolvConfPath, resolv);
    writeFile(path.join(dir, 'resolv.conf.hash'), 'sha256:' + createHash('sha256').update(resolv).digest('hex'));
  }
  return files;
}
