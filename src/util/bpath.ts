import { isUtf8 } from 'node:buffer';

/**
 * Paths inside a snapshot are Buffers ("rel paths"): '/'-separated, no leading '/', any bytes
 * but NUL. Node strings cannot carry names that are not valid UTF-8, so every path that came
 * from a filesystem stays a Buffer until it is shown to a person.
 */
export type RelPath = Buffer;

const SLASH = 0x2f;
export const EMPTY: Buffer = Buffer.alloc(0);

export function join(a: Buffer, b: Buffer | string): Buffer {
  const bb = typeof b === 'string' ? Buffer.from(b) : b;
  if (a.length === 0) return bb;
  if (bb.length === 0) return a;
  const out = Buffer.allocUnsafe(a.length + 1 + bb.length);
  a.copy(out, 0);
  out[a.length] = SLASH;
  bb.copy(out, a.length + 1);
  return out;
}

/**
 * Joined paths carved from one buffer of their own: a small Buffer from Node's pool pins a whole
 * shared 8 KiB slab for as long as it is held, and the paths of entries waiting in the backup's
 * queue (each from a different slab) pinned 2-3 MB that way. A directory's children share one
 * arena, so what they hold is about their own size.
 */
export class PathArena {
  private readonly buf: Buffer;
  private at = 0;

  /** Room for `count` joins of `a` with names totalling `nameBytes`. */
  constructor(a: Buffer, count: number, nameBytes: number) {
    this.buf = Buffer.allocUnsafeSlow(Math.max(1, count * (a.length + 1) + nameBytes));
  }

  join(a: Buffer, b: Buffer): Buffer {
    const len = a.length === 0 ? b.length : a.length + 1 + b.length;
    if (this.at + len > this.buf.length) return join(a, b); // more than was asked for: the pool
    const start = this.at;
    if (a.length > 0) {
      a.copy(this.buf, this.at);
      this.buf[this.at + a.length] = SLASH;
      this.at += a.length + 1;
    }
    b.copy(this.buf, this.at);
    this.at += b.length;
    return this.buf.subarray(start, this.at);
  }
}

export function parent(p: Buffer): Buffer {
  const i = p.lastIndexOf(SLASH);
  return i < 0 ? EMPTY : p.subarray(0, i);
}

export function basename(p: Buffer): Buffer {
  const i = p.lastIndexOf(SLASH);
  return i < 0 ? p : p.subarray(i + 1);
}

/**
 * Walk order: depth first, siblings sorted by bytes. Equal to comparing the component lists,
 * which is a byte comparison where '/' sorts below every other byte.
 */
export function comparePaths(a: Buffer, b: Buffer): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a[i]!;
    const y = b[i]!;
    if (x !== y) return (x === SLASH ? 0 : x) - (y === SLASH ? 0 : y);
  }
  return a.length - b.length;
}

/** True when `p` equals `dir` or lies below it. */
export function isWithin(p: Buffer, dir: Buffer): boolean {
  if (dir.length === 0) return true;
  if (p.length < dir.length) return false;
  if (p.compare(dir, 0, dir.length, 0, dir.length) !== 0) return false;
  return p.length === dir.length || p[dir.length] === SLASH;
}

/** A path for people: UTF-8 where valid, otherwise with \xNN escapes. Never parsed back. */
export function display(p: Buffer): string {
  if (isUtf8(p)) return p.toString('utf8');
  let s = '';
  for (const byte of p) s += byte < 0x80 ? String.fromCharCode(byte) : `\\x${byte.toString(16).padStart(2, '0')}`;
  return s;
}

/** Splits a rel path into components; returns null when any component is empty, '.' or '..'. */
export function safeComponents(p: Buffer): Buffer[] | null {
  if (p.length === 0 || p.includes(0)) return null;
  const parts: Buffer[] = [];
  let start = 0;
  for (let i = 0; i <= p.length; i++) {
    if (i === p.length || p[i] === SLASH) {
      const c = p.subarray(start, i);
      if (c.length === 0 || (c.length === 1 && c[0] === 0x2e) || (c.length === 2 && c[0] === 0x2e && c[1] === 0x2e)) return null;
      parts.push(c);
      start = i + 1;
    }
  }
  return parts;
}

export function absJoin(root: string, rel: Buffer): Buffer {
  return rel.length === 0 ? Buffer.from(root) : join(Buffer.from(root), rel);
}
