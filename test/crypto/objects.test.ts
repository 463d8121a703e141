import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { objectName, objectTag, storeKeys } from '../../src/crypto/objects.js';

/* Object names and tags of encrypted stores: stable per store, unlinkable across stores, no path in them. */

test('object names: the same path has the same name in a store (hard links by name), another in another store', () => {
  const k = storeKeys();
  const again = storeKeys(k.master);
  const p = Buffer.from('data/www/index.html');
  assert.equal(objectName(k, p), objectName(again, p));
  assert.match(objectName(k, p), /^[0-9a-f]{2}\/[0-9a-f]{62}$/);
  assert.notEqual(objectName(storeKeys(), p), objectName(k, p));
  assert.notEqual(objectName(k, Buffer.from('data/www/index.htm')), objectName(k, p));
  const odd = Buffer.concat([Buffer.from('odd-'), Buffer.from([0xff]), Buffer.from(' name')]);
  assert.match(objectName(k, odd), /^[0-9a-f]{2}\//, 'any bytes');
  // 10k paths spread over the 256 shards
  const shards = new Set(Array.from({ length: 10_000 }, (_, i) => objectName(k, Buffer.from(`f${i}`)).slice(0, 2)));
  assert.equal(shards.size, 256);
  assert.throws(() => storeKeys(randomBytes(16)), /32 bytes/);
});

test('object tags: any change, truncation or swap of the stored bytes changes the tag', () => {
  const k = storeKeys();
  const tag = (...parts: Buffer[]) => {
    const t = objectTag(k);
    for (const p of parts) t.update(p);
    return t.digest();
  };
  const a = randomBytes(100_000);
  const b = randomBytes(100_000);
  assert.equal(tag(a), tag(a.subarray(0, 40_000), a.subarray(40_000)), 'chunking does not matter');
  const flipped = Buffer.from(a);
  flipped[500] = flipped[500]! ^ 1;
  assert.notEqual(tag(flipped), tag(a));
  assert.notEqual(tag(a.subarray(0, a.length - 1)), tag(a));
  assert.notEqual(tag(b), tag(a));
  assert.notEqual(objectTag(storeKeys()).digest(), objectTag(k).digest(), 'keyed per store');
});
