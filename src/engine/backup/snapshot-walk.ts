import path from 'node:path';
import { BakkerError } from '../../errors.js';
import type { Entry } from '../../manifest/entry.js';
import { ImplReader } from '../../manifest/impl-io.js';
import type { PrevRecord } from '../../manifest/prev-record.js';
import type { WalkItem } from '../../scan/walker.js';
import type { Store } from '../../store/store.js';
import { join } from '../../util/bpath.js';
import { implPath } from '../layout.js';

/**
 * A snapshot on a local store as the source of a backup to another store (docs/DESIGN.md,
 * "Several targets"): its impl gives every entry with all its metadata (owners, ns times, ACLs,
 * xattrs, hard-link groups, devices), its tree the content. Yields entries in impl order, which
 * is walk order, in batches like walk().
 */
export async function* walkSnapshot(store: Store, name: string): AsyncGenerator<WalkItem[]> {
  if (!store.localRoot) throw new BakkerError('USAGE', `a snapshot to copy from must be on a local, unencrypted store (${store.url} is not)`);
  const tree = Buffer.from(path.join(store.localRoot, name));
  const reader = await ImplReader.open(store, implPath(name));
  const groups = new Map<number, Entry>();
  try {
    let batch: WalkItem[] = [];
    for (;;) {
      let r: PrevRecord | null | undefined = reader.nextRecordSync();
      if (r === undefined) r = await reader.nextRecord();
      if (r === null) break;
      const e = r.entry();
      const item: WalkItem & { kind: 'entry' } = { kind: 'entry', entry: e, abs: join(tree, e.path), dev: 0 };
      if (e.hardlink !== undefined) {
        const first = groups.get(e.hardlink);
        if (first) item.linkTo = first;
        else groups.set(e.hardlink, e);
      }
      batch.push(item);
      if (batch.length >= 256) {
        yield batch;
        batch = [];
      }
    }
    if (batch.length > 0) yield batch;
    if (!reader.trailer) throw new BakkerError('IMPL', `the impl of ${name} on ${store.url} ends without its trailer: that snapshot is damaged; copy another one`);
  } finally {
    reader.close();
  }
}

/** The header of a snapshot's impl (what it was made from). */
export async function snapshotHeader(store: Store, name: string) {
  const reader = await ImplReader.open(store, implPath(name));
  reader.close();
  return reader.header;
}
