import fs from 'node:fs';
import { BakkerError, errnoCode } from '../errors.js';
import { damaged, openContent } from '../engine/content.js';
import { implPath, treePath } from '../engine/layout.js';
import { compareSnapshotNames } from '../engine/naming.js';
import { diffSnapshots } from '../engine/diff.js';
import type { Entry } from '../manifest/entry.js';
import { ImplReader } from '../manifest/impl-io.js';
import { OPEN_READ, type Store } from '../store/store.js';
import { display, join, safeComponents } from '../util/bpath.js';
import { contentPad, END, entryHeader } from './pax.js';

/** The last member of an increment: the paths removed since the older snapshot, each NUL-terminated. */
export const REMOVED = Buffer.from('.bakker-removed');
const NUL = Buffer.from([0]);

export interface ExportCounts {
  entries: number;
  files: number;
  bytes: number;
  skipped: number;
}

/** Reads of a plain local store's file: 1 MiB at a time. */
const CHUNK = 1 << 20;
const SMALL = 64 * 1024;

/**
 * A plain local store's file, read on this thread: per file, a thread-pool round trip for each
 * of open, fstat, read and close cost more than the reads themselves (50k files, 1 GB: 24 s).
 */
function* localContent(file: Buffer, e: Entry): Generator<Buffer> {
  let fd: number;
  try {
    fd = fs.openSync(file, OPEN_READ);
  } catch (err) {
    throw damaged(e, `cannot be read (${errnoCode(err) ?? String(err)})`, err);
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw damaged(e, 'is not a regular file in the store');
    if (st.size !== e.size) throw damaged(e, `has ${st.size} bytes where the impl says ${e.size}`);
    for (let pos = 0; pos < e.size; ) {
      const buf = Buffer.allocUnsafe(Math.min(CHUNK, e.size - pos));
      const n = fs.readSync(fd, buf, 0, buf.length, pos);
      if (n === 0) throw damaged(e, `has ${pos} bytes where the impl says ${e.size}`);
      pos += n;
      yield n === buf.length ? buf : buf.subarray(0, n);
    }
  } finally {
    fs.closeSync(fd);
  }
}

/** A stored file's content as it was backed up (decrypted, decompressed), checked for its size. */
async function* content(store: Store, p: Buffer, e: Entry): AsyncGenerator<Buffer> {
  if (store.localRoot && !store.crypt && e.z === undefined) {
    yield* localContent(Buffer.concat([Buffer.from(`${store.localRoot}/`), p]), e);
    return;
  }
  if (store.crypt && e.size <= SMALL) {
    const data = await store.crypt.readSmallPlain(p, e);
    if (data) {
      if (data.length !== e.size) throw damaged(e, `has ${data.length} bytes where the impl says ${e.size}`);
      yield data;
      return;
    }
  }
  let n = 0;
  for await (const c of (await openContent(store, p, e)) as AsyncIterable<Buffer>) {
    n += c.length;
    if (n > e.size) break;
    yield c;
  }
  if (n !== e.size) throw damaged(e, n > e.size ? `has more bytes than the ${e.size} the impl says` : `has ${n} bytes where the impl says ${e.size}`);
}

/**
 * A snapshot as a pax tar stream (docs/FORMAT.md, "Export"): every entry of its impl under its
 * snapshot path (data/www/...), with owners, modes, ns times, xattrs and ACLs; hard-link groups
 * as tar hard links; sockets left out (tar cannot hold them). With `since`, only what an
 * increment needs: every folder and special file (no content: their metadata) and the files and
 * symlinks whose content is new after that snapshot (their `since` history), hard links to them
 * included (a member added to an older group comes as a hard link to the group's first path, which
 * the older state has), and then `.bakker-removed`: the paths gone since (NUL-terminated), to delete after
 * extracting the increment over the older state.
 */
export async function* exportSnapshot(store: Store, snapshot: string, opts: { since?: string; sinceStore?: Store; counts?: ExportCounts } = {}): AsyncGenerator<Buffer> {
  const counts = opts.counts ?? { entries: 0, files: 0, bytes: 0, skipped: 0 };
  const reader = await ImplReader.open(store, implPath(snapshot));
  const tree = treePath(snapshot);
  // Each hard-link group's first path.
  const groups = new Map<number, Buffer>();
  try {
    for (let e = await reader.next(); e; e = await reader.next()) {
      if (!safeComponents(e.path)) throw new BakkerError('UNSAFE', `impl ${snapshot}.impl holds an unsafe path "${display(e.path)}": not exported`);
      if (e.type === 'socket') {
        counts.skipped++;
        continue;
      }
      const group = e.hardlink !== undefined ? groups.get(e.hardlink) : undefined;
      if (group) {
        // A later member: a hard link to the first, in this stream or (an increment) in the older state.
        counts.entries++;
        yield entryHeader(e, e.path, group);
        continue;
      }
      const isNew = e.type === 'dir' || opts.since === undefined || (e.type !== 'file' && e.type !== 'symlink') || (e.since !== undefined && compareSnapshotNames(e.since, opts.since) > 0);
      if (e.hardlink !== undefined) groups.set(e.hardlink, e.path);
      if (!isNew) continue;
      counts.entries++;
      yield entryHeader(e, e.path);
      if (e.type === 'file') {
        counts.files++;
        counts.bytes += e.size;
        yield* content(store, join(tree, e.path), e);
        yield contentPad(e.size);
      }
    }
    if (!reader.trailer) throw new BakkerError('IMPL', `impl ${snapshot}.impl has no trailer: it is truncated; the export is incomplete`);
  } finally {
    reader.close();
  }
  if (opts.since !== undefined) {
    // The paths gone since then, as the last member: NUL-terminated, in walk order.
    const removed: Buffer[] = [];
    await diffSnapshots(store, opts.since, snapshot, (change, a) => {
      if (change === 'removed') removed.push(a!.path, NUL);
    }, opts.sinceStore);
    const list = Buffer.concat(removed);
    const now = Math.floor(Date.now() / 1000);
    yield entryHeader({ path: REMOVED, type: 'file', size: list.length, mode: 0o600, uid: 0, gid: 0, mtime: `${now}.000000000`, ctime: `${now}.000000000` }, REMOVED);
    yield list;
    yield contentPad(list.length);
  }
  yield END;
}
