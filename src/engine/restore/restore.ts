import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { damaged, openContent } from '../content.js';
import { BakkerError, errnoCode } from '../../errors.js';
import { TYPE_MODE, type Entry } from '../../manifest/entry.js';
import { ImplReader } from '../../manifest/impl-io.js';
import { native } from '../../native.js';
import { IdNames } from '../../scan/ids.js';
import { readSmall, type Store } from '../../store/store.js';
import { display, EMPTY, isWithin, join, parent, safeComponents } from '../../util/bpath.js';
import { algoOfSum, createHasher, loadHash } from '../../util/hash.js';
import { TaskPool } from '../../util/task-pool.js';
import { noEmit, type Emit, type Progress } from '../events.js';
import { implPath, treePath } from '../layout.js';
import { applyMeta, type MetaContext } from './apply-meta.js';
import { writeStream } from './write-stream.js';

export interface RestoreOptions {
  store: Store;
  snapshot: string;
  /** Target folder; created when missing. */
  to: string;
  /** Snapshot paths to restore (with or without a leading '/'); all when empty. */
  includes?: string[];
  numericIds?: boolean;
  emit?: Emit;
  progress?: Progress;
}

export interface RestoreResult {
  snapshot: string;
  entries: number;
  files: number;
  bytes: number;
  warnings: number;
}

const { O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW } = fs.constants;

function unsafe(msg: string): BakkerError {
  return new BakkerError('UNSAFE', `${msg}; nothing is written outside the target`);
}

/**
 * Restores a snapshot from its impl (metadata) and tree (content) into `to`.
 * Safety: every impl path must be relative with no '.', '..' or empty part, and its parent
 * must be a directory this restore created or found as a real directory (never a symlink), so
 * nothing is written outside `to` or through a symlink. Each file is written under a fresh
 * temporary name (O_EXCL, O_NOFOLLOW) and renamed into place, which replaces, never follows,
 * whatever was there.
 */
export async function runRestore(opts: RestoreOptions): Promise<RestoreResult> {
  const { store, snapshot } = opts;
  const emit = opts.emit ?? noEmit;
  const root = Buffer.from(opts.to.replace(/\/+$/, '') || '/');
  await fsp.mkdir(root, { recursive: true });
  const includes = (opts.includes ?? []).map((i) => Buffer.from(i.replace(/^\/+/, '').replace(/\/+$/, '')));
  let warnings = 0;
  const ctx: MetaContext = {
    ids: new IdNames(),
    numericIds: opts.numericIds === true,
    canChown: process.getuid?.() === 0,
    warn: (p, message) => {
      warnings++;
      emit({ event: 'warning', path: display(p), message });
    },
  };
  await loadHash('blake3');
  if (store.crypt && !store.crypt.canDecrypt) throw new BakkerError('CONFIG', `store ${store.url} is encrypted: restoring needs its identity: give --key FILE (or encryption.identity in the target's config)`);
  const reader = await ImplReader.open(store, implPath(snapshot));
  const tree = treePath(snapshot);
  const pool = new TaskPool(16);
  const stack: Buffer[] = [];
  const dirs: Entry[] = [];
  const groups = new Map<number, { dest: Buffer; done: Promise<void> }>();
  const result: RestoreResult = { snapshot, entries: 0, files: 0, bytes: 0, warnings: 0 };
  const abs = (p: Buffer) => join(root, p);
  const selected = (p: Buffer) => includes.length === 0 || includes.some((i) => isWithin(p, i) || isWithin(i, p));
  const matchedIncludes = new Set<number>();
  // The store's folder + '/', when small files can be read from it directly.
  const small = store.localRoot && !store.crypt ? Buffer.from(`${store.localRoot}/`) : null;
  const crypt = store.crypt;

  try {
    for (let e = await reader.next(); e; e = await reader.next()) {
      if (!safeComponents(e.path)) throw unsafe(`impl ${snapshot}.impl holds an unsafe path "${display(e.path)}"`);
      if (!selected(e.path)) continue;
      includes.forEach((inc, i) => isWithin(e!.path, inc) && matchedIncludes.add(i));
      const par = parent(e.path);
      while (stack.length > 0 && !isWithin(par, stack[stack.length - 1]!)) stack.pop();
      const top = stack.length > 0 ? stack[stack.length - 1]! : EMPTY;
      if (!top.equals(par)) throw unsafe(`impl entry "${display(e.path)}" has no directory record for its parent`);
      result.entries++;
      if (opts.progress) {
        opts.progress.entries++;
        opts.progress.current = e.path;
      }
      if (e.type === 'dir') {
        await makeDir(abs(e.path));
        stack.push(e.path);
        dirs.push(e);
        continue;
      }
      const entry = e;
      const dest = abs(entry.path);
      const tmp = join(parent(dest), `.bakker-restore-${randomBytes(6).toString('hex')}`);
      const group = entry.hardlink !== undefined ? groups.get(entry.hardlink) : undefined;
      if (group) {
        await group.done;
        await pool.add(async () => {
          await fsp.link(group.dest, tmp);
          await fsp.rename(tmp, dest);
        });
        continue;
      }
      let resolveDone!: () => void;
      let rejectDone!: (e: unknown) => void;
      const done = new Promise<void>((res, rej) => {
        resolveDone = res;
        rejectDone = rej;
      });
      done.catch(() => undefined);
      if (entry.hardlink !== undefined) groups.set(entry.hardlink, { dest, done });
      if (entry.type === 'file') {
        result.files++;
        result.bytes += entry.size;
      }
      if (entry.type === 'file' && entry.size <= SMALL && !entry.sparse && (small ? entry.z === undefined : crypt)) {
        // A small file of a local store: read and written on this thread, from and into the page cache.
        const data = small ? readStored(Buffer.concat([small, join(tree, entry.path)]), entry) : await crypt!.readSmallPlain(join(tree, entry.path), entry);
        if (data) {
          writeSmall(data, entry, tmp, dest, ctx);
          resolveDone();
          continue;
        }
      }
      await pool.add(async () => {
        try {
          await restoreOne(store, join(tree, entry.path), entry, tmp, ctx);
          await fsp.rename(tmp, dest);
          resolveDone();
        } catch (err) {
          await fsp.rm(tmp, { force: true }).catch(() => undefined);
          rejectDone(err);
          throw err;
        }
      });
    }
    await pool.drain();
    for (let i = dirs.length - 1; i >= 0; i--) await applyMeta(abs(dirs[i]!.path), dirs[i]!, ctx);
  } finally {
    reader.close();
  }
  includes.forEach((inc, i) => {
    if (!matchedIncludes.has(i)) throw new BakkerError('NOT_FOUND', `--include ${display(inc)} matches nothing in snapshot ${snapshot}: check the path with 'bakker diff' or the snapshot folder`);
  });
  result.warnings = warnings;
  return result;
}

async function makeDir(p: Buffer): Promise<void> {
  try {
    await fsp.mkdir(p, { mode: 0o700 });
  } catch (err) {
    if (errnoCode(err) !== 'EEXIST') throw err;
    const st = await fsp.lstat(p);
    if (!st.isDirectory()) throw unsafe(`${display(p)} exists in the target and is not a directory: restore into an empty folder`);
  }
}

async function restoreOne(store: Store, src: Buffer, e: Entry, tmp: Buffer, ctx: MetaContext): Promise<void> {
  switch (e.type) {
    case 'file':
      await restoreFile(store, src, e, tmp);
      break;
    case 'symlink':
      await fsp.symlink(e.target!, tmp);
      break;
    default:
      native.mknod(tmp, TYPE_MODE[e.type] | (e.mode & 0o7777), e.rdev ?? 0);
  }
  await applyMeta(tmp, e, ctx);
}

/** Files up to this size are restored in one read and one write on the main thread. */
const SMALL = 64 * 1024;

/** A small file's stored copy, read whole on this thread (never through a symlink). */
function readStored(src: Buffer, e: Entry): Buffer {
  let small: ReturnType<typeof readSmall>;
  try {
    small = readSmall(src, e.size);
  } catch (err) {
    throw damaged(e, `cannot be read (${errnoCode(err) ?? String(err)})`, err);
  }
  if (!small) throw damaged(e, `has more bytes than the ${e.size} the impl says`);
  return small.data;
}

/** A small file's content written under `tmp` with its metadata (after checking its size and checksum), renamed to `dest`. */
function writeSmall(data: Buffer, e: Entry, tmp: Buffer, dest: Buffer, ctx: MetaContext): void {
  if (data.length !== e.size) throw damaged(e, `has ${data.length} bytes where the impl says ${e.size}`);
  const algo = e.sum ? algoOfSum(e.sum) : undefined;
  if (algo) {
    const h = createHasher(algo);
    h.update(data);
    if (h.digest() !== e.sum) throw damaged(e, 'does not match its checksum');
  }
  try {
    const fd = fs.openSync(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600);
    try {
      if (data.length > 0) fs.writeSync(fd, data);
    } finally {
      fs.closeSync(fd);
    }
    applyMeta(tmp, e, ctx);
    fs.renameSync(tmp, dest);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
}

async function restoreFile(store: Store, src: Buffer, e: Entry, tmp: Buffer): Promise<void> {
  const stream = await openContent(store, src, e);
  const algo = e.sum ? algoOfSum(e.sum) : undefined;
  const hasher = algo ? createHasher(algo) : undefined;
  const fh = await fsp.open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600);
  let written: number;
  try {
    written = await writeStream(stream, fh.fd, e.sparse === true, e.size, hasher);
  } finally {
    stream.destroy();
    await fh.close();
  }
  if (written !== e.size) throw damaged(e, `has ${written} bytes where the impl says ${e.size}`);
  if (hasher && hasher.digest() !== e.sum) throw damaged(e, 'does not match its checksum');
}
