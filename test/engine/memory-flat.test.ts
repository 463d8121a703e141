import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import v8 from 'node:v8';
import vm from 'node:vm';
import { runBackup } from '../../src/engine/backup/backup.js';
import { newProgress } from '../../src/engine/events.js';
import { LocalStore } from '../../src/store/local/local-store.js';
import { rmrf, tempDir } from '../helpers/tree.js';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

/** What the process holds after a full collection: V8's heap in use and Buffers' memory. */
function held(): number {
  gc();
  gc();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

/**
 * A run holds the first member of each hard-link group until it ends (a later member may come at
 * any point of the walk), and nothing else that grows with the tree. A tree of many folders with
 * a hard-link pair each: what the process holds late in the walk is measured against early in
 * it. The first members once held their copy's whole work (its batch's results, a pooled path's
 * 8 KiB slab, their folder's paths: ~16-25 KB a group, 40 MB at 1M entries).
 */
test('memory stays flat over a walk with thousands of hard-link groups', async (t) => {
  const work = tempDir();
  try {
    const src = path.join(work, 'src');
    const groups = 3000;
    for (let d = 0; d < groups; d++) {
      const dir = path.join(src, `d${String(d).padStart(4, '0')}`);
      fs.mkdirSync(dir, { recursive: true });
      for (let f = 0; f < 4; f++) fs.writeFileSync(path.join(dir, `f${f}`), `${d}/${f} `.repeat(20));
      fs.linkSync(path.join(dir, 'f0'), path.join(dir, 'link'));
    }
    const total = groups * 6;
    const progress = newProgress();
    const samples: { at: number; bytes: number }[] = [];
    const timer = setInterval(() => {
      const at = progress.entries / total;
      if ((samples.length === 0 && at >= 0.15) || (samples.length === 1 && at >= 0.85)) samples.push({ at, bytes: held() });
    }, 5);
    try {
      fs.mkdirSync(path.join(work, 'store'));
      const r = await runBackup({ store: new LocalStore(path.join(work, 'store')), sources: [{ path: src }], progress, noSpaceCheck: true });
      assert.ok(r.snapshot);
    } finally {
      clearInterval(timer);
    }
    assert.equal(samples.length, 2, `sampled at ${samples.map((s) => s.at.toFixed(2))} of the walk`);
    const groupsBetween = (samples[1]!.at - samples[0]!.at) * groups;
    const perGroup = (samples[1]!.bytes - samples[0]!.bytes) / groupsBetween;
    t.diagnostic(`${Math.round(perGroup)} bytes held per hard-link group`);
    assert.ok(perGroup < 2048, `${Math.round(perGroup)} bytes held per hard-link group (${Math.round(groupsBetween)} groups between the samples)`);
  } finally {
    rmrf(work);
  }
});
