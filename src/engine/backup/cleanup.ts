import { errnoCode } from '../../errors.js';
import type { Store } from '../../store/store.js';
import { join } from '../../util/bpath.js';
import type { Emit } from '../events.js';
import { b } from '../../store/store.js';
import { diffPath, LATEST, listStore, META, RUN_DIR, SALVAGE_DIR, setLatest, treePath, type StoreListing } from '../layout.js';
import { compareSnapshotNames } from '../naming.js';

/**
 * Clears what a killed run left (called with the lock held): its .bakker/run/ folder (the newest
 * one's copies are moved to .bakker/salvage for the next run to take over), and any
 * snapshot folder or diff folder without an impl (the impl is published last, so such a folder
 * never was a complete snapshot). Also re-points a `latest` that does not name a complete one.
 */
export async function cleanupIncomplete(store: Store, emit: Emit): Promise<StoreListing> {
  // Read together (one round trip over SFTP instead of several), then cleared.
  const noEntry = (err: unknown) => {
    if (errnoCode(err) !== 'ENOENT' && errnoCode(err) !== 'EINVAL') throw err;
    return null;
  };
  const [runs, listing, current, meta] = await Promise.all([
    store.readdir(RUN_DIR).catch(noEntry),
    listStore(store),
    store.readlink(LATEST).then((t) => t.toString(), noEntry),
    store.readdir(b(META)).catch(noEntry),
  ]);
  // The newest unfinished run's copies are kept for this run to take over (a plain store only:
  // an encrypted store names objects by their snapshot path); older leftovers go.
  const left = (runs ?? []).map((r) => r.toString('latin1')).sort(compareSnapshotNames);
  const keep = !store.crypt && left.length > 0 ? left[left.length - 1]! : null;
  for (const r of left) {
    if (r === keep) continue;
    emit({ event: 'info', message: `removing the unfinished run ${r} left by an interrupted backup` });
    await store.remove(join(RUN_DIR, b(r)));
  }
  if (keep) {
    const run = join(RUN_DIR, b(keep));
    await store.remove(SALVAGE_DIR);
    await store.remove(join(run, 'diff')); // its links: without them, what the run copied has one link
    try {
      await store.rename(join(run, 'tree'), SALVAGE_DIR);
      emit({ event: 'info', message: `the unfinished run ${keep} left by an interrupted backup: what it copied is taken over where unchanged` });
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') throw err;
    }
    await store.remove(run);
  }
  for (const name of listing.incomplete) {
    emit({ event: 'info', message: `removing ${name}: it has no impl, so it never was a complete snapshot` });
    await store.remove(treePath(name));
    await store.remove(diffPath(name));
  }
  // `latest` symlinks a killed run made and did not rename into place
  for (const n of meta ?? []) if (n.toString('latin1').startsWith('latest.tmp')) await store.remove(join(b(META), n));
  const newest = listing.complete[listing.complete.length - 1];
  if (newest && current !== newest && !listing.complete.includes(current ?? '')) await setLatest(store, newest);
  return { ...listing, incomplete: [] };
}
