import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { errMessage } from '../../errors.js';
import type { Entry } from '../../manifest/entry.js';
import { nsNsec, nsSec } from '../../manifest/time.js';
import type { Store } from '../../store/store.js';
import { b, OPEN_READ } from '../../store/store.js';
import { join } from '../../util/bpath.js';
import type { Emit } from '../events.js';
import { META, mkdirIfMissing } from '../layout.js';
import { LocalStore } from '../../store/local/local-store.js';

/**
 * The snapshot index (docs/DESIGN.md, "Previous index"): beside the newest impl, a binary copy of
 * what the next run compares, grouped by directory, so that the native scan of a directory can
 * find the previous records of its children and link what is unchanged itself. It is only an
 * accelerator: a missing, stale or damaged index (or one written under other options) is ignored
 * and the run takes the ordinary path, which compares against the impl.
 *
 * File: blocks (one per directory; records as in src/native/bakker_native.c), then the directory
 * table (u32 path length, path, f64 offset, u32 length per directory), then a JSON meta line,
 * then a 24-byte trailer: f64 table offset, f64 meta offset, "BKIDX001".
 */
export const INDEX_DIR = b(`${META}/index`);
export const indexPath = (name: string) => join(INDEX_DIR, b(name));
const MAGIC = 'BKIDX001';
const TRAILER = 24;

/** Offsets inside a record (must match the C side). */
const R_TYPE = 4;
const R_FLAGS = 5;
const R_MODE = 8;
const R_UID = 12;
const R_GID = 16;
const R_ORDINAL = 20;
const R_SIZE = 24;
const R_MTS = 32;
const R_MTNS = 40;
const R_CTNS = 44;
const R_CTS = 48;
const REUSABLE = 1;
/** An ordinal meaning "not in the impl". */
export const NO_ORDINAL = 0xffffffff;
const SPARSE = 2;
const TYPE_CODE: Record<string, number> = { file: 1, symlink: 2, dir: 3 };

export interface IndexMeta {
  format: 1;
  snapshot: string;
  /** sha256 of the impl file's bytes: the index is used only with exactly that impl. */
  impl: string;
  /** The impl file's size and mtime (a remote store's impl is checked by these first, by sha256 as it is read). */
  implBytes?: number;
  implMtime?: string;
  entries: number;
  /** What the walk depended on (sources, excludes, owner names, ...): a change turns the index off. */
  fingerprint: string;
  /** sha256 of the blocks and the directory table (set by the writer). */
  sha256?: string;
}

/** A fingerprint of what decides the walk and the impl lines, besides the files themselves. */
export function walkFingerprint(parts: Record<string, unknown>): string {
  const h = createHash('sha256');
  h.update(JSON.stringify(parts));
  for (const f of ['/etc/passwd', '/etc/group']) {
    try {
      h.update(fs.readFileSync(f));
    } catch {
      h.update('-');
    }
  }
  return h.digest('hex');
}

/** Sets a record's ordinal (the entry's number in the new impl). */
export function setOrdinal(block: Buffer, off: number, ordinal: number): void {
  block.writeUInt32LE(ordinal, off + R_ORDINAL);
}

/**
 * Rewrites a record from the entry as written to the impl (for entries the engine handled
 * itself), marking whether the next run may take its line as it is.
 */
export function setRecord(block: Buffer, off: number, e: Entry, ordinal: number): void {
  const reusable = (e.type === 'file' || e.type === 'symlink') && e.changing !== true && e.hardlink === undefined;
  block[off + R_TYPE] = TYPE_CODE[e.type] ?? 4;
  block[off + R_FLAGS] = (reusable ? REUSABLE : 0) | (e.sparse ? SPARSE : 0);
  block.writeUInt32LE(e.mode, off + R_MODE);
  block.writeUInt32LE(e.uid, off + R_UID);
  block.writeUInt32LE(e.gid, off + R_GID);
  block.writeUInt32LE(ordinal, off + R_ORDINAL);
  block.writeDoubleLE(e.size, off + R_SIZE);
  writeI64(block, nsSec(e.mtime), off + R_MTS);
  block.writeUInt32LE(nsNsec(e.mtime), off + R_MTNS);
  block.writeUInt32LE(nsNsec(e.ctime), off + R_CTNS);
  writeI64(block, nsSec(e.ctime), off + R_CTS);
}

/** A whole number of seconds as a little-endian int64, without a BigInt per call. */
function writeI64(b: Buffer, v: number, at: number): void {
  b.writeUInt32LE(v >>> 0, at);
  b.writeInt32LE(Math.floor(v / 0x1_0000_0000), at + 4);
}

/** Streams the next snapshot's index to the store as directory blocks complete. */
export class IndexWriter {
  private readonly out = new PassThrough();
  private readonly done: Promise<void>;
  /**
   * The directory table, kept in one growing buffer: a small Buffer per directory would come
   * from Node's pool and pin a whole 8 KiB slab each (22 MB at 2,860 directories).
   */
  private table = Buffer.allocUnsafeSlow(1 << 16);
  private tableLen = 0;
  private offset = 0;
  private failed = false;
  private readonly sha = createHash('sha256');
  private pending: Buffer[] = [];
  private pendingBytes = 0;

  constructor(store: Store, p: Buffer) {
    this.done = store.writeFile(p, this.out);
    this.done.catch(() => void (this.failed = true));
  }

  /** Adds a directory's records (its children, sorted by name, ordinals set). */
  addBlock(rel: Buffer, block: Buffer): void | Promise<void> {
    if (this.failed) return;
    const need = this.tableLen + 4 + rel.length + 12;
    if (need > this.table.length) {
      const grown = Buffer.allocUnsafeSlow(Math.max(need, this.table.length * 2));
      this.table.copy(grown, 0, 0, this.tableLen);
      this.table = grown;
    }
    const t = this.table;
    let at = this.tableLen;
    at = t.writeUInt32LE(rel.length, at);
    at += rel.copy(t, at);
    at = t.writeDoubleLE(this.offset, at);
    this.tableLen = t.writeUInt32LE(block.length, at);
    this.offset += block.length;
    this.sha.update(block);
    // Written in chunks of about 256 KiB: a write per directory costs a thread hop each.
    this.pending.push(block);
    this.pendingBytes += block.length;
    if (this.pendingBytes >= 1 << 18) return this.flush();
  }

  private flush(): void | Promise<void> {
    if (this.pending.length === 0) return;
    const chunk = Buffer.concat(this.pending);
    this.pending = [];
    this.pendingBytes = 0;
    if (!this.out.write(chunk)) return new Promise((res) => this.out.once('drain', res));
  }

  async close(meta: IndexMeta): Promise<void> {
    const tableOff = this.offset;
    const table = this.table.subarray(0, this.tableLen);
    this.sha.update(table);
    const metaBuf = Buffer.from(JSON.stringify({ ...meta, sha256: this.sha.digest('hex') }) + '\n');
    const trailer = Buffer.alloc(TRAILER);
    trailer.writeDoubleLE(tableOff, 0);
    trailer.writeDoubleLE(tableOff + table.length, 8);
    trailer.write(MAGIC, 16, 'latin1');
    this.out.end(Buffer.concat([...this.pending, table, metaBuf, trailer]));
    this.pending = [];
    await this.done;
  }

  abort(): void {
    this.out.destroy();
  }
}

function readAt(fd: number, at: number, len: number): Buffer {
  const buf = Buffer.alloc(len);
  if (fs.readSync(fd, buf, 0, len, at) !== len) throw new Error('short read');
  return buf;
}

/** The previous snapshot's index, read a directory block at a time. */
export class IndexReader {
  private constructor(
    private readonly fd: number,
    private readonly dirs: Map<string, [number, number]>,
    readonly meta: IndexMeta,
  ) {}

  /**
   * Opens the index file `file` of `snapshot` when it is there, intact and made under the same
   * walk fingerprint, and `checkImpl` accepts the impl it was made with (it throws otherwise);
   * else null (the run then compares against the impl).
   */
  static async open(file: string, snapshot: string, fingerprint: string, checkImpl: (meta: IndexMeta) => Promise<void>, emit: Emit): Promise<IndexReader | null> {
    let fd: number;
    try {
      fd = fs.openSync(file, OPEN_READ);
    } catch {
      return null; // none (an older run, or removed): the ordinary path
    }
    try {
      const size = fs.fstatSync(fd).size;
      if (size < TRAILER) throw new Error('too short');
      const tr = Buffer.alloc(TRAILER);
      fs.readSync(fd, tr, 0, TRAILER, size - TRAILER);
      if (tr.toString('latin1', 16) !== MAGIC) throw new Error('bad trailer');
      const tableOff = tr.readDoubleLE(0);
      const metaOff = tr.readDoubleLE(8);
      if (!(tableOff >= 0 && tableOff <= metaOff && metaOff <= size - TRAILER)) throw new Error('bad offsets');
      const meta = JSON.parse(readAt(fd, metaOff, size - TRAILER - metaOff).toString('utf8')) as IndexMeta;
      if (meta.format !== 1 || meta.snapshot !== snapshot || meta.fingerprint !== fingerprint) {
        fs.closeSync(fd);
        if (meta.format === 1 && meta.snapshot === snapshot) {
          emit({ event: 'info', message: `the index of ${snapshot} was made under other sources, excludes or user and group tables (/etc/passwd, /etc/group): this run compares against the impl (slower) and writes a new index` });
        }
        return null;
      }
      // Intact? (a few ms per 100k entries; a damaged index must never name a wrong line)
      const sha = createHash('sha256');
      const piece = Buffer.allocUnsafeSlow(Math.min(1 << 20, Math.max(metaOff, 1)));
      for (let at = 0; at < metaOff; at += piece.length) {
        const n = Math.min(piece.length, metaOff - at);
        if (fs.readSync(fd, piece, 0, n, at) !== n) throw new Error('short read');
        sha.update(piece.subarray(0, n));
      }
      if (sha.digest('hex') !== meta.sha256) throw new Error('its checksum does not match');
      const rest = readAt(fd, tableOff, metaOff - tableOff);
      await checkImpl(meta);
      const dirs = new Map<string, [number, number]>();
      const end = metaOff - tableOff;
      for (let o = 0; o < end; ) {
        const len = rest.readUInt32LE(o);
        const key = rest.toString('latin1', o + 4, o + 4 + len);
        const off = rest.readDoubleLE(o + 4 + len);
        const blen = rest.readUInt32LE(o + 12 + len);
        if (off + blen > tableOff) throw new Error('block out of range');
        dirs.set(key, [off, blen]);
        o += 16 + len;
      }
      return new IndexReader(fd, dirs, meta);
    } catch (err) {
      fs.closeSync(fd);
      emit({ event: 'info', message: `the index of ${snapshot} is not usable (${errMessage(err)}): this run compares against the impl` });
      return null;
    }
  }

  /** The records of the children of directory `rel` (relative to the snapshot), or null. */
  block(rel: Buffer): Buffer | null {
    const at = this.dirs.get(rel.toString('latin1'));
    if (!at) return null;
    const buf = Buffer.allocUnsafe(at[1]);
    fs.readSync(this.fd, buf, 0, at[1], at[0]);
    return buf;
  }

  close(): void {
    fs.closeSync(this.fd);
  }
}

/**
 * Where a store's indexes live. A local store keeps them in its own .bakker/index/ (the run
 * writes one into its folder, published with the snapshot). A remote store's index is kept on
 * this server, in the state dir (BAKKER_STATE_DIR, else /var/lib/bakker) under index/ and a hash
 * of the store's address: reading it costs no transfer, and the remote impl it was made with is
 * checked by size before the run and by sha256 as the run reads it (a mismatch fails the run
 * before anything is published, and drops the index).
 */
export class IndexPlace {
  private constructor(
    /** The local folder holding published indexes. */
    readonly dir: string,
    private readonly store: Store,
    readonly remote: boolean,
  ) {}

  static for(store: Store, stateDir: string): IndexPlace | null {
    if (store.localRoot) return new IndexPlace(path.join(store.localRoot, INDEX_DIR.toString('latin1')), store, false);
    const dir = path.join(stateDir, 'index', createHash('sha256').update(store.url).digest('hex').slice(0, 32));
    try {
      fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
      fs.accessSync(dir, fs.constants.W_OK);
    } catch {
      return null; // no state dir to keep it in: the ordinary path
    }
    return new IndexPlace(dir, new LocalStore(dir), true);
  }

  file(name: string): string {
    return path.join(this.dir, name);
  }

  /** Starts writing the index of snapshot `name` (in the run's folder `runDir` on a local store). */
  writer(name: string, runDir: Buffer): IndexWriter {
    return this.remote ? new IndexWriter(this.store, b(`.run-${name}`)) : new IndexWriter(this.store, join(runDir, 'index'));
  }

  /**
   * A local store: moves the run's index into .bakker/index/ (before the impl, the commit point).
   * A remote one: keeps the index, once the snapshot is published.
   */
  async publish(name: string, runDir: Buffer): Promise<void> {
    if (this.remote) return this.store.rename(b(`.run-${name}`), b(name));
    await mkdirIfMissing(this.store, INDEX_DIR);
    await this.store.rename(join(runDir, 'index'), indexPath(name));
  }

  /** Only the newest snapshot's index is ever read: older ones (and any a failed run left) go. */
  async keepOnly(name: string): Promise<void> {
    const base = this.remote ? Buffer.alloc(0) : INDEX_DIR;
    for (const other of await this.store.readdir(base).catch(() => [])) {
      if (other.toString('latin1') !== name) await this.store.remove(join(base, other)).catch(() => undefined);
    }
  }

  /**
   * The index of `name` made to match a rewritten impl (a prune merged into it; its entries and
   * their order are the same): prepares the new file now and returns what puts it in place
   * (called right after the new impl is). Null when there is no usable index of `name`.
   */
  rebind(name: string, implSha: string, implBytes: number): ((implMtime: string | undefined, storedBytes?: number) => void) | null {
    const file = this.file(name);
    let buf: Buffer;
    try {
      buf = fs.readFileSync(file);
    } catch {
      return null;
    }
    if (buf.length < TRAILER || buf.toString('latin1', buf.length - 8) !== MAGIC) return null;
    const metaOff = buf.readDoubleLE(buf.length - TRAILER + 8);
    let meta: IndexMeta;
    try {
      meta = JSON.parse(buf.toString('utf8', metaOff, buf.length - TRAILER)) as IndexMeta;
    } catch {
      return null;
    }
    return (implMtime, storedBytes) => {
      const metaBuf = Buffer.from(JSON.stringify({ ...meta, impl: implSha, implBytes: storedBytes ?? implBytes, implMtime }) + '\n');
      const out = Buffer.concat([buf.subarray(0, metaOff), metaBuf, buf.subarray(buf.length - TRAILER)]);
      const tmp = `${file}.rebind-${process.pid}`;
      fs.writeFileSync(tmp, out, { mode: 0o600 });
      fs.renameSync(tmp, file);
    };
  }

  /** Drops the index of `name` (it did not match its impl). */
  drop(name: string): void {
    fs.rmSync(this.file(name), { force: true });
  }

  /** A failed run: its unpublished index goes (a local store's goes with the run's folder). */
  abandon(name: string): void {
    if (this.remote) fs.rmSync(this.file(`.run-${name}`), { force: true });
  }
}
