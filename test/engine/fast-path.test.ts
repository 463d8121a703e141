import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { bakker, jsonLines } from '../helpers/cli.js';
import { build, requireTool, rmrf, sh, tempDir } from '../helpers/tree.js';

/*
 * The fast path (docs/DESIGN.md, "Previous index") must give exactly what the ordinary path
 * gives: the same impl, the same tree, the same sharing of inodes. Each scenario backs up the
 * same changes twice, into a store that has the previous snapshot's index and into a copy of it
 * without, and compares.
 */

let work: string;
let src: string;

const odd = Buffer.concat([Buffer.from('odd-'), Buffer.from([0xff, 0xfe]), Buffer.from('\nname')]);

before(() => {
  requireTool('setfattr');
  requireTool('setfacl');
  work = tempDir();
  src = path.join(work, 'src');
  const specs: Parameters<typeof build>[1] = [
    { file: 'same.txt', content: 'same' },
    { file: 'edit.txt', content: 'v1' },
    { file: 'edit-same-size.txt', content: 'aaaa', mtime: 1_700_000_000 },
    { file: 'chmod.txt', content: 'mode', mode: 0o644 },
    { file: 'chown.txt', content: 'owner' },
    { file: 'touch.txt', content: 'touch' },
    { file: 'xattr.txt', content: 'x' },
    { file: 'acl.txt', content: 'acl' },
    { file: 'gone.txt', content: 'bye' },
    { file: 'becomes-dir', content: 'file first' },
    { file: 'hard-a', content: 'shared' },
    { hardlink: 'hard-b', to: 'hard-a' },
    { sparse: 'sparse.img', size: 1 << 20, data: [{ at: 4096, text: 'middle' }] },
    { symlink: 'link', target: 'same.txt' },
    { symlink: 'relink', target: 'same.txt' },
    { file: 'skipme/inner.txt', content: 'excluded' },
    { fifo: 'pipe' },
  ];
  for (let d = 0; d < 3; d++) for (let f = 0; f < 40; f++) specs.push({ file: `tree/d${d}/sub/f${f}.dat`, content: `content ${d} ${f}` });
  build(src, specs);
  fs.writeFileSync(Buffer.concat([Buffer.from(src + '/tree/'), odd]), 'odd name');
});

after(() => rmrf(work));

/** Every change a run must notice, whichever path it takes. */
function mutate(): void {
  const at = (f: string) => path.join(src, f);
  fs.writeFileSync(at('edit.txt'), 'v2 longer');
  fs.writeFileSync(at('edit-same-size.txt'), 'bbbb');
  fs.utimesSync(at('edit-same-size.txt'), 1_700_000_000, 1_700_000_000); // same size and mtime: both paths link (docs/DESIGN.md)
  fs.chmodSync(at('chmod.txt'), 0o600);
  fs.chownSync(at('chown.txt'), 1000, 1000);
  fs.utimesSync(at('touch.txt'), 1_600_000_000, 1_600_000_000);
  sh('setfattr', ['-n', 'user.note', '-v', 'hello', at('xattr.txt')]);
  sh('setfacl', ['-m', 'u:1000:r--', at('acl.txt')]);
  fs.rmSync(at('gone.txt'));
  fs.rmSync(at('becomes-dir'));
  fs.mkdirSync(at('becomes-dir'));
  fs.writeFileSync(at('becomes-dir/in.txt'), 'now a dir');
  fs.rmSync(at('relink'));
  fs.symlinkSync('edit.txt', at('relink'));
  fs.writeFileSync(at('tree/d1/sub/f7.dat'), 'changed 7');
  fs.rmSync(at('tree/d2/sub/f3.dat'));
  fs.writeFileSync(at('tree/d2/sub/new.dat'), 'new file');
  fs.writeFileSync(at('new.txt'), 'new');
}

interface Run {
  store: string;
  snap: string;
  prev: string;
  events: Record<string, unknown>[];
}

function backup(store: string, extra: string[] = []): Run {
  const r = bakker(['backup', src, '--store', store, '--json', ...extra]);
  assert.equal(r.code, 0, r.stderr);
  const events = jsonLines(r.stdout);
  const start = events.find((e) => e.event === 'start')!;
  return { store, snap: String(start.snapshot), prev: String(start.previous), events };
}

/** The impl's entry lines below the source (its ancestors, such as /tmp, change between runs). */
function implEntries(store: string, snap: string): string[] {
  const lines = zlib.gunzipSync(fs.readFileSync(path.join(store, `${snap}.impl`))).toString('utf8').split('\n').filter(Boolean);
  const below = `{"path":${JSON.stringify(src.slice(1) + '/').slice(0, -1)}`;
  return lines.filter((l) => l.startsWith(below));
}

function summaryOf(run: Run): Record<string, unknown> {
  const s = { ...run.events.find((e) => e.event === 'summary')! };
  for (const k of ['start', 'durationMs', 'phasesMs', 'store']) delete s[k];
  return s;
}

/** Each path in the snapshot: whether it is the very inode of the previous snapshot's copy. */
function sharing(run: Run, dir = ''): Map<string, boolean> {
  const out = new Map<string, boolean>();
  const base = path.join(run.store, run.snap, src);
  const prevBase = path.join(run.store, run.prev, src);
  for (const n of fs.readdirSync(path.join(base, dir), { encoding: 'buffer' })) {
    const rel = dir ? Buffer.concat([Buffer.from(dir + '/'), n]).toString('latin1') : n.toString('latin1');
    const abs = Buffer.concat([Buffer.from(base + '/'), Buffer.from(rel, 'latin1')]);
    const st = fs.lstatSync(abs);
    if (st.isDirectory()) {
      out.set(rel + '/', true);
      for (const [k, v] of sharing(run, rel)) out.set(k, v);
      continue;
    }
    let prevIno: number | undefined;
    try {
      prevIno = fs.lstatSync(Buffer.concat([Buffer.from(prevBase + '/'), Buffer.from(rel, 'latin1')])).ino;
    } catch {
      prevIno = undefined; // not there (or a file where now a folder is)
    }
    out.set(rel, prevIno === st.ino);
  }
  return out;
}

function twin(store: string): string {
  const copy = `${store}-twin`;
  sh('cp', ['-a', store, copy]); // -a keeps the hard links between snapshots
  rmrf(path.join(copy, '.bakker/index'));
  return copy;
}

test('an incremental run through the index gives the same impl, tree and sharing as one without', () => {
  const store = path.join(work, 'eq');
  const first = backup(store);
  assert.equal(first.events.find((e) => e.event === 'start')!.indexed, false, 'no index before the first run');
  assert.ok(fs.existsSync(path.join(store, '.bakker/index', first.snap)), 'the first run writes an index');
  mutate();
  const plain = twin(store);
  const fast = backup(store);
  const slow = backup(plain);
  assert.equal(fast.events.find((e) => e.event === 'start')!.indexed, true, 'the index was used');
  assert.equal(slow.events.find((e) => e.event === 'start')!.indexed, false, 'the twin had no index');
  assert.equal(fast.snap, slow.snap);
  assert.deepEqual(implEntries(fast.store, fast.snap), implEntries(slow.store, slow.snap));
  assert.deepEqual(summaryOf(fast), summaryOf(slow));
  const fs1 = sharing(fast);
  assert.deepEqual(fs1, sharing(slow));
  for (const f of ['same.txt', 'link', 'xattr.txt', 'acl.txt', 'tree/d0/sub/f1.dat', 'sparse.img']) assert.equal(fs1.get(f), true, `${f} is linked`);
  for (const f of ['edit.txt', 'chmod.txt', 'chown.txt', 'touch.txt', 'relink', 'tree/d1/sub/f7.dat', 'new.txt']) assert.equal(fs1.get(f), false, `${f} is a new copy`);
  assert.equal(fs.readlinkSync(path.join(store, fast.snap, src, 'relink')), 'edit.txt');
  assert.deepEqual(fs.readdirSync(path.join(store, '.bakker/index')), [fast.snap], 'only the newest index is kept');
  const v = bakker(['verify', '--store', store, '--snapshot', 'all']);
  assert.equal(v.code, 0, v.stdout + v.stderr);

  // A third run with nothing changed: everything but directories comes from the index.
  const third = backup(store);
  const s3 = summaryOf(third);
  assert.equal(s3.copied, 0);
  assert.equal(s3.changed, 0);
  assert.deepEqual(implEntries(store, third.snap), implEntries(store, fast.snap));
});

test('excluded folders stay out on the fast path, and changed excludes turn the index off', () => {
  const store = path.join(work, 'ex');
  const skip = `${src}/skipme`;
  backup(store, ['--exclude', skip, '--exclude', '*.dat']);
  const second = backup(store, ['--exclude', skip, '--exclude', '*.dat']);
  assert.equal(second.events.find((e) => e.event === 'start')!.indexed, true);
  const tree = path.join(store, second.snap, src);
  assert.equal(fs.existsSync(path.join(tree, 'skipme')), false, 'the scan never makes an excluded folder');
  assert.equal(fs.existsSync(path.join(tree, 'tree/d0/sub/f1.dat')), false);
  assert.equal(fs.existsSync(path.join(tree, 'same.txt')), true);
  const third = backup(store, ['--exclude', skip]);
  assert.equal(third.events.find((e) => e.event === 'start')!.indexed, false, 'other excludes: other walk');
  assert.ok(third.events.some((e) => e.event === 'info' && String(e.message).includes('made under other sources, excludes')), 'says why the run is slower');
  assert.equal(fs.readFileSync(path.join(store, third.snap, src, 'tree/d0/sub/f1.dat'), 'utf8'), 'content 0 1');
});

test('a damaged or foreign index is ignored with a note, and the run is still exact', () => {
  const store = path.join(work, 'dmg');
  const first = backup(store);
  const ix = path.join(store, '.bakker/index', first.snap);
  const bytes = fs.readFileSync(ix);
  bytes.fill(0xff, 0, Math.min(bytes.length - 100, 4000)); // records garbled, trailer intact
  fs.writeFileSync(ix, bytes);
  const garbled = backup(store);
  assert.equal(garbled.events.find((e) => e.event === 'start')!.indexed, false);
  assert.ok(garbled.events.some((e) => e.event === 'info' && String(e.message).includes('checksum')), 'says why');
  const plain = twin(store);
  assert.ok(implEntries(store, first.snap).length > 100);
  assert.deepEqual(implEntries(store, garbled.snap), implEntries(store, first.snap), 'garbled records link nothing wrong');
  // An index that does not belong to its impl (here: the impl was rewritten) is not used.
  const ix2 = path.join(store, '.bakker/index', garbled.snap);
  assert.ok(fs.existsSync(ix2));
  const implFile = path.join(store, `${garbled.snap}.impl`);
  fs.writeFileSync(implFile, zlib.gzipSync(zlib.gunzipSync(fs.readFileSync(implFile)), { level: 9 }));
  const foreign = backup(store);
  assert.equal(foreign.events.find((e) => e.event === 'start')!.indexed, false);
  assert.ok(foreign.events.some((e) => e.event === 'info' && String(e.message).includes('not usable')), 'says why');
  assert.deepEqual(implEntries(store, foreign.snap), implEntries(store, first.snap));
  rmrf(plain);
});
