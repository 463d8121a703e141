import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { bakker } from '../helpers/cli.js';
import { build, rmrf, tempDir } from '../helpers/tree.js';

/** Crafted impls that try to escape the restore target; each must be refused, nothing written outside. */
let work: string;
let store: string;
let snap: string;

const header = (name: string) => ({ bakker: 'impl', format: 1, snapshot: name, host: 'h', job: 'j', sources: ['/x'], start: '2026-01-01T00:00:00Z', previous: null, options: {} });
const rec = (p: string, type: string, extra: Record<string, unknown> = {}) => ({ path: p, type, size: 0, mode: '0644', uid: 0, gid: 0, mtime: '1.000000000', ctime: '1.000000000', ...extra });

function writeImpl(lines: object[]): void {
  const text = [header(snap), ...lines, { trailer: true, end: 'x', entries: lines.length, summary: {} }].map((l) => JSON.stringify(l)).join('\n') + '\n';
  fs.writeFileSync(path.join(store, `${snap}.impl`), zlib.gzipSync(text));
}

before(() => {
  work = tempDir();
  store = path.join(work, 'store');
  build(path.join(work, 'src'), [{ file: 'a', content: 'a' }]);
  assert.equal(bakker(['backup', path.join(work, 'src'), '--store', store]).code, 0);
  snap = fs.readlinkSync(path.join(store, 'latest'));
  // content the hostile impls will point at
  fs.writeFileSync(path.join(store, snap, 'payload'), 'evil');
  fs.mkdirSync(path.join(work, 'outside'));
});

after(() => rmrf(work));

function refuse(lines: object[], why: RegExp): void {
  writeImpl(lines);
  const to = path.join(work, 'to');
  rmrf(to);
  const r = bakker(['restore', '--store', store, '--to', to]);
  assert.equal(r.code, 1, `expected refusal, got ${r.code}: ${r.stderr}`);
  assert.match(r.stderr, why);
  assert.deepEqual(fs.readdirSync(path.join(work, 'outside')), [], 'nothing written outside');
  assert.ok(!fs.existsSync(path.join(work, 'evil')));
}

test('paths with .. are refused', () => {
  refuse([rec('../outside/evil', 'file', { size: 4 })], /unsafe path/);
  refuse([rec('x', 'dir'), rec('x/../../evil', 'file', { size: 4 })], /unsafe path/);
});

test('absolute and empty-component paths are refused', () => {
  refuse([rec('/tmp/evil', 'file')], /unsafe path/);
  refuse([rec('a//b', 'file')], /unsafe path/);
});

test('a path through a symlink the restore created is refused', () => {
  const outside = path.join(work, 'outside');
  refuse([rec('link', 'symlink', { target: outside, size: outside.length }), rec('link/evil', 'file', { size: 4 })], /out of order|no directory record/);
  refuse([rec('d', 'symlink', { target: outside, size: outside.length }), rec('d/x', 'dir'), rec('d/x/evil', 'file')], /out of order|no directory record/);
});

test('an entry whose parent has no directory record is refused', () => {
  refuse([rec('nodir/evil', 'file', { size: 4 })], /no directory record/);
});

test('entries out of walk order are refused', () => {
  refuse([rec('b', 'dir'), rec('a', 'dir')], /out of order/);
});

test('a symlink planted in the target beforehand is replaced, not followed', () => {
  writeImpl([rec('payload', 'file', { size: 4 })]);
  const to = path.join(work, 'to2');
  fs.mkdirSync(to);
  fs.symlinkSync(path.join(work, 'outside', 'victim'), path.join(to, 'payload'));
  const r = bakker(['restore', '--store', store, '--to', to]);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(!fs.lstatSync(path.join(to, 'payload')).isSymbolicLink());
  assert.deepEqual(fs.readdirSync(path.join(work, 'outside')), []);
});

test('a planted symlink where a directory goes is refused', () => {
  writeImpl([rec('d', 'dir'), rec('d/payload', 'file', { size: 4 })]);
  const to = path.join(work, 'to3');
  fs.mkdirSync(to);
  fs.symlinkSync(path.join(work, 'outside'), path.join(to, 'd'));
  const r = bakker(['restore', '--store', store, '--to', to]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /exists in the target and is not a directory/);
  assert.deepEqual(fs.readdirSync(path.join(work, 'outside')), []);
});

test('a stored copy whose size disagrees with the impl is refused', () => {
  writeImpl([rec('payload', 'file', { size: 999 })]);
  const r = bakker(['restore', '--store', store, '--to', path.join(work, 'to4')]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /has 4 bytes where the impl says 999/);
});

test('a corrupt impl gives a one-line error', () => {
  fs.writeFileSync(path.join(store, `${snap}.impl`), Buffer.from('garbage'));
  const r = bakker(['restore', '--store', store, '--to', path.join(work, 'to5')]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^bakker: impl .* (corrupt|truncated)/m);
  assert.equal(r.stderr.trim().split('\n').length, 1);
});

test('owners are restored by name unless --numeric-ids', () => {
  // uid 4242 recorded with the name "nobody": this host knows nobody as 65534
  writeImpl([rec('payload', 'file', { size: 4, uid: 4242, gid: 4343, user: 'nobody', group: 'no-such-group-here' })]);
  const byName = path.join(work, 'by-name');
  assert.equal(bakker(['restore', '--store', store, '--to', byName]).code, 0);
  const st = fs.statSync(path.join(byName, 'payload'));
  assert.equal(st.uid, 65534);
  assert.equal(st.gid, 4343, 'an unknown group name falls back to the recorded id');
  const numeric = path.join(work, 'numeric');
  assert.equal(bakker(['restore', '--store', store, '--to', numeric, '--numeric-ids']).code, 0);
  assert.equal(fs.statSync(path.join(numeric, 'payload')).uid, 4242);
});
