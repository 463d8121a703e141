import { native } from '../native.js';
import { comparePaths, join } from '../util/bpath.js';

/** names, stats (SCAN_FIELDS per entry) and, on the fast path, the directory's index block. */
export type Listing = [names: Buffer, stats: Float64Array, block?: Buffer];

/** Must match SCAN_FIELDS in src/native/bakker_native.c. */
export const SCAN_FIELDS = 18;
/** Field numbers in a listing's stats. */
export const F_DEV = 6;
export const F_ERRNO = 14;
export const F_FAST = 15;
export const F_PREV = 16;
export const F_REC = 17;
const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;

/** What a scan on the fast path needs for directory `rel`: [previous block, previous dir, new dir]. */
/** [previous block, previous dir, new dir]; dirs null: compare only (a remote store: the caller links). */
export type FastArgs = (rel: Buffer) => [Buffer | null, Buffer, Buffer] | [Buffer | null, null, null];

/** Whether the walk will descend into the subdirectory `rel` (excludes, one-file-system, skips). */
export type Descends = (rel: Buffer, dev: number, rootDev: number) => boolean;

interface Pending {
  listing: Promise<Listing>;
  rel: Buffer;
  abs: Buffer;
  rootDev: number;
  /** Starts the scan (once); undefined once started. */
  dispatch?: () => void;
}

/**
 * Lists directories on the thread pool ahead of the walk. When a listing arrives, the first
 * `fanout` subdirectories in it that the walk will descend into are started too, so scanning runs
 * down the tree ahead of the walk instead of making it wait at every level. At most `budget`
 * listings are started and not yet taken; the walk takes each one once (take) or drops it when it
 * will not descend (drop), which keeps memory bounded however large the tree. On the fast path a
 * scan also links the directory's unchanged files into the new snapshot, so a scan is only ever
 * started for a directory the walk descends into.
 *
 * Scans started ahead wait in walk order and at most `inFlight` of them are on the thread pool at
 * once: the pool's queue is first come, first served, so a long queue of look-ahead scans would
 * make the one the walk needs now wait behind all of them. A take() of a scan not yet on the pool
 * sends it at once.
 */
export class Scanner {
  private readonly pending = new Map<string, Pending>();
  /** Look-ahead scans not yet sent, in walk order (few: at most the budget). */
  private readonly waiting: Pending[] = [];
  private running = 0;

  constructor(
    private readonly probeXattrs: boolean,
    private readonly descends: Descends,
    private readonly fast: FastArgs | undefined,
    private readonly budget = 64,
    private readonly fanout = 2,
    private readonly inFlight = 4,
  ) {}

  /** Listings started and not yet taken or dropped. */
  get pendingCount(): number {
    return this.pending.size;
  }

  private scan(abs: Buffer, rel: Buffer): Promise<Listing> {
    this.running++;
    const p = native.scanDir(abs, this.probeXattrs, this.fast?.(rel));
    const done = () => {
      this.running--;
      this.pump();
    };
    p.then(done, done);
    return p;
  }

  private pump(): void {
    while (this.running < this.inFlight && this.waiting.length > 0) this.waiting.shift()!.dispatch?.();
  }

  start(abs: Buffer, rel: Buffer, rootDev: number): void {
    const key = abs.toString('latin1');
    if (this.pending.has(key) || this.pending.size >= this.budget) return;
    let resolve!: (l: Promise<Listing>) => void;
    const entry: Pending = { listing: new Promise<Listing>((r) => (resolve = r)), rel, abs, rootDev };
    entry.dispatch = () => {
      entry.dispatch = undefined;
      const i = this.waiting.indexOf(entry);
      if (i >= 0) this.waiting.splice(i, 1);
      const l = this.scan(abs, rel);
      l.then(
        (listing) => this.ahead(abs, rel, rootDev, listing),
        () => undefined,
      );
      resolve(l);
    };
    entry.listing.catch(() => undefined);
    this.pending.set(key, entry);
    // in walk order: the walk needs the smallest path first
    let at = this.waiting.length;
    while (at > 0 && comparePaths(this.waiting[at - 1]!.rel, rel) > 0) at--;
    this.waiting.splice(at, 0, entry);
    this.pump();
  }

  /** The listing of `abs`: the one started ahead (sent to the pool now if it still waits), or a new one. */
  take(abs: Buffer, rel: Buffer): Promise<Listing> {
    const key = abs.toString('latin1');
    const p = this.pending.get(key);
    if (p) {
      this.pending.delete(key);
      p.dispatch?.();
      return p.listing;
    }
    const q = this.scan(abs, rel);
    q.catch(() => undefined);
    return q;
  }

  /** The walk will not descend into `abs`: forget listings started for it and below it. */
  drop(abs: Buffer): void {
    const key = abs.toString('latin1');
    const p = this.pending.get(key);
    if (!p) return;
    if (!p.dispatch) this.dropped.add(key); // on the pool: its look-ahead must not go on when it arrives
    this.forget(key, p);
    const below = key + '/';
    for (const [k, q] of this.pending) if (k.startsWith(below)) this.forget(k, q);
  }

  private forget(key: string, p: Pending): void {
    this.pending.delete(key);
    if (p.dispatch) {
      // never sent: never will be
      p.dispatch = undefined;
      const i = this.waiting.indexOf(p);
      if (i >= 0) this.waiting.splice(i, 1);
    }
  }

  private readonly dropped = new Set<string>();

  private ahead(abs: Buffer, rel: Buffer, rootDev: number, [names, stats]: Listing): void {
    const key = abs.toString('latin1');
    if (this.dropped.delete(key)) return; // dropped before it was listed: go no further
    let off = 0;
    let started = 0;
    for (let o = 0; o < stats.length && started < this.fanout; o += SCAN_FIELDS) {
      const end = names.indexOf(0, off);
      if ((stats[o]! & S_IFMT) === S_IFDIR && stats[o + F_ERRNO] === 0) {
        const name = names.subarray(off, end);
        const childRel = join(rel, name);
        if (this.descends(childRel, stats[o + F_DEV]!, rootDev)) {
          this.start(join(abs, name), childRel, rootDev);
          started++;
        }
      }
      off = end + 1;
    }
  }
}
