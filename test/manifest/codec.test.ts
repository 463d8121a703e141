import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeLine, encodeEntry } from '../../src/manifest/codec.js';
import type { Entry } from '../../src/manifest/entry.js';

const base: Entry = { path: Buffer.from('data/a'), type: 'file', size: 3, mode: 0o4755, uid: 1000, gid: 100, mtime: '1714000000.123456789', ctime: '1714000001.000000001' };

test('entries round-trip exactly, including odd names, targets and xattrs', () => {
  const cases: Entry[] = [
    base,
    { ...base, path: Buffer.from('data/new\nline and -dash'), user: 'alice', group: 'users', since: '2026_11_29_01', sum: 'sha256:ab' },
    { ...base, path: Buffer.concat([Buffer.from('data/caf'), Buffer.from([0xe9, 0xff])]), sparse: true, hardlink: 4 },
    { ...base, type: 'symlink', target: Buffer.from([0x2e, 0x2e, 0x2f, 0xfe]), size: 4 },
    { ...base, type: 'char', size: 0, rdev: 259, mode: 0o600 },
    { ...base, acl: 'user::rw-,user:1000:r--,group::r--,mask::r--,other::---', dacl: 'user::rwx,group::r-x,other::---', xattrs: new Map([['user.x', Buffer.from([0, 1, 2])], ['security.selinux', Buffer.from('system_u:object_r:etc_t:s0\0')]]) },
    { ...base, mtime: '-5.000000000', changing: true },
  ];
  cases.forEach((e, i) => {
    const line = encodeEntry(e);
    assert.ok(!line.includes('\n'), 'one record is one line');
    const d = decodeLine(line, i + 2);
    assert.equal(d.kind, 'entry');
    assert.deepEqual(d.kind === 'entry' ? d.entry : null, e);
  });
});

test('corrupt records are refused with their line number', () => {
  assert.throws(() => decodeLine('{not json', 7), /impl line 7: not valid JSON/);
  assert.throws(() => decodeLine(JSON.stringify({ path: 'a', type: 'weird' }), 3), /line 3: unknown type/);
  const ok = JSON.parse(encodeEntry(base)) as Record<string, unknown>;
  assert.throws(() => decodeLine(JSON.stringify({ ...ok, size: -1 }), 4), /"size" must be a non-negative integer/);
  assert.throws(() => decodeLine(JSON.stringify({ ...ok, mtime: 12 }), 5), /"mtime" must be "seconds.nanoseconds"/);
  assert.throws(() => decodeLine(JSON.stringify({ ...ok, mode: '9' }), 6), /"mode" must be an octal string/);
});

test('a header of a newer format is refused with an upgrade hint', () => {
  assert.throws(() => decodeLine(JSON.stringify({ bakker: 'impl', format: 99 }), 1), /format 99 is newer than this bakker supports .*upgrade bakker/);
});
