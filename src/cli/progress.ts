// Docker-style per-layer progress lines ("abc123: Loading layer [===>   ]  1.2MB/2MB"),
// redrawn in place when the output is a terminal.
import { humanSize } from './format.js';

export class LayerProgress {
  private readonly out: NodeJS.WriteStream;
  private readonly lines: string[] = [];
  private readonly ids: string[] = [];
  private drawn = 0;
  private lastDraw = 0;

  constructor(out: NodeJS.WriteStream) {
    this.out = out;
  }

  private row(id: string): number {
    let i = this.ids.indexOf(id);
    if (i < 0) {
      this.ids.push(id);
      this.lines.push('');
      i = this.ids.length - 1;
    }
    return i;
  }

  update(id: string, action: string, current?: number, total?: number, force = false): void {
    const i = this.row(id);
    let text = `${id}: ${action}`;
    if (current !== undefined) {
      if (total && total > 0) {
        const width = 50;
        const filled = Math.min(width, Math.floor((current / total) * width));
        const bar = '='.repeat(Math.max(0, filled - 1)) + (filled > 0 ? (filled < width ? '>' : '=') : '') + ' '.repeat(width - filled);
        text += ` [${bar}]  ${humanSize(current)}/${humanSize(total)}`;
      } else {
        text += `  ${humanSize(current)}`;
      }
    }
    this.lines[i] = text;
    const now = Date.now();
    if (force || now - this.lastDraw > 80) this.draw();
  }

  private draw(): void {
    this.lastDraw = Date.now();
    let s = '';
    if (this.drawn > 0) s += `\x1b[${this.drawn}A`;
    for (const l of this.lines) s += `\x1b[2K\r${l}\n`;
    this.drawn = this.lines.length;
    this.out.write(s);
  }

  finish(): void {
    if (this.lines.length) this.draw();
  }
}
