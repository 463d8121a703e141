import fs from 'node:fs';
import path from 'node:path';
import { native } from '../native.js';
import { typeOfMode, type Entry } from '../manifest/entry.js';
import { join, PathArena } from '../util/bpath.js';
import { F_DEV, F_ERRNO, F_FAST, F_PREV, F_REC, Scanner, SCAN_FIELDS, type FastArgs, type Listing } from './scanner.js';
import { fromBigNs, nsTime, type NsTime } from '../manifest/time.js';
import { aclNamesOf, aclToText, ACL_ACCESS, ACL_DEFAULT } from './acl.js';
import type { Matcher } from './exclude.js';
import { IdNames } from './ids.js';

/** A source as recorded (`path`, absolute) and where its bytes are read from (`readFrom`: a view's mount, or the path itself). */
export interface SourceSpec {
  path: string;
  readFrom?: string;
}

export interface WalkOptions {
  sources: SourceSpec[];
  exclude?: Matcher;
  oneFileSystem?: boolean;
  ids?: IdNames;
  /**
   * false: do not look for xattrs during the scan; entries come with `xattrsPending` and the
   * caller settles them with loadXattrs() or from the previous impl (an unchanged ctime means
   * unchanged xattrs and ACLs: setting them updates ctime).
   */
  probeXattrs?: boolean;
  /** Absolute directory paths (as latin1 strings) never descended into, such as the store itself. */
  skip?: Set<string>;
  /**
   * The fast path (docs/DESIGN.md, "Previous index"): each directory scan also makes the
   * directory in the new snapshot, links its unchanged files there and returns the directory's
   * index block. Those files come as 'fast' items, with no Entry; the others carry their
   * previous impl entry number (when `indexed`) and their record in the block. With `remote`
   * the scans only compare (a remote store's folders cannot be made from here): each 'fast'
   * run names its files for the caller to link, and folders are not `madeByScan`.
   */
  fast?: { args: FastArgs; indexed: boolean; remote?: boolean };
}

/** Unchanged files and symlinks of one directory, in walk order, already linked by the scan. */
export interface FastRun {
  kind: 'fast';
  block: Buffer;
  /** Each one's record offset in `block`. */
  recs: number[];
  /** Each one's entry number in the previous impl. */
  prev: number[];
  files: number;
  symlinks: number;
  /** Sizes of the files, and of the symlinks (their targets' lengths). */
  bytes: number;
  symlinkBytes: number;
  /** Remote fast path: the directory (relative and where it is read) and each one's name. */
  rel?: Buffer;
  abs?: Buffer;
  names?: Buffer[];
}

/** What the walk yields (in batches), in walk order (depth first, names sorted by bytes). */
export type WalkItem =
  | {
      kind: 'entry';
      entry: Entry;
      /** Where to read it. */
      abs: Buffer;
      dev: number;
      /** First member of this entry's hard-link group, when it is a later member. */
      linkTo?: Entry;
      /** xattrs and ACLs were not read (see WalkOptions.probeXattrs). */
      xattrsPending?: boolean;
      /** Fast path with an index: the entry number in the previous impl (-1: not there). */
      prevOrdinal?: number;
      /** Fast path: a folder the walk enters, whose scan makes it in the new snapshot. */
      madeByScan?: boolean;
      /** Fast path: this entry's record in its directory's index block. */
      block?: Buffer;
      rec?: number;
    }
  | FastRun
  /** Fast path: every child of directory `rel` has been yielded; `block` is its index block. */
  | { kind: 'dirEnd'; rel: Buffer; block: Buffer }
  | { kind: 'warning'; path: Buffer; message: string; unreadable: boolean };

interface Node {
  name: Buffer;
  source?: SourceSpec;
  children: Map<string, Node>;
}

function normalize(p: string): string {
  const n = path.posix.normalize(p);
  return n.length > 1 ? n.replace(/\/+$/, '') : n;
}

/** Builds the tree of sources: nested sources are dropped (the outer one covers them). */
function sourceTree(sources: SourceSpec[]): Node {
  const root: Node = { name: Buffer.alloc(0), children: new Map() };
  const sorted = [...sources].map((s) => ({ ...s, path: normalize(s.path) })).sort((a, b) => a.path.length - b.path.length);
  for (const s of sorted) {
    const parts = s.path.split('/').filter(Boolean);
    let node = root;
    let covered = false;
    for (const part of parts) {
      if (node.source) {
        covered = true;
        break;
      }
      let child = node.children.get(part);
      if (!child) {
        child = { name: Buffer.from(part), children: new Map() };
        node.children.set(part, child);
      }
      node = child;
    }
    if (!covered && !node.source) {
      if (parts.length === 0) node.source = s; // "/" itself
      else {
        node.source = s;
        node.children.clear();
      }
    }
  }
  return root;
}

const byName = (a: Node, b: Node) => Buffer.compare(a.name, b.name);

/** A directory being walked: its entries, where its subdirectories are among them, how far the walk got. */
interface DirFrame {
  rel: Buffer;
  items: WalkItem[];
  /** Positions in `items` of the subdirectories the walk descends into. */
  subdirs: number[];
  block: Buffer | undefined;
  /** The next subdirectory (index into `subdirs`). */
  next: number;
  /** The first item not handed out yet. */
  start: number;
}

/** Subdirectory scans started ahead of the walk within one directory. */
const PREFETCH = 8;
const ENOENT = 2;

interface StatLike {
  mode: number;
  uid: number;
  gid: number;
  size: number;
  blocks: number;
  ino: number;
  dev: number;
  nlink: number;
  rdev: number;
  mtime: NsTime;
  ctime: NsTime;
}

function unpooled(b: Buffer): Buffer {
  const out = Buffer.allocUnsafeSlow(b.length);
  b.copy(out);
  return out;
}



function fromBigStats(st: fs.BigIntStats): StatLike {
  return {
    mode: Number(st.mode),
    uid: Number(st.uid),
    gid: Number(st.gid),
    size: Number(st.size),
    blocks: Number(st.blocks),
    ino: Number(st.ino),
    dev: Number(st.dev),
    nlink: Number(st.nlink),
    rdev: Number(st.rdev),
    mtime: fromBigNs(st.mtimeNs),
    ctime: fromBigNs(st.ctimeNs),
  };
}

/**
 * The sorted walk. Each directory is listed and lstat'ed in one native call on the thread pool
 * (docs/PERFORMANCE.md), ahead of need. Memory: one directory's entries per level, a few
 * prefetched listings, and the first member of each hard-link group.
 */
export async function* walk(opts: WalkOptions): AsyncGenerator<WalkItem[]> {
  const ids = opts.ids ?? new IdNames();
  const groups = new Map<string, Entry>();
  let nextGroup = 1;

  function makeEntry(rel: Buffer, abs: Buffer, st: StatLike): WalkItem & { kind: 'entry' } {
    const modeNum = st.mode;
    const type = typeOfMode(modeNum) ?? 'file';
    const uid = st.uid;
    const gid = st.gid;
    const e: Entry = {
      path: rel,
      type,
      size: type === 'file' || type === 'symlink' ? st.size : 0,
      mode: modeNum & 0o7777,
      uid,
      gid,
      mtime: st.mtime,
      ctime: st.ctime,
    };
    const user = ids.user(uid);
    if (user !== undefined) e.user = user;
    const group = ids.group(gid);
    if (group !== undefined) e.group = group;
    if (type === 'char' || type === 'block') e.rdev = st.rdev;
    if (type === 'file' && st.blocks * 512 < st.size) e.sparse = true;
    const item: WalkItem & { kind: 'entry' } = { kind: 'entry', entry: e, abs, dev: st.dev };
    if (type !== 'dir' && st.nlink > 1) {
      const key = `${st.dev}:${st.ino}`;
      const first = groups.get(key);
      if (first) {
        e.hardlink = first.hardlink!;
        item.linkTo = first;
      } else {
        e.hardlink = nextGroup++;
        e.path = unpooled(e.path); // held until the walk ends: must not pin a pool slab
        groups.set(key, e);
      }
    }
    return item;
  }

  /** Yields the entry at `abs` (a source or an ancestor of one), after any warning about it. */
  function* entryAt(rel: Buffer, abs: Buffer, followIfNotDir: boolean): Generator<WalkItem> {
    let st: fs.BigIntStats | undefined;
    try {
      st = fs.lstatSync(abs, { bigint: true, throwIfNoEntry: false });
      if (st && followIfNotDir && !st.isDirectory()) st = fs.statSync(abs, { bigint: true });
    } catch (err) {
      yield { kind: 'warning', path: rel, message: `cannot stat: ${(err as Error).message}`, unreadable: true };
      return;
    }
    if (!st) return; // vanished: nothing to back up
    const r = finish(makeEntry(rel, abs, fromBigStats(st)), true);
    if (r.warning) yield r.warning;
    if (r.item) yield r.item;
  }

  /** Adds what lstat does not give: a symlink's target, xattrs and ACLs. */
  function finish(item: WalkItem & { kind: 'entry' }, xattrs: boolean): { item?: WalkItem & { kind: 'entry' }; warning?: WalkItem } {
    const rel = item.entry.path;
    const abs = item.abs;
    if (item.entry.type === 'symlink') {
      try {
        item.entry.target = fs.readlinkSync(abs, { encoding: 'buffer' });
      } catch (err) {
        return { warning: { kind: 'warning', path: rel, message: `cannot read link: ${(err as Error).message}`, unreadable: true } };
      }
    }
    if (!xattrs) return { item };
    try {
      const xs = native.getXattrs(abs);
      if (xs) addXattrs(item.entry, xs);
    } catch (err) {
      return { item, warning: { kind: 'warning', path: rel, message: `cannot read xattrs: ${(err as Error).message}`, unreadable: true } };
    }
    return { item };
  }

  /** Whether the walk descends into the directory `rel` (the same rule for the scanner's look-ahead). */
  const descends = (rel: Buffer, dev: number, rootDev: number): boolean => {
    const key = '/' + rel.toString('latin1');
    if (opts.exclude && opts.exclude.excluded(key, true)) return false;
    if (opts.skip?.has(key)) return false;
    return !opts.oneFileSystem || dev === rootDev;
  };
  const scanner = new Scanner(opts.probeXattrs !== false, descends, opts.fast?.args);
  const indexed = opts.fast?.indexed === true;
  const remote = opts.fast?.remote === true;

  /**
   * Walks one directory whose scan is under way. Yields its entries in batches (a batch ends
   * where the walk descends), so the caller pays no promise per entry. Scans of upcoming
   * subdirectories are started ahead (PREFETCH at a time) so the thread pool lists and
   * lstat's them while the caller works.
   */
  async function* walkDir(rel: Buffer, abs: Buffer, rootDev: number, listing: Promise<Listing>): AsyncGenerator<WalkItem[]> {
    // Depth first with a stack of open directories, not a generator per directory: a batch
    // handed up through one generator per level cost a promise and a result object per level.
    const stack: DirFrame[] = [];
    let opened: DirFrame | { warning: WalkItem } | null = await openDir(rel, abs, rootDev, listing);
    for (;;) {
      if (opened) {
        if ('warning' in opened) yield [opened.warning];
        else {
          stack.push(opened);
          for (let k = 0; k < PREFETCH; k++) prefetch(opened, k, rootDev);
        }
        opened = null;
      }
      const f = stack[stack.length - 1];
      if (!f) return;
      const k = f.next++;
      const idx = f.subdirs[k];
      if (idx === undefined) {
        // Done with this folder: the rest of its entries, and its end.
        const rest = f.start < f.items.length ? f.items.slice(f.start) : [];
        if (f.block) rest.push({ kind: 'dirEnd', rel: f.rel, block: f.block });
        stack.pop();
        if (rest.length > 0) yield rest;
        continue;
      }
      yield f.items.slice(f.start, idx + 1);
      f.start = idx + 1;
      prefetch(f, k + PREFETCH, rootDev);
      const dir = f.items[idx] as WalkItem & { kind: 'entry' };
      opened = await openDir(dir.entry.path, dir.abs, rootDev, scanner.take(dir.abs, dir.entry.path));
    }
  }

  function prefetch(f: DirFrame, k: number, rootDev: number): void {
    const idx = f.subdirs[k];
    if (idx === undefined) return;
    const dir = f.items[idx] as WalkItem & { kind: 'entry' };
    scanner.start(dir.abs, dir.entry.path, rootDev);
  }

  /** A directory's entries, from its scan: a frame for walkDir's stack, or the warning that it could not be listed. */
  async function openDir(rel: Buffer, abs: Buffer, rootDev: number, listing: Promise<Listing>): Promise<DirFrame | { warning: WalkItem }> {
    let names: Buffer;
    let stats: Float64Array;
    let block: Buffer | undefined;
    try {
      [names, stats, block] = await listing;
    } catch (err) {
      // A fast-path scan that could not make the folder in the new snapshot: a store failure.
      if ((err as NodeJS.ErrnoException).syscall === 'mkdir') throw err;
      return { warning: { kind: 'warning', path: rel, message: `cannot list directory: ${(err as Error).message}`, unreadable: true } };
    }
    const items: WalkItem[] = [];
    const subdirs: number[] = [];
    let run: FastRun | null = null;
    let off = 0;
    const count = stats.length / SCAN_FIELDS;
    // The children's paths, relative and absolute, in two buffers of this directory's own
    // (made when the first child needs one: most of an unchanged tree needs none).
    let rels: PathArena | null = null;
    let abss: PathArena | null = null;
    for (let o = 0; o < stats.length; o += SCAN_FIELDS) {
      const end = names.indexOf(0, off);
      const name = names.subarray(off, end);
      off = end + 1;
      if (block && stats[o + F_FAST] === 1) {
        // Unchanged and already linked by the scan: no Entry, no path (docs/DESIGN.md).
        run ??= remote ? { kind: 'fast', block, recs: [], prev: [], files: 0, symlinks: 0, bytes: 0, symlinkBytes: 0, rel, abs, names: [] } : { kind: 'fast', block, recs: [], prev: [], files: 0, symlinks: 0, bytes: 0, symlinkBytes: 0 };
        run.names?.push(name);
        run.recs.push(stats[o + F_REC]!);
        run.prev.push(stats[o + F_PREV]!);
        if ((stats[o]! & 0o170000) === 0o120000) {
          run.symlinks++;
          run.symlinkBytes += stats[o + 3]!;
        } else {
          run.files++;
          run.bytes += stats[o + 3]!;
        }
        continue;
      }
      if (run) {
        items.push(run);
        run = null;
      }
      rels ??= new PathArena(rel, count, names.length);
      const childRel = rels.join(rel, name);
      const statErrno = stats[o + F_ERRNO]!;
      if (statErrno !== 0) {
        if (statErrno !== ENOENT) items.push({ kind: 'warning', path: childRel, message: `cannot stat: errno ${statErrno}`, unreadable: true });
        continue;
      }
      const mode = stats[o]!;
      const isDir = (mode & 0o170000) === 0o040000;
      if ((opts.exclude && opts.exclude.excluded('/' + childRel.toString('latin1'), isDir)) || (isDir && opts.skip?.has('/' + childRel.toString('latin1')))) {
        if (isDir) scanner.drop(join(abs, name));
        continue;
      }
      const st: StatLike = {
        mode,
        uid: stats[o + 1]!,
        gid: stats[o + 2]!,
        size: stats[o + 3]!,
        blocks: stats[o + 4]!,
        ino: stats[o + 5]!,
        dev: stats[o + F_DEV]!,
        nlink: stats[o + 7]!,
        rdev: stats[o + 8]!,
        mtime: nsTime(stats[o + 9]!, stats[o + 10]!),
        ctime: nsTime(stats[o + 11]!, stats[o + 12]!),
      };
      const probe = stats[o + 13]!;
      abss ??= new PathArena(abs, count, names.length);
      const r = finish(makeEntry(childRel, abss.join(abs, name), st), probe !== 0 && probe !== -2);
      if (r.warning) items.push(r.warning);
      if (!r.item) continue;
      if (probe === -2) r.item.xattrsPending = true;
      if (block) {
        r.item.block = block;
        r.item.rec = stats[o + F_REC]!;
        if (indexed) r.item.prevOrdinal = stats[o + F_PREV]!;
      }
      items.push(r.item);
      if (isDir && (!opts.oneFileSystem || r.item.dev === rootDev)) {
        subdirs.push(items.length - 1);
        if (block && !remote) r.item.madeByScan = true;
      }
      else if (isDir) scanner.drop(r.item.abs);
    }
    if (run) items.push(run);
    return { rel, items, subdirs, block, next: 0, start: 0 };
  }

  async function* walkNode(node: Node, rel: Buffer): AsyncGenerator<WalkItem[]> {
    if (node.source) {
      const readFrom = Buffer.from(node.source.readFrom ?? node.source.path);
      let dev = 0;
      if (rel.length > 0) {
        const got = [...entryAt(rel, readFrom, false)];
        const item = got.find((g) => g.kind === 'entry');
        if (!item) {
          yield [...got, { kind: 'warning', path: rel, message: 'source does not exist', unreadable: true }];
          return;
        }
        yield got;
        if (item.entry.type !== 'dir') return;
        dev = item.dev;
      } else dev = fs.statSync(readFrom).dev;
      yield* walkDir(rel, readFrom, dev, scanner.take(readFrom, rel));
      return;
    }
    for (const child of [...node.children.values()].sort(byName)) {
      const childRel = join(rel, child.name);
      if (!child.source) {
        // An ancestor of a source: recorded (so restore recreates it with its metadata) but not walked.
        const got = [...entryAt(childRel, Buffer.from('/' + childRel.toString('latin1'), 'latin1'), true)];
        if (!got.some((g) => g.kind === 'entry')) {
          if (got.length) yield got;
          continue;
        }
        yield got;
      }
      yield* walkNode(child, childRel);
    }
  }

  yield* walkNode(sourceTree(opts.sources), Buffer.alloc(0));
}

/** Reads the xattrs and ACLs of an entry whose scan skipped them; a warning text on failure. */
export function loadXattrs(e: Entry, abs: Buffer): string | undefined {
  try {
    const xs = native.getXattrs(abs);
    if (xs) addXattrs(e, xs);
    return undefined;
  } catch (err) {
    return `cannot read xattrs: ${(err as Error).message}`;
  }
}

/** Takes xattrs and ACLs from the previous record of an entry whose ctime did not change. */
export function inheritXattrs(e: Entry, prev: Entry): void {
  if (prev.acl !== undefined) e.acl = prev.acl;
  if (prev.dacl !== undefined) e.dacl = prev.dacl;
  if (prev.aclNames !== undefined) e.aclNames = prev.aclNames;
  if (prev.xattrs !== undefined) e.xattrs = prev.xattrs;
}

function addXattrs(e: Entry, xs: (string | Buffer)[]): void {
  for (let i = 0; i + 1 < xs.length; i += 2) {
    const name = xs[i] as string;
    const value = xs[i + 1] as Buffer;
    if (name === ACL_ACCESS || name === ACL_DEFAULT) {
      const text = aclToText(value);
      if (text !== null) {
        if (name === ACL_ACCESS) e.acl = text;
        else e.dacl = text;
        continue;
      }
    }
    (e.xattrs ??= new Map()).set(name, value);
  }
  if (e.acl !== undefined || e.dacl !== undefined) {
    const names = aclNamesOf([e.acl, e.dacl], (aclIds ??= new IdNames()));
    if (names !== undefined) e.aclNames = names;
  }
}

/** Names for ACL qualifiers (rare: only entries with extended ACLs ask). */
let aclIds: IdNames | undefined;
