import { createHash } from 'node:crypto';

type Blake3 = typeof import('@noble/hashes/blake3.js').blake3;
let blake3: Blake3 | undefined;

/** Loads what an algorithm needs (blake3's module costs memory; it is loaded only when used). */
export async function loadHash(algo: HashAlgo | undefined): Promise<void> {
  if (algo === 'blake3' && !blake3) blake3 = (await import('@noble/hashes/blake3.js')).blake3;
}

export type HashAlgo = 'md5' | 'sha256' | 'blake3';
export const HASH_ALGOS: readonly HashAlgo[] = ['md5', 'sha256', 'blake3'];

export interface Hasher {
  update(b: Uint8Array): void;
  /** "<algo>:<hex>", the form the impl stores. */
  digest(): string;
}

export function createHasher(algo: HashAlgo): Hasher {
  if (algo === 'blake3') {
    if (!blake3) throw new Error('internal: loadHash("blake3") was not called');
    const h = blake3.create();
    return { update: (b) => void h.update(b), digest: () => `blake3:${Buffer.from(h.digest()).toString('hex')}` };
  }
  const h = createHash(algo);
  return { update: (b) => void h.update(b), digest: () => `${algo}:${h.digest('hex')}` };
}

/** The sum of everything `stream` yields, in the form the impl stores. */
export async function hashStream(stream: AsyncIterable<unknown>, algo: HashAlgo): Promise<string> {
  const h = createHasher(algo);
  for await (const chunk of stream) h.update(chunk as Buffer);
  return h.digest();
}

export function algoOfSum(sum: string): HashAlgo | undefined {
  const a = sum.slice(0, sum.indexOf(':'));
  return (HASH_ALGOS as readonly string[]).includes(a) ? (a as HashAlgo) : undefined;
}
