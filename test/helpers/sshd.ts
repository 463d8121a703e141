import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { BIN } from './cli.js';
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
  /** The `bakker storage` config (storage.yaml) that manages this server's accounts. */
  storageConfig: string;
  /** The base of the client chroots. */
  chrootBase: string;
  /** A new account; with sizeMB its backups folder is its own loop-mounted ext4 of that size. */
  /** A chrooted SFTP account made by `bakker storage add-client`; `pubkey`: its key (default: a new one). */
  addAccount(opts?: { sizeMB?: number; pubkey?: string }): SftpAccount;
  /** The name the next addAccount() will give (for a client configured before its account exists). */
  nextAccountName(): string;
  /** A normal shell account (not chrooted; for rsync over ssh in the benchmark): user, key, home. */
  addShellAccount(): { user: string; key: string; home: string };
  /** Stops the server (SIGTERM, by PID) and starts it again on the same port. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

const SSHD = '/usr/sbin/sshd';

/** A TCP port free on 127.0.0.1 right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

export async function waitListening(port: number, proc: ChildProcess, log: string, what = 'sshd'): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if (proc.exitCode !== null) throw new Error(`${what} exited (${proc.exitCode}): ${fs.readFileSync(log, 'utf8').slice(-2000)}`);
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
  throw new Error(`${what} did not listen on ${port}: ${fs.readFileSync(log, 'utf8').slice(-2000)}`);
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
      `Include ${base}/sshd_config.d/*.conf`,
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
      '',
    ].join('\n'),
  );
  // Where `bakker storage` keeps its files for this server (docs/STORAGE.md).
  const storageConfig = path.join(base, 'storage.yaml');
  fs.writeFileSync(
    storageConfig,
    [
      `base: ${base}/chroot`,
      `sshd_config: ${cfg}`,
      `sshd_config_dir: ${base}/sshd_config.d`,
      `keys_dir: ${base}/keys`,
      `state_dir: ${base}/clients`,
      `images_dir: ${base}/images`,
      `fstab: ${base}/fstab`,
      `sshd_pid_file: ${base}/sshd.pid`,
      'reload: signal',
      'host: 127.0.0.1',
      '',
    ].join('\n'),
  );
  const knownHosts = path.join(base, 'known_hosts');
  fs.writeFileSync(knownHosts, `[127.0.0.1]:${port} ${hostKey}\n`);
  const users: string[] = [];
  const sized: string[] = [];
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
    storageConfig,
    chrootBase: path.join(base, 'chroot'),
    nextAccountName: () => `${prefix}${users.length}`,
    addAccount(opts: { sizeMB?: number; pubkey?: string } = {}): SftpAccount {
      // Made the way an admin would: `bakker storage add-client`.
      const user = `${prefix}${users.length}`;
      const key = opts.pubkey ? opts.pubkey.replace(/\.pub$/, '') : path.join(base, 'client', user);
      if (!opts.pubkey) sh('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
      const args = [BIN, 'storage', 'add-client', user, '--pubkey', `${key}.pub`, '--storage-config', storageConfig];
      if (opts.sizeMB) args.push('--size', `${opts.sizeMB}M`);
      const r = spawnSync(process.execPath, args, { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`bakker storage add-client ${user} failed (${r.status}): ${r.stderr}`);
      users.push(user);
      if (opts.sizeMB) sized.push(user);
      const root = path.join(base, 'chroot', user);
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
      for (const u of sized) spawnSync('umount', [path.join(base, 'chroot', u, 'backups')]); // loop devices go with the mount
      for (const u of users) {
        spawnSync('pkill', ['-KILL', '-u', u]); // sessions still open (an rsync over ssh, say)
        await new Promise((r) => setTimeout(r, 50));
        if (spawnSync('id', ['-u', u]).status === 0) sh('userdel', [u]); // remove-client may have taken it
      }
      fs.rmSync(base, { recursive: true, force: true });
    },
  };
}
