import { errMessage } from '../../errors.js';
import { ImplReader } from '../../manifest/impl-io.js';
import type { PrevRecord } from '../../manifest/prev-record.js';
import type { Store } from '../../store/store.js';
import { comparePaths } from '../../util/bpath.js';
import type { Emit } from '../events.js';
import { implPath } from '../layout.js';

/**
 * Streams the previous impl for the merge-join, record by record in walk order. A previous impl
 * that cannot be read (at the start or halfway) becomes "no previous" from there on, with a
 * warning: the run then copies what it cannot link, and nothing is lost.
 */
export class PreviousImpl {
  private cur: PrevRecord | null = null;

  private constructor(
    private reader: ImplReader | null,
    private readonly emit: Emit,
  ) {}

  static async open(store: Store, name: string | null, emit: Emit): Promise<PreviousImpl> {
    if (!name) return new PreviousImpl(null, emit);
    try {
      const p = new PreviousImpl(await ImplReader.open(store, implPath(name)), emit);
      await p.step();
      return p;
    } catch (err) {
      emit({ event: 'warning', message: `previous impl ${name}.impl cannot be read (${errMessage(err)}): this run copies everything` });
      return new PreviousImpl(null, emit);
    }
  }

  /** Whether a previous impl is being read (then the walk can skip probing xattrs). */
  get present(): boolean {
    return this.reader !== null;
  }

  /** Advances; returns a promise only when input had to be read. */
  private step(): Promise<void> | undefined {
    if (!this.reader) {
      this.cur = null;
      return undefined;
    }
    try {
      const r = this.reader.nextRecordSync();
      if (r !== undefined) {
        this.cur = r;
        return undefined;
      }
    } catch (err) {
      this.broken(err);
      return undefined;
    }
    return this.reader.nextRecord().then(
      (r) => void (this.cur = r),
      (err) => this.broken(err),
    );
  }

  private broken(err: unknown): void {
    this.emit({ event: 'warning', message: `previous impl became unreadable (${errMessage(err)}): the rest of this run copies everything` });
    this.reader?.close();
    this.reader = null;
    this.cur = null;
  }

  /**
   * The previous record for `path` (or undefined); counts records passed over as removed.
   * Synchronous while the reader has lines at hand; a promise only when it had to read.
   */
  find(path: Buffer, onRemoved: () => void): PrevRecord | undefined | Promise<PrevRecord | undefined> {
    while (this.cur && comparePaths(this.cur.path, path) < 0) {
      onRemoved();
      const w = this.step();
      if (w) return w.then(() => this.find(path, onRemoved));
    }
    if (this.cur && this.cur.path.equals(path)) {
      const found = this.cur;
      const w = this.step();
      return w ? w.then(() => found) : found;
    }
    return undefined;
  }

  async rest(onRemoved: () => void): Promise<void> {
    while (this.cur) {
      onRemoved();
      await this.step();
    }
  }

  close(): void {
    this.reader?.close();
  }
}
