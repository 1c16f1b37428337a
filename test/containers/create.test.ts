// Containers on the overlay2 store: the -init and rw layers, layerdb/mounts and the
// container record as Docker lays them out (spec §3.3, §5.6, §6).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Store } from '../../src/store.js';
import { expectedImages, fixtureSave } from '../helpers/expected.js';
import { lamina } from '../helpers/cli.js';

const read = (p: string) => fs.readFileSync(p, 'utf8');
const modeOf = (p: string) => (fs.lstatSync(p).mode & 0o7777).toString(8).padStart(4, '0');

function listTree(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string, rel: string) => {
    for (const n of fs.readdirSync(d).sort()) {
      const p = path.join(d, n);
      const r = rel ? `${rel}/${n}` : n;
      const st = fs.lstatSync(p);
      const kind = st.isDirectory() ? 'd' : st.isSymbolicLink() ? 'l' : 'f';
      out.push(`${kind} ${modeOf(p)} ${r}${st.isSymbolicLink() ? ' -> ' + fs.readlinkSync(p) : ''}${st.isFile() ? ' ' + st.size : ''}`);
      if (st.isDirectory()) walk(p, r);
    }
  };
  walk(dir, '');
  return out;
}

test('create lays out the init layer, the rw layer, layerdb/mounts and the record as Docker does', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lamina-ctr-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const root = path.join(dir, 'root');
  assert.equal(lamina(root, 'load', '-i', fixtureSave('refapp')).code, 0);
  const app = expectedImages().find((i) => i.RepoTags[0] === 'refapp:1')!;
  const r = lamina(root, 'create', '--name', 'refc1', 'refapp:1', 'sleep', '3600');
  assert.equal(r.code, 0, r.stderr);
  const id = r.stdout.trim();
  assert.match(id, /^[0-9a-f]{64}$/);

  const store = Store.open(root);
  const home = store.driver.home;
  const mounts = path.join(root, 'image/overlay2/layerdb/mounts', id);
  const mountID = read(path.join(mounts, 'mount-id'));
  assert.match(mountID, /^[0-9a-f]{64}$/);
  assert.notEqual(mountID, id, 'the mount id is its own random id');
  assert.equal(read(path.join(mounts, 'init-id')), `${mountID}-init`);
  assert.equal(read(path.join(mounts, 'parent')), app.chainIDs[app.chainIDs.length - 1]);
  for (const f of ['init-id', 'mount-id', 'parent']) assert.equal(modeOf(path.join(mounts, f)), '0644');

  // The init layer: Docker's files, empty and 0755 (spec §3.3).
  const initDir = path.join(home, `${mountID}-init`);
  assert.deepEqual(listTree(path.join(initDir, 'diff')), [
    'f 0755 .dockerenv 0', 'd 0755 dev', 'f 0755 dev/console 0', 'd 0755 dev/pts', 'd 0755 dev/shm',
    'd 0755 etc', 'f 0755 etc/hostname 0', 'f 0755 etc/hosts 0', 'l 0777 etc/mtab -> /proc/mounts', 'f 0755 etc/resolv.conf 0',
  ]);
  const topCache = store.layers.get(app.chainIDs[app.chainIDs.length - 1]).cacheID;
  const topDir = path.join(home, topCache);
  const topLink = read(path.join(topDir, 'link'));
  assert.equal(read(path.join(initDir, 'lower')), `l/${topLink}:${read(path.join(topDir, 'lower'))}`);
  assert.ok(fs.existsSync(path.join(topDir, 'committed')), 'the image top layer is now committed');
  assert.ok(fs.existsSync(path.join(initDir, 'committed')), 'the init layer has a child');
  // The rw layer sits on the init layer.
  const rwDir = path.join(home, mountID);
  const initLink = read(path.join(initDir, 'link'));
  assert.equal(read(path.join(rwDir, 'lower')), `l/${initLink}:${read(path.join(initDir, 'lower'))}`);
  assert.deepEqual(fs.readdirSync(rwDir).sort(), ['diff', 'link', 'lower', 'work']);
  assert.deepEqual(fs.readdirSync(path.join(rwDir, 'diff')), []);
  for (const d of [initDir, rwDir]) assert.equal(modeOf(d), '0710');
  for (const d of [initDir, rwDir]) assert.equal(fs.readlinkSync(path.join(home, 'l', read(path.join(d, 'link')))), `../${path.basename(d)}/diff`);

  // The record: config.v2.json (0600) and hostconfig.json (0644) with Docker's fields.
  const cdir = path.join(root, 'containers', id);
  assert.equal(modeOf(cdir), '0710');
  assert.equal(modeOf(path.join(cdir, 'config.v2.json')), '0600');
  assert.equal(modeOf(path.join(cdir, 'hostconfig.json')), '0644');
  const cfg = JSON.parse(read(path.join(cdir, 'config.v2.json')));
  assert.deepEqual(Object.keys(cfg).sort(), ['AppArmorProfile', 'Args', 'Config', 'ConfigReferences', 'Created', 'Driver', 'HasBeenManuallyStopped', 'HasBeenStartedBefore', 'HostnamePath', 'HostsPath', 'ID', 'Image', 'LocalLogCacheMeta', 'LogPath', 'Managed', 'MountLabel', 'MountPoints', 'Name', 'NetworkSettings', 'NoNewPrivileges', 'OS', 'Path', 'ProcessLabel', 'ResolvConfPath', 'RestartCount', 'SeccompProfile', 'SecretReferences', 'ShmPath', 'State', 'StreamConfig']);
  assert.equal(cfg.Driver, 'overlay2');
  assert.equal(cfg.Image, app.imageID);
  assert.equal(cfg.Name, '/refc1');
  assert.equal(cfg.Path, 'sleep');
  assert.deepEqual(cfg.Args, ['3600']);
  assert.equal(cfg.Config.Hostname, id.slice(0, 12));
  assert.deepEqual(cfg.Config.Env, ['PATH=/bin:/usr/bin', 'APP_MODE=ref']);
  assert.equal(cfg.Config.WorkingDir, '/work/dir');
  assert.equal(cfg.Config.Image, 'refapp:1');
  assert.equal('GraphDriver' in cfg, false, 'config.v2.json holds no storage ids');
  const hc = JSON.parse(read(path.join(cdir, 'hostconfig.json')));
  assert.equal(hc.Binds, null);
  assert.equal(hc.ShmSize, 67108864);
  assert.equal(hc.Runtime, 'runc');
  assert.equal('StorageOpt' in hc, false);

  // inspect shows GraphDriver with resolved diff paths (spec §6).
  const [info] = JSON.parse(lamina(root, 'inspect', 'refc1').stdout);
  assert.equal(info.Id, id);
  assert.equal(info.State.Status, 'created');
  const gd = info.GraphDriver.Data;
  assert.equal(gd.UpperDir, path.join(rwDir, 'diff'));
  assert.equal(gd.WorkDir, path.join(rwDir, 'work'));
  assert.equal(gd.MergedDir, path.join(rwDir, 'merged'));
  const lowers = gd.LowerDir.split(':');
  assert.equal(lowers.length, app.diffIDs.length + 1);
  assert.equal(lowers[0], path.join(initDir, 'diff'));
  assert.equal(lowers[1], path.join(topDir, 'diff'));

  // ps -a, rename, and the image cannot go while the container uses it.
  let ps = lamina(root, 'ps', '-a');
  assert.match(ps.stdout.split('\n')[1], new RegExp(`^${id.slice(0, 12)}\\s+refapp:1\\s+"sleep 3600"\\s+.+ago\\s+Created\\s+refc1$`));
  assert.equal(lamina(root, 'ps').stdout.split('\n').filter(Boolean).length, 1, 'ps without -a lists running containers only');
  assert.equal(lamina(root, 'rename', 'refc1', 'renamed').code, 0);
  ps = lamina(root, 'ps', '-a', '--format', '{{.Names}}');
  assert.equal(ps.stdout, 'renamed\n');
  const rmi = lamina(root, 'rmi', 'refapp:1');
  assert.equal(rmi.code, 1);
  assert.match(rmi.stderr, /container [0-9a-f]{12} is using its referenced image/);
  assert.equal(lamina(root, 'create', '--name', 'renamed', 'refapp:1').code, 1, 'names are unique');

  // rm removes everything the container had; a second rm says so.
  const rm = lamina(root, 'rm', 'renamed');
  assert.equal(rm.code, 0, rm.stderr);
  assert.equal(rm.stdout, 'renamed\n');
  assert.equal(fs.existsSync(rwDir), false);
  assert.equal(fs.existsSync(initDir), false);
  assert.equal(fs.existsSync(mounts), false);
  assert.equal(fs.existsSync(cdir), false);
  assert.deepEqual(fs.readdirSync(path.join(home, 'l')).length, app.diffIDs.length);
  const again = lamina(root, 'rm', 'renamed');
  assert.equal(again.code, 1);
  assert.equal(again.stderr, 'Error: No such container: renamed\n');
  assert.equal(lamina(root, 'rmi', 'refapp:1').code, 0);
  assert.deepEqual(fs.readdirSync(home), ['l']);
});
