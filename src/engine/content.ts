import { Readable } from 'node:stream';
import { BakkerError, errnoCode } from '../errors.js';
import type { Entry } from '../manifest/entry.js';
import type { Store } from '../store/store.js';
import { display } from '../util/bpath.js';
import { unzstd } from '../util/zstd.js';

/** A stored copy that is not what the impl says: `what` happened to it. */
export function damaged(e: Entry, what: string, cause?: unknown): BakkerError {
  return new BakkerError('IO', `stored copy of ${display(e.path)} ${what}: the store is damaged; run 'bakker verify'`, cause === undefined ? {} : { cause });
}

/**
 * The content of file entry `e` as it was backed up, from its stored copy at `p`: decrypted
 * (an encrypted store checks the object's tag too) and decompressed. A plain copy of the wrong
 * size is refused before it is read; the caller checks the length of what it reads.
 */
export async function openContent(store: Store, p: Buffer, e: Entry): Promise<Readable> {
  if (store.crypt) return store.crypt.openPlain(p, e);
  let opened: Awaited<ReturnType<Store['openRead']>>;
  try {
    opened = await store.openRead(p);
  } catch (err) {
    throw damaged(e, `cannot be read (${errnoCode(err) ?? String(err)})`, err);
  }
  if (e.z === 'zstd') return Readable.from(unzstd(opened.stream, `stored copy of ${display(e.path)}`));
  if (opened.size !== e.size) {
    opened.stream.destroy();
    throw damaged(e, `has ${opened.size} bytes where the impl says ${e.size}`);
  }
  return opened.stream;
}
