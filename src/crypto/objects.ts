import { createHmac, hkdfSync, randomBytes } from 'node:crypto';

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
