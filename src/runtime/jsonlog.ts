// Docker's json-file log driver: containers/<id>/<id>-json.log holds one JSON object per line
// of container output, {"log":"<line incl. \n>","stream":"stdout"|"stderr","time":"<RFC 3339,
// nanoseconds, UTC>"}, written as moby's jsonlog marshaller does (Go string escaping with HTML
// escapes and \ufffd for invalid UTF-8). A line longer than 16 KiB is cut into 16 KiB pieces
// without newline, like moby's copier; output that ends without a newline is logged as is.
import fs from 'node:fs';
import { goNow, quoteGoBytes } from '../images/gojson.js';

export type Stream = 'stdout' | 'stderr';

const MAX_LINE = 16 * 1024;
const NL = 0x0a;

/** Appends container output to a json-file log, line by line, per stream. */
export class JsonLogWriter {
  private readonly fd: number;
  private readonly partial: Record<Stream, Buffer[]> = { stdout: [], stderr: [] };
  private readonly partialLen: Record<Stream, number> = { stdout: 0, stderr: 0 };

  constructor(file: string) {
    this.fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT, 0o640);
  }

  write(stream: Stream, chunk: Buffer): void {
    const time = goNow();
    const out: string[] = [];
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(NL, start);
      if (nl < 0) break;
      this.take(stream, chunk.subarray(start, nl + 1));
      out.push(this.entry(stream, this.drain(stream), time));
      start = nl + 1;
    }
    if (start < chunk.length) {
      this.take(stream, chunk.subarray(start));
      while (this.partialLen[stream] >= MAX_LINE) {
        const all = this.drain(stream);
        out.push(this.entry(stream, all.subarray(0, MAX_LINE), time));
        if (all.length > MAX_LINE) this.take(stream, Buffer.from(all.subarray(MAX_LINE)));
      }
    }
    if (out.length) fs.writeSync(this.fd, out.join(''));
  }

  /** Logs what is left without a newline and closes the file. */
  close(): void {
    const time = goNow();
    const out: string[] = [];
    for (const s of ['stdout', 'stderr'] as const) if (this.partialLen[s]) out.push(this.entry(s, this.drain(s), time));
    if (out.length) fs.writeSync(this.fd, out.join(''));
    fs.closeSync(this.fd);
  }

  private take(stream: Stream, b: Buffer): void {
    this.partial[stream].push(b);
    this.partialLen[stream] += b.length;
  }

  private drain(stream: Stream): Buffer {
    const parts = this.partial[stream];
    const all = parts.length === 1 ? parts[0] : Buffer.concat(parts);
    this.partial[stream] = [];
    this.partialLen[stream] = 0;
    return all;
  }

  private entry(stream: Stream, line: Buffer, time: string): string {
    return `{"log":${quoteGoBytes(line)},"stream":"${stream}","time":"${time}"}\n`;
  }
}

export interface LogEntry { log: string; stream: Stream; time: string }

/** Parses json-file log lines (a trailing incomplete line is left for the next read). */
export function parseLogLines(text: string): { entries: LogEntry[]; rest: string } {
  const entries: LogEntry[] = [];
  let start = 0;
  for (;;) {
    const nl = text.indexOf('\n', start);
    if (nl < 0) break;
    const line = text.slice(start, nl);
    start = nl + 1;
    if (!line) continue;
    try {
      const e = JSON.parse(line) as LogEntry;
      if (typeof e.log === 'string') entries.push(e);
    } catch {
      // A torn or foreign line: docker skips what it cannot decode, too.
    }
  }
  return { entries, rest: text.slice(start) };
}

/** docker logs -t: the entry's time with exactly nine fraction digits (RFC3339NanoFixed). */
export function fixedNanoTime(t: string): string {
  const m = /^(.*T\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})$/.exec(t);
  if (!m) return t;
  return `${m[1]}.${(m[2] ?? '').padEnd(9, '0').slice(0, 9)}${m[3]}`;
}
