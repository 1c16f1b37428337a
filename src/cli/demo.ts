// `lamina demo`: builds the sample image, loads it into the store and walks through what
// landed on disk, in the order a reader meets overlay2's ideas.
import fs from 'node:fs';
import path from 'node:path';
import type { Store } from '../store.js';
import { buildSampleArchive } from '../build/sample.js';
import { chainIDs, hex } from '../digest/index.js';
import * as sys from '../sys/index.js';
import { inspectImage } from './images.js';
import { humanSize, shortID } from './format.js';

const bold = (s: string) => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);
const dim = (s: string) => (process.stdout.isTTY ? `\x1b[2m${s}\x1b[0m` : s);
const say = (s = '') => process.stdout.write(s + '\n');
const section = (n: number, title: string) => { say(); say(bold(`${n}. ${title}`)); };

/** One line per entry of a diff/ dir, marking what overlayfs gives meaning to. */
function listDiff(diff: string, rel = ''): string[] {
  const lines: string[] = [];
  for (const name of fs.readdirSync(path.join(diff, rel)).sort()) {
    const r = rel ? `${rel}/${name}` : name;
    const p = path.join(diff, r);
    const st = fs.lstatSync(p);
    const mode = (st.mode & 0o7777).toString(8).padStart(4, '0');
    if (st.isDirectory()) {
      const opaque = sys.lgetxattr(p, 'trusted.overlay.opaque')?.toString() === 'y';
      lines.push(`d ${mode}  ${r}/` + (opaque ? dim('   <- opaque (trusted.overlay.opaque=y): hides the lower layers\' contents') : ''));
      lines.push(...listDiff(diff, r));
    } else if (st.isSymbolicLink()) {
      lines.push(`l ${mode}  ${r} -> ${fs.readlinkSync(p)}`);
    } else if (st.isCharacterDevice() && st.rdev === 0) {
      lines.push(`c ${mode}  ${r}` + dim('   <- whiteout (char device 0:0): deletes the lower file'));
    } else {
      lines.push(`f ${mode}  ${r}  (${st.size} bytes${st.nlink > 1 ? `, ${st.nlink} links, inode ${st.ino}` : ''})`);
    }
  }
  return lines;
}

export async function demoCommand(store: Store): Promise<void> {
  say(bold('lamina demo') + ` — store root: ${store.root}`);
  const work = store.scratchDir('demo');
  let repoTag: string;
  try {
    const archive = path.join(work, 'lamina-demo.tar');
    ({ repoTag } = await buildSampleArchive(work, archive));
    say(`Built the sample image ${repoTag} from demo/ as a docker-archive (no Docker, no network).`);
    const loaded = await store.load(archive, (e) => {
      if (e.kind === 'layer-done') say(`  layer ${e.index + 1}: ${shortID(e.diffID)} ${e.existed ? 'already in the store, reused' : 'extracted'}`);
    });
    say(`Loaded image: ${loaded[0].refs.join(', ')}  (ID ${loaded[0].id})`);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }

  const id = store.resolveImage(repoTag);
  const img = store.image(id);
  const diffIDs = img.config.rootfs.diff_ids;
  const chains = chainIDs(diffIDs);
  const home = store.driver.home;

  section(1, 'Content addresses: diffID -> chainID -> image ID');
  say('diffID = sha256 of a layer\'s uncompressed tar; chainID(0) = diffID(0), chainID(n) = sha256("<chainID(n-1)> <diffID(n)>").');
  diffIDs.forEach((d, i) => say(`  layer ${i + 1}: diffID ${shortID(d)}…  ->  chainID ${shortID(chains[i])}…`));
  say(`  image ID = sha256 of the config bytes = ${id}`);

  section(2, `Layer directories under ${home}`);
  say('Each layer is a random 64-hex cache-id dir; its files live in diff/. link holds its short name,');
  say('lower lists the layers below it (nearest first), committed marks a layer that has children.');
  for (const [i, chain] of chains.entries()) {
    const layer = store.layers.get(chain);
    const dir = path.join(home, layer.cacheID);
    const entries = fs.readdirSync(dir).sort();
    say();
    say(`  layer ${i + 1}  ${bold(layer.cacheID)}/   {${entries.join(', ')}}`);
    say(`    link:  ${fs.readFileSync(path.join(dir, 'link'), 'utf8')}`);
    const lower = path.join(dir, 'lower');
    say(`    lower: ${fs.existsSync(lower) ? fs.readFileSync(lower, 'utf8') : dim('(none: bottom layer)')}`);
    say(`    diff/  (${humanSize(layer.size)} by Docker's size formula):`);
    for (const line of listDiff(path.join(dir, 'diff'))) say(`      ${line}`);
  }

  section(3, `Short links in ${path.join(home, 'l')}/ (they keep overlay mount options short)`);
  const ours = new Set(chains.map((c) => store.layers.get(c).cacheID));
  for (const lid of fs.readdirSync(path.join(home, 'l')).sort()) {
    const target = fs.readlinkSync(path.join(home, 'l', lid));
    if (ours.has(target.split('/')[1])) say(`  l/${lid} -> ${target}`);
  }

  section(4, 'The layer database: image/overlay2/layerdb/sha256/<chainID>/');
  for (const chain of chains) {
    const dir = path.join(store.layers.dir, 'sha256', hex(chain));
    const files = fs.readdirSync(dir).sort();
    const small = files.filter((f) => f !== 'tar-split.json.gz').map((f) => `${f}=${shortID(fs.readFileSync(path.join(dir, f), 'utf8'))}`);
    say(`  ${shortID(chain)}…/  ${small.join('  ')}  tar-split.json.gz (${fs.statSync(path.join(dir, 'tar-split.json.gz')).size} B: replays the exact layer tar)`);
  }

  section(5, `lamina image inspect ${repoTag}: GraphDriver.Data`);
  const gd = (inspectImage(store, img).GraphDriver as { Data: Record<string, string> }).Data;
  for (const [k, v] of Object.entries(gd)) say(`  ${k}: ${v.split(':').join(':\n      ')}`);
  say();
  say(dim('UpperDir is the top layer; LowerDir the others, nearest first. A container adds an -init layer and a'));
  say(dim('read-write layer on top, and the kernel joins them at MergedDir.'));
  await containerTour(store, repoTag);
  await runTour(store);
  say();
  say(`Next: lamina images, lamina history ${repoTag}, lamina ps -a, lamina save -o demo.tar ${repoTag}, lamina rmi ${repoTag}`);
}

/**
 * Part two: a container on the image. Files are written, changed and deleted through the
 * merged view the kernel mounts, and we watch them land in the rw layer's diff/.
 */
async function containerTour(store: Store, repoTag: string): Promise<void> {
  const { createContainer } = await import('./containers.js');
  const c = createContainer(store, repoTag, [], { name: `lamina-demo-${Date.now().toString(36)}` });
  const { mountID, initID } = c.mount;
  section(6, `A container: lamina create ${repoTag}  ->  ${shortID(c.id)} (${c.config.Name.slice(1)})`);
  say(`Its init layer ${initID.slice(0, 12)}…-init holds the files Docker bind-mounts over at start:`);
  for (const line of listDiff(store.driver.diffPath(initID))) say(`      ${line}`);
  say(`Its rw layer ${mountID.slice(0, 12)}…/ starts empty; lower = init layer + the image's layers:`);
  say(`    lower: ${fs.readFileSync(path.join(store.driver.dir(mountID), 'lower'), 'utf8')}`);

  let merged: string;
  let backend: string;
  try {
    ({ path: merged, backend } = await store.mountContainer(c.id));
  } catch (e) {
    say();
    say(dim(`(mounting needs root or fuse-overlayfs: ${(e as Error).message}; the rest of the tour is skipped)`));
    return;
  }
  try {
    section(7, `lamina mount: ${backend === 'kernel' ? 'kernel overlayfs' : backend} at ${merged}`);
    const opts = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').find((l) => l.split(' ')[4] === merged);
    if (opts) say(dim('  ' + opts.slice(opts.indexOf(' - ') + 3).split(',').join(',\n      ')));
    say('Through merged/ we write a new file, change a lower file and delete one:');
    fs.writeFileSync(path.join(merged, 'app/new-in-container.txt'), 'written inside the container\n');
    fs.appendFileSync(path.join(merged, 'etc/os-release'), 'DEMO_CHANGED=yes\n');
    fs.rmSync(path.join(merged, 'etc/motd'));
    say('  echo … > /app/new-in-container.txt;  echo DEMO_CHANGED=yes >> /etc/os-release;  rm /etc/motd');
    say(`The rw layer's diff/ now holds (copy-up of os-release, a whiteout for motd):`);
    for (const line of listDiff(store.driver.diffPath(mountID))) say(`      ${line}`);
  } finally {
    await store.unmountContainer(c.id);
  }

  const { containerChanges, KIND_LETTER } = await import('../containers/diff.js');
  section(8, `lamina diff ${c.config.Name.slice(1)}  (computed from diff/ alone)`);
  for (const ch of containerChanges(store, store.containers.get(c.id))) say(`  ${KIND_LETTER[ch.kind]} ${ch.path}`);

  const { commitContainer } = await import('../containers/commit.js');
  const committedTag = repoTag.replace(/:[^:/]*$/, '') + ':committed';
  const r = await commitContainer(store, c.id, { reference: committedTag, message: 'made by lamina demo' });
  section(9, `lamina commit ${c.config.Name.slice(1)} ${committedTag}  ->  ${r.id}`);
  const img = store.image(r.id);
  const chains = chainIDs(img.config.rootfs.diff_ids);
  const top = store.layers.get(chains[chains.length - 1]);
  say(`The diff/ became a layer tar in Docker's format (whiteout -> .wh.motd), diffID ${shortID(top.diffID)}…,`);
  say(`applied as a new layer ${top.cacheID.slice(0, 12)}… with chainID ${shortID(top.chainID)}…:`);
  for (const line of listDiff(store.driver.diffPath(top.cacheID))) say(`      ${line}`);
  say(`The image now has ${chains.length} layers; the container is still there (lamina ps -a), and`);
  say(`lamina rm ${c.config.Name.slice(1)} removes its init and rw layers.`);
}

/**
 * Part three: a real container process. The demo image has no programs, so this part uses a
 * busybox image built from Debian's busybox-static, and runc (both only when installed).
 */
async function runTour(store: Store): Promise<void> {
  const { BUSYBOX, buildBusyboxArchive } = await import('../build/busybox.js');
  const { spawnSync } = await import('node:child_process');
  const runc = spawnSync('sh', ['-c', 'command -v runc'], { encoding: 'utf8' }).stdout.trim();
  if (!fs.existsSync(BUSYBOX) || !runc || process.getuid?.() !== 0) {
    say();
    say(dim('(running a container needs root, runc and /bin/busybox from busybox-static: skipped)'));
    return;
  }
  const work = store.scratchDir('demo-run');
  let tag: string;
  try {
    const archive = path.join(work, 'busybox.tar');
    ({ repoTag: tag } = await buildBusyboxArchive(work, archive));
    await store.load(archive);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
  const { createContainer } = await import('./containers.js');
  const c = createContainer(store, tag, ['sh', '-c', 'echo "hello from $(hostname)" | tee /hello.txt'], { name: `lamina-demo-run-${Date.now().toString(36)}` });
  section(10, `lamina run ${tag} sh -c 'echo "hello from $(hostname)" | tee /hello.txt'  (runc on the merged mount)`);
  const { ContainerRun } = await import('../runtime/lifecycle.js');
  const run = await ContainerRun.start(store, c.id, { stdout: (b) => process.stdout.write('  | ' + b.toString()), stderr: (b) => process.stdout.write('  | ' + b.toString()) });
  const code = await run.wait();
  say(`The process exited with ${code}; the file it wrote is in the rw layer's diff/:`);
  for (const line of listDiff(store.driver.diffPath(c.mount.mountID))) say(`      ${line}`);
  say(`      hello.txt: ${fs.readFileSync(path.join(store.driver.diffPath(c.mount.mountID), 'hello.txt'), 'utf8').trim()}`);
  await store.removeContainer(c.id, { force: true });
  say(`(lamina rm: the container and its layers are gone again)`);
}
