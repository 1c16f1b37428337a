// Summary statistics for a handful of timed runs: the benchmark reports median, min and max.

export interface Summary {
  n: number;
  median: number;
  min: number;
  max: number;
}

export function summarize(values: readonly number[]): Summary {
  if (values.length === 0) throw new Error('summarize: no values');
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  return { n: sorted.length, median, min: sorted[0], max: sorted[sorted.length - 1] };
}

/** Largest value, ignoring runs where it could not be measured; null when none was. */
export function maxKnown(values: readonly (number | null)[]): number | null {
  let best: number | null = null;
  for (const v of values) if (v !== null && (best === null || v > best)) best = v;
  return best;
}

export function formatMs(ms: number): string {
  return ms >= 10_000 ? `${(ms / 1000).toFixed(1)} s` : ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(0)} ms`;
}

/** "812 ms (790–860)": the median with the range of the runs. */
export function formatSummaryMs(s: Summary): string {
  const range = (ms: number) => (ms >= 1000 ? (ms / 1000).toFixed(2) : ms.toFixed(0));
  const unit = s.max >= 1000 ? ' s' : '';
  return `${formatMs(s.median)} (${range(s.min)}–${range(s.max)}${unit})`;
}

export function formatMiB(kib: number | null): string {
  return kib === null ? 'n/a' : `${(kib / 1024).toFixed(0)} MiB`;
}
