import { bytesIn, decodeEntry } from './codec.js';
import type { Entry } from './entry.js';

/**
 * A record of the previous impl as read for the merge-join: the parsed JSON object and its line,
 * decoded into an Entry only when needed. For the ~98% of entries that are unchanged, the
 * backup compares the raw fields (reusable) and writes the previous line again (sameLine), so
 * it neither decodes nor encodes them.
 */
export class PrevRecord {
  readonly path: Buffer;
  private decoded?: Entry;

  constructor(
    readonly o: Record<string, unknown>,
    readonly line: Buffer,
    readonly lineNo: number,
  ) {
    this.path = bytesIn(o.path, 'path', lineNo);
  }

  /** The full, validated entry (throws an IMPL error for a malformed record). */
  entry(): Entry {
    return (this.decoded ??= decodeEntry(this.o, this.lineNo));
  }
}

const optionalString = (v: unknown) => v === undefined || typeof v === 'string';

/**
 * What reusing the previous stored copy for `e` needs (its `since` and `sum`), or null when the
 * copy cannot be reused. The rule: a file or symlink whose type, size, mtime (ns), mode and owner
 * are equal, and for symlinks the target too, not flagged changing. A chmod/chown therefore always
 * gets a new copy, so the inode older snapshots share never changes; ACLs and xattrs live only in
 * the impl, so they need no new copy. A record with malformed fields is never reused.
 */
export interface ReuseInfo {
  since: string | undefined;
  sum: string | undefined;
  /** Encrypted stores: the stored object's tag, and its compression. */
  tag?: string;
  z?: 'zstd';
}

export function reuseInfo(rec: PrevRecord | undefined, e: Entry): ReuseInfo | null {
  if (!rec) return null;
  const o = rec.o;
  if (o.type !== e.type || (e.type !== 'file' && e.type !== 'symlink')) return null;
  if (o.size !== e.size || o.mtime !== e.mtime || o.uid !== e.uid || o.gid !== e.gid || o.changing === true) return null;
  if (typeof o.mode !== 'string' || parseInt(o.mode, 8) !== e.mode) return null;
  if (!optionalString(o.since) || !optionalString(o.sum)) return null;
  if (e.type === 'symlink') {
    let target: Buffer;
    try {
      target = bytesIn(o.target, 'target', rec.lineNo);
    } catch {
      return null; // malformed: copy anew
    }
    if (!e.target || !target.equals(e.target)) return null;
  }
  const info: ReuseInfo = { since: o.since as string | undefined, sum: o.sum as string | undefined };
  if (o.tag !== undefined) {
    if (typeof o.tag !== 'string') return null;
    info.tag = o.tag;
  }
  if (o.z !== undefined) {
    if (o.z !== 'zstd') return null;
    info.z = 'zstd';
  }
  return info;
}

/**
 * Whether the previous line describes `e` exactly, so it can be written again as it is: reusable,
 * same ctime (so the same xattrs and ACLs, which the walk then did not read), same owner names,
 * no hard-link group on either side (group numbers depend on walk order), same sparseness, and
 * well-formed optional fields.
 */
export function sameLine(rec: PrevRecord, e: Entry): boolean {
  const o = rec.o;
  if (o.ctime !== e.ctime || o.hardlink !== undefined || e.hardlink !== undefined) return false;
  if (o.user !== e.user || o.group !== e.group || (o.sparse === true) !== (e.sparse === true)) return false;
  if (!optionalString(o.acl) || !optionalString(o.dacl) || o.rdev !== undefined || o.target !== undefined) return false;
  if (o.xattrs !== undefined) {
    if (!o.xattrs || typeof o.xattrs !== 'object') return false;
    for (const v of Object.values(o.xattrs)) if (typeof v !== 'string') return false;
  }
  return true;
}
