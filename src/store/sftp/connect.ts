import { createHash, createHmac } from 'node:crypto';
import fs from 'node:fs';
import { Client } from 'ssh2';
import { BakkerError, errMessage } from '../../errors.js';
import { SftpClient } from './sftp-client.js';

/** Where and how to reach a storage server over SSH. */
export interface SshTarget {
  host: string;
  port: number;
  user: string;
  /** The private key file (ed25519 recommended). */
  identity: string;
  /** known_hosts file(s) to check the server's host key against. */
  knownHosts: string[];
  /** Or a pinned host key fingerprint, "SHA256:..." as ssh-keygen -lf prints it. */
  fingerprint?: string;
  /** Seconds between keepalives (0: none). */
  keepalive?: number;
  /** Trust on first use (bakker init only): called with a host key nothing vouches for; true accepts it. */
  onUnknownHostKey?: (key: Buffer) => boolean;
}

/** The known_hosts line that names `key` (a raw host key blob) for host:port, as OpenSSH writes it. */
export function knownHostsLine(host: string, port: number, key: Buffer): string {
  const type = key.length >= 4 ? key.toString('latin1', 4, 4 + key.readUInt32BE(0)) : 'unknown';
  return `${port === 22 ? host : `[${host}]:${port}`} ${type} ${key.toString('base64')}\n`;
}

/** "SHA256:base64" of a raw host key blob, as OpenSSH prints it. */
export function fingerprintOf(key: Buffer): string {
  return `SHA256:${createHash('sha256').update(key).digest('base64').replace(/=+$/, '')}`;
}

/** The host key blobs (base64) that known_hosts lines accept for host:port. */
export function knownKeys(text: string, host: string, port: number): string[] {
  const names = port === 22 ? [host, `[${host}]:22`] : [`[${host}]:${port}`];
  const out: string[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const parts = line.split(/\s+/);
    if (parts[0]!.startsWith('@')) continue; // @revoked / @cert-authority: not for plain keys
    const [hosts, , blob] = parts;
    if (!hosts || !blob) continue;
    const match = hosts.split(',').some((h) => {
      if (h.startsWith('|1|')) {
        const [, , salt, hash] = h.split('|');
        if (!salt || !hash) return false;
        return names.some((n) => createHmac('sha1', Buffer.from(salt, 'base64')).update(n).digest('base64') === hash);
      }
      return names.includes(h);
    });
    if (match) out.push(blob);
  }
  return out;
}

/**
 * Opens an SSH connection with key authentication, checks the host key (never accepted
 * unchecked), and starts SFTP on it. Failures are one-line BakkerErrors that say what to do.
 */
export async function connectSftp(t: SshTarget): Promise<{ ssh: Client; sftp: SftpClient }> {
  const where = `${t.user}@${t.host}:${t.port}`;
  let privateKey: Buffer;
  try {
    privateKey = fs.readFileSync(t.identity);
  } catch (err) {
    throw new BakkerError('USAGE', `cannot read the SSH key ${t.identity} (${errMessage(err)}): give an existing private key with --identity`);
  }
  const accepted = new Set<string>();
  for (const f of t.knownHosts) {
    try {
      for (const k of knownKeys(fs.readFileSync(f, 'utf8'), t.host, t.port)) accepted.add(k);
    } catch {
      // a missing known_hosts file accepts nothing
    }
  }
  let seen: Buffer | null = null;
  const ssh = new Client();
  // Errors after the first (or after the connection is up) must not go unheard: an 'error' event
  // without a listener would end the process. Requests in flight fail through the channel instead.
  ssh.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    ssh.once('ready', () => resolve());
    ssh.once('error', (err: Error & { level?: string; code?: string }) => {
      if (seen && !verify(seen)) {
        reject(new BakkerError('STORE', `the host key of ${t.host}:${t.port} (${fingerprintOf(seen)}) is not in ${t.knownHosts.join(', ') || 'any known_hosts file'}${t.fingerprint ? ` and is not the pinned ${t.fingerprint}` : ''}: check it, then add it with ssh-keyscan or pin its fingerprint`));
      } else if (err.level === 'client-authentication') {
        reject(new BakkerError('STORE', `${where} refused the key ${t.identity}: add its public key to that account's authorized_keys`));
      } else if (err.code === 'ECONNREFUSED') {
        reject(new BakkerError('STORE', `${t.host}:${t.port} refused the connection: is sshd running there, on that port?`));
      } else reject(new BakkerError('STORE', `cannot connect to ${where}: ${err.message}`));
    });
    const verify = (key: Buffer) => (t.fingerprint !== undefined && fingerprintOf(key) === t.fingerprint) || accepted.has(key.toString('base64'));
    ssh.connect({
      host: t.host,
      port: t.port,
      username: t.user,
      privateKey,
      readyTimeout: 20_000,
      keepaliveInterval: (t.keepalive ?? 15) * 1000,
      keepaliveCountMax: 4,
      hostVerifier: (key: Buffer) => {
        seen = key;
        if (verify(key)) return true;
        if (t.onUnknownHostKey?.(key)) {
          accepted.add(key.toString('base64'));
          return true;
        }
        return false;
      },
    });
  });
  const chan = await new Promise<import('ssh2').ClientChannel>((resolve, reject) =>
    ssh.subsys('sftp', (err, ch) => (err ? reject(new BakkerError('STORE', `${where} has no SFTP subsystem: ${err.message}`)) : resolve(ch))),
  );
  try {
    return { ssh, sftp: await SftpClient.start(chan) };
  } catch (err) {
    ssh.end();
    throw new BakkerError('STORE', `SFTP did not start on ${where}: ${errMessage(err)}`);
  }
}
