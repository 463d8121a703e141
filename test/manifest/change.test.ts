import { test } from 'node:test';
import assert from 'node:assert/strict';
import { classify } from '../../src/manifest/change.js';
import type { Entry } from '../../src/manifest/entry.js';

const f: Entry = { path: Buffer.from('a'), type: 'file', size: 10, mode: 0o644, uid: 1, gid: 1, mtime: '100.000000000', ctime: '100.000000000', since: 'S1' };

test('classify separates content from metadata changes', () => {
  assert.equal(classify(undefined, f), 'added');
  assert.equal(classify(f, undefined), 'removed');
  assert.equal(classify(f, { ...f }), 'same');
  assert.equal(classify(f, { ...f, since: 'S2' }), 'content');
  assert.equal(classify(f, { ...f, mode: 0o600, since: 'S2' }), 'content');
  assert.equal(classify(f, { ...f, acl: 'user::rw-' }), 'meta');
  assert.equal(classify(f, { ...f, uid: 0 }), 'meta');
});
