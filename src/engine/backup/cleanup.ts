import { errnoCode } from '../../errors.js';
import type { Store } from '../../store/store.js';
import { join } from '../../util/bpath.js';
import type { Emit } from '../events.js';
import { diffPath, LATEST, listStore, RUN_DIR, setLatest, treePath } from '../layout.js';

/**
 * Clears what a killed run left (called with the lock held): its .bakker/run/ folder, and any
 * snapshot folder or diff folder without an impl (the impl is published last, so such a folder
 * never was a complete snapshot). Also re-points a `latest` that does not name a complete one.
 */
export async function cleanupIncomplete(store: Store, emit: Emit): Promise<void> {
  let runs: Buffer[] = [];
  try {
    runs = await store.readdir(RUN_DIR);
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT') throw err;
  }
  for (const r of runs) {
    emit({ event: 'info', message: `removing the unfinished run ${r.toString()} left by an interrupted backup` });
    await store.remove(join(RUN_DIR, r));
  }
  const listing = await listStore(store);
  for (const name of listing.incomplete) {
    emit({ event: 'info', message: `removing ${name}: it has no impl, so it never was a complete snapshot` });
    await store.remove(treePath(name));
    await store.remove(diffPath(name));
  }
  const newest = listing.complete[listing.complete.length - 1];
  let current: string | null = null;
  try {
    current = (await store.readlink(LATEST)).toString();
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT' && errnoCode(err) !== 'EINVAL') throw err;
  }
  if (newest && current !== newest && !listing.complete.includes(current ?? '')) await setLatest(store, newest);
}
