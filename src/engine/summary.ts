import { errnoCode } from '../errors.js';
import { ImplReader } from '../manifest/impl-io.js';
import type { Store } from '../store/store.js';
import { b } from '../store/store.js';
import { implPath, SUMMARY_DIR, mkdirIfMissing } from './layout.js';

/** What the walk counts (backup/backup.ts). */
export interface WalkCounts {
  entries: number;
  files: number;
  dirs: number;
  symlinks: number;
  specials: number;
  added: number;
  changed: number;
  unchanged: number;
  removed: number;
  bytes: number;
  warnings: number;
}

/** What the store writer counts (backup/store-writer.ts). */
export interface WriterStats {
  copied: number;
  linked: number;
  bytesCopied: number;
  bytesLinked: number;
  unreadable: number;
  changing: number;
  /** Of the copied: files an interrupted run had copied already, taken over instead of copied again. */
  salvaged?: number;
}

export interface SnapshotSummary extends WalkCounts, WriterStats {
  snapshot: string;
  previous: string | null;
  start: string;
  durationMs: number;
  /** Where the time went: walking and copying, waiting for the last copies and the impl, publishing (sync and renames). */
  phasesMs?: { walk: number; finish: number; publish: number };
}

const summaryPath = (name: string) => b(`.bakker/summary/${name}.json`);

export async function writeSummary(store: Store, s: SnapshotSummary): Promise<void> {
  await mkdirIfMissing(store, SUMMARY_DIR);
  await store.writeFile(summaryPath(s.snapshot), Buffer.from(JSON.stringify(s) + '\n'));
}

/** Removes a snapshot's cached summary (it goes with the snapshot). */
export async function removeSummary(store: Store, name: string): Promise<void> {
  await store.unlink(summaryPath(name)).catch(() => undefined);
}

/** The cached summary, or one rebuilt from the impl's header and trailer (and cached again). */
/** The summary file alone (null when missing or unreadable): cheap, for estimates. */
export async function readSummaryFile(store: Store, name: string): Promise<SnapshotSummary | null> {
  try {
    return JSON.parse((await store.readFile(summaryPath(name))).toString('utf8')) as SnapshotSummary;
  } catch {
    return null;
  }
}

export async function readSummary(store: Store, name: string): Promise<SnapshotSummary> {
  try {
    return JSON.parse((await store.readFile(summaryPath(name))).toString('utf8')) as SnapshotSummary;
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT' && !(err instanceof SyntaxError)) throw err;
  }
  const r = await ImplReader.open(store, implPath(name));
  try {
    while (await r.next());
  } finally {
    r.close();
  }
  const t = r.trailer?.summary ?? {};
  const s = {
    ...t,
    snapshot: name,
    previous: r.header.previous,
    start: r.header.start,
    entries: r.trailer?.entries ?? 0,
  } as SnapshotSummary;
  await writeSummary(store, s).catch(() => undefined);
  return s;
}
