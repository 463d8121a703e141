import { test } from 'node:test';
import assert from 'node:assert/strict';
import { comparePaths, isWithin, safeComponents, display } from '../../src/util/bpath.js';

const B = (s: string) => Buffer.from(s, 'latin1');

test('comparePaths is depth-first walk order with siblings sorted by bytes', () => {
  const walkOrder = ['a', 'a/b', 'a/b/c', 'a/z', 'a-c', 'a.d', 'b', 'b\xff', 'c'];
  const shuffled = [...walkOrder].reverse().map(B);
  shuffled.sort(comparePaths);
  assert.deepEqual(shuffled.map((x) => x.toString('latin1')), walkOrder);
  assert.equal(comparePaths(B('x/y'), B('x/y')), 0);
});

test('isWithin respects component boundaries', () => {
  assert.ok(isWithin(B('data/www/x'), B('data/www')));
  assert.ok(isWithin(B('data/www'), B('data/www')));
  assert.ok(!isWithin(B('data/www2'), B('data/www')));
  assert.ok(isWithin(B('anything'), B('')));
});

test('safeComponents refuses empty, dot and dot-dot parts and NUL', () => {
  assert.deepEqual(safeComponents(B('a/b'))?.map(String), ['a', 'b']);
  for (const bad of ['', '/abs', 'a//b', 'a/./b', 'a/../b', '..', 'a/', 'a\0b']) assert.equal(safeComponents(B(bad)), null, bad);
});

test('display escapes bytes that are not UTF-8', () => {
  assert.equal(display(Buffer.from([0x61, 0xe9])), 'a\\xe9');
  assert.equal(display(Buffer.from('café')), 'café');
});
