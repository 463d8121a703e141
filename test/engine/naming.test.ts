import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compareSnapshotNames, nextSnapshotName } from '../../src/engine/naming.js';

test('snapshot names: local date, run number per day from 01', () => {
  const now = new Date(2026, 10, 29, 1, 0, 0);
  assert.equal(nextSnapshotName([], now), '2026_11_29_01');
  assert.equal(nextSnapshotName(['2026_11_28_01', '2026_11_28_02'], now), '2026_11_29_01');
  assert.equal(nextSnapshotName(['2026_11_29_01', '2026_11_29_07', 'latest'], now), '2026_11_29_08');
  assert.equal(nextSnapshotName(['2026_11_29_99'], now), '2026_11_29_100');
});

test('names sort by date then run number', () => {
  const names = ['2026_11_29_100', '2026_11_29_99', '2025_12_31_01', '2026_11_29_02'];
  assert.deepEqual(names.sort(compareSnapshotNames), ['2025_12_31_01', '2026_11_29_02', '2026_11_29_99', '2026_11_29_100']);
});
