import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { connectSftp } from '../../src/store/sftp/connect.js';
import { FXF_CREAT, FXF_TRUNC, FXF_WRITE } from '../../src/store/sftp/sftp-client.js';
import { bakker, jsonLines } from '../helpers/cli.js';
import { startSshd, type Sshd } from '../helpers/sshd.js';
import { build, requireTool, rmrf, sh, tempDir } from '../helpers/tree.js';

/*
 * bakker storage protect: a client whose snapshots the storage side seals (read-only btrfs
 * snapshots outside its chroot) tries to delete, rename, chmod, truncate and overwrite old
 * snapshots through its real chrooted SFTP account; every sealed snapshot still restores byte for
 * byte, and the client's next backup still works and links unchanged files.
 */

let sshd: Sshd;
let work: string;
let mnt: string;
let cfg: string;
const name = `bkp${Math.random().toString(16).slice(2, 8)}`;

before(async () => {
  for (const t of ['mkfs.btrfs', 'btrfs', 'rsync']) requireTool(t);
  sshd = await startSshd();
  work = tempDir();
  const img = path.join(work, 'btrfs.img');
  sh('truncate', ['-s', '256M', img]);
  sh('mkfs.btrfs', ['-q', img]);
  mnt = `/srv/bakker-protect-${name}`; // a chroot's parents must be root-owned, and not under /tmp
  fs.mkdirSync(mnt, { mode: 0o755 });
  sh('mount', ['-o', 'loop', img, mnt]);
  fs.chmodSync(mnt, 0o755);
  cfg = path.join(work, 'storage.yaml');
  fs.writeFileSync(cfg, fs.readFileSync(sshd.storageConfig, 'utf8') + `client_retention:\n  ${name}: {keep_last: 1}\n`);
});

after(async () => {
  spawnSync(process.execPath, [path.resolve(path.dirname(new URL(import.meta.url).pathname), '../../../bin/bakker.js'), 'storage', 'remove-client', name, '--yes', '--storage-config', cfg]);
  const seals = path.join(mnt, '.bakker-protected', name);
  if (fs.existsSync(seals)) spawnSync('btrfs', ['subvolume', 'delete', ...fs.readdirSync(seals).filter((n) => !n.startsWith('.')).map((n) => path.join(seals, n))]);
  spawnSync('umount', [mnt]);
  fs.rmSync(mnt, { recursive: true, force: true });
  await sshd?.stop();
  if (work) rmrf(work);
});

const storage = (args: string[]) => bakker(['storage', ...args, '--storage-config', cfg, '--json']);

test('protect: sealed snapshots survive everything the client does to its own copy', async () => {
  const key = path.join(work, 'key');
  sh('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
  const add = storage(['add-client', name, '--pubkey', `${key}.pub`, '--base', mnt]);
  assert.equal(add.code, 0, add.stderr);
  const backups = path.join(mnt, name, 'backups');
  const p = storage(['protect', name]);
  assert.equal(p.code, 0, p.stderr);
  assert.equal(spawnSync('btrfs', ['subvolume', 'show', backups]).status, 0, 'its backups folder is a subvolume');

  const ssh = ['--identity', key, '--known-hosts', sshd.knownHosts];
  const url = `sftp://${name}@127.0.0.1:${new URL(sshd.addAccount().url).port}/backups/s`;
  const src = path.join(work, 'src');
  build(src, [
    { file: 'a.txt', content: 'alpha' },
    { file: 'big.bin', content: Buffer.alloc(300_000, 5) },
    { file: 'same.txt', content: 'never changes' },
  ]);
  const states: string[] = [];
  const snaps: string[] = [];
  for (let i = 0; i < 2; i++) {
    if (i === 1) fs.writeFileSync(path.join(src, 'a.txt'), 'alpha, second');
    const r = bakker(['backup', src, '--store', url, '--json', ...ssh]);
    assert.equal(r.code, 0, r.stderr);
    snaps.push(String(jsonLines(r.stdout).find((e) => e.event === 'summary')!.snapshot));
    const st = path.join(work, `state${i}`);
    sh('cp', ['-a', src, st]);
    states.push(st);
  }
  const seal = storage(['seal', '--client', name]);
  assert.equal(seal.code, 0, seal.stderr);
  const [sealPath] = jsonLines(seal.stdout).find((e) => e.event === 'summary')!.sealed as string[];
  assert.ok(sealPath);
  assert.match(sh('btrfs', ['property', 'get', '-ts', sealPath!, 'ro']), /ro=true/);
  assert.deepEqual(jsonLines(storage(['seal', '--client', name]).stdout).find((e) => e.event === 'summary')!.sealed, [], 'nothing new: no new seal');

  // The client attacks its own history through SFTP.
  const { ssh: conn, sftp } = await connectSftp({ host: '127.0.0.1', port: Number(new URL(url).port), user: name, identity: key, knownHosts: [sshd.knownHosts] });
  try {
    const at = (snap: string, f: string) => Buffer.from(`/backups/s/${snap}${src}/${f}`);
    await sftp.remove(at(snaps[0]!, 'a.txt'));
    await sftp.setstat(at(snaps[1]!, 'a.txt'), { mode: 0 });
    const h = await sftp.open(at(snaps[1]!, 'big.bin'), FXF_WRITE | FXF_TRUNC);
    await sftp.write(h, 0, Buffer.from('garbage'));
    await sftp.close(h);
    const h2 = await sftp.open(at(snaps[0]!, 'same.txt.evil'), FXF_WRITE | FXF_CREAT);
    await sftp.close(h2);
    await sftp.posixRename(Buffer.from(`/backups/s/${snaps[0]}`), Buffer.from('/backups/s/renamed'));
  } finally {
    sftp.end();
    conn.end();
  }

  // Every sealed snapshot restores as the source was, byte for byte.
  const sealed = path.join(sealPath!, 's');
  for (const [i, snap] of snaps.entries()) {
    const to = path.join(work, `restored${i}`);
    const r = bakker(['restore', '--store', sealed, '--snapshot', snap, '--to', to]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(sh('rsync', ['-rcn', '--delete', '--itemize-changes', `${states[i]}/`, `${path.join(to, src)}/`]).trim(), '', `snapshot ${snap} from the seal`);
  }
  assert.equal(bakker(['verify', '--store', sealed, '--snapshot', 'all']).code, 0);

  // The client goes on: a new backup succeeds and links what did not change.
  const next = bakker(['backup', src, '--store', url, '--json', ...ssh]);
  assert.equal(next.code, 0, next.stderr);
  const s3 = String(jsonLines(next.stdout).find((e) => e.event === 'summary')!.snapshot);
  assert.equal(fs.statSync(path.join(backups, 's', s3, src, 'same.txt')).ino, fs.statSync(path.join(backups, 's', snaps[1]!, src, 'same.txt')).ino);

  // The storage side seals the new state and prunes sealed copies by its own policy (keep_last 1).
  const pr = storage(['prune', '--client', name]);
  assert.equal(pr.code, 0, pr.stderr);
  const sealDir = path.join(mnt, '.bakker-protected', name);
  const seals = fs.readdirSync(sealDir).filter((n) => !n.startsWith('.'));
  assert.equal(seals.length, 1, `one sealed copy kept: ${seals}`);
  assert.notEqual(path.join(sealDir, seals[0]!), sealPath, 'the newer one');
});
