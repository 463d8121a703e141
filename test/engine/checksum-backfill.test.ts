import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { bakker, jsonLines } from '../helpers/cli.js';
import { build, rmrf, tempDir } from '../helpers/tree.js';

/* Turning --checksum on (or changing its algorithm) gives unchanged files their sums too. */

let work: string;
before(() => (work = tempDir()));
after(() => work && rmrf(work));

function sums(store: string, snap: string): Map<string, string | undefined> {
  const lines = zlib.gunzipSync(fs.readFileSync(path.join(store, `${snap}.impl`))).toString('utf8').split('\n').filter(Boolean).slice(1);
  const out = new Map<string, string | undefined>();
  for (const l of lines) {
    const o = JSON.parse(l);
    if (o.type === 'file') out.set(String(o.path).split('/').pop()!, o.sum);
  }
  return out;
}

test('checksums turned on later: every unchanged file gets its sum in that run; verify checks them', () => {
  const src = path.join(work, 'src');
  const store = path.join(work, 'store');
  build(src, [
    { file: 'a.txt', content: 'alpha' },
    { file: 'b.bin', content: Buffer.alloc(100_000, 2) },
    { file: 'h1', content: 'hard' },
    { hardlink: 'h2', to: 'h1' },
  ]);
  const run = (...extra: string[]) => {
    const r = bakker(['backup', src, '--store', store, '--json', ...extra]);
    assert.equal(r.code, 0, r.stderr);
    return jsonLines(r.stdout);
  };
  const s1 = String(run().find((e) => e.event === 'summary')!.snapshot);
  assert.ok([...sums(store, s1).values()].every((x) => x === undefined));

  const ev = run('--checksum', 'sha256');
  const s2 = String(ev.find((e) => e.event === 'summary')!.snapshot);
  const sha = (f: string) => `sha256:${createHash('sha256').update(fs.readFileSync(path.join(src, f))).digest('hex')}`;
  assert.deepEqual(Object.fromEntries(sums(store, s2)), { 'a.txt': sha('a.txt'), 'b.bin': sha('b.bin'), h1: sha('h1'), h2: sha('h1') });
  assert.equal(ev.find((e) => e.event === 'summary')!.copied, 0, 'still hard links: nothing copied');
  assert.equal(fs.statSync(path.join(store, s1, src, 'b.bin')).ino, fs.statSync(path.join(store, s2, src, 'b.bin')).ino);

  // Another algorithm: the sums follow.
  const s3 = String(run('--checksum', 'md5').find((e) => e.event === 'summary')!.snapshot);
  assert.match(sums(store, s3).get('a.txt')!, /^md5:[0-9a-f]{32}$/);
  // Same option again: the sums ride along on the fast path.
  const ev4 = run('--checksum', 'md5');
  assert.equal(ev4.find((e) => e.event === 'start')!.indexed, true);
  assert.equal(sums(store, String(ev4.find((e) => e.event === 'summary')!.snapshot)).get('b.bin'), sums(store, s3).get('b.bin'));

  // verify checks the sums against the stored copies: a stored copy altered behind bakker's back is found.
  const v = bakker(['verify', '--store', store, '--snapshot', 'all']);
  assert.equal(v.code, 0, v.stdout + v.stderr);
  fs.writeFileSync(path.join(store, s2, src, 'a.txt'), 'ALPHA'); // same size: only a sum can tell
  const bad = bakker(['verify', '--store', store, '--snapshot', s2]);
  assert.equal(bad.code, 1);
  assert.match(bad.stdout, /a\.txt/);
});
