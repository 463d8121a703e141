import fs from 'node:fs';
import type { Hasher } from './hash.js';

const CHUNK = 256 * 1024;
const HOLE_BLOCK = 4096;
const ZERO = Buffer.alloc(HOLE_BLOCK);

/**
 * Copies fd `src` to its end (positional reads, so the caller's offset is untouched) into fd
 * `dst`. When `sparse`, all-zero 4 KiB blocks are skipped so they stay holes, and the file is
 * extended to the bytes read at the end. Returns the bytes read (the source may have changed
 * meanwhile; the caller re-checks with fstat).
 */
export async function copyFd(src: number, dst: number, sparse: boolean, hasher?: Hasher): Promise<number> {
  const buf = Buffer.allocUnsafe(CHUNK);
  let pos = 0;
  for (;;) {
    const n = await readAt(src, buf, pos);
    if (n === 0) break;
    const chunk = buf.subarray(0, n);
    hasher?.update(chunk);
    if (sparse) await writeSkippingZeros(dst, chunk, pos);
    else await writeAll(dst, chunk, pos);
    pos += n;
  }
  if (sparse) await new Promise<void>((res, rej) => fs.ftruncate(dst, pos, (e) => (e ? rej(e) : res())));
  return pos;
}

function readAt(fd: number, buf: Buffer, pos: number): Promise<number> {
  return new Promise((res, rej) => fs.read(fd, buf, 0, buf.length, pos, (e, n) => (e ? rej(e) : res(n))));
}

async function writeAll(fd: number, chunk: Buffer, pos: number): Promise<void> {
  let off = 0;
  while (off < chunk.length) {
    const n = await new Promise<number>((res, rej) =>
      fs.write(fd, chunk, off, chunk.length - off, pos + off, (e, w) => (e ? rej(e) : res(w))),
    );
    off += n;
  }
}

async function writeSkippingZeros(fd: number, chunk: Buffer, pos: number): Promise<void> {
  let runStart = -1;
  for (let off = 0; off < chunk.length; off += HOLE_BLOCK) {
    const end = Math.min(off + HOLE_BLOCK, chunk.length);
    const zero = end - off === HOLE_BLOCK ? chunk.subarray(off, end).equals(ZERO) : isZero(chunk.subarray(off, end));
    if (zero) {
      if (runStart >= 0) await writeAll(fd, chunk.subarray(runStart, off), pos + runStart);
      runStart = -1;
    } else if (runStart < 0) runStart = off;
  }
  if (runStart >= 0) await writeAll(fd, chunk.subarray(runStart), pos + runStart);
}

function isZero(b: Buffer): boolean {
  for (const x of b) if (x !== 0) return false;
  return true;
}
