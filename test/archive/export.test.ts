import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { BIN, bakker } from '../helpers/cli.js';
import { buildEveryKind, requireTool, rmrf, sh, tempDir } from '../helpers/tree.js';

/* bakker export: a snapshot (or an increment) as a pax tar stream, checked by GNU tar, rsync and getfacl. */

let work: string;
let src: string;
const odd = Buffer.concat([Buffer.from('odd-'), Buffer.from([0xff]), Buffer.from(' name')]);

before(() => {
  for (const t of ['tar', 'rsync', 'getfacl', 'setfacl', 'setfattr']) requireTool(t);
  work = tempDir();
  src = path.join(work, 'src');
  buildEveryKind(src, 'key = value\n', odd, [
    { file: 'data/big.bin', content: Buffer.alloc(700_000, 3) },
    { file: 'data/edit.txt', content: 'v1' },
    { file: 'data/empty', content: '' },
  ]);
});

after(() => {
  if (work) rmrf(work);
});

/** bakker export to a file (the stream is binary). */
function exportTo(file: string, args: string[]): void {
  const fd = fs.openSync(file, 'w');
  try {
    const r = spawnSync(BIN, ['export', ...args], { stdio: ['ignore', fd, 'pipe'], env: process.env });
    assert.equal(r.status, 0, r.stderr.toString());
  } finally {
    fs.closeSync(fd);
  }
}

test('export: GNU tar extracts the exact tree (contents, owners, modes, ns-ish times, hard links, xattrs, ACLs, devices); --since holds only what is new', () => {
  const store = path.join(work, 'store');
  assert.equal(bakker(['backup', src, '--store', store]).code, 0);
  fs.writeFileSync(path.join(src, 'data/edit.txt'), 'v2 changed');
  fs.writeFileSync(path.join(src, 'data/new.txt'), 'new');
  fs.renameSync(path.join(src, 'data/empty'), path.join(work, 'empty-moved-away'));
  assert.equal(bakker(['backup', src, '--store', store]).code, 0);
  const [s1, s2] = fs.readdirSync(store).filter((n) => /^\d{4}_\d\d_\d\d_\d\d$/.test(n)).sort();

  const full = path.join(work, 'full.tar');
  exportTo(full, ['--store', store, 'latest']);
  const x = path.join(work, 'x');
  fs.mkdirSync(x);
  sh('tar', ['--xattrs', "--xattrs-include=*", '--acls', '--numeric-owner', '-xpf', full, '-C', x]);
  const check = sh('rsync', ['-aHAXn', '--checksum', '--itemize-changes', '--devices', '--specials', `${src}/`, `${path.join(x, src)}/`]);
  assert.equal(check.trim(), '', `extracted tree differs:\n${check}`);
  const acl = (root: string) => sh('getfacl', ['-Rpn', '.'], { cwd: root });
  assert.equal(acl(path.join(x, src)), acl(src), 'getfacl -R matches');
  assert.equal(fs.statSync(path.join(x, src, 'data/h1')).ino, fs.statSync(path.join(x, src, 'data/h2')).ino);
  assert.ok(fs.statSync(path.join(x, src, 'data/null')).isCharacterDevice());

  const inc = path.join(work, 'inc.tar');
  exportTo(inc, ['--store', store, s2!, '--since', s1!]);
  const members = execFileSync('tar', ['-tvf', inc]).toString().split('\n').filter((l) => l && !l.endsWith('/') && !l.endsWith('.bakker-removed'));
  const listed = members.map((l) => l.replace(/^.*?\d\d:\d\d /, '').replace(/ link to .*$/, ''));
  const rel = (p: string) => path.join(src, p).slice(1);
  // Files and symlinks: only the new content; folders and special files (no content) always; a
  // hard link to an unchanged group's first path as a link (it may be new in the group).
  assert.deepEqual(listed.sort(), [rel('data/edit.txt'), rel('data/fifo'), rel('data/h2'), rel('data/new.txt'), rel('data/null')].sort());
  assert.match(members.find((l) => l.includes('data/h2'))!, /^h.* link to .*data\/h1$/, 'h2 comes as a hard link');
  // GNU tar: the full of s1, then the increment over it, then the removed paths deleted = s2.
  const s1tar = path.join(work, 's1.tar');
  exportTo(s1tar, ['--store', store, s1!]);
  const y = path.join(work, 'y');
  fs.mkdirSync(y);
  const untar = (f: string) => sh('tar', ['--xattrs', '--xattrs-include=*', '--acls', '--numeric-owner', '-xpf', f, '-C', y]);
  untar(s1tar);
  // As docs/FORMAT.md says: the removed paths first (tar -xOf ... .bakker-removed), then the increment.
  const removed = execFileSync('tar', ['-xOf', inc, '.bakker-removed']).toString('utf8');
  assert.equal(removed, `${rel('data/empty')}\0`, 'the removed paths, NUL-terminated');
  for (const r of removed.split('\0').filter(Boolean)) fs.rmSync(path.join(y, r), { recursive: true });
  untar(inc);
  assert.equal(fs.readFileSync(path.join(y, src, 'data/edit.txt'), 'utf8'), 'v2 changed');
  const incCheck = sh('rsync', ['-aHAXn', '--checksum', '--itemize-changes', '--devices', '--specials', `${src}/`, `${path.join(y, src)}/`]);
  assert.equal(incCheck.trim(), '', `full + increment differ from the source:\n${incCheck}`);

  const bad = bakker(['export', '--store', store, s1!, '--since', s2!]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--since \S+ is not older than/);
});

test('export from an encrypted store decrypts with --key (and needs it)', () => {
  const st = path.join(work, 'state');
  const key = path.join(work, 'id.txt');
  const recipient = bakker(['key', 'generate', '--out', key]).stdout.trim().split('\n').pop()!;
  const store = path.join(work, 'enc');
  const env = { BAKKER_STATE_DIR: st };
  assert.equal(bakker(['backup', src, '--store', store, '--recipient', recipient, '--compress', 'zstd'], { env }).code, 0);
  const noKey = bakker(['export', '--store', store, 'latest'], { env });
  assert.equal(noKey.code, 2);
  assert.match(noKey.stderr, /needs its identity/);
  const out = path.join(work, 'enc.tar');
  const fd = fs.openSync(out, 'w');
  const r = spawnSync(BIN, ['export', '--store', store, 'latest', '--key', key], { stdio: ['ignore', fd, 'pipe'], env: { ...process.env, ...env } });
  fs.closeSync(fd);
  assert.equal(r.status, 0, r.stderr.toString());
  const z = path.join(work, 'z');
  fs.mkdirSync(z);
  sh('tar', ['--xattrs', "--xattrs-include=*", '--acls', '-xpf', out, '-C', z]);
  const check = sh('rsync', ['-aHAXn', '--checksum', '--itemize-changes', `${src}/`, `${path.join(z, src)}/`]);
  assert.equal(check.trim(), '', `extracted tree differs:\n${check}`);
});

test('export --compress zstd --encrypt-for: age -d | zstd -d | tar -x gives the tree back', () => {
  requireTool('age');
  requireTool('zstd');
  const key = path.join(work, 'stream-id.txt');
  const recipient = bakker(['key', 'generate', '--out', key]).stdout.trim().split('\n').pop()!;
  const store = path.join(work, 'stream-store');
  assert.equal(bakker(['backup', src, '--store', store]).code, 0);
  const out = path.join(work, 'stream.tar.zst.age');
  exportTo(out, ['--store', store, 'latest', '--compress', 'zstd:5', '--encrypt-for', recipient]);
  assert.equal(fs.readFileSync(out).subarray(0, 21).toString(), 'age-encryption.org/v1');
  const w = path.join(work, 'w');
  fs.mkdirSync(w);
  sh('sh', ['-c', `age -d -i '${key}' '${out}' | zstd -d | tar --xattrs --xattrs-include='*' --acls -xpf - -C '${w}'`]);
  const check = sh('rsync', ['-aHAXn', '--checksum', '--itemize-changes', '--devices', '--specials', `${src}/`, `${path.join(w, src)}/`]);
  assert.equal(check.trim(), '', `extracted tree differs:\n${check}`);
  assert.match(bakker(['export', '--store', store, 'latest', '--recipient', recipient]).stderr, /to encrypt the stream give --encrypt-for/);
});
