import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { bakker, jsonLines } from '../helpers/cli.js';
import { startSshd, type Sshd, type SftpAccount } from '../helpers/sshd.js';
import { build, requireTool, rmrf, sh, tempDir } from '../helpers/tree.js';
import { objectName, storeKeys } from '../../src/crypto/objects.js';

/*
 * Encrypted stores end to end (issue 6), local and over SFTP: hard links between encrypted
 * snapshots, the age CLI opening single stored objects, a storage admin finding nothing of the
 * source on the store, tampering found by verify and refused by restore, missing and wrong
 * identities, a server that lost its state.
 */

let work: string;
let src: string;
let id: string;
let recipient: string;
let otherId: string;
let sshd: Sshd;
let acc: SftpAccount;
const odd = Buffer.concat([Buffer.from('odd-'), Buffer.from([0xff]), Buffer.from(' name')]);
/** What an admin must not find anywhere on the store. */
const SECRET_NAME = 'quarterly-secret-plans';
const SECRET_TEXT = 'TOPSECRET-CONTENT-4711';

function keyFile(name: string): { file: string; recipient: string } {
  const file = path.join(work, name);
  const r = bakker(['key', 'generate', '--out', file]);
  assert.equal(r.code, 0, r.stderr);
  return { file, recipient: r.stdout.trim().split('\n').pop()!.trim() };
}

before(async () => {
  requireTool('age');
  requireTool('rsync');
  work = tempDir();
  src = path.join(work, 'src');
  build(src, [
    { file: `docs/${SECRET_NAME}.txt`, content: `${SECRET_TEXT}\n`.repeat(50), mode: 0o640, uid: 1000, gid: 1000 },
    { file: 'same/big.bin', content: Buffer.alloc(3_000_000, 7) },
    { file: 'edit.txt', content: 'v1' },
    { file: 'empty', content: '' },
    { symlink: 'link', target: `docs/${SECRET_NAME}.txt` },
    { file: 'h1', content: 'hard' },
    { hardlink: 'h2', to: 'h1' },
    { fifo: 'fifo' },
    { sparse: 'sparse.img', size: 4 << 20, data: [{ at: 1 << 20, text: 'middle' }] },
  ]);
  fs.writeFileSync(Buffer.concat([Buffer.from(src + '/'), odd]), 'odd');
  sh('setfattr', ['-n', 'user.note', '-v', 'kept', path.join(src, 'edit.txt')]);
  ({ file: id, recipient } = keyFile('id.txt'));
  otherId = keyFile('other.txt').file;
  sshd = await startSshd();
  acc = sshd.addAccount();
});

after(async () => {
  await sshd?.stop();
  if (work) rmrf(work);
});

/** The keys this server holds for a store (its state dir), to find the object of a path. */
function objectOf(store: string, state: string, rel: string, root = store): string {
  const dir = path.join(state, 'crypt');
  for (const d of fs.readdirSync(dir)) {
    const k = JSON.parse(fs.readFileSync(path.join(dir, d, 'keys.json'), 'utf8')) as { current: string; keys: Record<string, string> };
    const keys = storeKeys(Buffer.from(k.keys[k.current]!, 'base64'));
    const name = objectName(keys, Buffer.from(path.join(src, rel).slice(1)));
    if (fs.existsSync(path.join(root, name.slice(0, 2)))) return name;
  }
  throw new Error(`no key for ${store}`);
}

function state(name: string): string {
  const d = path.join(work, `state-${name}`);
  fs.mkdirSync(d, { recursive: true });
  return d;
}

const summaryOf = (out: string) => jsonLines(out).find((e) => e.event === 'summary')!;

/** Every file under `dir`, with gzip'ed ones also unpacked, searched for the needles (names too). */
function adminSearch(dir: string, needles: string[]): string[] {
  const found: string[] = [];
  const walk = (d: string) => {
    for (const n of fs.readdirSync(d, { withFileTypes: true })) {
      const f = path.join(d, n.name);
      for (const x of needles) if (n.name.includes(x)) found.push(`name ${f}`);
      if (n.isDirectory()) walk(f);
      else if (n.isFile()) {
        let data = fs.readFileSync(f);
        if (data[0] === 0x1f && data[1] === 0x8b) data = Buffer.concat([data, zlib.gunzipSync(data)]);
        for (const x of needles) if (data.includes(x)) found.push(`content ${f}`);
      } else if (n.isSymbolicLink()) {
        for (const x of needles) if (fs.readlinkSync(f).includes(x)) found.push(`link ${f}`);
      }
    }
  };
  walk(dir);
  return found;
}

test('local encrypted store: incremental with hard links, the age CLI opens objects and impls, restore is exact, the admin finds nothing', () => {
  const st = state('local');
  const env = { BAKKER_STATE_DIR: st };
  const store = path.join(work, 'local-store');
  const r1 = bakker(['backup', src, '--store', store, '--recipient', recipient, '--checksum', 'sha256', '--json'], { env });
  assert.equal(r1.code, 0, r1.stderr);
  fs.writeFileSync(path.join(src, 'edit.txt'), 'v2 changed');
  const r2 = bakker(['backup', src, '--store', store, '--recipient', recipient, '--checksum', 'sha256', '--json'], { env });
  assert.equal(r2.code, 0, r2.stderr);
  const s2 = summaryOf(r2.stdout);
  const [n1, n2] = [String(s2.previous), String(s2.snapshot)];
  assert.equal(s2.changed, 1);
  assert.ok((s2.linked as number) >= 6, `unchanged files and symlinks linked: ${s2.linked}`);

  // The layout: sharded keyed names only, impls as age files, format says so.
  assert.deepEqual(fs.readdirSync(store).sort(), [n1, `${n1}.diff`, `${n1}.impl.age`, `${n1}.objects`, n2, `${n2}.diff`, `${n2}.impl.age`, `${n2}.objects`, '.bakker', 'latest'].sort());
  assert.equal(JSON.parse(fs.readFileSync(path.join(store, '.bakker/format'), 'utf8')).encryption, 'age');
  for (const shard of fs.readdirSync(path.join(store, n2))) {
    assert.match(shard, /^[0-9a-f]{2}$/);
    for (const o of fs.readdirSync(path.join(store, n2, shard))) assert.match(o, /^[0-9a-f]{62}$/);
  }

  // Unchanged: the same inode in both snapshots (no re-encryption); changed: a new one.
  const obj = (snap: string, rel: string) => fs.statSync(path.join(store, snap, objectOf(store, st, rel, path.join(store, snap))));
  assert.equal(obj(n1, 'same/big.bin').ino, obj(n2, 'same/big.bin').ino);
  assert.equal(obj(n1, `docs/${SECRET_NAME}.txt`).ino, obj(n2, `docs/${SECRET_NAME}.txt`).ino);
  assert.notEqual(obj(n1, 'edit.txt').ino, obj(n2, 'edit.txt').ino);
  assert.equal(obj(n2, 'h1').ino, obj(n2, 'h2').ino, 'a hard-link group stays one inode');
  // The diff folder holds only the changed object.
  const diffObjs = fs.readdirSync(path.join(store, `${n2}.diff`)).flatMap((s) => fs.readdirSync(path.join(store, `${n2}.diff`, s)));
  assert.equal(diffObjs.length, 1);
  assert.equal(fs.statSync(path.join(store, `${n2}.diff`, objectOf(store, st, 'edit.txt', path.join(store, `${n2}.diff`)))).ino, obj(n2, 'edit.txt').ino);

  // age opens a single stored file, and the impl.
  const plain = sh('age', ['-d', '-i', id, path.join(store, n2, objectOf(store, st, `docs/${SECRET_NAME}.txt`, path.join(store, n2)))]);
  assert.equal(plain, `${SECRET_TEXT}\n`.repeat(50));
  const implText = zlib.gunzipSync(execFileSync('age', ['-d', '-i', id, path.join(store, `${n2}.impl.age`)]));
  assert.match(implText.toString('utf8').split('\n')[0]!, new RegExp(`"snapshot":"${n2}"`));
  assert.match(implText.toString('utf8'), /"tag":"[0-9a-f]{64}"/);

  // A storage admin searching the whole store finds no name and no content of the source.
  assert.deepEqual(adminSearch(store, [SECRET_NAME, SECRET_TEXT, 'big.bin', 'edit.txt', 'v2 changed', 'same']), []);

  // list and diff (this server's impl copies: no identity needed), restore needs it.
  const list = bakker(['list', '--store', store, '--json'], { env });
  assert.deepEqual(jsonLines(list.stdout).filter((e) => e.event === 'snapshot').map((e) => e.name), [n1, n2]);
  const diff = bakker(['diff', '--store', store, n1, n2], { env });
  assert.equal(diff.code, 0, diff.stderr);
  assert.match(diff.stdout, /edit\.txt/);
  const to = path.join(work, 'restored-local');
  const noKey = bakker(['restore', '--store', store, '--snapshot', 'latest', '--to', to], { env });
  assert.equal(noKey.code, 2);
  assert.match(noKey.stderr, /encrypted: restoring needs its identity: give --key FILE/);
  const rr = bakker(['restore', '--store', store, '--snapshot', 'latest', '--to', to, '--key', id], { env });
  assert.equal(rr.code, 0, rr.stderr);
  const check = sh('rsync', ['-aHAXn', '--checksum', '--itemize-changes', `${src}/`, `${path.join(to, src)}/`]);
  assert.equal(check.trim(), '', `restored tree differs:\n${check}`);
  assert.ok(fs.statSync(path.join(to, src, 'sparse.img')).blocks * 512 < 4 << 20, 'sparse after restore');
  const v = bakker(['verify', '--store', store, '--snapshot', 'all', '--key', id], { env });
  assert.equal(v.code, 0, v.stdout + v.stderr);
  assert.match(v.stdout, /contents checked/);
  fs.writeFileSync(path.join(src, 'edit.txt'), 'v1');
});

test('tampering: a modified, truncated or swapped object is reported by verify and refused by restore, with the path named', () => {
  const st = state('tamper');
  const env = { BAKKER_STATE_DIR: st };
  const store = path.join(work, 'tamper-store');
  const r1 = bakker(['backup', src, '--store', store, '--recipient', recipient], { env });
  assert.equal(r1.code, 0, r1.stderr);
  const snap = fs.readlinkSync(path.join(store, 'latest'));
  const at = (rel: string) => path.join(store, snap, objectOf(store, st, rel, path.join(store, snap)));
  const verify = (extra: string[], e = env) => bakker(['verify', '--store', store, ...extra], { env: e });
  assert.equal(verify([]).code, 0);

  // Modified: one byte in the middle of the big file's object.
  const big = at('same/big.bin');
  const fd = fs.openSync(big, 'r+');
  const one = Buffer.alloc(1);
  fs.readSync(fd, one, 0, 1, 1_000_000);
  one[0] = one[0]! ^ 0x40;
  fs.writeSync(fd, one, 0, 1, 1_000_000);
  fs.closeSync(fd);
  // Truncated: the edit.txt object loses its last byte. Swapped: h1's object replaced by empty's.
  fs.truncateSync(at('edit.txt'), fs.statSync(at('edit.txt')).size - 1);
  fs.copyFileSync(at('empty'), path.join(work, 'swap'));
  fs.renameSync(path.join(work, 'swap'), at(`docs/${SECRET_NAME}.txt`));

  for (const [what, args] of [
    ['without the identity (tags, from this server\'s impl copy)', []],
    ['with the identity', ['--key', id]],
  ] as const) {
    const v = verify([...args, '--json']);
    assert.equal(v.code, 1, `${what}: ${v.stdout}${v.stderr}`);
    const problems = jsonLines(v.stdout).filter((e) => e.event === 'problem').map((e) => String(e.path));
    for (const rel of ['same/big.bin', 'edit.txt', `docs/${SECRET_NAME}.txt`]) {
      assert.ok(problems.includes(path.join(src, rel).slice(1)), `${what}: ${rel} reported: ${problems.join(', ')}`);
    }
  }
  for (const rel of ['same/big.bin', 'edit.txt', `docs/${SECRET_NAME}.txt`]) {
    const to = path.join(work, `tampered-${rel.replace(/\//g, '_')}`);
    const rr = bakker(['restore', '--store', store, '--snapshot', 'latest', '--to', to, '--key', id, '--include', path.join(src, rel)], { env });
    assert.equal(rr.code === 0, false, `restore of ${rel} refused`);
    assert.ok(rr.stderr.includes(path.join(src, rel).slice(1)), `restore names ${rel}: ${rr.stderr}`);
    assert.equal(fs.existsSync(path.join(to, src, rel)), false, `nothing restored at ${rel}`);
  }
  const swapped = bakker(['restore', '--store', store, '--snapshot', 'latest', '--to', path.join(work, 'sw'), '--key', id, '--include', path.join(src, 'docs')], { env });
  assert.match(swapped.stderr, /not the one the impl names \(its tag differs\): it was modified, truncated or swapped/);
});

test('identities: a wrong one and a missing one give clear errors; without this server\'s state, verify checks presence from the object list', () => {
  const st = state('ids');
  const store = path.join(work, 'ids-store');
  assert.equal(bakker(['backup', src, '--store', store, '--recipient', recipient], { env: { BAKKER_STATE_DIR: st } }).code, 0);
  const fresh = { BAKKER_STATE_DIR: state('ids-fresh') };
  const to = path.join(work, 'ids-restored');
  const wrong = bakker(['restore', '--store', store, '--snapshot', 'latest', '--to', to, '--key', otherId], { env: fresh });
  assert.equal(wrong.code, 2, wrong.stderr);
  assert.match(wrong.stderr, /cannot decrypt the impl of \S+: the identity \S+other\.txt is not one of the recipients it was written for: give the right --key/);
  const diff = bakker(['diff', '--store', store, 'latest', 'latest'], { env: fresh });
  assert.equal(diff.code, 2);
  assert.match(diff.stderr, /encrypted and this server keeps no copy of it; .*needs its identity, and none was given: give it with --key FILE/);
  const missing = bakker(['restore', '--store', store, '--snapshot', 'latest', '--to', to, '--key', path.join(work, 'nope.txt')], { env: fresh });
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /cannot read the identity file \S+nope\.txt \(ENOENT\)/);

  // No identity, no impl copy: every listed object must be there.
  const v = bakker(['verify', '--store', store], { env: fresh });
  assert.equal(v.code, 0, v.stdout + v.stderr);
  assert.match(v.stderr + v.stdout, /checking that the \d+ objects \S+\.objects lists are there/);
  const snap = fs.readlinkSync(path.join(store, 'latest'));
  const shard = fs.readdirSync(path.join(store, snap))[0]!;
  const gone = fs.readdirSync(path.join(store, snap, shard))[0]!;
  fs.rmSync(path.join(store, snap, shard, gone));
  const v2 = bakker(['verify', '--store', store, '--json'], { env: fresh });
  assert.equal(v2.code, 1);
  assert.ok(jsonLines(v2.stdout).some((e) => e.event === 'problem' && String(e.message).includes(`object ${shard}/${gone} is missing`)), v2.stdout);
});

test('a server that lost its state: without the identity a run starts a new key and says so; with it, the run stays incremental', () => {
  const store = path.join(work, 'lost-store');
  assert.equal(bakker(['backup', src, '--store', store, '--recipient', recipient], { env: { BAKKER_STATE_DIR: state('lost-a') } }).code, 0);
  const withKey = bakker(['backup', src, '--store', store, '--recipient', recipient, '--key', id, '--json'], { env: { BAKKER_STATE_DIR: state('lost-b') } });
  assert.equal(withKey.code, 0, withKey.stderr);
  const s = summaryOf(withKey.stdout);
  assert.equal(s.copied, 0, 'nothing copied: the old key was read from the impl with the identity');
  assert.ok((s.linked as number) > 5);
  const without = bakker(['backup', src, '--store', store, '--recipient', recipient, '--json'], { env: { BAKKER_STATE_DIR: state('lost-c') } });
  assert.equal(without.code, 0, without.stderr);
  const w = jsonLines(without.stdout);
  assert.ok(w.some((e) => e.event === 'warning' && /uses a new store key, so it stores everything anew/.test(String(e.message))), without.stdout);
  assert.equal(summaryOf(without.stdout).linked, 0);
  // Every snapshot still restores, each with its own key (from its impl).
  for (const snap of fs.readdirSync(store).filter((n) => /^\d{4}_\d\d_\d\d_\d\d$/.test(n))) {
    const to = path.join(work, `lost-r-${snap}`);
    const rr = bakker(['restore', '--store', store, '--snapshot', snap, '--to', to, '--key', id], { env: { BAKKER_STATE_DIR: state('lost-d') } });
    assert.equal(rr.code, 0, rr.stderr);
    assert.equal(sh('rsync', ['-aHAXn', '--checksum', '--itemize-changes', `${src}/`, `${path.join(to, src)}/`]).trim(), '');
  }
});

test('prune on an encrypted store merges without the identity (this server\'s impl copies); a plain store refuses recipients', () => {
  const env = { BAKKER_STATE_DIR: state('prune') };
  const store = path.join(work, 'prune-store');
  for (let i = 0; i < 3; i++) {
    fs.writeFileSync(path.join(src, 'edit.txt'), `round ${i}`);
    assert.equal(bakker(['backup', src, '--store', store, '--recipient', recipient], { env }).code, 0);
  }
  const snaps = () => fs.readdirSync(store).filter((n) => /^\d{4}_\d\d_\d\d_\d\d$/.test(n)).sort();
  const [a, b, c] = snaps();
  const p = bakker(['prune', '--store', store, '--keep-last', '1', '--min-keep', '2', '--recipient', recipient, '--json'], { env });
  assert.equal(p.code, 0, p.stderr);
  assert.deepEqual(snaps(), [b, c]);
  assert.deepEqual(summaryOf(p.stdout).merged, [b], 'b lost its predecessor: merged');
  assert.equal(fs.existsSync(path.join(store, `${a}.objects`)), false, 'the object list goes with its snapshot');
  assert.equal(fs.existsSync(path.join(store, `${a}.impl.age`)), false);
  const v = bakker(['verify', '--store', store, '--snapshot', 'all', '--key', id], { env });
  assert.equal(v.code, 0, v.stdout + v.stderr);
  const to = path.join(work, 'pruned-r');
  assert.equal(bakker(['restore', '--store', store, '--snapshot', 'latest', '--to', to, '--key', id], { env }).code, 0);
  assert.equal(fs.readFileSync(path.join(to, src, 'edit.txt'), 'utf8'), 'round 2');
  fs.writeFileSync(path.join(src, 'edit.txt'), 'v1');

  const plain = path.join(work, 'plain-store');
  assert.equal(bakker(['backup', src, '--store', plain], { env }).code, 0);
  const mixed = bakker(['backup', src, '--store', plain, '--recipient', recipient], { env });
  assert.equal(mixed.code, 1);
  assert.match(mixed.stderr, /holds unencrypted snapshots: an encrypted target needs a store folder of its own/);
  const bad = bakker(['backup', src, '--store', path.join(work, 'x'), '--recipient', 'age1nope']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /"age1nope" is not an age X25519 recipient/);
});

test('sftp:// encrypted store: a local plain target copied to an encrypted remote; hard links on the server; restore and verify over SFTP', () => {
  const st = state('sftp');
  const env = { BAKKER_STATE_DIR: st };
  const local = path.join(work, 'sftp-local');
  const url = `${acc.url}/enc`;
  const cfg = path.join(work, 'enc.yaml');
  fs.writeFileSync(
    cfg,
    [
      `sources: [${JSON.stringify(src)}]`,
      'targets:',
      `  local: {store: ${JSON.stringify(local)}}`,
      '  offsite:',
      `    store: ${JSON.stringify(url)}`,
      `    identity: ${JSON.stringify(acc.key)}`,
      `    known_hosts: ${JSON.stringify(sshd.knownHosts)}`,
      '    encryption:',
      `      recipients: [${recipient}]`,
      '',
    ].join('\n'),
  );
  const r1 = bakker(['backup', '-c', cfg, '--json'], { env });
  assert.equal(r1.code, 0, r1.stderr);
  fs.writeFileSync(path.join(src, 'edit.txt'), 'remote v2');
  const r2 = bakker(['backup', '-c', cfg, '--json'], { env });
  assert.equal(r2.code, 0, r2.stderr);
  const remote = jsonLines(r2.stdout).filter((e) => e.event === 'summary' && e.target === 'offsite').pop()!;
  assert.equal(remote.copied, 1, JSON.stringify(remote));
  const [n1, n2] = [String(remote.previous), String(remote.snapshot)];
  const onServer = path.join(acc.root, 'backups/enc');
  const obj = (snap: string, rel: string) => fs.statSync(path.join(onServer, snap, objectOf(url, st, rel, path.join(onServer, snap))));
  assert.equal(obj(n1, 'same/big.bin').ino, obj(n2, 'same/big.bin').ino, 'unchanged: one inode on the server');
  assert.notEqual(obj(n1, 'edit.txt').ino, obj(n2, 'edit.txt').ino);
  assert.deepEqual(adminSearch(onServer, [SECRET_NAME, SECRET_TEXT, 'big.bin', 'remote v2']), []);

  const ssh = ['--identity', acc.key, '--known-hosts', sshd.knownHosts];
  const to = path.join(work, 'sftp-restored');
  const rr = bakker(['restore', '--store', url, '--snapshot', 'latest', '--to', to, '--key', id, ...ssh], { env });
  assert.equal(rr.code, 0, rr.stderr);
  const check = sh('rsync', ['-aHAXn', '--checksum', '--itemize-changes', `${src}/`, `${path.join(to, src)}/`]);
  assert.equal(check.trim(), '', `restored tree differs:\n${check}`);
  const v = bakker(['verify', '--store', url, '--snapshot', 'all', '--key', id, ...ssh], { env });
  assert.equal(v.code, 0, v.stdout + v.stderr);
  const vNoState = bakker(['verify', '--store', url, ...ssh], { env: { BAKKER_STATE_DIR: state('sftp-fresh') } });
  assert.equal(vNoState.code, 0, vNoState.stdout + vNoState.stderr);
  // list, diff and prune over SFTP (this server's impl copies: no identity).
  const list = bakker(['list', '--store', url, '--json', ...ssh], { env });
  assert.deepEqual(jsonLines(list.stdout).filter((e) => e.event === 'snapshot').map((e) => e.name), [n1, n2]);
  const diff = bakker(['diff', '--store', url, n1, n2, ...ssh], { env });
  assert.equal(diff.code, 0, diff.stderr);
  assert.match(diff.stdout, /edit\.txt/);
  const pr = bakker(['prune', '-c', cfg, '--target', 'offsite', '--keep-last', '1', '--json'], { env });
  assert.equal(pr.code, 0, pr.stderr);
  assert.deepEqual(fs.readdirSync(onServer).filter((n) => n.startsWith('20')).sort(), [n2, `${n2}.diff`, `${n2}.impl.age`, `${n2}.objects`]);
  const v2 = bakker(['verify', '--store', url, '--key', id, ...ssh], { env });
  assert.equal(v2.code, 0, v2.stdout + v2.stderr);
  fs.writeFileSync(path.join(src, 'edit.txt'), 'v1');
});

test('compression: zstd (before encryption, or on a plain store) for files that shrink, recorded in the impl; age | zstd -d opens them; unchanged ones stay links', () => {
  requireTool('zstd');
  const st = state('zstd');
  const env = { BAKKER_STATE_DIR: st };
  const zsrc = path.join(work, 'zsrc');
  const text = Buffer.from(Array.from({ length: 300_000 }, (_, i) => `line ${i} of a log file\n`).join('')); // ~7 MiB: several frames
  build(zsrc, [
    { file: 'log.txt', content: text },
    { file: 'small.conf', content: 'key = value\n'.repeat(400) },
    { file: 'random.bin', content: randomBytes(2_000_000) },
    { file: 'tiny', content: 'x' },
  ]);
  const store = path.join(work, 'zstd-store');
  const r1 = bakker(['backup', zsrc, '--store', store, '--recipient', recipient, '--compress', 'zstd:5', '--checksum', 'sha256'], { env });
  assert.equal(r1.code, 0, r1.stderr);
  const snap = fs.readlinkSync(path.join(store, 'latest'));
  const impl = zlib.gunzipSync(execFileSync('age', ['-d', '-i', id, path.join(store, `${snap}.impl.age`)])).toString('utf8');
  const zOf = (name: string) => {
    const line = impl.split('\n').find((l) => l.includes(`/${name}"`))!;
    return (JSON.parse(line) as { z?: string }).z;
  };
  assert.equal(zOf('log.txt'), 'zstd');
  assert.equal(zOf('small.conf'), 'zstd');
  assert.equal(zOf('random.bin'), undefined, 'incompressible: stored as it is');
  assert.equal(zOf('tiny'), undefined);
  const objOf = (rel: string) => {
    const dir = path.join(st, 'crypt');
    const k = JSON.parse(fs.readFileSync(path.join(dir, fs.readdirSync(dir)[0]!, 'keys.json'), 'utf8')) as { current: string; keys: Record<string, string> };
    return path.join(store, snap, objectName(storeKeys(Buffer.from(k.keys[k.current]!, 'base64')), Buffer.from(path.join(zsrc, rel).slice(1))));
  };
  assert.ok(fs.statSync(objOf('log.txt')).size < text.length / 4, 'compressed before encryption');
  // The stock tools open one object: age, then zstd.
  const opened = execFileSync('zstd', ['-d', '-c'], { input: execFileSync('age', ['-d', '-i', id, objOf('log.txt')]), maxBuffer: 64 << 20 });
  assert.ok(opened.equals(text));

  const r2 = bakker(['backup', zsrc, '--store', store, '--recipient', recipient, '--compress', 'zstd:5', '--checksum', 'sha256', '--json'], { env });
  assert.equal(r2.code, 0, r2.stderr);
  assert.equal(summaryOf(r2.stdout).copied, 0);
  const snap2 = fs.readlinkSync(path.join(store, 'latest'));
  assert.equal(fs.statSync(objOf('log.txt').replace(snap, snap2)).ino, fs.statSync(objOf('log.txt')).ino);
  const to = path.join(work, 'zstd-restored');
  const rr = bakker(['restore', '--store', store, '--snapshot', 'latest', '--to', to, '--key', id], { env });
  assert.equal(rr.code, 0, rr.stderr);
  assert.equal(sh('rsync', ['-aHAXn', '--checksum', '--itemize-changes', `${zsrc}/`, `${path.join(to, zsrc)}/`]).trim(), '');
  const v = bakker(['verify', '--store', store, '--key', id], { env });
  assert.equal(v.code, 0, v.stdout + v.stderr);

  // A plain store compresses too: same names, zstd content, browsable with zstd -d.
  const plainStore = path.join(work, 'zstd-plain');
  for (let i = 0; i < 2; i++) assert.equal(bakker(['backup', zsrc, '--store', plainStore, '--compress', 'zstd', '--checksum', 'sha256'], { env }).code, 0);
  const [p1, p2] = fs.readdirSync(plainStore).filter((n) => /^\d{4}_\d\d_\d\d_\d\d$/.test(n)).sort();
  const stored = (snap: string, rel: string) => path.join(plainStore, snap!, zsrc, rel);
  assert.ok(execFileSync('zstd', ['-d', '-c', stored(p1!, 'log.txt')], { maxBuffer: 64 << 20 }).equals(text));
  assert.ok(fs.statSync(stored(p1!, 'log.txt')).size < text.length / 4);
  assert.ok(fs.readFileSync(stored(p1!, 'random.bin')).equals(fs.readFileSync(path.join(zsrc, 'random.bin'))), 'incompressible: stored as it is');
  assert.equal(fs.statSync(stored(p1!, 'log.txt')).ino, fs.statSync(stored(p2!, 'log.txt')).ino, 'unchanged: a hard link');
  assert.equal(fs.statSync(stored(p1!, 'log.txt')).mtimeMs, fs.statSync(path.join(zsrc, 'log.txt')).mtimeMs, 'metadata as on a plain store');
  const pto = path.join(work, 'zstd-plain-restored');
  assert.equal(bakker(['restore', '--store', plainStore, '--snapshot', 'latest', '--to', pto], { env }).code, 0);
  assert.equal(sh('rsync', ['-aHAXn', '--checksum', '--itemize-changes', `${zsrc}/`, `${path.join(pto, zsrc)}/`]).trim(), '');
  const pv = bakker(['verify', '--store', plainStore, '--snapshot', 'all'], { env });
  assert.equal(pv.code, 0, pv.stdout + pv.stderr);
  // A damaged compressed copy is found by verify (checksums) and refused by restore.
  const f = stored(p2!, 'small.conf');
  fs.chmodSync(f, 0o644);
  const bytes = fs.readFileSync(f);
  bytes[bytes.length - 5] = bytes[bytes.length - 5]! ^ 0xff;
  fs.writeFileSync(f, bytes);
  assert.equal(bakker(['verify', '--store', plainStore], { env }).code, 1);
  const bad = bakker(['restore', '--store', plainStore, '--snapshot', 'latest', '--to', path.join(work, 'zstd-bad')], { env });
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /small\.conf/);
  assert.match(bakker(['backup', zsrc, '--store', store, '--compress', 'lz4'], { env }).stderr, /--compress lz4: expected zstd, zstd:LEVEL \(1-19\) or none/);
});

test('a killed run on an encrypted store: earlier snapshots and latest intact, no leftovers, the next run completes', () => {
  const env = { BAKKER_STATE_DIR: state('kill') };
  const ksrc = path.join(work, 'ksrc');
  build(ksrc, Array.from({ length: 600 }, (_, i) => ({ file: `d${i % 7}/f${i}`, content: `file ${i}\n`.repeat(i % 50) })));
  const store = path.join(work, 'kill-store');
  assert.equal(bakker(['backup', ksrc, '--store', store, '--recipient', recipient], { env }).code, 0);
  const complete = () => fs.readdirSync(store).filter((n) => n.endsWith('.impl.age')).map((n) => n.slice(0, -9)).sort();
  for (const [i, point] of ['mid-walk', 'before-publish', 'after-tree-rename', 'after-impl-rename', 'after-latest'].entries()) {
    fs.writeFileSync(path.join(ksrc, `d1/f${i}`), `changed ${point}`);
    const before = complete();
    const killed = bakker(['backup', ksrc, '--store', store, '--recipient', recipient], { env: { ...env, BAKKER_FAULT: point } });
    assert.equal(killed.code, -1, `killed at ${point}`);
    for (const n of before) assert.ok(complete().includes(n), `${n} survived ${point}`);
    assert.ok(complete().includes(fs.readlinkSync(path.join(store, 'latest'))), `latest is complete after ${point}`);
    const again = bakker(['backup', ksrc, '--store', store, '--recipient', recipient], { env });
    assert.equal(again.code, 0, again.stderr);
    assert.deepEqual(fs.readdirSync(path.join(store, '.bakker/run')), []);
    const names = fs.readdirSync(store);
    for (const n of names.filter((x) => /^\d{4}_\d\d_\d\d_\d\d$/.test(x))) assert.ok(names.includes(`${n}.impl.age`) && names.includes(`${n}.objects`), `${n} is complete with its object list`);
  }
  const v = bakker(['verify', '--store', store, '--snapshot', 'all', '--key', id], { env });
  assert.equal(v.code, 0, v.stdout + v.stderr);
  const to = path.join(work, 'kill-restored');
  assert.equal(bakker(['restore', '--store', store, '--snapshot', 'latest', '--to', to, '--key', id], { env }).code, 0);
  assert.equal(sh('rsync', ['-aHAXn', '--checksum', '--itemize-changes', `${ksrc}/`, `${path.join(to, ksrc)}/`]).trim(), '');
});
