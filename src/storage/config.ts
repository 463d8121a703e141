import fs from 'node:fs';
import path from 'node:path';
import { parseYaml } from '../config/config.js';
import { configError } from '../errors.js';
import { checkRetention } from '../config/job-config.js';
import type { Policy } from '../engine/retention/policy.js';

/**
 * Settings of the storage side (`bakker storage ...`, run as root on the storage server), from
 * /etc/bakker/storage.yaml when it exists (docs/STORAGE.md). Every setting has a default that fits
 * a stock Debian OpenSSH server, so the file is optional.
 */
export interface StorageConfig {
  file: string | undefined;
  /** Where client chroots live: BASE/NAME, with the client's store at BASE/NAME/backups. */
  base: string;
  /** The main sshd config (checked with `sshd -t -f` before any reload). */
  sshdConfig: string;
  /** Where the per-client `Match User` files go; the main config must Include DIR/*.conf. */
  sshdConfigDir: string;
  /** Root-owned authorized_keys files, one per client (AuthorizedKeysFile DIR/%u). */
  keysDir: string;
  /** Client records (NAME.json). */
  stateDir: string;
  /** Image files of fixed-size client filesystems (when there is no volume group). */
  imagesDir: string;
  /** An LVM volume group: fixed-size client filesystems are logical volumes in it, not image files. */
  volumeGroup: string | undefined;
  /** Where the mounts of fixed-size filesystems are recorded so they come back after a reboot. */
  fstab: string;
  /** sshd's PID file, for a reload by SIGHUP where systemd is absent. */
  sshdPidFile: string;
  /** How sshd is reloaded: auto (systemd if it runs sshd, else signal), signal (SIGHUP to the PID in sshd_pid_file), none, or a command (argv). */
  reload: 'auto' | 'signal' | 'none' | string[];
  /** The host name printed in store addresses (default: this host's name). */
  host: string | undefined;
  /** The sshd binary (for -t and -T checks). */
  sshd: string;
  /** Where protected clients' sealed copies go (outside every chroot, on the clients' btrfs); default: BASE/.bakker-protected. */
  protectedDir: string | undefined;
  /** The storage side's retention for every client, and per client (`bakker storage prune`). */
  retention: Policy | undefined;
  clientRetention: Record<string, Policy>;
}

export const DEFAULT_STORAGE_CONFIG = '/etc/bakker/storage.yaml';

const KEYS = ['base', 'sshd_config', 'sshd_config_dir', 'keys_dir', 'state_dir', 'images_dir', 'volume_group', 'fstab', 'sshd_pid_file', 'reload', 'host', 'sshd', 'retention', 'client_retention', 'protected_dir'];

export function storageDefaults(): StorageConfig {
  return {
    file: undefined,
    base: '/backups',
    sshdConfig: '/etc/ssh/sshd_config',
    sshdConfigDir: '/etc/ssh/sshd_config.d',
    keysDir: '/etc/bakker/storage/keys',
    stateDir: '/etc/bakker/storage/clients',
    imagesDir: '/var/lib/bakker/images',
    volumeGroup: undefined,
    fstab: '/etc/fstab',
    sshdPidFile: '/run/sshd.pid',
    reload: 'auto',
    host: undefined,
    sshd: '/usr/sbin/sshd',
    retention: undefined,
    clientRetention: {},
    protectedDir: undefined,
  };
}

/**
 * Loads the storage config: `file` when given (it must exist), else the default path when it
 * exists, else the defaults.
 */
export function loadStorageConfig(file: string | undefined): StorageConfig {
  const cfg = storageDefaults();
  const f = file ?? process.env.BAKKER_STORAGE_CONFIG ?? DEFAULT_STORAGE_CONFIG;
  let text: string;
  try {
    text = fs.readFileSync(f, 'utf8');
  } catch (err) {
    if (file === undefined && (err as NodeJS.ErrnoException).code === 'ENOENT') return cfg;
    throw configError(`cannot read storage config ${f}: ${(err as NodeJS.ErrnoException).code ?? String(err)}: check --storage-config`, f);
  }
  const { c, raw } = parseYaml(text, f);
  cfg.file = f;
  if (raw === null || raw === undefined) return cfg;
  const o = c.keys([], raw, KEYS);
  const abs = (key: string): string | undefined => {
    if (o[key] === undefined) return undefined;
    const v = c.str([key], o[key], 'an absolute path');
    if (!path.isAbsolute(v)) c.fail([key], `"${v}" is not absolute: write it from /`);
    return path.resolve(v);
  };
  cfg.base = abs('base') ?? cfg.base;
  cfg.sshdConfig = abs('sshd_config') ?? cfg.sshdConfig;
  cfg.sshdConfigDir = abs('sshd_config_dir') ?? cfg.sshdConfigDir;
  cfg.keysDir = abs('keys_dir') ?? cfg.keysDir;
  cfg.stateDir = abs('state_dir') ?? cfg.stateDir;
  cfg.imagesDir = abs('images_dir') ?? cfg.imagesDir;
  cfg.fstab = abs('fstab') ?? cfg.fstab;
  cfg.sshdPidFile = abs('sshd_pid_file') ?? cfg.sshdPidFile;
  cfg.sshd = abs('sshd') ?? cfg.sshd;
  cfg.protectedDir = abs('protected_dir') ?? cfg.protectedDir;
  if (o.host !== undefined) cfg.host = c.str(['host'], o.host, 'a host name');
  if (o.retention !== undefined) cfg.retention = checkRetention(c, ['retention'], o.retention);
  if (o.client_retention !== undefined) {
    const per = c.keys(['client_retention'], o.client_retention, Object.keys((o.client_retention ?? {}) as object));
    for (const [name, p] of Object.entries(per)) cfg.clientRetention[name] = checkRetention(c, ['client_retention', name], p);
  }
  if (o.volume_group !== undefined) {
    cfg.volumeGroup = c.str(['volume_group'], o.volume_group, 'an LVM volume group name');
    if (!/^[A-Za-z0-9+_.][A-Za-z0-9+_.-]*$/.test(cfg.volumeGroup)) c.fail(['volume_group'], `"${cfg.volumeGroup}" is not a volume group name (letters, digits, + _ . -; see vgs)`);
  }
  if (o.reload !== undefined) {
    if (o.reload === 'auto' || o.reload === 'signal' || o.reload === 'none') cfg.reload = o.reload;
    else if (Array.isArray(o.reload)) cfg.reload = c.strList(['reload'], o.reload, 'command word');
    else c.fail(['reload'], `expected auto, signal, none or a command as a list (for example [systemctl, reload, ssh]), got ${JSON.stringify(o.reload)}`);
  }
  return cfg;
}
