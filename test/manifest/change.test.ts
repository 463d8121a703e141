import { test } from 'node:test';
import assert from 'node:assert/strict';
import { canReuse, classify } from '../../src/manifest/change.js';
import type { Entry } from '../../src/manifest/entry.js';

const f: Entry = { path: Buffer.from('a'), type: 'file', size: 10, mode: 0o644, uid: 1, gid: 1, mtime: '100.000000000', ctime: '100.000000000', since: 'S1' };

test('canReuse: only when type, size, mtime ns, mode and owner match', () => {
  const table: [Partial<Entry>, boolean][] = [
    [{}, true],
    [{ ctime: '999.000000000', acl: 'user::rw-', xattrs: new Map([['user.a', Buffer.from('x')]]) }, true],
    [{ size: 11 }, false],
    [{ mtime: '100.000000001' }, false],
    [{ mode: 0o600 }, false],
    [{ uid: 2 }, false],
    [{ gid: 2 }, false],
    [{ type: 'dir' }, false],
  ];
  for (const [change, want] of table) assert.equal(canReuse(f, { ...f, ...change }), want, JSON.stringify(Object.keys(change)));
  assert.equal(canReuse(undefined, f), false);
  assert.equal(canReuse({ ...f, changing: true }, f), false);
  const l: Entry = { ...f, type: 'symlink', target: Buffer.from('x') };
  assert.equal(canReuse(l, { ...l, target: Buffer.from('y') }), false);
  assert.equal(canReuse(l, { ...l }), true);
});

test('classify separates content from metadata changes', () => {
  assert.equal(classify(undefined, f), 'added');
  assert.equal(classify(f, undefined), 'removed');
  assert.equal(classify(f, { ...f }), 'same');
  assert.equal(classify(f, { ...f, since: 'S2' }), 'content');
  assert.equal(classify(f, { ...f, mode: 0o600, since: 'S2' }), 'content');
  assert.equal(classify(f, { ...f, acl: 'user::rw-' }), 'meta');
  assert.equal(classify(f, { ...f, uid: 0 }), 'meta');
});
