import { isUtf8 } from 'node:buffer';
import { BakkerError } from '../errors.js';
import { display } from '../util/bpath.js';
import type { Entry, EntryType } from './entry.js';
import { isNsTime, type NsTime } from './time.js';

/** Version of the impl and of the store layout. Bump on any incompatible change (docs/FORMAT.md). */
export const FORMAT_VERSION = 1;

export interface ImplHeader {
  bakker: 'impl';
  format: number;
  snapshot: string;
  host: string;
  job: string;
  sources: string[];
  start: string;
  previous: string | null;
  options: Record<string, unknown>;
  [k: string]: unknown;
}

export interface ImplTrailer {
  trailer: true;
  end: string;
  entries: number;
  summary: Record<string, number>;
  [k: string]: unknown;
}

const TYPES = new Set<EntryType>(['file', 'dir', 'symlink', 'fifo', 'socket', 'char', 'block']);

export function bytesIn(v: unknown, what: string, line: number): Buffer {
  if (typeof v === 'string') return Buffer.from(v, 'utf8');
  if (v && typeof v === 'object' && typeof (v as { b64?: unknown }).b64 === 'string') {
    return Buffer.from((v as { b64: string }).b64, 'base64');
  }
  throw implError(line, `${what} is neither a string nor {"b64": ...}`);
}

function implError(line: number, msg: string): BakkerError {
  return new BakkerError('IMPL', `impl line ${line}: ${msg}`);
}

const q = JSON.stringify;

function bytesJson(b: Buffer): string {
  return isUtf8(b) ? q(b.toString('utf8')) : `{"b64":"${b.toString('base64')}"}`;
}

function hasRareFields(e: Entry): boolean {
  return e.acl !== undefined || e.dacl !== undefined || e.aclNames !== undefined || (e.xattrs !== undefined && e.xattrs.size > 0) || e.sum !== undefined;
}

/** ACLs, xattrs and the checksum: the fields most entries lack, as a string. */
function rareFields(e: Entry): string {
  let s = '';
  if (e.acl !== undefined) s += `,"acl":${q(e.acl)}`;
  if (e.dacl !== undefined) s += `,"dacl":${q(e.dacl)}`;
  if (e.aclNames !== undefined) s += `,"aclNames":${q(e.aclNames)}`;
  if (e.xattrs !== undefined && e.xattrs.size > 0) {
    const x: Record<string, string> = {};
    for (const [k, v] of e.xattrs) x[k] = v.toString('base64');
    s += `,"xattrs":${q(x)}`;
  }
  if (e.sum !== undefined) s += `,"sum":${q(e.sum)}`;
  return s;
}

/** One impl line (without the newline). Built by hand: this runs once per entry per backup. */
export function encodeEntry(e: Entry): string {
  let s = `{"path":${bytesJson(e.path)},"type":"${e.type}","size":${e.size},"mode":"${e.mode.toString(8).padStart(4, '0')}","uid":${e.uid},"gid":${e.gid}`;
  if (e.user !== undefined) s += `,"user":${q(e.user)}`;
  if (e.group !== undefined) s += `,"group":${q(e.group)}`;
  s += `,"mtime":"${e.mtime}","ctime":"${e.ctime}"`;
  if (e.target !== undefined) s += `,"target":${bytesJson(e.target)}`;
  if (e.rdev !== undefined) s += `,"rdev":${e.rdev}`;
  if (e.hardlink !== undefined) s += `,"hardlink":${e.hardlink}`;
  if (hasRareFields(e)) s += rareFields(e);
  if (e.since !== undefined) s += `,"since":${q(e.since)}`;
  if (e.sparse) s += ',"sparse":true';
  if (e.changing) s += ',"changing":true';
  if (e.tag !== undefined) s += `,"tag":"${e.tag}"`;
  if (e.z !== undefined) s += `,"z":"${e.z}"`;
  return s + '}';
}

/**
 * Impl lines written straight as bytes into a growing buffer: what encodeEntry gives, byte for
 * byte (a test holds the two together), without the string it builds (~1 KB of garbage per
 * entry, then turned into bytes again: a quarter of what a full backup allocated).
 */
export class LineSink {
  buf: Buffer;
  pos = 0;
  /** JSON of the user and group names and `since` values seen (few, repeated on every line). */
  private readonly quoted = new Map<string, Buffer>();

  constructor(private readonly initial = 1 << 17) {
    this.buf = Buffer.allocUnsafeSlow(initial);
  }

  /** Buffers handed back (recycle), for the next take(). */
  private readonly spare: Buffer[] = [];

  /** The bytes so far; the sink goes on in another buffer (the caller has this one until it recycles it). */
  take(): Buffer {
    const out = this.buf.subarray(0, this.pos);
    this.buf = this.spare.pop() ?? Buffer.allocUnsafeSlow(this.initial);
    this.pos = 0;
    return out;
  }

  /** A buffer take() gave, no longer used by anyone: written into again (a few are kept). */
  recycle(b: Buffer): void {
    if (b.byteOffset === 0 && b.buffer.byteLength >= this.initial && this.spare.length < 2) this.spare.push(Buffer.from(b.buffer, 0, b.buffer.byteLength));
  }

  private room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const next = Buffer.allocUnsafeSlow(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  bytes(b: Buffer): this {
    this.room(b.length);
    this.pos += b.copy(this.buf, this.pos);
    return this;
  }

  byte(c: number): this {
    this.room(1);
    this.buf[this.pos++] = c;
    return this;
  }

  /** A string of ASCII (keys, types, times). */
  ascii(t: string): this {
    this.room(t.length);
    const b = this.buf;
    let p = this.pos;
    for (let i = 0; i < t.length; i++) b[p++] = t.charCodeAt(i);
    this.pos = p;
    return this;
  }

  /** A non-negative integer. */
  int(n: number): this {
    if (n < 10) return this.byte(48 + n);
    let digits = 1;
    for (let t = n; t >= 10; t = Math.floor(t / 10)) digits++;
    this.room(digits);
    const b = this.buf;
    let p = this.pos + digits;
    this.pos = p;
    for (let t = n; p > this.pos - digits; t = Math.floor(t / 10)) b[--p] = 48 + (t % 10);
    return this;
  }

  /** Any string, in UTF-8. */
  text(t: string): this {
    this.room(t.length * 3);
    this.pos += this.buf.write(t, this.pos, 'utf8');
    return this;
  }

  /** A string from a small set, its JSON kept. */
  known(s: string): this {
    let j = this.quoted.get(s);
    if (!j) {
      j = Buffer.from(q(s));
      if (this.quoted.size < 4096) this.quoted.set(s, j);
    }
    return this.bytes(j);
  }

  /** bytesJson(b): a JSON string when b is UTF-8, else {"b64": ...}. */
  path(b: Buffer): this {
    if (!isUtf8(b)) return this.ascii(`{"b64":"${b.toString('base64')}"}`);
    this.room(b.length * 6 + 2);
    const o = this.buf;
    let p = this.pos;
    o[p++] = 34;
    for (let i = 0; i < b.length; i++) {
      const c = b[i]!;
      if (c >= 0x20 && c !== 34 && c !== 92) o[p++] = c;
      else {
        o[p++] = 92;
        const short = ESCAPES[c];
        if (short !== undefined) o[p++] = short;
        else {
          o[p++] = 117; // \u00XX, lowercase hex, as JSON.stringify
          o[p++] = 48;
          o[p++] = 48;
          o[p++] = HEX[c >> 4]!;
          o[p++] = HEX[c & 15]!;
        }
      }
    }
    o[p++] = 34;
    this.pos = p;
    return this;
  }
}

const HEX = Buffer.from('0123456789abcdef');
/** The short escapes of JSON.stringify, by byte: \" \\ \b \t \n \f \r. */
const ESCAPES: (number | undefined)[] = [];
ESCAPES[34] = 34;
ESCAPES[92] = 92;
ESCAPES[8] = 98;
ESCAPES[9] = 116;
ESCAPES[10] = 110;
ESCAPES[12] = 102;
ESCAPES[13] = 114;

/** encodeEntry(e) + "\n", into `w`. */
export function encodeEntryTo(e: Entry, w: LineSink): void {
  w.ascii('{"path":').path(e.path).ascii(',"type":"').ascii(e.type).ascii('","size":').int(e.size).ascii(',"mode":"');
  const m = e.mode;
  if (m > 0o7777) w.ascii(m.toString(8));
  else w.byte(48 + ((m >> 9) & 7)).byte(48 + ((m >> 6) & 7)).byte(48 + ((m >> 3) & 7)).byte(48 + (m & 7));
  w.ascii('","uid":').int(e.uid).ascii(',"gid":').int(e.gid);
  if (e.user !== undefined) w.ascii(',"user":').known(e.user);
  if (e.group !== undefined) w.ascii(',"group":').known(e.group);
  w.ascii(',"mtime":"').ascii(e.mtime).ascii('","ctime":"').ascii(e.ctime).byte(34);
  if (e.target !== undefined) w.ascii(',"target":').path(e.target);
  if (e.rdev !== undefined) w.ascii(',"rdev":').int(e.rdev);
  if (e.hardlink !== undefined) w.ascii(',"hardlink":').int(e.hardlink);
  if (hasRareFields(e)) w.text(rareFields(e));
  if (e.since !== undefined) w.ascii(',"since":').known(e.since);
  if (e.sparse) w.ascii(',"sparse":true');
  if (e.changing) w.ascii(',"changing":true');
  if (e.tag !== undefined) w.ascii(',"tag":"').ascii(e.tag).byte(34);
  if (e.z !== undefined) w.ascii(',"z":"').ascii(e.z).byte(34);
  w.ascii('}\n');
}

function num(o: Record<string, unknown>, k: string, line: number): number {
  const v = o[k];
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw implError(line, `"${k}" must be a non-negative integer`);
  return v;
}

function ns(o: Record<string, unknown>, k: string, line: number): NsTime {
  const v = o[k];
  if (!isNsTime(v)) throw implError(line, `"${k}" must be "seconds.nanoseconds"`);
  return v;
}

function optStr(o: Record<string, unknown>, k: string, line: number): string | undefined {
  const v = o[k];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw implError(line, `"${k}" must be a string`);
  return v;
}

export function decodeEntry(o: Record<string, unknown>, line: number): Entry {
  const type = o.type as EntryType;
  if (!TYPES.has(type)) throw implError(line, `unknown type ${JSON.stringify(o.type)}`);
  const modeStr = o.mode;
  if (typeof modeStr !== 'string' || !/^[0-7]{1,5}$/.test(modeStr)) throw implError(line, '"mode" must be an octal string');
  const e: Entry = {
    path: bytesIn(o.path, 'path', line),
    type,
    size: num(o, 'size', line),
    mode: parseInt(modeStr, 8) & 0o7777,
    uid: num(o, 'uid', line),
    gid: num(o, 'gid', line),
    mtime: ns(o, 'mtime', line),
    ctime: ns(o, 'ctime', line),
  };
  const user = optStr(o, 'user', line);
  if (user !== undefined) e.user = user;
  const group = optStr(o, 'group', line);
  if (group !== undefined) e.group = group;
  if (o.target !== undefined) e.target = bytesIn(o.target, 'target', line);
  if (o.rdev !== undefined) e.rdev = num(o, 'rdev', line);
  if (o.hardlink !== undefined) e.hardlink = num(o, 'hardlink', line);
  const acl = optStr(o, 'acl', line);
  if (acl !== undefined) e.acl = acl;
  const dacl = optStr(o, 'dacl', line);
  if (dacl !== undefined) e.dacl = dacl;
  const aclNames = optStr(o, 'aclNames', line);
  if (aclNames !== undefined) e.aclNames = aclNames;
  if (o.xattrs !== undefined) {
    if (!o.xattrs || typeof o.xattrs !== 'object') throw implError(line, '"xattrs" must be an object');
    e.xattrs = new Map();
    for (const [k, v] of Object.entries(o.xattrs as Record<string, unknown>)) {
      if (typeof v !== 'string') throw implError(line, `xattr ${k} must be base64`);
      e.xattrs.set(k, Buffer.from(v, 'base64'));
    }
  }
  const sum = optStr(o, 'sum', line);
  if (sum !== undefined) e.sum = sum;
  const since = optStr(o, 'since', line);
  if (since !== undefined) e.since = since;
  if (o.sparse === true) e.sparse = true;
  if (o.changing === true) e.changing = true;
  if (o.tag !== undefined) {
    if (typeof o.tag !== 'string' || !/^[0-9a-f]{64}$/.test(o.tag)) throw implError(line, '"tag" must be 64 hex digits');
    e.tag = o.tag;
  }
  if (o.z !== undefined) {
    if (o.z !== 'zstd') throw implError(line, `unknown compression ${JSON.stringify(o.z)}`);
    e.z = 'zstd';
  }
  if (e.type === 'symlink' && e.target === undefined) throw implError(line, `symlink ${display(e.path)} has no target`);
  return e;
}

export type ImplLine =
  | { kind: 'header'; header: ImplHeader }
  | { kind: 'entry'; entry: Entry }
  | { kind: 'trailer'; trailer: ImplTrailer };

export type RawLine =
  | { kind: 'header'; header: ImplHeader }
  | { kind: 'record'; o: Record<string, unknown> }
  | { kind: 'trailer'; trailer: ImplTrailer };

export function decodeLine(text: string, line: number): ImplLine {
  const d = parseLine(text, line);
  return d.kind === 'record' ? { kind: 'entry', entry: decodeEntry(d.o, line) } : d;
}

/** Parses a line without decoding an entry record (see PrevRecord for the lazy use). */
export function parseLine(text: string, line: number): RawLine {
  let o: unknown;
  try {
    o = JSON.parse(text);
  } catch {
    throw implError(line, 'not valid JSON');
  }
  if (!o || typeof o !== 'object' || Array.isArray(o)) throw implError(line, 'not a JSON object');
  const rec = o as Record<string, unknown>;
  if (rec.bakker === 'impl') {
    if (typeof rec.format !== 'number') throw implError(line, 'header has no format version');
    if (rec.format > FORMAT_VERSION) {
      throw new BakkerError('STORE', `impl format ${rec.format} is newer than this bakker supports (${FORMAT_VERSION}): upgrade bakker`);
    }
    return { kind: 'header', header: rec as ImplHeader };
  }
  if (rec.trailer === true) return { kind: 'trailer', trailer: rec as ImplTrailer };
  return { kind: 'record', o: rec };
}
