import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { BakkerError, errnoCode } from '../errors.js';
import { TYPE_MODE, type Entry } from '../manifest/entry.js';
import { native } from '../native.js';
import { applyMeta, type MetaContext } from '../engine/restore/apply-meta.js';
import { writeStream } from '../engine/restore/write-stream.js';
import { display, EMPTY, isWithin, join, parent, safeComponents } from '../util/bpath.js';
import { REMOVED } from './export.js';
import type { Member } from './untar.js';

const { O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW } = fs.constants;

export interface ExtractCounts {
  entries: number;
  files: number;
  bytes: number;
  removed: number;
}

function unsafe(what: string, msg: string): BakkerError {
  return new BakkerError('UNSAFE', `${what}: ${msg}; nothing is written outside the target`);
}

/**
 * Extracts one bakker archive stream (a full, or an increment over what earlier ones left) into
 * `root`, which holds only what this restore wrote. The same rules as `bakker restore`: every
 * member path must be relative without '.', '..' or empty parts, and must come after its parent
 * folder's member (bakker writes members in walk order, every folder included), so its parent is
 * a real folder this restore made or checked, never a symlink. Each member is written under a
 * fresh name (O_EXCL|O_NOFOLLOW) and renamed over whatever was there (an increment's new type of
 * entry replaces the old one, a folder included). Hard links must point at a path reached through
 * real folders. Folder metadata is put back last. `.bakker-removed` lists paths to delete after.
 */
export async function extractArchive(members: AsyncIterable<Member>, root: Buffer, ctx: MetaContext, what: string, counts: ExtractCounts): Promise<void> {
  const stack: Buffer[] = [];
  const dirs: Entry[] = [];
  const abs = (p: Buffer) => join(root, p);
  let removed: Buffer | null = null;
  for await (const m of members) {
    const e = m.entry;
    if (e.path.equals(REMOVED) && e.type === 'file' && !m.linkTo) {
      const parts: Buffer[] = [];
      for await (const c of m.content) parts.push(Buffer.from(c));
      removed = Buffer.concat(parts);
      continue;
    }
    if (!safeComponents(e.path)) throw unsafe(what, `member "${display(e.path)}" is not a safe relative path`);
    const par = parent(e.path);
    while (stack.length > 0 && !isWithin(par, stack[stack.length - 1]!)) stack.pop();
    const top = stack.length > 0 ? stack[stack.length - 1]! : EMPTY;
    if (!top.equals(par)) throw unsafe(what, `member "${display(e.path)}" comes without its folder before it (not a bakker archive in walk order)`);
    counts.entries++;
    if (e.type === 'dir') {
      await makeDir(abs(e.path));
      stack.push(e.path);
      dirs.push(e);
      continue;
    }
    const dest = abs(e.path);
    const tmp = join(parent(dest), `.bakker-restore-${randomBytes(6).toString('hex')}`);
    try {
      if (m.linkTo) {
        const from = await checkLinkSource(root, m.linkTo, what);
        const there = await fsp.lstat(dest).catch(() => null);
        // Already this link (an increment's member of an older group): a rename onto the same inode would leave the new name.
        if (there && there.ino === from.ino && there.dev === from.dev) continue;
        await fsp.link(abs(m.linkTo), tmp);
      } else if (e.type === 'file') {
        counts.files++;
        counts.bytes += e.size;
        const fh = await fsp.open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600);
        let n: number;
        try {
          n = await writeStream(Readable.from(m.content), fh.fd, false, e.size);
        } finally {
          await fh.close();
        }
        if (n !== e.size) throw new BakkerError('VERIFY', `${what}: member "${display(e.path)}" holds ${n} bytes where its header says ${e.size}`);
        applyMeta(tmp, e, ctx);
      } else if (e.type === 'symlink') {
        await fsp.symlink(e.target!, tmp);
        applyMeta(tmp, e, ctx);
      } else {
        native.mknod(tmp, TYPE_MODE[e.type] | (e.mode & 0o7777), e.rdev ?? 0);
        applyMeta(tmp, e, ctx);
      }
      await replace(tmp, dest);
    } catch (err) {
      await fsp.rm(tmp, { force: true }).catch(() => undefined);
      throw err;
    }
  }
  // Removals first: deleting an entry changes its folder's mtime, which the folder's record then sets.
  if (removed) counts.removed += await removePaths(root, removed, what);
  for (let i = dirs.length - 1; i >= 0; i--) applyMeta(abs(dirs[i]!.path), dirs[i]!, ctx);
}

/** mkdir; an existing folder is kept, anything else at that path (an older entry's type) is replaced. */
async function makeDir(p: Buffer): Promise<void> {
  try {
    await fsp.mkdir(p, { mode: 0o700 });
    return;
  } catch (err) {
    if (errnoCode(err) !== 'EEXIST') throw err;
  }
  const st = await fsp.lstat(p);
  if (st.isDirectory()) return;
  await fsp.unlink(p);
  await fsp.mkdir(p, { mode: 0o700 });
}

/** rename over `dest`; a folder there (the older type of this path) is removed first. */
async function replace(tmp: Buffer, dest: Buffer): Promise<void> {
  try {
    await fsp.rename(tmp, dest);
  } catch (err) {
    const code = errnoCode(err);
    if (code !== 'EISDIR' && code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err;
    await fsp.rm(dest, { recursive: true, force: true });
    await fsp.rename(tmp, dest);
  }
}

/** Whether every folder on the way to `rel` under root is a real folder (no symlink); the entry itself is lstat'ed. */
async function throughRealDirs(root: Buffer, rel: Buffer): Promise<fs.Stats | null> {
  const parts = safeComponents(rel);
  if (!parts) return null;
  let p = root;
  for (let i = 0; i < parts.length; i++) {
    p = join(p, parts[i]!);
    let st: fs.Stats;
    try {
      st = await fsp.lstat(p);
    } catch (err) {
      const code = errnoCode(err);
      if (code === 'ENOENT' || code === 'ENOTDIR') return null;
      throw err;
    }
    if (i === parts.length - 1) return st;
    if (!st.isDirectory()) return null;
  }
  return null;
}

async function checkLinkSource(root: Buffer, rel: Buffer, what: string): Promise<fs.Stats> {
  const st = await throughRealDirs(root, rel);
  if (!st || st.isDirectory()) throw unsafe(what, `a hard link points at "${display(rel)}", which is not an entry restored here`);
  return st;
}

/** Deletes the NUL-terminated paths of `.bakker-removed` that are still there (never through a symlink). */
async function removePaths(root: Buffer, list: Buffer, what: string): Promise<number> {
  let n = 0;
  let at = 0;
  while (at < list.length) {
    const z = list.indexOf(0, at);
    const rel = list.subarray(at, z < 0 ? list.length : z);
    at = z < 0 ? list.length : z + 1;
    if (rel.length === 0) continue;
    if (!safeComponents(rel)) throw unsafe(what, `.bakker-removed lists "${display(rel)}", which is not a safe relative path`);
    const st = await throughRealDirs(root, rel);
    if (!st) continue; // gone already (with its folder, or its folder is now another type)
    await fsp.rm(join(root, rel), { recursive: st.isDirectory(), force: true });
    n++;
  }
  return n;
}
