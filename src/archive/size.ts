// Docker's layer size (layerdb `size`, `docker system df`): moby's directory.Size over diff/.
// The sum of lstat sizes of every non-directory, each inode counted once (hard links once);
// a symlink's size is the length of its target, devices (whiteouts) and fifos count 0.
import fs from 'node:fs';

const SLASH = Buffer.from('/');

/** Walks `dir` (never following symlinks) and returns Docker's size formula over it. */
export function dockerSize(dir: string): number {
  let size = 0;
  const seen = new Set<number>(); // inodes with several links already counted
  // Paths as bytes: names written inside containers need not be valid UTF-8.
  const stack: Buffer[] = [Buffer.from(dir)];
  while (stack.length > 0) {
    const d = stack.pop()!;
    for (const ent of fs.readdirSync(d, { withFileTypes: true, encoding: 'buffer' })) {
      const p = Buffer.concat([d, SLASH, ent.name]);
      if (ent.isDirectory()) {
        stack.push(p);
        continue;
      }
      const st = fs.lstatSync(p);
      if (st.size === 0) continue;
      if (st.nlink > 1) {
        if (seen.has(st.ino)) continue;
        seen.add(st.ino);
      }
      size += st.size;
    }
  }
  return size;
}
