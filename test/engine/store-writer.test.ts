import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { StoreWriter } from '../../src/engine/backup/store-writer.js';
import { newProgress, type BakkerEvent } from '../../src/engine/events.js';
import type { Entry } from '../../src/manifest/entry.js';
import { fromBigNs } from '../../src/manifest/time.js';
import { LocalStore } from '../../src/store/local/local-store.js';

/** The Entry the walk would have made of `file` (lstat now), with `over` on top. */
function walked(src: string, rel: string, over: Partial<Entry> = {}): Entry {
  const st = fs.lstatSync(path.join(src, rel), { bigint: true });
  return { path: Buffer.from(rel), type: 'file', size: Number(st.size), mode: Number(st.mode) & 0o7777, uid: Number(st.uid), gid: Number(st.gid), mtime: fromBigNs(st.mtimeNs), ctime: fromBigNs(st.ctimeNs), ...over };
}

test('store writer: small copies share batch jobs; a changed, vanished or swapped file takes the careful road from its batch result', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'writer-'));
  try {
    const src = path.join(dir, 'src');
    fs.mkdirSync(src);
    fs.mkdirSync(path.join(dir, 'store'));
    const store = new LocalStore(path.join(dir, 'store'));
    await store.mkdir(Buffer.from('run'), 0o700);
    await store.mkdir(Buffer.from('run.diff'), 0o700);
    const events: BakkerEvent[] = [];
    const progress = newProgress();
    const writer = new StoreWriter(store, Buffer.from('run'), Buffer.from('run.diff'), null, '2026_11_30_01', undefined, (e) => events.push(e), progress);

    const names = Array.from({ length: 100 }, (_, i) => `f${String(i).padStart(3, '0')}`);
    for (const [i, n] of names.entries()) fs.writeFileSync(path.join(src, n), `${n} `.repeat(1 + i));
    fs.writeFileSync(path.join(src, 'stale'), 'new content, not what the walk saw');
    fs.writeFileSync(path.join(src, 'gone'), 'x');
    fs.writeFileSync(path.join(src, 'pipe'), 'y');
    const entries = [...names, 'stale', 'gone', 'pipe'].map((n) => walked(src, n));
    // The walk saw an older "stale" (another size and mtime); "gone" vanished since; "pipe" became a FIFO.
    const stale = entries.find((e) => e.path.toString() === 'stale')!;
    stale.size = 3;
    stale.mtime = '1000.000000000';
    fs.rmSync(path.join(src, 'gone'));
    fs.rmSync(path.join(src, 'pipe'));
    execFileSync('mkfifo', [path.join(src, 'pipe')]);

    const work = entries.map((e) => writer.copyJob(e, Buffer.from(path.join(src, e.path.toString()))));
    const jobs = new Set(work.map((w) => w.job));
    assert.ok(jobs.size <= Math.ceil(entries.length / 8), `${entries.length} copies in ${jobs.size} jobs: batched`);
    const kept = new Map<string, boolean>();
    for (const [i, w] of work.entries()) {
      await w.job.wait();
      assert.equal(w.job.failure, undefined);
      kept.set(entries[i]!.path.toString(), await w.decide());
    }
    await writer.finishDiff();

    for (const n of names) {
      assert.equal(kept.get(n), true, n);
      const stored = path.join(dir, 'store/run', n);
      assert.ok(fs.readFileSync(stored).equals(fs.readFileSync(path.join(src, n))), `${n}: content`);
      assert.equal(fs.statSync(path.join(dir, 'store/run.diff', n)).ino, fs.statSync(stored).ino, `${n}: in the diff folder`);
    }
    // Copied again with what the file holds now, and the entry brought up to date.
    assert.equal(kept.get('stale'), true);
    assert.equal(fs.readFileSync(path.join(dir, 'store/run/stale'), 'utf8'), 'new content, not what the walk saw');
    assert.equal(stale.size, 'new content, not what the walk saw'.length);
    assert.equal(stale.mtime, walked(src, 'stale').mtime);
    assert.ok(fs.existsSync(path.join(dir, 'store/run.diff/stale')));
    // Vanished: simply not in the snapshot; a FIFO: refused (never waited on), reported.
    assert.equal(kept.get('gone'), false);
    assert.equal(kept.get('pipe'), false);
    for (const n of ['gone', 'pipe']) {
      assert.ok(!fs.existsSync(path.join(dir, 'store/run', n)), `${n}: nothing stored`);
      assert.ok(!fs.existsSync(path.join(dir, 'store/run.diff', n)), `${n}: not in the diff folder`);
    }
    const warnings = events.filter((e) => e.event === 'warning').map((e) => `${(e as { path: string }).path}: ${(e as { message: string }).message}`);
    assert.deepEqual(warnings.length, 1, warnings.join('\n'));
    assert.match(warnings[0]!, /^pipe: cannot read, left out of this snapshot: EINVAL/);
    assert.equal(writer.stats.copied, names.length + 1);
    assert.equal(writer.stats.unreadable, 1);
    assert.equal(progress.copied, names.length + 1);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
