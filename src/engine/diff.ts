import { classify, type Change } from '../manifest/change.js';
import type { Entry } from '../manifest/entry.js';
import { ImplReader } from '../manifest/impl-io.js';
import type { Store } from '../store/store.js';
import { comparePaths } from '../util/bpath.js';
import { implPath } from './layout.js';

export type DiffCounts = Record<Exclude<Change, 'same'>, number>;

/**
 * Compares two snapshots by a merge-join of their impls (flat memory). Calls `onChange` for
 * every path that was added, removed, changed in content, or changed in metadata only.
 */
export async function diffSnapshots(
  store: Store,
  from: string,
  to: string,
  onChange: (change: Exclude<Change, 'same'>, a: Entry | undefined, b: Entry | undefined) => void,
  /** Where the older impl is, when not on `store` (the archive tier's copy of an archived snapshot's impl). */
  fromStore: Store = store,
): Promise<DiffCounts> {
  const counts: DiffCounts = { added: 0, removed: 0, content: 0, meta: 0 };
  const ra = await ImplReader.open(fromStore, implPath(from));
  const rb = await ImplReader.open(store, implPath(to));
  try {
    let a = await ra.next();
    let b = await rb.next();
    while (a || b) {
      const c = !a ? 1 : !b ? -1 : comparePaths(a.path, b.path);
      const left = c <= 0 ? a! : undefined;
      const right = c >= 0 ? b! : undefined;
      const change = classify(left, right);
      if (change !== 'same') {
        counts[change]++;
        onChange(change, left, right);
      }
      if (c <= 0) a = await ra.next();
      if (c >= 0) b = await rb.next();
    }
  } finally {
    ra.close();
    rb.close();
  }
  return counts;
}
