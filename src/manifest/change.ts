import type { Entry } from './entry.js';

/*
 * Pure change detection for `bakker diff`. Whether a backup may reuse a stored copy is decided on
 * the previous impl's raw records: see reuseInfo in prev-record.ts.
 */

export type Change = 'added' | 'removed' | 'content' | 'meta' | 'same';

/** What changed between two impl records of the same path (for `bakker diff`). */
export function classify(a: Entry | undefined, b: Entry | undefined): Change {
  if (!a) return 'added';
  if (!b) return 'removed';
  if (a.type !== b.type || a.size !== b.size) return 'content';
  if ((a.type === 'file' || a.type === 'symlink') && a.since !== b.since) return 'content';
  if (a.type === 'symlink' && !a.target!.equals(b.target!)) return 'content';
  if (a.type === 'file' && a.since === undefined && a.mtime !== b.mtime) return 'content';
  if (a.sum !== undefined && b.sum !== undefined && a.sum !== b.sum) return 'content';
  if (a.rdev !== b.rdev) return 'content';
  if (a.mode !== b.mode || a.uid !== b.uid || a.gid !== b.gid || a.mtime !== b.mtime) return 'meta';
  if (a.acl !== b.acl || a.dacl !== b.dacl || !sameXattrs(a.xattrs, b.xattrs)) return 'meta';
  return 'same';
}

function sameXattrs(a: Map<string, Buffer> | undefined, b: Map<string, Buffer> | undefined): boolean {
  const na = a?.size ?? 0;
  const nb = b?.size ?? 0;
  if (na !== nb) return false;
  if (!a || !b) return true;
  for (const [k, v] of a) {
    const w = b.get(k);
    if (!w || !w.equals(v)) return false;
  }
  return true;
}
