import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { BakkerError, errMessage } from '../errors.js';
import { decrypt, encrypt, encryptBuffer, parseRecipient, type Identity } from '../crypto/age.js';
import { acquireLock, implPath, listStore } from '../engine/layout.js';
import { compareSnapshotNames, SNAPSHOT_RE } from '../engine/naming.js';
import type { Emit } from '../engine/events.js';
import { faultPoint } from '../engine/fault.js';
import { applyPolicy, bucketOf, type Policy } from '../engine/retention/policy.js';
import type { MetaContext } from '../engine/restore/apply-meta.js';
import { ImplReader } from '../manifest/impl-io.js';
import { IdNames } from '../scan/ids.js';
import { LocalStore } from '../store/local/local-store.js';
import type { Store } from '../store/store.js';
import { stateDir } from '../util/state-dir.js';
import { writeFileAtomic } from '../util/atomic.js';
import { unzstd, zstdStream } from '../util/zstd.js';
import { display } from '../util/bpath.js';
import { bytes, count } from '../ui/format.js';
import { exportSnapshot, type ExportCounts } from './export.js';
import { extractArchive, type ExtractCounts } from './extract.js';
import { ObjectStore, type Credentials, type ObjectInfo } from './s3.js';
import { readTar } from './untar.js';

export const STORAGE_CLASSES = ['STANDARD', 'STANDARD_IA', 'GLACIER_IR', 'GLACIER', 'DEEP_ARCHIVE'] as const;
export type StorageClass = (typeof STORAGE_CLASSES)[number];
/** Days S3 bills an object of the class at least (deleting it earlier costs the rest all the same). */
export const MIN_DAYS: Record<StorageClass, number> = { STANDARD: 0, STANDARD_IA: 30, GLACIER_IR: 90, GLACIER: 90, DEEP_ARCHIVE: 180 };
/** Classes whose objects must be restored (RestoreObject) before they can be read. */
const COLD = new Set(['GLACIER', 'DEEP_ARCHIVE']);
export const RESTORE_TIERS = ['Expedited', 'Standard', 'Bulk'] as const;
const TIER_TIME: Record<string, Record<string, string>> = {
  GLACIER: { Expedited: '1-5 minutes', Standard: '3-5 hours', Bulk: '5-12 hours' },
  DEEP_ARCHIVE: { Standard: 'up to 12 hours', Bulk: 'up to 48 hours' },
};

export type Select = { kind: 'monthly' | 'weekly' | 'daily' } | { kind: 'every'; days: number };

/** One `archives:` entry of the config (docs/ARCHIVES.md). */
export interface ArchiveConfig {
  name: string;
  type: 's3';
  endpoint?: string;
  region: string;
  bucket: string;
  /** Key prefix, "" or ending in "/". */
  prefix: string;
  storageClass: StorageClass;
  credentials: Credentials;
  pathStyle?: boolean;
  select: Select;
  mode: 'full' | 'incremental';
  /** With incremental: every Nth archive is a full. */
  fullEvery: number;
  /** zstd level; 0: none. */
  compression: number;
  /** age recipients; null: `encryption: none`. */
  recipients: string[] | null;
  identity?: string;
  retention?: Policy;
  restoreTier: (typeof RESTORE_TIERS)[number];
  restoreDays: number;
  /** The target whose snapshots are archived (default: the first local one). */
  from?: string;
  /** Push after each backup of `from` when one is due. */
  afterBackup: boolean;
  /** First multipart part size in bytes. */
  partSize: number;
}

interface ObjectRef {
  key: string;
  size: number;
  sha256: string;
}

/** The object that makes an archive one (`SNAPSHOT.archive`, JSON, STANDARD class), written last. */
export interface Marker {
  bakker_archive: 1;
  snapshot: string;
  /** The snapshot's start (from its impl). */
  time: string;
  kind: 'full' | 'incremental';
  /** An increment's base: the archive it holds the changes since. */
  base?: string;
  host: string;
  created: string;
  storage_class: StorageClass;
  compression: number;
  encrypted: boolean;
  data: ObjectRef & { parts: number };
  impl: ObjectRef;
  entries: number;
  files: number;
  bytes: number;
}

const SUFFIX = /^(\d{4}_\d{2}_\d{2}_\d{2,4})\.(tar(?:\.zst)?(?:\.age)?|impl(?:\.age)?|archive|upload)$/;

function keysOf(cfg: ArchiveConfig, snap: string) {
  const base = cfg.prefix + snap;
  return {
    data: `${base}.tar${cfg.compression ? '.zst' : ''}${cfg.recipients ? '.age' : ''}`,
    impl: `${base}.impl${cfg.recipients ? '.age' : ''}`,
    marker: `${base}.archive`,
    upload: `${base}.upload`,
  };
}

export function openObjects(cfg: ArchiveConfig): ObjectStore {
  return new ObjectStore({ name: cfg.name, region: cfg.region, bucket: cfg.bucket, credentials: cfg.credentials, ...(cfg.endpoint ? { endpoint: cfg.endpoint } : {}), ...(cfg.pathStyle !== undefined ? { pathStyle: cfg.pathStyle } : {}) });
}

/** This server's state for an archive (impl copies of archived snapshots, the lock). */
function stateOf(cfg: ArchiveConfig): string {
  const id = createHash('sha256').update(`${cfg.endpoint ?? 'aws'}\n${cfg.region}\n${cfg.bucket}\n${cfg.prefix}`).digest('hex').slice(0, 16);
  return path.join(stateDir(), 'archive', id);
}

async function lockArchive(cfg: ArchiveConfig): Promise<{ release(): Promise<void> }> {
  const dir = stateOf(cfg);
  await fsp.mkdir(path.join(dir, '.bakker'), { recursive: true, mode: 0o700 });
  try {
    return await acquireLock(new LocalStore(dir));
  } catch (err) {
    if (err instanceof BakkerError && err.code === 'LOCKED') throw new BakkerError('LOCKED', `archive ${cfg.name}: another bakker run is pushing or pruning it (${err.message.replace(/^store \S+ /, '')})`);
    throw err;
  }
}

function checkMarker(cfg: ArchiveConfig, key: string, text: Buffer): Marker {
  const bad = (why: string) => new BakkerError('STORE', `archive ${cfg.name}: ${key} is not a bakker archive marker (${why}): delete it, or point prefix elsewhere`);
  let m: Marker;
  try {
    m = JSON.parse(text.toString('utf8')) as Marker;
  } catch {
    throw bad('not JSON');
  }
  const snap = key.slice(cfg.prefix.length, -'.archive'.length);
  if (!m || m.bakker_archive !== 1) throw bad(m && typeof m.bakker_archive === 'number' ? `format ${m.bakker_archive}: made by a newer bakker; upgrade` : 'no bakker_archive field');
  if (m.snapshot !== snap) throw bad(`it names snapshot ${String(m.snapshot)}`);
  if (m.kind !== 'full' && m.kind !== 'incremental') throw bad('kind');
  if (m.kind === 'incremental' && (typeof m.base !== 'string' || !SNAPSHOT_RE.test(m.base) || compareSnapshotNames(m.base, snap) >= 0)) throw bad('base');
  // Keys come from the store: only this snapshot's own objects under the prefix are ever read or deleted.
  for (const o of [m.data, m.impl]) {
    if (!o || typeof o.key !== 'string' || !o.key.startsWith(`${cfg.prefix}${snap}.`) || !SUFFIX.test(o.key.slice(cfg.prefix.length)) || typeof o.size !== 'number' || typeof o.sha256 !== 'string') throw bad('objects');
  }
  if (typeof m.time !== 'string' || Number.isNaN(new Date(m.time).getTime())) throw bad('time');
  return m;
}

/** The complete archives (those with a marker), oldest first. */
export async function listArchives(cfg: ArchiveConfig, s3: ObjectStore, objects?: ObjectInfo[]): Promise<Marker[]> {
  objects ??= await s3.list(cfg.prefix);
  const markers = objects.filter((o) => o.key.endsWith('.archive') && SUFFIX.test(o.key.slice(cfg.prefix.length)));
  const out: Marker[] = [];
  for (let i = 0; i < markers.length; i += 8) {
    const batch = await Promise.all(
      markers.slice(i, i + 8).map(async (o) => {
        const text = await s3.getBuffer(o.key);
        return text ? checkMarker(cfg, o.key, text) : null;
      }),
    );
    for (const m of batch) if (m) out.push(m);
  }
  return out.sort((a, b) => compareSnapshotNames(a.snapshot, b.snapshot));
}

/** An archive's chain: its full, then each increment up to it. */
export function chainOf(archives: Marker[], m: Marker): Marker[] {
  const by = new Map(archives.map((a) => [a.snapshot, a]));
  const chain = [m];
  for (let c = m; c.kind === 'incremental'; ) {
    const b = by.get(c.base!);
    if (!b) throw new BakkerError('STORE', `archive ${c.snapshot} is an increment on ${c.base}, which is not in the bucket: the chain is broken; restore an older full`);
    chain.unshift(b);
    c = b;
  }
  return chain;
}

/**
 * Removes what killed pushes left (objects of snapshots without a marker, their unfinished
 * multipart uploads), under the lock. Only names bakker writes are touched.
 */
async function cleanUp(cfg: ArchiveConfig, s3: ObjectStore, objects: ObjectInfo[], archives: Marker[], emit: Emit): Promise<number> {
  const done = new Set(archives.map((a) => a.snapshot));
  const orphans = new Map<string, string[]>();
  for (const o of objects) {
    const m = SUFFIX.exec(o.key.slice(cfg.prefix.length));
    if (!m || (done.has(m[1]!) && m[2] !== 'upload')) continue;
    orphans.set(m[1]!, [...(orphans.get(m[1]!) ?? []), o.key]);
  }
  let cannotAbort = false;
  const abort = async (key: string, id: string) => {
    if (!(await s3.abortUpload(key, id))) cannotAbort = true;
  };
  for (const [snap, keys] of orphans) {
    for (const key of keys.filter((k) => k.endsWith('.upload'))) {
      try {
        const rec = JSON.parse(((await s3.getBuffer(key)) ?? Buffer.from('{}')).toString('utf8')) as { uploads?: { key: string; uploadId: string }[] };
        for (const u of rec.uploads ?? []) if (typeof u.key === 'string' && u.key.startsWith(cfg.prefix + snap + '.') && typeof u.uploadId === 'string') await abort(u.key, u.uploadId);
      } catch (err) {
        if (err instanceof BakkerError) throw err;
      }
    }
    for (const key of keys) await s3.delete(key);
    if (!done.has(snap)) emit({ event: 'archive', action: 'cleaned', snapshot: snap, message: `${snap}: removed what an interrupted push left (${keys.length} object(s))` });
  }
  for (const u of (await s3.uploads(cfg.prefix)) ?? []) {
    const m = SUFFIX.exec(u.key.slice(cfg.prefix.length));
    if (m && u.key.startsWith(cfg.prefix)) await abort(u.key, u.uploadId);
  }
  if (cannotAbort) emit({ event: 'warning', message: `archive ${cfg.name}: the server cannot abort multipart uploads: their parts stay until a lifecycle rule (AbortIncompleteMultipartUpload) removes them` });
  return orphans.size;
}

/**
 * A push or prune: under this server's lock for the archive (none for a dry run), after cleaning
 * up what a killed push left; `fn` gets the client and the complete archives.
 */
async function withArchive<T>(cfg: ArchiveConfig, dryRun: boolean | undefined, emit: Emit, fn: (s3: ObjectStore, archives: Marker[], cleaned: number) => Promise<T>): Promise<T> {
  const s3 = openObjects(cfg);
  const lock = dryRun ? null : await lockArchive(cfg);
  try {
    // One listing for both: cleaning up deletes only objects of snapshots without a marker.
    const objects = await s3.list(cfg.prefix);
    const archives = await listArchives(cfg, s3, objects);
    const cleaned = dryRun ? 0 : await cleanUp(cfg, s3, objects, archives, emit);
    return await fn(s3, archives, cleaned);
  } finally {
    await lock?.release();
    s3.close();
  }
}

function snapshotDate(name: string): Date {
  const m = SNAPSHOT_RE.exec(name)!;
  return new Date(Number(m[1]), Number(m[2]) - 1, Number(m[3]));
}

/** Whether `snap` is due by the archive's selection, and why (not). */
export function isDue(cfg: ArchiveConfig, archives: Marker[], snap: string): { due: boolean; why: string } {
  const newest = archives[archives.length - 1];
  if (newest && compareSnapshotNames(newest.snapshot, snap) >= 0) return { due: false, why: `${snap} is not newer than the newest archive, ${newest.snapshot}` };
  const t = snapshotDate(snap);
  const sel = cfg.select;
  if (sel.kind === 'every') {
    if (!newest) return { due: true, why: 'no archive yet' };
    const days = Math.round((t.getTime() - snapshotDate(newest.snapshot).getTime()) / 86_400_000);
    return days >= sel.days ? { due: true, why: `${days} days after ${newest.snapshot} (every ${sel.days})` } : { due: false, why: `${newest.snapshot} is ${days} day(s) older (select: every ${sel.days})` };
  }
  const bucket = bucketOf(sel.kind, t);
  const same = archives.find((a) => bucketOf(sel.kind, snapshotDate(a.snapshot)) === bucket);
  return same ? { due: false, why: `${same.snapshot} already archives ${bucket} (select: ${sel.kind})` } : { due: true, why: `the first of ${bucket}` };
}

export interface PushResult {
  snapshot: string | null;
  reason: string;
  kind?: 'full' | 'incremental';
  base?: string;
  entries?: number;
  files?: number;
  bytes?: number;
  stored?: number;
  seconds?: number;
  cleaned: number;
}

async function readAll(s: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of s) parts.push(Buffer.from(c));
  return Buffer.concat(parts);
}

/**
 * Pushes one snapshot of `store` to the archive: the newest when it is due by `select` (or the
 * named one, or with `force`), as a full or an increment on the newest archive (mode,
 * full_every, and whether that archive's impl is at hand). Objects: the pax tar stream through
 * zstd and age, streamed into a multipart upload; the impl (gzip, through age); the marker last.
 */
/** The stream, failing at the next chunk once `signal` is aborted (SIGINT, SIGTERM). */
async function* stoppable(source: AsyncIterable<Buffer>, signal: AbortSignal | undefined): AsyncGenerator<Buffer> {
  for await (const c of source) {
    checkStop(signal);
    yield c;
  }
}

function checkStop(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new BakkerError('IO', 'the push was stopped by a signal; what it uploaded is removed (or by the next push)');
}

/** Best effort: aborts the uploads and deletes the objects of a push that did not finish. */
async function discard(s3: ObjectStore, uploads: { key: string; uploadId: string }[], keys: string[]): Promise<void> {
  try {
    for (const u of uploads) await s3.abortUpload(u.key, u.uploadId);
    for (const k of keys) await s3.delete(k);
  } catch {
    // the marker was never written: the next push or prune removes what is left
  }
}

export async function pushArchive(cfg: ArchiveConfig, store: Store, opts: { snapshot?: string; force?: boolean; full?: boolean; dryRun?: boolean; signal?: AbortSignal; emit: Emit }): Promise<PushResult> {
  return withArchive(cfg, opts.dryRun, opts.emit, async (s3, archives, cleaned) => {
    const listing = await listStore(store);
    const snap = opts.snapshot ?? listing.complete[listing.complete.length - 1];
    if (!snap) return { snapshot: null, reason: `store ${store.url} has no snapshot yet`, cleaned };
    if (!listing.complete.includes(snap)) throw new BakkerError('NOT_FOUND', `snapshot ${snap} is not on ${store.url}: see 'bakker list'`);
    if (archives.some((a) => a.snapshot === snap)) return { snapshot: null, reason: `${snap} is archived already`, cleaned };
    const due = isDue(cfg, archives, snap);
    if (!due.due && !opts.force && !opts.snapshot) return { snapshot: null, reason: `nothing due: ${due.why}`, cleaned };

    // Full or increment, and on what.
    const older = archives.filter((a) => compareSnapshotNames(a.snapshot, snap) < 0);
    const base = older[older.length - 1];
    let kind: 'full' | 'incremental' = 'full';
    let why = 'mode: full';
    let sinceStore: Store | undefined;
    const state = stateOf(cfg);
    if (opts.full) why = '--full';
    else if (cfg.mode === 'incremental' && !base) why = 'no archive before it: the first full';
    else if (cfg.mode === 'incremental' && base) {
      const depth = chainOf(archives, base).length; // archives in base's chain, its full included
      if (depth >= cfg.fullEvery) why = `a full every ${cfg.fullEvery} archives`;
      else if (listing.complete.includes(base.snapshot)) {
        kind = 'incremental';
        sinceStore = store;
      } else if (fs.existsSync(path.join(state, `${base.snapshot}.impl`))) {
        kind = 'incremental';
        sinceStore = new LocalStore(state);
      } else why = `the impl of ${base.snapshot} is neither on the store nor in this server's state (${state}): a full`;
    }
    if (kind === 'incremental') why = `changes since ${base!.snapshot}`;
    if (opts.dryRun) return { snapshot: snap, reason: `would push ${snap} as ${kind === 'full' ? 'a full' : 'an increment'} (${why})`, kind, ...(kind === 'incremental' ? { base: base!.snapshot } : {}), cleaned };

    const keys = keysOf(cfg, snap);
    const started = Date.now();
    const record = { snapshot: snap, host: os.hostname(), pid: process.pid, started: new Date().toISOString(), uploads: [] as { key: string; uploadId: string }[] };
    let committed = false;
    try {
      await s3.putSmall(keys.upload, Buffer.from(JSON.stringify(record)));

      const reader = await ImplReader.open(store, implPath(snap));
      const time = reader.header.start;
      reader.close();
      const counts: ExportCounts = { entries: 0, files: 0, bytes: 0, skipped: 0 };
      let stream: AsyncIterable<Buffer> = stoppable(exportSnapshot(store, snap, { ...(kind === 'incremental' ? { since: base!.snapshot, sinceStore: sinceStore! } : {}), counts }), opts.signal);
      if (cfg.compression) stream = zstdStream(stream, cfg.compression);
      const recipients = cfg.recipients?.map((r) => parseRecipient(r));
      if (recipients) stream = encrypt(stream, recipients);
      const data = await s3.upload(keys.data, stream, {
        storageClass: cfg.storageClass,
        partSize: cfg.partSize,
        onStart: async (uploadId) => {
          record.uploads.push({ key: keys.data, uploadId });
          await s3.putSmall(keys.upload, Buffer.from(JSON.stringify(record)));
        },
      });
      checkStop(opts.signal);
      const implGz = await readAll((await store.openRead(implPath(snap))).stream);
      const implBody = recipients ? encryptBuffer(implGz, recipients) : implGz;
      await s3.putSmall(keys.impl, implBody, cfg.storageClass);
      // This server keeps the impl, so the next increment can list what was removed after the local snapshot is pruned.
      writeFileAtomic(path.join(state, `${snap}.impl`), implGz, 0o600);
      const marker: Marker = {
        bakker_archive: 1,
        snapshot: snap,
        time,
        kind,
        ...(kind === 'incremental' ? { base: base!.snapshot } : {}),
        host: os.hostname(),
        created: new Date().toISOString(),
        storage_class: cfg.storageClass,
        compression: cfg.compression,
        encrypted: recipients !== undefined,
        data: { key: keys.data, size: data.size, sha256: data.sha256, parts: data.parts },
        impl: { key: keys.impl, size: implBody.length, sha256: createHash('sha256').update(implBody).digest('hex') },
        entries: counts.entries,
        files: counts.files,
        bytes: counts.bytes,
      };
      faultPoint('archive-before-marker');
      checkStop(opts.signal);
      await s3.putSmall(keys.marker, Buffer.from(JSON.stringify(marker, null, 1) + '\n'));
      committed = true;
      await s3.delete(keys.upload);
      const seconds = (Date.now() - started) / 1000;
      if (counts.skipped) opts.emit({ event: 'warning', message: `${snap}: ${counts.skipped} socket(s) left out of the archive (tar cannot hold them; the impl alongside lists them)` });
      opts.emit({ event: 'archive', action: 'pushed', snapshot: snap, kind, message: `archive ${cfg.name}: ${snap} pushed as ${kind === 'full' ? 'a full' : `an increment on ${base!.snapshot}`} (${why}): ${count(counts.entries)} entries, ${bytes(counts.bytes)} of files, ${bytes(data.size)} stored, ${seconds.toFixed(1)} s` });
      return { snapshot: snap, reason: why, kind, ...(kind === 'incremental' ? { base: base!.snapshot } : {}), entries: counts.entries, files: counts.files, bytes: counts.bytes, stored: data.size, seconds, cleaned };
    } catch (err) {
      // A failed or stopped push takes its objects back now (what cannot be, the next push or prune does).
      if (!committed) await discard(s3, record.uploads, [keys.data, keys.impl, keys.upload]);
      throw err;
    }
  });
}

export interface ArchiveRestoreResult {
  snapshot: string;
  chain: string[];
  /** Objects not readable yet (cold storage): restore requested or under way. */
  waiting: { key: string; storageClass: string; state: string }[];
  counts: ExtractCounts;
}

/** Picks an archive: "latest", a name, or a unique prefix of one. */
export function pickArchive(cfg: ArchiveConfig, archives: Marker[], which: string): Marker {
  if (archives.length === 0) throw new BakkerError('NOT_FOUND', `archive ${cfg.name} holds no archive yet (s3://${cfg.bucket}/${cfg.prefix})`);
  if (which === 'latest') return archives[archives.length - 1]!;
  const hits = archives.filter((a) => a.snapshot === which || a.snapshot.startsWith(which));
  const exact = hits.find((a) => a.snapshot === which);
  if (exact) return exact;
  if (hits.length === 1) return hits[0]!;
  throw new BakkerError('NOT_FOUND', `${hits.length ? `"${which}" matches ${hits.length} archives` : `no archive "${which}"`} in ${cfg.name}: see 'bakker archive list'`);
}

/**
 * Restores an archive (its full, then each increment on it) into `to`, which must be empty or
 * missing. Objects in GLACIER or DEEP_ARCHIVE are first asked to be restored (RestoreObject):
 * while any is not readable yet, nothing is written and `waiting` says which; run it again later.
 */
export async function restoreArchive(cfg: ArchiveConfig, which: string, to: string, opts: { identities?: Identity[]; tier?: string; days?: number; numericIds?: boolean; emit: Emit }): Promise<ArchiveRestoreResult> {
  const s3 = openObjects(cfg);
  try {
    const archives = await listArchives(cfg, s3);
    const target = pickArchive(cfg, archives, which);
    const chain = chainOf(archives, target);
    if (chain.some((m) => m.encrypted) && !opts.identities) throw new BakkerError('CONFIG', `archive ${cfg.name} is encrypted: restoring needs its identity: give --key FILE (or encryption.identity in the archive's config)`);
    const tier = opts.tier ?? cfg.restoreTier;
    const days = opts.days ?? cfg.restoreDays;
    const waiting: ArchiveRestoreResult['waiting'] = [];
    for (const m of chain) {
      const head = await s3.head(m.data.key);
      if (!head) throw new BakkerError('STORE', `archive ${m.snapshot}: its object ${m.data.key} is missing from the bucket: the archive is damaged`);
      if (head.size !== m.data.size) throw new BakkerError('STORE', `archive ${m.snapshot}: ${m.data.key} has ${head.size} bytes where its marker says ${m.data.size}: the archive is damaged`);
      if (!COLD.has(head.storageClass)) continue;
      let state: string;
      if (head.restore && !head.restore.ongoing) continue; // restored: readable until its expiry
      if (head.restore?.ongoing) state = 'restore under way';
      else {
        const r = await s3.restore(m.data.key, days, tier);
        if (r === 'ready') continue;
        state = r === 'started' ? `restore requested (tier ${tier}, ${days} days)` : 'restore under way';
      }
      waiting.push({ key: m.data.key, storageClass: head.storageClass, state });
      const eta = TIER_TIME[head.storageClass]?.[tier];
      opts.emit({ event: 'archive', action: 'waiting', snapshot: m.snapshot, key: m.data.key, message: `${m.snapshot}: ${m.data.key} is in ${head.storageClass}: ${state}${eta ? `; ${tier} takes ${eta}` : ''}` });
    }
    const counts: ExtractCounts = { entries: 0, files: 0, bytes: 0, removed: 0 };
    if (waiting.length) return { snapshot: target.snapshot, chain: chain.map((m) => m.snapshot), waiting, counts };

    const root = Buffer.from(path.resolve(to));
    await fsp.mkdir(root, { recursive: true });
    const present = (await fsp.readdir(root)).filter((n) => !n.startsWith('.bakker-restore-'));
    if (present.length) throw new BakkerError('USAGE', `archive restore: ${to} is not empty: restore into an empty or new folder (increments replace and delete entries there)`);
    const ctx: MetaContext = {
      ids: new IdNames(),
      numericIds: opts.numericIds === true,
      canChown: process.getuid?.() === 0,
      warn: (p, message) => opts.emit({ event: 'warning', path: display(p), message }),
    };
    for (const m of chain) {
      const body = await s3.get(m.data.key);
      if (!body) throw new BakkerError('STORE', `archive ${m.snapshot}: its object ${m.data.key} is missing from the bucket: the archive is damaged`);
      const hash = createHash('sha256');
      let size = 0;
      let stream: AsyncIterable<Buffer> = (async function* () {
        try {
          for await (const c of body) {
            hash.update(c);
            size += c.length;
            yield c;
          }
        } catch (err) {
          if (err instanceof BakkerError) throw err;
          throw new BakkerError('STORE', `archive ${m.snapshot}: reading ${m.data.key} failed: ${errMessage(err)}`);
        }
      })();
      const what = `archive ${m.snapshot} (${m.data.key})`;
      if (m.encrypted) stream = decrypt(stream, opts.identities!);
      if (m.compression) stream = unzstd(stream, what);
      try {
        await extractArchive(readTar(stream, what), root, ctx, what, counts);
      } catch (err) {
        if (err instanceof BakkerError && err.code === 'IMPL' && /encrypted file|identity/.test(err.message)) throw new BakkerError('IMPL', `${what}: ${err.message}`);
        throw err;
      }
      if (size !== m.data.size || hash.digest('hex') !== m.data.sha256) throw new BakkerError('VERIFY', `${what} does not match the size and SHA-256 its marker records: the object is damaged`);
      opts.emit({ event: 'archive', action: 'restored', snapshot: m.snapshot, message: `${m.snapshot}: ${m.kind === 'full' ? 'full' : `increment on ${m.base}`} extracted` });
    }
    return { snapshot: target.snapshot, chain: chain.map((m) => m.snapshot), waiting, counts };
  } finally {
    s3.close();
  }
}

export interface PruneDecision {
  snapshot: string;
  action: 'keep' | 'delete' | 'defer';
  reasons: string[];
}

/**
 * The archive's own retention: the policy picks archives by their snapshot's time; every kept
 * archive keeps its chain (the full and increments it is built on); an archive younger than its
 * class's minimum storage duration is deferred (S3 bills those days anyway), unless `early`.
 */
export function decidePrune(cfg: ArchiveConfig, archives: Marker[], now: Date, early: boolean): PruneDecision[] {
  const decisions = applyPolicy(
    archives.map((a) => ({ name: a.snapshot, time: new Date(a.time) })),
    cfg.retention ?? {},
  );
  const out = new Map<string, PruneDecision>();
  for (const d of decisions) out.set(d.name, { snapshot: d.name, action: d.keep ? 'keep' : 'delete', reasons: [...d.reasons] });
  // Chains: whatever is kept (and then whatever is deferred) keeps what it is built on.
  const by = new Map(archives.map((a) => [a.snapshot, a]));
  const keepBases = (from: PruneDecision['action']) => {
    for (const a of [...archives].reverse()) {
      if (out.get(a.snapshot)!.action !== from) continue;
      for (let c = a; c.kind === 'incremental'; ) {
        const b = by.get(c.base!);
        if (!b) break;
        const bd = out.get(b.snapshot)!;
        if (bd.action === 'delete') {
          bd.action = 'keep';
          bd.reasons.push(`base of ${a.snapshot}${from === 'defer' ? ' (kept for now)' : ''}`);
        }
        c = b;
      }
    }
  };
  keepBases('keep');
  for (const a of archives) {
    const d = out.get(a.snapshot)!;
    if (d.action !== 'delete') continue;
    const min = MIN_DAYS[a.storage_class] ?? 0;
    const age = (now.getTime() - new Date(a.created).getTime()) / 86_400_000;
    if (min > 0 && age < min) {
      const until = new Date(new Date(a.created).getTime() + min * 86_400_000).toISOString().slice(0, 10);
      if (early) d.reasons.push(`deleted ${Math.floor(age)} days old, before the ${min}-day minimum of ${a.storage_class}: S3 still bills until ${until}`);
      else {
        d.action = 'defer';
        d.reasons.push(`${Math.floor(age)} days old, under the ${min}-day minimum of ${a.storage_class} (S3 bills those days anyway): deleted by a prune from ${until} (or now with --early)`);
      }
    }
  }
  keepBases('defer');
  return archives.map((a) => out.get(a.snapshot)!);
}

export async function pruneArchives(cfg: ArchiveConfig, opts: { dryRun?: boolean; early?: boolean; now?: Date; emit: Emit }): Promise<{ decisions: PruneDecision[]; deleted: number; cleaned: number }> {
  return withArchive(cfg, opts.dryRun, opts.emit, async (s3, archives, cleaned) => {
    const decisions = decidePrune(cfg, archives, opts.now ?? new Date(), opts.early === true);
    let deleted = 0;
    const by = new Map(archives.map((a) => [a.snapshot, a]));
    // Newest first: an increment goes before the full it is built on.
    for (const d of [...decisions].reverse()) {
      const m = by.get(d.snapshot)!;
      if (d.action === 'delete' && !opts.dryRun) {
        // The marker first: from then on it is no archive; what is left is cleaned up by the next push or prune.
        await s3.delete(`${cfg.prefix}${m.snapshot}.archive`);
        await s3.delete(m.data.key);
        await s3.delete(m.impl.key);
        await fsp.rm(path.join(stateOf(cfg), `${m.snapshot}.impl`), { force: true });
        deleted++;
      }
      const verb = d.action === 'keep' ? 'keep' : d.action === 'defer' ? 'keep for now' : opts.dryRun ? 'would delete' : 'deleted';
      if (d.action === 'defer') opts.emit({ event: 'warning', message: `archive ${m.snapshot}: ${d.reasons.join('; ')}` });
      const young = d.action === 'delete' ? d.reasons.find((r) => r.includes('-day minimum of')) : undefined;
      if (young) opts.emit({ event: 'warning', message: `archive ${m.snapshot}: ${young} (--early)` });
      opts.emit({ event: 'archive', action: d.action, snapshot: m.snapshot, message: `${verb.padEnd(13)} ${m.snapshot} ${m.kind.padEnd(11)} ${d.reasons.join('; ')}` });
    }
    return { decisions, deleted, cleaned };
  });
}
