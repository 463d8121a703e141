import type { Entry } from '../../manifest/entry.js';

/**
 * Work that entries wait for: one copy, or one batch of links shared by many entries (so the
 * common case costs no promise per entry). `settled` turns true once `wait()` has resolved;
 * a failed job makes the run fail.
 */
export interface Job {
  settled: boolean;
  failure?: unknown;
  /** True while the work has not started (waiting would start it). */
  readonly idle?: boolean;
  wait(): Promise<void>;
}

/** Decides, once its job settled, whether the entry made it into the snapshot (false: left out). */
export type Decide = () => boolean | Promise<boolean>;

interface Item<T> {
  entry: T;
  job: Job | undefined;
  decide: Decide | undefined;
  /** The decision, once taken: decide() runs exactly once per item. */
  kept?: boolean | Promise<boolean>;
  /** How many entries it stands for (a run of lines: many). */
  weight: number;
}

/** A decision taken at most once (the queue and a hard-link group may both ask). */
export function once(decide: Decide): Decide {
  let result: boolean | Promise<boolean> | undefined;
  return () => (result ??= decide());
}

/** A Job that starts its work only when first waited on (by then, what it depends on is done). */
export class LazyJob<T> implements Job {
  settled = false;
  failure?: unknown;
  value?: T;
  private started: Promise<void> | null = null;
  private onSettled: (() => void) | null = null;
  private settledPromise: Promise<void> | null = null;
  constructor(private readonly start: () => Promise<T>) {}
  get idle(): boolean {
    return this.started === null;
  }
  wait(): Promise<void> {
    this.started ??= this.start().then(
      (v) => {
        this.value = v;
        this.settle();
      },
      (err) => {
        this.failure = err;
        this.settle();
      },
    );
    return this.started;
  }

  /** Resolves once the job has settled, without starting it (whoever waits on it does). */
  whenSettled(): Promise<void> {
    if (this.settled) return Promise.resolve();
    return (this.settledPromise ??= new Promise<void>((resolve) => (this.onSettled = resolve)));
  }

  /** Settles a job that never started as failed with ABANDONED (the run is being given up). */
  abandon(): void {
    if (this.started) return;
    this.started = Promise.resolve();
    this.failure = ABANDONED;
    this.settle();
  }

  private settle(): void {
    this.settled = true;
    this.onSettled?.();
  }
}

/** Work done long ago (a decision kept, its work let go). */
export const SETTLED: Job = { settled: true, wait: () => Promise.resolve() };

/** The failure of work that never started because its run was given up. */
export const ABANDONED = new Error('internal: work abandoned with its run');

/** A Job for a promise already under way; `value` holds its result. */
export class PromiseJob<T> extends LazyJob<T> {
  constructor(p: Promise<T>) {
    super(() => p);
    void this.wait();
  }
}

/**
 * Keeps impl records in walk order while the work for them (copies, link batches) finishes in
 * any order. At most `limit` items wait; push() then finishes the oldest first. The first job
 * failure is re-thrown by push() or drain(): a store error aborts the run.
 */
export class OrderedQueue<T = Entry> {
  private readonly items: (Item<T> | undefined)[] = [];
  private head = 0;
  /** The weight of the items waiting (what `limit` bounds). */
  private waiting = 0;

  /**
   * `write` may return a promise (then the queue waits for it) or nothing. Pushing costs no
   * promise while the oldest item's work is done: the common case stays synchronous.
   */
  constructor(
    private readonly write: (e: T) => Promise<void> | void,
    private readonly limit: number,
  ) {}

  /**
   * Returns a promise only when the caller must wait (too many entries waiting). Then it waits
   * until a quarter of the window is written, not just the oldest entry: a wait (an async
   * function and its promises) per 64 entries instead of one per entry once the work lags.
   */
  push(entry: T, job?: Job, decide?: Decide, weight = 1): Promise<void> | undefined {
    this.items.push({ entry, job, decide, weight });
    this.waiting += weight;
    if (this.waiting > this.limit) return this.flush(this.limit - (this.limit >> 2));
    return undefined;
  }

  /** Writes settled items from the head without awaiting; returns a promise if it must wait. */
  private flush(allowed: number): Promise<void> | undefined {
    for (;;) {
      const item = this.items[this.head];
      if (!item) return undefined;
      if (item.job && !item.job.settled) {
        if (this.waiting <= allowed) return undefined;
        return this.flushAsync(allowed);
      }
      if (item.job?.failure !== undefined) throw item.job.failure;
      const keep = (item.kept ??= item.decide ? item.decide() : true);
      if (keep !== true && keep !== false) return this.flushAsync(allowed);
      if (keep) {
        const w = this.write(item.entry);
        if (w) {
          this.advance();
          return w.then(() => this.flush(allowed));
        }
      }
      this.advance();
    }
  }

  private async flushAsync(allowed: number): Promise<void> {
    for (;;) {
      const item = this.items[this.head];
      if (!item) break;
      if (item.job && !item.job.settled) {
        if (this.waiting <= allowed) break;
        await item.job.wait();
      }
      if (item.job?.failure !== undefined) throw item.job.failure;
      // No await where nothing is pending: each one costs a promise and a turn of the queue.
      let keep = (item.kept ??= item.decide ? item.decide() : true);
      if (keep !== true && keep !== false) keep = await keep;
      if (keep) {
        const w = this.write(item.entry);
        if (w) await w;
      }
      this.advance();
    }
  }

  private advance(): void {
    this.waiting -= this.items[this.head]!.weight;
    this.items[this.head++] = undefined;
    if (this.head > 4096) {
      this.items.splice(0, this.head);
      this.head = 0;
    }
  }

  /** Waits for all work and writes every remaining record. */
  async drain(): Promise<void> {
    await this.flushAsync(0);
  }

  /** Waits for in-flight work without writing (used when the run is abandoned). */
  async settle(): Promise<void> {
    // Never start work while abandoning the run; what waits on work that never started ends too.
    for (let i = this.head; i < this.items.length; i++) {
      const job = this.items[i]?.job;
      if (job instanceof LazyJob && job.idle) job.abandon();
    }
    for (let i = this.head; i < this.items.length; i++) {
      const job = this.items[i]?.job;
      if (job && !job.idle) await job.wait().catch(() => undefined);
    }
  }
}
