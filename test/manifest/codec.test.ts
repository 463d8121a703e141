import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeLine, encodeEntry, encodeEntryTo, LineSink } from '../../src/manifest/codec.js';
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

test('the byte encoder (the impl writer) gives what encodeEntry gives, byte for byte', () => {
  // Deterministic pseudo-random entries: names with every byte value (escapes, \u00XX,
  // invalid UTF-8), multi-byte UTF-8, big and small numbers, every optional field.
  let seed = 12345;
  const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) % n;
  const name = () => {
    const k = rnd(4);
    if (k === 0) return Buffer.from(Array.from({ length: 1 + rnd(40) }, () => rnd(256)));
    if (k === 1) return Buffer.from(`dir/ünï ${'€'.repeat(rnd(3))}\t"q"\\${rnd(1000)}`);
    if (k === 2) return Buffer.from(Array.from({ length: 1 + rnd(20) }, () => rnd(0x80)));
    return Buffer.from(`data/f${rnd(100000)}`);
  };
  const cases: Entry[] = [];
  for (let i = 0; i < 3000; i++) {
    const e: Entry = { path: name(), type: (['file', 'dir', 'symlink', 'fifo', 'char'] as const)[rnd(5)]!, size: [0, 7, 10, 99, 2 ** 40 + 3, Number.MAX_SAFE_INTEGER][rnd(6)]!, mode: rnd(0o10000), uid: [0, 1000, 65534, 4294967294][rnd(4)]!, gid: rnd(70000), mtime: `${rnd(2) ? '-' : ''}${rnd(2 ** 31)}.${String(rnd(1e9)).padStart(9, '0')}`, ctime: `${rnd(2 ** 31)}.000000000` };
    if (rnd(2)) e.user = ['root', 'ålice', 'we"ird\\', 'x\u0001y'][rnd(4)]!;
    if (rnd(2)) e.group = ['users', 'grüppe'][rnd(2)]!;
    if (rnd(3) === 0) e.target = name();
    if (rnd(5) === 0) e.rdev = rnd(2 ** 20);
    if (rnd(4) === 0) e.hardlink = 1 + rnd(50000);
    if (rnd(6) === 0) e.acl = 'user::rw-,user:1000:r--,group::r--,mask::r--,other::---';
    if (rnd(8) === 0) e.dacl = 'user::rwx,group::r-x,other::---';
    if (rnd(8) === 0) e.aclNames = 'u:1000=ålice';
    if (rnd(6) === 0) e.xattrs = new Map([['user.x', Buffer.from([rnd(256), 0, 1])], ['security.selinux', Buffer.from('system_u:object_r:etc_t:s0\0')]]);
    if (rnd(3) === 0) e.sum = `sha256:${'ab'.repeat(32)}`;
    if (rnd(2)) e.since = ['2026_11_29_01', '2026_11_30_02'][rnd(2)]!;
    if (rnd(5) === 0) e.sparse = true;
    if (rnd(9) === 0) e.changing = true;
    if (rnd(7) === 0) e.tag = 'c'.repeat(64);
    if (rnd(7) === 0) e.z = 'zstd';
    cases.push(e);
  }
  // A small starting buffer: lines also cross its growth.
  const sink = new LineSink(64);
  const want: Buffer[] = [];
  cases.forEach((e, i) => {
    want.push(Buffer.from(encodeEntry(e) + '\n'));
    encodeEntryTo(e, sink);
    if (i % 500 === 499) assert.ok(sink.take().equals(Buffer.concat(want.splice(0))), `lines ${i - 499}..${i} differ`);
  });
  assert.ok(sink.take().equals(Buffer.concat(want)));
  // Valid JSON, one line each.
  for (const e of cases.slice(0, 200)) {
    encodeEntryTo(e, sink);
    const line = sink.take().toString('utf8');
    assert.equal(line.indexOf('\n'), line.length - 1);
    assert.equal(typeof JSON.parse(line), 'object');
  }
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
