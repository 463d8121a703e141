import os from 'node:os';
import { BakkerError, errnoCode, errMessage } from '../../errors.js';
import { FORMAT_VERSION, type ImplHeader } from '../../manifest/codec.js';
import type { Entry } from '../../manifest/entry.js';
import type { NsTime } from '../../manifest/time.js';
import { ImplWriter } from '../../manifest/impl-io.js';
import { reuseInfo, sameLine, type PrevRecord } from '../../manifest/prev-record.js';
import { PreviousImpl } from './previous-impl.js';
import type { Matcher } from '../../scan/exclude.js';
import { inheritXattrs, loadXattrs, walk, type SourceSpec, type WalkItem } from '../../scan/walker.js';
import { IndexPlace, IndexReader, IndexWriter, NO_ORDINAL, setOrdinal, setRecord, walkFingerprint, type IndexMeta } from './snapshot-index.js';
import { createHash } from 'node:crypto';
import { stateDir } from '../../util/state-dir.js';
import { decodeLine, encodeEntry } from '../../manifest/codec.js';
import { OPEN_READ, type Store } from '../../store/store.js';
import { display, join } from '../../util/bpath.js';
import { algoOfSum, hashStream, loadHash, type HashAlgo } from '../../util/hash.js';
import fs from 'node:fs';
import { newProgress, noEmit, type Emit, type Progress } from '../events.js';
import { acquireLock, diffPath, implPath, initStore, listStore, mkdirIfMissing, RUN_DIR, SALVAGE_DIR, setLatest, treePath } from '../layout.js';
import { compareSnapshotNames, nextSnapshotName } from '../naming.js';
import { faultPoint } from '../fault.js';
import { cleanupIncomplete } from './cleanup.js';
import { checkSpace, leaveRequest } from '../space.js';
import { bytes, count as countOf } from '../../ui/format.js';
import { ABANDONED, LazyJob, once, OrderedQueue, PromiseJob, SETTLED, type Decide, type Job } from './ordered-queue.js';
import { pipelineFor, StoreWriter } from './store-writer.js';
import { snapshotHeader, walkSnapshot } from './snapshot-walk.js';
import { readSummaryFile, writeSummary, type SnapshotSummary, type WalkCounts } from '../summary.js';

export interface BackupOptions {
  store: Store;
  sources: SourceSpec[];
  exclude?: Matcher;
  oneFileSystem?: boolean;
  checksum?: HashAlgo;
  dryRun?: boolean;
  now?: Date;
  host?: string;
  job?: string;
  emit?: Emit;
  progress?: Progress;
  signal?: AbortSignal;
  /** Extra fields for the impl header (for example a view's downtime). */
  headerExtra?: Record<string, unknown>;
  /** Skip the check that the store has room for a run like the last one. */
  noSpaceCheck?: boolean;
  /** Folders (absolute recorded paths) never descended into, such as a view's own snapshot folder. */
  skip?: string[];
  /**
   * Copy this snapshot of a local store instead of walking `sources` (docs/DESIGN.md, "Several
   * targets"): the new snapshot takes its name, its entries come from its impl, its content
   * from its tree, and what the store's newest snapshot already holds is linked there.
   */
  from?: { store: Store; snapshot: string };
}

export interface BackupResult {
  snapshot: string | null;
  /** With `from`: why nothing was copied (the store has that snapshot, or a newer one). */
  upToDate?: string;
  previous: string | null;
  dryRun: boolean;
  summary: SnapshotSummary;
}

type Counts = WalkCounts;

/** What the ordered queue writes: an entry, a run of unchanged lines, or a finished directory's index block. */
type Out = (WalkItem & { kind: 'entry' }) | Lines | { kind: 'dirEnd'; rel: Buffer; block: Buffer };
/** Unchanged entries' previous lines; null for one left out (remote fast path, see relinkFailed). */
type Lines = { kind: 'lines'; lines: (Buffer | null)[]; block: Buffer; recs: number[]; dropped?: boolean };

/** A file's sum as the impl stores it ("<algo>:<hex>"), or undefined when it cannot be read now. */
async function hashFile(abs: Buffer, algo: HashAlgo): Promise<string | undefined> {
  try {
    const fh = await fs.promises.open(abs, OPEN_READ);
    return await hashStream(fh.createReadStream(), algo);
  } catch {
    return undefined;
  }
}

function withSkips(a: Set<string> | undefined, more: string[] | undefined): Set<string> | undefined {
  if (!more?.length) return a;
  const s = new Set(a);
  for (const m of more) s.add(Buffer.from(m).toString('latin1'));
  return s;
}

/** A local store inside a source is left out of the backup (it would copy itself over and over). */
function storeSkip(store: Store, sources: SourceSpec[], emit: Emit): Set<string> | undefined {
  const root = store.folder ?? store.localRoot;
  if (!root) return undefined;
  const inside = sources.find((s) => root === s.path || root.startsWith(s.path.endsWith('/') ? s.path : `${s.path}/`));
  if (!inside) return undefined;
  emit({ event: 'info', message: `the store ${root} is inside the source ${inside.path}: it is left out of the backup` });
  return new Set([Buffer.from(root).toString('latin1')]);
}

/**
 * xattrs and ACLs of an entry whose walk skipped them: an unchanged ctime means unchanged xattrs
 * (setting them updates the ctime), so they come from the previous record; else they are read
 * now (also when the previous record turns out malformed).
 */
function settleXattrs(item: WalkItem & { kind: 'entry' }, prev: PrevRecord | undefined, emit: Emit, counts: Counts): void {
  const e = item.entry;
  if (prev && prev.o.ctime === e.ctime && prev.o.type === e.type) {
    try {
      inheritXattrs(e, prev.entry());
      return;
    } catch (err) {
      counts.warnings++;
      emit({ event: 'warning', path: display(e.path), message: `previous impl record unusable (${errMessage(err)}): xattrs read again` });
    }
  }
  {
    const warning = loadXattrs(e, item.abs);
    if (warning) {
      counts.warnings++;
      emit({ event: 'warning', path: display(e.path), message: warning });
    }
  }
}

/** How often a run asks for a garbage collection (docs/PERFORMANCE.md, memory). */
const GC_INTERVAL_MS = 300;
/**
 * ... and only once the process is this big (a bare Node process is ~45 MB). A remote run holds
 * more (SSH buffers, requests in flight, a longer window: 120-160 MB at 100k entries), and a
 * major collection every 300 ms there cost 0.45 s of a 4.6 s run at 10 ms RTT for 20-35 MB less
 * memory: it collects only past 192 MB.
 */
const GC_ABOVE_LOCAL = 80 * 1024 * 1024;
const GC_ABOVE_REMOTE = 192 * 1024 * 1024;

/**
 * Starts a major garbage collection when the bin allowed it (--expose-gc) and the process has
 * grown past `above`. What a run keeps alive
 * is small and flat, but V8 lets garbage (mostly Buffers) pile up to several times that before
 * it collects on its own; collecting now and then keeps the peak near what is in use, at almost
 * no cost (the marking runs alongside, and the main thread has idle time to spare).
 */
function collectGarbage(above: number): void {
  if (process.memoryUsage.rss() < above) return; // plenty of room: leave it to V8
  (globalThis as { gc?: (o: { type: string; execution: string }) => void }).gc?.({ type: 'major', execution: 'async' });
}

function checkAbort(signal?: AbortSignal): void {
  if (signal?.aborted) throw new BakkerError('IO', 'backup interrupted: no snapshot was published, earlier snapshots are intact');
}

/**
 * One backup run: walk the sources, merge-join with the previous impl, hard-link what is
 * unchanged and copy the rest into .bakker/run/NAME, then publish (rename; impl last; latest).
 * A failure or a kill at any point leaves earlier snapshots and `latest` as they were.
 */
export async function runBackup(opts: BackupOptions): Promise<BackupResult> {
  const { store } = opts;
  const emit = opts.emit ?? noEmit;
  const progress = opts.progress ?? newProgress();
  const now = opts.now ?? new Date();
  const t0 = Date.now();
  if (!store.caps.hardLinks) throw new BakkerError('STORE', `store ${store.url} cannot make hard links: bakker snapshots need them`);

  if (opts.dryRun) return dryRun(opts, emit, progress, now, t0);
  await loadHash(opts.checksum);

  await initStore(store);
  const lock = await acquireLock(store);
  if (lock.tookOverFrom) emit({ event: 'info', message: `took over the lock of a dead run (PID ${lock.tookOverFrom.pid}, started ${lock.tookOverFrom.started})` });
  let runDir: Buffer | null = null;
  const gcTimer = setInterval(collectGarbage, GC_INTERVAL_MS, store.localRoot ? GC_ABOVE_LOCAL : GC_ABOVE_REMOTE);
  gcTimer.unref();
  let queue: OrderedQueue<Out> | null = null;
  let implWriter: ImplWriter | null = null;
  let prevImpl: PreviousImpl | null = null;
  let prevIndex: IndexReader | null = null;
  let indexWriter: IndexWriter | null = null;
  let place: IndexPlace | null = null;
  let name = '';
  try {
    const listing = await cleanupIncomplete(store, emit);
    const previous = listing.complete[listing.complete.length - 1] ?? null;
    if (previous && !opts.noSpaceCheck) await checkSpace(store, readSummaryFile(store, previous), (message) => emit({ event: 'warning', message }));
    if (opts.from) {
      name = opts.from.snapshot;
      const why = listing.complete.includes(name) ? `${store.url} already has ${name}` : previous && compareSnapshotNames(previous, name) > 0 ? `${store.url} has a newer snapshot (${previous}) than ${name}` : null;
      if (why) return { snapshot: null, previous, dryRun: false, upToDate: why, summary: emptySummary(name, previous, now) };
      if (listing.used.has(name)) throw new BakkerError('STORE', `${store.url} has a folder named ${name} that is not a complete snapshot: remove it there, then run again`);
    } else name = nextSnapshotName(listing.used, now);
    runDir = join(RUN_DIR, name);
    const tree = join(runDir, 'tree');
    const diff = join(runDir, 'diff');
    if (store.caps.ordered) await Promise.all([mkdirIfMissing(store, RUN_DIR), store.mkdir(runDir, 0o700), store.mkdir(tree, 0o700), store.mkdir(diff, 0o700)]);
    else {
      await mkdirIfMissing(store, RUN_DIR);
      for (const d of [runDir, tree, diff]) await store.mkdir(d, 0o700);
    }

    const fromHeader = opts.from ? await snapshotHeader(opts.from.store, opts.from.snapshot) : null;
    // An encrypted store: this run's store key goes into the (encrypted) impl.
    const cryptHeader = store.crypt ? await store.crypt.prepare(previous, listing.complete, emit) : {};
    const header: ImplHeader = fromHeader
      ? { ...fromHeader, ...cryptHeader, snapshot: name, previous, copiedFrom: { store: opts.from!.store.url, snapshot: name, start: fromHeader.start }, start: now.toISOString() }
      : {
          bakker: 'impl',
          format: FORMAT_VERSION,
          snapshot: name,
          host: opts.host ?? os.hostname(),
          job: opts.job ?? 'default',
          sources: opts.sources.map((s) => s.path),
          start: now.toISOString(),
          previous,
          options: {
            exclude: opts.exclude?.patterns ?? [],
            oneFileSystem: opts.oneFileSystem === true,
            checksum: opts.checksum ?? null,
          },
          ...opts.headerExtra,
          ...cryptHeader,
        };
    implWriter = new ImplWriter(store, join(runDir, 'impl'), header);
    const writer = new StoreWriter(store, tree, diff, previous ? treePath(previous) : null, name, opts.from ? undefined : opts.checksum, emit, progress, opts.from !== undefined);
    if (!opts.dryRun && !store.crypt && (await store.stat(SALVAGE_DIR).catch(() => null))?.type === 'dir') writer.salvage = SALVAGE_DIR;
    const iw = implWriter;
    const root = store.localRoot;
    // A remote store's impl is hashed as it is read: its cached index is checked against it.
    prevImpl = await PreviousImpl.open(store, previous, emit, { hash: !root });
    const skip = opts.from ? undefined : withSkips(storeSkip(store, opts.sources, emit), opts.skip);

    // The fast path: directory scans compare with the previous snapshot's index and find the
    // unchanged files (on a local store they link them too; on a remote one the run links them
    // in batches), whose previous lines go to the impl as they are. Each run writes the index
    // for the next one (docs/DESIGN.md, "Previous index").
    const fingerprint = walkFingerprint({ sources: opts.sources, exclude: header.options, skip: skip ? [...skip] : [] });
    place = opts.from ? null : IndexPlace.for(store, stateDir());
    if (place) {
      const pl = place;
      const checkImpl = async (meta: IndexMeta): Promise<void> => {
        if (!pl.remote) {
          // Hashed as it streams by: the whole impl in memory would grow with the tree.
          const h = createHash('sha256');
          for await (const c of (await store.openRead(implPath(previous!))).stream) h.update(c as Buffer);
          if (h.digest('hex') !== meta.impl) throw new Error('made for another impl');
        } else {
          // A remote impl rewritten since (a merge by a prune on the storage side) has another mtime.
          const st = await store.stat(implPath(previous!));
          if (meta.implBytes === undefined || st?.size !== meta.implBytes || (meta.implMtime !== undefined && st.mtime !== meta.implMtime)) throw new Error('made for another impl');
        }
      };
      prevIndex = previous && prevImpl.present ? await IndexReader.open(place.file(previous), previous, fingerprint, checkImpl, emit) : null;
      indexWriter = place.writer(name, runDir);
    }
    emit({ event: 'start', command: 'backup', store: store.url, snapshot: name, previous, ...(place ? { indexed: prevIndex !== null } : {}) });
    const pi = prevIndex;
    const ixw = indexWriter;
    const absOf = (p: Buffer) => Buffer.concat([Buffer.from(root ?? ''), Buffer.from('/'), p]);
    const newAbs = absOf(tree);
    const prevAbs = previous ? absOf(treePath(previous)) : newAbs;
    const remoteFast = place?.remote === true;
    const fast = !place
      ? undefined
      : remoteFast
        ? { args: (rel: Buffer): [Buffer | null, null, null] => [pi?.block(rel) ?? null, null, null], indexed: pi !== null, remote: true }
        : { args: (rel: Buffer): [Buffer | null, Buffer, Buffer] => [pi?.block(rel) ?? null, join(prevAbs, rel), join(newAbs, rel)], indexed: pi !== null };

    const writeOut = (x: Out): Promise<void> | void => {
      if (x.kind === 'lines') {
        if (!x.dropped) {
          for (let k = 0; k < x.recs.length; k++) setOrdinal(x.block, x.recs[k]!, iw.count + k);
          return iw.writeLines(x.lines as Buffer[]);
        }
        const kept: Buffer[] = [];
        for (let k = 0; k < x.recs.length; k++) {
          const line = x.lines[k]!;
          setOrdinal(x.block, x.recs[k]!, line === null ? NO_ORDINAL : iw.count + kept.length);
          if (line !== null) kept.push(line);
        }
        return iw.writeLines(kept);
      }
      if (x.kind === 'dirEnd') return ixw?.addBlock(x.rel, x.block);
      if (x.block && x.rec !== undefined && x.rec >= 0) setRecord(x.block, x.rec, x.entry, iw.count);
      const w = iw.write(x.entry);
      // The first member of a hard-link group stays in memory for the run: not its previous
      // line, which is a view of a whole 64 KiB piece of the previous impl.
      delete x.entry.raw;
      return w;
    };
    queue = new OrderedQueue<Out>(writeOut, pipelineFor(store).window);
    const counts = newCounts();
    const onRemoved = () => void counts.removed++;
    // Directory metadata is applied at the end (adding entries changes a directory's mtime). Paths
    // are kept as latin1 strings: a small pooled Buffer would pin its whole 8 KiB pool slab.
    const dirs: DirMeta[] = [];
    const groupFirst = new Map<Entry, { job: Job; decide: Decide }>();
    progress.phase = 'walking';

    const items = opts.from ? walkSnapshot(opts.from.store, opts.from.snapshot) : walk({ sources: opts.sources, exclude: opts.exclude, oneFileSystem: opts.oneFileSystem, probeXattrs: !prevImpl.present, skip, fast });
    for await (const batch of items) for (const item of batch) {
      if (item.kind === 'warning') {
        counts.warnings++;
        if (item.unreadable) writer.stats.unreadable++;
        emit({ event: 'warning', path: display(item.path), message: item.message });
        continue;
      }
      if (item.kind === 'dirEnd') {
        const wait = queue.push(item);
        if (wait) await wait;
        continue;
      }
      if (item.kind === 'fast') {
        // Unchanged files the scan already linked: their previous lines go to the impl as they are.
        const lines: Buffer[] = [];
        for (const ordinal of item.prev) {
          let line = prevImpl.take(ordinal, onRemoved, false);
          if (line instanceof Promise) line = await line;
          lines.push(line);
        }
        const n = item.prev.length;
        counts.entries += n;
        counts.files += item.files;
        counts.symlinks += item.symlinks;
        counts.unchanged += n;
        counts.bytes += item.bytes;
        writer.stats.linked += n;
        writer.stats.bytesLinked += item.bytes + item.symlinkBytes;
        progress.linked += n;
        const before = progress.entries;
        progress.entries += n;
        if (before >> 10 !== progress.entries >> 10) checkAbort(opts.signal);
        if (before < 500 && progress.entries >= 500) faultPoint('mid-walk');
        const out: Lines = { kind: 'lines', lines, block: item.block, recs: item.recs };
        let wait: Promise<void> | undefined;
        if (item.names) {
          // Remote: linked in batches; a link whose old copy is gone copies anew.
          const { rel: dir, abs: dirAbs, names } = item as Required<typeof item>;
          const run = writer.linkRun(dir, names);
          const decide = () => {
            const failed = StoreWriter.linkRunFailures(run, dir, names);
            return failed.length === 0 || relinkFailed(writer, out, failed, dirAbs, names);
          };
          wait = queue.push(out, run.job, decide, n);
        } else wait = queue.push(out);
        if (wait) await wait;
        continue;
      }
      if ((++progress.entries & 1023) === 0) checkAbort(opts.signal);
      if (progress.entries === 500) faultPoint('mid-walk');
      const e = item.entry;
      progress.current = e.path;
      let prev: PrevRecord | undefined | Promise<PrevRecord | undefined>;
      if (item.prevOrdinal === undefined) prev = prevImpl.find(e.path, onRemoved);
      else if (item.prevOrdinal >= 0) prev = prevImpl.take(item.prevOrdinal, onRemoved, true);
      if (prev instanceof Promise) prev = await prev;
      if (prev && item.prevOrdinal !== undefined && !prev.path.equals(e.path)) throw indexMismatch(e.path);
      const reuse = reuseInfo(prev, e);
      // Checksums just turned on (or another algorithm): an unchanged file gets its sum now,
      // from the source, once (the run that changed the option reads every such file).
      const backfill = reuse !== null && opts.checksum !== undefined && e.type === 'file' && !item.linkTo && (reuse.sum === undefined || algoOfSum(reuse.sum) !== opts.checksum);
      if (backfill) reuse!.sum = await hashFile(item.abs, opts.checksum!);
      if (reuse && !item.linkTo && !backfill && sameLine(prev!, e)) e.raw = prev!.line;
      else if (item.xattrsPending) settleXattrs(item, prev, emit, counts);
      const reusable = reuse !== null;
      count(counts, e, prev !== undefined, reusable);
      let work: { job: Job; decide: Decide } | undefined;
      switch (e.type) {
        case 'dir':
          if (!item.madeByScan) writer.mkdir(e);
          dirs.push({ path: e.path.toString('latin1'), mode: e.mode, uid: e.uid, gid: e.gid, mtime: e.mtime });
          break;
        case 'file': {
          const copy = () => writer.copy(e, item.abs);
          if (item.linkTo) {
            // Starts once the group's first member settled (never forcing that one out early: it
            // may sit in a link batch still filling up), so members are not linked one round trip
            // at a time when the queue reaches them.
            const first = groupFirst.get(item.linkTo);
            const linkTo = item.linkTo;
            const job = new PromiseJob(first ? whenSettled(first.job).then(() => isKept(first)).then((kept) => writer.linkToGroup(e, linkTo, kept, copy)) : writer.linkToGroup(e, linkTo, false, copy));
            work = { job, decide: () => job.value === true };
          } else if (reuse) work = writer.reuse(e, reuse, copy);
          else work = writer.copyJob(e, item.abs);
          if (e.hardlink !== undefined && !item.linkTo) {
            // Held until the run ends (the group's later members may come at any point of the
            // walk): once decided, only the decision (KEPT or LEFT_OUT, made outside this loop:
            // a closure made here would keep this iteration's whole scope), not the work with
            // its batch's results and its folder's paths (~16 KB a group; 180-220 MB at 1M).
            const decide = once(work.decide);
            const held = (kept: boolean) => groupFirst.set(e, kept ? KEPT : LEFT_OUT);
            work = {
              job: work.job,
              decide: () => {
                const kept = decide();
                if (kept === true || kept === false) held(kept);
                else kept.then(held, () => undefined);
                return kept;
              },
            };
            groupFirst.set(e, work);
          }
          break;
        }
        case 'symlink':
          work = reuse ? writer.reuse(e, reuse, () => writer.symlink(e)) : StoreWriter.job(writer.symlink(e));
          break;
        default:
          break; // fifos, sockets and devices live in the impl only
      }
      const wait = queue.push(item, work?.job, work?.decide);
      if (wait) await wait;
    }
    await prevImpl.rest(() => counts.removed++);
    checkAbort(opts.signal); // a signal during the last stretch of the walk: nothing is published
    if (prevIndex && remoteFast) {
      // The lines taken by entry number must have come from the impl the index was made with.
      const read = await prevImpl.digest();
      if (read?.sha256 !== prevIndex.meta.impl) {
        place!.drop(previous!);
        throw new BakkerError('IMPL', `the impl of ${previous} on the store is not the one this server's index of it was made with: the index was dropped; run the backup again (nothing was published, earlier snapshots are intact)`);
      }
    }
    const tWalked = Date.now();
    progress.phase = 'finishing';
    writer.flushLinks();
    await queue.drain();
    await writer.finishDiff();
    await writer.dirsMade();
    await applyDirMeta(store, tree, dirs);
    const durationMs = Date.now() - t0;
    const summary: SnapshotSummary = {
      snapshot: name,
      previous,
      start: now.toISOString(),
      durationMs,
      ...counts,
      entries: iw.count,
      copied: writer.stats.copied,
      linked: writer.stats.linked,
      bytesCopied: writer.stats.bytesCopied,
      bytesLinked: writer.stats.bytesLinked,
      unreadable: writer.stats.unreadable,
      changing: writer.stats.changing,
      ...(writer.stats.salvaged ? { salvaged: writer.stats.salvaged } : {}),
    };
    await implWriter.close({ trailer: true, end: new Date().toISOString(), entries: iw.count, summary: numbersOf(summary) });
    implWriter = null;
    if (indexWriter) {
      // What the store holds (an encrypted store's impl is larger than what was written).
      const implSt = place?.remote ? await store.stat(join(runDir, 'impl')) : null;
      const implMtime = implSt?.mtime;
      await indexWriter.close({ format: 1, snapshot: name, impl: iw.digest(), implBytes: implSt?.size ?? iw.bytes, ...(implMtime ? { implMtime } : {}), entries: iw.count, fingerprint });
      indexWriter = null;
    }
    const tWritten = Date.now();
    // The last moment to stop: a signal that came in meanwhile is seen (its handler runs on this
    // turn of the event loop), and nothing is published.
    await new Promise((r) => setImmediate(r));
    checkAbort(opts.signal);
    await publish(store, runDir, name, summary, place);
    if (writer.salvage) {
      if (writer.stats.salvaged) emit({ event: 'info', message: `${writer.stats.salvaged} file(s) copied by the interrupted run were taken over, not copied again` });
      await store.remove(SALVAGE_DIR).catch(() => undefined); // what is left of it is not needed
    }
    summary.phasesMs = { walk: tWalked - t0, finish: tWritten - tWalked, publish: Date.now() - tWritten };
    runDir = null;
    emit({ event: 'snapshot', name, entries: summary.entries, bytes: summary.bytes, newBytes: summary.bytesCopied, start: summary.start, durationMs });
    return { snapshot: name, previous, dryRun: false, summary };
  } catch (err) {
    throw await storeFailure(store, err, progress.bytesToCopy);
  } finally {
    clearInterval(gcTimer);
    prevImpl?.close();
    prevIndex?.close();
    implWriter?.abort();
    indexWriter?.abort();
    if (queue) await queue.settle().catch(() => undefined);
    if (runDir) await store.remove(runDir).catch(() => undefined);
    if (runDir && name) place?.abandon(name);
    await lock.release().catch(() => undefined);
  }
}

type DirMeta = { path: string; mode: number; uid: number; gid: number; mtime: NsTime };

/**
 * Sets each directory's mode, owner and times once everything is in it: deepest first, so a
 * restrictive mode never blocks reaching what lies below; directories of one depth (none
 * inside another) in parallel.
 */
async function applyDirMeta(store: Store, tree: Buffer, dirs: DirMeta[]): Promise<void> {
  const byDepth: DirMeta[][] = [];
  for (const d of dirs) {
    let depth = 0;
    for (let i = d.path.indexOf('/'); i >= 0; i = d.path.indexOf('/', i + 1)) depth++;
    (byDepth[depth] ??= []).push(d);
  }
  if (store.setDirMetaMany) {
    const items: { p: Buffer; meta: { mode: number; uid: number; gid: number; mtime: NsTime } }[] = [];
    for (let depth = byDepth.length - 1; depth >= 0; depth--) {
      for (const d of byDepth[depth] ?? []) items.push({ p: join(tree, Buffer.from(d.path, 'latin1')), meta: d });
    }
    return store.setDirMetaMany(items);
  }
  for (let depth = byDepth.length - 1; depth >= 0; depth--) {
    const level = byDepth[depth];
    if (!level) continue;
    let next = 0;
    const lane = async () => {
      while (next < level.length) {
        const d = level[next++]!;
        await store.setMeta(join(tree, Buffer.from(d.path, 'latin1')), { mode: d.mode, uid: d.uid, gid: d.gid, mtime: d.mtime });
      }
    };
    await Promise.all(Array.from({ length: Math.min(16, level.length) }, lane));
  }
}

/** Resolves when a job settled, without starting one that is still idle. */
function whenSettled(job: Job): Promise<void> {
  if (job.settled) return Promise.resolve();
  if (job instanceof LazyJob) return job.whenSettled();
  return job.wait();
}

/** Whether the first member of a hard-link group made it into the snapshot (its decision is memoized). */
async function isKept(work: { job: Job; decide: Decide }): Promise<boolean> {
  await work.job.wait();
  if (work.job.failure === ABANDONED) throw ABANDONED;
  if (work.job.failure !== undefined) return false;
  return work.decide();
}

/** What a hard-link group's first member leaves once decided (see groupFirst). */
const KEPT: { job: Job; decide: Decide } = { job: SETTLED, decide: () => true };
const LEFT_OUT: { job: Job; decide: Decide } = { job: SETTLED, decide: () => false };

/** Free inodes below which an ENOSPC is the inodes running out, not the bytes. */
const FEW_INODES = 1024;

async function storeFailure(store: Store, err: unknown, toCopy: number): Promise<unknown> {
  const code = errnoCode(err);
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    // What this run had sent is removed with its folder: at least that much room is needed.
    const space = await store.statvfs().catch(() => null);
    const free = space ? space.freeBytes : null;
    if (code === 'ENOSPC' && space && space.freeInodes < FEW_INODES) {
      // Room for bytes but none for files: "full" alone would send the admin looking at df -h.
      const short = `it ran out while copying ${bytes(toCopy)} of new data, ${countOf(space.freeInodes)} inodes and ${bytes(space.freeBytes)} free`;
      await leaveRequest(store, toCopy, `store out of inodes: ${short}`);
      return new BakkerError('FULL', `store ${store.url} is out of inodes (ENOSPC): ${short}: every file and folder takes one; prune old snapshots, or put the store on a filesystem with more inodes (mkfs.ext4 -i or -N) (a request was left in .bakker/requests/); no snapshot was published and earlier ones are intact`, { cause: err });
    }
    const short = `it filled while copying ${bytes(toCopy)} of new data${free === null ? '' : `, ${bytes(free)} free`}`;
    await leaveRequest(store, toCopy, `store full: ${short}`);
    return new BakkerError('FULL', `store ${store.url} is full (${code}): ${short}: free space there, prune old snapshots, or ask for more (a request was left in .bakker/requests/); no snapshot was published and earlier ones are intact`, { cause: err });
  }
  if (code && !(err instanceof BakkerError)) {
    return new BakkerError('IO', `writing to store ${store.url} failed: ${errMessage(err)}; no snapshot was published and earlier ones are intact`, { cause: err });
  }
  return err;
}

/** Makes the run durable, then publishes: tree, diff, impl (the commit point), summary, latest. */
async function publish(store: Store, runDir: Buffer, name: string, summary: SnapshotSummary, place: IndexPlace | null): Promise<void> {
  faultPoint('before-publish');
  await store.sync();
  // Tree and diff folder first, then the impl: the commit point. On an ordered store the two
  // renames go out together (each is waited for before the impl's).
  const treeRenamed = store.rename(join(runDir, 'tree'), treePath(name));
  if (!store.caps.ordered) await treeRenamed;
  faultPoint('after-tree-rename');
  await Promise.all([treeRenamed, store.rename(join(runDir, 'diff'), diffPath(name))]);
  if (place && !place.remote) await place.publish(name, runDir);
  await store.rename(join(runDir, 'impl'), implPath(name));
  faultPoint('after-impl-rename');
  await store.sync();
  // Published: the summary, `latest` and the removal of the emptied run folder go out together.
  const removed = store.caps.ordered ? store.remove(runDir) : null;
  await Promise.all([writeSummary(store, summary).catch(() => undefined), setLatest(store, name)]);
  faultPoint('after-latest');
  await Promise.all([removed ?? store.remove(runDir), place?.remote ? place.publish(name, runDir).catch(() => undefined) : undefined]);
  await place?.keepOnly(name);
}

/**
 * Remote fast path: links of a run whose previous copies turned out to be gone. Each is copied
 * anew from the source (its previous line, which the scan found still true, gives the entry)
 * and its line rewritten; one that vanished meanwhile is left out.
 */
async function relinkFailed(writer: StoreWriter, out: Lines, failed: number[], dirAbs: Buffer, names: Buffer[]): Promise<boolean> {
  for (const k of failed) {
    const line = out.lines[k]!;
    const d = decodeLine(line.toString('utf8'), 0);
    if (d.kind !== 'entry') throw new BakkerError('IMPL', 'internal: a fast-path line is not an entry');
    const e = d.entry;
    const kept = await writer.relink(e, join(dirAbs, names[k]!));
    out.lines[k] = kept ? Buffer.from(encodeEntry(e)) : null;
    if (!kept) out.dropped = true;
  }
  return true;
}

function indexMismatch(p: Buffer): BakkerError {
  return new BakkerError('IMPL', `the previous snapshot's index does not match its impl at ${display(p)}: the index is damaged; remove .bakker/index/ in the store and run again`);
}

function emptySummary(name: string, previous: string | null, now: Date): SnapshotSummary {
  return { snapshot: name, previous, start: now.toISOString(), durationMs: 0, ...newCounts(), copied: 0, linked: 0, bytesCopied: 0, bytesLinked: 0, unreadable: 0, changing: 0 };
}

function newCounts(): Counts {
  return { entries: 0, files: 0, dirs: 0, symlinks: 0, specials: 0, added: 0, changed: 0, unchanged: 0, removed: 0, bytes: 0, warnings: 0 };
}

function count(c: Counts, e: Entry, hadPrev: boolean, reusable: boolean): void {
  c.entries++;
  if (e.type === 'file') {
    c.files++;
    c.bytes += e.size;
  } else if (e.type === 'dir') c.dirs++;
  else if (e.type === 'symlink') c.symlinks++;
  else c.specials++;
  if (e.type !== 'file' && e.type !== 'symlink') return;
  if (!hadPrev) c.added++;
  else if (reusable) c.unchanged++;
  else c.changed++;
}

function numbersOf(o: object): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(o)) if (typeof v === 'number') out[k] = v;
  return out;
}

async function dryRun(opts: BackupOptions, emit: Emit, progress: Progress, now: Date, t0: number): Promise<BackupResult> {
  const { store } = opts;
  let previous: string | null = null;
  let name = nextSnapshotName([], now);
  try {
    const listing = await listStore(store);
    previous = listing.complete[listing.complete.length - 1] ?? null;
    name = nextSnapshotName(listing.used, now);
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT') throw err;
  }
  emit({ event: 'start', command: 'backup', store: store.url, snapshot: name, previous, dryRun: true });
  const prevImpl = await PreviousImpl.open(store, previous, emit);
  const counts = newCounts();
  let bytesToCopy = 0;
  try {
    for await (const batch of walk({ sources: opts.sources, exclude: opts.exclude, oneFileSystem: opts.oneFileSystem, probeXattrs: false, skip: storeSkip(store, opts.sources, emit) })) for (const item of batch) {
      if (item.kind === 'warning') {
        counts.warnings++;
        emit({ event: 'warning', path: display(item.path), message: item.message });
        continue;
      }
      if (item.kind !== 'entry') continue; // fast-path items: not asked for here
      progress.entries++;
      const e = item.entry;
      const prev = await prevImpl.find(e.path, () => counts.removed++);
      const reusable = reuseInfo(prev, e) !== null;
      count(counts, e, prev !== undefined, reusable);
      if (e.type === 'file' && !item.linkTo && !reusable) {
        bytesToCopy += e.size;
        emit({ event: 'entry', change: prev ? 'changed' : 'new', path: display(e.path) });
      }
    }
    await prevImpl.rest(() => counts.removed++);
  } finally {
    prevImpl.close();
  }
  const summary: SnapshotSummary = {
    snapshot: name,
    previous,
    start: now.toISOString(),
    durationMs: Date.now() - t0,
    ...counts,
    copied: 0,
    linked: 0,
    bytesCopied: bytesToCopy,
    bytesLinked: 0,
    unreadable: 0,
    changing: 0,
  };
  return { snapshot: null, previous, dryRun: true, summary };
}

