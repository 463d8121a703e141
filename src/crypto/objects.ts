import { createHmac, hkdfSync, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { BakkerError } from '../errors.js';
import type { Store } from '../store/store.js';
import { decrypt, encrypt, type Identity } from './age.js';

/**
 * Names and integrity tags of the objects of an encrypted store (docs/DESIGN.md, "Encryption"):
 * an object's name is a keyed hash of its path, the same in every snapshot (so an unchanged file
 * is a hard link by name), sharded in 256 folders; its tag is a keyed hash of its ciphertext,
 * recorded in the (encrypted) impl, so a modified, truncated or swapped object is found. Both keys
 * come from one random store key.
 */
export interface StoreKeys {
  /** The random 32 bytes they come from (kept in the impl header and the agent's state). */
  master: Buffer;
  names: Buffer;
  tags: Buffer;
}

export function storeKeys(master: Buffer = randomBytes(32)): StoreKeys {
  if (master.length !== 32) throw new Error('internal: a store key is 32 bytes');
  const derive = (info: string) => Buffer.from(hkdfSync('sha256', master, Buffer.alloc(0), info, 32));
  return { master, names: derive('bakker object names v1'), tags: derive('bakker object tags v1') };
}

/** The object name of `path` (bytes, relative to the snapshot): "ab/cdef..." (2 + 62 hex digits). */
export function objectName(keys: StoreKeys, path: Buffer): string {
  const h = createHmac('sha256', keys.names).update(path).digest('hex');
  return `${h.slice(0, 2)}/${h.slice(2)}`;
}

/** A running tag of an object's stored bytes: update with each chunk, then digest. */
export function objectTag(keys: StoreKeys): { update(b: Buffer): void; digest(): string } {
  const h = createHmac('sha256', keys.tags);
  return { update: (b) => void h.update(b), digest: () => h.digest('hex') };
}

/**
 * Stores the file `src` as an age object at `dest` on `store` (written by temp + rename, so a
 * half-written object never has the name), encrypted for `recipients`; returns its tag.
 */
export async function putObject(store: Store, dest: Buffer, src: string | Buffer, recipients: Buffer[], keys: StoreKeys): Promise<string> {
  const tag = objectTag(keys);
  const fsMod = await import('node:fs');
  async function* tagged(): AsyncGenerator<Buffer> {
    for await (const chunk of encrypt(fsMod.createReadStream(src) as AsyncIterable<Buffer>, recipients)) {
      tag.update(chunk);
      yield chunk;
    }
  }
  await store.writeFile(dest, Readable.from(tagged()));
  return tag.digest();
}

/**
 * The plaintext of the object at `p`, checked against `tag` as it is read (a mismatch, like any
 * damage age finds, rejects with the object named).
 */
export async function* getObject(store: Store, p: Buffer, identities: Identity[], keys: StoreKeys, tag: string): AsyncGenerator<Buffer> {
  const { stream } = await store.openRead(p);
  const t = objectTag(keys);
  async function* tagged(): AsyncGenerator<Buffer> {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      t.update(chunk);
      yield chunk;
    }
    if (t.digest() !== tag) throw new BakkerError('VERIFY', `stored object ${p.toString()} is not the one the impl names (its tag differs): it was modified, truncated or swapped`);
  }
  try {
    yield* decrypt(tagged(), identities);
  } catch (err) {
    if (err instanceof BakkerError && err.code === 'VERIFY') throw err;
    throw new BakkerError('VERIFY', `stored object ${p.toString()} is damaged: ${(err as Error).message}`, { cause: err });
  }
}
