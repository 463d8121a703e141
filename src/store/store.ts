import { closeSync, constants, fstatSync, openSync, readSync, type BigIntStats } from 'node:fs';
import type { Readable } from 'node:stream';
import type { EntryType } from '../manifest/entry.js';
import { fromBigNs, type NsTime } from '../manifest/time.js';
import type { HashAlgo } from '../util/hash.js';

/**
 * The store interface: everything the engine does to a target goes through it, so a local
 * folder and an SFTP server are interchangeable (one conformance suite, test/store/).
 *
 * Paths are Buffers relative to the store root ('/'-separated, no leading '/'). Errors are
 * Node-style errors whose `code` classifies them: ENOENT (not found), EEXIST, ENOSPC/EDQUOT (no
 * space), EACCES/EPERM (permission), ETRANSIENT (worth a retry: a dropped connection); anything
 * else is permanent. Only a retry wrapper retries, and only ETRANSIENT.
 */
export interface StoreCaps {
  /** link() works (reverse-incremental snapshots need it). */
  hardLinks: boolean;
  /** rename() atomically replaces an existing file. */
  atomicRename: boolean;
  /** The store keeps owner/group (setMeta with uid/gid takes effect). */
  ownership: boolean;
  /** Times are kept to the nanosecond (else whole seconds; the impl keeps the exact value). */
  nsTimes: boolean;
  /** stat() reports inode numbers and link counts (SFTP v3 has neither: they read 0). */
  inodes: boolean;
  /** Useful number of requests in flight. */
  inFlight: number;
  /**
   * Requests are carried out in the order they are sent, so a request may go out before the one
   * it depends on has answered (SFTP: the server handles them one after another). Only for
   * single-request operations (mkdir, symlink, rename, link), never for remove() or writeFile().
   */
  ordered?: boolean;
}

export interface StoreStat {
  type: EntryType;
  size: number;
  mode: number;
  uid: number;
  gid: number;
  mtime: NsTime;
  ino: number;
  nlink: number;
}

export interface FileMeta {
  mode?: number;
  uid?: number;
  gid?: number;
  mtime?: NsTime;
}

/** A local source file to copy into the store; the store opens it (never following a symlink). */
export interface LocalSource {
  path: Buffer;
  /** Copy holes as holes. */
  sparse: boolean;
  /** Its size as the walk saw it (a hint: small files may be copied in batches). */
  size?: number;
  /** The file is a zstd-compressed stored copy (a copy from a snapshot): stored as it is, not compressed again. */
  compressed?: boolean;
}

/** The source as the store saw it: `before` at open, `after` once copied. */
export interface SourceState {
  size: number;
  mtime: NsTime;
  ctime: NsTime;
  ino: number;
}

/** A copy in a batch (Store.quickCopy): the batch's job, and the copy's place in it. */
export interface QuickCopy {
  group: { settled: boolean; failure?: unknown; readonly idle?: boolean; wait(): Promise<void> };
  index: number;
}

export interface PutResult {
  sum?: string;
  /** Stores that transform what they store (encryption): the bytes read, the stored object's tag, its compression. */
  size?: number;
  tag?: string;
  z?: 'zstd';
  before: SourceState;
  after: SourceState;
}

/** The state of a local source file from its lstat/fstat (both stores report it the same way). */
export function sourceState(st: import('node:fs').BigIntStats): SourceState {
  return { size: Number(st.size), mtime: fromBigNs(st.mtimeNs), ctime: fromBigNs(st.ctimeNs), ino: Number(st.ino) };
}

/** Thrown by putFile when the local source, not the store, failed (vanished, unreadable). */
export class SourceError extends Error {
  readonly source = true;
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/**
 * How bakker opens a file it reads (a source file to copy, or a file in a store): never through
 * a symlink (O_NOFOLLOW), and never waiting on a FIFO put where a file was (O_NONBLOCK: the open
 * returns and the caller's regular-file check refuses it; without it the open waits for a writer
 * forever, on the main thread in readSmall).
 */
export const OPEN_READ = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;

/**
 * A small regular file read whole on this thread (never following a symlink), with its state
 * before and after; null when it is larger than `limit` (also when it grew past it meanwhile): the
 * caller streams it then. A failure of the source throws SourceError.
 */
export function readSmall(file: Buffer, limit: number): { data: Buffer; st0: BigIntStats; st1: BigIntStats } | null {
  let fd: number;
  try {
    fd = openSync(file, OPEN_READ);
  } catch (err) {
    throw new SourceError((err as NodeJS.ErrnoException).code ?? 'EIO', (err as Error).message);
  }
  try {
    const st0 = fstatSync(fd, { bigint: true });
    if (!st0.isFile()) throw new SourceError('EINVAL', `${file.toString()} is no longer a regular file`);
    if (st0.size > BigInt(limit)) return null;
    const buf = Buffer.allocUnsafe(Number(st0.size) + 1);
    let n: number;
    try {
      n = readSync(fd, buf, 0, buf.length, 0);
    } catch (err) {
      throw new SourceError((err as NodeJS.ErrnoException).code ?? 'EIO', (err as Error).message);
    }
    if (n > limit) return null; // grew meanwhile: streamed
    return { data: buf.subarray(0, n), st0, st1: fstatSync(fd, { bigint: true }) };
  } finally {
    closeSync(fd);
  }
}

export interface Store {
  readonly url: string;
  readonly caps: StoreCaps;
  /** For a store in a local folder: its absolute path, where the engine may work on files directly. */
  readonly localRoot?: string;
  /**
   * Starts writing back what was written so far, without waiting: the sync() before publishing
   * then finds less to do. Optional; a no-op when one is already under way.
   */
  syncSoon?(): void;
  /** putFile copies small files (with their size given) several per job: ask for many at once. */
  readonly copiesInBatches?: boolean;
  /**
   * putFile without a promise per file, for a small file with its size given and no checksum
   * (null: not one for it; use putFile): the copy joins a batch that is copied in one job.
   * Once `group` settled, quickDone tells whether the copy went through with the source as the
   * walk saw it, to its end; otherwise quickResult gives what putFile would have (or throws
   * what it would have thrown).
   */
  quickCopy?(p: Buffer, src: LocalSource, meta: FileMeta): QuickCopy | null;
  quickDone?(q: QuickCopy, size: number, mtime: NsTime, ctime: NsTime): boolean;
  quickResult?(q: QuickCopy, src: Buffer, p: Buffer): PutResult;
  /** The store's folder when it is on this host, even when localRoot is not set (a backup never descends into it). */
  readonly folder?: string;
  /** Set on an encrypted store (crypto/encrypted-store.ts): what the engine asks it beyond this interface. */
  readonly crypt?: import('../crypto/encrypted-store.js').Crypt;
  /** lstat: never follows a symlink. null when missing. */
  stat(p: Buffer): Promise<StoreStat | null>;
  /** Names in a directory, unsorted. */
  readdir(p: Buffer): Promise<Buffer[]>;
  readlink(p: Buffer): Promise<Buffer>;
  /** Whole small file. */
  readFile(p: Buffer): Promise<Buffer>;
  /** A stream of a regular file's content; refuses a symlink (ELOOP) or a non-regular file. The caller consumes or destroys it. */
  openRead(p: Buffer): Promise<{ stream: Readable; size: number }>;
  /**
   * Writes a whole file durably: to a temporary name, fsync, then rename over `p`.
   * With `exclusive`, fails with EEXIST when `p` exists (used for the lock).
   */
  writeFile(p: Buffer, data: Buffer | Readable, opts?: { exclusive?: boolean; mode?: number }): Promise<void>;
  /**
   * Copies a local file into the store at `p` (which must not exist), then applies `meta`.
   * Not fsynced one by one: the engine calls sync() once before it publishes. Returns the
   * checksum when `hash` is given, and the source's state before and after the copy (the caller
   * compares them to catch a file that changed while it was read). A failure of the source
   * throws SourceError (and leaves nothing at `p`); anything else is a store error.
   */
  putFile(p: Buffer, src: LocalSource, meta: FileMeta, hash?: HashAlgo): Promise<PutResult>;
  /**
   * Writes a stream as the new file `p` (which must not exist; mode 0600), not fsynced (see
   * putFile); on failure nothing is left at `p` and the error is rethrown as it came (a
   * SourceError from the stream stays one). Resolves to the bytes written.
   */
  writeNew(p: Buffer, data: AsyncIterable<Buffer> | Iterable<Buffer>): Promise<number>;
  /**
   * Makes a directory. Ordered: any operation started after mkdir() returned (before its promise
   * settles) finds the directory, so a writer can go on without waiting; the promise carries the
   * outcome. The local store makes it at once; a remote store sends it ahead of later requests
   * on a channel that keeps order.
   */
  mkdir(p: Buffer, mode: number): Promise<void>;
  symlink(target: Buffer, p: Buffer): Promise<void>;
  /** Hard link `existing` as `p`; does not follow symlinks. */
  link(existing: Buffer, p: Buffer): Promise<void>;
  /**
   * Optional: many hard links at once, `fromDir/rel` as `toDir/rel` for each rel, each exactly
   * like link(). Resolves to one entry per rel: null when linked, else the error code (ENOENT,
   * EEXIST, ...). Stores where a round trip or a thread hop per link is the cost implement it.
   */
  linkMany?(fromDir: Buffer, toDir: Buffer, rels: Buffer[]): Promise<(string | null)[]>;
  /** Renames, replacing `to` when it is a file or symlink (atomic where caps.atomicRename). */
  rename(from: Buffer, to: Buffer): Promise<void>;
  /** Applies what `meta` holds; symlinks take only owner and times. */
  setMeta(p: Buffer, meta: FileMeta, isSymlink?: boolean): Promise<void>;
  /**
   * Optional: setMeta for many folders (mode, owner and mtime all given), in the order given;
   * rejects with the first failure. Stores where a round trip or a thread hop per call is the
   * cost implement it.
   */
  setDirMetaMany?(items: { p: Buffer; meta: Required<Pick<FileMeta, 'mode' | 'uid' | 'gid' | 'mtime'>> }[]): Promise<void>;
  unlink(p: Buffer): Promise<void>;
  /** Removes a file or a whole tree; missing is fine. Never follows symlinks. */
  remove(p: Buffer): Promise<void>;
  statvfs(): Promise<{ freeBytes: number; freeInodes: number }>;
  /** Makes everything written so far durable. */
  sync(): Promise<void>;
  close(): Promise<void>;
}

export const b = (s: string): Buffer => Buffer.from(s);
