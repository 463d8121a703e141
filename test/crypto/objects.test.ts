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

test('objects on a store: what putObject stores, age decrypts; getObject refuses a modified, truncated or swapped object, naming it', async () => {
  const { LocalStore } = await import('../../src/store/local/local-store.js');
  const { generateIdentity, parseIdentities, parseRecipient } = await import('../../src/crypto/age.js');
  const { putObject, getObject } = await import('../../src/crypto/objects.js');
  const fs = await import('node:fs');
  const path = await import('node:path');
  const { rmrf, sh, tempDir } = await import('../helpers/tree.js');
  const work = tempDir();
  try {
    const store = new LocalStore(path.join(work, 'store'));
    fs.mkdirSync(path.join(work, 'store', 'ab'), { recursive: true });
    const k = storeKeys();
    const { identity, recipient } = generateIdentity();
    const ids = parseIdentities(identity, 'id');
    fs.writeFileSync(path.join(work, 'id'), identity + '\n');
    const files = ['one', 'two'].map((n) => {
      const f = path.join(work, n);
      fs.writeFileSync(f, randomBytes(150_000));
      return f;
    });
    const names = files.map((f) => Buffer.from(`ab/${path.basename(f)}`));
    const tags = [] as string[];
    for (const [i, f] of files.entries()) tags.push(await putObject(store, names[i]!, f, [parseRecipient(recipient)], k));
    const stored = (i: number) => path.join(work, 'store', names[i]!.toString());
    assert.ok(Buffer.from(sh('age', ['-d', '-i', path.join(work, 'id'), stored(0)]), 'latin1').length > 0);
    const plain = sh('bash', ['-c', `age -d -i ${path.join(work, 'id')} ${stored(0)} | cmp - ${files[0]} && echo same`]).trim();
    assert.equal(plain, 'same', 'the age CLI opens a stored object');
    const read = async (i: number, tag = tags[i]!) => {
      const parts: Buffer[] = [];
      for await (const c of getObject(store, names[i]!, ids, k, tag)) parts.push(c);
      return Buffer.concat(parts);
    };
    assert.ok((await read(0)).equals(fs.readFileSync(files[0]!)));
    // swapped: object two's bytes under object one's name
    const one = fs.readFileSync(stored(0));
    fs.copyFileSync(stored(1), stored(0));
    await assert.rejects(read(0), /stored object ab\/one is not the one the impl names \(its tag differs\)/);
    // truncated
    fs.writeFileSync(stored(0), one.subarray(0, one.length - 10));
    await assert.rejects(read(0), /stored object ab\/one is (damaged|not the one)/);
    // one bit flipped
    const flipped = Buffer.from(one);
    flipped[flipped.length - 5_000] = flipped[flipped.length - 5_000]! ^ 1;
    fs.writeFileSync(stored(0), flipped);
    await assert.rejects(read(0), /stored object ab\/one is (damaged|not the one)/);
    fs.writeFileSync(stored(0), one);
    assert.ok((await read(0)).equals(fs.readFileSync(files[0]!)), 'put back, it reads again');
  } finally {
    rmrf(work);
  }
});
