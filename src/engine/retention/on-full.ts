import type { Store } from '../../store/store.js';
import type { Emit } from '../events.js';
import { listStore } from '../layout.js';
import { estimateNeed } from '../space.js';
import { readSummaryFile } from '../summary.js';
import type { Policy } from './policy.js';
import { prune } from './prune.js';

/** Whether a run like the last one fits in what the store has free (no last run: yes). */
async function fits(store: Store): Promise<boolean> {
  const { complete } = await listStore(store);
  const last = complete[complete.length - 1];
  if (!last) return true;
  const need = estimateNeed(await readSummaryFile(store, last));
  if (!need) return true;
  const free = await store.statvfs();
  return free.freeBytes >= need.bytes + need.addedBytes && free.freeInodes >= need.inodes;
}

/**
 * Makes room for a run (a target's `on_full: prune`; docs/RETENTION.md): when a run like the last
 * may not fit (or `force`: one just failed for want of space), prune by the policy first; then,
 * while it still may not fit, the oldest snapshot, one at a time, never below `min_keep` (at least
 * one) and never the newest. Returns what was removed.
 */
export async function makeRoom(store: Store, policy: Policy, emit: Emit, force = false): Promise<string[]> {
  if (!force && (await fits(store))) return [];
  emit({ event: 'warning', message: `store ${store.url} is short of space: pruning first (on_full: prune)` });
  const removed = [...(await prune(store, policy, { emit })).removed];
  const floor = Math.max(policy.minKeep ?? 1, 1);
  for (;;) {
    if (await fits(store)) break;
    const { complete } = await listStore(store);
    if (complete.length <= floor) {
      emit({ event: 'warning', message: `store ${store.url} is still short of space with ${complete.length} snapshot(s) left (min_keep ${floor}): nothing more is removed` });
      break;
    }
    removed.push(...(await prune(store, { keepLast: complete.length - 1 }, { emit })).removed);
  }
  if (removed.length) emit({ event: 'info', message: `removed to make room: ${removed.join(', ')}` });
  return removed;
}
