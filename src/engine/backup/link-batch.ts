import type { Store } from '../../store/store.js';
import type { Semaphore } from '../../util/semaphore.js';
import { LazyJob } from './ordered-queue.js';

/**
 * Hard links of unchanged entries from the previous snapshot (`fromDir/rel` to `toDir/rel`),
 * sent to the store together: one Job shared by every entry in the batch, so the common case
 * costs no promise per entry. A batch runs once a slot is free (the directories it links into
 * exist: a store's mkdir is ordered); after that it takes no more links.
 */
export class LinkBatch extends LazyJob<(string | null)[]> {
  private rels: Buffer[] = [];
  private count = 0;

  constructor(store: Store, fromDir: Buffer, toDir: Buffer, slots: Semaphore) {
    const batch: { self?: LinkBatch } = {};
    super(() => {
      const self = batch.self!;
      const rels = self.rels;
      self.rels = []; // entries waiting on this batch keep it alive: do not keep the paths too
      return slots.run(() => store.linkMany!(fromDir, toDir, rels));
    });
    batch.self = this;
  }

  get size(): number {
    return this.count;
  }

  add(rel: Buffer): number {
    if (!this.idle) throw new Error('internal: link added to a batch already sent');
    this.count++;
    return this.rels.push(rel) - 1;
  }

  /** null when link `i` was made, else its error code; only once the batch settled. */
  code(i: number): string | null {
    const c = this.value?.[i];
    if (c === undefined) throw new Error(`internal: no result for link ${i} of ${this.count}`);
    return c;
  }

  /** Sends the batch now (waiting on it does too). */
  send(): void {
    void this.wait();
  }
}
