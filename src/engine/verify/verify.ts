import { errMessage } from '../../errors.js';
import type { Entry } from '../../manifest/entry.js';
import { ImplReader } from '../../manifest/impl-io.js';
import type { Store } from '../../store/store.js';
import { display, join, safeComponents } from '../../util/bpath.js';
import { algoOfSum, hashStream, loadHash } from '../../util/hash.js';
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

async function checkEntry(store: Store, p: Buffer, e: Entry, problem: (p: Buffer, m: string) => void, groups: Map<number, Promise<number | undefined>>): Promise<void> {
  const statted = store.stat(p);
  let first: Promise<number | undefined> | undefined;
  if (e.hardlink !== undefined && e.type === 'file' && store.caps.inodes) {
    first = groups.get(e.hardlink);
    if (!first) groups.set(e.hardlink, statted.then((s) => s?.ino));
  }
  const st = await statted;
  if (!st) return problem(e.path, `${e.type} is missing from the snapshot folder`);
  if (first) {
    const ino = await first;
    if (ino !== undefined && ino !== st.ino) problem(e.path, `is not hard-linked to the rest of its group ${e.hardlink} in the snapshot folder`);
  }
  if (st.type !== e.type) return problem(e.path, `is a ${st.type} in the snapshot folder, the impl says ${e.type}`);
  if (e.type === 'file' && st.size !== e.size) return problem(e.path, `stored copy has ${st.size} bytes, the impl says ${e.size}`);
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
  if ((await hashStream(opened.stream, algo)) !== e.sum) {
    problem(e.path, 'content does not match its checksum');
    return false;
  }
  return true;
}
