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
  say();
  say(`Next: lamina images, lamina history ${repoTag}, lamina save -o demo.tar ${repoTag}, lamina rmi ${repoTag}`);
}
