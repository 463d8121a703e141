import type { Entry } from '../manifest/entry.js';

/**
 * A POSIX pax tar writer (IEEE 1003.1-2001 "pax" interchange format, as GNU tar and bsdtar read
 * it). Every entry gets a pax extended header holding what ustar fields cannot: the whole path
 * and link target (any length, any bytes, as GNU tar reads them), the mtime in nanoseconds, ids and
 * names, and xattrs and ACLs in the SCHILY.* keys GNU tar uses (`tar --xattrs --acls -x`).
 */

const BLOCK = 512;
const ZERO_BLOCK = Buffer.alloc(BLOCK);

const TYPEFLAG: Record<Entry['type'], string> = { file: '0', dir: '5', symlink: '2', fifo: '6', char: '3', block: '4', socket: '0' };

/** One pax record: "LEN key=value\n", LEN counting itself. */
function record(key: string, value: Buffer | string): Buffer {
  const v = typeof value === 'string' ? Buffer.from(value) : value;
  const rest = 1 + Buffer.byteLength(key) + 1 + v.length + 1; // " key=value\n"
  let len = rest + String(rest).length;
  if (String(len).length !== String(rest).length) len = rest + String(len).length;
  return Buffer.concat([Buffer.from(`${len} ${key}=`), v, Buffer.from('\n')]);
}

function octal(n: number, width: number): string {
  return n.toString(8).padStart(width - 1, '0') + '\0';
}

/** A ustar header block; fields too long for it are in the pax header before it. */
function ustar(name: Buffer, mode: number, uid: number, gid: number, size: number, mtime: number, type: string, link: Buffer, uname: string, gname: string, rdev = 0): Buffer {
  const h = Buffer.alloc(BLOCK);
  name.copy(h, 0, 0, Math.min(name.length, 100));
  h.write(octal(mode & 0o7777, 8), 100, 'latin1');
  h.write(octal(Math.min(uid, 0o7777777), 8), 108, 'latin1');
  h.write(octal(Math.min(gid, 0o7777777), 8), 116, 'latin1');
  h.write(octal(Math.min(size, 0o77777777777), 12), 124, 'latin1');
  h.write(octal(Math.max(0, Math.min(mtime, 0o77777777777)), 12), 136, 'latin1');
  h.write('        ', 148, 'latin1'); // checksum field counts as spaces
  h.write(type, 156, 'latin1');
  link.copy(h, 157, 0, Math.min(link.length, 100));
  h.write('ustar\0', 257, 'latin1');
  h.write('00', 263, 'latin1');
  h.write(uname.slice(0, 31), 265, 'utf8');
  h.write(gname.slice(0, 31), 297, 'utf8');
  h.write(octal((rdev >> 8) & 0xfff, 8), 329, 'latin1');
  h.write(octal((rdev & 0xff) | ((rdev >> 12) & 0xfff00), 8), 337, 'latin1');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(octal(sum, 7) + ' ', 148, 'latin1');
  return h;
}

function pad(n: number): Buffer {
  const r = n % BLOCK;
  return r === 0 ? Buffer.alloc(0) : ZERO_BLOCK.subarray(0, BLOCK - r);
}

/**
 * The header blocks of one entry (pax header, then ustar header). `linkTo` makes a hard link to
 * an earlier member; `size` is the content's size for a file (0 for anything else).
 */
export function entryHeader(e: Entry, name: Buffer, linkTo?: Buffer): Buffer {
  const [sec] = e.mtime.split('.');
  const type = linkTo ? '1' : TYPEFLAG[e.type];
  const size = type === '0' ? e.size : 0;
  const recs: Buffer[] = [record('path', e.type === 'dir' ? Buffer.concat([name, Buffer.from('/')]) : name), record('mtime', e.mtime), record('uid', String(e.uid)), record('gid', String(e.gid)), record('size', String(size))];
  if (e.user !== undefined) recs.push(record('uname', e.user));
  if (e.group !== undefined) recs.push(record('gname', e.group));
  if (linkTo) recs.push(record('linkpath', linkTo));
  else if (e.type === 'symlink') recs.push(record('linkpath', e.target!));
  if (!linkTo) {
    if (e.acl !== undefined) recs.push(record('SCHILY.acl.access', e.acl));
    if (e.dacl !== undefined) recs.push(record('SCHILY.acl.default', e.dacl));
    for (const [k, v] of e.xattrs ?? []) recs.push(record(`SCHILY.xattr.${k}`, v));
  }
  const body = Buffer.concat(recs);
  const paxName = Buffer.from('./PaxHeaders/x');
  const out = [ustar(paxName, 0o644, 0, 0, body.length, Number(sec), 'x', Buffer.alloc(0), '', ''), body, pad(body.length)];
  const mode = e.mode;
  out.push(ustar(name, mode, e.uid, e.gid, size, Number(sec), type, linkTo ?? (e.type === 'symlink' ? e.target! : Buffer.alloc(0)), e.user ?? '', e.group ?? '', e.rdev ?? 0));
  return Buffer.concat(out);
}

/** The padding after `size` bytes of content. */
export const contentPad = pad;

/** The end of an archive: two zero blocks. */
export const END = Buffer.alloc(2 * BLOCK);
