import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { runBackup } from '../../src/engine/backup/backup.js';
import type { BakkerEvent } from '../../src/engine/events.js';
import { openStore } from '../../src/store/open.js';
import { bakker, jsonLines } from '../helpers/cli.js';
import { startSshd, type Sshd, type SftpAccount } from '../helpers/sshd.js';
import { build, rmrf, sh, tempDir } from '../helpers/tree.js';

/*
 * bakker prune on real stores: snapshots removed by the policy, the kept ones after them merged
 * (diff folders checked against a recomputation from the trees, `since` history), indexes kept
 * usable, verify and restore still exact; locally and over SFTP.
 */

let work: string;
let sshd: Sshd;
let acc: SftpAccount;

before(async () => {
  work = tempDir();
  sshd = await startSshd();
  acc = sshd.addAccount();
});

after(async () => {
  await sshd?.stop();
  if (work) rmrf(work);
});

/** One run at local time `when` (its name and start come from it); returns the snapshot and events. */
async function backupAt(store: string, src: string, when: Date, ssh?: { identity: string; knownHosts: string }): Promise<{ name: string; events: BakkerEvent[] }> {
  const s = await openStore(store, { create: true, ...(ssh ? { ssh } : {}) });
  const events: BakkerEvent[] = [];
  try {
    const r = await runBackup({ store: s, sources: [{ path: src }], now: when, emit: (e) => void events.push(e) });
    return { name: r.snapshot!, events };
  } finally {
    await s.close();
  }
}

/** Every file and symlink under `dir` (relative paths), with its inode. */
function files(dir: string): Map<string, number> {
  const out = new Map<string, number>();
  const walk = (d: string, rel: string) => {
    if (!fs.existsSync(d)) return;
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) walk(path.join(d, e.name), r);
      else out.set(r, fs.lstatSync(path.join(d, e.name)).ino);
    }
  };
  walk(dir, '');
  return out;
}

/** What a diff folder must hold: what in `snap`'s tree is not the same inode in `prev`'s (all of it without a previous), one path per inode. */
function expectedDiff(root: string, snap: string, prev: string | null): string[] {
  const now = files(path.join(root, snap));
  const before = prev ? files(path.join(root, prev)) : new Map<string, number>();
  const seen = new Set<number>();
  const out: string[] = [];
  for (const [p, ino] of [...now].sort(([a], [b]) => (a < b ? -1 : 1))) {
    if (before.get(p) === ino || seen.has(ino)) continue;
    seen.add(ino);
    out.push(p);
  }
  return out.sort();
}

function sinces(root: string, snap: string): Set<string> {
  const lines = zlib.gunzipSync(fs.readFileSync(path.join(root, `${snap}.impl`))).toString('utf8').split('\n').filter(Boolean);
  return new Set(lines.slice(1).map((l) => JSON.parse(l).since).filter((x) => typeof x === 'string'));
}

/** Six runs in January and February; each changes something. */
async function history(store: string, src: string, ssh?: { identity: string; knownHosts: string }): Promise<string[]> {
  build(src, [
    { file: 'a.txt', content: 'a0' },
    { file: 'keep/same.bin', content: Buffer.alloc(50_000, 1) },
    { file: 'b.txt', content: 'b0' },
    { file: 'gone.txt', content: 'g' },
    { file: 'h1', content: 'hard' },
    { hardlink: 'h2', to: 'h1' },
    { symlink: 'ln', target: 'a.txt' },
  ]);
  const days = [new Date(2026, 0, 10, 1), new Date(2026, 0, 20, 1), new Date(2026, 0, 31, 1), new Date(2026, 1, 10, 1), new Date(2026, 1, 20, 1), new Date(2026, 1, 28, 1)];
  const names: string[] = [];
  for (const [i, d] of days.entries()) {
    if (i > 0) fs.writeFileSync(path.join(src, 'a.txt'), `a${i}`);
    if (i === 2) fs.writeFileSync(path.join(src, 'b.txt'), 'b2, changed in the third run');
    if (i === 1) fs.writeFileSync(path.join(src, 'c.txt'), 'added in the second run');
    if (i === 3) fs.rmSync(path.join(src, 'gone.txt'));
    if (i === 4) fs.writeFileSync(path.join(src, 'h1'), 'hard, changed in the fifth run');
    names.push((await backupAt(store, src, d, ssh)).name);
  }
  return names;
}

test('prune (local): keep_monthly 2 removes four of six snapshots; the kept ones are merged, verified and restorable', async () => {
  const store = path.join(work, 'local');
  const src = path.join(work, 'src-local');
  const [s1, s2, s3, s4, s5, s6] = (await history(store, src)) as [string, string, string, string, string, string];

  const dry = bakker(['prune', '--store', store, '--keep-monthly', '2', '--dry-run']);
  assert.equal(dry.code, 0, dry.stderr);
  assert.match(dry.stdout, new RegExp(`^${s6}\\s+\\S+\\s+keep\\s+monthly snapshot$`, 'm'));
  assert.match(dry.stdout, new RegExp(`^${s5}\\s+\\S+\\s+remove\\s+no rule keeps it$`, 'm'));
  assert.equal(fs.readdirSync(store).filter((n) => n.endsWith('.impl')).length, 6, 'a dry run removes nothing');

  const r = bakker(['prune', '--store', store, '--keep-monthly', '2', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const sum = jsonLines(r.stdout).find((e) => e.event === 'summary')!;
  assert.deepEqual(sum.removed, [s1, s2, s4, s5]);
  assert.deepEqual(sum.merged, [s3, s6]);
  for (const gone of [s1, s2, s4, s5]) {
    for (const p of [gone, `${gone}.impl`, `${gone}.diff`, `.bakker/summary/${gone}.json`]) assert.ok(!fs.existsSync(path.join(store, p)), `${p} removed`);
  }
  const root = path.join(store); // trees hold the sources under their absolute paths
  const rel = (snap: string) => path.join(snap, src).slice(0);
  // s3 is the oldest now: its diff holds all of it; s6's holds what is new since s3.
  assert.deepEqual([...files(path.join(root, `${s3}.diff`, src)).keys()].sort(), expectedDiff(root, rel(s3), null));
  assert.deepEqual([...files(path.join(root, `${s6}.diff`, src)).keys()].sort(), expectedDiff(root, rel(s6), rel(s3)));
  assert.deepEqual(expectedDiff(root, rel(s6), rel(s3)), ['a.txt', 'h1'], 'a changed in runs 4-6, h1/h2 in run 5 (one path per inode)');
  for (const [p, ino] of files(path.join(root, `${s6}.diff`, src))) assert.equal(fs.lstatSync(path.join(root, s6, src, p)).ino, ino, 'diff entries are links to the tree');
  assert.deepEqual([...sinces(root, s6)].sort(), [s3, s6].sort(), 'no history names a removed snapshot');
  assert.ok([...sinces(root, s3)].every((x) => x === s3));

  const v = bakker(['verify', '--store', store, '--snapshot', 'all']);
  assert.equal(v.code, 0, v.stdout + v.stderr);
  const to = path.join(work, 'restored-local');
  assert.equal(bakker(['restore', '--store', store, '--snapshot', 'latest', '--to', to]).code, 0);
  assert.equal(sh('rsync', ['-aHn', '--itemize-changes', `${src}/`, `${path.join(to, src)}/`]).trim(), '');

  // The next run still has its index (rebound to the rewritten impl of the newest).
  fs.writeFileSync(path.join(src, 'a.txt'), 'a after prune');
  const next = await backupAt(store, src, new Date(2026, 2, 1, 1));
  assert.equal((next.events.find((e) => e.event === 'start') as { indexed?: boolean }).indexed, true);
});

test('prune over SFTP, and after each backup as the target\'s retention says', async () => {
  const url = `${acc.url}/server1`;
  const ssh = { identity: acc.key, knownHosts: sshd.knownHosts };
  const src = path.join(work, 'src-sftp');
  const state = path.join(work, 'state-sftp');
  process.env.BAKKER_STATE_DIR = state;
  const names = await history(url, src, ssh);
  const root = path.join(acc.root, 'backups/server1');
  const r = bakker(['prune', '--store', url, '--keep-last', '2', '--json', '--identity', acc.key, '--known-hosts', sshd.knownHosts], { env: { BAKKER_STATE_DIR: state } });
  assert.equal(r.code, 0, r.stderr);
  const sum = jsonLines(r.stdout).find((e) => e.event === 'summary')!;
  assert.deepEqual(sum.removed, names.slice(0, 4));
  assert.deepEqual(sum.merged, [names[4]]);
  const [s5, s6] = [names[4]!, names[5]!];
  assert.deepEqual([...files(path.join(root, `${s5}.diff`, src)).keys()].sort(), expectedDiff(root, path.join(s5, src), null));
  assert.deepEqual([...files(path.join(root, `${s6}.diff`, src)).keys()].sort(), expectedDiff(root, path.join(s6, src), path.join(s5, src)));
  assert.equal(bakker(['verify', '--store', url, '--snapshot', 'all', '--identity', acc.key, '--known-hosts', sshd.knownHosts]).code, 0);

  // retention: in the config: pruned right after the new snapshot is published.
  const cfg = path.join(work, 'retention.yaml');
  fs.writeFileSync(cfg, [`sources: [${src}]`, 'targets:', '  offsite:', `    store: ${url}`, `    identity: ${acc.key}`, `    known_hosts: ${sshd.knownHosts}`, '    retention:', '      keep_last: 1', ''].join('\n'));
  fs.writeFileSync(path.join(src, 'a.txt'), 'a, one more');
  const b = bakker(['backup', '-c', cfg, '--json'], { env: { BAKKER_STATE_DIR: state } });
  assert.equal(b.code, 0, b.stderr);
  const ev = jsonLines(b.stdout);
  const made = String(ev.find((e) => e.event === 'summary' && e.command === 'backup')!.snapshot);
  const pr = ev.find((e) => e.event === 'summary' && e.command === 'prune')!;
  assert.deepEqual(pr.removed, [s5, s6]);
  assert.deepEqual(fs.readdirSync(root).filter((n) => n.endsWith('.impl')), [`${made}.impl`]);
  assert.equal(fs.readlinkSync(path.join(root, 'latest')), made);
  assert.deepEqual([...files(path.join(root, `${made}.diff`, src)).keys()].sort(), expectedDiff(root, path.join(made, src), null), 'the only snapshot: its diff holds all of it');
  delete process.env.BAKKER_STATE_DIR;
});

test('prune: an empty policy removes nothing; bad flags are one-line usage errors', () => {
  const store = path.join(work, 'local');
  const r = bakker(['prune', '--store', store]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /no policy given: nothing is removed/);
  const bad = bakker(['prune', '--store', store, '--keep-within', '2w']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /^bakker prune: --keep-within 2w: expected a duration such as 14d, 6m or 1y6m$/m);
  const cfgBad = path.join(work, 'bad-ret.yaml');
  fs.writeFileSync(cfgBad, `sources: [/etc]\ntargets:\n  local:\n    store: ${store}\n    retention:\n      keep_daily: lots\n`);
  const c = bakker(['prune', '-c', cfgBad]);
  assert.equal(c.code, 2);
  assert.match(c.stderr, /bad-ret\.yaml:6: targets\.local\.retention\.keep_daily: expected a whole number \(-1: all\), got "lots"/);
});
