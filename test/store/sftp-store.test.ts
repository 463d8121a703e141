import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { connectSftp } from '../../src/store/sftp/connect.js';
import { ResilientSftp } from '../../src/store/sftp/resilient.js';
import { SftpStore } from '../../src/store/sftp/sftp-store.js';
import { startSshd } from '../helpers/sshd.js';
import { sh } from '../helpers/tree.js';
import { FXF_CREAT, FXF_EXCL, FXF_WRITE } from '../../src/store/sftp/sftp-client.js';
import { storeConformance } from './conformance.js';

// The same contract as the local store, against a real OpenSSH sshd with a chrooted account.
const sshd = await startSshd();
const acc = sshd.addAccount();
after(() => sshd.stop());

storeConformance('sftp', async () => {
  const connect = () => connectSftp({ host: '127.0.0.1', port: sshd.port, user: acc.user, identity: acc.key, knownHosts: [sshd.knownHosts] });
  const sftp = new ResilientSftp(await connect(), connect, 0, () => undefined);
  const name = `t-${randomBytes(4).toString('hex')}`;
  await sftp.mkdir(Buffer.from(`/backups/${name}`), 0o700);
  const store = new SftpStore(sftp, `/backups/${name}`, `${acc.url}/${name}`);
  const localPath = path.join(acc.root, 'backups', name);
  return { store, localPath, cleanup: async () => fs.rmSync(localPath, { recursive: true, force: true }) };
});

test('reconnect: requests cut off by a dropped session are sent again on a new one; work done before the drop counts as done', async () => {
  const connect = () => connectSftp({ host: '127.0.0.1', port: sshd.port, user: acc.user, identity: acc.key, knownHosts: [sshd.knownHosts] });
  const notes: string[] = [];
  const sftp = new ResilientSftp(await connect(), connect, 20_000, (m) => notes.push(m));
  const dir = `/backups/rc-${randomBytes(3).toString('hex')}`;
  const b = (s: string) => Buffer.from(`${dir}/${s}`);
  try {
    await sftp.mkdir(Buffer.from(dir), 0o700);
    const h = await sftp.open(b('big'), FXF_WRITE | FXF_CREAT | FXF_EXCL, { mode: 0o600 });
    await sftp.write(h, 0, Buffer.from('first half|'));
    // Done on the server, then the session dies: each of these is sent again after the reconnect.
    await sftp.mkdir(b('d'), 0o700);
    await sftp.hardlink(b('big'), b('d/link'));
    sh('pkill', ['-KILL', '-u', acc.user]);
    await new Promise((r) => setTimeout(r, 200));
    const again = await Promise.all([
      sftp.mkdir(b('d2'), 0o700),
      sftp.mkdir(b('d2/inner'), 0o700), // ordered after its parent, also across the reconnect
      sftp.write(h, 11, Buffer.from('second half')), // the old handle: reopened on the new session
      sftp.posixRename(b('d/link'), b('d/moved')),
    ]);
    assert.equal(again.length, 4);
    await sftp.close(h);
    assert.equal(fs.readFileSync(path.join(acc.root, dir, 'big'), 'utf8'), 'first half|second half');
    assert.ok(fs.statSync(path.join(acc.root, dir, 'd2/inner')).isDirectory());
    assert.equal(fs.statSync(path.join(acc.root, dir, 'd/moved')).ino, fs.statSync(path.join(acc.root, dir, 'big')).ino);
    assert.equal(sftp.reconnects, 1);
    assert.ok(notes.some((n) => /reconnected to the store/.test(n)), notes.join('\n'));
    // A request redone after a drop that had been carried out already is not an error.
    sh('pkill', ['-KILL', '-u', acc.user]);
    await new Promise((r) => setTimeout(r, 200));
    await sftp.remove(b('d/moved')); // fails on the dead session, is redone, removes it
    assert.equal(fs.existsSync(path.join(acc.root, dir, 'd/moved')), false);
    assert.equal(sftp.reconnects, 2);
  } finally {
    sftp.end();
    fs.rmSync(path.join(acc.root, dir), { recursive: true, force: true });
  }
});

test('reconnect: with no budget, or once the budget is spent, the error is one line', async () => {
  const connect = () => connectSftp({ host: '127.0.0.1', port: sshd.port, user: acc.user, identity: acc.key, knownHosts: [sshd.knownHosts] });
  const none = new ResilientSftp(await connect(), connect, 0, () => undefined);
  sh('pkill', ['-KILL', '-u', acc.user]);
  await new Promise((r) => setTimeout(r, 200));
  await assert.rejects(none.lstat(Buffer.from('/backups')), /SFTP connection lost/);
  none.end();
  const refused = () => connectSftp({ host: '127.0.0.1', port: 1, user: acc.user, identity: acc.key, knownHosts: [sshd.knownHosts] });
  const short = new ResilientSftp(await connect(), refused, 1500, () => undefined);
  sh('pkill', ['-KILL', '-u', acc.user]);
  await new Promise((r) => setTimeout(r, 200));
  await assert.rejects(short.lstat(Buffer.from('/backups')), /SFTP connection lost and not restored within 2 s/);
  short.end();
});
