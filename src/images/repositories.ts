// image/overlay2/repositories.json: {"Repositories":{"<familiar repo>":{"<familiar ref>":"sha256:<id>"}}}
// Tags and digests → image IDs, as Docker's reference store keeps them.
import fs from 'node:fs';
import { LaminaError } from '../errors.js';
import type { Digest } from '../digest/index.js';
import { writeFileAtomic } from '../fsutil.js';
import { familiarName, familiarString, parseReference, type Reference } from './reference.js';
import { marshalGo, sortKeys } from './gojson.js';
import type { RootLock } from '../lock.js';

type RepoMap = Record<string, Record<string, Digest>>;

export interface RefEntry {
  /** Familiar form, e.g. refapp:1 or localhost:5000/app@sha256:… */
  ref: string;
  repo: string;
  tag?: string;
  digest?: string;
  image: Digest;
}

export class Repositories {
  readonly file: string;
  private repos: RepoMap | undefined;
  /**
   * The root lock (Store sets it): set() and delete() read, change and write the whole file,
   * so they hold it themselves, and a caller outside it (pull, push) cannot lose another
   * process's change. Re-entrant: callers that already hold it are unaffected.
   */
  lock: RootLock | undefined;

  constructor(file: string) {
    this.file = file;
  }

  private load(): RepoMap {
    if (this.repos) return this.repos;
    let text: string;
    try {
      text = fs.readFileSync(this.file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return (this.repos = {});
      throw e;
    }
    try {
      const parsed = JSON.parse(text) as { Repositories?: RepoMap };
      this.repos = parsed.Repositories ?? {};
    } catch (e) {
      throw new LaminaError('EBADINPUT', `${this.file} is not valid JSON: ${(e as Error).message}`);
    }
    return this.repos;
  }

  /** Re-reads the file on next access (another process may have changed it). */
  invalidate(): void {
    this.repos = undefined;
  }

  private save(): void {
    // Docker marshals a Go map: keys sorted at every level, compact, no trailing newline.
    // A Map marshals with byte-sorted keys, as a Go map does (a plain object would put
    // integer-like keys such as a repo named "123" first).
    const repos = this.load();
    const sorted = sortKeys(Object.fromEntries(Object.entries(repos).filter(([, refs]) => Object.keys(refs).length).map(([r, refs]) => [r, sortKeys(refs)])));
    writeFileAtomic(this.file, marshalGo({ Repositories: sorted }), 0o600);
  }

  /** Points `ref` (tag or digest) at `image`; returns the image it pointed at before, if another. */
  set(ref: Reference, image: Digest): Digest | undefined {
    if (this.lock) return this.lock.hold(() => this.setLocked(ref, image));
    return this.setLocked(ref, image);
  }

  private setLocked(ref: Reference, image: Digest): Digest | undefined {
    this.invalidate(); // read-modify-write from the file: another process may have changed it
    const repos = this.load();
    const repo = familiarName(ref);
    const key = familiarString(ref.digest ? { ...ref, tag: undefined } : ref);
    const prev = repos[repo]?.[key];
    (repos[repo] ??= {})[key] = image;
    this.save();
    return prev !== image ? prev : undefined;
  }

  get(ref: Reference): Digest | undefined {
    const repos = this.load();
    const key = familiarString(ref.digest ? { ...ref, tag: undefined } : ref);
    return repos[familiarName(ref)]?.[key];
  }

  /** Removes one reference; returns whether it existed. */
  delete(ref: Reference): boolean {
    if (this.lock) return this.lock.hold(() => this.deleteLocked(ref));
    return this.deleteLocked(ref);
  }

  private deleteLocked(ref: Reference): boolean {
    this.invalidate(); // read-modify-write from the file: another process may have changed it
    const repos = this.load();
    const repo = familiarName(ref);
    const key = familiarString(ref.digest ? { ...ref, tag: undefined } : ref);
    if (!repos[repo] || !(key in repos[repo])) return false;
    delete repos[repo][key];
    if (Object.keys(repos[repo]).length === 0) delete repos[repo];
    this.save();
    return true;
  }

  /** Every reference, in file order. */
  entries(): RefEntry[] {
    const out: RefEntry[] = [];
    for (const [repo, refs] of Object.entries(this.load())) {
      for (const [key, image] of Object.entries(refs)) {
        const r = parseReference(key);
        out.push({ ref: key, repo, tag: r.tag, digest: r.digest, image });
      }
    }
    return out;
  }

  referencesTo(image: Digest): RefEntry[] {
    return this.entries().filter((e) => e.image === image);
  }
}
