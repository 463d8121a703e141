import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { bakker, BIN, jsonLines } from '../helpers/cli.js';
import { build, requireTool, rmrf, sh, tempDir } from '../helpers/tree.js';

/*
 * Consistent views: a real btrfs snapshot on a loop-mounted btrfs; LVM through the stand-in
 * commands in test/helpers/fake-lvm (real block devices: loop-backed copies of the origin, made
 * while its filesystem is frozen); hooks in every phase, their failures, timeouts and signals.
 */

const FAKE_LVM = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../../../test/helpers/fake-lvm');
let work: string;
const mounts: string[] = [];
const loops: string[] = [];
const vgs: string[] = [];

before(() => {
  for (const t of ['mkfs.btrfs', 'btrfs', 'mkfs.xfs', 'fsfreeze', 'losetup', 'findmnt', 'rsync']) requireTool(t);
  work = tempDir();
});

after(() => {
  for (const m of mounts.reverse()) spawnSync('umount', ['-l', m]);
  for (const l of loops) spawnSync('losetup', ['-d', l]);
  for (const vg of vgs) fs.rmSync(`/dev/${vg}`, { recursive: true, force: true });
  if (work) rmrf(work);
});

/** A loop-mounted filesystem of `type` at `dir` (cleaned up after the tests). */
function loopFs(type: 'btrfs' | 'xfs', dir: string, sizeMB: number): void {
  const img = `${dir}.img`;
  sh('truncate', ['-s', `${sizeMB}M`, img]);
  sh(type === 'btrfs' ? 'mkfs.btrfs' : 'mkfs.xfs', ['-q', img]);
  fs.mkdirSync(dir, { recursive: true });
  sh('mount', ['-o', 'loop', img, dir]);
  mounts.push(dir);
}

function writeConfig(name: string, lines: string[]): string {
  const f = path.join(work, `${name}.yaml`);
  fs.writeFileSync(f, lines.join('\n') + '\n');
  return f;
}

const summaryOf = (out: string) => jsonLines(out).find((e) => e.event === 'summary')!;
const implHeader = (store: string, snap: string) => JSON.parse(zlib.gunzipSync(fs.readFileSync(path.join(store, `${snap}.impl`))).toString('utf8').split('\n')[0]!);

test('btrfs: the backup reads a read-only snapshot while a writer keeps changing the origin; paths are the original ones; the snapshot is gone afterwards', async () => {
  const mnt = path.join(work, 'btrfs');
  loopFs('btrfs', mnt, 256);
  const sub = path.join(mnt, 'data');
  sh('btrfs', ['subvolume', 'create', sub]);
  build(sub, [
    { file: 'f1.txt', content: 'before' },
    { file: 'deep/f2.txt', content: 'two' },
  ]);
  const store = path.join(work, 'store-btrfs');
  const marks = path.join(work, 'marks-btrfs');
  fs.mkdirSync(marks);
  const cfg = writeConfig('btrfs', [
    'job: web',
    `sources: [${sub}]`,
    'view:',
    '  type: btrfs',
    `  subvolume: ${sub}`,
    'hooks:',
    `  before: ["echo on > ${marks}/maintenance; env | grep ^BAKKER_ | sort > ${marks}/env-before"]`,
    // after the snapshot: the origin changes (these changes must not be in the backup)
    `  after_snapshot: ["rm ${marks}/maintenance; echo after > ${sub}/f1.txt; echo late > ${sub}/late.txt"]`,
    `  after: ["env | grep ^BAKKER_ | sort > ${marks}/env-after"]`,
    'targets:',
    '  local:',
    `    store: ${store}`,
  ]);
  // A writer that numbers its files: the snapshot holds w-1..w-K with no gap, whatever K is. Each
  // file is synced before its rename, as a careful application does: a snapshot is consistent as
  // a crash would be, so a file renamed before its data reached the disk may be empty in it (seen
  // here once on a loaded machine).
  const writer = spawn('bash', ['-c', `i=0; while true; do i=$((i+1)); echo $i > ${sub}/w-$i.tmp && sync ${sub}/w-$i.tmp && mv ${sub}/w-$i.tmp ${sub}/w-$i; done`], { stdio: 'ignore' });
  await new Promise((r) => setTimeout(r, 300));
  const r = spawnSync(BIN, ['backup', '-c', cfg, '--json'], { encoding: 'utf8' });
  // Let the writer show it went on past the snapshot (a loaded machine may have starved it).
  const count = () => fs.readdirSync(sub).filter((n) => /^w-\d+$/.test(n)).length;
  const atEnd = count();
  for (let i = 0; i < 100 && count() === atEnd; i++) await new Promise((res) => setTimeout(res, 50));
  writer.kill('SIGKILL');
  await new Promise((res) => writer.on('close', res));
  assert.equal(r.status, 0, r.stderr);
  const s = summaryOf(r.stdout);
  const snap = String(s.snapshot);
  const tree = path.join(store, snap, sub);
  assert.equal(fs.readFileSync(path.join(tree, 'f1.txt'), 'utf8'), 'before', 'the content as of the snapshot');
  assert.ok(!fs.existsSync(path.join(tree, 'late.txt')));
  const ws = fs.readdirSync(tree).filter((n) => /^w-\d+$/.test(n)).map((n) => Number(n.slice(2))).sort((a, b) => a - b);
  assert.ok(ws.length > 0);
  assert.deepEqual(ws, Array.from({ length: ws.length }, (_, i) => i + 1), 'no gap: one point in time');
  for (const n of ws) assert.equal(fs.readFileSync(path.join(tree, `w-${n}`), 'utf8'), `${n}\n`);
  const now = fs.readdirSync(sub).filter((n) => /^w-\d+$/.test(n)).length;
  assert.ok(now > ws.length, `the writer went on after the snapshot (${now} > ${ws.length})`);
  assert.ok(!fs.readdirSync(tree).includes('.bakker-snapshots'), "the view's own folder is left out");
  assert.equal(typeof s.downtimeMs, 'number');
  assert.equal(implHeader(store, snap).view.type, 'btrfs');
  assert.equal(typeof implHeader(store, snap).downtimeMs, 'number');
  assert.equal(sh('btrfs', ['subvolume', 'list', '-o', sub]).trim(), '', 'the snapshot is gone');
  assert.ok(!fs.existsSync(path.join(marks, 'maintenance')), 'maintenance is off');
  const envBefore = fs.readFileSync(path.join(marks, 'env-before'), 'utf8');
  assert.match(envBefore, /^BAKKER_JOB=web$/m);
  assert.match(envBefore, /^BAKKER_PHASE=before$/m);
  assert.match(envBefore, /^BAKKER_TARGET=local$/m);
  const envAfter = fs.readFileSync(path.join(marks, 'env-after'), 'utf8');
  assert.match(envAfter, new RegExp(`^BAKKER_SNAPSHOT=${snap}$`, 'm'));
  assert.match(envAfter, /^BAKKER_STATUS=ok$/m);
  assert.match(envAfter, new RegExp(`^BAKKER_VIEW_PATH=${sub}/\\.bakker-snapshots/bakker-web-view$`, 'm'));
});

/** An LVM volume group of the stand-in, and an XFS origin volume mounted at `origin`. */
function lvmSetup(name: string): { env: NodeJS.ProcessEnv; vg: string; origin: string; lvmDir: string } {
  const lvmDir = path.join(work, `lvm-${name}`);
  const vg = `bkvg${Math.random().toString(16).slice(2, 8)}`;
  fs.mkdirSync(path.join(lvmDir, vg), { recursive: true });
  fs.writeFileSync(path.join(lvmDir, vg, '.size'), String(1 << 30));
  vgs.push(vg);
  const env = { ...process.env, PATH: `${FAKE_LVM}:${process.env.PATH}`, FAKE_LVM_DIR: lvmDir };
  sh('lvcreate', ['-y', '-L', '320M', '-n', 'data', vg], { env });
  const dev = `/dev/${vg}/data`;
  loops.push(fs.realpathSync(dev));
  sh('mkfs.xfs', ['-q', dev]);
  const origin = path.join(work, `origin-${name}`);
  fs.mkdirSync(origin);
  sh('mount', [dev, origin]);
  mounts.push(origin);
  return { env, vg, origin, lvmDir };
}

function lvmConfig(name: string, vg: string, origin: string, hooks: string[], extra: string[] = [], targetExtra: string[] = []): { cfg: string; store: string; view: string } {
  const store = path.join(work, `store-${name}`);
  const view = path.join(work, `view-${name}`);
  return {
    cfg: writeConfig(name, [`job: ${name}`, `sources: [${origin}/app]`, 'view:', '  type: lvm', `  volume: ${vg}/data`, '  size: 20%ORIGIN', `  origin: ${origin}`, `  mount: ${view}`, ...extra, 'hooks:', ...hooks, 'targets:', '  local:', `    store: ${store}`, ...targetExtra]),
    store,
    view,
  };
}

test('LVM (stand-in): snapshot between the hooks, mounted read-only (XFS with nouuid), backed up under the original paths, unmounted and removed', () => {
  const { env, vg, origin, lvmDir } = lvmSetup('lvm');
  build(path.join(origin, 'app'), [
    { file: 'config.php', content: 'v1' },
    { file: 'data/user.db', content: Buffer.alloc(100_000, 9) },
  ]);
  const marks = path.join(work, 'marks-lvm');
  fs.mkdirSync(marks);
  const view = path.join(work, 'view-lvm');
  const { cfg, store } = lvmConfig(
    'lvm',
    vg,
    origin,
    [
      `  before: [[sh, -c, "echo on > ${origin}/app/maintenance.flag"]]`,
      `  after_snapshot: ["rm ${origin}/app/maintenance.flag; echo v2 > ${origin}/app/config.php"]`,
      `  after: ["findmnt -n ${view} > ${marks}/mounted-during-after || true"]`,
    ],
    [],
    ['    retention: {keep_last: 1}'],
  );
  const r = bakker(['backup', '-c', cfg, '--json'], { env });
  assert.equal(r.code, 0, r.stderr);
  const snap = String(summaryOf(r.stdout).snapshot);
  const tree = path.join(store, snap, origin, 'app');
  assert.equal(fs.readFileSync(path.join(tree, 'config.php'), 'utf8'), 'v1', 'as of the snapshot');
  assert.equal(fs.readFileSync(path.join(tree, 'maintenance.flag'), 'utf8'), 'on\n', 'taken while in maintenance');
  assert.equal(fs.readFileSync(path.join(origin, 'app', 'config.php'), 'utf8'), 'v2\n');
  assert.deepEqual(implHeader(store, snap).view, { type: 'lvm', volume: `${vg}/data`, snapshot: `${vg}/bakker-lvm-view`, mount: view });
  assert.match(r.stdout, /"message":"removed the snapshot [^"]+\/bakker-lvm-view"/);
  assert.equal(fs.readFileSync(path.join(marks, 'mounted-during-after'), 'utf8'), '', 'unmounted before the after hooks');
  assert.ok(!fs.existsSync(path.join(lvmDir, vg, 'bakker-lvm-view.img')), 'the snapshot volume is removed');
  assert.ok(!fs.existsSync(`/dev/${vg}/bakker-lvm-view`));
  assert.ok(!fs.existsSync(view), 'the mount point is removed');
  // A second run: its target's retention prunes the first, after the view is released.
  const r2 = bakker(['backup', '-c', cfg, '--json'], { env });
  assert.equal(r2.code, 0, r2.stderr);
  const msgs = jsonLines(r2.stdout).map((e) => String(e.message ?? ''));
  const released = msgs.findIndex((m) => m.startsWith('removed the snapshot '));
  const pruned = msgs.indexOf(`removed ${snap}`);
  assert.ok(released >= 0 && pruned > released, `pruned (${pruned}) after the view was released (${released})`);
  const to = path.join(work, 'restored-lvm');
  assert.equal(bakker(['restore', '--store', store, '--snapshot', 'latest', '--to', to]).code, 0);
  assert.equal(fs.readFileSync(path.join(to, origin, 'app', 'config.php'), 'utf8'), 'v2\n', "the second run saw the first run's after_snapshot change");
});

test('failures: an essential before hook, a snapshot that cannot be taken, a hook past its timeout, SIGTERM mid-backup and a crashed run\'s leftovers all end with the services out of maintenance and nothing left behind', async () => {
  const { env, vg, origin, lvmDir } = lvmSetup('fail');
  build(path.join(origin, 'app'), Array.from({ length: 3000 }, (_, i) => ({ file: `f/${i}`, content: String(i) })));
  const marks = path.join(work, 'marks-fail');
  fs.mkdirSync(marks);
  const snapImg = path.join(lvmDir, vg, 'bakker-fail-view.img');
  const standard = (before: string) => [
    `  before: [${before}]`,
    `  after_snapshot: ["echo ran >> ${marks}/after_snapshot"]`,
    `  on_failure: ["echo $BAKKER_STATUS: $BAKKER_ERROR >> ${marks}/on_failure"]`,
  ];
  const reset = () => {
    for (const f of fs.readdirSync(marks)) fs.rmSync(path.join(marks, f));
  };

  // 1. An essential before hook fails: no snapshot, after_snapshot and on_failure ran.
  let c = lvmConfig('fail', vg, origin, standard('"exit 3"'));
  let r = bakker(['backup', '-c', c.cfg], { env });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^bakker: hook before\[0\] \(exit 3\) failed: exit code 3: no snapshot was taken \(the after_snapshot hooks ran\)$/m);
  assert.equal(fs.readFileSync(path.join(marks, 'after_snapshot'), 'utf8'), 'ran\n');
  assert.match(fs.readFileSync(path.join(marks, 'on_failure'), 'utf8'), /^failed: hook before\[0\]/);
  assert.ok(!fs.existsSync(snapImg));
  assert.ok(!fs.existsSync(c.store) || fs.readdirSync(c.store).filter((n) => /^\d{4}_/.test(n)).length === 0, 'no backup');
  reset();

  // 2. An optional before hook fails: a warning, and the run goes on.
  c = lvmConfig('fail', vg, origin, standard('{run: "exit 4", mode: optional}'));
  r = bakker(['backup', '-c', c.cfg], { env });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /hook before\[0\] \(exit 4\) failed: exit code 4 \(optional: the run goes on\)/);
  assert.match(r.stdout, /^  downtime \d+\.\d s \(from the first before hook to the end of the after_snapshot hooks\)$/m, 'the downtime is in the summary');
  reset();

  // 3. The snapshot cannot be taken (no room in the volume group): maintenance still switched off.
  c = lvmConfig('fail', vg, origin, standard('"true"'));
  fs.writeFileSync(c.cfg, fs.readFileSync(c.cfg, 'utf8').replace('size: 20%ORIGIN', 'size: 5G'));
  r = bakker(['backup', '-c', c.cfg], { env });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^bakker: taking the LVM snapshot: lvcreate -y -s -n bakker-fail-view -L 5G \w+\/data failed: Volume group "\w+" has insufficient free space.* \(the after_snapshot hooks ran\)$/m);
  assert.equal(fs.readFileSync(path.join(marks, 'after_snapshot'), 'utf8'), 'ran\n');
  reset();

  // 4. A hook that hangs is stopped at its timeout, with what it started: also a child that
  // ignores SIGTERM and has closed its output (it outlives the hook's own process).
  c = lvmConfig('fail', vg, origin, standard(`{run: "(trap '' TERM; exec >/dev/null 2>&1; sleep 6171) & sleep 6172", timeout: 1}`));
  const t0 = Date.now();
  r = bakker(['backup', '-c', c.cfg], { env });
  assert.ok(Date.now() - t0 < 15_000, 'stopped at its timeout');
  assert.equal(r.code, 1);
  assert.match(r.stderr, /hook before\[0\] \(.*sleep 6171\) & sleep 6172\) failed: timed out after 1 s/);
  // SIGKILL'ed at the timeout: gone at once, or within moments on a loaded machine (never 60 s).
  let alive = true;
  for (let i = 0; i < 30 && alive; i++) {
    alive = spawnSync('pgrep', ['-f', 'sleep 617[12]']).status === 0; // durations nothing else uses
    if (alive) await new Promise((res) => setTimeout(res, 100));
  }
  assert.equal(alive, false, `nothing it started is left running: ${spawnSync('ps', ['-eo', 'pid,pgid,ppid,stat,args']).stdout.toString().split('\n').filter((l) => /sleep 617[12]/.test(l)).join('; ')}`);
  reset();

  // 5. SIGTERM in the middle of the backup: unmounted and removed, maintenance off, exit 1.
  c = lvmConfig('fail', vg, origin, standard('"true"'));
  const child = spawn(BIN, ['backup', '-c', c.cfg], { env: { ...env, BAKKER_FAULT: 'mid-walk:pause' }, stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr.on('data', (d) => (err += d));
  await new Promise((res) => setTimeout(res, 200));
  for (let i = 0; i < 100 && !fs.existsSync(snapImg); i++) await new Promise((res) => setTimeout(res, 50));
  await new Promise((res) => setTimeout(res, 300));
  child.kill('SIGTERM');
  const code = await new Promise((res) => child.on('close', res));
  assert.equal(code, 1, err);
  assert.match(err, /interrupted/);
  assert.ok(!fs.existsSync(snapImg), 'the snapshot is removed');
  assert.ok(!fs.existsSync(c.view), 'and unmounted');
  assert.match(fs.readFileSync(path.join(marks, 'on_failure'), 'utf8'), /^failed: .*interrupted/);
  reset();

  // 6. What a crashed run left (a mounted snapshot) is removed before the next snapshot.
  sh('lvcreate', ['-y', '-s', '-n', 'bakker-fail-view', '-L', '64M', `${vg}/data`], { env });
  fs.mkdirSync(c.view, { recursive: true });
  sh('mount', ['-o', 'ro,nouuid', `/dev/${vg}/bakker-fail-view`, c.view]);
  r = bakker(['backup', '-c', c.cfg, '--json'], { env });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /left by an earlier run: removing it first/);
  assert.ok(!fs.existsSync(snapImg));
});
