import { BakkerError, errnoCode } from '../errors.js';
import type { Store } from '../store/store.js';
import { bytes, count } from '../ui/format.js';
import type { SnapshotSummary } from './summary.js';

/**
 * Space on the store (docs/DESIGN.md, "Space"). Before a run, from the last snapshot's summary:
 * its skeleton (one block per folder, its impl; one inode per folder) must fit, or the run cannot
 * succeed and is refused at once; and when what the last incremental run added would not fit
 * too, the run goes on with a warning. A full run has no guide and relies on the clean stop at
 * ENOSPC. When the store is or may run full, a request for more space is left in
 * .bakker/requests/ for the storage side (`bakker storage requests`).
 */
export interface SpaceNeed {
  /** What the run needs at least (the snapshot's folders and impl). */
  bytes: number;
  inodes: number;
  /** What a run like the last incremental one adds on top. */
  addedBytes: number;
}

/** Summary fields this needs (older summaries may lack some). */
type Last = Pick<SnapshotSummary, 'previous' | 'bytesCopied' | 'dirs' | 'entries'>;

export function estimateNeed(last: Last | null): SpaceNeed | null {
  if (!last) return null;
  const dirs = last.dirs ?? 0;
  return {
    bytes: dirs * 4096 + (last.entries ?? 0) * 64,
    inodes: dirs + 16,
    addedBytes: last.previous ? (last.bytesCopied ?? 0) : 0,
  };
}

export async function leaveRequest(store: Store, wantBytes: number, message: string): Promise<void> {
  const at = new Date().toISOString();
  try {
    await store.mkdir(Buffer.from('.bakker/requests'), 0o700).catch((err) => {
      if (errnoCode(err) !== 'EEXIST') throw err;
    });
    await store.writeFile(Buffer.from(`.bakker/requests/${at.replace(/[:.]/g, '-')}.json`), Buffer.from(JSON.stringify({ at, wantBytes, message }) + '\n'));
  } catch {
    // a full store may not even take the request: the error the run reports says it all
  }
}

/** Refuses a run that cannot fit; warns (and asks for space) when one like the last may not. */
export async function checkSpace(store: Store, lastRun: Last | null | Promise<Last | null>, warn: (message: string) => void): Promise<void> {
  // the summary and the free space are asked for together
  const [last, free] = await Promise.all([lastRun, store.statvfs()]);
  const need = estimateNeed(last);
  if (!need) return;
  let short: string | null = null;
  if (free.freeBytes < need.bytes) short = `about ${bytes(need.bytes)} needed for the snapshot's folders and impl alone, ${bytes(free.freeBytes)} free`;
  else if (free.freeInodes < need.inodes) short = `about ${count(need.inodes)} inodes needed for the snapshot's folders alone, ${count(free.freeInodes)} free`;
  if (short) {
    await leaveRequest(store, need.bytes + need.addedBytes - free.freeBytes, `store full: ${short}`);
    throw new BakkerError('FULL', `store ${store.url} is full: ${short}: free space there, prune old snapshots, or ask for more (a request was left in .bakker/requests/); --no-space-check skips this check`);
  }
  if (free.freeBytes < need.bytes + need.addedBytes) {
    const msg = `store nearly full: the last run added ${bytes(need.addedBytes)}, ${bytes(free.freeBytes)} free`;
    await leaveRequest(store, need.bytes + need.addedBytes - free.freeBytes, msg);
    warn(`${msg}: this run may fill it (then it stops cleanly); a request for more space was left in .bakker/requests/`);
  }
}
