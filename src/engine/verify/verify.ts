import { Readable } from 'node:stream';
import { errMessage } from '../../errors.js';
import { unzstd } from '../../util/zstd.js';
import type { Entry } from '../../manifest/entry.js';
import { ImplReader } from '../../manifest/impl-io.js';
import type { Store, StoreStat } from '../../store/store.js';
import { display, join, safeComponents } from '../../util/bpath.js';
import { algoOfSum, createHasher, hashStream, loadHash } from '../../util/hash.js';
import { TaskPool } from '../../util/task-pool.js';
import { noEmit, type Emit, type Progress } from '../events.js';
import { implPath, treePath } from '../layout.js';

export interface VerifyResult {
  snapshot: string;
  entries: number;
  checkedData: number;
  problems: number;
}

/**
 * Checks one snapshot against its impl: the impl reads to its trailer in walk order with safe
 * paths; every file is in the tree as a regular file of the recorded size (and, when the impl
 * has checksums, with that content); every symlink has its target; every directory exists.
 * Problems are emitted one by one; the run goes on to report them all.
 */
export async function verifySnapshot(store: Store, snapshot: string, opts: { emit?: Emit; progress?: Progress; readData?: boolean } = {}): Promise<VerifyResult> {
  const emit = opts.emit ?? noEmit;
  const res: VerifyResult = { snapshot, entries: 0, checkedData: 0, problems: 0 };
  const problem = (path: Buffer | undefined, message: string) => {
    res.problems++;
    emit({ event: 'problem', snapshot, ...(path ? { path: display(path) } : {}), message });
  };
  await loadHash('blake3');
  if (store.crypt && !(await store.crypt.implReadable(snapshot))) return verifyObjects(store, snapshot, res, problem, emit);
  let reader: ImplReader;
  try {
    reader = await ImplReader.open(store, implPath(snapshot));
  } catch (err) {
    problem(undefined, errMessage(err));
    return res;
  }
  const tree = treePath(snapshot);
  const pool = new TaskPool(store.caps.inFlight);
  /** Hard-link group -> inode of its first member (every member must share it). */
  const groups = new Map<number, Promise<number | undefined>>();
  const dataPool = new TaskPool(4);
  try {
    if (reader.header.snapshot !== snapshot) problem(undefined, `impl header names snapshot ${reader.header.snapshot}`);
    for (;;) {
      let e: Entry | null;
      try {
        e = await reader.next();
      } catch (err) {
        problem(undefined, errMessage(err));
        break;
      }
      if (!e) {
        if (!reader.trailer) problem(undefined, 'impl has no trailer: it is truncated');
        break;
      }
      res.entries++;
      if (opts.progress) opts.progress.entries++;
      if (!safeComponents(e.path)) {
        problem(e.path, 'unsafe path in the impl');
        continue;
      }
      const entry = e;
      if (store.crypt) {
        // Objects: files and symlinks (folders live in the impl only); content by tag, and by checksum with the identity.
        if (entry.type !== 'file' && entry.type !== 'symlink') continue;
        await pool.add(() => checkObject(store, join(tree, entry.path), entry, problem, groups));
        if (entry.type === 'file' && opts.readData !== false) {
          await dataPool.add(async () => {
            if (await checkSealed(store, join(tree, entry.path), entry, problem)) res.checkedData++;
          });
        }
        continue;
      }
      if (entry.type === 'file' || entry.type === 'symlink' || entry.type === 'dir') {
        await pool.add(() => checkEntry(store, join(tree, entry.path), entry, problem, groups));
      }
      if (entry.type === 'file' && entry.sum && opts.readData !== false) {
        await dataPool.add(async () => {
          if (await checkData(store, join(tree, entry.path), entry, problem)) res.checkedData++;
        });
      }
    }
    await pool.drain();
    await dataPool.drain();
  } finally {
    reader.close();
  }
  return res;
}

/**
 * stat of an entry's stored copy; for a later member of a hard-link group, also whether it
 * shares the first member's inode (a problem is reported when not).
 */
async function statInGroup(store: Store, p: Buffer, e: Entry, problem: (p: Buffer, m: string) => void, groups: Map<number, Promise<number | undefined>>): Promise<StoreStat | null> {
  const statted = store.stat(p);
  let first: Promise<number | undefined> | undefined;
  if (e.hardlink !== undefined && e.type === 'file' && store.caps.inodes) {
    first = groups.get(e.hardlink);
    if (!first) groups.set(e.hardlink, statted.then((s) => s?.ino));
  }
  const st = await statted;
  if (st && first) {
    const ino = await first;
    if (ino !== undefined && ino !== st.ino) problem(e.path, `is not hard-linked to the rest of its group ${e.hardlink} in the snapshot folder`);
  }
  return st;
}

async function checkEntry(store: Store, p: Buffer, e: Entry, problem: (p: Buffer, m: string) => void, groups: Map<number, Promise<number | undefined>>): Promise<void> {
  const st = await statInGroup(store, p, e, problem, groups);
  if (!st) return problem(e.path, `${e.type} is missing from the snapshot folder`);
  if (st.type !== e.type) return problem(e.path, `is a ${st.type} in the snapshot folder, the impl says ${e.type}`);
  if (e.type === 'file' && st.size !== e.size && e.z === undefined) return problem(e.path, `stored copy has ${st.size} bytes, the impl says ${e.size}`);
  if (e.type === 'symlink') {
    const target = await store.readlink(p);
    if (!target.equals(e.target!)) problem(e.path, `symlink points to ${display(target)}, the impl says ${display(e.target!)}`);
  }
}

async function checkData(store: Store, p: Buffer, e: Entry, problem: (p: Buffer, m: string) => void): Promise<boolean> {
  const algo = algoOfSum(e.sum!);
  if (!algo) {
    problem(e.path, `unknown checksum kind in "${e.sum}"`);
    return false;
  }
  let opened;
  try {
    opened = await store.openRead(p);
  } catch {
    return false; // already reported by checkEntry
  }
  const content = e.z === 'zstd' ? Readable.from(unzstd(opened.stream, `stored copy of ${display(e.path)}`)) : opened.stream;
  let sum: string;
  try {
    sum = await hashStream(content, algo);
  } catch (err) {
    problem(e.path, errMessage(err));
    return false;
  }
  if (sum !== e.sum) {
    problem(e.path, 'content does not match its checksum');
    return false;
  }
  return true;
}

/**
 * An encrypted store without a readable impl (no identity, no local copy): every object its
 * NAME.objects lists must be there (presence only; contents need the impl).
 */
async function verifyObjects(store: Store, snapshot: string, res: VerifyResult, problem: (p: Buffer | undefined, m: string) => void, emit: Emit): Promise<VerifyResult> {
  const crypt = store.crypt!;
  let names: string[] | null;
  try {
    names = await crypt.objectList(snapshot);
  } catch (err) {
    problem(undefined, errMessage(err));
    return res;
  }
  if (!names) {
    problem(undefined, `${snapshot}.objects is missing: without it (and without the identity) the snapshot cannot be checked; give --key FILE`);
    return res;
  }
  emit({ event: 'info', message: `${snapshot}: no identity and no local impl copy: checking that the ${names.length} objects ${snapshot}.objects lists are there (give --key FILE to check contents)` });
  const pool = new TaskPool(store.caps.inFlight);
  for (const n of names) {
    await pool.add(async () => {
      const st = await crypt.statObject(snapshot, n);
      res.entries++;
      if (!st) problem(undefined, `object ${n} is missing from the snapshot folder`);
      else if (st.type !== 'file') problem(undefined, `object ${n} is a ${st.type}, not a file`);
    });
  }
  await pool.drain();
  return res;
}

async function checkObject(store: Store, p: Buffer, e: Entry, problem: (p: Buffer, m: string) => void, groups: Map<number, Promise<number | undefined>>): Promise<void> {
  const st = await statInGroup(store, p, e, problem, groups);
  if (!st) return problem(e.path, `the stored object of this ${e.type} is missing from the snapshot folder`);
  if (st.type !== 'file') problem(e.path, `the stored object is a ${st.type}, not a file`);
}

/** An encrypted file's object: its tag (no identity needed); with the identity, its plaintext's size and checksum too. */
async function checkSealed(store: Store, p: Buffer, e: Entry, problem: (p: Buffer, m: string) => void): Promise<boolean> {
  const crypt = store.crypt!;
  if (!(await store.stat(p))) return false; // reported by checkObject
  if (!crypt.canDecrypt) {
    const bad = await crypt.checkTag(p, e);
    if (bad) problem(e.path, bad);
    return bad === null;
  }
  const algo = e.sum ? algoOfSum(e.sum) : undefined;
  const hasher = algo ? createHasher(algo) : undefined;
  let size = 0;
  try {
    for await (const c of await crypt.openPlain(p, e)) {
      size += (c as Buffer).length;
      hasher?.update(c as Buffer);
    }
  } catch (err) {
    problem(e.path, errMessage(err));
    return false;
  }
  if (size !== e.size) {
    problem(e.path, `decrypted content has ${size} bytes, the impl says ${e.size}`);
    return false;
  }
  if (hasher && hasher.digest() !== e.sum) {
    problem(e.path, 'content does not match its checksum');
    return false;
  }
  return true;
}
