import { createHash } from 'node:crypto';
import { blake3 } from '@noble/hashes/blake3.js';

export type HashAlgo = 'md5' | 'sha256' | 'blake3';
export const HASH_ALGOS: readonly HashAlgo[] = ['md5', 'sha256', 'blake3'];

export interface Hasher {
  update(b: Uint8Array): void;
  /** "<algo>:<hex>", the form the impl stores. */
  digest(): string;
}

export function createHasher(algo: HashAlgo): Hasher {
  if (algo === 'blake3') {
    const h = blake3.create();
    return { update: (b) => void h.update(b), digest: () => `blake3:${Buffer.from(h.digest()).toString('hex')}` };
  }
  const h = createHash(algo);
  return { update: (b) => void h.update(b), digest: () => `${algo}:${h.digest('hex')}` };
}

export function algoOfSum(sum: string): HashAlgo | undefined {
  const a = sum.slice(0, sum.indexOf(':'));
  return (HASH_ALGOS as readonly string[]).includes(a) ? (a as HashAlgo) : undefined;
}
