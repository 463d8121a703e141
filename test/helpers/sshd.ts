import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { requireTool, sh } from './tree.js';

/**
 * A real OpenSSH sshd on 127.0.0.1 for the tests (docs: ../shared/docs/LAB-NOTES.md): its own
 * config, host key and port; SFTP-only accounts chrooted under /srv (sshd refuses chroots under
 * /tmp), each with a writable `backups` folder and an ed25519 key. stop() kills it by PID and
 * removes the accounts and folders.
 */
export interface SftpAccount {
  user: string;
  /** The client's private key file. */
  key: string;
  /** The chroot on the host; the client sees its `backups` folder as /backups. */
  root: string;
  /** sftp://user@127.0.0.1:PORT/backups */
  url: string;
}

export interface Sshd {
  port: number;
  /** A known_hosts file holding this server's host key. */
  knownHosts: string;
  /** The host key as an OpenSSH public key line ("ssh-ed25519 AAAA..."). */
  hostKey: string;
  /** A new account; with sizeMB its backups folder is its own loop-mounted ext4 of that size. */
  addAccount(opts?: { sizeMB?: number }): SftpAccount;
  /** A normal shell account (not chrooted; for rsync over ssh in the benchmark): user, key, home. */
  addShellAccount(): { user: string; key: string; home: string };
  /** Stops the server (SIGTERM, by PID) and starts it again on the same port. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

const SSHD = '/usr/sbin/sshd';

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

async function waitListening(port: number, proc: ChildProcess, log: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if (proc.exitCode !== null) throw new Error(`sshd exited (${proc.exitCode}): ${fs.readFileSync(log, 'utf8').slice(-2000)}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`sshd did not listen on ${port}: ${fs.readFileSync(log, 'utf8').slice(-2000)}`);
}

export async function startSshd(): Promise<Sshd> {
  requireTool(SSHD);
  requireTool('ssh-keygen');
  requireTool('useradd');
  const tag = randomBytes(3).toString('hex');
  const base = `/srv/bakker-test-${tag}`;
  fs.mkdirSync(base, { mode: 0o755 });
  for (const d of ['chroot', 'keys', 'client']) fs.mkdirSync(path.join(base, d), { mode: 0o755 });
  fs.mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
  const hostKeyFile = path.join(base, 'host_ed25519');
  sh('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', hostKeyFile]);
  const hostKey = fs.readFileSync(`${hostKeyFile}.pub`, 'utf8').trim().split(' ').slice(0, 2).join(' ');
  const port = await freePort();
  const cfg = path.join(base, 'sshd_config');
  const log = path.join(base, 'sshd.log');
  const prefix = `bkt${tag}`;
  fs.writeFileSync(
    cfg,
    [
      `Port ${port}`,
      'ListenAddress 127.0.0.1',
      `HostKey ${hostKeyFile}`,
      `PidFile ${base}/sshd.pid`,
      'UsePAM no',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'PubkeyAuthentication yes',
      `AuthorizedKeysFile ${base}/keys/%u`,
      'StrictModes yes',
      'LogLevel VERBOSE',
      'MaxStartups 100',
      'Subsystem sftp internal-sftp',
      `Match User ${prefix}*`,
      `  ChrootDirectory ${base}/chroot/%u`,
      '  ForceCommand internal-sftp',
      '  AllowTcpForwarding no',
      '  X11Forwarding no',
      '',
    ].join('\n'),
  );
  const knownHosts = path.join(base, 'known_hosts');
  fs.writeFileSync(knownHosts, `[127.0.0.1]:${port} ${hostKey}\n`);
  const users: string[] = [];
  const mounts: { dir: string; loop: string }[] = [];
  let proc: ChildProcess | null = null;

  const launch = async () => {
    proc = spawn(SSHD, ['-D', '-f', cfg, '-E', log], { stdio: 'ignore' });
    await waitListening(port, proc, log);
  };
  const kill = async () => {
    const p = proc;
    proc = null;
    if (!p || p.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      p.once('exit', () => resolve());
      p.kill('SIGTERM');
    });
  };
  await launch();

  return {
    port,
    knownHosts,
    hostKey,
    addAccount(opts: { sizeMB?: number } = {}): SftpAccount {
      const user = `${prefix}${users.length}`;
      sh('useradd', ['-M', '-d', '/', '-s', '/usr/sbin/nologin', user]);
      users.push(user);
      sh('usermod', ['-p', '*', user]); // unlocked for key-only login (sshd refuses "!" without PAM)
      const root = path.join(base, 'chroot', user);
      fs.mkdirSync(root, { mode: 0o755 });
      const backups = path.join(root, 'backups');
      fs.mkdirSync(backups, { mode: 0o700 });
      if (opts.sizeMB) {
        const img = path.join(base, `${user}.img`);
        sh('truncate', ['-s', `${opts.sizeMB}M`, img]);
        sh('mkfs.ext4', ['-q', '-F', '-m', '0', img]);
        const loop = sh('losetup', ['-f', '--show', img]).trim();
        sh('mount', ['-o', 'nosuid,nodev', loop, backups]);
        mounts.push({ dir: backups, loop });
        fs.chmodSync(backups, 0o700);
      }
      sh('chown', [`${user}:`, backups]);
      const key = path.join(base, 'client', user);
      sh('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
      fs.copyFileSync(`${key}.pub`, path.join(base, 'keys', user));
      fs.chmodSync(path.join(base, 'keys', user), 0o644);
      return { user, key, root, url: `sftp://${user}@127.0.0.1:${port}/backups` };
    },
    addShellAccount() {
      const user = `bkr${tag}${users.length}`;
      const home = path.join(base, 'home', user);
      fs.mkdirSync(path.dirname(home), { recursive: true, mode: 0o755 });
      sh('useradd', ['-m', '-d', home, '-s', '/bin/sh', user]);
      users.push(user);
      sh('usermod', ['-p', '*', user]);
      const key = path.join(base, 'client', user);
      sh('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
      fs.copyFileSync(`${key}.pub`, path.join(base, 'keys', user));
      fs.chmodSync(path.join(base, 'keys', user), 0o644);
      return { user, key, home };
    },
    async restart() {
      await kill();
      await launch();
    },
    async stop() {
      await kill();
      for (const m of mounts) {
        try {
          sh('umount', [m.dir]);
        } finally {
          sh('losetup', ['-d', m.loop]);
        }
      }
      for (const u of users) {
        spawnSync('pkill', ['-KILL', '-u', u]); // sessions still open (an rsync over ssh, say)
        await new Promise((r) => setTimeout(r, 50));
        sh('userdel', [u]);
      }
      fs.rmSync(base, { recursive: true, force: true });
    },
  };
}
