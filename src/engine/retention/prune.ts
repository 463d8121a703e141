import { BakkerError } from '../../errors.js';
import { ImplReader, ImplWriter } from '../../manifest/impl-io.js';
import type { PrevRecord } from '../../manifest/prev-record.js';
import type { Store } from '../../store/store.js';
import { join, parent } from '../../util/bpath.js';
import type { Emit } from '../events.js';
import { acquireLock, diffPath, implPath, listStore, mkdirIfMissing, RUN_DIR, treePath } from '../layout.js';
import { compareSnapshotNames, SNAPSHOT_RE } from '../naming.js';
import { readSummaryFile, removeSummary } from '../summary.js';
import { applyPolicy, type Decision, type Policy } from './policy.js';
import { IndexPlace } from '../backup/snapshot-index.js';
import { stateDir } from '../../util/state-dir.js';

export interface PruneResult {
  decisions: Decision[];
  removed: string[];
  /** Kept snapshots whose diff folder and history were rebuilt against a new predecessor. */
  merged: string[];
  dryRun: boolean;
  /** Time spent merging and removing. */
  mergeMs: number;
  removeMs: number;
}

/** When a snapshot ran: its summary's start, else its name's date (run N at N minutes past midnight). */
async function timeOf(store: Store, name: string): Promise<Date> {
  const s = await readSummaryFile(store, name);
  const t = s?.start ? new Date(s.start) : null;
  if (t && !Number.isNaN(t.getTime())) return t;
  const m = SNAPSHOT_RE.exec(name)!;
  return new Date(Number(m[1]), Number(m[2]) - 1, Number(m[3]), 0, Number(m[4]));
}

/**
 * Applies a policy to a store (docs/RETENTION.md): decides every complete snapshot, then (unless
 * a dry run) merges each kept snapshot that loses its predecessor (its impl's `since` history and
 * its diff folder are rebuilt, so its diff holds all that is new since the previous kept one),
 * and only then removes the others (impl first: a snapshot without one is incomplete, and any
 * later run clears what a killed prune left). `locked`: the caller holds the store's lock.
 */
export async function prune(store: Store, policy: Policy, opts: { dryRun?: boolean; emit: Emit; locked?: boolean }): Promise<PruneResult> {
  const lock = opts.locked || opts.dryRun ? null : await acquireLock(store);
  try {
    const { complete } = await listStore(store);
    const snaps = await Promise.all(complete.map(async (name) => ({ name, time: await timeOf(store, name) })));
    const decisions = applyPolicy(snaps, policy);
    const result: PruneResult = { decisions, removed: [], merged: [], dryRun: opts.dryRun === true, mergeMs: 0, removeMs: 0 };
    if (opts.dryRun) return result;
    const kept = new Set(decisions.filter((d) => d.keep).map((d) => d.name));
    // Merges, oldest first: each kept snapshot whose predecessor goes takes over what the removed
    // ones between it and its new predecessor first held.
    const keptNames = complete.filter((n) => kept.has(n));
    const t0 = Date.now();
    let lost = false;
    let prevKept: string | null = null;
    for (const name of complete) {
      if (!kept.has(name)) {
        lost = true;
        continue;
      }
      if (lost) {
        await mergeInto(store, name, prevKept, keptNames, opts.emit);
        result.merged.push(name);
      }
      lost = false;
      prevKept = name;
    }
    const t1 = Date.now();
    result.mergeMs = t1 - t0;
    for (const name of complete) {
      if (kept.has(name)) continue;
      await removeSnapshot(store, name);
      result.removed.push(name);
      opts.emit({ event: 'info', message: `removed ${name}` });
    }
    result.removeMs = Date.now() - t1;
    return result;
  } finally {
    await lock?.release().catch(() => undefined);
  }
}

const TRAILER_START = Buffer.from('{"trailer"');
const SINCE = Buffer.from('"since":"');

/** An impl line's `since` without decoding the line (a JSON string value cannot hold this key pattern unescaped). */
function sinceOf(line: Buffer): string | undefined {
  const at = line.indexOf(SINCE);
  if (at < 0) return undefined;
  const from = at + SINCE.length;
  const end = line.indexOf(0x22, from);
  return end < 0 ? undefined : line.toString('latin1', from, end);
}

/** The line with its `since` value replaced (the value is a snapshot name: no escaping needed). */
function withSince(line: Buffer, since: string): Buffer {
  const from = line.indexOf(SINCE) + SINCE.length;
  const end = line.indexOf(0x22, from);
  return Buffer.concat([line.subarray(0, from), Buffer.from(since, 'latin1'), line.subarray(end)]);
}

/** Removes a snapshot: impl first (then it is no longer complete), its summary, tree and diff folder. */
export async function removeSnapshot(store: Store, name: string): Promise<void> {
  await store.unlink(implPath(name)).catch((err) => {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  });
  await removeSummary(store, name);
  await Promise.all([store.remove(treePath(name)), store.remove(diffPath(name))]);
}

/**
 * Rebuilds kept snapshot `name` against its new predecessor `previous`. Each entry's `since`
 * becomes the first kept snapshot at or after it (`kept`, oldest first): what first appeared in
 * a removed snapshot now first appears in the kept one after it, here `name` when nothing kept
 * lies between. Then the diff folder is made again from the tree: a hard link for each file and
 * symlink whose `since` is `name` (the first member of a hard-link group only, as a backup makes
 * it): everything new since `previous`. The new impl and diff replace the old ones by rename.
 * Later snapshots keep their lines: a `since` naming a removed snapshot means the first kept one
 * after it (names sort in time order, so "new since P" is still "since > P").
 */
async function mergeInto(store: Store, name: string, previous: string | null, kept: string[], emit: Emit): Promise<void> {
  const mapped = new Map<string, string>();
  const firstKept = (since: string): string => {
    let m = mapped.get(since);
    if (m === undefined) {
      m = name;
      for (const k of kept) {
        if (compareSnapshotNames(k, since) >= 0) {
          if (compareSnapshotNames(k, name) < 0) m = k;
          break;
        }
      }
      mapped.set(since, m);
    }
    return m;
  };
  const work = join(RUN_DIR, `merge-${name}`);
  await store.remove(work);
  await mkdirIfMissing(store, RUN_DIR);
  await store.mkdir(work, 0o700);
  const newDiff = join(work, 'diff');
  await store.mkdir(newDiff, 0o700);
  const reader = await ImplReader.open(store, implPath(name));
  const writer = new ImplWriter(store, join(work, 'impl'), { ...reader.header, previous });
  const made = new Set<string>();
  const groups = new Set<number>();
  const links: Buffer[] = [];
  const tree = treePath(name);
  const flush = async () => {
    if (links.length === 0) return;
    const batch = links.splice(0);
    if (store.linkMany) {
      const codes = await store.linkMany(tree, newDiff, batch);
      const bad = codes.findIndex((c) => c !== null);
      if (bad >= 0) throw new BakkerError('IO', `merging into ${name}: cannot link ${batch[bad]!.toString()} into its diff folder (${codes[bad]})`);
    } else for (const r of batch) await store.link(join(tree, r), join(newDiff, r));
  };
  const mkdirs = async (dir: Buffer) => {
    if (dir.length === 0) return;
    const key = dir.toString('latin1');
    if (made.has(key)) return;
    await mkdirs(parent(dir));
    await store.mkdir(join(newDiff, dir), 0o700);
    made.add(key);
  };
  let trailer;
  try {
    for (;;) {
      let line: Buffer | null | undefined = reader.rawLineSync();
      if (line === undefined) line = await reader.rawLine();
      if (line === null) break;
      if (line.length === 0) continue;
      if (line.compare(TRAILER_START, 0, TRAILER_START.length, 0, Math.min(line.length, TRAILER_START.length)) === 0) {
        reader.parse(line, reader.line); // sets the trailer
        continue;
      }
      // Most lines keep their history and are not new here: copied as they are, not decoded.
      const since = sinceOf(line);
      const now = since !== undefined && SNAPSHOT_RE.test(since) ? firstKept(since) : since;
      if (now === since && now !== name) {
        const w = writer.writeLines([line]);
        if (w) await w;
        continue;
      }
      const r: PrevRecord | undefined = reader.parse(line, reader.line);
      if (!r) continue;
      // The new `since` goes into the line's bytes (no re-encoding of the entry).
      const w = writer.writeLines([now === since ? r.line : withSince(r.line, now as string)]);
      if (w) await w;
      const isNew = now === name;
      const type = r.o.type;
      if (!isNew || (type !== 'file' && type !== 'symlink')) continue;
      const group = typeof r.o.hardlink === 'number' ? r.o.hardlink : undefined;
      if (group !== undefined) {
        if (groups.has(group)) continue;
        groups.add(group);
      }
      await mkdirs(parent(r.path));
      links.push(r.path);
      if (links.length >= 256) await flush();
    }
    await flush();
    trailer = reader.trailer;
  } catch (err) {
    writer.abort();
    throw err;
  } finally {
    reader.close();
  }
  if (!trailer) {
    writer.abort();
    throw new BakkerError('IMPL', `the impl of ${name} has no trailer: it is damaged; nothing was removed`);
  }
  await writer.close({ ...trailer });
  const rebound = IndexPlace.for(store, stateDir())?.rebind(name, writer.digest(), writer.bytes);
  // Swap in: the diff folder (old one out of the way first), then the impl.
  await store.rename(diffPath(name), join(work, 'old-diff')).catch((err) => {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  });
  await store.rename(newDiff, diffPath(name));
  await store.rename(join(work, 'impl'), implPath(name));
  if (rebound) {
    const st = await store.stat(implPath(name));
    rebound(st?.mtime, st?.size);
  }
  await store.remove(work);
  emit({ event: 'info', message: `merged into ${name}: its diff folder now holds what is new since ${previous ?? 'nothing (it is the oldest now)'}` });
}
