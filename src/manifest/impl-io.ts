import { createHash } from 'node:crypto';
import { PassThrough, type Readable } from 'node:stream';
import zlib from 'node:zlib';
import { BakkerError } from '../errors.js';
import type { Store } from '../store/store.js';
import { comparePaths, display } from '../util/bpath.js';
import { decodeLine, encodeEntryTo, LineSink, parseLine, type ImplHeader, type ImplTrailer } from './codec.js';
import { PrevRecord } from './prev-record.js';
import type { Entry } from './entry.js';

/** Decompressed bytes an ImplReader keeps ready ahead of its reader. */
const AHEAD = 256 * 1024;

/**
 * Streams an impl: gunzip, split lines, decode. Memory stays flat: only one decoded chunk of
 * lines is held. Checks the header comes first and that entries are in strict walk order, so a
 * merge-join (or a restore) can rely on it.
 */
export class ImplReader {
  header!: ImplHeader;
  trailer: ImplTrailer | undefined;
  /** The chunk being split into lines, from `pos`; a line begun in an earlier chunk is in `rest`. */
  private chunk: Buffer | null = null;
  private pos = 0;
  private rest: Buffer | null = null;
  private lineNo = 0;
  private done = false;
  private last: Buffer | undefined;
  /** Decompressed chunks not split yet (`ahead` bytes), oldest first. */
  private readonly chunks: Buffer[] = [];
  private ahead = 0;
  private ended = false;
  private failure: unknown;
  private wake: (() => void) | null = null;
  private readonly gunzip: zlib.Gunzip;
  /** sha256 and size of the file's bytes as read, when asked for (see digest()). */
  private readonly sha: ReturnType<typeof createHash> | null;
  private bytes = 0;

  private constructor(private readonly source: Readable, readonly name: string, hash: boolean) {
    // Decompressed ahead of the reader (up to 256 KiB, 64 KiB per thread-pool job): else each
    // 16 KiB of lines waits its turn on the thread pool (behind directory scans) when the walk
    // needs it. Taken chunk by chunk as zlib made them: a stream's read() (and its async
    // iterator) hands over all it has buffered as one new Buffer, a copy of every byte (25 MB
    // of garbage in a 100k-entry incremental). Not bigger chunks: an unchanged line waiting in
    // the backup's queue keeps its whole chunk alive (with 1 MiB chunks, 4-6 MB of the peak).
    const gunzip = (this.gunzip = zlib.createGunzip({ chunkSize: 64 * 1024 }));
    gunzip.on('data', (c: Buffer) => {
      this.chunks.push(c);
      this.ahead += c.length;
      if (this.ahead >= AHEAD) gunzip.pause();
      this.wakeUp();
    });
    gunzip.on('end', () => {
      this.ended = true;
      this.wakeUp();
    });
    gunzip.on('error', (e) => {
      this.failure ??= e;
      this.wakeUp();
    });
    source.on('error', (e) => gunzip.destroy(e));
    this.sha = hash ? createHash('sha256') : null;
    if (this.sha) {
      const sha = this.sha;
      source.on('data', (c: Buffer) => {
        sha.update(c);
        this.bytes += c.length;
      });
    }
    source.pipe(gunzip);
  }

  private wakeUp(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  /** The next decompressed chunk, or null at the end; throws what broke the stream. */
  private async nextChunk(): Promise<Buffer | null> {
    for (;;) {
      const c = this.chunks.shift();
      if (c) {
        this.ahead -= c.length;
        if (this.ahead < AHEAD && this.gunzip.isPaused()) this.gunzip.resume();
        return c;
      }
      if (this.failure !== undefined) throw this.failure;
      if (this.ended) return null;
      await new Promise<void>((res) => (this.wake = res));
    }
  }

  static async open(store: Store, p: Buffer, opts: { hash?: boolean } = {}): Promise<ImplReader> {
    let opened: { stream: Readable };
    try {
      opened = await store.openRead(p);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new BakkerError('NOT_FOUND', `impl ${p.toString()} is missing from the store`);
      throw err;
    }
    const r = new ImplReader(opened.stream, p.toString(), opts.hash === true);
    const first = await r.rawLine();
    if (first === null) throw new BakkerError('IMPL', `impl ${r.name} is empty: the snapshot is damaged`);
    const d = decodeLine(first.toString('utf8'), 1);
    if (d.kind !== 'header') throw new BakkerError('IMPL', `impl ${r.name}: line 1 is not a header`);
    r.header = d.header;
    return r;
  }

  /** The number of the line last read (1: the header). */
  get line(): number {
    return this.lineNo;
  }

  /**
   * The next line's bytes (without its newline), not decoded: undefined when more input must be
   * read first (then call rawLine()), null at the end. Lines are split on bytes, which is exact
   * for UTF-8 (a newline byte is never part of another character).
   */
  rawLineSync(): Buffer | null | undefined {
    const chunk = this.chunk;
    if (chunk === null) {
      if (!this.done) return undefined;
      const tail = this.rest;
      this.rest = null;
      if (tail === null || tail.length === 0) return null;
      this.lineNo++;
      return tail;
    }
    const nl = chunk.indexOf(10, this.pos);
    if (nl < 0) {
      const part = chunk.subarray(this.pos);
      this.rest = this.rest ? Buffer.concat([this.rest, part]) : Buffer.from(part); // a copy: the chunk may go
      this.chunk = null;
      return this.rawLineSync();
    }
    let line = chunk.subarray(this.pos, nl);
    this.pos = nl + 1;
    if (this.pos >= chunk.length) this.chunk = null;
    if (this.rest) {
      line = Buffer.concat([this.rest, line]);
      this.rest = null;
    }
    this.lineNo++;
    return line;
  }

  /** The next line's bytes, or null at the end. */
  async rawLine(): Promise<Buffer | null> {
    for (;;) {
      const line = this.rawLineSync();
      if (line !== undefined) return line;
      let c: Buffer | null;
      try {
        c = await this.nextChunk();
      } catch (err) {
        if (err instanceof BakkerError) throw err; // said already (an encrypted impl: a wrong identity, an altered file)
        throw new BakkerError('IMPL', `impl ${this.name} cannot be read (${(err as Error).message}): the file is corrupt or truncated`, { cause: err });
      }
      if (c === null) this.done = true;
      else if (c.length > 0) {
        this.chunk = c;
        this.pos = 0;
      }
    }
  }

  /** Decodes a line read raw (line number `lineNo`): its record, or undefined for the trailer. */
  parse(line: Buffer, lineNo: number): PrevRecord | undefined {
    return this.record(line, lineNo);
  }

  /**
   * The next entry if it can be had without waiting: an Entry, null at the end, or undefined
   * when more input must be read first (then call next()).
   */
  nextRecordSync(): PrevRecord | null | undefined {
    for (;;) {
      const line = this.rawLineSync();
      if (line === undefined || line === null) return line;
      if (line.length === 0) continue;
      const r = this.record(line, this.lineNo);
      if (r) return r;
    }
  }

  /** The next record in walk order (decoded lazily), or null at the end. */
  async nextRecord(): Promise<PrevRecord | null> {
    for (;;) {
      const line = await this.rawLine();
      if (line === null) return null;
      if (line.length === 0) continue;
      const r = this.record(line, this.lineNo);
      if (r) return r;
    }
  }

  private record(line: Buffer, lineNo: number): PrevRecord | undefined {
    const d = parseLine(line.toString('utf8'), lineNo);
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

  /** With `hash`: reads what is left (after the trailer, nothing) and returns the file's sha256 (hex) and size; else null. */
  async digest(): Promise<{ sha256: string; bytes: number } | null> {
    if (!this.sha) return null;
    while ((await this.rawLine()) !== null);
    return { sha256: this.sha.digest('hex'), bytes: this.bytes };
  }

  close(): void {
    this.source.destroy();
  }
}

/** Writes an impl as gzip-compressed JSON lines through the store (temp + fsync + rename). */
export class ImplWriter {
  /** Bytes waiting to be compressed (handed on in chunks of about 64 KiB). */
  private readonly sink = new LineSink(96 * 1024);
  private readonly gzip: zlib.Gzip;
  private readonly done: Promise<void>;
  private failure: unknown;
  count = 0;
  /** sha256 and size of the file's bytes (complete once close() resolved). */
  private readonly sha = createHash('sha256');
  bytes = 0;

  constructor(store: Store, p: Buffer, header: ImplHeader) {
    // Level 1: the impl is written on every run and read on the next; speed beats a few % of size.
    this.gzip = zlib.createGzip({ level: 1 });
    const out = new PassThrough();
    this.gzip.pipe(out);
    this.gzip.on('data', (c: Buffer) => {
      // alongside the pipe, which made it flowing
      this.sha.update(c);
      this.bytes += c.length;
    });
    this.done = store.writeFile(p, out).catch((err) => {
      this.failure = err;
      this.gzip.destroy();
      throw err;
    });
    this.done.catch(() => undefined);
    this.sink.text(JSON.stringify(header) + '\n');
  }

  /** Returns a promise only when the compressor is full and the caller must wait. */
  write(e: Entry): Promise<void> | undefined {
    if (e.raw) {
      this.sink.bytes(e.raw);
      this.sink.byte(10);
    } else encodeEntryTo(e, this.sink);
    this.count++;
    return this.sink.pos >= 65536 ? this.flush() : undefined;
  }

  /** Writes entry lines as they are (their bytes, without newlines). */
  writeLines(lines: Buffer[]): Promise<void> | undefined {
    for (const l of lines) {
      this.sink.bytes(l);
      this.sink.byte(10);
    }
    this.count += lines.length;
    return this.sink.pos >= 65536 ? this.flush() : undefined;
  }

  /** The file's sha256 (hex), once close() resolved. */
  digest(): string {
    return this.sha.digest('hex');
  }

  private flush(): Promise<void> | undefined {
    if (this.failure) throw this.failure;
    // The buffer goes back to the sink once zlib has read it (not on a failure: the run ends).
    const chunk = this.sink.take();
    if (this.gzip.write(chunk, (err) => err || this.sink.recycle(chunk))) return undefined;
    return new Promise<void>((res) => this.gzip.once('drain', res));
  }

  async close(trailer: ImplTrailer): Promise<void> {
    this.sink.text(JSON.stringify(trailer) + '\n');
    await this.flush();
    this.gzip.end();
    await this.done;
  }

  abort(): void {
    this.gzip.destroy();
  }
}
