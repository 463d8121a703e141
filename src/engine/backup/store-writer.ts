import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { errnoCode, errMessage } from '../../errors.js';
import type { Entry } from '../../manifest/entry.js';
import type { Store } from '../../store/store.js';
import { display, join, parent } from '../../util/bpath.js';
import type { HashAlgo } from '../../util/hash.js';
import { Semaphore } from '../../util/semaphore.js';
import type { Emit, Progress } from '../events.js';

const { O_RDONLY, O_NOFOLLOW } = fs.constants;
const O_NOATIME = (fs.constants as Record<string, number>).O_NOATIME ?? 0;

export interface WriterStats {
  copied: number;
  linked: number;
  bytesCopied: number;
  bytesLinked: number;
  unreadable: number;
  changing: number;
}

/**
 * Puts entries into the snapshot being written: `tree` and `diff` are the run's folders on the
 * store, `prevTree` the previous snapshot's folder. Work runs concurrently; each method resolves
 * to whether the entry is in the snapshot (false: it vanished or could not be read, which is
 * reported, and the run goes on). Store errors reject.
 */
export class StoreWriter {
  readonly stats: WriterStats = { copied: 0, linked: 0, bytesCopied: 0, bytesLinked: 0, unreadable: 0, changing: 0 };
  private readonly copySlots = new Semaphore(8);
  private readonly diffDirs = new Map<string, Promise<void>>();

  constructor(
    private readonly store: Store,
    private readonly tree: Buffer,
    private readonly diff: Buffer,
    private readonly prevTree: Buffer | null,
    private readonly name: string,
    private readonly checksum: HashAlgo | undefined,
    private readonly emit: Emit,
    private readonly progress: Progress,
  ) {}

  mkdir(e: Entry): Promise<void> {
    return this.store.mkdir(join(this.tree, e.path), 0o700);
  }

  /** Reuses the previous snapshot's copy; falls back to `fallback` when that copy is gone. */
  async reuse(e: Entry, prev: Entry, fallback: () => Promise<boolean>): Promise<boolean> {
    try {
      await this.store.link(join(this.prevTree!, e.path), join(this.tree, e.path));
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') throw err;
      this.emit({ event: 'warning', path: display(e.path), message: 'stored copy in the previous snapshot is missing: copying anew' });
      return fallback();
    }
    e.since = prev.since ?? this.name;
    if (prev.sum !== undefined) e.sum = prev.sum;
    this.stats.linked++;
    this.stats.bytesLinked += e.size;
    this.progress.linked++;
    return true;
  }

  /** A later member of a hard-link group: a link to the first member's new copy. */
  async linkToGroup(e: Entry, first: Entry, firstDone: Promise<boolean>, fallback: () => Promise<boolean>): Promise<boolean> {
    if (!(await firstDone.catch(() => false))) return fallback();
    await this.store.link(join(this.tree, first.path), join(this.tree, e.path));
    if (first.since !== undefined) e.since = first.since;
    if (first.sum !== undefined) e.sum = first.sum;
    e.size = first.size;
    e.mtime = first.mtime;
    return true;
  }

  async symlink(e: Entry): Promise<boolean> {
    const dest = join(this.tree, e.path);
    await this.store.symlink(e.target!, dest);
    await this.store.setMeta(dest, { uid: e.uid, gid: e.gid, mtime: e.mtime }, true);
    e.since = this.name;
    await this.addToDiff(e.path);
    return true;
  }

  /** Copies a new or changed file, re-reading it when it changes under us (up to 3 tries). */
  async copy(e: Entry, abs: Buffer): Promise<boolean> {
    await this.copySlots.acquire();
    try {
      return await this.copyLocked(e, abs);
    } finally {
      this.copySlots.release();
    }
  }

  private async openSource(e: Entry, abs: Buffer): Promise<fsp.FileHandle | null> {
    const flags = O_RDONLY | O_NOFOLLOW;
    try {
      return await fsp.open(abs, flags | O_NOATIME);
    } catch (err) {
      if (errnoCode(err) === 'EPERM' && O_NOATIME) {
        try {
          return await fsp.open(abs, flags);
        } catch (err2) {
          return this.unreadable(e, err2);
        }
      }
      return this.unreadable(e, err);
    }
  }

  private unreadable(e: Entry, err: unknown): null {
    if (errnoCode(err) === 'ENOENT') return null; // deleted since the walk: simply not in this snapshot
    this.stats.unreadable++;
    this.emit({ event: 'warning', path: display(e.path), message: `cannot read, left out of this snapshot: ${errMessage(err)}` });
    return null;
  }

  private async copyLocked(e: Entry, abs: Buffer): Promise<boolean> {
    const fh = await this.openSource(e, abs);
    if (!fh) return false;
    const dest = join(this.tree, e.path);
    try {
      let st = await fh.stat({ bigint: true });
      if (!st.isFile()) {
        this.emit({ event: 'warning', path: display(e.path), message: 'replaced by a non-file while backing up: left out' });
        return false;
      }
      let stable = false;
      for (let attempt = 0; attempt < 3 && !stable; attempt++) {
        if (attempt > 0) await this.store.unlink(dest);
        e.size = Number(st.size);
        e.mtime = st.mtimeNs;
        e.ctime = st.ctimeNs;
        e.mode = Number(st.mode) & 0o7777;
        e.uid = Number(st.uid);
        e.gid = Number(st.gid);
        let res: { sum?: string };
        try {
          res = await this.store.putFile(dest, { fd: fh.fd, size: e.size, sparse: e.sparse === true }, { mode: e.mode, uid: e.uid, gid: e.gid, mtime: e.mtime }, this.checksum);
        } catch (err) {
          if (errnoCode(err) === 'EIO' && (await this.sourceFailed(fh))) return this.unreadableAfterOpen(e, err, dest);
          throw err;
        }
        const after = await fh.stat({ bigint: true });
        stable = after.size === st.size && after.mtimeNs === st.mtimeNs && after.ctimeNs === st.ctimeNs;
        if (res.sum !== undefined) e.sum = res.sum;
        st = after;
      }
      if (!stable) {
        e.changing = true;
        this.stats.changing++;
        this.emit({ event: 'warning', path: display(e.path), message: 'kept changing while being copied: stored as last read, flagged "changing" in the impl' });
      }
      e.since = this.name;
      this.stats.copied++;
      this.stats.bytesCopied += e.size;
      this.progress.copied++;
      this.progress.bytesCopied += e.size;
      await this.addToDiff(e.path);
      return true;
    } finally {
      await fh.close();
    }
  }

  private async sourceFailed(fh: fsp.FileHandle): Promise<boolean> {
    try {
      await fh.read(Buffer.alloc(1), 0, 1, 0);
      return false;
    } catch {
      return true;
    }
  }

  private async unreadableAfterOpen(e: Entry, err: unknown, dest: Buffer): Promise<boolean> {
    await this.store.remove(dest);
    this.unreadable(e, err);
    return false;
  }

  private async addToDiff(p: Buffer): Promise<void> {
    await this.diffDir(parent(p));
    await this.store.link(join(this.tree, p), join(this.diff, p));
  }

  private diffDir(p: Buffer): Promise<void> {
    if (p.length === 0) return Promise.resolve();
    const key = p.toString('latin1');
    let made = this.diffDirs.get(key);
    if (!made) {
      made = this.diffDir(parent(p)).then(() => this.store.mkdir(join(this.diff, p), 0o700));
      this.diffDirs.set(key, made);
    }
    return made;
  }
}
