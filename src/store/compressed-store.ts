import fs from 'node:fs';
import { errnoCode } from '../errors.js';
import { native } from '../native.js';
import { createHasher, type HashAlgo } from '../util/hash.js';
import { pack, packSync, ZSTD_CHUNK } from '../util/zstd.js';
import { OPEN_READ, readSmall, SourceError, sourceState, type FileMeta, type LocalSource, type PutResult, type Store, type StoreStat } from './store.js';

/**
 * A plain store whose new copies are zstd-compressed when that makes them at least 1/16 smaller
 * (docs/ENCRYPTION.md, "Compression"; on an encrypted store the encrypting layer compresses
 * instead). Names, folders and metadata stay as on any plain store; a compressed file keeps its
 * name and holds a standard zstd stream (`zstd -d < FILE`), and its impl entry says `"z":"zstd"`
 * (restore and verify decompress it). Everything but putFile goes to the store as it is.
 */
export class CompressedStore implements Store {
  readonly url: string;
  readonly caps: Store['caps'];
  readonly localRoot?: string;
  readonly folder?: string;

  constructor(
    private readonly inner: Store,
    private readonly level: number,
  ) {
    this.url = inner.url;
    this.caps = inner.caps;
    if (inner.localRoot) this.localRoot = inner.localRoot;
    if (inner.folder) this.folder = inner.folder;
  }

  async putFile(p: Buffer, src: LocalSource, meta: FileMeta, hash?: HashAlgo): Promise<PutResult> {
    // Copied from a snapshot where it is compressed already: as it is.
    if (src.compressed) return this.inner.putFile(p, src, meta, hash);
    const small = readSmall(src.path, ZSTD_CHUNK);
    if (small) {
      const packed = packSync(small.data, this.level);
      if (!packed) return this.inner.putFile(p, src, meta, hash);
      await this.inner.writeNew(p, [packed]);
      await this.inner.setMeta(p, meta);
      let sum: string | undefined;
      if (hash) {
        const h = createHasher(hash);
        h.update(small.data);
        sum = h.digest();
      }
      return { ...(sum !== undefined ? { sum } : {}), size: small.data.length, z: 'zstd', before: sourceState(small.st0), after: sourceState(small.st1) };
    }
    let fh: fs.promises.FileHandle;
    try {
      fh = await fs.promises.open(src.path, OPEN_READ);
    } catch (err) {
      throw new SourceError(errnoCode(err) ?? 'EIO', (err as Error).message);
    }
    try {
      const st0 = await fh.stat({ bigint: true });
      if (!st0.isFile()) throw new SourceError('EINVAL', `${src.path.toString()} is no longer a regular file`);
      let size = 0;
      const read = async (): Promise<Buffer | null> => {
        const buf = Buffer.allocUnsafe(ZSTD_CHUNK);
        let n: number;
        try {
          n = (await fh.read(buf, 0, buf.length, size)).bytesRead;
        } catch (err) {
          throw new SourceError(errnoCode(err) ?? 'EIO', (err as Error).message);
        }
        size += n;
        return n === 0 ? null : buf.subarray(0, n);
      };
      // Decided on the first MiB: a file that does not shrink is copied as usual (holes kept).
      const first = await read();
      const packedFirst = first ? await pack(first, this.level) : null;
      if (!first || !packedFirst) return await this.inner.putFile(p, src, meta, hash);
      const hasher = hash ? createHasher(hash) : null;
      hasher?.update(first);
      const level = this.level;
      async function* frames(): AsyncGenerator<Buffer> {
        yield packedFirst!;
        for (let c = await read(); c; c = await read()) {
          hasher?.update(c);
          yield await native.zstdCompress(c, level);
        }
      }
      await this.inner.writeNew(p, frames());
      await this.inner.setMeta(p, meta);
      const st1 = await fh.stat({ bigint: true });
      return { ...(hasher ? { sum: hasher.digest() } : {}), size, z: 'zstd', before: sourceState(st0), after: sourceState(st1) };
    } finally {
      await fh.close();
    }
  }

  // ---- the rest, as the store does it ----
  stat(p: Buffer): Promise<StoreStat | null> {
    return this.inner.stat(p);
  }
  readdir(p: Buffer): Promise<Buffer[]> {
    return this.inner.readdir(p);
  }
  readlink(p: Buffer): Promise<Buffer> {
    return this.inner.readlink(p);
  }
  readFile(p: Buffer): Promise<Buffer> {
    return this.inner.readFile(p);
  }
  openRead(p: Buffer): ReturnType<Store['openRead']> {
    return this.inner.openRead(p);
  }
  writeFile(p: Buffer, data: Parameters<Store['writeFile']>[1], opts?: Parameters<Store['writeFile']>[2]): Promise<void> {
    return this.inner.writeFile(p, data, opts);
  }
  writeNew(p: Buffer, data: AsyncIterable<Buffer> | Iterable<Buffer>): Promise<number> {
    return this.inner.writeNew(p, data);
  }
  mkdir(p: Buffer, mode: number): Promise<void> {
    return this.inner.mkdir(p, mode);
  }
  symlink(target: Buffer, p: Buffer): Promise<void> {
    return this.inner.symlink(target, p);
  }
  link(existing: Buffer, p: Buffer): Promise<void> {
    return this.inner.link(existing, p);
  }
  get linkMany(): Store['linkMany'] {
    return this.inner.linkMany?.bind(this.inner);
  }
  rename(from: Buffer, to: Buffer): Promise<void> {
    return this.inner.rename(from, to);
  }
  setMeta(p: Buffer, meta: FileMeta, isSymlink?: boolean): Promise<void> {
    return this.inner.setMeta(p, meta, isSymlink);
  }
  get setDirMetaMany(): Store['setDirMetaMany'] {
    return this.inner.setDirMetaMany?.bind(this.inner);
  }
  unlink(p: Buffer): Promise<void> {
    return this.inner.unlink(p);
  }
  remove(p: Buffer): Promise<void> {
    return this.inner.remove(p);
  }
  statvfs(): ReturnType<Store['statvfs']> {
    return this.inner.statvfs();
  }
  sync(): Promise<void> {
    return this.inner.sync();
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}
