import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { LocalStore } from '../../src/store/local/local-store.js';
import { storeConformance } from './conformance.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { fromBigNs } from '../../src/manifest/time.js';

storeConformance('local', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'store-'));
  return { store: new LocalStore(dir), cleanup: async () => fs.rmSync(dir, { recursive: true, force: true }), localPath: dir };
});

test('local store: small files are copied several per thread-pool job; each copy keeps its own result and failure', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'batch-'));
  try {
    const src = path.join(dir, 'src');
    fs.mkdirSync(src);
    fs.mkdirSync(path.join(dir, 'store'));
    const store = new LocalStore(path.join(dir, 'store'));
    await store.mkdir(Buffer.from('t'), 0o700);
    const n = 300;
    const names = Array.from({ length: n }, (_, i) => `f${String(i).padStart(3, '0')}`);
    for (const [i, name] of names.entries()) fs.writeFileSync(path.join(src, name), `content of ${name} `.repeat(1 + (i % 50)));
    fs.writeFileSync(path.join(src, 'big'), Buffer.alloc(200_000, 7)); // one job of its own
    fs.rmSync(path.join(src, 'f010')); // vanished since the walk
    fs.rmSync(path.join(src, 'f020'));
    fs.symlinkSync('f021', path.join(src, 'f020')); // replaced by a symlink
    fs.rmSync(path.join(src, 'f030'));
    execFileSync('mkfifo', [path.join(src, 'f030')]); // replaced by a FIFO
    fs.writeFileSync(path.join(dir, 'store', 't', 'f040'), 'already there'); // destination taken
    const uid = process.getuid!();
    const gid = process.getgid!();
    const mtime = '1700000000.123456789';
    const all = [...names, 'big'];
    const results = await Promise.allSettled(
      all.map((name, i) => store.putFile(Buffer.from(`t/${name}`), { path: Buffer.from(path.join(src, name)), sparse: false, size: name === 'big' ? 200_000 : 100 }, { mode: 0o600 | (i % 2 ? 0o040 : 0), uid, gid, mtime })),
    );
    const failed = new Map<string, { code?: string; source?: boolean }>();
    results.forEach((r, i) => {
      if (r.status === 'rejected') failed.set(all[i]!, r.reason as { code?: string; source?: boolean });
    });
    assert.deepEqual([...failed.keys()].sort(), ['f010', 'f020', 'f030', 'f040']);
    assert.equal(failed.get('f010')!.code, 'ENOENT');
    assert.equal(failed.get('f010')!.source, true);
    assert.equal(failed.get('f020')!.code, 'ELOOP');
    assert.equal(failed.get('f020')!.source, true);
    assert.equal(failed.get('f030')!.source, true, 'a FIFO is a source error, not a hang');
    assert.equal(failed.get('f040')!.code, 'EEXIST');
    assert.equal(failed.get('f040')!.source, undefined, 'a taken destination is a store error');
    assert.equal(fs.readFileSync(path.join(dir, 'store', 't', 'f040'), 'utf8'), 'already there');
    for (const name of ['f010', 'f020', 'f030']) assert.equal(fs.existsSync(path.join(dir, 'store', 't', name)), false);
    results.forEach((r, i) => {
      const name = all[i]!;
      if (r.status !== 'fulfilled') return;
      const stored = path.join(dir, 'store', 't', name);
      assert.deepEqual(fs.readFileSync(stored), fs.readFileSync(path.join(src, name)), name);
      const st = fs.statSync(stored, { bigint: true });
      assert.equal(Number(st.mode) & 0o777, name === 'big' ? 0o600 | (all.length % 2 === 0 ? 0o040 : 0) : 0o600 | (i % 2 ? 0o040 : 0), name);
      assert.equal(fromBigNs(st.mtimeNs), mtime, name);
      assert.equal(r.value.before.size, fs.statSync(path.join(src, name)).size, name);
      assert.deepEqual(r.value.before, r.value.after, name);
    });
    const jobs = store.copyJobs;
    assert.equal(jobs.single, 1, 'only the big file had a job of its own');
    assert.equal(jobs.batched, n);
    assert.ok(jobs.batches >= 1 && jobs.batches <= n / 8, `${n} small files in ${jobs.batches} jobs`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('local store: a FIFO planted where a stored file should be is refused, never waited on', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fifo-'));
  try {
    execFileSync('mkfifo', [path.join(dir, 'f')]);
    const store = new LocalStore(dir);
    await assert.rejects(store.openRead(Buffer.from('f')), /not a regular file/);
    assert.equal((await store.readFile(Buffer.from('f'))).length, 0);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('local store: a sync started ahead (syncSoon) runs on the thread pool, one at a time, and never fails the run', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'syncsoon-'));
  try {
    const { native } = await import('../../src/native.js');
    await native.syncfsSoon(dir); // resolves
    await native.syncfsSoon(path.join(dir, 'missing')); // a folder that is gone: still resolves
    const store = new LocalStore(dir);
    fs.writeFileSync(path.join(dir, 'x'), 'data');
    store.syncSoon();
    store.syncSoon(); // one already under way: nothing more
    await store.sync();
    assert.equal(fs.readFileSync(path.join(dir, 'x'), 'utf8'), 'data');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
