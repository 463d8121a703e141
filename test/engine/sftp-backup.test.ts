import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { bakker, bakkerAsync, jsonLines } from '../helpers/cli.js';
import { startSshd, type Sshd, type SftpAccount } from '../helpers/sshd.js';
import { build, requireTool, rmrf, sh, tempDir } from '../helpers/tree.js';

/* bakker backup, list, diff, restore and verify on an sftp:// store: a real sshd, a chrooted account. */

let sshd: Sshd;
let acc: SftpAccount;
let work: string;
let src: string;
const odd = Buffer.concat([Buffer.from('odd-'), Buffer.from([0xff]), Buffer.from(' name')]);

const ssh = () => ['--identity', acc.key, '--known-hosts', sshd.knownHosts];

before(async () => {
  requireTool('rsync');
  sshd = await startSshd();
  acc = sshd.addAccount();
  work = tempDir();
  src = path.join(work, 'src');
  build(src, [
    { file: 'a.txt', content: 'alpha', mode: 0o640, uid: 1000, gid: 1000 },
    { file: 'same/b.bin', content: Buffer.alloc(300_000, 7) },
    { file: 'edit.txt', content: 'v1' },
    { symlink: 'link', target: 'a.txt' },
    { file: 'h1', content: 'hard' },
    { hardlink: 'h2', to: 'h1' },
    { sparse: 'sparse.img', size: 4 << 20, data: [{ at: 1 << 20, text: 'middle' }] },
  ]);
  fs.writeFileSync(Buffer.concat([Buffer.from(src + '/'), odd]), 'odd');
});

after(async () => {
  await sshd?.stop();
  if (work) rmrf(work);
});

test('backup to sftp://, incremental with hard links on the server, restore and verify', () => {
  const url = `${acc.url}/server1`;
  const r1 = bakker(['backup', src, '--store', url, '--json', ...ssh()]);
  assert.equal(r1.code, 0, r1.stderr);
  fs.writeFileSync(path.join(src, 'edit.txt'), 'v2 changed');
  const r2 = bakker(['backup', src, '--store', url, '--json', ...ssh()]);
  assert.equal(r2.code, 0, r2.stderr);
  const sum = jsonLines(r2.stdout).find((e) => e.event === 'summary')!;
  assert.equal(sum.changed, 1);
  assert.ok((sum.linked as number) >= 5, `unchanged files linked on the server: ${sum.linked}`);
  const s2 = String(sum.snapshot);
  const s1 = String(sum.previous);

  // On the server, unchanged files are one inode in both snapshots; the changed one is not.
  const onServer = (snap: string, f: string) => fs.lstatSync(path.join(acc.root, 'backups/server1', snap, src, f));
  assert.equal(onServer(s1, 'same/b.bin').ino, onServer(s2, 'same/b.bin').ino);
  assert.notEqual(onServer(s1, 'edit.txt').ino, onServer(s2, 'edit.txt').ino);
  assert.equal(onServer(s2, 'h1').ino, onServer(s2, 'h2').ino, 'a hard-link group stays one inode');
  assert.equal(fs.readlinkSync(path.join(acc.root, 'backups/server1/latest')), s2);

  const list = bakker(['list', '--store', url, '--json', ...ssh()]);
  assert.equal(list.code, 0, list.stderr);
  assert.deepEqual(jsonLines(list.stdout).filter((e) => e.event === 'snapshot').map((e) => e.name), [s1, s2]);
  const diff = bakker(['diff', '--store', url, s1, s2, ...ssh()]);
  assert.equal(diff.code, 0, diff.stderr);
  assert.match(diff.stdout, /edit\.txt/);

  const to = path.join(work, 'restored');
  const rr = bakker(['restore', '--store', url, '--snapshot', 'latest', '--to', to, ...ssh()]);
  assert.equal(rr.code, 0, rr.stderr);
  // rsync as an independent checker: contents, modes, owners, ns times (from the impl), links.
  const check = sh('rsync', ['-aHn', '--itemize-changes', `${src}/`, `${path.join(to, src)}/`]);
  assert.equal(check.trim(), '', `restored tree differs:\n${check}`);
  assert.equal(fs.statSync(path.join(to, src, 'sparse.img')).blocks * 512 < 4 << 20, true, 'sparse after restore');

  const v = bakker(['verify', '--store', url, '--snapshot', 'all', ...ssh()]);
  assert.equal(v.code, 0, v.stdout + v.stderr);
});

test('remote fast path: unchanged files found through this server\'s index of the last snapshot are linked on the store; a stored copy gone is copied anew; an impl changed under the index is caught', () => {
  const url = `${acc.url}/server5`;
  const state = path.join(work, 'state5');
  const env = { BAKKER_STATE_DIR: state };
  const tree = path.join(work, 'src5');
  build(tree, [
    ...Array.from({ length: 300 }, (_, i) => ({ file: `d/f${String(i).padStart(3, '0')}`, content: `file ${i}` })),
    { symlink: 'd/ln', target: 'f001' },
    { file: 'top.txt', content: 'top' },
  ]);
  const run = () => {
    const r = bakker(['backup', tree, '--store', url, '--json', ...ssh()], { env });
    const ev = jsonLines(r.stdout);
    return { r, ev, start: ev.find((e) => e.event === 'start')!, sum: ev.find((e) => e.event === 'summary')! };
  };
  const first = run();
  assert.equal(first.r.code, 0, first.r.stderr);
  assert.equal(first.start.indexed, false, 'nothing to compare with on the first run');
  const cacheDir = path.join(state, 'index');
  const [storeDir] = fs.readdirSync(cacheDir);
  const s1 = String(first.sum.snapshot);
  assert.ok(fs.existsSync(path.join(cacheDir, storeDir!, s1)), 'the index of the new snapshot is kept on this server');

  fs.writeFileSync(path.join(tree, 'top.txt'), 'top changed');
  const second = run();
  assert.equal(second.r.code, 0, second.r.stderr);
  assert.equal(second.start.indexed, true);
  assert.equal(second.sum.changed, 1);
  assert.equal(second.sum.linked, 301, 'the 300 files (more than one link batch) and the symlink, linked by the fast path');
  const s2 = String(second.sum.snapshot);
  const onServer = (snap: string, f: string) => fs.lstatSync(path.join(acc.root, 'backups/server5', snap, tree, f));
  assert.equal(onServer(s1, 'd/f007').ino, onServer(s2, 'd/f007').ino);
  assert.equal(onServer(s1, 'd/ln').ino, onServer(s2, 'd/ln').ino);
  assert.deepEqual(fs.readdirSync(path.join(cacheDir, storeDir!)), [s2], 'only the newest index is kept');

  // A stored copy removed from the last snapshot on the store: its link fails, it is copied anew.
  fs.rmSync(path.join(acc.root, 'backups/server5', s2, tree, 'd/f003'));
  const third = run();
  assert.equal(third.r.code, 0, third.r.stderr);
  assert.equal(third.start.indexed, true);
  const warned = third.ev.find((e) => e.event === 'warning' && String(e.path).endsWith('d/f003'));
  assert.match(String(warned?.message), /stored copy in the previous snapshot is missing: copying anew/);
  assert.equal(third.sum.copied, 1);
  const s3 = String(third.sum.snapshot);
  assert.equal(fs.readFileSync(path.join(acc.root, 'backups/server5', s3, tree, 'd/f003'), 'utf8'), 'file 3');
  const to = path.join(work, 'restored5');
  const rr = bakker(['restore', '--store', url, '--snapshot', 'latest', '--to', to, ...ssh()], { env });
  assert.equal(rr.code, 0, rr.stderr);
  const check = sh('rsync', ['-aHn', '--itemize-changes', `${tree}/`, `${path.join(to, tree)}/`]);
  assert.equal(check.trim(), '', `restored tree differs:\n${check}`);
  assert.equal(bakker(['verify', '--store', url, '--snapshot', 'latest', ...ssh()], { env }).code, 0);

  // The index says it was made with another impl of the same size (as if the impl had been
  // replaced on the store): the run reads the impl, finds out, fails before publishing and drops
  // the index; the next run takes the ordinary path.
  const idx = path.join(cacheDir, storeDir!, s3);
  const bytes = fs.readFileSync(idx);
  const at = bytes.lastIndexOf(Buffer.from('"impl":"')) + 8;
  bytes.write('0'.repeat(64), at, 'latin1');
  fs.writeFileSync(idx, bytes);
  const fourth = run();
  assert.equal(fourth.r.code, 1);
  assert.match(fourth.r.stderr, /^bakker: the impl of \S+ on the store is not the one this server's index of it was made with: the index was dropped; run the backup again/m);
  assert.equal(fs.readlinkSync(path.join(acc.root, 'backups/server5/latest')), s3, 'nothing published');
  assert.ok(!fs.existsSync(idx));
  const fifth = run();
  assert.equal(fifth.r.code, 0, fifth.r.stderr);
  assert.equal(fifth.start.indexed, false);
  assert.equal(fifth.sum.linked, 302);
  assert.equal(run().start.indexed, true, 'and the run after that has an index again');
});

test('bakker init: makes a key, refuses a host key nothing vouches for, records a vouched one, says how to authorize the key, then checks the store and writes a config that backs up', () => {
  const port = new URL(acc.url).port;
  const dir = path.join(work, 'init');
  const config = path.join(dir, 'bakker.yaml');
  const user = sshd.nextAccountName();
  const url = `sftp://${user}@127.0.0.1:${port}/backups/server6`;
  const tree = path.join(work, 'src6');
  build(tree, [{ file: 'x.txt', content: 'x' }]);
  const env = { HOME: dir }; // not this machine's ~/.ssh/known_hosts
  const init = (...extra: string[]) => bakker(['init', '--store', url, '--config', config, '--source', tree, ...extra], { env });

  const r1 = init();
  assert.equal(r1.code, 1, r1.stderr);
  const unknown = new RegExp(`^bakker: the host key of 127\\.0\\.0\\.1:${port} is not known yet \\((SHA256:[A-Za-z0-9+/]{43})\\): compare it .* run bakker init again with --host-key SHA256:\\S+, or with --trust-on-first-use if the network to it can be trusted now$`, 'm');
  const fp = unknown.exec(r1.stderr)?.[1];
  assert.ok(fp, r1.stderr);
  assert.equal(fs.statSync(path.join(dir, 'id_ed25519')).mode & 0o777, 0o600, 'a private key, readable by root only');
  assert.match(fs.readFileSync(path.join(dir, 'id_ed25519.pub'), 'utf8'), /^ssh-ed25519 \S+ bakker@/);
  assert.match(fs.readFileSync(config, 'utf8'), new RegExp(`store: "${url}"`));
  assert.ok(!fs.existsSync(path.join(dir, 'known_hosts')), 'nothing recorded');
  const fpOfHost = sh('ssh-keygen', ['-lf', '-'], { input: sshd.hostKey }).split(' ')[1];
  assert.equal(fp, fpOfHost, 'the fingerprint shown is the one ssh-keygen prints for the host key');

  const r2 = init('--host-key', `SHA256:${'A'.repeat(43)}`);
  assert.equal(r2.code, 1);
  assert.match(r2.stderr, unknown, 'a fingerprint that does not match is refused too');

  const r3 = init('--host-key', fp!);
  assert.equal(r3.code, 1);
  assert.match(r3.stderr, new RegExp(`^bakker: ${user}@127\\.0\\.0\\.1 does not accept the key ${dir}/id_ed25519 yet: on the storage server, as root, run 'bakker storage add-client ${user} --pubkey FILE'`, 'm'));
  assert.ok(r3.stdout.includes(fs.readFileSync(path.join(dir, 'id_ed25519.pub'), 'utf8').trim()), 'the public key is printed');
  assert.equal(fs.readFileSync(path.join(dir, 'known_hosts'), 'utf8'), `[127.0.0.1]:${port} ${sshd.hostKey}\n`, 'recorded as OpenSSH writes it');

  // The admin adds the client with that key; init now passes without any host key option.
  assert.equal(sshd.addAccount({ pubkey: path.join(dir, 'id_ed25519.pub') }).user, user);
  const r4 = init('--json');
  assert.equal(r4.code, 0, r4.stderr);
  const sum = jsonLines(r4.stdout).find((e) => e.event === 'summary')!;
  assert.equal(sum.keyMade, false);
  assert.equal(sum.configMade, false, 'the config written on the first try is kept');
  assert.ok((sum.freeBytes as number) > 0);
  const b = bakker(['backup', '-c', config, '--json'], { env });
  assert.equal(b.code, 0, b.stderr);
  const snap = String(jsonLines(b.stdout).find((e) => e.event === 'summary')!.snapshot);
  assert.equal(fs.readFileSync(path.join(sshd.chrootBase, user, 'backups/server6', snap, tree, 'x.txt'), 'utf8'), 'x');

  // Trust on first use, asked for: an existing authorized key, the host key recorded, done.
  const dir2 = path.join(work, 'init2');
  const r5 = bakker(['init', '--store', `${acc.url}/server7`, '--config', path.join(dir2, 'bakker.yaml'), '--identity', acc.key, '--trust-on-first-use'], { env: { HOME: dir2 } });
  assert.equal(r5.code, 0, r5.stderr);
  assert.equal(fs.readFileSync(path.join(dir2, 'known_hosts'), 'utf8'), `[127.0.0.1]:${port} ${sshd.hostKey}\n`);
  assert.match(fs.readFileSync(path.join(dir2, 'bakker.yaml'), 'utf8'), /sources:\n  - "\/etc"/);
});

test('sftp:// errors are one line that names the fix', () => {
  const wrong = path.join(work, 'wrong_known_hosts');
  fs.writeFileSync(wrong, '');
  const r = bakker(['list', '--store', `${acc.url}/server1`, '--identity', acc.key, '--known-hosts', wrong]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr.trim(), /host key of 127\.0\.0\.1:\d+ \(SHA256:.*\) is not in .*ssh-keyscan/);
  assert.equal(r.stderr.trim().split('\n').length, 1);
  const m = bakker(['list', '--store', `${acc.url}/nothing-here`, ...ssh()]);
  assert.equal(m.code, 1);
  assert.match(m.stderr, /does not exist/);
  const bad = bakker(['list', '--store', 'sftp://nohost', ...ssh()]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /sftp:\/\/user@host\[:port\]\/path/);
});

test('an sftp:// store that fills up fails cleanly and keeps earlier snapshots', () => {
  const small = sshd.addAccount({ sizeMB: 64 });
  const s2 = path.join(work, 'src2');
  build(s2, [{ file: 'small.txt', content: 'small' }]);
  const url = `${small.url}/server2`;
  const args = ['--identity', small.key, '--known-hosts', sshd.knownHosts];
  assert.equal(bakker(['backup', s2, '--store', url, ...args]).code, 0);
  const storeDir = path.join(small.root, 'backups/server2');
  const first = fs.readlinkSync(path.join(storeDir, 'latest'));
  fs.writeFileSync(path.join(s2, 'big.bin'), Buffer.alloc(80 << 20, 3));
  const r = bakker(['backup', s2, '--store', url, ...args]);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /^bakker: store sftp:\/\/.* is full \(ENOSPC\): it filled while copying [\d.]+ \w+ of new data, [\d.]+ \w+ free: free space there, prune old snapshots, or ask for more \(a request was left in \.bakker\/requests\/\); no snapshot was published and earlier ones are intact$/m);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  // The request for more space is there for the storage side (bakker storage requests).
  const reqs = fs.readdirSync(path.join(storeDir, '.bakker/requests'));
  assert.equal(reqs.length, 1);
  const req = JSON.parse(fs.readFileSync(path.join(storeDir, '.bakker/requests', reqs[0]!), 'utf8')) as { wantBytes: number; message: string };
  assert.ok(req.wantBytes >= 80 << 20, `wants at least what the run had to copy: ${req.wantBytes}`);
  assert.match(req.message, /^store full: /);
  const listed = bakker(['storage', 'requests', '--json', '--storage-config', sshd.storageConfig]);
  assert.ok(jsonLines(listed.stdout).some((e) => e.event === 'request' && e.client === small.user), listed.stdout);
  assert.equal(fs.readlinkSync(path.join(storeDir, 'latest')), first);
  assert.deepEqual(fs.readdirSync(path.join(storeDir, '.bakker/run')), []);
  assert.ok(!fs.existsSync(path.join(storeDir, '.bakker/lock')));
  const v = bakker(['verify', '--store', url, '--snapshot', 'all', ...args]);
  assert.equal(v.code, 0, v.stdout + v.stderr);
  fs.rmSync(path.join(s2, 'big.bin'));
  const again = bakker(['backup', s2, '--store', url, ...args]);
  assert.equal(again.code, 0, again.stderr);
});

test('with --reconnect-for 0, a connection that drops mid-run fails the run cleanly; the next run takes over and completes', async () => {
  const url = `${acc.url}/server3`;
  const storeDir = path.join(acc.root, 'backups/server3');
  assert.equal(bakker(['backup', src, '--store', url, ...ssh()]).code, 0);
  const first = fs.readlinkSync(path.join(storeDir, 'latest'));
  fs.writeFileSync(path.join(src, 'during.txt'), 'new');
  const child = bakkerAsync(['backup', src, '--store', url, '--reconnect-for', '0', ...ssh()], { BAKKER_FAULT: 'before-publish:pause' });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<number>((resolve) => child.on('exit', (c) => resolve(c ?? -1)));
  // Wait until the run sits at its publish step, then cut its SSH session (the user's processes).
  const runDir = path.join(storeDir, '.bakker/run');
  for (let i = 0; i < 200; i++) {
    const runs = fs.existsSync(runDir) ? fs.readdirSync(runDir) : [];
    if (runs.some((r) => fs.existsSync(path.join(runDir, r, 'impl')))) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  sh('pkill', ['-KILL', '-u', acc.user]);
  const code = await exited;
  assert.equal(code, 1, stderr);
  assert.match(stderr.trim(), /^bakker: .*(connection lost|ECONNRESET).*no snapshot was published and earlier ones are intact$/);
  assert.equal(fs.readlinkSync(path.join(storeDir, 'latest')), first, 'latest untouched');
  const again = bakker(['backup', src, '--store', url, '--json', ...ssh()]);
  assert.equal(again.code, 0, again.stderr);
  const events = jsonLines(again.stdout);
  assert.ok(events.some((e) => e.event === 'info' && /took over the lock/.test(String(e.message))), 'the dead run\'s lock is taken over');
  assert.deepEqual(fs.readdirSync(runDir), [], 'the dead run\'s folder is cleaned');
  const v = bakker(['verify', '--store', url, '--snapshot', 'latest', ...ssh()]);
  assert.equal(v.code, 0, v.stdout + v.stderr);
  fs.rmSync(path.join(src, 'during.txt'));
});

test('sshd killed and restarted mid-run: the run reconnects, goes on where it was and publishes a complete snapshot', async () => {
  const url = `${acc.url}/server4`;
  const storeDir = path.join(acc.root, 'backups/server4');
  const many = path.join(work, 'many');
  build(many, Array.from({ length: 1500 }, (_, i) => ({ file: `d${i % 30}/f${i}.txt`, content: `file ${i} `.repeat(1 + (i % 50)) })));
  const first = bakker(['backup', many, '--store', url, '--json', ...ssh()]);
  assert.equal(first.code, 0, first.stderr);
  const firstEntries = jsonLines(first.stdout).find((e) => e.event === 'summary')!.entries;
  for (let i = 0; i < 1500; i += 7) fs.writeFileSync(path.join(many, `d${i % 30}/f${i}.txt`), `changed ${i}`);
  // The run pauses 1.5 s after 500 entries; meanwhile sshd and the session die, and sshd comes back.
  const child = bakkerAsync(['backup', many, '--store', url, '--json', ...ssh()], { BAKKER_FAULT: 'mid-walk:pause' });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<number>((resolve) => child.on('exit', (c) => resolve(c ?? -1)));
  const runDir = path.join(storeDir, '.bakker/run');
  for (let i = 0; i < 300 && !(fs.existsSync(runDir) && fs.readdirSync(runDir).length > 0); i++) await new Promise((r) => setTimeout(r, 10));
  await new Promise((r) => setTimeout(r, 300));
  const restarted = sshd.restart(); // SIGTERM to the listener...
  sh('pkill', ['-KILL', '-u', acc.user]); // ...and the session it had forked
  await restarted;
  const code = await exited;
  assert.equal(code, 0, stderr + stdout);
  const events = jsonLines(stdout);
  assert.ok(events.some((e) => e.event === 'info' && /reconnected to the store/.test(String(e.message))), stdout);
  const sum = events.find((e) => e.event === 'summary')!;
  assert.equal(sum.entries, firstEntries);
  assert.equal(sum.changed, 215);
  assert.equal(fs.readlinkSync(path.join(storeDir, 'latest')), sum.snapshot);
  const v = bakker(['verify', '--store', url, '--snapshot', 'all', ...ssh()]);
  assert.equal(v.code, 0, v.stdout + v.stderr);
  // Contents and names (the store keeps whole-second times; the impl keeps the exact ones).
  const r = sh('rsync', ['-rcn', '--delete', '--itemize-changes', `${many}/`, `${path.join(storeDir, String(sum.snapshot), many)}/`]);
  assert.equal(r, '', 'the snapshot holds exactly the source');
});

test('config on the store is applied; an invalid one falls back to the cached last good copy', () => {
  const url = `${acc.url}/server5`;
  const storeDir = path.join(acc.root, 'backups/server5');
  const tree = path.join(work, 'cfgsrc');
  build(tree, [
    { file: 'keep/a.txt', content: 'a' },
    { file: 'keep/x.tmp', content: 'tmp' },
    { file: 'other/b.txt', content: 'b' },
  ]);
  const env = { BAKKER_STATE_DIR: path.join(work, 'state') };
  const run = () => {
    const r = bakker(['backup', tree, '--store', url, '--json', ...ssh()], { env });
    assert.equal(r.code, 0, r.stderr);
    const events = jsonLines(r.stdout);
    const sum = events.find((e) => e.event === 'summary')!;
    const snap = path.join(storeDir, String(sum.snapshot), tree);
    const has = (f: string) => fs.existsSync(path.join(snap, f));
    return { sum, events, has };
  };
  const plain = run();
  assert.equal(plain.sum.storeConfig, 'none');
  assert.ok(plain.has('other/b.txt'));
  // Written by the storage side (root-owned: the client can read it, not change it).
  const cfg = path.join(storeDir, '.bakker/config.yaml');
  fs.writeFileSync(cfg, `sources: [${tree}/keep]\nexclude: ['*.tmp']\n`);
  const applied = run();
  assert.equal(applied.sum.storeConfig, 'applied');
  assert.ok(applied.has('keep/a.txt'));
  assert.equal(applied.has('keep/x.tmp'), false, 'the store\'s exclude applies');
  assert.equal(applied.has('other/b.txt'), false, 'the store\'s sources apply');
  fs.writeFileSync(cfg, `sorces: [/]\n`);
  const cached = run();
  assert.equal(cached.sum.storeConfig, 'cached');
  assert.match(String(cached.sum.storeConfigNote), /"sorces" is not a known setting.*last good copy is used/);
  assert.ok(cached.events.some((e) => e.event === 'warning' && /config on the store not usable/.test(String(e.message))));
  assert.ok(cached.has('keep/a.txt'));
  assert.equal(cached.has('other/b.txt'), false, 'the cached copy still applies');
  fs.rmSync(cfg);
  const gone = run();
  assert.equal(gone.sum.storeConfig, 'none');
  assert.ok(gone.has('other/b.txt'), 'no config on the store: the local settings again');
});
