import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BakkerError, errMessage, usageError } from '../errors.js';
import { loadConfig } from '../config/config.js';
import { initStore } from '../engine/layout.js';
import { openStore } from '../store/open.js';
import { bytes } from '../ui/format.js';
import type { Output } from '../ui/output.js';
import { parse, requireOpt } from './args.js';
import { EXIT } from './exit-codes.js';

export const help = `Usage: bakker init --store STORE [--source DIR]... [--config FILE] [options]

Sets this server up to back up to STORE: for an sftp:// store, makes an SSH key (ed25519) when
there is none, checks the storage server's host key, logs in and checks the store folder (made
when missing) and its free space; writes a starter config when there is none. Run it again after
fixing what it reports: it keeps what it already made.

Options:
  --store STORE            a folder, or sftp://user@host[:port]/path
  --source DIR             what to back up (repeatable; default /etc); goes into the new config
  --config FILE            the config to write (default /etc/bakker/bakker.yaml); kept if it exists
  -i, --identity FILE      the SSH private key (default: id_ed25519 beside the config; made if missing)
  --known-hosts FILE       bakker's known_hosts (default: known_hosts beside the config); host keys
                           in ~/.ssh/known_hosts and /etc/ssh/ssh_known_hosts count too
  --host-key SHA256:...    the storage server's host key fingerprint, checked out of band
                           (on the storage server: ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub);
                           a matching key is added to --known-hosts
  --trust-on-first-use     accept and record whatever host key the server shows now (only if the
                           network path to it can be trusted today)
  --json                   JSON lines events and a final summary

The host key is never accepted silently: it must be in a known_hosts file, match --host-key, or
--trust-on-first-use must be given.

Examples:
  bakker init --store sftp://server1@storage1/backups --host-key SHA256:Xb3...
  bakker init --store sftp://server1@storage1/backups --trust-on-first-use --source /data --source /etc
  bakker init --store /backups/server1 --source /srv`;

/** Writes `text` to `file` only when nothing is there (never replaces what an admin has). */
function writeNew(file: string, text: string, mode: number): boolean {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  try {
    fs.writeFileSync(file, text, { mode, flag: 'wx' });
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw new BakkerError('USAGE', `cannot write ${file}: ${errMessage(err)}`, { cause: err });
  }
}

function starterConfig(store: string, sources: string[], ssh: { identity: string; knownHosts: string } | null): string {
  const target = store.startsWith('sftp://') ? 'remote' : 'local';
  const lines = [
    `# bakker config, started by 'bakker init' on ${new Date().toISOString().slice(0, 10)} (see docs/CONFIG.md).`,
    `# Back up with: bakker backup -c THIS_FILE (or plain 'bakker backup' for /etc/bakker/bakker.yaml).`,
    `job: ${JSON.stringify(os.hostname().replace(/[^A-Za-z0-9._-]/g, '_') || 'server')}`,
    'sources:',
    ...sources.map((s) => `  - ${JSON.stringify(s)}`),
    'exclude: []',
    'targets:',
    `  ${target}:`,
    `    store: ${JSON.stringify(store)}`,
  ];
  if (ssh) lines.push(`    identity: ${JSON.stringify(ssh.identity)}`, `    known_hosts: ${JSON.stringify(ssh.knownHosts)}`);
  return lines.join('\n') + '\n';
}

export async function run(argv: string[], out: Output): Promise<number> {
  const { values: v } = parse('init', argv, {
    store: { type: 'string', short: 's' },
    source: { type: 'string', multiple: true },
    config: { type: 'string', short: 'c' },
    'trust-on-first-use': { type: 'boolean' },
  });
  const address = requireOpt('init', v.store, '--store', 'give the store: a folder or sftp://user@host[:port]/path');
  const sources = (v.source ?? ['/etc']).map((s) => {
    if (!path.isAbsolute(s)) throw usageError(`bakker init: --source ${s}: give an absolute path (for example /${s.replace(/^\.?\/*/, '')})`);
    return path.resolve(s);
  });
  if (v['host-key'] !== undefined && !/^SHA256:[A-Za-z0-9+/]{43}$/.test(v['host-key'])) {
    throw usageError(`bakker init: --host-key ${v['host-key']}: expected a fingerprint as ssh-keygen -lf prints it (SHA256: and 43 characters)`);
  }
  const configFile = path.resolve(v.config ?? '/etc/bakker/bakker.yaml');
  const dir = path.dirname(configFile);
  const sftp = address.startsWith('sftp://');
  const identity = path.resolve(v.identity ?? path.join(dir, 'id_ed25519'));
  const knownHosts = path.resolve(v['known-hosts'] ?? path.join(dir, 'known_hosts'));
  const done: Record<string, unknown> = { command: 'init', store: address, config: configFile };

  if (sftp) {
    // 1. The key: made once, kept after that.
    if (!fs.existsSync(identity)) {
      const { utils } = (await import('ssh2')).default;
      const pair = utils.generateKeyPairSync('ed25519', { comment: `bakker@${os.hostname()}` });
      writeNew(identity, pair.private, 0o600);
      fs.writeFileSync(`${identity}.pub`, pair.public + '\n', { mode: 0o644 });
      out.emit({ event: 'info', message: `made the SSH key ${identity} (public key: ${identity}.pub)` });
      done.keyMade = true;
    } else done.keyMade = false;
    done.identity = identity;
    done.knownHosts = knownHosts;
  }

  // 2. The starter config (never replacing one that is there).
  const made = writeNew(configFile, starterConfig(address, sources, sftp ? { identity, knownHosts } : null), 0o600);
  done.configMade = made;
  out.emit({ event: 'info', message: made ? `wrote the starter config ${configFile}` : `kept the existing config ${configFile}` });
  if (made) loadConfig(configFile); // what init writes must load

  // 3. The connection: host key, login, store folder, space.
  let pub = '';
  if (sftp) {
    try {
      pub = fs.readFileSync(`${identity}.pub`, 'utf8').trim();
    } catch {
      pub = '';
    }
    const url = new URL(address);
    const host = url.hostname.replace(/^\[|\]$/g, '');
    const port = url.port ? Number(url.port) : 22;
    const home = os.homedir();
    let unknown: string | null = null;
    let recorded = false;
    const { connectSftp, fingerprintOf, knownHostsLine, knownKeys } = await import('../store/sftp/connect.js');
    // Keys this machine's ssh already trusts are trusted here too, and copied into bakker's file
    // (the config names only that one).
    const system = new Set<string>();
    for (const f of [path.join(home, '.ssh', 'known_hosts'), '/etc/ssh/ssh_known_hosts']) {
      try {
        for (const k of knownKeys(fs.readFileSync(f, 'utf8'), host, port)) system.add(k);
      } catch {
        // none there
      }
    }
    try {
      const s = await connectSftp({
        host,
        port,
        user: decodeURIComponent(url.username),
        identity,
        knownHosts: [knownHosts],
        onUnknownHostKey: (key) => {
          const fp = fingerprintOf(key);
          unknown = fp;
          if (!v['trust-on-first-use'] && fp !== v['host-key'] && !system.has(key.toString('base64'))) return false;
          fs.mkdirSync(path.dirname(knownHosts), { recursive: true, mode: 0o700 });
          fs.appendFileSync(knownHosts, knownHostsLine(host, port, key), { mode: 0o644 });
          recorded = true;
          return true;
        },
      });
      s.sftp.end();
      s.ssh.end();
    } catch (err) {
      if (unknown && !recorded) {
        throw new BakkerError(
          'STORE',
          `the host key of ${host}:${port} is not known yet (${unknown}): compare it with the storage server's own (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub there), then run bakker init again with --host-key ${unknown}, or with --trust-on-first-use if the network to it can be trusted now`,
          { cause: err },
        );
      }
      if (/refused the key/.test(errMessage(err))) {
        if (pub) out.line(pub);
        throw new BakkerError(
          'STORE',
          `${url.username}@${host} does not accept the key ${identity} yet: on the storage server, as root, run 'bakker storage add-client ${decodeURIComponent(url.username)} --pubkey FILE' with ${identity}.pub (printed above) in FILE, then run bakker init again`,
          { cause: err },
        );
      }
      throw err;
    }
    if (recorded) out.emit({ event: 'info', message: `recorded the host key of ${host}:${port} (${unknown}) in ${knownHosts}` });
    done.hostKeyRecorded = recorded;
  }
  const store = await openStore(address, { create: true, ssh: { identity, knownHosts } });
  try {
    await initStore(store);
    const free = await store.statvfs().catch(() => null);
    if (!store.caps.hardLinks) throw new BakkerError('STORE', `store ${store.url} cannot make hard links: bakker snapshots need them (an SFTP server needs the hardlink@openssh.com extension: OpenSSH 5.7 or newer)`);
    done.freeBytes = free?.freeBytes ?? null;
    out.line(`store ${store.url} is ready${free ? `: ${bytes(free.freeBytes)} free` : ''}`);
    out.line(`back up with: bakker backup -c ${configFile}`);
  } finally {
    await store.close();
  }
  out.summary(done);
  return EXIT.OK;
}
