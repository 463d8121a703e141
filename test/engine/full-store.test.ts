import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { bakker } from '../helpers/cli.js';
import { build, requireTool, rmrf, tempDir } from '../helpers/tree.js';

/**
 * A store on a real, small filesystem (a loop-mounted 16 MiB ext4 image) that fills up: the run
 * fails with one clear line, publishes nothing, cleans its run folder, and the earlier snapshot
 * stays whole and verifiable.
 */
let work: string;
let mnt: string;
let loop: string | undefined;

before(() => {
  for (const t of ['losetup', 'mkfs.ext4', 'mount', 'umount']) requireTool(t);
  work = tempDir();
  const img = path.join(work, 'store.img');
  execFileSync('truncate', ['-s', '16M', img]);
  execFileSync('mkfs.ext4', ['-q', '-F', img]);
  loop = execFileSync('losetup', ['-f', '--show', img], { encoding: 'utf8' }).trim();
  mnt = path.join(work, 'mnt');
  fs.mkdirSync(mnt);
  execFileSync('mount', [loop, mnt]);
});

after(() => {
  try {
    execFileSync('umount', [mnt]);
  } finally {
    if (loop) execFileSync('losetup', ['-d', loop]);
    rmrf(work);
  }
});

test('a store that runs out of space fails cleanly and keeps earlier snapshots', () => {
  const src = path.join(work, 'src');
  build(src, [{ file: 'small.txt', content: 'small' }]);
  const store = path.join(mnt, 'store');
  assert.equal(bakker(['backup', src, '--store', store]).code, 0);
  const first = fs.readlinkSync(path.join(store, 'latest'));
  fs.writeFileSync(path.join(src, 'big.bin'), Buffer.alloc(24 << 20, 3));
  const r = bakker(['backup', src, '--store', store]);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /^bakker: store .* is full \((ENOSPC|EDQUOT)\): it filled while copying [\d.]+ \w+ of new data, [\d.]+ \w+ free: free space there, prune old snapshots, or ask for more \(a request was left in \.bakker\/requests\/\); no snapshot was published and earlier ones are intact$/m);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  assert.equal(fs.readlinkSync(path.join(store, 'latest')), first);
  assert.deepEqual(fs.readdirSync(path.join(store, '.bakker/run')), []);
  assert.ok(!fs.existsSync(path.join(store, '.bakker/lock')));
  const v = bakker(['verify', '--store', store, '--snapshot', 'all']);
  assert.equal(v.code, 0, v.stdout);
  fs.rmSync(path.join(src, 'big.bin'));
  const again = bakker(['backup', src, '--store', store]);
  assert.equal(again.code, 0, again.stderr);
});

test('a run that cannot fit its folders is refused before it writes, with a request for space; --no-space-check overrides', () => {
  const src = path.join(work, 'src3');
  build(src, Array.from({ length: 200 }, (_, i) => ({ file: `d${i}/f.txt`, content: String(i) })));
  const store = path.join(mnt, 'store3');
  fs.rmSync(path.join(mnt, 'store'), { recursive: true, force: true }); // the first test's store: room for this one
  assert.equal(bakker(['backup', src, '--store', store]).code, 0);
  // Leave less room than 200 folders take (4 KiB each).
  const free = fs.statfsSync(mnt).bavail * fs.statfsSync(mnt).bsize;
  const filler = path.join(mnt, 'filler');
  fs.writeFileSync(filler, Buffer.alloc(Math.max(0, free - 300 * 1024), 1));
  try {
    const r = bakker(['backup', src, '--store', store]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^bakker: store .* is full: about [\d.]+ \w+ needed for the snapshot's folders and impl alone, [\d.]+ \w+ free: .*--no-space-check skips this check$/m);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.deepEqual(fs.readdirSync(path.join(store, '.bakker/run')), [], 'nothing was written');
    assert.equal(fs.readdirSync(path.join(store, '.bakker/requests')).length, 1, 'a request for space was left');
  } finally {
    fs.rmSync(filler);
  }
  const ok = bakker(['backup', src, '--store', store, '--no-space-check']);
  assert.equal(ok.code, 0, ok.stderr);
});

test('on_full: prune makes room by the retention policy (then the oldest, never below min_keep) and the run goes through', () => {
  // Each run adds 5 MiB of new data and drops the last run's: the 16 MiB store fills up by the third.
  const src = path.join(work, 'src-onfull');
  const store = path.join(mnt, 'store-onfull');
  for (const d of ['store', 'store3']) fs.rmSync(path.join(mnt, d), { recursive: true, force: true });
  build(src, [{ file: 'keep.txt', content: 'kept' }]);
  const cfg = path.join(work, 'onfull.yaml');
  const config = (onFull: string) =>
    fs.writeFileSync(cfg, [`sources: [${src}]`, 'targets:', '  local:', `    store: ${store}`, '    retention:', '      keep_last: 1', '      min_keep: 1', `    on_full: ${onFull}`, ''].join('\n'));
  const bigFile = (i: number) => {
    for (const f of fs.readdirSync(src)) if (f.startsWith('big-')) fs.rmSync(path.join(src, f));
    fs.writeFileSync(path.join(src, `big-${i}.bin`), Buffer.alloc(5 << 20, i));
  };
  // Without retention pruning after each run (a policy that keeps everything), snapshots pile up.
  fs.writeFileSync(cfg, [`sources: [${src}]`, 'targets:', '  local:', `    store: ${store}`, ''].join('\n'));
  for (let i = 1; i <= 2; i++) {
    bigFile(i);
    assert.equal(bakker(['backup', '-c', cfg]).code, 0);
  }
  bigFile(3);
  config('fail');
  // keep_last 1 prunes after a run, but with on_full: fail a run that does not fit fails first.
  const failed = bakker(['backup', '-c', cfg]);
  assert.equal(failed.code, 1, failed.stderr);
  assert.match(failed.stderr, /is full/);
  config('prune');
  const r = bakker(['backup', '-c', cfg, '--json']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /"message":"store [^"]+ is short of space: pruning first \(on_full: prune\)"/);
  assert.match(r.stdout, /"message":"removed to make room: /);
  const snaps = fs.readdirSync(store).filter((n) => n.endsWith('.impl'));
  assert.equal(snaps.length, 1, `after the run and its pruning one snapshot remains: ${snaps}`);
  assert.equal(bakker(['verify', '--store', store, '--snapshot', 'all']).code, 0);
  const bad = path.join(work, 'bad-onfull.yaml');
  fs.writeFileSync(bad, [`sources: [${src}]`, 'targets:', '  local:', `    store: ${store}`, '    on_full: prune', ''].join('\n'));
  const b = bakker(['backup', '-c', bad]);
  assert.equal(b.code, 2);
  assert.match(b.stderr, /targets\.local\.on_full: on_full: prune needs a retention: policy/);
});

test('a store that runs out of inodes (bytes to spare) says so, and keeps earlier snapshots', () => {
  // Its own 16 MiB ext4 with 128 inodes: 11 are the filesystem's own.
  const img = path.join(work, 'few-inodes.img');
  const dir = path.join(work, 'few-inodes');
  execFileSync('truncate', ['-s', '16M', img]);
  execFileSync('mkfs.ext4', ['-q', '-F', '-N', '128', img]);
  const dev = execFileSync('losetup', ['-f', '--show', img], { encoding: 'utf8' }).trim();
  fs.mkdirSync(dir);
  execFileSync('mount', [dev, dir]);
  try {
    const src = path.join(work, 'src-inodes');
    build(src, [{ file: 'a.txt', content: 'a' }]);
    const store = path.join(dir, 'store');
    assert.equal(bakker(['backup', src, '--store', store]).code, 0);
    const first = fs.readlinkSync(path.join(store, 'latest'));
    build(src, Array.from({ length: 300 }, (_, i) => ({ file: `f${i}.txt`, content: `file ${i}` })));
    const r = bakker(['backup', src, '--store', store]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^bakker: store .* is out of inodes \(ENOSPC\): it ran out while copying [\d.]+ \w+ of new data, \d+ inodes and [\d.]+ \w+ free: every file and folder takes one; prune old snapshots, or put the store on a filesystem with more inodes \(mkfs\.ext4 -i or -N\) \(a request was left in \.bakker\/requests\/\); no snapshot was published and earlier ones are intact$/m);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.ok(fs.statfsSync(dir).bavail * fs.statfsSync(dir).bsize > 8 << 20, 'bytes were not what ran out');
    assert.equal(fs.readlinkSync(path.join(store, 'latest')), first);
    assert.deepEqual(fs.readdirSync(path.join(store, '.bakker/run')), []);
    assert.equal(bakker(['verify', '--store', store, '--snapshot', 'all']).code, 0);
  } finally {
    execFileSync('umount', [dir]);
    execFileSync('losetup', ['-d', dev]);
  }
});
