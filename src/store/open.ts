import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BakkerError } from '../errors.js';
import { LocalStore } from './local/local-store.js';
import type { Store } from './store.js';

/** SSH settings for sftp:// stores; unset ones fall back to ~/.ssh (and /etc/ssh for known hosts). */
export interface SshOptions {
  identity?: string;
  knownHosts?: string;
  /** A pinned host key fingerprint ("SHA256:..."), accepted besides known_hosts. */
  fingerprint?: string;
  /** How long a dropped connection is retried before the run fails (seconds; default 300, 0: never). */
  reconnectFor?: number;
  /** Where reconnect notices go (default: stderr). */
  log?: (message: string) => void;
}

/** Encryption settings of a target (docs/CONFIG.md, "Encryption"). */
export interface EncryptionOptions {
  /** age1... recipients: a backup encrypts for them. */
  recipients?: string[];
  /** An age identity file: restore, diff and verify of contents decrypt with it (BAKKER_PASSPHRASE opens a protected one). */
  identity?: string;
  /** zstd level: files are compressed before encryption (those that shrink). */
  compression?: number;
}

/** "zstd" (level 3), "zstd:N" (1-19) or "none" -> a level (0: off); null when not one of those. */
export function parseCompression(v: string): number | null {
  if (v === 'none') return 0;
  const m = /^zstd(?::(\d{1,2}))?$/.exec(v);
  if (!m) return null;
  const level = m[1] === undefined ? 3 : Number(m[1]);
  return level >= 1 && level <= 19 ? level : null;
}

/**
 * An encrypted store (its .bakker/format says so), or a new one for a target with recipients,
 * is opened through the encrypting wrapper; any other store as it is.
 */
async function withEncryption(store: Store, enc: EncryptionOptions | undefined): Promise<Store> {
  const { readFormatInfo } = await import('../engine/layout.js');
  let encrypted: boolean;
  try {
    encrypted = (await readFormatInfo(store))?.encryption !== undefined;
  } catch (err) {
    await store.close();
    throw err;
  }
  const recipients = enc?.recipients ?? [];
  if (!encrypted && recipients.length === 0) {
    if (!enc?.compression) return store;
    const { CompressedStore } = await import('./compressed-store.js');
    return new CompressedStore(store, enc.compression);
  }
  try {
    const { parseRecipient, loadIdentities } = await import('../crypto/age.js');
    const { EncryptedStore } = await import('../crypto/encrypted-store.js');
    const { stateDir } = await import('../util/state-dir.js');
    const identities = enc?.identity ? await loadIdentities(enc.identity, process.env.BAKKER_PASSPHRASE) : undefined;
    return new EncryptedStore(store, { recipients: recipients.map(parseRecipient), ...(identities ? { identities, identityFile: enc!.identity! } : {}), stateDir: stateDir(), ...(enc?.compression ? { compression: enc.compression } : {}) });
  } catch (err) {
    await store.close();
    throw err;
  }
}

/** Opens sftp://user@host[:port]/path: connects (key auth, host key checked) and checks the folder. */
async function openSftp(address: string, opts: { create?: boolean; mayBeMissing?: boolean; ssh?: SshOptions }): Promise<Store> {
  let url: URL;
  try {
    url = new URL(address);
  } catch {
    throw new BakkerError('USAGE', `store address ${address} is not a valid URL: use sftp://user@host[:port]/path`);
  }
  const user = decodeURIComponent(url.username);
  const root = decodeURIComponent(url.pathname);
  if (!user || !url.hostname || root === '' || root === '/') {
    throw new BakkerError('USAGE', `store address ${address}: name the user, the host and a folder: sftp://user@host[:port]/path`);
  }
  const home = os.homedir();
  const { connectSftp } = await import('./sftp/connect.js');
  const { SftpStore } = await import('./sftp/sftp-store.js');
  const { ResilientSftp } = await import('./sftp/resilient.js');
  const connect = () =>
    connectSftp({
      host: url.hostname.replace(/^\[|\]$/g, ''),
      port: url.port ? Number(url.port) : 22,
      user,
      identity: opts.ssh?.identity ?? path.join(home, '.ssh', 'id_ed25519'),
      knownHosts: opts.ssh?.knownHosts ? [opts.ssh.knownHosts] : [path.join(home, '.ssh', 'known_hosts'), '/etc/ssh/ssh_known_hosts'],
      ...(opts.ssh?.fingerprint ? { fingerprint: opts.ssh.fingerprint } : {}),
    });
  const log = opts.ssh?.log ?? ((m: string) => void process.stderr.write(`bakker: ${m}\n`));
  const sftp = new ResilientSftp(await connect(), connect, (opts.ssh?.reconnectFor ?? 300) * 1000, log);
  const store = new SftpStore(sftp, root, address);
  const st = await sftp.lstat(Buffer.from(root)).catch(() => null);
  if (!st) {
    if (opts.mayBeMissing) return store;
    if (!opts.create) {
      await store.close();
      throw new BakkerError('STORE', `store ${address} does not exist: check --store, or run a backup to create it`);
    }
    try {
      await sftp.mkdir(Buffer.from(root), 0o700);
    } catch (err) {
      await store.close();
      throw new BakkerError('STORE', `cannot create the store folder ${root} on ${url.host}: ${(err as Error).message}; create it there, writable by ${user}`, { cause: err });
    }
  } else if (((st.mode ?? 0) & 0o170000) !== 0o040000) {
    await store.close();
    throw new BakkerError('STORE', `store ${address} is not a folder: point --store at a folder`);
  }
  return store;
}

/**
 * Opens a store from its address: a folder path (absolute or relative), file:///path, or
 * sftp://user@host[:port]/path.
 */
export async function openStore(address: string, opts: { create?: boolean; mayBeMissing?: boolean; ssh?: SshOptions; encryption?: EncryptionOptions } = {}): Promise<Store> {
  return withEncryption(await openPlain(address, opts), opts.encryption);
}

async function openPlain(address: string, opts: { create?: boolean; mayBeMissing?: boolean; ssh?: SshOptions }): Promise<Store> {
  if (address.startsWith('sftp://')) return openSftp(address, opts);
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(address) && !address.startsWith('file://')) {
    const scheme = address.slice(0, address.indexOf(':'));
    throw new BakkerError('USAGE', `store address ${address}: the ${scheme}:// scheme is not supported: give a folder or sftp://user@host[:port]/path`);
  }
  const dir = path.resolve(address.startsWith('file://') ? new URL(address).pathname : address);
  let st: fs.Stats | undefined;
  try {
    st = fs.statSync(dir);
  } catch {
    st = undefined;
  }
  if (!st) {
    if (opts.mayBeMissing) return new LocalStore(dir);
    if (!opts.create) throw new BakkerError('STORE', `store ${dir} does not exist: check --store, or run a backup to create it`);
    try {
      fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    } catch (err) {
      throw new BakkerError('STORE', `cannot create store folder ${dir}: ${(err as Error).message}`, { cause: err });
    }
  } else if (!st.isDirectory()) {
    throw new BakkerError('STORE', `store ${dir} is not a folder: point --store at a folder`);
  }
  return new LocalStore(dir);
}

/** What a config target says about reaching its store (config/config.ts TargetConfig). */
export interface TargetAccess {
  store: string;
  identity?: string;
  knownHosts?: string;
  hostKey?: string;
  reconnectFor?: number;
  encryption?: { identity?: string };
}

/** A config target's store, opened with its own SSH settings and, when it has one, its identity (for reading an encrypted store). */
export function openTargetStore(t: TargetAccess): Promise<Store> {
  return openStore(t.store, {
    ssh: { identity: t.identity, knownHosts: t.knownHosts, fingerprint: t.hostKey, ...(t.reconnectFor !== undefined ? { reconnectFor: t.reconnectFor } : {}) },
    encryption: t.encryption?.identity ? { identity: t.encryption.identity } : {},
  });
}
