// Progress of a pull or push, shaped like the daemon's JSON messages that the docker CLI renders:
// an optional id (a short blob or layer digest), a status, and bytes done out of a total.
export interface ProgressEvent {
  id?: string;
  status: string;
  current?: number;
  total?: number;
}

export type ProgressFn = (e: ProgressEvent) => void;

/** docker's stringid.TruncateID for digests: the first 12 hex digits. */
export function shortDigest(d: string): string {
  return d.replace(/^sha256:/, '').slice(0, 12);
}

/** Runs `fn` over `items` with at most `limit` running at once; results in input order. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  let failed = false;
  const worker = async () => {
    while (!failed && next < items.length) {
      const i = next++;
      try {
        results[i] = await fn(items[i], i);
      } catch (e) {
        failed = true;
        throw e;
      }
    }
  };
  const workers = Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker);
  const settled = await Promise.allSettled(workers);
  const rejected = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (rejected) throw rejected.reason;
  return results;
}
