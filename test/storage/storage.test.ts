import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { bakker, jsonLines } from '../helpers/cli.js';
import { startSshd, type Sshd, type SftpAccount } from '../helpers/sshd.js';
import { build, rmrf, sh, tempDir } from '../helpers/tree.js';
import { connectSftp } from '../../src/store/sftp/connect.js';

/* bakker storage: accounts made, granted, grown and removed on a real sshd (the helper's accounts come from add-client too). */

let sshd: Sshd;
let a: SftpAccount;
let b: SftpAccount;
let work: string;
let src: string;

const storage = (args: string[]) => bakker(['storage', ...args, '--storage-config', sshd.storageConfig]);
const sshOpts = (key: string) => ['--identity', key, '--known-hosts', sshd.knownHosts];

before(async () => {
  sshd = await startSshd();
  a = sshd.addAccount();
  b = sshd.addAccount({ sizeMB: 64 });
  work = tempDir();
  src = path.join(work, 'src');
  build(src, [
    { file: 'a.txt', content: 'alpha' },
    { file: 'd/b.txt', content: 'beta' },
  ]);
});

after(async () => {
  await sshd?.stop();
  if (work) rmrf(work);
});

test('add-client: an SFTP-only chrooted account with a root-owned chroot, a restricted key and its own Match block', () => {
  const st = fs.statSync(path.join(sshd.chrootBase, a.user));
  assert.equal(st.uid, 0, 'the chroot is root-owned, as sshd requires');
  assert.equal(st.mode & 0o777, 0o755);
  const backups = fs.statSync(path.join(sshd.chrootBase, a.user, 'backups'));
  assert.equal(backups.uid, Number(sh('id', ['-u', a.user]).trim()), 'the client owns its backups folder');
  assert.equal(backups.mode & 0o777, 0o700);
  const keys = fs.readFileSync(path.join(path.dirname(sshd.storageConfig), 'keys', a.user), 'utf8');
  assert.match(keys, /^restrict,command="internal-sftp" ssh-ed25519 \S+ bakker-client:/);
  const passwd = sh('getent', ['shadow', a.user]).split(':')[1];
  assert.equal(passwd, '*', 'unlocked for key-only login, with no password');
  // A shell command is refused: the key and the Match block allow SFTP only.
  const r = spawnSync('ssh', ['-p', String(sshd.port), '-i', a.key, '-o', `UserKnownHostsFile=${sshd.knownHosts}`, '-o', 'BatchMode=yes', `${a.user}@127.0.0.1`, 'echo SHELL-RAN'], { encoding: 'utf8' });
  assert.doesNotMatch(r.stdout, /SHELL-RAN/);
  // The same account name twice, a bad name and a bad key are one-line usage errors.
  const again = storage(['add-client', a.user, '--pubkey', `${a.key}.pub`]);
  assert.equal(again.code, 2);
  assert.match(again.stderr, /already exists: remove it first/);
  const bad = storage(['add-client', 'Bad/Name', '--pubkey', `${a.key}.pub`]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /not a usable client name/);
  const junk = path.join(work, 'junk.pub');
  fs.writeFileSync(junk, 'command="sh" ssh-ed25519 AAAA\n');
  const badKey = storage(['add-client', 'bkxjunk', '--pubkey', junk]);
  assert.equal(badKey.code, 2);
  assert.match(badKey.stderr, /not an OpenSSH public key line/);
  assert.equal(spawnSync('id', ['bkxjunk']).status, 1, 'nothing was made for a refused client');
});

test('list-clients counts snapshots and shows space; a sized client has its own filesystem', () => {
  const r1 = bakker(['backup', src, '--store', a.url, ...sshOpts(a.key)]);
  assert.equal(r1.code, 0, r1.stderr);
  const r2 = bakker(['backup', src, '--store', b.url, ...sshOpts(b.key)]);
  assert.equal(r2.code, 0, r2.stderr);
  const l = storage(['list-clients', '--json']);
  assert.equal(l.code, 0, l.stderr);
  const rows = jsonLines(l.stdout).filter((e) => e.event === 'client');
  const ra = rows.find((x) => x.name === a.user)!;
  const rb = rows.find((x) => x.name === b.user)!;
  assert.equal(ra.snapshots, 1);
  assert.match(String(ra.newest), /^\d{4}_\d{2}_\d{2}_01$/);
  assert.equal(ra.allocatedBytes, null, 'an unsized client shares the base filesystem');
  assert.ok((rb.allocatedBytes as number) > 50e6 && (rb.allocatedBytes as number) <= 64 * 2 ** 20, `64 MB filesystem: ${rb.allocatedBytes}`);
  assert.equal(sh('findmnt', ['-n', '-o', 'OPTIONS', path.join(sshd.chrootBase, b.user, 'backups')]).match(/nosuid|nodev|noexec/g)?.length, 3);
  const text = storage(['list-clients']);
  assert.match(text.stdout, new RegExp(`${b.user}\\s+1\\s+\\d{4}_\\d{2}_\\d{2}_01`));
});

test('grant lets one client read (only read) another store; revoke takes it back', () => {
  const g = storage(['grant', b.user, '--read', a.user]);
  assert.equal(g.code, 0, g.stderr);
  const asA = a.url; // B's key, logging in as A
  const list = bakker(['list', '--store', asA, '--json', ...sshOpts(b.key)]);
  assert.equal(list.code, 0, list.stderr);
  assert.equal(jsonLines(list.stdout).filter((e) => e.event === 'snapshot').length, 1);
  const to = path.join(work, 'restored');
  const rs = bakker(['restore', '--store', asA, '--snapshot', 'latest', '--to', to, ...sshOpts(b.key)]);
  assert.equal(rs.code, 0, rs.stderr);
  assert.equal(fs.readFileSync(path.join(to, src, 'd/b.txt'), 'utf8'), 'beta');
  const bk = bakker(['backup', src, '--store', asA, ...sshOpts(b.key)]);
  assert.equal(bk.code, 1, 'a reader cannot write');
  assert.equal(bk.stderr.trim().split('\n').length, 1, bk.stderr);
  assert.equal(storage(['list-clients', '--json']).stdout.includes(`"readers":["${b.user}"]`), true);
  const rv = storage(['grant', b.user, '--read', a.user, '--revoke']);
  assert.equal(rv.code, 0, rv.stderr);
  const after = bakker(['list', '--store', asA, ...sshOpts(b.key)]);
  assert.equal(after.code, 1);
  assert.match(after.stderr, /refused the key|authentication/i);
});

test('requests and grow: a space request is listed, grow enlarges the filesystem online and clears it', async () => {
  // What a client does when it runs short: leave a request in its store (a planted symlink is never read).
  const { ssh, sftp } = await connectSftp({ host: '127.0.0.1', port: sshd.port, user: b.user, identity: b.key, knownHosts: [sshd.knownHosts] });
  try {
    await sftp.mkdir(Buffer.from('/backups/.bakker/requests'), 0o700).catch(() => undefined);
    const h = await sftp.open(Buffer.from('/backups/.bakker/requests/1.json'), 0x2 | 0x8 | 0x10, { mode: 0o600 });
    await sftp.write(h, 0, Buffer.from(JSON.stringify({ at: '2026-11-30T01:00:00Z', wantBytes: 100 * 2 ** 20, message: 'store full: 100 MiB needed, 2 MiB free' })));
    await sftp.close(h);
    await sftp.symlink(Buffer.from('/etc/shadow'), Buffer.from('/backups/.bakker/requests/2.json'));
  } finally {
    ssh.end();
  }
  const rq = storage(['requests', '--json']);
  assert.equal(rq.code, 0, rq.stderr);
  const reqs = jsonLines(rq.stdout).filter((e) => e.event === 'request');
  assert.equal(reqs.length, 1, 'the symlink is not followed');
  assert.equal(reqs[0]!.client, b.user);
  assert.equal(reqs[0]!.wantBytes, 100 * 2 ** 20);
  const mnt = path.join(sshd.chrootBase, b.user, 'backups');
  const before = fs.statfsSync(mnt);
  const g = storage(['grow', b.user, '--size', '128M']);
  assert.equal(g.code, 0, g.stderr);
  const after = fs.statfsSync(mnt);
  assert.ok(after.blocks * after.bsize > 1.8 * before.blocks * before.bsize, `grown: ${before.blocks * before.bsize} -> ${after.blocks * after.bsize}`);
  assert.equal(jsonLines(storage(['requests', '--json']).stdout).filter((e) => e.event === 'request').length, 0);
  // The snapshot made before is still there and verifies.
  const v = bakker(['verify', '--store', b.url, '--snapshot', 'all', ...sshOpts(b.key)]);
  assert.equal(v.code, 0, v.stderr + v.stdout);
  const shrink = storage(['grow', b.user, '--size', '64M']);
  assert.equal(shrink.code, 2);
  assert.match(shrink.stderr, /never shrunk/);
  const unsized = storage(['grow', a.user, '--size', '1G']);
  assert.equal(unsized.code, 2);
  assert.match(unsized.stderr, /no fixed-size filesystem/);
});

test('remove-client asks before deleting data, then removes account, keys, sshd block and data', () => {
  const c = sshd.addAccount({ sizeMB: 40 });
  const r = bakker(['backup', src, '--store', c.url, ...sshOpts(c.key)]);
  assert.equal(r.code, 0, r.stderr);
  const no = storage(['remove-client', c.user]);
  assert.equal(no.code, 2);
  assert.match(no.stderr, /would delete its 1 snapshot.*--yes.*--keep-data/);
  const yes = storage(['remove-client', c.user, '--yes']);
  assert.equal(yes.code, 0, yes.stderr);
  assert.equal(spawnSync('id', [c.user]).status, 1, 'the account is gone');
  assert.equal(fs.existsSync(path.join(sshd.chrootBase, c.user)), false);
  assert.equal(fs.readFileSync(path.join(path.dirname(sshd.storageConfig), 'fstab'), 'utf8').includes(c.user), false);
  assert.equal(fs.readdirSync(path.join(path.dirname(sshd.storageConfig), 'sshd_config.d')).some((f) => f.includes(c.user)), false);
  const after = bakker(['list', '--store', c.url, ...sshOpts(c.key)]);
  assert.equal(after.code, 1);
  const unknown = storage(['remove-client', 'bknosuch', '--yes']);
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /no bakker client "bknosuch"/);
});

test('with volume_group, a sized client gets its own logical volume (LVM stand-in on loop devices): made, mounted, grown online, removed', () => {
  const fake = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../../../test/helpers/fake-lvm');
  const lvmDir = path.join(work, 'lvm');
  const vg = `bkvg${Math.random().toString(16).slice(2, 8)}`;
  fs.mkdirSync(path.join(lvmDir, vg), { recursive: true });
  fs.writeFileSync(path.join(lvmDir, vg, '.size'), String(512 << 20));
  const cfg = path.join(work, 'storage-lvm.yaml');
  fs.writeFileSync(cfg, fs.readFileSync(sshd.storageConfig, 'utf8') + `volume_group: ${vg}\n`);
  const env = { PATH: `${fake}:${process.env.PATH}`, FAKE_LVM_DIR: lvmDir };
  const lvm = (args: string[]) => bakker(['storage', ...args, '--storage-config', cfg], { env });
  const name = `bklvm${Math.random().toString(16).slice(2, 8)}`;
  const key = path.join(work, name);
  sh('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
  const backups = path.join(sshd.chrootBase, name, 'backups');
  const image = path.join(lvmDir, vg, `bakker-${name}.img`);
  try {
    const add = lvm(['add-client', name, '--pubkey', `${key}.pub`, '--size', '64M']);
    assert.equal(add.code, 0, add.stderr);
    const device = sh('lvs', ['--noheadings', '-o', 'lv_path', `${vg}/bakker-${name}`], { env: { ...process.env, ...env } }).trim();
    assert.equal(device, `/dev/${vg}/bakker-${name}`);
    assert.equal(sh('findmnt', ['-n', '-o', 'SOURCE', backups]).trim(), fs.realpathSync(device), 'its backups folder is the logical volume');
    assert.match(sh('findmnt', ['-n', '-o', 'OPTIONS', backups]), /nosuid.*nodev.*noexec/);
    assert.ok(fs.readFileSync(path.join(path.dirname(sshd.storageConfig), 'fstab'), 'utf8').includes(`${device} ${backups} ext4 nosuid,nodev,noexec 0 2 # bakker client ${name}`));
    assert.equal(fs.statSync(image).size, 64 << 20);

    const url = `sftp://${name}@127.0.0.1:${new URL(a.url).port}/backups`;
    const r = bakker(['backup', src, '--store', url, ...sshOpts(key)]);
    assert.equal(r.code, 0, r.stderr);
    const listed = jsonLines(lvm(['list-clients', '--json']).stdout).find((e) => e.name === name)!;
    assert.ok((listed.allocatedBytes as number) > 50 << 20 && (listed.allocatedBytes as number) <= 64 << 20, `allocated ${listed.allocatedBytes}`);

    const g = lvm(['grow', name, '--size', '130M']);
    assert.equal(g.code, 0, g.stderr);
    assert.equal(fs.statSync(image).size, 132 << 20, 'rounded up to whole 4 MiB extents, as LVM does');
    assert.ok(fs.statfsSync(backups).blocks * fs.statfsSync(backups).bsize > 100 << 20, `the filesystem grew with it (64 MiB gave 57): ${g.stdout}${g.stderr}${sh('findmnt', [backups])}`);
    assert.equal(bakker(['list', '--store', url, ...sshOpts(key)]).code, 0, 'the snapshot is still there');
    const tooBig = lvm(['grow', name, '--size', '1G']);
    assert.equal(tooBig.code, 1);
    assert.match(tooBig.stderr, new RegExp(`^bakker: grow: lvextend -L \\d+b ${vg}/bakker-\\w+ failed \\(exit 5\\): Insufficient free space`, 'm'));

    const rm = lvm(['remove-client', name, '--yes']);
    assert.equal(rm.code, 0, rm.stderr);
    assert.equal(fs.existsSync(image), false, 'the logical volume is removed');
    assert.equal(sh('losetup', ['-a']).includes(image), false);
    assert.equal(fs.existsSync(`/dev/${vg}`), false, 'and its /dev/VG link');
  } finally {
    if (fs.existsSync(path.join(path.dirname(sshd.storageConfig), 'clients', `${name}.json`)) || spawnSync('id', [name]).status === 0) lvm(['remove-client', name, '--yes']);
  }
});

test('storage prune: the storage side applies its own retention to a client, as the client\'s account; a client backing up is left alone', () => {
  const c = sshd.addAccount();
  const url = `${c.url}/server9`;
  for (let i = 0; i < 3; i++) {
    fs.writeFileSync(path.join(src, 'a.txt'), `alpha ${i}`);
    const r = bakker(['backup', src, '--store', url, ...sshOpts(c.key)]);
    assert.equal(r.code, 0, r.stderr);
  }
  const storeDir = path.join(sshd.chrootBase, c.user, 'backups/server9');
  const snaps = () => fs.readdirSync(storeDir).filter((n) => n.endsWith('.impl')).map((n) => n.slice(0, -5)).sort();
  const [s1, s2, s3] = snaps() as [string, string, string];
  const cfg = path.join(work, 'storage-prune.yaml');
  fs.writeFileSync(cfg, fs.readFileSync(sshd.storageConfig, 'utf8') + `retention: {keep_last: 5}\nclient_retention:\n  ${c.user}: {keep_last: 1}\n`);
  const prune = (extra: string[] = []) => bakker(['storage', 'prune', '--client', c.user, '--storage-config', cfg, '--json', ...extra]);

  const dry = prune(['--dry-run']);
  assert.equal(dry.code, 0, dry.stderr);
  assert.deepEqual(jsonLines(dry.stdout).find((e) => e.event === 'pruned')!.removed, [s1, s2]);
  assert.deepEqual(snaps(), [s1, s2, s3]);

  // While the client holds its store's lock, the storage side does not touch it.
  const lock = path.join(storeDir, '.bakker/lock');
  fs.writeFileSync(lock, JSON.stringify({ pid: 1, host: 'elsewhere', started: new Date().toISOString(), procStart: null }) + '\n');
  const busy = prune();
  assert.equal(busy.code, 1);
  assert.match(jsonLines(busy.stdout).find((e) => e.event === 'pruned')!.message as string, /is in use by bakker PID 1 on elsewhere/);
  fs.rmSync(lock);

  const r = prune();
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(jsonLines(r.stdout).find((e) => e.event === 'pruned')!.removed, [s1, s2]);
  assert.deepEqual(snaps(), [s3]);
  // Done with the client's rights: what it rewrote belongs to the client, not to root.
  assert.equal(fs.statSync(path.join(storeDir, `${s3}.impl`)).uid, Number(sh('id', ['-u', c.user]).trim()));
  assert.equal(bakker(['verify', '--store', url, '--snapshot', 'all', ...sshOpts(c.key)]).code, 0);
  // The client's cached index of s3 was made for the impl the merge replaced: its next run sees
  // that (another mtime) and takes the ordinary path; the run after that has an index again.
  fs.writeFileSync(path.join(src, 'a.txt'), 'alpha after');
  const next = bakker(['backup', src, '--store', url, '--json', ...sshOpts(c.key)]);
  assert.equal(next.code, 0, next.stderr);
  assert.equal(jsonLines(next.stdout).find((e) => e.event === 'start')!.indexed, false);
  fs.writeFileSync(path.join(src, 'a.txt'), 'alpha after again');
  const again = bakker(['backup', src, '--store', url, '--json', ...sshOpts(c.key)]);
  assert.equal(jsonLines(again.stdout).find((e) => e.event === 'start')!.indexed, true);
});
