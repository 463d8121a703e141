import { native } from '../native.js';
import { join } from '../util/bpath.js';

export type Listing = [names: Buffer, stats: Float64Array];

/** Must match SCAN_FIELDS in src/native/bakker_native.c. */
export const SCAN_FIELDS = 15;
const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;

/**
 * Lists directories on the thread pool ahead of the walk. When a listing arrives, the first
 * `fanout` subdirectories in it are started too, so scanning runs down the tree ahead of the
 * walk instead of making it wait at every level. At most `budget` listings are started and
 * not yet taken; the walk takes each one once (take) or drops it when it will not descend
 * (drop), which keeps memory bounded however large the tree.
 */
export class Scanner {
  private readonly pending = new Map<string, Promise<Listing>>();

  constructor(
    private readonly probeXattrs: boolean,
    private readonly budget = 48,
    private readonly fanout = 2,
  ) {}

  /** Listings started and not yet taken or dropped. */
  get pendingCount(): number {
    return this.pending.size;
  }

  start(abs: Buffer): void {
    const key = abs.toString('latin1');
    if (this.pending.has(key) || this.pending.size >= this.budget) return;
    const p = native.scanDir(abs, this.probeXattrs);
    p.then(
      (l) => this.ahead(abs, l),
      () => undefined,
    );
    this.pending.set(key, p);
  }

  /** The listing of `abs`: the one started ahead, or a new one. */
  take(abs: Buffer): Promise<Listing> {
    const key = abs.toString('latin1');
    const p = this.pending.get(key);
    if (p) {
      this.pending.delete(key);
      return p;
    }
    const q = native.scanDir(abs, this.probeXattrs);
    q.catch(() => undefined);
    return q;
  }

  /** The walk will not descend into `abs`: forget listings started for it and below it. */
  drop(abs: Buffer): void {
    const key = abs.toString('latin1');
    if (!this.pending.delete(key)) return;
    this.dropped.add(key);
    const below = key + '/';
    for (const k of this.pending.keys()) if (k.startsWith(below)) this.pending.delete(k);
  }

  private readonly dropped = new Set<string>();

  private ahead(abs: Buffer, [names, stats]: Listing): void {
    const key = abs.toString('latin1');
    if (this.dropped.delete(key)) return; // dropped before it was listed: go no further
    let off = 0;
    let started = 0;
    for (let o = 0; o < stats.length && started < this.fanout; o += SCAN_FIELDS) {
      const end = names.indexOf(0, off);
      if ((stats[o]! & S_IFMT) === S_IFDIR && stats[o + 14] === 0) {
        this.start(join(abs, names.subarray(off, end)));
        started++;
      }
      off = end + 1;
    }
  }
}
