import type { Entry } from '../../manifest/entry.js';

interface Item {
  entry: Entry;
  settled: boolean;
  keep: boolean;
  wait?: Promise<unknown>;
}

/**
 * Keeps impl records in walk order while the work for them (copy, link) finishes in any order.
 * `push` takes the entry and, optionally, the promise of its work, which resolves to whether the
 * entry made it into the snapshot (false: vanished or unreadable, so it is left out of the impl).
 * At most `limit` items wait; push() then waits for the oldest. The first failure of any work
 * is re-thrown by the next push() or by drain(): a store error aborts the run.
 */
export class OrderedQueue {
  private readonly items: Item[] = [];
  private head = 0;
  private failure: unknown;
  private failed = false;

  constructor(
    private readonly write: (e: Entry) => Promise<void>,
    private readonly limit: number,
  ) {}

  async push(entry: Entry, work?: Promise<boolean>): Promise<void> {
    this.check();
    const item: Item = { entry, settled: work === undefined, keep: true };
    if (work) {
      item.wait = work.then(
        (keep) => {
          item.keep = keep;
          item.settled = true;
        },
        (err) => {
          item.settled = true;
          item.keep = false;
          if (!this.failed) {
            this.failed = true;
            this.failure = err;
          }
        },
      );
    }
    this.items.push(item);
    await this.flush(this.limit);
  }

  private check(): void {
    if (this.failed) throw this.failure;
  }

  private async flush(allowed: number): Promise<void> {
    for (;;) {
      const item = this.items[this.head];
      if (!item) break;
      const waiting = this.items.length - this.head;
      if (!item.settled) {
        if (waiting <= allowed) break;
        await item.wait;
        this.check();
      }
      if (item.keep) await this.write(item.entry);
      this.items[this.head++] = undefined as unknown as Item;
      if (this.head > 4096) {
        this.items.splice(0, this.head);
        this.head = 0;
      }
    }
    this.check();
  }

  /** Waits for all work and writes every remaining record. */
  async drain(): Promise<void> {
    await this.flush(0);
  }

  /** Waits for in-flight work without writing (used when the run is abandoned). */
  async settle(): Promise<void> {
    await Promise.all(this.items.slice(this.head).map((i) => i.wait));
  }
}
