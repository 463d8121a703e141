import { BakkerError, errMessage } from '../../errors.js';
import { ImplReader } from '../../manifest/impl-io.js';
import type { PrevRecord } from '../../manifest/prev-record.js';
import type { Store } from '../../store/store.js';
import { comparePaths } from '../../util/bpath.js';
import type { Emit } from '../events.js';
import { implPath } from '../layout.js';

/** The line under the cursor: its entry number, and its record once decoded. */
interface Cursor {
  line: Buffer;
  lineNo: number;
  ordinal: number;
  rec?: PrevRecord;
}

const TRAILER_START = Buffer.from('{"trailer"');

/**
 * Streams the previous impl for the merge-join, line by line in walk order. Lines are decoded
 * only when needed: find() decodes to compare paths; on the fast path, takeLine() hands over
 * the line of an unchanged entry as it is. A previous impl that cannot be read (at the start or
 * halfway) becomes "no previous" from there on, with a warning: the run then copies what it
 * cannot link, and nothing is lost.
 */
export class PreviousImpl {
  private cur: Cursor | null = null;
  private nextOrdinal = 0;

  private constructor(
    private reader: ImplReader | null,
    private readonly emit: Emit,
  ) {}

  static async open(store: Store, name: string | null, emit: Emit, opts: { hash?: boolean } = {}): Promise<PreviousImpl> {
    if (!name) return new PreviousImpl(null, emit);
    try {
      const p = new PreviousImpl(await ImplReader.open(store, implPath(name), opts), emit);
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

  /** Takes one raw line; true when the cursor is set (or the end reached). */
  private accept(line: Buffer | null): boolean {
    if (line === null) {
      this.cur = null;
      return true;
    }
    if (line.length === 0) return false;
    if (line.length >= TRAILER_START.length && line.compare(TRAILER_START, 0, TRAILER_START.length, 0, TRAILER_START.length) === 0) {
      this.reader!.parse(line, this.reader!.line);
      this.cur = null;
      return true;
    }
    this.cur = { line, lineNo: this.reader!.line, ordinal: this.nextOrdinal++ };
    return true;
  }

  /** Advances; returns a promise only when input had to be read. */
  private step(): Promise<void> | undefined {
    const reader = this.reader;
    if (!reader) {
      this.cur = null;
      return undefined;
    }
    try {
      for (;;) {
        const line = reader.rawLineSync();
        if (line === undefined) break;
        if (this.accept(line)) return undefined;
      }
    } catch (err) {
      this.broken(err);
      return undefined;
    }
    return reader
      .rawLine()
      .then((line) => {
        if (!this.accept(line)) return this.step();
      })
      .catch((err) => this.broken(err));
  }

  private broken(err: unknown): void {
    this.emit({ event: 'warning', message: `previous impl became unreadable (${errMessage(err)}): the rest of this run copies everything` });
    this.reader?.close();
    this.reader = null;
    this.cur = null;
  }

  /** The record under the cursor, decoded (undefined, and "no previous" from here on, when malformed). */
  private record(c: Cursor): PrevRecord | undefined {
    if (c.rec) return c.rec;
    try {
      c.rec = this.reader!.parse(c.line, c.lineNo);
      if (!c.rec) this.cur = null;
      return c.rec;
    } catch (err) {
      this.broken(err);
      return undefined;
    }
  }

  /**
   * The previous record for `path` (or undefined); counts records passed over as removed.
   * Synchronous while the reader has lines at hand; a promise only when it had to read.
   */
  find(path: Buffer, onRemoved: () => void): PrevRecord | undefined | Promise<PrevRecord | undefined> {
    for (;;) {
      const c = this.cur;
      if (!c) return undefined;
      const r = this.record(c);
      if (!r) return undefined;
      const order = comparePaths(r.path, path);
      if (order > 0) return undefined;
      const w = this.step();
      if (order === 0) return w ? w.then(() => r) : r;
      onRemoved();
      if (w) return w.then(() => this.find(path, onRemoved));
    }
  }

  /**
   * Moves to entry number `ordinal` (those passed over were removed) and returns its line as it
   * is, or its decoded record with `decode`. The entry must be there: the index said so.
   */
  take(ordinal: number, onRemoved: () => void, decode: true): PrevRecord | Promise<PrevRecord>;
  take(ordinal: number, onRemoved: () => void, decode: false): Buffer | Promise<Buffer>;
  take(ordinal: number, onRemoved: () => void, decode: boolean): Buffer | PrevRecord | Promise<Buffer | PrevRecord> {
    for (;;) {
      const c = this.cur;
      if (!c || c.ordinal > ordinal) throw mismatch(ordinal);
      if (c.ordinal < ordinal) {
        onRemoved();
        const w = this.step();
        if (w) return w.then(() => this.take(ordinal, onRemoved, decode as false));
        continue;
      }
      let out: Buffer | PrevRecord = c.line;
      if (decode) {
        const r = this.record(c);
        if (!r) throw mismatch(ordinal);
        out = r;
      }
      const w = this.step();
      return w ? w.then(() => out) : out;
    }
  }

  async rest(onRemoved: () => void): Promise<void> {
    while (this.cur) {
      onRemoved();
      await this.step();
    }
  }

  /** Opened with `hash`, once rest() resolved: the impl file's sha256 and size; null when it became unreadable. */
  async digest(): Promise<{ sha256: string; bytes: number } | null> {
    return this.reader ? this.reader.digest().catch(() => null) : null;
  }

  close(): void {
    this.reader?.close();
  }
}

function mismatch(ordinal: number): BakkerError {
  return new BakkerError('IMPL', `the previous snapshot's index names impl entry ${ordinal}, which the impl does not have: the index is damaged; remove .bakker/index/ in the store and run again`);
}
