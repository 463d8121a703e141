import fs from 'node:fs';
import { errnoCode, errMessage } from '../../errors.js';
import type { Entry } from '../../manifest/entry.js';
import type { ReuseInfo } from '../../manifest/prev-record.js';
import { fromBigNs } from '../../manifest/time.js';
import { SourceError, type PutResult, type Store } from '../../store/store.js';
import { display, join, parent } from '../../util/bpath.js';
import type { HashAlgo } from '../../util/hash.js';
import { Semaphore } from '../../util/semaphore.js';
import type { Emit, Progress } from '../events.js';
import type { WriterStats } from '../summary.js';
import { LinkBatch } from './link-batch.js';
import { LazyJob, PromiseJob, type Decide, type Job } from './ordered-queue.js';

/** The links of one fast-path run: where each part of it sits in which batch. */
export interface LinkRun {
  job: Job;
  parts: { batch: LinkBatch; first: number; count: number }[];
}

const MAX_TRIES = 3;

/** Re-reads a file's metadata after it changed under us; false when it is no longer a file. */
function refresh(e: Entry, abs: Buffer): boolean {
  const st = fs.lstatSync(abs, { bigint: true, throwIfNoEntry: false });
  if (!st || !st.isFile()) return false;
  e.size = Number(st.size);
  e.mtime = fromBigNs(st.mtimeNs);
  e.ctime = fromBigNs(st.ctimeNs);
  e.mode = Number(st.mode) & 0o7777;
  e.uid = Number(st.uid);
  e.gid = Number(st.gid);
  if (st.blocks * 512n < st.size) e.sparse = true;
  else delete e.sparse;
  return true;
}

/** New bytes between two Store.syncSoon() calls. */
const SYNC_EVERY = 256 * 1024 * 1024;

/** Small copies in flight at once on a store that batches them (Store.copiesInBatches). */
const SMALL_BATCHED = 64;

/** Files above this size take a big-copy slot (each may hold a window of chunk writes in memory). */
const BIG_FILE = 64 * 1024;

/**
 * How much work is in flight at once. A local disk wants few copies and few link batches (more
 * only queue in the kernel and delay the directory scans the walk waits for). Over a network the
 * round trip is the cost: many small copies (an open, then write+setstat+close, per file), several
 * link batches, and a long window of entries the walk may run ahead of the oldest unfinished one,
 * so a few slow requests never stall it. Measured at 10 ms RTT (20k files, 1% changed, bench/
 * remote.mjs): an incremental run took 7.1 s with the local settings, 3.7 s with a long window
 * and these slots (link batches 2, 4 or 8 made no difference), 25 s -> 13 s for a full run.
 * Links per batch: 256 (one thread-pool job locally, one write of requests over SFTP); at 100k
 * entries and 10 ms, 1024 per batch ran 4.96-5.0 s against 4.65-4.67 s, and 128 was no better.
 */
export function pipelineFor(store: Store): { copies: number; bigCopies: number; linkBatches: number; linkBatch: number; window: number } {
  if (store.localRoot) return { copies: 4, bigCopies: 4, linkBatches: 2, linkBatch: 256, window: 256 };
  return { copies: 128, bigCopies: 8, linkBatches: 4, linkBatch: 256, window: 8192 };
}

/**
 * Puts entries into the snapshot being written: `tree` and `diff` are the run's folders on the
 * store, `prevTree` the previous snapshot's folder. Work runs concurrently; each method resolves
 * to whether the entry is in the snapshot (false: it vanished or could not be read, which is
 * reported, and the run goes on). Store errors reject.
 */
export class StoreWriter {
  readonly stats: WriterStats = { copied: 0, linked: 0, bytesCopied: 0, bytesLinked: 0, unreadable: 0, changing: 0 };
  private readonly copySlots: Semaphore;
  private readonly bigCopySlots: Semaphore;
  private readonly linkSlots: Semaphore;
  private readonly diffDirs = new Map<string, Promise<void>>();
  /** Links per batch (one thread-pool job locally, one write of requests over SFTP). */
  private readonly linkBatch: number;

  constructor(
    private readonly store: Store,
    private readonly tree: Buffer,
    private readonly diff: Buffer,
    private readonly prevTree: Buffer | null,
    private readonly name: string,
    private readonly checksum: HashAlgo | undefined,
    private readonly emit: Emit,
    private readonly progress: Progress,
    /** The source is a snapshot (a copy to another store): it does not change, and a file missing from it is reported. */
    private readonly frozen = false,
  ) {
    const p = pipelineFor(store);
    // A store that copies small files in batches wants many asked for at once (they go out
    // together while earlier batches run): 64 in the ordered queue's window of 256.
    this.copySlots = new Semaphore(store.copiesInBatches && checksum === undefined ? SMALL_BATCHED : p.copies);
    this.bigCopySlots = new Semaphore(p.bigCopies);
    this.linkSlots = new Semaphore(p.linkBatches);
    this.linkBatch = p.linkBatch;
  }

  /**
   * Directories are made in walk order. A store's mkdir is ordered (whatever is started after
   * it returns finds the directory), so nothing waits for it; its promise only carries a
   * failure, which fails the run.
   */
  private dirs: Promise<void> = Promise.resolve();
  private mkdirError: unknown;

  mkdir(e: Entry): void {
    // EEXIST: a fast-path scan of the directory made it first (the run's folder is ours alone).
    const made = this.store.mkdir(join(this.tree, e.path), 0o700).catch((err) => {
      if (errnoCode(err) !== 'EEXIST') throw err;
    });
    made.catch((err) => void (this.mkdirError ??= err));
    this.dirs = this.dirs.then(() => made);
    this.dirs.catch(() => undefined);
  }

  /** Resolves once every directory queued so far exists; rejects with the first mkdir failure. */
  dirsMade(): Promise<void> {
    return this.dirs;
  }

  /** Throws the first mkdir failure: an entry that found no folder to go into reports that, not ENOENT. */
  private checkDirs(): void {
    if (this.mkdirError !== undefined) throw this.mkdirError;
  }

  private batch: LinkBatch | null = null;

  /** Sends the queued links to the store now. */
  flushLinks(): void {
    this.batch?.send();
    this.batch = null;
  }

  /**
   * Reuses the previous snapshot's copy of `e`: a link queued in a batch (one job for many
   * entries). The returned job and decision go to the ordered queue; when the old copy turned
   * out to be gone, the decision copies anew.
   */
  reuse(e: Entry, prev: ReuseInfo, fallback: () => Promise<boolean>): { job: Job; decide: Decide } {
    e.since = prev.since ?? this.name;
    if (prev.sum !== undefined) e.sum = prev.sum;
    if (prev.tag !== undefined) e.tag = prev.tag;
    if (prev.z !== undefined) e.z = prev.z;
    if (!this.store.linkMany) {
      const job = new PromiseJob(
        this.store.link(join(this.prevTree!, e.path), join(this.tree, e.path)).then(
          () => null,
          (err) => {
            this.checkDirs();
            if (errnoCode(err) === 'ENOENT') return 'ENOENT';
            throw err;
          },
        ),
      );
      return { job, decide: () => this.linked(job.value ?? null, e, fallback) };
    }
    // A batch already sent (someone waited on it early) takes no more links.
    if (!this.batch || !this.batch.idle) this.batch = new LinkBatch(this.store, this.prevTree!, this.tree, this.linkSlots);
    const b = this.batch;
    const index = b.add(e.path);
    if (b.size >= this.linkBatch) this.flushLinks();
    return { job: b, decide: () => this.linked(b.code(index), e, fallback) };
  }

  /**
   * The remote fast path: links the unchanged files `names` of directory `rel` (the scan found
   * them unchanged) from the previous snapshot, in the link batches. One job for the run;
   * linkRunFailures() then tells which links failed.
   */
  linkRun(rel: Buffer, names: Buffer[]): LinkRun {
    const parts: LinkRun['parts'] = [];
    for (let k = 0; k < names.length; ) {
      if (!this.batch || !this.batch.idle) this.batch = new LinkBatch(this.store, this.prevTree!, this.tree, this.linkSlots);
      const batch = this.batch;
      const first = batch.size;
      const n = Math.min(names.length - k, this.linkBatch - first);
      for (const end = k + n; k < end; k++) batch.add(join(rel, names[k]!));
      parts.push({ batch, first, count: n });
      if (batch.size >= this.linkBatch) this.flushLinks();
    }
    const job: Job =
      parts.length === 1
        ? parts[0]!.batch
        : new LazyJob(async () => {
            for (const p of parts) {
              await p.batch.wait();
              if (p.batch.failure !== undefined) throw p.batch.failure;
            }
          });
    return { job, parts };
  }

  /** Which links of a settled run failed (their positions in it); a failure other than ENOENT is a store error. */
  static linkRunFailures(run: LinkRun, rel: Buffer, names: Buffer[]): number[] {
    const failed: number[] = [];
    let k = 0;
    for (const p of run.parts) {
      for (let i = 0; i < p.count; i++, k++) {
        const code = p.batch.code(p.first + i);
        if (code === null) continue;
        if (code !== 'ENOENT') throw Object.assign(new Error(`${code}: cannot link ${display(join(rel, names[k]!))} in the store`), { code });
        failed.push(k);
      }
    }
    return failed;
  }

  /**
   * A fast-path link that failed because the previous snapshot's copy is gone: the entry
   * (decoded from its previous line, which the scan found still true) is copied anew.
   */
  relink(e: Entry, abs: Buffer): Promise<boolean> {
    this.stats.linked--;
    this.stats.bytesLinked -= e.size;
    this.progress.linked--;
    this.emit({ event: 'warning', path: display(e.path), message: 'stored copy in the previous snapshot is missing: copying anew' });
    delete e.sum;
    delete e.tag;
    delete e.z;
    delete e.raw;
    return e.type === 'symlink' ? this.symlink(e) : this.copy(e, abs);
  }

  /** The outcome of a reuse link: kept, copied anew (old copy gone), or a store error. */
  private linked(code: string | null, e: Entry, fallback: () => Promise<boolean>): boolean | Promise<boolean> {
    if (code === null) {
      this.stats.linked++;
      this.stats.bytesLinked += e.size;
      this.progress.linked++;
      return true;
    }
    this.checkDirs();
    if (code === 'ENOENT') {
      this.emit({ event: 'warning', path: display(e.path), message: 'stored copy in the previous snapshot is missing: copying anew' });
      delete e.sum;
      delete e.tag;
      delete e.z;
      delete e.raw; // the previous line no longer describes it: `since` changes
      return fallback();
    }
    throw Object.assign(new Error(`${code}: cannot link ${display(e.path)} in the store`), { code });
  }

  /** A later member of a hard-link group: a link to the first member's new copy. */
  async linkToGroup(e: Entry, first: Entry, firstKept: boolean, fallback: () => Promise<boolean>): Promise<boolean> {
    if (!firstKept) return fallback();
    await this.store.link(join(this.tree, first.path), join(this.tree, e.path));
    if (first.since !== undefined) e.since = first.since;
    if (first.sum !== undefined) e.sum = first.sum;
    if (first.tag !== undefined) e.tag = first.tag;
    if (first.z !== undefined) e.z = first.z;
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

  /**
   * A new or changed file's copy, as work for the ordered queue. A small file on a store that
   * copies in batches (the local store) joins a batch: the batch is the job every entry in it
   * waits on, and the entry's decision reads its own result (no promise, no async function per
   * file: those were most of the garbage a full backup made, ~4 KB a file). What went wrong or
   * changed meanwhile takes the usual road (copyLocked) from that result.
   */
  copyJob(e: Entry, abs: Buffer): { job: Job; decide: Decide } {
    if (!this.store.quickCopy || this.checksum !== undefined || this.frozen || this.salvage) return StoreWriter.job(this.copy(e, abs));
    const dest = join(this.tree, e.path);
    const quick = this.store.quickCopy(dest, { path: abs, sparse: e.sparse === true, size: e.size }, e);
    if (!quick) return StoreWriter.job(this.copy(e, abs));
    this.progress.bytesToCopy += e.size;
    return {
      job: quick.group,
      decide: () => {
        if (this.diffError !== undefined) throw this.diffError;
        if (this.store.quickDone!(quick, e.size, e.mtime, e.ctime)) return this.copied(e);
        return this.copyLocked(e, abs, () => this.store.quickResult!(quick, abs, dest));
      },
    };
  }

  /** Copies a new or changed file, re-reading it when it changes under us (up to 3 tries). */
  async copy(e: Entry, abs: Buffer): Promise<boolean> {
    this.progress.bytesToCopy += e.size;
    const slots = e.size > BIG_FILE ? this.bigCopySlots : this.copySlots;
    await slots.acquire();
    try {
      return await this.copyLocked(e, abs);
    } finally {
      slots.release();
    }
  }

  private unreadable(e: Entry, err: unknown): false {
    if (errnoCode(err) === 'ENOENT' && !this.frozen) return false; // deleted since the walk: simply not in this snapshot
    this.stats.unreadable++;
    this.emit({ event: 'warning', path: display(e.path), message: `cannot read, left out of this snapshot: ${errMessage(err)}` });
    return false;
  }

  private nextSync = SYNC_EVERY;

  /** What a killed run had copied (.bakker/salvage), when the store has it. */
  salvage: Buffer | null = null;

  /**
   * Takes over the killed run's copy of `e` when it is surely this content: a regular file of
   * the same size and mtime (set only once its content was written), with one link (only that
   * run had it: never an inode older snapshots share), moved into place, metadata brought up to
   * date.
   */
  private async trySalvage(e: Entry, dest: Buffer): Promise<boolean> {
    const old = join(this.salvage!, e.path);
    let st: Awaited<ReturnType<Store['stat']>>;
    try {
      st = await this.store.stat(old);
    } catch {
      return false;
    }
    if (!st || st.type !== 'file' || st.size !== e.size || st.mtime !== e.mtime || st.nlink !== 1) return false;
    try {
      await this.store.rename(old, dest);
    } catch {
      return false;
    }
    if (st.mode !== e.mode || st.uid !== e.uid || st.gid !== e.gid) await this.store.setMeta(dest, { mode: e.mode, uid: e.uid, gid: e.gid, mtime: e.mtime });
    this.stats.salvaged = (this.stats.salvaged ?? 0) + 1;
    return true;
  }

  private async copyLocked(e: Entry, abs: Buffer, first?: () => PutResult): Promise<boolean> {
    const dest = join(this.tree, e.path);
    if (!first && this.salvage && !this.frozen && this.checksum === undefined && !this.store.crypt && (await this.trySalvage(e, dest))) return this.copied(e);
    for (let attempt = 1; ; attempt++) {
      let res: PutResult;
      try {
        res = first && attempt === 1 ? first() : await this.store.putFile(dest, { path: abs, sparse: e.sparse === true, size: e.size, ...(this.frozen && e.z ? { compressed: true } : {}) }, { mode: e.mode, uid: e.uid, gid: e.gid, mtime: e.mtime }, this.checksum);
      } catch (err) {
        if (err instanceof SourceError) return this.unreadable(e, err);
        this.checkDirs();
        throw err;
      }
      const { before, after } = res;
      if (res.tag !== undefined) e.tag = res.tag;
      if (res.z !== undefined) e.z = res.z;
      if (this.frozen) {
        if (res.sum !== undefined) e.sum = res.sum;
        break;
      }
      const asWalked = before.size === e.size && before.mtime === e.mtime && before.ctime === e.ctime;
      const stable = before.size === after.size && before.mtime === after.mtime && before.ctime === after.ctime;
      if (asWalked && stable) {
        if (res.sum !== undefined) e.sum = res.sum;
        break;
      }
      if (attempt === MAX_TRIES) {
        // Keep what was read, flagged, so the next run copies it again.
        e.changing = true;
        e.size = res.size ?? (await this.store.stat(dest))?.size ?? after.size;
        if (res.sum !== undefined) e.sum = res.sum;
        this.stats.changing++;
        this.emit({ event: 'warning', path: display(e.path), message: `kept changing while being copied (${MAX_TRIES} tries): stored as last read, flagged "changing" in the impl` });
        break;
      }
      await this.store.unlink(dest);
      if (!refresh(e, abs)) {
        this.emit({ event: 'warning', path: display(e.path), message: 'replaced by a non-file while being copied: left out' });
        return false;
      }
    }
    return this.copied(e);
  }

  /** The first failure of a diff link batch (the run fails; finishDiff() throws it too). */
  private diffError: unknown;

  /** A new copy of `e` is in place: new content of this snapshot (counted, into the diff folder). */
  private copied(e: Entry): true | Promise<true> {
    e.since = this.name;
    this.stats.copied++;
    this.stats.bytesCopied += e.size;
    if (this.stats.bytesCopied >= this.nextSync) {
      // Writeback during the walk, not all in the sync before publishing (docs/PERFORMANCE.md).
      this.nextSync = this.stats.bytesCopied + SYNC_EVERY;
      this.store.syncSoon?.();
    }
    this.progress.copied++;
    this.progress.bytesCopied += e.size;
    const w = this.addToDiff(e.path);
    return w ? w.then(() => true as const) : true;
  }

  private diffRels: Buffer[] = [];
  /** The diff folders the queued links go into (each made or being made). */
  private diffDirWaits: Promise<void>[] = [];
  private readonly diffSent: Promise<void>[] = [];
  private lastDiffDir: Buffer | null = null;
  private lastDiffMade: Promise<void> = Promise.resolve();

  /**
   * Links new content into the diff folder, batched; finishDiff() waits for all of it (a batch
   * goes out once its folders exist). Nothing to wait for here on a store that links in batches.
   */
  private addToDiff(p: Buffer): Promise<void> | undefined {
    const dir = parent(p);
    let made = this.lastDiffMade;
    if (this.lastDiffDir === null || !this.lastDiffDir.equals(dir)) {
      made = this.lastDiffMade = this.diffDir(dir);
      this.lastDiffDir = dir;
      if (this.store.linkMany) this.diffDirWaits.push(made);
    }
    if (!this.store.linkMany) return made.then(() => this.store.link(join(this.tree, p), join(this.diff, p)));
    this.diffRels.push(p);
    if (this.diffRels.length >= this.linkBatch) this.sendDiff();
    return undefined;
  }

  private sendDiff(): void {
    const rels = this.diffRels;
    const dirs = this.diffDirWaits;
    if (rels.length === 0) return;
    this.diffRels = [];
    // The folder of the next link may be this batch's last one: it waits for it too.
    this.diffDirWaits = [this.lastDiffMade];
    const sent = Promise.all(dirs).then(() => this.linkSlots.run(() => this.store.linkMany!(this.tree, this.diff, rels))).then((codes) => {
      const bad = codes.findIndex((c) => c !== null);
      if (bad >= 0) throw Object.assign(new Error(`${codes[bad]}: cannot link ${display(rels[bad]!)} into the diff folder`), { code: codes[bad] });
    });
    sent.catch((err) => void (this.diffError ??= err));
    this.diffSent.push(sent);
  }

  /** Sends the last diff links and waits for every one (a failure fails the run). */
  async finishDiff(): Promise<void> {
    this.sendDiff();
    await Promise.all(this.diffSent);
  }

  /** Work wrapped for the ordered queue: the entry is kept when `work` resolves to true. */
  static job(work: Promise<boolean>): { job: Job; decide: Decide } {
    const job = new PromiseJob(work);
    return { job, decide: () => job.value === true };
  }

  private diffDir(p: Buffer): Promise<void> {
    if (p.length === 0) return Promise.resolve();
    const key = p.toString('latin1');
    let made = this.diffDirs.get(key);
    if (!made) {
      made = this.diffDir(parent(p)).then(() => this.store.mkdir(join(this.diff, p), 0o700));
      made.catch(() => undefined); // its failure reaches the run through the links waiting for it
      this.diffDirs.set(key, made);
    }
    return made;
  }
}
