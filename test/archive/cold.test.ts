import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { bakker, bakkerRun } from '../helpers/cli.js';
import { startColdS3, type ColdS3 } from '../helpers/s3.js';
import { build, requireTool, rmrf, sh, tempDir } from '../helpers/tree.js';
import { decidePrune, isDue, type ArchiveConfig, type Marker } from '../../src/archive/archive.js';
import { extractArchive } from '../../src/archive/extract.js';
import { readTar } from '../../src/archive/untar.js';
import { END, contentPad, entryHeader } from '../../src/archive/pax.js';
import { IdNames } from '../../src/scan/ids.js';
import type { Entry } from '../../src/manifest/entry.js';

/*
 * Cold storage (GLACIER / DEEP_ARCHIVE): s3rver does not implement RestoreObject, so this runs
 * against a small S3 endpoint in the test (helpers/s3.ts) that answers as S3 documents it. Also
 * the prune policy's arithmetic, the selection, and hostile archive streams.
 */

const BUCKET = 'cold-bucket';
let cold: ColdS3;
let work: string;
let src: string;

before(async () => {
  requireTool('rsync');
  cold = await startColdS3(BUCKET);
  work = tempDir();
  src = path.join(work, 'src');
  build(src, [
    { file: 'a.txt', content: 'alpha' },
    { file: 'd/b.bin', content: Buffer.alloc(200_000, 9) },
    { symlink: 'd/l', target: '../a.txt' },
  ]);
});

after(async () => {
  await cold?.stop();
  if (work) rmrf(work);
});

test('cold restore: RestoreObject is requested, the command says it waits (exit 4) and writes nothing, and finishes when re-run after the restore', async () => {
  const cfg = path.join(work, 'cold.yaml');
  fs.writeFileSync(
    cfg,
    `sources: [${src}]
targets:
  local: {store: ${path.join(work, 'store')}}
archives:
  - name: deep
    endpoint: ${cold.endpoint}
    region: eu-central-1
    bucket: ${BUCKET}
    prefix: srv/
    storage_class: DEEP_ARCHIVE
    credentials: {access_key_id: TEST, secret_access_key: TEST}
    encryption: none
    restore_tier: Bulk
`,
  );
  const env = { BAKKER_STATE_DIR: path.join(work, 'state') };
  const b = await bakkerRun(['backup', '-c', cfg], env);
  assert.equal(b.code, 0, b.stderr);
  assert.match(b.stdout, /pushed as a full/);
  const data = [...cold.objects.entries()].find(([k]) => k.endsWith('.tar.zst'))!;
  assert.equal(data[1].storageClass, 'DEEP_ARCHIVE', 'the data object is stored in the configured class');
  const marker = [...cold.objects.entries()].find(([k]) => k.endsWith('.archive'))!;
  assert.equal(marker[1].storageClass, 'STANDARD', 'the marker stays readable (STANDARD)');

  // As S3: the object cannot be read before it is restored.
  const direct = await fetch(`${cold.endpoint}/${BUCKET}/${data[0]}`);
  assert.equal(direct.status, 403);
  assert.match(await direct.text(), /InvalidObjectState/);

  const to = path.join(work, 'restored');
  const first = await bakkerRun(['archive', 'restore', '-c', cfg, 'latest', '--to', to, '--days', '3'], env);
  assert.equal(first.code, 4, first.stderr);
  assert.match(first.stdout, /is in DEEP_ARCHIVE: restore requested \(tier Bulk, 3 days\); Bulk takes up to 48 hours/);
  assert.match(first.stderr, /waiting for 1 object\(s\) in cold storage .* run this command again later/);
  assert.equal(cold.restoreBodies.length, 1);
  assert.match(cold.restoreBodies[0]!, /<Days>3<\/Days>.*<Tier>Bulk<\/Tier>/s);
  assert.ok(!fs.existsSync(to) || fs.readdirSync(to).length === 0, 'nothing written while waiting');

  const second = await bakkerRun(['archive', 'restore', '-c', cfg, 'latest', '--to', to], env);
  assert.equal(second.code, 4);
  assert.match(second.stdout, /restore under way/);
  assert.equal(cold.restoreBodies.length, 1, 'a restore under way (HEAD says so) is not requested again');

  cold.finishRestores();
  const done = await bakkerRun(['archive', 'restore', '-c', cfg, 'latest', '--to', to], env);
  assert.equal(done.code, 0, done.stderr);
  assert.equal(sh('rsync', ['-aHAXn', '--checksum', '--itemize-changes', `${src}/`, `${path.join(to, src)}/`]).trim(), '');
  assert.ok(cold.requests.some((r) => r.startsWith('GET ') && r.includes('.tar.zst')), 'read only once restored');
});

const cfg = (over: Partial<ArchiveConfig> = {}): ArchiveConfig => ({
  name: 'a',
  type: 's3',
  region: 'r',
  bucket: 'b',
  prefix: 'p/',
  storageClass: 'GLACIER',
  credentials: 'default',
  select: { kind: 'monthly' },
  mode: 'incremental',
  fullEvery: 12,
  compression: 3,
  recipients: null,
  restoreTier: 'Standard',
  restoreDays: 7,
  afterBackup: true,
  partSize: 8 << 20,
  ...over,
});

function marker(snapshot: string, kind: 'full' | 'incremental', base: string | undefined, created: string, cls: Marker['storage_class'] = 'GLACIER'): Marker {
  const ref = { key: `p/${snapshot}.tar`, size: 1, sha256: '' };
  return { bakker_archive: 1, snapshot, time: new Date(`${snapshot.slice(0, 10).replace(/_/g, '-')}T01:00:00`).toISOString(), kind, ...(base ? { base } : {}), host: 'h', created, storage_class: cls, compression: 0, encrypted: false, data: { ...ref, parts: 1 }, impl: ref, entries: 1, files: 1, bytes: 1 };
}

test('archive prune policy: chains are kept whole, minimum storage durations (90 d GLACIER, 180 d DEEP_ARCHIVE) defer deletion unless early', () => {
  const a = [
    marker('2026_01_01_01', 'full', undefined, '2026-01-01T02:00:00Z'),
    marker('2026_02_01_01', 'incremental', '2026_01_01_01', '2026-02-01T02:00:00Z'),
    marker('2026_03_01_01', 'incremental', '2026_02_01_01', '2026-03-01T02:00:00Z'),
    marker('2026_04_01_01', 'full', undefined, '2026-04-01T02:00:00Z', 'DEEP_ARCHIVE'),
    marker('2026_05_01_01', 'incremental', '2026_04_01_01', '2026-05-01T02:00:00Z', 'DEEP_ARCHIVE'),
  ];
  const c = cfg({ retention: { keepLast: 1 } });
  const at = (d: string, early = false) => Object.fromEntries(decidePrune(c, a, new Date(d), early).map((x) => [x.snapshot, x.action]));
  // 2026-06-15: the Jan chain is older than 90 days except March (106 d old: also past 90 d).
  assert.deepEqual(at('2026-06-15T00:00:00Z'), { '2026_01_01_01': 'delete', '2026_02_01_01': 'delete', '2026_03_01_01': 'delete', '2026_04_01_01': 'keep', '2026_05_01_01': 'keep' });
  // 2026-05-15: March is 75 days old (< 90): deferred, and it keeps its chain (Feb, Jan) with it.
  assert.deepEqual(at('2026-05-15T00:00:00Z'), { '2026_01_01_01': 'keep', '2026_02_01_01': 'keep', '2026_03_01_01': 'defer', '2026_04_01_01': 'keep', '2026_05_01_01': 'keep' });
  // --early deletes it now (S3 bills the rest of the 90 days all the same).
  assert.deepEqual(at('2026-05-15T00:00:00Z', true), { '2026_01_01_01': 'delete', '2026_02_01_01': 'delete', '2026_03_01_01': 'delete', '2026_04_01_01': 'keep', '2026_05_01_01': 'keep' });
  // A DEEP_ARCHIVE full replaced by a newer full: 180 days apply.
  const b = [...a.slice(3), marker('2026_09_01_01', 'full', undefined, '2026-09-01T02:00:00Z', 'DEEP_ARCHIVE')];
  const decide = (d: string) => Object.fromEntries(decidePrune(c, b, new Date(d), false).map((x) => [x.snapshot, x.action]));
  assert.deepEqual(decide('2026-09-02T00:00:00Z'), { '2026_04_01_01': 'defer', '2026_05_01_01': 'defer', '2026_09_01_01': 'keep' });
  assert.deepEqual(decide('2026-10-15T00:00:00Z'), { '2026_04_01_01': 'keep', '2026_05_01_01': 'defer', '2026_09_01_01': 'keep' }, 'April is past 180 days but May (167 d) still needs it');
  assert.deepEqual(decide('2026-11-01T00:00:00Z'), { '2026_04_01_01': 'delete', '2026_05_01_01': 'delete', '2026_09_01_01': 'keep' });
  const reasons = decidePrune(c, b, new Date('2026-09-02T00:00:00Z'), false).find((x) => x.snapshot === '2026_04_01_01')?.reasons.join('; ') ?? '';
  assert.match(reasons, /under the 180-day minimum of DEEP_ARCHIVE .* deleted by a prune from 2026-09-28/);
});

test('archive selection: monthly, weekly, daily, every N days; never older than the newest archive', () => {
  const a = [marker('2026_11_01_01', 'full', undefined, '2026-11-01T02:00:00Z')];
  assert.equal(isDue(cfg(), a, '2026_11_15_01').due, false);
  assert.equal(isDue(cfg(), a, '2026_12_01_01').due, true);
  // 2026-11-01 is a Sunday: the last day of its ISO week; Monday starts the next.
  assert.equal(isDue(cfg({ select: { kind: 'weekly' } }), a, '2026_11_01_02').due, false);
  assert.equal(isDue(cfg({ select: { kind: 'weekly' } }), a, '2026_11_02_01').due, true);
  assert.equal(isDue(cfg({ select: { kind: 'daily' } }), a, '2026_11_01_02').due, false);
  assert.equal(isDue(cfg({ select: { kind: 'daily' } }), a, '2026_11_02_01').due, true);
  assert.equal(isDue(cfg({ select: { kind: 'every', days: 10 } }), a, '2026_11_10_01').due, false);
  assert.equal(isDue(cfg({ select: { kind: 'every', days: 10 } }), a, '2026_11_11_01').due, true);
  assert.match(isDue(cfg(), a, '2026_10_31_01').why, /not newer than the newest archive/);
});

function tarOf(entries: { e: Omit<Partial<Entry>, 'path'> & { path: string }; link?: string; data?: string }[]): Buffer {
  const out: Buffer[] = [];
  for (const { e, link, data } of entries) {
    const full: Entry = { type: 'file', size: data?.length ?? 0, mode: 0o644, uid: 0, gid: 0, mtime: '1700000000.000000000', ctime: '1700000000.000000000', ...e, path: Buffer.from(e.path) } as Entry;
    out.push(entryHeader(full, full.path, link ? Buffer.from(link) : undefined));
    if (data !== undefined && !link) out.push(Buffer.from(data), contentPad(data.length));
  }
  out.push(END);
  return Buffer.concat(out);
}

async function extract(tar: Buffer, root: string): Promise<void> {
  async function* once() {
    yield tar;
  }
  const ctx = { ids: new IdNames(), numericIds: true, canChown: true, warn: () => undefined };
  await extractArchive(readTar(once(), 'test stream'), Buffer.from(root), ctx, 'test stream', { entries: 0, files: 0, bytes: 0, removed: 0 });
}

test('archive restore refuses hostile streams: .. paths, a member through a symlink, a hard link out of the target', async () => {
  const outside = path.join(work, 'outside');
  fs.mkdirSync(outside);
  const cases: [string, Buffer, RegExp][] = [
    ['dotdot', tarOf([{ e: { path: '../escape' }, data: 'x' }]), /member "\.\.\/escape" is not a safe relative path/],
    ['absolute', tarOf([{ e: { path: '/tmp/escape' }, data: 'x' }]), /not a safe relative path/],
    ['through a symlink', tarOf([{ e: { path: 'a', type: 'symlink', target: Buffer.from(outside) } }, { e: { path: 'a/f' }, data: 'x' }]), /comes without its folder before it/],
    ['link out', tarOf([{ e: { path: 'l' }, link: '../../etc/passwd' }]), /a hard link points at "\.\.\/\.\.\/etc\/passwd"/],
    ['link through a symlink', tarOf([{ e: { path: 'a', type: 'symlink', target: Buffer.from(outside) } }, { e: { path: 'l' }, link: 'a/secret' }]), /a hard link points at "a\/secret"/],
  ];
  fs.writeFileSync(path.join(outside, 'secret'), 'secret');
  for (const [name, tar, re] of cases) {
    const root = path.join(work, `hostile-${name.replace(/ /g, '-')}`);
    fs.mkdirSync(root);
    await assert.rejects(extract(tar, root), re, name);
    assert.deepEqual(fs.readdirSync(outside).sort(), ['secret'], `${name}: nothing written outside`);
    assert.equal(fs.statSync(path.join(outside, 'secret')).nlink, 1, `${name}: no link to a file outside`);
  }
  // A checksum error in a header is a clear error, not garbage.
  const bad = tarOf([{ e: { path: 'f' }, data: 'x' }]);
  bad.writeUInt8(bad[10]! ^ 0xff, 10);
  await assert.rejects(extract(bad, path.join(work, 'hostile-sum')), /test stream is not a valid tar stream: a header block fails its checksum/);
  assert.equal(bakker(['archive', 'frobnicate']).code, 2);
});
