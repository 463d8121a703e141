import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Scanner, SCAN_FIELDS, type Listing } from '../../src/scan/scanner.js';
import { build, rmrf, tempDir, type Spec } from '../helpers/tree.js';

const names = (l: Listing) => l[0].toString('latin1').split('\0').filter(Boolean);

test('the scanner lists ahead down the tree, within its budget, and forgets dropped subtrees', async () => {
  const root = tempDir();
  try {
    const specs: Spec[] = [];
    for (let a = 0; a < 6; a++) for (let b = 0; b < 6; b++) specs.push({ file: `d${a}/e${b}/f`, content: 'x' });
    build(root, specs);
    const excluded = Buffer.from('d5/e5');
    const scanner = new Scanner(true, (rel) => !rel.equals(excluded), undefined, 10, 2);
    const top = await scanner.take(Buffer.from(root), Buffer.alloc(0));
    assert.deepEqual(names(top), ['d0', 'd1', 'd2', 'd3', 'd4', 'd5']);
    assert.equal(top[1].length, 6 * SCAN_FIELDS);
    scanner.start(Buffer.from(path.join(root, 'd0')), Buffer.from('d0'), 0);
    scanner.start(Buffer.from(path.join(root, 'd1')), Buffer.from('d1'), 0);
    await new Promise((r) => setTimeout(r, 200)); // listings arrive and start their first subdirectories
    assert.ok(scanner.pendingCount > 2, 'listings started ahead of the walk');
    assert.ok(scanner.pendingCount <= 10, `within the budget: ${scanner.pendingCount}`);
    scanner.drop(Buffer.from(path.join(root, 'd0')));
    const left = scanner.pendingCount;
    const d1 = await scanner.take(Buffer.from(path.join(root, 'd1')), Buffer.from('d1'));
    assert.deepEqual(names(d1), ['e0', 'e1', 'e2', 'e3', 'e4', 'e5']);
    assert.equal(scanner.pendingCount, left - 1);
    const e0 = await scanner.take(Buffer.from(path.join(root, 'd1', 'e0')), Buffer.from('d1/e0'));
    assert.deepEqual(names(e0), ['f']);
    await assert.rejects(scanner.take(Buffer.from(path.join(root, 'missing')), Buffer.from('missing')), (err: NodeJS.ErrnoException) => err.code === 'ENOENT');
  } finally {
    rmrf(root);
  }
});

test('look-ahead scans wait in walk order, a few on the pool at a time; the walk never waits behind them', async () => {
  const root = tempDir();
  try {
    const specs: Spec[] = [];
    for (let a = 0; a < 8; a++) specs.push({ file: `d${a}/f`, content: 'x' });
    specs.push({ file: 'a-skip/g', content: 'x' });
    build(root, specs);
    const skip = Buffer.from('a-skip');
    const started: string[] = [];
    const scanner = new Scanner(true, (rel) => !rel.equals(skip), (rel) => {
      started.push(rel.toString());
      return [null, Buffer.from(path.join(root, '.old', rel.toString())), Buffer.from(path.join(root, '.new', rel.toString()))];
    }, 10, 2, 1);
    for (const a of [5, 1, 7, 3]) scanner.start(Buffer.from(path.join(root, `d${a}`)), Buffer.from(`d${a}`), 0);
    assert.deepEqual(started, ['d5'], 'one on the pool, the rest wait');
    const d7 = await scanner.take(Buffer.from(path.join(root, 'd7')), Buffer.from('d7'));
    assert.deepEqual(names(d7), ['f'], 'a take sends its scan at once');
    assert.equal(started[1], 'd7');
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(started.slice(2), ['d1', 'd3'], 'then the waiting ones, in walk order');
    scanner.start(Buffer.from(root), Buffer.alloc(0), 0);
    const top = await scanner.take(Buffer.from(root), Buffer.alloc(0));
    assert.ok(top[2] instanceof Buffer, 'the fast path returns an index block');
    await new Promise((r) => setTimeout(r, 100));
    assert.ok(started.includes('d0'), `the root's listing started its first subfolders: ${started}`);
    assert.ok(!started.includes('a-skip'), 'the look-ahead never scans a folder the walk will not enter');
    assert.ok(fs.existsSync(path.join(root, '.new/d7')), 'a fast scan makes its folder in the new snapshot');
    assert.ok(!fs.existsSync(path.join(root, '.new/a-skip')));
  } finally {
    rmrf(root);
  }
});
