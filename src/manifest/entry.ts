import type { NsTime } from './time.js';

/**
 * One impl record: everything bakker knows about one source entry. The impl is the truth for
 * metadata; the snapshot tree is the truth for content (see docs/FORMAT.md).
 */
export type EntryType = 'file' | 'dir' | 'symlink' | 'fifo' | 'socket' | 'char' | 'block';

export interface Entry {
  path: Buffer;
  type: EntryType;
  size: number;
  /** Permission bits including setuid/setgid/sticky (st_mode & 0o7777). */
  mode: number;
  uid: number;
  gid: number;
  user?: string;
  group?: string;
  /** "seconds.nanoseconds" (see manifest/time.ts). */
  mtime: NsTime;
  ctime: NsTime;
  target?: Buffer;
  /** Device number for char/block nodes. */
  rdev?: number;
  /** Hard-link group inside the source: every member carries the same number; the first one in walk order holds the content. */
  hardlink?: number;
  /** Access ACL in short text form ("user::rw-,user:1000:r--,..."), only when it says more than the mode. */
  acl?: string;
  /** Default ACL of a directory. */
  dacl?: string;
  /** Names of the users and groups the ACLs name by id, where the host knew them: "u:1000=alice,g:1001=devs". */
  aclNames?: string;
  /** All other xattrs (user.*, trusted.*, security.* incl. SELinux label and capabilities), values raw. */
  xattrs?: Map<string, Buffer>;
  /** "<algo>:<hex>" when checksums are on. */
  sum?: string;
  /** Snapshot in which this content first appeared. */
  since?: string;
  /** Stored sparse (holes skipped). */
  sparse?: boolean;
  /** The file kept changing while being copied; the stored copy may be inconsistent. */
  changing?: boolean;
  /** Encrypted stores: the keyed hash (hex) of the stored object's bytes (crypto/objects.ts objectTag). */
  tag?: string;
  /** Stored compressed ("zstd") before any encryption. */
  z?: 'zstd';
  /**
   * Not part of the format: the previous impl's line for an entry proven identical to it
   * (prev-record.ts sameLine); the impl writer writes it instead of encoding the entry.
   */
  raw?: Buffer;
}

export const MODE_TYPE: Record<number, EntryType> = {
  0o100000: 'file',
  0o040000: 'dir',
  0o120000: 'symlink',
  0o010000: 'fifo',
  0o140000: 'socket',
  0o020000: 'char',
  0o060000: 'block',
};

export const TYPE_MODE: Record<EntryType, number> = {
  file: 0o100000,
  dir: 0o040000,
  symlink: 0o120000,
  fifo: 0o010000,
  socket: 0o140000,
  char: 0o020000,
  block: 0o060000,
};

export function typeOfMode(mode: number): EntryType | undefined {
  return MODE_TYPE[mode & 0o170000];
}
