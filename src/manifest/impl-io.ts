import { createHash } from 'node:crypto';
import { PassThrough, type Readable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import zlib from 'node:zlib';
import { BakkerError } from '../errors.js';
import type { Store } from '../store/store.js';
import { comparePaths, display } from '../util/bpath.js';
import { decodeLine, encodeEntry, parseLine, type ImplHeader, type ImplTrailer } from './codec.js';
import { PrevRecord } from './prev-record.js';
import type { Entry } from './entry.js';

/**
 * Streams an impl: gunzip, split lines, decode. Memory stays flat: only one decoded chunk of
 * lines is held. Checks the header comes first and that entries are in strict walk order, so a
 * merge-join (or a restore) can rely on it.
 */
export class ImplReader {
  header!: ImplHeader;
  trailer: ImplTrailer | undefined;
  private lines: string[] = [];
  private idx = 0;
  private lineNo = 0;
  private rest = '';
  private done = false;
  private last: Buffer | undefined;
  private readonly iter: AsyncIterator<Buffer>;
  private readonly decoder = new StringDecoder('utf8');

  private constructor(private readonly source: Readable, readonly name: string) {
    const gunzip = zlib.createGunzip();
    source.on('error', (e) => gunzip.destroy(e));
    source.pipe(gunzip);
    this.iter = gunzip[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  }

  static async open(store: Store, p: Buffer): Promise<ImplReader> {
    let opened: { stream: Readable };
    try {
      opened = await store.openRead(p);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new BakkerError('NOT_FOUND', `impl ${p.toString()} is missing from the store`);
      throw err;
    }
    const r = new ImplReader(opened.stream, p.toString());
    const first = await r.nextLine();
    if (first === null) throw new BakkerError('IMPL', `impl ${r.name} is empty: the snapshot is damaged`);
    const d = decodeLine(first, 1);
    if (d.kind !== 'header') throw new BakkerError('IMPL', `impl ${r.name}: line 1 is not a header`);
    r.header = d.header;
    return r;
  }

  private async nextLine(): Promise<string | null> {
    while (this.idx >= this.lines.length) {
      if (this.done) return null;
      let res: IteratorResult<Buffer>;
      try {
        res = await this.iter.next();
      } catch (err) {
        throw new BakkerError('IMPL', `impl ${this.name} cannot be read (${(err as Error).message}): the file is corrupt or truncated`, { cause: err });
      }
      if (res.done) {
        this.done = true;
        const tail = this.rest + this.decoder.end();
        this.rest = '';
        this.lines = tail.length ? [tail] : [];
        this.idx = 0;
        continue;
      }
      const text = this.rest + this.decoder.write(res.value);
      const parts = text.split('\n');
      this.rest = parts.pop() ?? '';
      this.lines = parts;
      this.idx = 0;
    }
    this.lineNo++;
    return this.lines[this.idx++]!;
  }

  /** The number of the line last read (1: the header). */
  get line(): number {
    return this.lineNo;
  }

  /** The next line as it is, without decoding: undefined when more input must be read first (then call rawLine()), null at the end. */
  rawLineSync(): string | null | undefined {
    if (this.idx >= this.lines.length) return this.done ? null : undefined;
    this.lineNo++;
    return this.lines[this.idx++]!;
  }

  /** The next line as it is, or null at the end. */
  rawLine(): Promise<string | null> {
    return this.nextLine();
  }

  /** Decodes a line read raw (line number `lineNo`): its record, or undefined for the trailer. */
  parse(line: string, lineNo: number): PrevRecord | undefined {
    return this.record(line, lineNo);
  }

  /**
   * The next entry if it can be had without waiting: an Entry, null at the end, or undefined
   * when more input must be read first (then call next()).
   */
  nextRecordSync(): PrevRecord | null | undefined {
    for (;;) {
      if (this.idx >= this.lines.length) return this.done ? null : undefined;
      this.lineNo++;
      const line = this.lines[this.idx++]!;
      if (line === '') continue;
      const r = this.record(line, this.lineNo);
      if (r) return r;
    }
  }

  /** The next record in walk order (decoded lazily), or null at the end. */
  async nextRecord(): Promise<PrevRecord | null> {
    for (;;) {
      const line = await this.nextLine();
      if (line === null) return null;
      if (line === '') continue;
      const r = this.record(line, this.lineNo);
      if (r) return r;
    }
  }

  private record(line: string, lineNo: number): PrevRecord | undefined {
    const d = parseLine(line, lineNo);
    if (d.kind === 'trailer') {
      this.trailer = d.trailer;
      return undefined;
    }
    if (d.kind === 'header') throw new BakkerError('IMPL', `impl ${this.name} line ${lineNo}: a second header`);
    if (this.trailer) throw new BakkerError('IMPL', `impl ${this.name} line ${lineNo}: an entry after the trailer`);
    const r = new PrevRecord(d.o, line, lineNo);
    if (this.last && comparePaths(this.last, r.path) >= 0) {
      throw new BakkerError('IMPL', `impl ${this.name} line ${lineNo}: ${display(r.path)} is out of order: the impl is corrupt or was altered`);
    }
    this.last = r.path;
    return r;
  }

  /** The next entry in walk order, fully decoded, or null at the end (then `trailer` is set if the impl has one). */
  async next(): Promise<Entry | null> {
    const r = await this.nextRecord();
    return r ? r.entry() : null;
  }

  close(): void {
    this.source.destroy();
  }
}

/** Writes an impl as gzip-compressed JSON lines through the store (temp + fsync + rename). */
export class ImplWriter {
  private buf = '';
  private readonly gzip: zlib.Gzip;
  private readonly done: Promise<void>;
  private failure: unknown;
  count = 0;
  /** sha256 of the file's bytes (complete once close() resolved). */
  private readonly sha = createHash('sha256');

  constructor(store: Store, p: Buffer, header: ImplHeader) {
    // Level 1: the impl is written on every run and read on the next; speed beats a few % of size.
    this.gzip = zlib.createGzip({ level: 1 });
    const out = new PassThrough();
    this.gzip.pipe(out);
    this.gzip.on('data', (c: Buffer) => this.sha.update(c)); // alongside the pipe, which made it flowing
    this.done = store.writeFile(p, out).catch((err) => {
      this.failure = err;
      this.gzip.destroy();
      throw err;
    });
    this.done.catch(() => undefined);
    this.buf = JSON.stringify(header) + '\n';
  }

  /** Returns a promise only when the compressor is full and the caller must wait. */
  write(e: Entry): Promise<void> | undefined {
    this.buf += (e.raw ?? encodeEntry(e)) + '\n';
    this.count++;
    return this.buf.length >= 65536 ? this.flush() : undefined;
  }

  /** Writes `count` entry lines as they are (`text` ends with a newline). */
  writeLines(text: string, count: number): Promise<void> | undefined {
    this.buf += text;
    this.count += count;
    return this.buf.length >= 65536 ? this.flush() : undefined;
  }

  /** The file's sha256 (hex), once close() resolved. */
  digest(): string {
    return this.sha.digest('hex');
  }

  private flush(): Promise<void> | undefined {
    if (this.failure) throw this.failure;
    const chunk = this.buf;
    this.buf = '';
    if (this.gzip.write(chunk)) return undefined;
    return new Promise<void>((res) => this.gzip.once('drain', res));
  }

  async close(trailer: ImplTrailer): Promise<void> {
    this.buf += JSON.stringify(trailer) + '\n';
    await this.flush();
    this.gzip.end();
    await this.done;
  }

  abort(): void {
    this.gzip.destroy();
  }
}
