// Output helpers that match the docker CLI: tabwriter-padded tables, decimal human sizes,
// "2 hours ago" durations, truncated IDs.

/**
 * Renders rows like Go's text/tabwriter as docker uses it (minwidth 10, padding 3, spaces):
 * every column but the last is padded to max(widest cell + 3, 10).
 */
export function table(rows: string[][]): string {
  if (rows.length === 0) return '';
  const cols = Math.max(...rows.map((r) => r.length));
  const widths: number[] = [];
  for (let c = 0; c < cols - 1; c++) {
    let w = 0;
    for (const r of rows) w = Math.max(w, displayWidth(r[c] ?? ''));
    widths.push(Math.max(w + 3, 10));
  }
  return rows
    .map((r) => r.map((cell, c) => (c < cols - 1 && c < r.length - 1 ? cell + ' '.repeat(widths[c] - displayWidth(cell)) : cell)).join(''))
    .join('\n') + '\n';
}

function displayWidth(s: string): number {
  return [...s].length;
}

/** docker's units.HumanSizeWithPrecision: decimal units, `precision` significant digits. */
export function humanSize(bytes: number, precision = 3): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB', 'PB', 'EB', 'ZB', 'YB'];
  let size = bytes;
  let i = 0;
  while (size >= 1000 && i < units.length - 1) {
    size /= 1000;
    i++;
  }
  return formatG(size, precision) + units[i];
}

/** Go's %.*g for the magnitudes sizes have (no exponent form below 1e21). */
function formatG(x: number, precision: number): string {
  if (x === 0) return '0';
  let s = x.toPrecision(precision);
  if (s.includes('e')) {
    // toPrecision switches to exponent form for large values; Go's %g does too, at >= 10^precision.
    const [m, e] = s.split('e');
    const mant = m.includes('.') ? m.replace(/0+$/, '').replace(/\.$/, '') : m;
    const exp = Number(e);
    return `${mant}e${exp < 0 ? '-' : '+'}${String(Math.abs(exp)).padStart(2, '0')}`;
  }
  if (s.includes('.')) s = s.replace(/0+$/, '').replace(/\.$/, '');
  return s;
}

/** docker's units.HumanDuration. */
export function humanDuration(ms: number): string {
  const seconds = Math.floor(ms / 1000);
  if (seconds < 1) return 'Less than a second';
  if (seconds === 1) return '1 second';
  if (seconds < 60) return `${seconds} seconds`;
  const minutes = Math.floor(ms / 60000);
  if (minutes === 1) return 'About a minute';
  if (minutes < 60) return `${minutes} minutes`;
  const hours = Math.floor(ms / 3600000 + 0.5);
  if (hours === 1) return 'About an hour';
  if (hours < 48) return `${hours} hours`;
  if (hours < 24 * 7 * 2) return `${Math.floor(hours / 24)} days`;
  if (hours < 24 * 30 * 2) return `${Math.floor(hours / 24 / 7)} weeks`;
  if (hours < 24 * 365 * 2) return `${Math.floor(hours / 24 / 30)} months`;
  return `${Math.floor(ms / 3600000 / 24 / 365)} years`;
}

export function since(created: string | undefined, now = Date.now()): string {
  if (!created) return 'N/A';
  const t = Date.parse(created);
  if (Number.isNaN(t)) return 'N/A';
  return humanDuration(now - t) + ' ago';
}

/** First 12 hex characters of an ID, without the algorithm prefix. */
export function shortID(id: string): string {
  return id.replace(/^sha256:/, '').slice(0, 12);
}

/** docker's stringutils.Ellipsis: cut to maxlen display characters, the last one "…". */
export function ellipsis(s: string, maxlen: number): string {
  const chars = [...s];
  if (chars.length <= maxlen) return s;
  return chars.slice(0, maxlen - 1).join('') + '…';
}

/**
 * A small subset of Go templates as docker's --format uses them: `{{.Field}}`, `{{json .}}`,
 * `{{json .Field}}`, and a leading `table` that adds a header row.
 */
export function renderTemplate(tpl: string, obj: Record<string, unknown>): string {
  return tpl
    .replace(/\\t/g, '\t')
    .replace(/\\n/g, '\n')
    .replace(/\{\{\s*(json\s+)?\.([A-Za-z0-9_.]*)\s*\}\}/g, (_m, json: string | undefined, field: string) => {
      let v: unknown = obj;
      if (field) for (const k of field.split('.')) v = (v as Record<string, unknown> | undefined)?.[k];
      if (json) return JSON.stringify(v ?? null);
      if (v === undefined || v === null) return '<no value>';
      return typeof v === 'object' ? JSON.stringify(v) : String(v);
    });
}
