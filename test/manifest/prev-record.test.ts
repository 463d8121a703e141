import { test } from 'node:test';
import assert from 'node:assert/strict';
import { encodeEntry } from '../../src/manifest/codec.js';
import type { Entry } from '../../src/manifest/entry.js';
import { PrevRecord, reuseInfo, sameLine } from '../../src/manifest/prev-record.js';

const f: Entry = { path: Buffer.from('a'), type: 'file', size: 10, mode: 0o644, uid: 1, gid: 1, mtime: '100.000000000', ctime: '100.000000000', since: 'S1' };

/** The previous impl's record for `e`, as the backup reads it. */
function rec(e: Entry): PrevRecord {
  const line = encodeEntry(e);
  return new PrevRecord(JSON.parse(line) as Record<string, unknown>, Buffer.from(line), 2);
}

const canReuse = (prev: Entry | undefined, cur: Entry) => reuseInfo(prev ? rec(prev) : undefined, cur) !== null;

test('reuse only when type, size, mtime ns, mode and owner match', () => {
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
  assert.deepEqual(reuseInfo(rec({ ...f, sum: 'md5:ab' }), f), { since: 'S1', sum: 'md5:ab' });
});

test('a record with malformed fields is never reused', () => {
  const line = encodeEntry(f);
  const o = JSON.parse(line) as Record<string, unknown>;
  for (const bad of [{ since: 5 }, { sum: {} }, { mode: 420 }]) {
    assert.equal(reuseInfo(new PrevRecord({ ...o, ...bad }, Buffer.from(line), 2), f), null, JSON.stringify(bad));
  }
});

test('the previous line is written again only when it describes the entry exactly', () => {
  assert.equal(sameLine(rec(f), { ...f }), true);
  assert.equal(sameLine(rec(f), { ...f, ctime: '101.000000000' }), false, 'xattrs may have changed');
  assert.equal(sameLine(rec(f), { ...f, user: 'alice' }), false);
  assert.equal(sameLine(rec({ ...f, hardlink: 1 }), { ...f, hardlink: 1 }), false, 'group numbers depend on walk order');
  assert.equal(sameLine(rec(f), { ...f, sparse: true }), false);
});
