import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BakkerError, errMessage, usageError } from '../errors.js';
import { sleepSync } from '../util/sleep.js';
import type { StorageConfig } from './config.js';
import { applyPolicy, type Policy } from '../engine/retention/policy.js';
import { compareSnapshotNames } from '../engine/naming.js';
import { OPEN_READ } from '../store/store.js';

/**
 * The storage side's account management (docs/STORAGE.md). Each client is a system account
 * whose sshd `Match User` block chroots it into BASE/NAME (root-owned, as sshd requires) and
 * allows nothing but SFTP; the only folder it may write is BASE/NAME/backups, seen by the client
 * as /backups. Its keys live in a root-owned authorized_keys file with `restrict` and a forced
 * `internal-sftp` (read-only, `-R`, for accounts granted to read it). With a size, the backups
 * folder is the client's own ext4 image, loop-mounted nosuid,nodev,noexec: it fills up alone and
 * never grows unless `grow` is run.
 */

export interface ClientRecord {
  name: string;
  uid: number;
  /** The chroot: BASE/NAME. */
  chroot: string;
  /** The image file when the client has its own fixed-size filesystem on a loop device... */
  image?: string;
  /** ... or its logical volume ("VG/LV") when the storage config names a volume group. */
  lv?: string;
  sizeBytes?: number;
  created: string;
  /** Clients whose keys may read this client's store (read-only). */
  readers: string[];
  /** Protected (`bakker storage protect`): its backups folder is a btrfs subvolume, sealed read-only by the storage side. */
  protected?: boolean;
}

export type Log = (line: string) => void;

const NAME_RE = /^[a-z_][a-z0-9_-]{0,30}$/;
const KEY_TYPES = /^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com)$/;
const MIN_SIZE = 32 * 1024 * 1024;

function sh(cmd: string, args: string[], what?: string): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.error) throw new BakkerError('IO', `${what ?? cmd}: cannot run ${cmd}: ${(r.error as NodeJS.ErrnoException).code ?? r.error.message}`);
  if (r.status !== 0) {
    const msg = (r.stderr || r.stdout || '').trim().split('\n').pop() ?? '';
    throw new BakkerError('IO', `${what ?? cmd}: ${cmd} ${args.join(' ')} failed (exit ${r.status}): ${msg}`);
  }
  return r.stdout;
}

function requireRoot(what: string): void {
  if (process.getuid?.() !== 0) throw usageError(`bakker storage ${what}: must run as root on the storage server (it manages accounts and sshd)`);
}

export function checkName(name: string | undefined, what = 'client name'): string {
  if (!name) throw usageError(`a ${what} is required`);
  if (!NAME_RE.test(name)) throw usageError(`"${name}" is not a usable ${what}: use lower-case letters, digits, "_" and "-", starting with a letter (at most 31)`);
  return name;
}

/** "10G", "512M", "1T", "1073741824": binary units. */
export function parseSize(s: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B)?$/i.exec(s.trim());
  if (!m) throw usageError(`--size "${s}": expected a size such as 64M, 10G or 2T`);
  const mult = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 }[m[2]!.toUpperCase() as '' | 'K' | 'M' | 'G' | 'T'];
  const n = Math.floor(Number(m[1]) * mult);
  if (n < MIN_SIZE) throw usageError(`--size ${s} is too small: give at least 32M`);
  return n;
}

/** Reads one public key line ("type base64 [comment]") from a file; options are refused. */
export function readPubkey(file: string): string {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw usageError(`--pubkey ${file}: cannot read it (${(err as NodeJS.ErrnoException).code ?? errMessage(err)})`);
  }
  const lines = text.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  if (lines.length !== 1) throw usageError(`--pubkey ${file}: expected exactly one public key line (the client's .pub file), found ${lines.length}`);
  const [type, b64] = lines[0]!.split(/\s+/);
  if (!type || !KEY_TYPES.test(type) || !b64 || !/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) {
    throw usageError(`--pubkey ${file}: not an OpenSSH public key line ("ssh-ed25519 AAAA..."): give the client's .pub file, without options`);
  }
  const blob = Buffer.from(b64, 'base64');
  const tlen = blob.length >= 4 ? blob.readUInt32BE(0) : -1;
  if (tlen !== type.length || blob.subarray(4, 4 + tlen).toString('latin1') !== type) throw usageError(`--pubkey ${file}: the key's data does not match its type ${type}: the file is damaged`);
  return `${type} ${b64}`;
}

function recordPath(cfg: StorageConfig, name: string): string {
  return path.join(cfg.stateDir, `${name}.json`);
}

export function readClient(cfg: StorageConfig, name: string): ClientRecord {
  let text: string;
  try {
    text = fs.readFileSync(recordPath(cfg, name), 'utf8');
  } catch {
    throw new BakkerError('NOT_FOUND', `no bakker client "${name}" here (no ${recordPath(cfg, name)}): see 'bakker storage list-clients'`);
  }
  return JSON.parse(text) as ClientRecord;
}

function writeClient(cfg: StorageConfig, rec: ClientRecord): void {
  fs.mkdirSync(cfg.stateDir, { recursive: true, mode: 0o700 });
  const p = recordPath(cfg, rec.name);
  fs.writeFileSync(`${p}.tmp`, JSON.stringify(rec, null, 2) + '\n', { mode: 0o600 });
  fs.renameSync(`${p}.tmp`, p);
}

export function listClientNames(cfg: StorageConfig): string[] {
  let names: string[];
  try {
    names = fs.readdirSync(cfg.stateDir);
  } catch {
    return [];
  }
  return names.filter((n) => n.endsWith('.json')).map((n) => n.slice(0, -5)).filter((n) => NAME_RE.test(n)).sort();
}

function userExists(name: string): boolean {
  return spawnSync('id', ['-u', name]).status === 0;
}

/** sshd refuses a chroot unless every component is root-owned and writable by root only. */
function checkChrootPath(dir: string): void {
  let p = dir;
  for (;;) {
    const st = fs.statSync(p);
    if (st.uid !== 0 || (st.mode & 0o022) !== 0) {
      throw new BakkerError('CONFIG', `${p} is ${st.uid !== 0 ? `owned by uid ${st.uid}` : 'writable by group or others'}: sshd refuses a chroot under it; make it root-owned and mode 755, or choose another --base`);
    }
    if (p === '/') return;
    p = path.dirname(p);
  }
}

function matchBlock(cfg: StorageConfig, name: string, chroot: string): string {
  return [
    `# bakker client ${name}: written by 'bakker storage add-client'; removed by remove-client.`,
    `Match User ${name}`,
    `  ChrootDirectory ${chroot}`,
    `  AuthorizedKeysFile ${path.join(cfg.keysDir, '%u')}`,
    '  PasswordAuthentication no',
    '  KbdInteractiveAuthentication no',
    '  AllowTcpForwarding no',
    '  AllowStreamLocalForwarding no',
    '  AllowAgentForwarding no',
    '  X11Forwarding no',
    '  PermitTunnel no',
    '  PermitTTY no',
    '',
  ].join('\n');
}

const ownKeyLine = (name: string, key: string) => `restrict,command="internal-sftp" ${key} bakker-client:${name}`;
const readerKeyLine = (reader: string, key: string) => `restrict,command="internal-sftp -R" ${key} bakker-reader:${reader}`;

function keysFile(cfg: StorageConfig, name: string): string {
  return path.join(cfg.keysDir, name);
}

/** The client's own keys (type and data) from its authorized_keys file. */
function ownKeys(cfg: StorageConfig, name: string): string[] {
  const text = fs.readFileSync(keysFile(cfg, name), 'utf8');
  return text
    .split('\n')
    .filter((l) => l.endsWith(` bakker-client:${name}`))
    .map((l) => l.split(' ').slice(1, 3).join(' '));
}

function writeKeys(cfg: StorageConfig, name: string, lines: string[]): void {
  fs.mkdirSync(cfg.keysDir, { recursive: true, mode: 0o755 });
  const p = keysFile(cfg, name);
  fs.writeFileSync(`${p}.tmp`, lines.join('\n') + '\n', { mode: 0o644 });
  fs.renameSync(`${p}.tmp`, p);
}

/** Checks the sshd config and that the client's Match block is in effect, then reloads sshd. */
function applySshd(cfg: StorageConfig, name: string | null, chroot: string | null, log: Log): void {
  sh(cfg.sshd, ['-t', '-f', cfg.sshdConfig], 'sshd config check');
  if (name && chroot) {
    const eff = sh(cfg.sshd, ['-T', '-f', cfg.sshdConfig, '-C', `user=${name},host=localhost,addr=127.0.0.1`], 'sshd config check');
    const line = eff.split('\n').find((l) => l.toLowerCase().startsWith('chrootdirectory '));
    const got = line?.slice('chrootdirectory '.length).trim().replace('%u', name);
    if (got !== chroot) {
      throw new BakkerError('CONFIG', `${cfg.sshdConfig} does not apply ${cfg.sshdConfigDir}/bakker-${name}.conf (user ${name} gets ChrootDirectory ${got ?? 'none'}): add "Include ${cfg.sshdConfigDir}/*.conf" at the top of ${cfg.sshdConfig}`);
    }
  }
  reloadSshd(cfg, log);
}

function reloadSshd(cfg: StorageConfig, log: Log): void {
  if (cfg.reload === 'none') {
    log('sshd not reloaded (reload: none): reload it before the client connects');
    return;
  }
  if (Array.isArray(cfg.reload)) {
    sh(cfg.reload[0]!, cfg.reload.slice(1), 'sshd reload');
    return;
  }
  if (cfg.reload === 'auto' && fs.existsSync('/run/systemd/system')) {
    for (const unit of ['ssh', 'sshd']) {
      if (spawnSync('systemctl', ['is-active', '--quiet', unit]).status === 0) {
        sh('systemctl', ['reload', unit], 'sshd reload');
        return;
      }
    }
  }
  let pid: number;
  let before: number;
  try {
    pid = Number(fs.readFileSync(cfg.sshdPidFile, 'utf8').trim());
    before = fs.statSync(cfg.sshdPidFile).mtimeMs;
  } catch {
    log(`sshd does not seem to run (no ${cfg.sshdPidFile}): start it before the client connects`);
    return;
  }
  if (!Number.isInteger(pid) || pid <= 1) throw new BakkerError('IO', `${cfg.sshdPidFile} does not hold a process id: reload sshd by hand`);
  try {
    process.kill(pid, 'SIGHUP');
  } catch (err) {
    throw new BakkerError('IO', `cannot signal sshd (PID ${pid} from ${cfg.sshdPidFile}): ${(err as NodeJS.ErrnoException).code}: reload sshd by hand`);
  }
  // sshd re-executes itself on SIGHUP and writes its PID file again once it listens.
  const until = Date.now() + 5000;
  while (Date.now() < until) {
    try {
      if (fs.statSync(cfg.sshdPidFile).mtimeMs !== before) return;
    } catch {
      // being rewritten
    }
    sleepSync(20);
  }
  log(`sshd (PID ${pid}) was signalled but did not rewrite ${cfg.sshdPidFile} within 5 s: check that it runs`);
}

function fstabLine(rec: ClientRecord, device?: string): string {
  if (rec.lv) return `${device} ${path.join(rec.chroot, 'backups')} ext4 nosuid,nodev,noexec 0 2 # bakker client ${rec.name}`;
  return `${rec.image} ${path.join(rec.chroot, 'backups')} ext4 loop,nosuid,nodev,noexec 0 2 # bakker client ${rec.name}`;
}

/** A logical volume's device path, as LVM reports it. */
function lvPath(lv: string): string {
  return sh('lvs', ['--noheadings', '-o', 'lv_path', lv], 'lvs').trim();
}

/** A logical volume's size in bytes. */
function lvSize(lv: string): number {
  return Number(sh('lvs', ['--noheadings', '--units', 'b', '--nosuffix', '-o', 'lv_size', lv], 'lvs').trim());
}

/** " and IMAGE" or " and the logical volume VG/LV" for messages, or "". */
function backingName(rec: ClientRecord): string {
  return rec.image ? ` and ${rec.image}` : rec.lv ? ` and the logical volume ${rec.lv}` : '';
}

function editFstab(cfg: StorageConfig, name: string, add: string | null): void {
  let text = '';
  try {
    text = fs.readFileSync(cfg.fstab, 'utf8');
  } catch {
    // a missing fstab is created
  }
  const lines = text.split('\n').filter((l) => !l.endsWith(` # bakker client ${name}`));
  while (lines.length && lines[lines.length - 1] === '') lines.pop();
  if (add) lines.push(add);
  fs.writeFileSync(`${cfg.fstab}.bakker-tmp`, lines.join('\n') + '\n', { mode: 0o644 });
  fs.renameSync(`${cfg.fstab}.bakker-tmp`, cfg.fstab);
}

function isMountPoint(dir: string): boolean {
  return spawnSync('mountpoint', ['-q', dir]).status === 0;
}

export interface AddClientOptions {
  name: string;
  pubkey: string;
  sizeBytes?: number;
  base?: string;
}

/** Creates a client; on any failure, undoes what it did. Returns the client's store address. */
export function addClient(cfg: StorageConfig, opts: AddClientOptions, log: Log): { store: string; record: ClientRecord } {
  requireRoot('add-client');
  const name = checkName(opts.name);
  const key = readPubkey(opts.pubkey);
  if (fs.existsSync(recordPath(cfg, name))) throw usageError(`client "${name}" already exists: remove it first ('bakker storage remove-client ${name}') or pick another name`);
  if (userExists(name)) throw usageError(`a system account "${name}" already exists and is not a bakker client: pick another name`);
  const base = path.resolve(opts.base ?? cfg.base);
  const chroot = path.join(base, name);
  if (fs.existsSync(chroot)) throw usageError(`${chroot} already exists: move it away or pick another name`);
  const undo: (() => void)[] = [];
  try {
    fs.mkdirSync(base, { recursive: true, mode: 0o755 });
    checkChrootPath(base);
    sh('useradd', ['-M', '-U', '-d', '/', '-s', '/usr/sbin/nologin', '-c', 'bakker backup client', name], 'add-client');
    undo.push(() => void spawnSync('userdel', [name]));
    // Unlocked for key-only login: sshd refuses a locked ("!") password field without PAM.
    sh('usermod', ['-p', '*', name], 'add-client');
    const uid = Number(sh('id', ['-u', name]).trim());
    const gid = Number(sh('id', ['-g', name]).trim());
    fs.mkdirSync(chroot, { mode: 0o755 });
    fs.chownSync(chroot, 0, 0);
    undo.push(() => fs.rmSync(chroot, { recursive: true, force: true }));
    const backups = path.join(chroot, 'backups');
    fs.mkdirSync(backups, { mode: 0o700 });
    const rec: ClientRecord = { name, uid, chroot, created: new Date().toISOString(), readers: [] };
    if (opts.sizeBytes && cfg.volumeGroup) {
      // A logical volume of its own (docs/STORAGE.md): fixed size, grown only by `grow`.
      const lv = `${cfg.volumeGroup}/bakker-${name}`;
      sh('lvcreate', ['-y', '-L', `${opts.sizeBytes}b`, '-n', `bakker-${name}`, cfg.volumeGroup], 'add-client');
      undo.push(() => void spawnSync('lvremove', ['-y', lv]));
      const device = lvPath(lv);
      sh('mkfs.ext4', ['-q', '-F', '-m', '0', '-L', `bakker-${name}`.slice(0, 16), device], 'add-client');
      sh('mount', ['-o', 'nosuid,nodev,noexec', device, backups], 'add-client');
      undo.push(() => void spawnSync('umount', [backups]));
      fs.rmSync(path.join(backups, 'lost+found'), { recursive: true, force: true });
      rec.lv = lv;
      rec.sizeBytes = lvSize(lv);
      editFstab(cfg, name, fstabLine(rec, device));
      undo.push(() => editFstab(cfg, name, null));
    } else if (opts.sizeBytes) {
      fs.mkdirSync(cfg.imagesDir, { recursive: true, mode: 0o700 });
      const image = path.join(cfg.imagesDir, `${name}.img`);
      if (fs.existsSync(image)) throw usageError(`${image} already exists: move it away first`);
      fs.writeFileSync(image, '', { mode: 0o600 });
      undo.push(() => fs.rmSync(image, { force: true }));
      fs.truncateSync(image, opts.sizeBytes);
      sh('mkfs.ext4', ['-q', '-F', '-m', '0', '-L', `bakker-${name}`.slice(0, 16), image], 'add-client');
      sh('mount', ['-o', 'loop,nosuid,nodev,noexec', image, backups], 'add-client');
      undo.push(() => void spawnSync('umount', [backups]));
      fs.rmSync(path.join(backups, 'lost+found'), { recursive: true, force: true });
      rec.image = image;
      rec.sizeBytes = opts.sizeBytes;
      editFstab(cfg, name, fstabLine(rec));
      undo.push(() => editFstab(cfg, name, null));
    }
    fs.chownSync(backups, uid, gid);
    fs.chmodSync(backups, 0o700);
    writeKeys(cfg, name, [ownKeyLine(name, key)]);
    undo.push(() => fs.rmSync(keysFile(cfg, name), { force: true }));
    fs.mkdirSync(cfg.sshdConfigDir, { recursive: true, mode: 0o755 });
    const conf = path.join(cfg.sshdConfigDir, `bakker-${name}.conf`);
    fs.writeFileSync(conf, matchBlock(cfg, name, chroot), { mode: 0o644 });
    undo.push(() => fs.rmSync(conf, { force: true }));
    writeClient(cfg, rec);
    undo.push(() => fs.rmSync(recordPath(cfg, name), { force: true }));
    applySshd(cfg, name, chroot, log);
    const store = `sftp://${name}@${cfg.host ?? os.hostname()}/backups`;
    return { store, record: rec };
  } catch (err) {
    for (const u of undo.reverse()) {
      try {
        u();
      } catch {
        // best effort: the first error is the one reported
      }
    }
    throw err;
  }
}

export interface ClientStatus {
  name: string;
  chroot: string;
  usedBytes: number;
  allocatedBytes: number | null;
  freeBytes: number | null;
  snapshots: number;
  newest: string | null;
  requests: number;
  readers: string[];
}

const SNAPSHOT_RE = /^\d{4}_\d{2}_\d{2}_\d{2,}$/;

/** What a client's store holds, read without following anything the client could have planted. */
export function clientStatus(cfg: StorageConfig, name: string): ClientStatus {
  const rec = readClient(cfg, name);
  const backups = path.join(rec.chroot, 'backups');
  let names: string[] = [];
  try {
    names = fs.readdirSync(backups);
  } catch {
    // gone or not mounted: reported as empty
  }
  const snaps = names.filter((n) => SNAPSHOT_RE.test(n) && names.includes(`${n}.impl`) && fs.lstatSync(path.join(backups, n)).isDirectory()).sort();
  let usedBytes = 0;
  let allocatedBytes: number | null = null;
  let freeBytes: number | null = null;
  if ((rec.image || rec.lv) && isMountPoint(backups)) {
    const s = fs.statfsSync(backups);
    allocatedBytes = s.blocks * s.bsize;
    freeBytes = s.bavail * s.bsize;
    usedBytes = (s.blocks - s.bfree) * s.bsize;
  } else {
    const r = spawnSync('du', ['-s', '-x', '-B1', backups], { encoding: 'utf8' });
    usedBytes = Number(r.stdout.split('\t')[0]) || 0;
    const s = fs.statfsSync(backups);
    freeBytes = s.bavail * s.bsize;
  }
  return {
    name,
    chroot: rec.chroot,
    usedBytes,
    allocatedBytes,
    freeBytes,
    snapshots: snaps.length,
    newest: snaps[snaps.length - 1] ?? null,
    requests: listRequests(cfg, name).length,
    readers: rec.readers,
  };
}

export interface SpaceRequest {
  client: string;
  file: string;
  at: string | null;
  wantBytes: number | null;
  message: string;
}

/** The client's stores: its backups folder, and folders one level down that hold a store. */
function storeDirs(rec: ClientRecord): string[] {
  const backups = path.join(rec.chroot, 'backups');
  const out = [backups];
  try {
    for (const d of fs.readdirSync(backups, { withFileTypes: true })) {
      if (d.isDirectory() && !d.name.startsWith('.') && fs.existsSync(path.join(backups, d.name, '.bakker'))) out.push(path.join(backups, d.name));
    }
  } catch {
    // not there (or not mounted): no stores
  }
  return out;
}

/**
 * Requests for more space that clients left in their stores' .bakker/requests/ (at most 4 KiB
 * each; nothing the client planted is followed: no symlinks, no special files).
 */
export function listRequests(cfg: StorageConfig, name: string): SpaceRequest[] {
  const rec = readClient(cfg, name);
  const out: SpaceRequest[] = [];
  for (const storeDir of storeDirs(rec)) {
    const dir = path.join(storeDir, '.bakker', 'requests');
    let files: string[];
    try {
      if (!fs.lstatSync(path.join(storeDir, '.bakker')).isDirectory() || !fs.lstatSync(dir).isDirectory()) continue;
      files = fs.readdirSync(dir).filter((f) => f.endsWith('.json')).sort();
    } catch {
      continue;
    }
    for (const f of files) {
      const r = readRequest(path.join(dir, f));
      if (r) out.push({ client: name, file: path.join(dir, f), ...r });
    }
  }
  return out;
}

function readRequest(file: string): Omit<SpaceRequest, 'client' | 'file'> | null {
  let fd: number;
  try {
    fd = fs.openSync(file, OPEN_READ);
  } catch {
    return null; // a symlink or something else the client planted: not read
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile() || st.size > 4096) return null;
    const buf = Buffer.alloc(4096);
    const n = fs.readSync(fd, buf, 0, 4096, 0);
    let v: Record<string, unknown> = {};
    try {
      v = JSON.parse(buf.subarray(0, n).toString('utf8')) as Record<string, unknown>;
    } catch {
      // shown as unreadable
    }
    const clean = (s: unknown) => (typeof s === 'string' ? s.replace(/[^\x20-\x7e]/g, '?').slice(0, 200) : '');
    return {
      at: typeof v.at === 'string' ? clean(v.at) : null,
      wantBytes: typeof v.wantBytes === 'number' && Number.isFinite(v.wantBytes) ? v.wantBytes : null,
      message: clean(v.message) || '(unreadable request)',
    };
  } finally {
    fs.closeSync(fd);
  }
}

/** Grows a client's own filesystem to `sizeBytes` (online) and clears its space requests. */
export function growClient(cfg: StorageConfig, name: string, sizeBytes: number, log: Log): ClientRecord {
  requireRoot('grow');
  const rec = readClient(cfg, name);
  if (!rec.image && !rec.lv) throw usageError(`client ${name} has no fixed-size filesystem (it shares ${path.dirname(rec.chroot)}'s free space): nothing to grow`);
  const backups = path.join(rec.chroot, 'backups');
  const current = rec.lv ? lvSize(rec.lv) : fs.statSync(rec.image!).size;
  if (sizeBytes <= current) throw usageError(`--size must be larger than ${name}'s current ${current} bytes (filesystems are never shrunk)`);
  if (!isMountPoint(backups)) throw new BakkerError('IO', `${backups} is not mounted: mount it (mount ${backups}) and try again`);
  let device: string;
  if (rec.lv) {
    sh('lvextend', ['-L', `${sizeBytes}b`, rec.lv], 'grow');
    device = lvPath(rec.lv);
  } else {
    const loops = sh('losetup', ['-j', rec.image!, '-O', 'NAME', '-n']).trim().split('\n').filter(Boolean);
    if (loops.length !== 1) throw new BakkerError('IO', `cannot find the one loop device of ${rec.image} (found ${loops.length}): check 'losetup -j ${rec.image}'`);
    fs.truncateSync(rec.image!, sizeBytes);
    sh('losetup', ['-c', loops[0]!], 'grow');
    device = loops[0]!;
  }
  const online = spawnSync('resize2fs', [device], { encoding: 'utf8' });
  if (online.status !== 0) {
    // Online growth needs CAP_SYS_RESOURCE (some containers drop it): grow it unmounted instead.
    // While unmounted, the folder underneath is root's (mode 700): the client cannot write there.
    log(`online resize refused (${online.stderr.trim().split('\n').pop()}); growing ${name}'s filesystem unmounted`);
    const um = spawnSync('umount', [backups], { encoding: 'utf8' });
    if (um.status !== 0) throw new BakkerError('IO', `cannot unmount ${backups} to grow it (${um.stderr.trim()}): the client is probably connected; try again when its run has ended`);
    try {
      // An image's loop device went with the mount (autoclear): check and grow the image file.
      const target = rec.lv ? device : rec.image!;
      const fsck = spawnSync('e2fsck', ['-f', '-p', target], { encoding: 'utf8' });
      if ((fsck.status ?? 8) >= 4) throw new BakkerError('IO', `e2fsck ${target} found problems it did not fix (exit ${fsck.status}): check it by hand before growing`);
      sh('resize2fs', [target], 'grow');
    } finally {
      if (rec.lv) sh('mount', ['-o', 'nosuid,nodev,noexec', device, backups], 'grow (mounting again)');
      else sh('mount', ['-o', 'loop,nosuid,nodev,noexec', rec.image!, backups], 'grow (mounting again)');
    }
  }
  rec.sizeBytes = rec.lv ? lvSize(rec.lv) : sizeBytes;
  writeClient(cfg, rec);
  for (const r of listRequests(cfg, name)) fs.rmSync(r.file, { force: true });
  log(`${name} now has ${sizeBytes} bytes`);
  return rec;
}

/** Lets `reader`'s keys read `owner`'s store (read-only SFTP as `owner`), or takes that back. */
export function grantRead(cfg: StorageConfig, reader: string, owner: string, revoke: boolean): ClientRecord {
  requireRoot('grant');
  const r = readClient(cfg, reader);
  const o = readClient(cfg, owner);
  if (r.name === o.name) throw usageError('a client can already read its own store');
  setReader(cfg, o, reader, revoke ? [] : ownKeys(cfg, reader));
  return o;
}

/** Sets `reader`'s read-only key lines on `owner`'s account (none: no access) and its record. */
function setReader(cfg: StorageConfig, owner: ClientRecord, reader: string, keys: string[]): void {
  const lines = fs.readFileSync(keysFile(cfg, owner.name), 'utf8').split('\n').filter((l) => l && !l.endsWith(` bakker-reader:${reader}`));
  for (const k of keys) lines.push(readerKeyLine(reader, k));
  writeKeys(cfg, owner.name, lines);
  owner.readers = owner.readers.filter((x) => x !== reader);
  if (keys.length) owner.readers.push(reader);
  writeClient(cfg, owner);
}

/** Removes a client: its sshd block, keys, account, sessions and (unless keepData) its data. */
export function removeClient(cfg: StorageConfig, name: string, opts: { keepData: boolean; yes: boolean }, log: Log): void {
  requireRoot('remove-client');
  const rec = readClient(cfg, name);
  const backups = path.join(rec.chroot, 'backups');
  if (!opts.keepData && !opts.yes) {
    const st = clientStatus(cfg, name);
    throw usageError(`remove-client ${name} would delete its ${st.snapshots} snapshot(s) in ${rec.chroot}${backingName(rec)}: add --yes to go on, or --keep-data`);
  }
  fs.rmSync(path.join(cfg.sshdConfigDir, `bakker-${name}.conf`), { force: true });
  fs.rmSync(keysFile(cfg, name), { force: true });
  for (const other of listClientNames(cfg)) {
    if (other === name) continue;
    const o = readClient(cfg, other);
    if (o.readers.includes(name)) setReader(cfg, o, name, []);
  }
  applySshd(cfg, null, null, log);
  spawnSync('pkill', ['-KILL', '-u', name]);
  for (let i = 0; i < 50 && spawnSync('pgrep', ['-u', name]).status === 0; i++) sleepSync(20);
  sh('userdel', [name], 'remove-client');
  if (rec.image || rec.lv) {
    if (isMountPoint(backups)) sh('umount', [backups], 'remove-client');
    editFstab(cfg, name, null);
    if (!opts.keepData && rec.image) fs.rmSync(rec.image, { force: true });
    if (!opts.keepData && rec.lv) sh('lvremove', ['-y', rec.lv], 'remove-client');
  }
  if (!opts.keepData) fs.rmSync(rec.chroot, { recursive: true, force: true });
  fs.rmSync(recordPath(cfg, name), { force: true });
  log(opts.keepData ? `client ${name} removed; its data stays in ${rec.chroot}${backingName(rec)}` : `client ${name} and its data removed`);
}

/** A policy as `bakker prune` flags. */
function policyFlags(p: Policy): string[] {
  const out: string[] = [];
  const flag = (name: string) => name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
  for (const [k, v] of Object.entries(p)) {
    if (v === undefined) continue;
    out.push(`--${flag(k)}`, typeof v === 'number' ? String(v) : (v as { text: string }).text);
  }
  return out;
}

export interface ClientPrune {
  client: string;
  store: string;
  ok: boolean;
  removed: string[];
  merged: string[];
  message?: string;
}

/**
 * Applies the storage side's retention to a client's stores (docs/RETENTION.md, "Storage side"):
 * `bakker prune` on each store folder, run as the client's own account (never as root: the store
 * is the client's, and whatever links it planted there are followed, if at all, with only the
 * client's rights). The store's lock is honoured: a client backing up right now is left alone.
 */
export function pruneClient(cfg: StorageConfig, name: string, policy: Policy, opts: { dryRun: boolean }, log: Log): ClientPrune[] {
  requireRoot('prune');
  const rec = readClient(cfg, name);
  const results: ClientPrune[] = [];
  for (const dir of storeDirs(rec)) {
    try {
      if (!fs.lstatSync(path.join(dir, '.bakker')).isDirectory()) continue;
    } catch {
      continue; // not a store (yet)
    }
    const args = [process.execPath, '--max-semi-space-size=4', process.argv[1]!, 'prune', '--store', dir, ...policyFlags(policy), '--json', ...(opts.dryRun ? ['--dry-run'] : [])];
    const r = spawnSync('runuser', ['-u', name, '--', ...args], { encoding: 'utf8', cwd: '/' });
    const events = r.stdout
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    const summary = events.find((e) => e.event === 'summary' && e.command === 'prune');
    const error = events.find((e) => e.event === 'error');
    if (r.status === 0 && summary) {
      const removed = (summary.removed as string[]) ?? [];
      results.push({ client: name, store: dir, ok: true, removed, merged: (summary.merged as string[]) ?? [] });
      log(`${name}: ${dir}: ${opts.dryRun ? 'would remove' : 'removed'} ${removed.length ? removed.join(', ') : 'nothing'}`);
    } else {
      const message = String(error?.message ?? (r.stderr || `exit code ${r.status}`)).trim().split('\n').pop()!;
      results.push({ client: name, store: dir, ok: false, removed: [], merged: [], message });
      log(`${name}: ${dir}: not pruned: ${message}`);
    }
  }
  return results;
}

/** Whether `dir` is a btrfs subvolume (its own inode 256 on btrfs). */
function isSubvolume(dir: string): boolean {
  return spawnSync('btrfs', ['subvolume', 'show', dir], { encoding: 'utf8' }).status === 0;
}

/** Where the storage side keeps a protected client's sealed copies (outside its chroot). */
export function sealsDir(cfg: StorageConfig, name: string): string {
  return path.join(cfg.protectedDir ?? path.join(path.dirname(readClient(cfg, name).chroot), '.bakker-protected'), name);
}

/**
 * Protects a client (docs/RETENTION.md, "Protection"): its backups folder becomes a btrfs
 * subvolume (it must be on btrfs; an empty folder is turned into one), and from now on the
 * storage side keeps read-only snapshots of it, taken by `bakker storage seal` (and by
 * `bakker storage prune`) whenever a new complete snapshot has appeared, outside the chroot. The
 * client still writes and links in its own folder as before; whatever it does there later cannot
 * reach a sealed copy.
 */
export function protectClient(cfg: StorageConfig, name: string, log: Log): ClientRecord {
  requireRoot('protect');
  const rec = readClient(cfg, name);
  const backups = path.join(rec.chroot, 'backups');
  if (!isSubvolume(backups)) {
    const fsType = spawnSync('stat', ['-f', '-c', '%T', backups], { encoding: 'utf8' }).stdout.trim();
    if (fsType !== 'btrfs') throw new BakkerError('STORE', `protect needs ${name}'s backups folder on btrfs (it is on ${fsType || 'an unknown filesystem'}): add the client with --base on a btrfs filesystem`);
    if (fs.readdirSync(backups).length > 0) throw new BakkerError('STORE', `${backups} is not a btrfs subvolume and is not empty: move its stores away, run protect, and move them back (mv onto the new subvolume copies, reflinks aside)`);
    const st = fs.statSync(backups);
    fs.rmdirSync(backups);
    sh('btrfs', ['subvolume', 'create', backups], 'protect');
    fs.chownSync(backups, st.uid, st.gid);
    fs.chmodSync(backups, st.mode & 0o7777);
  }
  fs.mkdirSync(sealsDir(cfg, name), { recursive: true, mode: 0o700 });
  if (spawnSync('stat', ['-f', '-c', '%T', sealsDir(cfg, name)], { encoding: 'utf8' }).stdout.trim() !== 'btrfs') {
    throw new BakkerError('STORE', `the sealed copies' folder ${sealsDir(cfg, name)} must be on the same btrfs filesystem as ${backups}: set protected_dir in the storage config, or leave it unset (BASE/.bakker-protected)`);
  }
  rec.protected = true;
  writeClient(cfg, rec);
  log(`${name} is protected: sealed copies go to ${sealsDir(cfg, name)}`);
  sealClient(cfg, name, log);
  return rec;
}

/** What a seal was taken of: each store's newest complete snapshot. */
function newestSnapshots(rec: ClientRecord): Record<string, string> {
  const out: Record<string, string> = {};
  for (const dir of storeDirs(rec)) {
    let names: string[];
    try {
      names = fs.readdirSync(dir);
    } catch {
      continue;
    }
    const complete = names.filter((n) => SNAPSHOT_RE.test(n) && names.includes(`${n}.impl`)).sort(compareSnapshotNames);
    if (complete.length) out[path.relative(path.join(rec.chroot, 'backups'), dir) || '.'] = complete[complete.length - 1]!;
  }
  return out;
}

/**
 * Takes a read-only btrfs snapshot of a protected client's backups folder when a store has a new
 * complete snapshot since the last seal (named by the UTC time: YYYY-MM-DDTHH-MM-SS-mmm). Returns its path,
 * or null when nothing is new.
 */
export function sealClient(cfg: StorageConfig, name: string, log: Log): string | null {
  requireRoot('seal');
  const rec = readClient(cfg, name);
  if (!rec.protected) throw usageError(`client ${name} is not protected: run 'bakker storage protect ${name}' first`);
  const dir = sealsDir(cfg, name);
  const record = path.join(dir, '.sealed.json');
  const now = newestSnapshots(rec);
  let last: Record<string, string> = {};
  try {
    last = JSON.parse(fs.readFileSync(record, 'utf8')) as Record<string, string>;
  } catch {
    last = {};
  }
  if (Object.keys(now).length === 0 || JSON.stringify(now) === JSON.stringify(last)) return null;
  const stamp = new Date().toISOString().replace(/Z$/, '').replace(/[:.]/g, '-'); // to the millisecond: two seals never share a name
  const seal = path.join(dir, stamp);
  sh('btrfs', ['subvolume', 'snapshot', '-r', path.join(rec.chroot, 'backups'), seal], 'seal');
  fs.writeFileSync(`${record}.tmp`, JSON.stringify(now) + '\n', { mode: 0o600 });
  fs.renameSync(`${record}.tmp`, record);
  log(`${name}: sealed ${Object.entries(now).map(([s, n]) => `${s}: ${n}`).join(', ')} in ${seal}`);
  return seal;
}

/** Removes the sealed copies of a protected client that `policy` does not keep (by seal time). */
export function pruneSeals(cfg: StorageConfig, name: string, policy: Policy, opts: { dryRun: boolean }, log: Log): string[] {
  const dir = sealsDir(cfg, name);
  let seals: string[] = [];
  try {
    seals = fs.readdirSync(dir).filter((n) => /^\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d-\d{3}$/.test(n));
  } catch {
    return [];
  }
  const snaps = seals.map((n) => ({ name: n, time: new Date(`${n.slice(0, 10)}T${n.slice(11, 19).replace(/-/g, ':')}.${n.slice(20)}Z`) }));
  const removed: string[] = [];
  for (const d of applyPolicy(snaps, policy)) {
    if (d.keep) continue;
    removed.push(d.name);
    if (!opts.dryRun) sh('btrfs', ['subvolume', 'delete', path.join(dir, d.name)], 'prune seals');
  }
  if (removed.length) log(`${name}: ${opts.dryRun ? 'would remove' : 'removed'} sealed copies ${removed.join(', ')}`);
  return removed;
}
