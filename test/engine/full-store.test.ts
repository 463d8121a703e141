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
