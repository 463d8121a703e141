import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { connectSftp, fingerprintOf, knownKeys } from '../../src/store/sftp/connect.js';
import { FXF_CREAT, FXF_EXCL, FXF_READ, FXF_WRITE, SftpClient } from '../../src/store/sftp/sftp-client.js';
import { startSshd, type Sshd, type SftpAccount } from '../helpers/sshd.js';
import type { Client } from 'ssh2';

let sshd: Sshd;
let a: SftpAccount;
let b: SftpAccount;
let ssh: Client;
let sftp: SftpClient;

const B = (s: string | Buffer) => (typeof s === 'string' ? Buffer.from(s) : s);
const target = (acc: SftpAccount, extra: Partial<Parameters<typeof connectSftp>[0]> = {}) => ({
  host: '127.0.0.1',
  port: sshd.port,
  user: acc.user,
  identity: acc.key,
  knownHosts: [sshd.knownHosts],
  ...extra,
});

before(async () => {
  sshd = await startSshd();
  a = sshd.addAccount();
  b = sshd.addAccount();
  ({ ssh, sftp } = await connectSftp(target(a)));
});

after(async () => {
  ssh?.end();
  await sshd?.stop();
});

test('SFTP over a real sshd: OpenSSH extensions, names of any bytes, many requests in flight', async () => {
  for (const ext of ['posix-rename@openssh.com', 'hardlink@openssh.com', 'statvfs@openssh.com', 'fsync@openssh.com', 'lsetstat@openssh.com']) {
    assert.ok(sftp.extensions.has(ext), ext);
  }
  const odd = Buffer.concat([B('/backups/odd-'), Buffer.from([0xff, 0xfe, 0x0a]), B('name')]);
  await sftp.mkdir(B('/backups/d'), 0o700);
  const h = await sftp.open(odd, FXF_WRITE | FXF_CREAT | FXF_EXCL, { mode: 0o600 });
  await Promise.all([sftp.write(h, 0, B('hello ')), sftp.write(h, 6, B('world'))]);
  await sftp.fsync(h);
  await sftp.close(h);
  const names = (await sftp.readdir(B('/backups'))).map((e) => e.name);
  assert.ok(names.some((n) => n.equals(odd.subarray('/backups/'.length))), 'the name comes back byte for byte');
  const r = await sftp.open(odd, FXF_READ);
  assert.equal((await sftp.read(r, 0, 100))?.toString(), 'hello world');
  assert.equal(await sftp.read(r, 11, 100), null, 'EOF');
  await sftp.close(r);
  await sftp.hardlink(odd, B('/backups/d/link'));
  assert.equal((await sftp.lstat(B('/backups/d/link'))).size, 11);
  await sftp.symlink(B('../target'), B('/backups/d/sym'));
  assert.equal((await sftp.readlink(B('/backups/d/sym'))).toString(), '../target');
  assert.equal(((await sftp.lstat(B('/backups/d/sym'))).mode! & 0o170000), 0o120000);
  await sftp.posixRename(B('/backups/d/link'), odd); // replaces
  await sftp.setstat(odd, { mode: 0o640, mtime: 1_700_000_000 });
  const st = await sftp.lstat(odd);
  assert.equal(st.mode! & 0o7777, 0o640);
  assert.equal(st.mtime, 1_700_000_000);
  const vfs = await sftp.statvfs(B('/backups'));
  assert.ok(vfs.bavail > 0 && vfs.frsize > 0);
  await assert.rejects(sftp.lstat(B('/backups/missing')), (e: Error & { code?: string }) => e.code === 'ENOENT');
  await assert.rejects(sftp.mkdir(B('/backups/d'), 0o700), (e: Error & { code?: string }) => e.code === 'EFAILURE', 'OpenSSH folds EEXIST into FAILURE');
  // Many in flight: a thousand lstats pipelined on one channel.
  const t0 = Date.now();
  const all = await Promise.all(Array.from({ length: 1000 }, () => sftp.lstat(B('/backups/d'))));
  assert.equal(all.length, 1000);
  assert.ok(Date.now() - t0 < 5000);
  assert.equal(sftp.inFlight, 0);
});

test('an account sees only its own chroot', async () => {
  const names = (await sftp.readdir(B('/'))).map((e) => e.name.toString());
  assert.deepEqual(names, ['backups']);
  await assert.rejects(sftp.lstat(B(`/../${b.user}`)), (e: Error & { code?: string }) => e.code === 'ENOENT');
  assert.ok(fs.existsSync(path.join(b.root, 'backups')));
});

test('connection errors say what to do: unknown host key, wrong key, refused', async () => {
  const other = path.join(path.dirname(sshd.knownHosts), 'other_known_hosts');
  fs.writeFileSync(other, `[127.0.0.1]:${sshd.port} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBkQqWJr8mlS9Gwfc6hVaVjP8cDMo6iJ9vqpSQnGqkDM\n`);
  await assert.rejects(connectSftp(target(a, { knownHosts: [other] })), /host key of 127\.0\.0\.1:\d+ \(SHA256:[^)]+\) is not in/);
  const blob = Buffer.from(sshd.hostKey.split(' ')[1]!, 'base64');
  const pinned = await connectSftp(target(a, { knownHosts: [], fingerprint: fingerprintOf(blob) }));
  pinned.ssh.end();
  await assert.rejects(connectSftp(target(a, { identity: b.key })), /refused the key .*authorized_keys/);
  await assert.rejects(connectSftp(target(a, { port: 1 })), /refused the connection/);
  assert.deepEqual(knownKeys(`|1|${'x'}|y ssh-ed25519 AAAA\n[127.0.0.1]:${sshd.port} ssh-ed25519 KEY\n`, '127.0.0.1', sshd.port), ['KEY']);
});

test('isolation: one account reaches nothing of another through any SFTP operation', async () => {
  // b's data, made on the host
  fs.mkdirSync(path.join(b.root, 'backups', 'secret'), { recursive: true });
  fs.writeFileSync(path.join(b.root, 'backups', 'secret', 'f'), 'b only');
  const theirs = [`/../${b.user}/backups/secret/f`, `/../../chroot/${b.user}/backups/secret/f`, path.join(b.root, 'backups/secret/f')];
  const refused = (e: Error & { code?: string }) => ['ENOENT', 'EACCES', 'EFAILURE'].includes(e.code ?? '');
  for (const p of theirs) {
    const q = B(p);
    await assert.rejects(sftp.lstat(q), refused, `lstat ${p}`);
    await assert.rejects(sftp.open(q, FXF_READ), refused, `open ${p}`);
    await assert.rejects(sftp.readdir(B(path.dirname(p))), refused, `readdir ${p}`);
    await assert.rejects(sftp.posixRename(q, B('/backups/stolen')), refused, `rename ${p}`);
    await assert.rejects(sftp.hardlink(q, B('/backups/stolen-link')), refused, `hardlink ${p}`);
    await assert.rejects(sftp.remove(q), refused, `remove ${p}`);
    await assert.rejects(sftp.setstat(q, { mode: 0o777 }), refused, `setstat ${p}`);
    await assert.rejects(sftp.open(q, FXF_WRITE | FXF_CREAT), refused, `create ${p}`);
  }
  // A symlink a plants pointing at b's absolute host path resolves inside a's own chroot.
  await sftp.symlink(B(path.join(b.root, 'backups/secret/f')), B('/backups/via-link'));
  await assert.rejects(sftp.open(B('/backups/via-link'), FXF_READ), refused, 'a symlink cannot leave the chroot');
  await sftp.symlink(B(`../../${b.user}/backups/secret`), B('/backups/via-rel'));
  await assert.rejects(sftp.readdir(B('/backups/via-rel')), refused);
  assert.equal(fs.readFileSync(path.join(b.root, 'backups', 'secret', 'f'), 'utf8'), 'b only', "b's file untouched");
  assert.equal(fs.existsSync(path.join(a.root, 'backups', 'stolen')), false);
  assert.equal(fs.existsSync(path.join(a.root, 'backups', 'stolen-link')), false);
});
