import fs from 'node:fs';
import type { Readable } from 'node:stream';
import type { Hasher } from '../../util/hash.js';

const BLOCK = 4096;
const ZERO = Buffer.alloc(BLOCK);

function writeAt(fd: number, b: Buffer, pos: number): Promise<void> {
  return new Promise((res, rej) => {
    const step = (off: number) =>
      fs.write(fd, b, off, b.length - off, pos + off, (err, n) => {
        if (err) rej(err);
        else if (off + n < b.length) step(off + n);
        else res();
      });
    step(0);
  });
}

/**
 * Writes a stream to fd at positions from 0. When `sparse`, all-zero 4 KiB blocks (aligned to
 * the file) are skipped, and the file is extended to `size`, so holes stay holes.
 */
/** Resolves to the bytes the stream held. */
export async function writeStream(stream: Readable, fd: number, sparse: boolean, size: number, hasher?: Hasher): Promise<number> {
  let pos = 0;
  let carry: Buffer | null = null;
  for await (const chunk0 of stream) {
    let chunk = chunk0 as Buffer;
    hasher?.update(chunk);
    if (!sparse) {
      await writeAt(fd, chunk, pos);
      pos += chunk.length;
      continue;
    }
    if (carry) {
      chunk = Buffer.concat([carry, chunk]);
      carry = null;
    }
    const whole = chunk.length - (chunk.length % BLOCK);
    for (let off = 0; off < whole; off += BLOCK) {
      const block = chunk.subarray(off, off + BLOCK);
      if (!block.equals(ZERO)) await writeAt(fd, block, pos);
      pos += BLOCK;
    }
    if (whole < chunk.length) carry = Buffer.from(chunk.subarray(whole));
  }
  if (carry) {
    await writeAt(fd, carry, pos);
    pos += carry.length;
  }
  if (sparse) await new Promise<void>((res, rej) => fs.ftruncate(fd, Math.max(pos, size), (e) => (e ? rej(e) : res())));
  return pos;
}
