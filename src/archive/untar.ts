import { BakkerError } from '../errors.js';
import type { Entry, EntryType } from '../manifest/entry.js';

/**
 * A streaming reader of the pax tar streams bakker writes (archive/pax.ts), also reading plain
 * ustar and GNU long-name members. Each member comes as an impl-like Entry (path without a
 * leading "./" or trailing "/", ns mtime, ids and names, SCHILY xattrs and ACLs) and, for a
 * regular file, its content as a stream that must be read (or skipped) before the next member.
 */

const BLOCK = 512;

export interface Member {
  entry: Entry;
  /** A hard link: the earlier member's path. */
  linkTo?: Buffer;
  /** A file's content (entry.size bytes); consumed by the reader when the caller leaves it. */
  content: AsyncGenerator<Buffer>;
}

const TYPES: Record<string, EntryType> = { '0': 'file', '\0': 'file', '7': 'file', '2': 'symlink', '3': 'char', '4': 'block', '5': 'dir', '6': 'fifo' };

function bad(what: string, why: string): BakkerError {
  return new BakkerError('IMPL', `${what} is not a valid tar stream: ${why}`);
}

/** Pulls exact byte counts out of a chunked stream. */
class Bytes {
  private buf: Buffer = Buffer.alloc(0);
  private done = false;
  constructor(private readonly it: AsyncIterator<Buffer>) {}

  private async fill(n: number): Promise<boolean> {
    const parts = [this.buf];
    let have = this.buf.length;
    while (have < n && !this.done) {
      const r = await this.it.next();
      if (r.done) this.done = true;
      else {
        parts.push(r.value);
        have += r.value.length;
      }
    }
    this.buf = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
    return this.buf.length >= n;
  }

  /** Exactly n bytes, or null at a clean end (nothing left). */
  async read(n: number, what: string): Promise<Buffer | null> {
    if (!(await this.fill(n))) {
      if (this.buf.length === 0) return null;
      throw bad(what, 'it ends inside a member');
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  /** Reads the source to its end (what follows the end-of-archive blocks is not looked at). */
  async drain(): Promise<void> {
    this.buf = Buffer.alloc(0);
    while (!this.done) if ((await this.it.next()).done) this.done = true;
  }

  /** n bytes as they come (no copy into one buffer). */
  async *stream(n: number, what: string): AsyncGenerator<Buffer> {
    while (n > 0) {
      if (this.buf.length === 0 && !(await this.fill(1))) throw bad(what, 'it ends inside a file');
      const take = Math.min(n, this.buf.length);
      const out = this.buf.subarray(0, take);
      this.buf = this.buf.subarray(take);
      n -= take;
      yield out;
    }
  }
}

function cstr(b: Buffer, start: number, len: number): Buffer {
  const f = b.subarray(start, start + len);
  const z = f.indexOf(0);
  return z < 0 ? Buffer.from(f) : Buffer.from(f.subarray(0, z));
}

/** A numeric header field: octal text, or GNU base-256 (high bit set). */
function num(b: Buffer, start: number, len: number, what: string): number {
  if (b[start]! & 0x80) {
    let v = b[start]! & 0x7f;
    for (let i = 1; i < len; i++) v = v * 256 + b[start + i]!;
    return v;
  }
  const t = b.toString('latin1', start, start + len).replace(/[\0 ]+$/, '').replace(/^ +/, '');
  if (t === '') return 0;
  if (!/^[0-7]+$/.test(t)) throw bad(what, `a header field holds "${t}" where an octal number belongs`);
  return parseInt(t, 8);
}

/** pax records ("LEN key=value\n") into a map of raw values. */
function paxRecords(data: Buffer, what: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  let at = 0;
  while (at < data.length) {
    if (data[at] === 0) break;
    const sp = data.indexOf(0x20, at);
    const len = sp > at ? Number(data.toString('latin1', at, sp)) : NaN;
    if (!Number.isInteger(len) || len <= 0 || at + len > data.length || data[at + len - 1] !== 0x0a) throw bad(what, 'a pax header record is malformed');
    const rec = data.subarray(sp + 1, at + len - 1);
    const eq = rec.indexOf(0x3d);
    if (eq <= 0) throw bad(what, 'a pax header record has no key');
    out.set(rec.toString('utf8', 0, eq), Buffer.from(rec.subarray(eq + 1)));
    at += len;
  }
  return out;
}

/** "sec[.frac]" as the impl's "sec.nnnnnnnnn". */
function nsTime(t: string, what: string): string {
  const m = /^(-?\d+)(?:\.(\d+))?$/.exec(t);
  if (!m) throw bad(what, `a time "${t}" is not a number`);
  return `${m[1]}.${(m[2] ?? '').slice(0, 9).padEnd(9, '0')}`;
}

function stripPath(p: Buffer): Buffer {
  let s = 0;
  let e = p.length;
  while (e - s >= 2 && p[s] === 0x2e && p[s + 1] === 0x2f) s += 2; // "./"
  while (e > s && p[e - 1] === 0x2f) e--;
  return Buffer.from(p.subarray(s, e));
}

/** The members of a tar stream, in order. `what` names the stream in errors. */
export async function* readTar(source: AsyncIterable<Buffer>, what: string): AsyncGenerator<Member> {
  const r = new Bytes(source[Symbol.asyncIterator]());
  let pax = new Map<string, Buffer>();
  let longName: Buffer | undefined;
  let longLink: Buffer | undefined;
  const padOf = (n: number) => (BLOCK - (n % BLOCK)) % BLOCK;
  for (;;) {
    const h = await r.read(BLOCK, what);
    if (!h) throw bad(what, 'it has no end-of-archive blocks (truncated?)');
    if (h.every((b) => b === 0)) {
      // The end. The source is read to its end all the same, so a decryption or checksum layer under it sees all of it.
      await r.drain();
      return;
    }
    let sum = 0;
    for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : h[i]!;
    if (sum !== num(h, 148, 8, what)) throw bad(what, 'a header block fails its checksum');
    const flag = String.fromCharCode(h[156]!);
    let size = num(h, 124, 12, what);
    if (flag === 'x' || flag === 'g' || flag === 'L' || flag === 'K') {
      const data = (await r.read(size + padOf(size), what))!.subarray(0, size);
      if (flag === 'x') pax = paxRecords(data, what);
      else if (flag === 'L') longName = cstr(data, 0, data.length);
      else if (flag === 'K') longLink = cstr(data, 0, data.length);
      continue;
    }
    const ustar = h.toString('latin1', 257, 262) === 'ustar';
    const prefix = ustar ? cstr(h, 345, 155) : Buffer.alloc(0);
    const rawName = pax.get('path') ?? longName ?? (prefix.length ? Buffer.concat([prefix, Buffer.from('/'), cstr(h, 0, 100)]) : cstr(h, 0, 100));
    const link = pax.get('linkpath') ?? longLink ?? cstr(h, 157, 100);
    if (pax.has('size')) size = Number(pax.get('size')!.toString());
    if (!Number.isSafeInteger(size) || size < 0) throw bad(what, 'a member has a bad size');
    const type = flag === '1' ? 'file' : TYPES[flag];
    const str = (k: string) => pax.get(k)?.toString('utf8');
    const major = num(h, 329, 8, what);
    const minor = num(h, 337, 8, what);
    const entry: Entry = {
      path: stripPath(rawName),
      type: type ?? 'file',
      size: flag === '1' ? 0 : size,
      mode: num(h, 100, 8, what) & 0o7777,
      uid: pax.has('uid') ? Number(str('uid')) : num(h, 108, 8, what),
      gid: pax.has('gid') ? Number(str('gid')) : num(h, 116, 8, what),
      mtime: nsTime(str('mtime') ?? String(num(h, 136, 12, what)), what),
      ctime: '0.000000000',
    };
    const uname = str('uname') ?? (ustar ? cstr(h, 265, 32).toString('utf8') : '');
    const gname = str('gname') ?? (ustar ? cstr(h, 297, 32).toString('utf8') : '');
    if (uname) entry.user = uname;
    if (gname) entry.group = gname;
    if (type === 'symlink') entry.target = link;
    if (type === 'char' || type === 'block') entry.rdev = (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & ~0xff) << 12);
    for (const [k, v] of pax) {
      if (k === 'SCHILY.acl.access') entry.acl = v.toString('utf8');
      else if (k === 'SCHILY.acl.default') entry.dacl = v.toString('utf8');
      else if (k.startsWith('SCHILY.xattr.')) (entry.xattrs ??= new Map()).set(k.slice('SCHILY.xattr.'.length), v);
    }
    pax = new Map();
    longName = longLink = undefined;
    if (!type && flag !== '1') throw bad(what, `member "${entry.path.toString('utf8')}" has the tar type "${flag}", which bakker does not write`);
    const body = flag === '0' || flag === '\0' || flag === '7' ? size : 0;
    if (size > 0 && body === 0) throw bad(what, `member "${entry.path.toString('utf8')}" of type "${flag}" carries data`);
    let consumed = body === 0;
    const content = (async function* () {
      if (consumed) return;
      consumed = true;
      yield* r.stream(body, what);
      await r.read(padOf(body), what);
    })();
    const m: Member = { entry, content };
    if (flag === '1') m.linkTo = stripPath(link);
    yield m;
    if (!consumed) for await (const _ of content) void _; // the caller left it: skip it
  }
}
