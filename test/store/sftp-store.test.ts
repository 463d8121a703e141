import { after } from 'node:test';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { connectSftp } from '../../src/store/sftp/connect.js';
import { SftpStore } from '../../src/store/sftp/sftp-store.js';
import { startSshd } from '../helpers/sshd.js';
import { storeConformance } from './conformance.js';

// The same contract as the local store, against a real OpenSSH sshd with a chrooted account.
const sshd = await startSshd();
const acc = sshd.addAccount();
after(() => sshd.stop());

storeConformance('sftp', async () => {
  const { ssh, sftp } = await connectSftp({ host: '127.0.0.1', port: sshd.port, user: acc.user, identity: acc.key, knownHosts: [sshd.knownHosts] });
  const name = `t-${randomBytes(4).toString('hex')}`;
  await sftp.mkdir(Buffer.from(`/backups/${name}`), 0o700);
  const store = new SftpStore(sftp, ssh, `/backups/${name}`, `${acc.url}/${name}`);
  const localPath = path.join(acc.root, 'backups', name);
  return { store, localPath, cleanup: async () => fs.rmSync(localPath, { recursive: true, force: true }) };
});
