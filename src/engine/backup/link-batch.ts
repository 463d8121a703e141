import type { Store } from '../../store/store.js';
import type { Semaphore } from '../../util/semaphore.js';
import type { Job } from './ordered-queue.js';

/** Links per batch: one thread-pool job (or, over SFTP, one burst of requests) each. */
export const LINK_BATCH = 256;

/**
 * Hard links of unchanged entries from the previous snapshot (`fromDir/rel` to `toDir/rel`),
 * sent to the store together: one Job shared by every entry in the batch, so the common case
 * costs no promise per entry. A batch runs once the directories it links into exist (`after`)
 * and a slot is free; after that it takes no more links.
 */
export class LinkBatch implements Job {
  settled = false;
  failure?: unknown;
  codes: (string | null)[] = [];
  private rels: Buffer[] = [];
  private count = 0;
  private sent: Promise<void> | null = null;

  constructor(
    private readonly store: Store,
    private readonly fromDir: Buffer,
    private readonly toDir: Buffer,
    private readonly slots: Semaphore,
  ) {}

  get size(): number {
    return this.count;
  }

  get idle(): boolean {
    return this.sent === null;
  }

  /** What must be done before the batch may run (the directories it links into). */
  after: Promise<void> = Promise.resolve();

  add(rel: Buffer, after: Promise<void>): number {
    if (this.sent) throw new Error('internal: link added to a batch already sent');
    this.after = after;
    this.count++;
    return this.rels.push(rel) - 1;
  }

  code(i: number): string | null {
    const c = this.codes[i];
    if (c === undefined) throw new Error(`internal: no result for link ${i} of ${this.count}`);
    return c;
  }

  send(): Promise<void> {
    if (this.sent) return this.sent;
    const rels = this.rels;
    this.rels = []; // entries waiting on this batch keep it alive: do not keep the paths too
    this.sent = this.after.then(() => this.slots.run(() => this.store.linkMany!(this.fromDir, this.toDir, rels))).then(
      (codes) => {
        this.codes = codes;
        this.settled = true;
      },
      (err) => {
        this.failure = err;
        this.settled = true;
      },
    );
    return this.sent;
  }

  wait(): Promise<void> {
    return this.send();
  }
}
