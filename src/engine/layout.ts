import { randomBytes } from 'node:crypto';
import os from 'node:os';
import fs from 'node:fs';
import { BakkerError, errnoCode } from '../errors.js';
import { FORMAT_VERSION } from '../manifest/codec.js';
import type { Store } from '../store/store.js';
import { b } from '../store/store.js';
import { compareSnapshotNames, isSnapshotName } from './naming.js';

/**
 * The store layout (docs/FORMAT.md):
 *   .bakker/format            {"format": 1, ...}
 *   .bakker/lock              held by the running backup
 *   .bakker/run/NAME/         a run in progress: tree/, diff/, impl
 *   .bakker/summary/NAME.json what `list` shows, cached from the impl trailer
 *   NAME/  NAME.impl  NAME.diff/  latest -> NAME
 * A snapshot is complete when both NAME/ and NAME.impl exist; NAME.impl is renamed into place
 * last, so it is the commit point.
 */
export const META = '.bakker';
export const FORMAT_FILE = b('.bakker/format');
export const LOCK_FILE = b('.bakker/lock');
export const RUN_DIR = b('.bakker/run');
/** What a killed run had copied, kept for the next run to take over (cleanup.ts). */
export const SALVAGE_DIR = b('.bakker/salvage');
export const SUMMARY_DIR = b('.bakker/summary');
export const LATEST = b('latest');

export const treePath = (name: string) => b(name);
export const implPath = (name: string) => b(`${name}.impl`);
export const diffPath = (name: string) => b(`${name}.diff`);

export interface StoreFormat {
  format: number;
  /** "age" for an encrypted store (crypto/encrypted-store.ts). */
  encryption?: string;
}

export async function readFormatInfo(store: Store): Promise<StoreFormat | null> {
  let raw: Buffer;
  try {
    raw = await store.readFile(FORMAT_FILE);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return null;
    throw err;
  }
  let v: unknown;
  try {
    v = JSON.parse(raw.toString('utf8'));
  } catch {
    v = undefined;
  }
  const o = v as { format?: unknown; encryption?: unknown } | undefined;
  if (!o || typeof o.format !== 'number' || (o.encryption !== undefined && typeof o.encryption !== 'string')) {
    throw new BakkerError('STORE', `${store.url}/.bakker/format is corrupt: restore it from a copy, or write {"format": ${FORMAT_VERSION}}`);
  }
  return { format: o.format, ...(o.encryption !== undefined ? { encryption: o.encryption as string } : {}) };
}

export async function readFormat(store: Store): Promise<number | null> {
  const f = await readFormatInfo(store);
  if (f) checkEncryption(store, f);
  return f?.format ?? null;
}

/** An encrypted store is only opened through its wrapper, and an encrypted target never writes into a plain store. */
function checkEncryption(store: Store, f: StoreFormat): void {
  if (f.encryption !== undefined && f.encryption !== 'age') throw new BakkerError('STORE', `store ${store.url} is encrypted with "${f.encryption}", which this bakker does not know: upgrade bakker`);
  if (f.encryption && !store.crypt) throw new BakkerError('STORE', `store ${store.url} is encrypted: open it with its encryption settings (--key FILE to read, recipients to write)`);
  if (!f.encryption && store.crypt) throw new BakkerError('STORE', `store ${store.url} holds unencrypted snapshots: an encrypted target needs a store folder of its own`);
}

function checkVersion(store: Store, v: number): void {
  if (v > FORMAT_VERSION) {
    throw new BakkerError('STORE', `store ${store.url} uses format ${v}; this bakker understands format ${FORMAT_VERSION}: upgrade bakker`);
  }
}

/** For commands that read: the store must already be a bakker store. */
export async function requireStore(store: Store): Promise<void> {
  const v = await readFormat(store);
  if (v === null) throw new BakkerError('STORE', `${store.url} is not a bakker store (no .bakker/format): check --store`);
  checkVersion(store, v);
}

/** For backup: use an existing store, or make one in an empty folder. */
export async function initStore(store: Store): Promise<void> {
  const v = await readFormat(store);
  if (v !== null) return checkVersion(store, v);
  const names = (await store.readdir(b(''))).map((n) => n.toString());
  if (names.some((n) => n !== META && n !== 'lost+found')) {
    throw new BakkerError('STORE', `${store.url} is not empty and is not a bakker store: give an empty or new folder as the store`);
  }
  for (const d of [b(META), RUN_DIR, SUMMARY_DIR]) await mkdirIfMissing(store, d);
  await store.writeFile(FORMAT_FILE, Buffer.from(JSON.stringify({ format: FORMAT_VERSION, created: new Date().toISOString(), ...(store.crypt ? { encryption: 'age' } : {}) }) + '\n'));
}

export async function mkdirIfMissing(store: Store, p: Buffer, mode = 0o700): Promise<void> {
  try {
    await store.mkdir(p, mode);
  } catch (err) {
    if (errnoCode(err) !== 'EEXIST') throw err;
  }
}

export interface StoreListing {
  /** Complete snapshots, oldest first. */
  complete: string[];
  /** Every snapshot-like name on the store (complete or not): run numbers never repeat. */
  used: Set<string>;
  /** Snapshot folders (or diff folders) that have no impl: left by a killed run. */
  incomplete: string[];
}

export async function listStore(store: Store): Promise<StoreListing> {
  const [root, runs] = await Promise.all([
    store.readdir(b('')),
    store.readdir(RUN_DIR).catch((err) => {
      if (errnoCode(err) !== 'ENOENT') throw err;
      return [] as Buffer[];
    }),
  ]);
  const names = root.map((n) => n.toString('latin1'));
  const dirs = new Set<string>();
  const impls = new Set<string>();
  const diffs = new Set<string>();
  for (const n of names) {
    if (isSnapshotName(n)) dirs.add(n);
    else if (n.endsWith('.impl') && isSnapshotName(n.slice(0, -5))) impls.add(n.slice(0, -5));
    else if (n.endsWith('.diff') && isSnapshotName(n.slice(0, -5))) diffs.add(n.slice(0, -5));
  }
  const used = new Set([...dirs, ...impls, ...diffs]);
  for (const n of runs) used.add(n.toString('latin1'));
  const complete = [...dirs].filter((d) => impls.has(d)).sort(compareSnapshotNames);
  const incomplete = [...new Set([...dirs, ...diffs])].filter((d) => !impls.has(d)).sort(compareSnapshotNames);
  return { complete, used, incomplete };
}

/** Resolves a snapshot argument: a name, "latest", or a unique prefix of a name. */
export async function resolveSnapshot(store: Store, arg: string): Promise<string> {
  const { complete } = await listStore(store);
  if (complete.length === 0) throw new BakkerError('NOT_FOUND', `store ${store.url} has no complete snapshot yet: run a backup first`);
  if (arg === 'latest') return complete[complete.length - 1]!;
  if (complete.includes(arg)) return arg;
  const matches = complete.filter((n) => n.startsWith(arg));
  if (matches.length === 1) return matches[0]!;
  if (matches.length > 1) throw new BakkerError('USAGE', `snapshot "${arg}" is ambiguous (${matches.join(', ')}): give the full name`);
  throw new BakkerError('NOT_FOUND', `no snapshot "${arg}" on ${store.url}: see 'bakker list --store ${store.url}'`);
}

/**
 * Points `latest` at `name` by renaming a new symlink over the old one (atomic). The symlink's
 * name is this run's own, so nothing needs removing first; on an ordered store the rename goes
 * out with the symlink (if the symlink fails, the rename finds nothing and `latest` stays).
 */
export async function setLatest(store: Store, name: string): Promise<void> {
  const tmp = b(`${META}/latest.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  const made = store.symlink(b(name), tmp);
  if (!store.caps.ordered) await made;
  const renamed = store.rename(tmp, LATEST);
  try {
    await Promise.all([made, renamed]);
  } catch (err) {
    await store.remove(tmp).catch(() => undefined);
    throw err;
  }
}

interface LockInfo {
  pid: number;
  host: string;
  started: string;
  /** /proc/PID/stat start time: tells a live process from a recycled PID. */
  procStart: string | null;
}

function procStart(pid: number): string | null {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return s.slice(s.lastIndexOf(')') + 2).split(' ')[19] ?? null;
  } catch {
    return null;
  }
}

function isAlive(info: LockInfo): boolean {
  if (info.host !== os.hostname()) return true; // cannot tell: assume it runs
  const now = procStart(info.pid);
  if (now === null) return false;
  return info.procStart === null || info.procStart === now;
}

export interface Lock {
  release(): Promise<void>;
  /** Set when a dead run's lock was taken over. */
  tookOverFrom?: LockInfo;
}

/**
 * One run per store. The lock is a file created exclusively; a lock whose process is gone (same
 * host, PID not running or recycled) is taken over. A lock from another host is never broken.
 */
export async function acquireLock(store: Store): Promise<Lock> {
  const mine: LockInfo = { pid: process.pid, host: os.hostname(), started: new Date().toISOString(), procStart: procStart(process.pid) };
  let tookOverFrom: LockInfo | undefined;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      await store.writeFile(LOCK_FILE, Buffer.from(JSON.stringify(mine) + '\n'), { exclusive: true });
      const lock: Lock = { release: () => store.remove(LOCK_FILE) };
      if (tookOverFrom) lock.tookOverFrom = tookOverFrom;
      return lock;
    } catch (err) {
      if (errnoCode(err) !== 'EEXIST') throw err;
    }
    let other: LockInfo | undefined;
    try {
      other = JSON.parse((await store.readFile(LOCK_FILE)).toString('utf8')) as LockInfo;
    } catch {
      other = undefined; // empty or half-written by a process killed while writing it
    }
    if (other && isAlive(other)) {
      throw new BakkerError(
        'LOCKED',
        `store ${store.url} is in use by bakker PID ${other.pid} on ${other.host} since ${other.started}: wait for it, or remove ${store.url}/.bakker/lock if that run is surely gone`,
      );
    }
    if (other) tookOverFrom = other;
    await store.remove(LOCK_FILE);
  }
  throw new BakkerError('LOCKED', `could not take the lock of ${store.url}: another run keeps taking it`);
}
