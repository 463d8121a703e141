import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { errMessage } from '../../errors.js';
import type { Entry } from '../../manifest/entry.js';
import { splitNs } from '../../manifest/time.js';
import type { Store } from '../../store/store.js';
import { b } from '../../store/store.js';
import { join } from '../../util/bpath.js';
import type { Emit } from '../events.js';
import { implPath, META } from '../layout.js';

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
const SPARSE = 2;
const TYPE_CODE: Record<string, number> = { file: 1, symlink: 2, dir: 3 };

export interface IndexMeta {
  format: 1;
  snapshot: string;
  /** sha256 of the impl file's bytes: the index is used only with exactly that impl. */
  impl: string;
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
  const [ms, mns] = splitNs(e.mtime);
  const [cs, cns] = splitNs(e.ctime);
  writeI64(block, ms, off + R_MTS);
  block.writeUInt32LE(mns, off + R_MTNS);
  block.writeUInt32LE(cns, off + R_CTNS);
  writeI64(block, cs, off + R_CTS);
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
  private readonly table: Buffer[] = [];
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
    const t = Buffer.allocUnsafe(4 + rel.length + 12);
    t.writeUInt32LE(rel.length, 0);
    rel.copy(t, 4);
    t.writeDoubleLE(this.offset, 4 + rel.length);
    t.writeUInt32LE(block.length, 12 + rel.length);
    this.table.push(t);
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
    const table = Buffer.concat(this.table);
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
  ) {}

  /**
   * Opens the index of `snapshot` when it is there, intact, made with exactly that impl and
   * under the same walk fingerprint; otherwise null (the run then compares against the impl).
   */
  static async open(store: Store, snapshot: string, fingerprint: string, emit: Emit): Promise<IndexReader | null> {
    if (!store.localRoot) return null;
    const file = path.join(store.localRoot, indexPath(snapshot).toString('latin1'));
    let fd: number;
    try {
      fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
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
        return null;
      }
      // Intact? (a few ms per 100k entries; a damaged index must never name a wrong line)
      const sha = createHash('sha256');
      for (let at = 0; at < metaOff; at += 1 << 20) sha.update(readAt(fd, at, Math.min(1 << 20, metaOff - at)));
      if (sha.digest('hex') !== meta.sha256) throw new Error('its checksum does not match');
      const rest = readAt(fd, tableOff, metaOff - tableOff);
      const impl = await store.readFile(implPath(snapshot));
      if (createHash('sha256').update(impl).digest('hex') !== meta.impl) throw new Error('made for another impl');
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
      return new IndexReader(fd, dirs);
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
