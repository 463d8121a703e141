import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { native } from '../../native.js';
import { COPY_FIELDS, CopyBatcher, type CopyGroup } from './copy-batcher.js';
import { typeOfMode } from '../../manifest/entry.js';
import { fromBigNs, nsNsec, nsSec, nsTime, nsTimeIs, splitNs, type NsTime } from '../../manifest/time.js';
import { copyFd } from '../../util/sparse-copy.js';
import { createHasher, type HashAlgo } from '../../util/hash.js';
import { OPEN_READ, SourceError, sourceState, type FileMeta, type LocalSource, type PutResult, type QuickCopy, type SourceState, type Store, type StoreCaps, type StoreStat } from '../store.js';

function stateAt(r: Float64Array, i: number): SourceState {
  return { size: r[i]!, mtime: nsTime(r[i + 1]!, r[i + 2]!), ctime: nsTime(r[i + 3]!, r[i + 4]!), ino: r[i + 5]! };
}

/** What putFile gives for a native copy's results at `o` (or the error it throws). */
function copyResult(r: Float64Array, o: number, src: Buffer, dest: Buffer): PutResult {
  if (r[o] !== 0) {
    const code = ERRNO_NAMES.get(r[o + 1]!) ?? `E${r[o + 1]}`;
    if (r[o] === 1) throw new SourceError(code, `${code}: cannot read ${src.toString()}`);
    throw Object.assign(new Error(`${code}: cannot write ${dest.toString()} in the store`), { code });
  }
  return { before: stateAt(r, o + 3), after: stateAt(r, o + 10) };
}


async function readFails(fh: fsp.FileHandle): Promise<boolean> {
  try {
    await fh.read(Buffer.alloc(1), 0, 1, 0);
    return false;
  } catch {
    return true;
  }
}

const { O_RDONLY, O_WRONLY, O_CREAT, O_EXCL } = fs.constants;
const ERRNO_NAMES = new Map(Object.entries(os.constants.errno).map(([k, v]) => [v, k]));

/** writeNew writes a single buffer up to this size synchronously. */
const SYNC_WRITE = 64 * 1024;
/** Files up to this size are copied in batches (CopyBatcher); larger ones one job each. */
const SMALL_COPY = 64 * 1024;

/** A store in a local folder (the first tier: hard-link snapshots on the same volume). */
/** Folders removed at once (native jobs on the thread pool). */
const REMOVE_LANES = 4;
const SLASH = Buffer.from('/');

export class LocalStore implements Store {
  readonly url: string;
  readonly caps: StoreCaps;
  readonly localRoot: string;
  readonly folder: string;
  private readonly root: Buffer;
  readonly copiesInBatches = true;
  /** Small files are copied in batches, several per thread-pool job. */
  private readonly batcher = new CopyBatcher();
  /** Copy jobs sent to the thread pool: batches (with the files in them) and single large files. */
  get copyJobs(): { batches: number; batched: number; single: number } {
    return { batches: this.batcher.stats.jobs, batched: this.batcher.stats.files, single: this.singleCopies };
  }
  private singleCopies = 0;

  constructor(root: string) {
    this.url = path.resolve(root);
    this.localRoot = this.url;
    this.folder = this.url;
    this.root = Buffer.from(this.url);
    const isRoot = process.getuid?.() === 0;
    this.caps = { hardLinks: true, atomicRename: true, ownership: isRoot, nsTimes: true, inodes: true, inFlight: 64 };
  }

  abs(p: Buffer): Buffer {
    if (p.length === 0) return this.root;
    const out = Buffer.allocUnsafe(this.root.length + 1 + p.length);
    this.root.copy(out, 0);
    out[this.root.length] = 0x2f;
    p.copy(out, this.root.length + 1);
    return out;
  }

  async stat(p: Buffer): Promise<StoreStat | null> {
    try {
      const st = await fsp.lstat(this.abs(p), { bigint: true });
      return {
        type: typeOfMode(Number(st.mode)) ?? 'file',
        size: Number(st.size),
        mode: Number(st.mode) & 0o7777,
        uid: Number(st.uid),
        gid: Number(st.gid),
        mtime: fromBigNs(st.mtimeNs),
        ino: Number(st.ino),
        nlink: Number(st.nlink),
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
  }

  readdir(p: Buffer): Promise<Buffer[]> {
    return fsp.readdir(this.abs(p), { encoding: 'buffer' });
  }

  readlink(p: Buffer): Promise<Buffer> {
    return fsp.readlink(this.abs(p), { encoding: 'buffer' });
  }

  readFile(p: Buffer): Promise<Buffer> {
    return fsp.readFile(this.abs(p), { flag: OPEN_READ });
  }

  async openRead(p: Buffer): Promise<{ stream: Readable; size: number }> {
    const fh = await fsp.open(this.abs(p), OPEN_READ); // a FIFO planted in the store: refused below
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw Object.assign(new Error(`not a regular file in the store: ${p.toString()}`), { code: 'EINVAL' });
      return { stream: fh.createReadStream({ highWaterMark: 256 * 1024 }), size: st.size };
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  async writeFile(p: Buffer, data: Buffer | Readable, opts: { exclusive?: boolean; mode?: number } = {}): Promise<void> {
    const dest = this.abs(p);
    const tmp = opts.exclusive ? dest : Buffer.concat([dest, Buffer.from(`.tmp-${process.pid}-${randomBytes(4).toString('hex')}`)]);
    const fh = await fsp.open(tmp, O_WRONLY | O_CREAT | O_EXCL, opts.mode ?? 0o600);
    try {
      if (Buffer.isBuffer(data)) await fh.writeFile(data);
      else for await (const chunk of data) await fh.write(chunk as Buffer);
      await fh.sync();
    } catch (err) {
      await fh.close();
      await fsp.rm(tmp, { force: true });
      throw err;
    }
    await fh.close();
    if (!opts.exclusive) await fsp.rename(tmp, dest);
    await this.syncDir(path.dirname(dest.toString('latin1')));
  }

  private async syncDir(dirLatin1: string): Promise<void> {
    const fh = await fsp.open(Buffer.from(dirLatin1, 'latin1'), O_RDONLY);
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  }

  async putFile(p: Buffer, src: LocalSource, meta: FileMeta, hash?: HashAlgo): Promise<PutResult> {
    const dest = this.abs(p);
    if (!hash) {
      // A thread-pool job (one per large file, shared by several small ones) does open,
      // copy_file_range (holes kept), owner, mode and times.
      const quick = this.quickCopy(p, src, meta);
      if (quick) {
        await quick.group.wait();
        return this.quickResult(quick, src.path, p);
      }
      this.singleCopies++;
      return copyResult(await native.copyIn(src.path, dest, ...this.copyArgs(src, meta)), 0, src.path, dest);
    }
    return this.putFileHashed(dest, p, src, meta, hash);
  }

  /** copyIn's arguments after the paths: flags (sparse, chown), mode, uid, gid, mtime s and ns. */
  private copyArgs(src: LocalSource, meta: FileMeta): [number, number, number, number, number, number] {
    const chown = this.caps.ownership && meta.uid !== undefined && meta.gid !== undefined;
    const mtime = meta.mtime ?? '0.000000000';
    return [(src.sparse ? 1 : 0) | (chown ? 2 : 0), meta.mode ?? 0o600, meta.uid ?? 0, meta.gid ?? 0, nsSec(mtime), nsNsec(mtime)];
  }

  quickCopy(p: Buffer, src: LocalSource, meta: FileMeta): QuickCopy | null {
    if (src.size === undefined || src.size > SMALL_COPY) return null;
    return this.batcher.add(src.path, this.abs(p), this.copyArgs(src, meta));
  }

  quickDone(q: QuickCopy, size: number, mtime: NsTime, ctime: NsTime): boolean {
    const r = (q.group as CopyGroup).result;
    if (!r) return false;
    const o = q.index * COPY_FIELDS;
    // Stage 0 (copied), and the source's state at the end of the copy (size, mtime, ctime at
    // fields 10-14; the native copy takes one fstat, so fields 3-7 hold the same) is the walk's.
    return r[o] === 0 && r[o + 10] === size && nsTimeIs(mtime, r[o + 11]!, r[o + 12]!) && nsTimeIs(ctime, r[o + 13]!, r[o + 14]!);
  }

  quickResult(q: QuickCopy, src: Buffer, p: Buffer): PutResult {
    const g = q.group as CopyGroup;
    if (g.failure !== undefined) throw g.failure;
    return copyResult(g.result!, q.index * COPY_FIELDS, src, this.abs(p));
  }

  async writeNew(p: Buffer, data: AsyncIterable<Buffer> | Iterable<Buffer>): Promise<number> {
    const dest = this.abs(p);
    if (Array.isArray(data) && data.length === 1 && data[0]!.length <= SYNC_WRITE) {
      // A small file in one piece: written on this thread (into the page cache), no thread-pool hops.
      fs.writeFileSync(dest, data[0]!, { flag: 'wx', mode: 0o600 });
      return data[0]!.length;
    }
    const fh = await fsp.open(dest, O_WRONLY | O_CREAT | O_EXCL, 0o600);
    let size = 0;
    try {
      // Gathered into writes of up to 1 MiB: one thread-pool job each, not one per 64 KiB piece.
      let parts: Buffer[] = [];
      let held = 0;
      for await (const c of data) {
        parts.push(c);
        held += c.length;
        if (held >= 1 << 20) {
          await fh.writev(parts, size);
          size += held;
          parts = [];
          held = 0;
        }
      }
      if (held > 0) await fh.writev(parts, size);
      size += held;
    } catch (err) {
      await fh.close();
      await fsp.rm(dest, { force: true });
      throw err;
    }
    await fh.close();
    return size;
  }

  private async putFileHashed(dest: Buffer, p: Buffer, src: LocalSource, meta: FileMeta, hash: HashAlgo): Promise<PutResult> {
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(src.path, OPEN_READ);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? 'EIO';
      throw new SourceError(code, (err as Error).message);
    }
    try {
      const st0 = await fh.stat({ bigint: true });
      if (!st0.isFile()) throw new SourceError('EINVAL', `${src.path.toString()} is no longer a regular file`);
      const hasher = createHasher(hash);
      const out = await fsp.open(dest, O_WRONLY | O_CREAT | O_EXCL, 0o600);
      try {
        await copyFd(fh.fd, out.fd, src.sparse, hasher);
      } catch (err) {
        await out.close();
        await fsp.rm(dest, { force: true });
        if (await readFails(fh)) throw new SourceError((err as NodeJS.ErrnoException).code ?? 'EIO', (err as Error).message);
        throw err;
      }
      await out.close();
      await this.setMeta(p, meta);
      const st1 = await fh.stat({ bigint: true });
      return { sum: hasher.digest(), before: sourceState(st0), after: sourceState(st1) };
    } finally {
      await fh.close();
    }
  }

  mkdir(p: Buffer, mode: number): Promise<void> {
    // Synchronous (one syscall, no thread hop): that makes it ordered, as the interface promises.
    try {
      fs.mkdirSync(this.abs(p), { mode });
      return Promise.resolve();
    } catch (err) {
      return Promise.reject(err);
    }
  }

  symlink(target: Buffer, p: Buffer): Promise<void> {
    return fsp.symlink(target, this.abs(p));
  }

  link(existing: Buffer, p: Buffer): Promise<void> {
    return fsp.link(this.abs(existing), this.abs(p));
  }

  async linkMany(fromDir: Buffer, toDir: Buffer, rels: Buffer[]): Promise<(string | null)[]> {
    let len = 0;
    for (const r of rels) len += fromDir.length + toDir.length + 2 * r.length + 4;
    const buf = Buffer.allocUnsafeSlow(len);
    let off = 0;
    for (const r of rels) {
      off += fromDir.copy(buf, off);
      buf[off++] = 0x2f;
      off += r.copy(buf, off);
      buf[off++] = 0;
      off += toDir.copy(buf, off);
      buf[off++] = 0x2f;
      off += r.copy(buf, off);
      buf[off++] = 0;
    }
    const results = new Int32Array(rels.length);
    await native.linkBatch(this.root, buf, rels.length, results);
    return Array.from(results, (e) => (e === 0 ? null : (ERRNO_NAMES.get(e) ?? `E${e}`)));
  }

  rename(from: Buffer, to: Buffer): Promise<void> {
    return fsp.rename(this.abs(from), this.abs(to));
  }

  async setMeta(p: Buffer, meta: FileMeta, isSymlink = false): Promise<void> {
    const a = this.abs(p);
    if (this.caps.ownership && meta.uid !== undefined && meta.gid !== undefined) await fsp.lchown(a, meta.uid, meta.gid);
    if (meta.mode !== undefined && !isSymlink) await fsp.chmod(a, meta.mode);
    if (meta.mtime !== undefined) {
      const [s, ns] = splitNs(meta.mtime);
      native.utimens(a, s, ns, s, ns);
    }
  }

  async setDirMetaMany(items: { p: Buffer; meta: Required<Pick<FileMeta, 'mode' | 'uid' | 'gid' | 'mtime'>> }[]): Promise<void> {
    let len = 0;
    for (const it of items) len += it.p.length + 1;
    const paths = Buffer.allocUnsafeSlow(len);
    const meta = new Float64Array(items.length * 5);
    let off = 0;
    items.forEach((it, i) => {
      off += it.p.copy(paths, off);
      paths[off++] = 0;
      const [s, ns] = splitNs(it.meta.mtime);
      meta.set([it.meta.mode, this.caps.ownership ? it.meta.uid : -1, it.meta.gid, s, ns], i * 5);
    });
    const results = new Int32Array(items.length);
    await native.metaBatch(this.root, paths, items.length, meta, results);
    const bad = results.findIndex((e) => e !== 0);
    if (bad >= 0) {
      const code = ERRNO_NAMES.get(results[bad]!) ?? `E${results[bad]}`;
      throw Object.assign(new Error(`${code}: cannot set the owner, mode or times of '${this.abs(items[bad]!.p).toString()}'`), { code });
    }
  }

  unlink(p: Buffer): Promise<void> {
    return fsp.unlink(this.abs(p));
  }

  /**
   * rm -rf, as fast as rm itself (a 100k-file snapshot in about the time `rm -rf` takes): the
   * top few levels are split until there are several folders, which are removed in parallel by
   * native jobs on the thread pool (unlinkat, never following a symlink); their parents last.
   */
  async remove(p: Buffer): Promise<void> {
    const top = this.abs(p);
    let level = [top];
    const parents: Buffer[] = [];
    // Down through single-folder chains (a snapshot starts /var/lib/...), until there are several.
    for (let depth = 0; depth < 16 && level.length > 0 && level.length < REMOVE_LANES * 2; depth++) {
      const next: Buffer[] = [];
      for (const d of level) {
        let entries: fs.Dirent<Buffer>[];
        try {
          entries = fs.readdirSync(d, { withFileTypes: true, encoding: 'buffer' });
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          if (code === 'ENOENT') continue;
          if (code === 'ENOTDIR') {
            await native.removeTree(d); // a file or a symlink
            continue;
          }
          throw err;
        }
        parents.push(d);
        for (const e of entries) {
          const child = Buffer.concat([d, SLASH, e.name]);
          if (e.isDirectory()) next.push(child);
          else fs.rmSync(child, { force: true });
        }
      }
      level = next;
    }
    let i = 0;
    const lane = async () => {
      while (i < level.length) await native.removeTree(level[i++]!);
    };
    await Promise.all(Array.from({ length: Math.min(REMOVE_LANES, level.length) }, lane));
    for (const d of parents.reverse()) await native.removeTree(d);
  }

  async statvfs(): Promise<{ freeBytes: number; freeInodes: number }> {
    const s = await fsp.statfs(this.url);
    // A filesystem without an inode table (btrfs) reports 0 inodes in all: no limit there.
    return { freeBytes: s.bavail * s.bsize, freeInodes: s.files === 0 ? Infinity : s.ffree };
  }

  async sync(): Promise<void> {
    native.syncfs(this.url);
  }

  private syncing = false;

  syncSoon(): void {
    if (this.syncing) return;
    this.syncing = true;
    void native.syncfsSoon(this.url).finally(() => (this.syncing = false));
  }

  async close(): Promise<void> {}
}

