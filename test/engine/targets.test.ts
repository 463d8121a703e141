import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { bakker, jsonLines } from '../helpers/cli.js';
import { startSshd, type Sshd, type SftpAccount } from '../helpers/sshd.js';
import { build, requireTool, rmrf, sh, tempDir } from '../helpers/tree.js';

/*
 * A job with a local target and a remote one: the remote gets copies of the local snapshots
 * (the sources are read once), catches up after missed runs, and is as complete as the local one.
 */

let sshd: Sshd;
let acc: SftpAccount;
let work: string;
let src: string;
let localStore: string;

before(async () => {
  for (const t of ['rsync', 'setfacl', 'setfattr']) requireTool(t);
  sshd = await startSshd();
  acc = sshd.addAccount();
  work = tempDir();
  src = path.join(work, 'src');
  localStore = path.join(work, 'local');
  build(src, [
    { file: 'a.txt', content: 'alpha', mode: 0o640, uid: 1000, gid: 1000 },
    { file: 'keep/big.bin', content: Buffer.alloc(200_000, 3) },
    { file: 'edit.txt', content: 'v1' },
    { file: 'gone.txt', content: 'will be deleted' },
    { symlink: 'link', target: 'a.txt' },
    { file: 'h1', content: 'hard' },
    { hardlink: 'h2', to: 'h1' },
    { fifo: 'pipe' },
    { sparse: 'sparse.img', size: 2 << 20, data: [{ at: 1 << 20, text: 'middle' }] },
  ]);
  sh('setfacl', ['-m', 'u:1000:rw', path.join(src, 'a.txt')]);
  sh('setfattr', ['-n', 'user.note', '-v', 'kept', path.join(src, 'edit.txt')]);
});

after(async () => {
  await sshd?.stop();
  if (work) rmrf(work);
});

function config(file: string, offsite: string, extra = ''): string {
  fs.writeFileSync(
    file,
    [
      'sources:',
      `  - ${src}`,
      'targets:',
      '  local:',
      `    store: ${localStore}`,
      '  offsite:',
      `    store: ${offsite}`,
      `    identity: ${acc.key}`,
      `    known_hosts: ${sshd.knownHosts}`,
      extra,
    ].join('\n'),
  );
  return file;
}

/** An impl's entry lines (header and trailer dropped). */
function entries(implFile: string): string[] {
  const lines = zlib.gunzipSync(fs.readFileSync(implFile)).toString('utf8').split('\n').filter(Boolean);
  return lines.slice(1).filter((l) => !l.startsWith('{"trailer"'));
}

const summaries = (out: string) => jsonLines(out).filter((e) => e.event === 'summary');

test('a remote target is fed from the local snapshot just made, catches up after missed runs, and restores as the source was', () => {
  const remoteDir = path.join(acc.root, 'backups/server1');
  const cfg = config(path.join(work, 'bakker.yaml'), `${acc.url}/server1`);

  // 1. Both targets in one run: local from the sources, offsite a copy of it.
  const r1 = bakker(['backup', '-c', cfg, '--json']);
  assert.equal(r1.code, 0, r1.stderr);
  const [local1, off1] = summaries(r1.stdout);
  assert.equal(local1!.target, 'local');
  assert.equal(off1!.target, 'offsite');
  const s1 = String(local1!.snapshot);
  assert.equal(off1!.snapshot, s1, 'the copy has the local snapshot\'s name');
  assert.deepEqual(off1!.from, { target: 'local', store: localStore, snapshot: s1 });
  assert.deepEqual(entries(path.join(remoteDir, `${s1}.impl`)), entries(path.join(localStore, `${s1}.impl`)), 'every entry, metadata and all, as the local impl has it');
  const header = JSON.parse(zlib.gunzipSync(fs.readFileSync(path.join(remoteDir, `${s1}.impl`))).toString('utf8').split('\n')[0]!);
  assert.deepEqual(header.copiedFrom?.snapshot, s1);
  assert.equal(fs.lstatSync(path.join(remoteDir, s1, src, 'h1')).ino, fs.lstatSync(path.join(remoteDir, s1, src, 'h2')).ino, 'a hard-link group stays one inode');

  // 2. offsite misses two runs (only the local target runs).
  fs.writeFileSync(path.join(src, 'edit.txt'), 'v2, longer');
  fs.rmSync(path.join(src, 'gone.txt'));
  const r2 = bakker(['backup', '-c', cfg, '--target', 'local', '--json']);
  assert.equal(r2.code, 0, r2.stderr);
  fs.writeFileSync(path.join(src, 'new.txt'), 'new in the third run');
  const r3 = bakker(['backup', '-c', cfg, '--target', 'local', '--json']);
  assert.equal(r3.code, 0, r3.stderr);
  const s3 = String(summaries(r3.stdout)[0]!.snapshot);

  // 3. Catch-up from the newest local snapshot, with the sources gone: they are not read.
  fs.renameSync(src, `${src}.away`);
  const r4 = bakker(['backup', '-c', cfg, '--target', 'offsite', '--json']);
  fs.renameSync(`${src}.away`, src);
  assert.equal(r4.code, 0, r4.stderr);
  const off4 = summaries(r4.stdout)[0]!;
  assert.equal(off4.snapshot, s3);
  assert.equal(off4.previous, s1, 'compared with what the store had, however old');
  assert.equal(off4.copied, 2, 'edit.txt changed and new.txt added since the store\'s newest');
  assert.equal(off4.removed, 1, 'gone.txt');
  assert.equal(fs.lstatSync(path.join(remoteDir, s1, src, 'keep/big.bin')).ino, fs.lstatSync(path.join(remoteDir, s3, src, 'keep/big.bin')).ino, 'unchanged content is a hard link on the store');
  assert.ok(!fs.existsSync(path.join(remoteDir, s3, src, 'gone.txt')));
  assert.equal(fs.readlinkSync(path.join(remoteDir, 'latest')), s3);
  assert.deepEqual(fs.readdirSync(path.join(remoteDir, `${s3}.diff`, src)).sort(), ['edit.txt', 'new.txt'], 'the diff folder holds what is new since the store\'s previous');

  // 4. Nothing new: nothing to copy.
  const r5 = bakker(['backup', '-c', cfg, '--target', 'offsite', '--json']);
  assert.equal(r5.code, 0, r5.stderr);
  assert.match(String(summaries(r5.stdout)[0]!.upToDate), new RegExp(`already has ${s3}`));

  // 5. Restored from the remote copy: contents, owners, modes, ns times, ACLs, xattrs, links, the fifo.
  const to = path.join(work, 'restored');
  const rr = bakker(['restore', '--store', `${acc.url}/server1`, '--snapshot', 'latest', '--to', to, '--identity', acc.key, '--known-hosts', sshd.knownHosts]);
  assert.equal(rr.code, 0, rr.stderr);
  const check = sh('rsync', ['-aHAXn', '--itemize-changes', `${src}/`, `${path.join(to, src)}/`]);
  assert.equal(check.trim(), '', `restored tree differs:\n${check}`);
  const v = bakker(['verify', '--store', `${acc.url}/server1`, '--snapshot', 'all', '--identity', acc.key, '--known-hosts', sshd.knownHosts]);
  assert.equal(v.code, 0, v.stdout + v.stderr);
});

test('an unreachable remote target fails the run (exit 1, one line naming it) and leaves the local snapshot made; from: source backs up the sources directly', () => {
  const dead = `sftp://${acc.user}@127.0.0.1:1/backups/server2`;
  const cfg = config(path.join(work, 'dead.yaml'), dead, '    reconnect_for: 0');
  const before = fs.readdirSync(localStore).filter((n) => /^\d{4}_\d\d_\d\d_\d\d$/.test(n)).length;
  const r = bakker(['backup', '-c', cfg]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^bakker: target offsite: 127\.0\.0\.1:1 refused the connection: is sshd running there, on that port\?$/m);
  assert.equal(fs.readdirSync(localStore).filter((n) => /^\d{4}_\d\d_\d\d_\d\d$/.test(n)).length, before + 1, 'the local snapshot was made');

  const direct = config(path.join(work, 'direct.yaml'), `${acc.url}/server3`, '    from: source');
  const d = bakker(['backup', '-c', direct, '--target', 'offsite', '--json']);
  assert.equal(d.code, 0, d.stderr);
  const s = summaries(d.stdout)[0]!;
  assert.equal(s.from, undefined);
  assert.equal(s.previous, null, 'a first, full backup of the sources');

  const bad = config(path.join(work, 'bad.yaml'), `${acc.url}/server4`, '    from: nowhere');
  const b = bakker(['backup', '-c', bad]);
  assert.equal(b.code, 2);
  assert.match(b.stderr, /bad\.yaml:\d+: targets\.offsite\.from: "nowhere" is not another target here \(targets: local, offsite\); or write "source"/);
});
