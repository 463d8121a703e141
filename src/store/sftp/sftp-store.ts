import { randomBytes } from 'node:crypto';
import fsp from 'node:fs/promises';
import { Readable } from 'node:stream';
import { typeOfMode } from '../../manifest/entry.js';
import { splitNs } from '../../manifest/time.js';
import { createHasher, type HashAlgo } from '../../util/hash.js';
import { Semaphore } from '../../util/semaphore.js';
import { errnoCode } from '../../errors.js';
import { OPEN_READ, readSmall, SourceError, sourceState, type FileMeta, type LocalSource, type PutResult, type Store, type StoreCaps, type StoreStat } from '../store.js';
import { FXF_CREAT, FXF_EXCL, FXF_READ, FXF_TRUNC, FXF_WRITE, SftpError } from './sftp-client.js';
import type { Sftp } from './resilient.js';

/** Bytes per read or write request (OpenSSH takes up to 255 KiB; 64 KiB keeps many in flight). */
const CHUNK = 64 * 1024;
/** Write requests in flight per file. */
const WRITES_IN_FLIGHT = 16;


/**
 * A store in a folder on an SFTP server (docs/DESIGN.md, "Store interface"). Paths go out as
 * bytes; requests are pipelined on one channel, which OpenSSH's server handles in order, so
 * mkdir is ordered for free. SFTP v3 keeps whole-second times and (for a chrooted account) no
 * foreign owners; the impl keeps the exact values. OpenSSH reports most errors as a bare
 * "failure", so EEXIST and ENOSPC are told apart by looking (lstat, statvfs) when it does.
 */
/** Folders listed or emptied at once while removing a tree. */
const REMOVE_DIRS = 16;

export class SftpStore implements Store {
  readonly caps: StoreCaps;
  private readonly root: Buffer;
  private readonly removeSlots = new Semaphore(REMOVE_DIRS);

  constructor(
    private readonly sftp: Sftp,
    root: string,
    readonly url: string,
  ) {
    this.root = Buffer.from(root.replace(/\/+$/, '') || '/');
    this.caps = {
      ordered: true,
      hardLinks: sftp.extensions.has('hardlink@openssh.com'),
      atomicRename: sftp.extensions.has('posix-rename@openssh.com'),
      ownership: false,
      nsTimes: false,
      inodes: false,
      inFlight: 256,
    };
  }

  private abs(p: Buffer): Buffer {
    if (p.length === 0) return this.root;
    return Buffer.concat([this.root, Buffer.from('/'), p]);
  }

  /** OpenSSH's "failure" for `p`: EEXIST when something is there now, ENOSPC when the disk is full. */
  private async classify(err: unknown, p: Buffer, exists: boolean): Promise<unknown> {
    if (errnoCode(err) !== 'EFAILURE') return err;
    if (exists) {
      const there = await this.sftp.lstat(p).then(
        () => true,
        () => false,
      );
      if (there) return Object.assign(new Error(`EEXIST: '${p.toString()}' already exists in the store`), { code: 'EEXIST' });
    }
    const v = await this.sftp.statvfs(this.root).catch(() => null);
    if (v && (v.bavail * v.frsize < 1 << 20 || (v.files > 0 && v.favail === 0))) return Object.assign(new Error(`ENOSPC: the store ${this.url} is full`), { code: 'ENOSPC' });
    return Object.assign(new Error((err as Error).message), { code: 'EIO' });
  }

  async stat(p: Buffer): Promise<StoreStat | null> {
    try {
      const a = await this.sftp.lstat(this.abs(p));
      return {
        type: typeOfMode(a.mode ?? 0) ?? 'file',
        size: a.size ?? 0,
        mode: (a.mode ?? 0) & 0o7777,
        uid: a.uid ?? 0,
        gid: a.gid ?? 0,
        mtime: `${a.mtime ?? 0}.000000000`,
        ino: 0,
        nlink: 0,
      };
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return null;
      throw err;
    }
  }

  async readdir(p: Buffer): Promise<Buffer[]> {
    return (await this.sftp.readdir(this.abs(p))).map((e) => e.name);
  }

  readlink(p: Buffer): Promise<Buffer> {
    return this.sftp.readlink(this.abs(p));
  }

  private async openFile(p: Buffer): Promise<{ h: Buffer; size: number }> {
    const a = this.abs(p);
    const st = await this.sftp.lstat(a);
    if (((st.mode ?? 0) & 0o170000) === 0o120000) throw Object.assign(new Error(`ELOOP: '${p.toString()}' is a symlink in the store`), { code: 'ELOOP' });
    if (((st.mode ?? 0) & 0o170000) !== 0o100000) throw Object.assign(new Error(`not a regular file in the store: ${p.toString()}`), { code: 'EINVAL' });
    return { h: await this.sftp.open(a, FXF_READ), size: st.size ?? 0 };
  }

  /**
   * Three round trips (lstat, open, then all reads at once with one past the end, which finds a
   * file that grew or a short read); the close is not waited for (requests stay in order).
   */
  async readFile(p: Buffer): Promise<Buffer> {
    const { h, size } = await this.openFile(p);
    try {
      const parts: Promise<Buffer | null>[] = [];
      for (let off = 0; off < size; off += CHUNK) parts.push(this.sftp.read(h, off, Math.min(CHUNK, size - off)));
      parts.push(this.sftp.read(h, size, CHUNK));
      const got = (await Promise.all(parts)).map((b) => b ?? Buffer.alloc(0));
      const past = got.pop()!;
      // What came back whole, from the start (a short read ends it)
      let at = 0;
      for (const b of got) {
        if (b.length !== Math.min(CHUNK, size - at)) break;
        at += b.length;
      }
      let out = Buffer.concat(got).subarray(0, at);
      if (at !== size || past.length > 0) {
        // grown meanwhile, or a short read: read on from what is contiguous
        for (;;) {
          const more = await this.sftp.read(h, out.length, CHUNK);
          if (!more || more.length === 0) break;
          out = Buffer.concat([out, more]);
        }
      }
      return out;
    } finally {
      this.sftp.close(h).catch(() => undefined);
    }
  }

  async openRead(p: Buffer): Promise<{ stream: Readable; size: number }> {
    const { h, size } = await this.openFile(p);
    const sftp = this.sftp;
    let off = 0;
    const ahead: Promise<Buffer | null>[] = [];
    const fill = () => {
      while (ahead.length < 8) {
        ahead.push(sftp.read(h, off, CHUNK));
        off += CHUNK;
      }
    };
    async function* chunks(): AsyncGenerator<Buffer> {
      try {
        fill();
        for (;;) {
          const b = await ahead.shift()!;
          if (!b || b.length === 0) return;
          yield b;
          fill();
        }
      } finally {
        await Promise.allSettled(ahead);
        await sftp.close(h).catch(() => undefined);
      }
    }
    return { stream: Readable.from(chunks(), { objectMode: false }), size };
  }

  /**
   * Writes the parts (each at its offset) through `h`, WRITES_IN_FLIGHT requests at a time;
   * `after` (an fsync, a close) is sent right behind the last write, not a round trip later.
   */
  private async writeParts(h: Buffer, parts: AsyncIterable<{ at: number; part: Buffer }>, after?: () => Promise<void>): Promise<void> {
    const inFlight = new Set<Promise<void>>();
    let failed: unknown;
    for await (const { at, part } of parts) {
      const w = this.sftp.write(h, at, part).catch((err) => void (failed ??= err));
      inFlight.add(w);
      void w.then(() => inFlight.delete(w));
      if (inFlight.size >= WRITES_IN_FLIGHT) await Promise.race(inFlight);
      if (failed) break;
    }
    const last = failed || !after ? undefined : after().catch((err) => void (failed ??= err));
    await Promise.all(inFlight);
    await last;
    if (failed) throw failed;
  }

  async writeFile(p: Buffer, data: Buffer | Readable, opts: { exclusive?: boolean; mode?: number } = {}): Promise<void> {
    const dest = this.abs(p);
    const tmp = opts.exclusive ? dest : Buffer.concat([dest, Buffer.from(`.tmp-${process.pid}-${randomBytes(4).toString('hex')}`)]);
    let h: Buffer;
    let closing = false;
    try {
      h = await this.sftp.open(tmp, FXF_WRITE | FXF_CREAT | FXF_EXCL | FXF_TRUNC, { mode: opts.mode ?? 0o600 });
    } catch (err) {
      throw await this.classify(err, tmp, true);
    }
    try {
      // The last writes, the fsync and the close go out together (in order on the channel);
      // the rename waits for all of them: a file is never put in place unless all of it was written.
      const fsync = () => this.sftp.fsync(h);
      const close = () => ((closing = true), this.sftp.close(h));
      await this.writeParts(h, chunked(Buffer.isBuffer(data) ? [data] : (data as AsyncIterable<Buffer>)), () => Promise.all([fsync(), close()]).then(() => undefined));
    } catch (err) {
      const why = await this.classify(err, tmp, false); // before the partial file goes
      if (!closing) await this.sftp.close(h).catch(() => undefined);
      await this.sftp.remove(tmp).catch(() => undefined);
      throw why;
    }
    if (!opts.exclusive) await this.sftp.posixRename(tmp, dest);
  }

  /** Opens a new file (must not exist, mode 0600) for writing; errors classified. */
  private async openNew(dest: Buffer): Promise<Buffer> {
    try {
      return await this.sftp.open(dest, FXF_WRITE | FXF_CREAT | FXF_EXCL, { mode: 0o600 });
    } catch (err) {
      throw await this.classify(err, dest, true);
    }
  }

  async writeNew(p: Buffer, data: AsyncIterable<Buffer> | Iterable<Buffer>): Promise<number> {
    const dest = this.abs(p);
    const h = await this.openNew(dest);
    let size = 0;
    let closing = false;
    async function* counted(): AsyncGenerator<Buffer> {
      for await (const c of data) {
        size += c.length;
        yield c;
      }
    }
    try {
      // The close goes out right behind the last write.
      await this.writeParts(h, chunked(counted()), () => ((closing = true), this.sftp.close(h)));
    } catch (err) {
      const why = err instanceof SourceError ? err : await this.classify(err, dest, false); // before the partial file goes
      if (!closing) await this.sftp.close(h).catch(() => undefined);
      await this.sftp.remove(dest).catch(() => undefined);
      throw why;
    }
    return size;
  }

  async putFile(p: Buffer, src: LocalSource, meta: FileMeta, hash?: HashAlgo): Promise<PutResult> {
    const small = await this.putSmall(p, src, meta, hash);
    if (small) return small;
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(src.path, OPEN_READ);
    } catch (err) {
      throw new SourceError(errnoCode(err) ?? 'EIO', (err as Error).message);
    }
    const dest = this.abs(p);
    try {
      const st0 = await fh.stat({ bigint: true });
      if (!st0.isFile()) throw new SourceError('EINVAL', `${src.path.toString()} is no longer a regular file`);
      const h = await this.openNew(dest);
      const hasher = hash ? createHasher(hash) : null;
      let size = 0;
      try {
        // Holes of a sparse source stay holes: all-zero chunks are not sent, and the size is set at the end.
        const zero = Buffer.alloc(CHUNK);
        let readError: unknown;
        const chunks = async function* () {
          for (;;) {
            const buf = Buffer.allocUnsafe(CHUNK);
            let n: number;
            try {
              n = (await fh.read(buf, 0, CHUNK, size)).bytesRead;
            } catch (err) {
              readError = err;
              return;
            }
            if (n === 0) return;
            const part = buf.subarray(0, n);
            hasher?.update(part);
            const at = size;
            size += n;
            if (src.sparse && part.equals(zero.subarray(0, n))) continue;
            yield { at, part };
          }
        };
        await this.writeParts(h, chunks());
        if (readError) throw new SourceError(errnoCode(readError) ?? 'EIO', (readError as Error).message);
        if (src.sparse) await this.sftp.setstat(dest, { size });
      } catch (err) {
        // classified before the partial copy goes (removing it frees the space that ran out)
        const why = err instanceof SourceError ? err : await this.classify(err, dest, false);
        await this.sftp.close(h).catch(() => undefined);
        await this.sftp.remove(dest).catch(() => undefined);
        throw why;
      }
      await this.sftp.close(h);
      await this.setMeta(p, meta);
      const st1 = await fh.stat({ bigint: true });
      return { ...(hasher ? { sum: hasher.digest() } : {}), before: sourceState(st0), after: sourceState(st1) };
    } finally {
      await fh.close();
    }
  }

  /**
   * A file of up to one request's worth: read at once on this thread (one read from the page
   * cache costs less than two hops to the thread pool), then open, write, set times and mode,
   * close, all sent together. undefined when the file is larger: the streaming path takes it.
   */
  private async putSmall(p: Buffer, src: LocalSource, meta: FileMeta, hash?: HashAlgo): Promise<PutResult | undefined> {
    const small = readSmall(src.path, CHUNK);
    if (!small) return undefined;
    const { data, st0, st1 } = small;
    const dest = this.abs(p);
    const h = await this.openNew(dest);
    const attrs: { mode?: number; mtime?: number; atime?: number } = {};
    if (meta.mode !== undefined) attrs.mode = meta.mode;
    if (meta.mtime !== undefined) attrs.mtime = attrs.atime = splitNs(meta.mtime)[0];
    const steps = [data.length > 0 ? this.sftp.write(h, 0, data) : Promise.resolve(), this.sftp.fsetstat(h, attrs), this.sftp.close(h)];
    const done = await Promise.allSettled(steps);
    const bad = done.find((d) => d.status === 'rejected');
    if (bad) {
      const why = await this.classify((bad as PromiseRejectedResult).reason, dest, false); // before the partial file goes
      await this.sftp.remove(dest).catch(() => undefined);
      throw why;
    }
    let sum: string | undefined;
    if (hash) {
      const hasher = createHasher(hash);
      hasher.update(data);
      sum = hasher.digest();
    }
    return { ...(sum !== undefined ? { sum } : {}), before: sourceState(st0), after: sourceState(st1) };
  }

  /** Sent at once; requests after it on the channel find the folder (OpenSSH answers in order). */
  mkdir(p: Buffer, mode: number): Promise<void> {
    const a = this.abs(p);
    return this.sftp.mkdir(a, mode).catch(async (err) => {
      throw await this.classify(err, a, true);
    });
  }

  symlink(target: Buffer, p: Buffer): Promise<void> {
    const a = this.abs(p);
    return this.sftp.symlink(target, a).catch(async (err) => {
      throw await this.classify(err, a, true);
    });
  }

  link(existing: Buffer, p: Buffer): Promise<void> {
    const a = this.abs(p);
    return this.sftp.hardlink(this.abs(existing), a).catch(async (err) => {
      throw await this.classify(err, a, true);
    });
  }

  /** All at once: the round trip, not the server, is the cost of a link. */
  async linkMany(fromDir: Buffer, toDir: Buffer, rels: Buffer[]): Promise<(string | null)[]> {
    const to = this.abs(toDir);
    const results = await this.sftp.hardlinkMany(this.abs(fromDir), to, rels);
    const out: (string | null)[] = new Array(results.length).fill(null);
    for (let k = 0; k < results.length; k++) {
      if (results[k]) out[k] = errnoCode(await this.classify(results[k], Buffer.concat([to, Buffer.from('/'), rels[k]!]), true)) ?? 'EIO';
    }
    return out;
  }

  rename(from: Buffer, to: Buffer): Promise<void> {
    return this.sftp.posixRename(this.abs(from), this.abs(to));
  }

  async setMeta(p: Buffer, meta: FileMeta, isSymlink = false): Promise<void> {
    const attrs: { mode?: number; mtime?: number; atime?: number } = {};
    if (meta.mode !== undefined && !isSymlink) attrs.mode = meta.mode;
    if (meta.mtime !== undefined) attrs.mtime = attrs.atime = splitNs(meta.mtime)[0];
    if (attrs.mode === undefined && attrs.mtime === undefined) return;
    if (isSymlink) await this.sftp.lsetstat(this.abs(p), attrs);
    else await this.sftp.setstat(this.abs(p), attrs);
  }

  async setDirMetaMany(items: { p: Buffer; meta: { mode: number; uid: number; gid: number; mtime: string } }[]): Promise<void> {
    // In order on the channel (deepest first, as given), all in flight.
    await Promise.all(items.map((it) => this.setMeta(it.p, { mode: it.meta.mode, mtime: it.meta.mtime })));
  }

  unlink(p: Buffer): Promise<void> {
    return this.sftp.remove(this.abs(p));
  }

  /** Removes a file or a whole tree, never following a symlink; missing is fine. */
  async remove(p: Buffer): Promise<void> {
    const a = this.abs(p);
    let st;
    try {
      st = await this.sftp.lstat(a);
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return;
      throw err;
    }
    if (((st.mode ?? 0) & 0o170000) !== 0o040000) {
      await this.sftp.remove(a).catch((err) => {
        if (errnoCode(err) !== 'ENOENT') throw err;
      });
      return;
    }
    await this.removeDir(a);
  }

  /**
   * Empties and removes a folder: the listing's own attributes tell files from folders (no lstat
   * per entry), a folder's files go in one batch of removes, and up to REMOVE_DIRS folders are
   * worked on at once (bounded: a whole tree in flight would hold a request per file in memory).
   */
  private async removeDir(a: Buffer): Promise<void> {
    const entries = await this.removeSlots.run(() =>
      this.sftp.readdir(a).catch((err) => {
        if (errnoCode(err) === 'ENOENT') return [];
        throw err;
      }),
    );
    const gone = (err: unknown) => {
      if (errnoCode(err) !== 'ENOENT') throw err;
    };
    const dirs: Buffer[] = [];
    const files: Buffer[] = [];
    for (const e of entries) (((e.attrs.mode ?? 0) & 0o170000) === 0o040000 ? dirs : files).push(e.name);
    const removed = this.removeSlots.run(async () => {
      const results = await this.sftp.removeMany(a, files);
      const bad = results.find((r) => r !== null && errnoCode(r) !== 'ENOENT');
      if (bad) throw bad;
    });
    await Promise.all([removed, ...dirs.map((d) => this.removeDir(Buffer.concat([a, Buffer.from('/'), d])))]);
    await this.sftp.rmdir(a).catch(gone);
  }

  async statvfs(): Promise<{ freeBytes: number; freeInodes: number }> {
    const v = await this.sftp.statvfs(this.root);
    // A filesystem without an inode table (btrfs) reports 0 inodes in all: no limit there.
    return { freeBytes: v.bavail * v.frsize, freeInodes: v.files === 0 ? Infinity : v.favail };
  }

  /**
   * Everything sent so far has been answered (each request is acknowledged only once the server
   * did it). Files written with writeFile (impl, lock, summary) are also fsynced; snapshot data is
   * as durable as the server's own writeback makes it.
   */
  async sync(): Promise<void> {
    await this.sftp.lstat(this.root); // answered after everything sent before it
  }

  async close(): Promise<void> {
    this.sftp.end();
  }
}


export { SftpError };

/** Data cut into requests of CHUNK bytes, each with its offset. */
async function* chunked(data: AsyncIterable<Buffer> | Iterable<Buffer>): AsyncGenerator<{ at: number; part: Buffer }> {
  let at = 0;
  for await (const chunk of data) {
    for (let i = 0; i < chunk.length; i += CHUNK) {
      const part = chunk.subarray(i, i + CHUNK);
      yield { at, part };
      at += part.length;
    }
  }
}
