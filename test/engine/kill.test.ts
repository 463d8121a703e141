import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { bakker, bakkerAsync, jsonLines } from '../helpers/cli.js';
import { build, rmrf, tempDir, type Spec } from '../helpers/tree.js';

/**
 * SIGKILL at many points of a run: earlier snapshots and `latest` must stay intact, and the
 * next run must complete (taking over the dead run's lock, clearing its leftovers) and verify.
 */
let work: string;
let src: string;
let store: string;

before(() => {
  work = tempDir();
  src = path.join(work, 'src');
  store = path.join(work, 'store');
  const specs: Spec[] = [];
  for (let i = 0; i < 1500; i++) specs.push({ file: `d${i % 30}/f${i}`, content: `content ${i} `.repeat(200) });
  specs.push({ file: 'big1', content: Buffer.alloc(24 << 20, 1) });
  build(src, specs);
  const r = bakker(['backup', src, '--store', store, '--checksum', 'sha256']);
  assert.equal(r.code, 0, r.stderr);
});

after(() => rmrf(work));

function state(): { complete: string[]; latest: string } {
  const complete = jsonLines(bakker(['list', '--store', store, '--json']).stdout)
    .filter((e) => e.event === 'snapshot')
    .map((e) => e.name as string);
  return { complete, latest: fs.readlinkSync(path.join(store, 'latest')) };
}

function mutate(i: number): void {
  fs.writeFileSync(path.join(src, `d${i % 30}/f${i}`), `mutated ${Date.now()}`);
  fs.writeFileSync(path.join(src, `big${i % 3 === 0 ? 2 : 3}`), Buffer.alloc(12 << 20, i));
}

function assertIntact(before: { complete: string[]; latest: string }): void {
  const now = state();
  for (const name of before.complete) assert.ok(now.complete.includes(name), `snapshot ${name} survived`);
  assert.ok(now.complete.includes(now.latest), `latest -> ${now.latest} is a complete snapshot`);
  const v = bakker(['verify', '--store', store, '--snapshot', 'all', '--no-read-data']);
  assert.equal(v.code, 0, v.stdout + v.stderr);
}

for (const point of ['mid-walk', 'before-publish', 'after-tree-rename', 'after-impl-rename', 'after-latest']) {
  test(`SIGKILL at ${point} leaves earlier snapshots intact and the next run completes`, () => {
    mutate(point.length);
    const prior = state();
    const killed = bakker(['backup', src, '--store', store, '--checksum', 'sha256'], { env: { BAKKER_FAULT: point } });
    assert.equal(killed.code, -1, 'the run was killed');
    assertIntact(prior);
    const again = bakker(['backup', src, '--store', store, '--checksum', 'sha256']);
    assert.equal(again.code, 0, again.stderr);
    assertIntact(prior);
    assert.deepEqual(fs.readdirSync(path.join(store, '.bakker/run')), []);
    assert.ok(!fs.existsSync(path.join(store, '.bakker/lock')));
  });
}

for (const delayMs of [40, 120, 250, 400, 700]) {
  test(`SIGKILL after ${delayMs} ms of a run`, async () => {
    mutate(delayMs);
    const prior = state();
    const child = bakkerAsync(['backup', src, '--store', store, '--checksum', 'sha256']);
    const exited = new Promise((r) => child.on('exit', r));
    await new Promise((r) => setTimeout(r, delayMs));
    child.kill('SIGKILL');
    await exited;
    assertIntact(prior);
    const again = bakker(['backup', src, '--store', store]);
    assert.equal(again.code, 0, again.stderr);
    assertIntact(prior);
  });
}

test('every snapshot left after the kills verifies, contents included', () => {
  const v = bakker(['verify', '--store', store, '--snapshot', 'all']);
  assert.equal(v.code, 0, v.stdout + v.stderr);
});

test('a second run while one holds the lock is refused with a clear message', async () => {
  fs.writeFileSync(path.join(store, '.bakker/lock'), JSON.stringify({ pid: process.pid, host: (await import('node:os')).hostname(), started: 'now', procStart: null }));
  const r = bakker(['backup', src, '--store', store]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /is in use by bakker PID \d+ .*remove .*\.bakker\/lock/);
  fs.rmSync(path.join(store, '.bakker/lock'));
});

test('SIGTERM stops a run cleanly: nothing published, run folder and lock removed', async () => {
  mutate(7);
  const prior = state();
  const child = bakkerAsync(['backup', src, '--store', store, '--checksum', 'sha256'], { BAKKER_FAULT: 'mid-walk:pause' });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  await new Promise((r) => setTimeout(r, 700)); // inside the pause at entry 500
  child.kill('SIGTERM');
  const code = await exited;
  assert.equal(code, 1, stderr);
  assert.match(stderr, /SIGTERM: stopping/);
  assert.match(stderr, /backup interrupted: no snapshot was published, earlier snapshots are intact/);
  assert.deepEqual(state().complete, prior.complete);
  assert.deepEqual(fs.readdirSync(path.join(store, '.bakker/run')), []);
  assert.ok(!fs.existsSync(path.join(store, '.bakker/lock')));
});

test('a lock left by a dead process on this host is taken over, with a note', async () => {
  const { spawnSync } = await import('node:child_process');
  const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  const pid = Number(dead.stdout);
  fs.writeFileSync(path.join(store, '.bakker/lock'), JSON.stringify({ pid, host: (await import('node:os')).hostname(), started: '2026-01-01T00:00:00Z', procStart: '1' }));
  const r = bakker(['backup', src, '--store', store]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, new RegExp(`took over the lock of a dead run \\(PID ${pid}, started 2026-01-01T00:00:00Z\\)`));
  assert.ok(!fs.existsSync(path.join(store, '.bakker/lock')));
});

test('a run killed before publishing leaves its copies for the next run to take over (same inode), never a changed or shared one', () => {
  const store2 = path.join(work, 'store-salvage');
  const killed = bakker(['backup', src, '--store', store2], { env: { BAKKER_FAULT: 'before-publish' } });
  assert.notEqual(killed.code, 0);
  const [run] = fs.readdirSync(path.join(store2, '.bakker/run'));
  const rel = (p: string) => path.join(src, p).slice(1);
  const inRun = (p: string) => path.join(store2, '.bakker/run', run!, 'tree', rel(p));
  const ino = fs.statSync(inRun('d1/f1')).ino;
  // Changed since: one file's content (copied anew), another's mode (taken over, mode updated).
  fs.writeFileSync(path.join(src, 'd2/f2'), 'changed after the kill');
  fs.chmodSync(path.join(src, 'd3/f3'), 0o600);
  const again = bakker(['backup', src, '--store', store2, '--json']);
  assert.equal(again.code, 0, again.stderr);
  const summary = jsonLines(again.stdout).find((e) => e.event === 'summary')!;
  assert.ok((summary.salvaged as number) >= 1400, `taken over: ${String(summary.salvaged)}`);
  assert.match(again.stdout, /copied by the interrupted run were taken over/);
  const snap = fs.readdirSync(store2).find((n) => /^\d{4}_\d\d_\d\d_\d\d$/.test(n))!;
  const stored = (p: string) => path.join(store2, snap, rel(p));
  assert.equal(fs.statSync(stored('d1/f1')).ino, ino, 'the killed run\'s copy itself, not a new one');
  assert.equal(fs.readFileSync(stored('d2/f2'), 'utf8'), 'changed after the kill');
  assert.equal(fs.statSync(stored('d3/f3')).mode & 0o7777, 0o600);
  assert.ok(!fs.existsSync(path.join(store2, '.bakker/salvage')), 'nothing left over');
  const v = bakker(['verify', '--store', store2, '--snapshot', 'latest']);
  assert.equal(v.code, 0, v.stdout + v.stderr);
  const r = path.join(work, 'r-salvage');
  assert.equal(bakker(['restore', '--store', store2, '--snapshot', 'latest', '--to', r]).code, 0);
  const diff = execFileSync('rsync', ['-aHn', '--checksum', '--itemize-changes', `${src}/`, `${path.join(r, src)}/`], { encoding: 'utf8' }).trim();
  assert.equal(diff, '', diff);
});
