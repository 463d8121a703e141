import { BakkerError, errMessage } from '../errors.js';
import { native } from '../native.js';

/** Compressed files are cut into zstd frames of this much content (each compressed on its own). */
export const ZSTD_CHUNK = 1 << 20;

/** Whether compressing is worth it: at least 1/16 and 64 bytes smaller. */
function shrinks(packed: number, plain: number): boolean {
  return packed <= plain - Math.max(64, plain >> 4);
}

/** `data` as one zstd frame when that is worth it (see shrinks), else null; on this thread, for small files. */
export function packSync(data: Buffer, level: number): Buffer | null {
  const c = native.zstdCompressSync(data, level);
  return shrinks(c.length, data.length) ? c : null;
}

/** The same on the thread pool: a file's first frame, which decides whether the file is compressed. */
export async function pack(data: Buffer, level: number): Promise<Buffer | null> {
  const c = await native.zstdCompress(data, level);
  return shrinks(c.length, data.length) ? c : null;
}

/** zstd frames back into their content (the frames as bakker writes them: each with its content size). */
export async function* unzstd(source: AsyncIterable<Buffer>, what: string): AsyncGenerator<Buffer> {
  const parts: Buffer[] = [];
  let held = 0;
  let tried = 0;
  const damaged = (why: string) => new BakkerError('VERIFY', `${what} is damaged: its zstd data ${why}`);
  const frames = function* (final: boolean): Generator<Buffer> {
    // A frame's end is known only once all of it is here: look again every 256 KiB, and at the end.
    if (!final && held - tried < 256 * 1024) return;
    let buf = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
    parts.length = 0;
    for (;;) {
      let f: [number, number] | null;
      try {
        f = buf.length ? native.zstdFrame(buf) : null;
      } catch (err) {
        throw damaged(errMessage(err));
      }
      if (!f) break;
      try {
        yield native.zstdDecompressSync(buf.subarray(0, f[0]), f[1]);
      } catch (err) {
        throw damaged(errMessage(err));
      }
      buf = buf.subarray(f[0]);
    }
    if (buf.length) parts.push(buf);
    held = tried = buf.length;
  };
  for await (const c of source) {
    parts.push(c);
    held += c.length;
    yield* frames(false);
  }
  yield* frames(true);
  if (held > 0) throw damaged('ends inside a frame');
}

/** Frames being compressed at once by zstdStream: the thread pool's cores stay busy while the stream is read. */
const IN_FLIGHT = 4;

/**
 * A stream compressed as a standard zstd stream: frames of ZSTD_CHUNK of content, compressed on
 * the thread pool, up to IN_FLIGHT at a time, yielded in order (memory: a few MiB).
 */
export async function* zstdStream(source: AsyncIterable<Buffer>, level: number): AsyncGenerator<Buffer> {
  let parts: Buffer[] = [];
  let held = 0;
  const queue: Promise<Buffer>[] = [];
  const send = (b: Buffer) => {
    const p = native.zstdCompress(b, level);
    p.catch(() => undefined); // awaited in order below
    queue.push(p);
  };
  for await (const c of source) {
    parts.push(c);
    held += c.length;
    while (held >= ZSTD_CHUNK) {
      const all = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
      send(all.subarray(0, ZSTD_CHUNK));
      const rest = all.subarray(ZSTD_CHUNK);
      parts = rest.length ? [rest] : [];
      held = rest.length;
    }
    while (queue.length >= IN_FLIGHT) yield await queue.shift()!;
  }
  if (held > 0) send(parts.length === 1 ? parts[0]! : Buffer.concat(parts));
  while (queue.length) yield await queue.shift()!;
}
