import type { Entry } from './entry.js';

/**
 * Pure change detection. The stored copy of `prev` may be reused (hard-linked) for `cur` when
 * type, size, mtime (ns), mode and owner are equal, and for symlinks the target too. A
 * chmod/chown therefore always gets a new copy, so the inode older snapshots share never changes.
 * ACLs and xattrs live only in the impl, so they need no new copy.
 */
export function canReuse(prev: Entry | undefined, cur: Entry): prev is Entry {
  if (!prev || prev.changing) return false;
  if (prev.type !== cur.type || (cur.type !== 'file' && cur.type !== 'symlink')) return false;
  if (prev.size !== cur.size || prev.mtime !== cur.mtime || prev.mode !== cur.mode) return false;
  if (prev.uid !== cur.uid || prev.gid !== cur.gid) return false;
  if (cur.type === 'symlink' && !(prev.target && cur.target && prev.target.equals(cur.target))) return false;
  return true;
}

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
