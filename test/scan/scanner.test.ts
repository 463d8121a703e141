import { test } from 'node:test';
import assert from 'node:assert/strict';
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
