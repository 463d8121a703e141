// Calendar buckets are in local time: the tests pin a zone with DST changes.
process.env.TZ = 'Europe/Berlin';

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { applyPolicy, parseDuration, type Policy, type Snap } from '../../src/engine/retention/policy.js';

/* Retention rules, table-driven over generated snapshot lists (restic forget's meaning). */

const pad = (n: number) => String(n).padStart(2, '0');
/** A snapshot at local time y-m-d h:mi. */
function at(y: number, m: number, d: number, h = 1, mi = 0): Snap {
  const time = new Date(y, m - 1, d, h, mi);
  return { name: `${y}_${pad(m)}_${pad(d)}_${pad(h)}${pad(mi)}`, time };
}
/** Daily snapshots at 01:00 from `from` for `days` days. */
function daily(from: [number, number, number], days: number, h = 1): Snap[] {
  const out: Snap[] = [];
  for (let i = 0; i < days; i++) {
    const t = new Date(from[0], from[1] - 1, from[2] + i, h, 0);
    out.push(at(t.getFullYear(), t.getMonth() + 1, t.getDate(), h));
  }
  return out;
}
const kept = (snaps: Snap[], p: Policy) =>
  applyPolicy(snaps, p)
    .filter((d) => d.keep)
    .map((d) => d.name)
    .sort();
const dur = (s: string) => parseDuration(s)!;

const cases: { name: string; snaps: Snap[]; policy: Policy; keep: string[] }[] = [
  { name: 'an empty policy keeps everything', snaps: daily([2024, 1, 1], 5), policy: {}, keep: daily([2024, 1, 1], 5).map((s) => s.name) },
  { name: 'keep_last 3', snaps: daily([2024, 1, 1], 10), policy: { keepLast: 3 }, keep: ['2024_01_08_0100', '2024_01_09_0100', '2024_01_10_0100'] },
  {
    name: 'keep_daily 3 with several runs a day: the newest of each day',
    snaps: [at(2024, 5, 1, 1), at(2024, 5, 1, 13), at(2024, 5, 2, 1), at(2024, 5, 2, 9), at(2024, 5, 2, 23), at(2024, 5, 3, 8), at(2024, 5, 4, 8)],
    policy: { keepDaily: 3 },
    keep: ['2024_05_02_2300', '2024_05_03_0800', '2024_05_04_0800'],
  },
  {
    name: 'keep_daily counts days that have snapshots, across a gap of weeks',
    snaps: [...daily([2024, 3, 1], 3), ...daily([2024, 3, 25], 2)],
    policy: { keepDaily: 4 },
    keep: ['2024_03_02_0100', '2024_03_03_0100', '2024_03_25_0100', '2024_03_26_0100'],
  },
  {
    name: 'keep_weekly uses ISO weeks across the year end (2020-W53 runs to 2021-01-03)',
    snaps: [at(2020, 12, 27), at(2020, 12, 28), at(2020, 12, 31), at(2021, 1, 2), at(2021, 1, 3), at(2021, 1, 4), at(2021, 1, 10)],
    policy: { keepWeekly: 3 },
    keep: ['2020_12_27_0100', '2021_01_03_0100', '2021_01_10_0100'],
  },
  {
    name: 'keep_monthly at month ends (Jan 31, Feb 29 of a leap year, Mar 1)',
    snaps: [at(2024, 1, 30), at(2024, 1, 31), at(2024, 2, 1), at(2024, 2, 29), at(2024, 3, 1), at(2024, 3, 31)],
    policy: { keepMonthly: 3 },
    keep: ['2024_01_31_0100', '2024_02_29_0100', '2024_03_31_0100'],
  },
  {
    name: 'keep_yearly 2 over three years of month-end snapshots',
    snaps: [2021, 2022, 2023].flatMap((y) => [1, 6, 12].map((m) => at(y, m, 28))),
    policy: { keepYearly: 2 },
    keep: ['2022_12_28_0100', '2023_12_28_0100'],
  },
  {
    name: 'keep_hourly over the spring DST change (02:00 does not exist on 2024-03-31)',
    snaps: [at(2024, 3, 31, 0, 30), at(2024, 3, 31, 1, 0), at(2024, 3, 31, 1, 30), at(2024, 3, 31, 3, 0), at(2024, 3, 31, 3, 30), at(2024, 3, 31, 4, 0)],
    policy: { keepHourly: 3 },
    keep: ['2024_03_31_0130', '2024_03_31_0330', '2024_03_31_0400'],
  },
  {
    name: 'the seed: at least 14 days and at least 7 instances (a client that ran rarely lately)',
    snaps: [...daily([2024, 1, 1], 30), at(2024, 2, 20), at(2024, 2, 25), at(2024, 3, 1)],
    policy: { keepWithin: dur('14d'), minKeep: 7 },
    keep: ['2024_01_27_0100', '2024_01_28_0100', '2024_01_29_0100', '2024_01_30_0100', '2024_02_20_0100', '2024_02_25_0100', '2024_03_01_0100'],
  },
  {
    name: 'keep_within 14d is measured from the newest snapshot, not from now, and strictly after',
    snaps: daily([2023, 6, 1], 20),
    policy: { keepWithin: dur('14d') },
    keep: daily([2023, 6, 7], 14).map((s) => s.name),
  },
  {
    name: '14 days, then monthly, then yearly for 4 years',
    snaps: daily([2020, 1, 1], 365 * 4 + 120),
    policy: { keepWithin: dur('14d'), keepMonthly: 12, keepYearly: 4 },
    keep: [
      ...daily([2024, 4, 15], 14).map((s) => s.name),
      ...['2023_05_31', '2023_06_30', '2023_07_31', '2023_08_31', '2023_09_30', '2023_10_31', '2023_11_30', '2023_12_31', '2024_01_31', '2024_02_29', '2024_03_31'].map((d) => `${d}_0100`),
      ...['2021_12_31', '2022_12_31'].map((d) => `${d}_0100`),
    ].sort(),
  },
  {
    name: 'keep_within_daily 7d and keep_within_weekly 1m',
    snaps: [...daily([2024, 6, 1], 30).flatMap((s) => [s, at(s.time.getFullYear(), s.time.getMonth() + 1, s.time.getDate(), 13)])],
    policy: { keepWithinDaily: dur('7d'), keepWithinWeekly: dur('1m') },
    keep: [
      ...daily([2024, 6, 24], 7).map((s) => s.name.replace(/_0100$/, '_1300')),
      // newest of each ISO week since 2024-05-30 13:00: weeks 22 (Jun 2), 23 (Jun 9), 24 (Jun 16), 25 (Jun 23), 26 (Jun 30: already daily)
      '2024_06_02_1300',
      '2024_06_09_1300',
      '2024_06_16_1300',
      '2024_06_23_1300',
    ].sort(),
  },
  {
    name: 'the newest snapshot is always kept (here no rule keeps it)',
    snaps: daily([2024, 1, 1], 3),
    policy: { keepWithin: dur('0h') },
    keep: ['2024_01_03_0100'],
  },
];

for (const c of cases) {
  test(`retention: ${c.name}`, () => {
    assert.deepEqual(kept(c.snaps, c.policy), [...c.keep].sort());
  });
}

test('retention: every decision names its rule; counts of -1 keep every bucket', () => {
  const d = applyPolicy(daily([2024, 1, 1], 4), { keepLast: 1, keepDaily: -1 });
  assert.deepEqual(d.map((x) => [x.name, x.keep, x.reasons]), [
    ['2024_01_04_0100', true, ['last snapshot', 'daily snapshot']],
    ['2024_01_03_0100', true, ['daily snapshot']],
    ['2024_01_02_0100', true, ['daily snapshot']],
    ['2024_01_01_0100', true, ['daily snapshot']],
  ]);
  const r = applyPolicy(daily([2024, 1, 1], 3), { keepLast: 1, minKeep: 2 });
  assert.deepEqual(r.map((x) => x.reasons), [['last snapshot'], ['min_keep 2'], ['no rule keeps it']]);
});

test('retention: the fall-back DST hour counts once for hourly buckets (local time, as restic)', () => {
  // 2024-10-27: 03:00 CEST becomes 02:00 CET; 02:15 and 02:45 happen twice.
  const base = new Date('2024-10-27T00:15:00Z').getTime(); // 02:15 CEST
  const snaps = [0, 30, 60, 90, 120].map((min) => ({ name: `s${min}`, time: new Date(base + min * 60_000) }));
  // local hours: 02 (CEST), 02 (CEST), 02 (CET), 02 (CET), 03 (CET)
  assert.deepEqual(kept(snaps, { keepHourly: 10 }), ['s120', 's90']);
});

test('retention: durations parse as restic writes them', () => {
  assert.deepEqual(parseDuration('1y6m2d3h'), { text: '1y6m2d3h', y: 1, m: 6, d: 2, h: 3 });
  assert.deepEqual(parseDuration('14d'), { text: '14d', y: 0, m: 0, d: 14, h: 0 });
  for (const bad of ['', '14', 'd14', '1w', '2d1y']) assert.equal(parseDuration(bad), null, bad);
});
