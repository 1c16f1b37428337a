// Scratch areas for extraction benchmarks: one on tmpfs (/dev/shm) and one on ext4.
//
// ext4 on these machines has no journal, and after a large tree is deleted the inode allocator
// skips the recently freed inodes for minutes, making every new create in that region 3–15x
// slower (platform-notes.md, "Benchmarking trap"); on this shared machine a directory such as /tmp
// can show 700–900 µs per create while another on the same disk shows 40 µs. So:
//  * every run extracts into a directory that was never used before;
//  * by default the ext4 area is a fresh ext4 file system (no journal, like the root fs) in a
//    sparse image on the root disk, attached with direct I/O: no earlier deletions can slow it,
//    and dropping it at the end frees one file, not hundreds of thousands of inodes, so it does
//    not slow the next run or anyone else. BENCH_EXT4=dir uses a plain directory instead
//    (BENCH_EXT4_DIR, else the OS temp dir), deleted only after all timed runs;
//  * on tmpfs deletion has no such after-effect, so run directories may go between runs.
// createProbe() measures the cost of one file create, to show whether an area is healthy.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';

export type FsKind = 'tmpfs' | 'ext4';

const MAGIC: Record<number, string> = { 0x01021994: 'tmpfs', 0xef53: 'ext4', 0x794c7630: 'overlay', 0x58465342: 'xfs', 0x9123683e: 'btrfs' };

export function fsTypeOf(dir: string): string {
  const type = fs.statfsSync(dir).type;
  return MAGIC[type] ?? `0x${type.toString(16)}`;
}

/** What a fresh ext4 image must hold: the trees of all runs, never deleted while it is mounted. */
export interface Ext4Sizing {
  bytes: number;
  inodes: number;
}

interface LoopDevice {
  image: string;
  device: string;
}

export class ScratchArea {
  readonly kind: FsKind;
  /** Directory holding every run directory of this area. */
  readonly base: string;
  /** Where the area lives, for the report. */
  readonly description: string;
  private readonly holder: string;
  /** Small files outside the run dirs (RSS probe output), always on tmpfs so they cost nothing. */
  private readonly smallFiles: string;
  private readonly loop?: LoopDevice;
  private counter = 0;

  private constructor(kind: FsKind, holder: string, base: string, description: string, loop?: LoopDevice) {
    this.kind = kind;
    this.holder = holder;
    this.base = base;
    this.description = description;
    this.loop = loop;
    this.smallFiles = fs.mkdtempSync('/dev/shm/lamina-bench-files-');
  }

  static create(kind: FsKind, sizing?: Ext4Sizing): ScratchArea {
    if (kind === 'tmpfs') {
      const holder = mkdtempOn('/dev/shm', 'tmpfs');
      return new ScratchArea(kind, holder, holder, `tmpfs, ${holder}`);
    }
    const parent = process.env.BENCH_EXT4_DIR || os.tmpdir();
    const holder = mkdtempOn(parent, 'ext4');
    const mode = process.env.BENCH_EXT4 || (process.getuid?.() === 0 ? 'loop' : 'dir');
    if (mode === 'loop') {
      try {
        return ScratchArea.loopArea(holder, sizing ?? { bytes: 4 * 2 ** 30, inodes: 500_000 });
      } catch (err) {
        console.error(`[bench] fresh ext4 image not possible (${(err as Error).message.split('\n')[0]}); using a plain directory`);
      }
    }
    return new ScratchArea(kind, holder, holder, `ext4 directory ${holder} (shares the root fs's recent deletions)`);
  }

  private static loopArea(holder: string, sizing: Ext4Sizing): ScratchArea {
    const image = path.join(holder, 'ext4.img');
    const mnt = path.join(holder, 'mnt');
    fs.mkdirSync(mnt);
    const gib = Math.ceil(sizing.bytes / 2 ** 30);
    fs.closeSync(fs.openSync(image, 'w'));
    fs.truncateSync(image, gib * 2 ** 30);
    cmd('mkfs.ext4', ['-q', '-F', '-O', '^has_journal', '-N', String(sizing.inodes), image]);
    const device = cmd('losetup', ['-f', '--show', '--direct-io=on', image]).trim();
    try {
      // noinit_itable: no background inode-table zeroing competing with the timed runs.
      cmd('mount', ['-t', 'ext4', '-o', 'noinit_itable', device, mnt]);
    } catch (err) {
      spawnSync('losetup', ['-d', device]);
      throw err;
    }
    const desc = `fresh ext4 (no journal) in a ${gib} GiB sparse image on ${fsTypeOf(holder)} ${holder}, loop ${device} with direct I/O`;
    return new ScratchArea('ext4', holder, mnt, desc, { image, device });
  }

  /** True when the area is a plain directory whose deletion slows later creates on the root fs. */
  get deletionPenalizes(): boolean {
    return this.kind === 'ext4' && !this.loop;
  }

  /** A new, empty, never-used directory named after `label`. */
  fresh(label: string): string {
    const dir = path.join(this.base, `${label}-${++this.counter}`);
    fs.mkdirSync(dir);
    return dir;
  }

  /** A path for a small file outside the run dirs (RSS probe output and the like). */
  file(name: string): string {
    return path.join(this.smallFiles, name);
  }

  /** Removes one run directory now (only sensible on tmpfs, see the header). */
  remove(dir: string): void {
    removeTree(dir);
  }

  /**
   * Microseconds per empty-file create (open O_CREAT + close) in a fresh directory: ~20 on tmpfs,
   * ~40–90 on healthy ext4 here; hundreds mean the deleted-inode penalty is active.
   */
  createProbe(files = 2000): number {
    const dir = this.fresh('probe');
    const start = process.hrtime.bigint();
    for (let i = 0; i < files; i++) fs.closeSync(fs.openSync(path.join(dir, `f${i}`), 'w'));
    return Number(process.hrtime.bigint() - start) / 1e3 / files;
  }

  removeAll(): void {
    if (this.loop) {
      const u = spawnSync('umount', [this.base], { stdio: 'inherit' });
      if (u.status !== 0) spawnSync('umount', ['-l', this.base], { stdio: 'inherit' });
      spawnSync('losetup', ['-d', this.loop.device], { stdio: 'inherit' });
    }
    removeTree(this.holder);
    removeTree(this.smallFiles);
  }
}

function mkdtempOn(parent: string, kind: FsKind): string {
  const actual = fsTypeOf(parent);
  if (actual !== kind) throw new Error(`scratch dir ${parent} is ${actual}, not ${kind} (set BENCH_EXT4_DIR to an ext4 directory)`);
  return fs.mkdtempSync(path.join(parent, 'lamina-bench-'));
}

function cmd(file: string, args: string[]): string {
  const r = spawnSync(file, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`${file} ${args.join(' ')}: ${r.stderr.trim() || `exit ${r.status}`}`);
  return r.stdout;
}

/** rm -rf, refusing to descend into anything still mounted under `dir`. */
function removeTree(dir: string): void {
  const mounts = fs
    .readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[1]?.replace(/\\040/g, ' '))
    .filter((m): m is string => !!m && (m === dir || m.startsWith(dir + '/')));
  if (mounts.length > 0) {
    console.error(`warning: not removing ${dir}: still mounted: ${mounts.join(', ')}`);
    return;
  }
  // rm -rf is several times faster than fs.rmSync on trees of tens of thousands of entries.
  const r = spawnSync('rm', ['-rf', '--one-file-system', dir], { stdio: 'inherit' });
  if (r.status !== 0) console.error(`warning: rm -rf ${dir} exited ${r.status}`);
}
