import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import fs from 'node:fs';
import path from 'node:path';
import { bakker, bakkerAsync, jsonLines } from '../helpers/cli.js';
import { startS3rver, type S3rver } from '../helpers/s3.js';
import { buildEveryKind, requireTool, rmrf, sh, tempDir } from '../helpers/tree.js';

/*
 * The archive tier against a real S3-compatible server (s3rver on 127.0.0.1): pushes of a full
 * and increments (after a backup and by hand), restore of the chain compared with rsync and
 * getfacl, every object opened on its own by age | zstd | tar, a killed upload, prune chains.
 */

const BUCKET = 'bakker-test';
let s3: S3rver;
let work: string;
let src: string;
let keyFile: string;
let recipient: string;
const env = () => ({ BAKKER_STATE_DIR: path.join(work, 'state') });
const odd = Buffer.concat([Buffer.from('odd-'), Buffer.from([0xfe]), Buffer.from(' name')]);
const SECRET = 'the-secret-content-4711';

before(async () => {
  for (const t of ['tar', 'rsync', 'getfacl', 'setfacl', 'setfattr', 'age', 'zstd']) requireTool(t);
  s3 = await startS3rver(BUCKET);
  work = tempDir();
  src = path.join(work, 'src');
  buildEveryKind(src, `${SECRET}\n`, odd, [
    { file: 'data/big.bin', content: Buffer.alloc(3_000_000, 7) },
    { file: 'data/edit.txt', content: 'v1' },
    { file: 'data/gone.txt', content: 'to be removed' },
    { file: 'data/olddir/inner.txt', content: 'inner' },
    { file: 'data/t', content: 'a file that becomes a folder' },
    { dir: 'data/u', mode: 0o755 },
    { file: 'data/u/child', content: 'a folder that becomes a file' },
    { sparse: 'data/sparse', size: 4 << 20, data: [{ at: 1 << 20, text: 'island' }] },
  ]);
  keyFile = path.join(work, 'age.key');
  recipient = bakker(['key', 'generate', '--out', keyFile]).stdout.trim().split('\n').pop()!;
});

after(async () => {
  await s3?.stop();
  if (work) rmrf(work);
});

function config(name: string, extra: string, archive: string): string {
  const file = path.join(work, `${name}.yaml`);
  fs.writeFileSync(
    file,
    `sources: [${src}]
targets:
  local: {store: ${path.join(work, name + '-store')}}
${extra}archives:
  - name: cloud
    endpoint: ${s3.endpoint}
    region: us-east-1
    bucket: ${BUCKET}
    prefix: ${name}/
    credentials: {access_key_id: S3RVER, secret_access_key: S3RVER}
${archive}`,
  );
  return file;
}

const rsync = (a: string, b: string) => sh('rsync', ['-aHAXn', '--checksum', '--itemize-changes', '--devices', '--specials', `${a}/`, `${b}/`]).trim();
const acl = (root: string) => sh('getfacl', ['-Rpn', '.'], { cwd: root });
const snapshots = (store: string) => fs.readdirSync(store).filter((n) => /^\d{4}_\d\d_\d\d_\d\d$/.test(n)).sort();

/** An object's bytes opened with stock tools: age -d | zstd -d | tar -tv. */
function tarListing(file: string): string[] {
  const plain = execFileSync('age', ['-d', '-i', keyFile, file], { maxBuffer: 1 << 28 });
  const tar = execFileSync('zstd', ['-dc'], { input: plain, maxBuffer: 1 << 28 });
  return execFileSync('tar', ['-tf', '-'], { input: tar, maxBuffer: 1 << 28 }).toString().split('\n').filter(Boolean);
}

test('archive: a full after the backup, increments pushed by hand, restore of each chain equals its snapshot; each object opens with age | zstd | tar', () => {
  const cfg = config('main', `monitoring: {textfile: ${path.join(work, 'main.prom')}}\n`, `    storage_class: STANDARD_IA\n    select: daily\n    mode: incremental\n    compression: zstd:3\n    encryption: {recipients: [${recipient}], identity: ${keyFile}}\n`);
  const store = path.join(work, 'main-store');

  // 1. The backup pushes the first archive itself (after_backup, due: nothing archived today).
  const b1 = bakker(['backup', '-c', cfg], { env: env() });
  assert.equal(b1.code, 0, b1.stderr);
  assert.match(b1.stdout, /archive cloud: \S+ pushed as a full/);

  // 2. Changes of every kind; the next backup is not due (select: daily), a forced push is an increment.
  fs.writeFileSync(path.join(src, 'data/edit.txt'), 'v2, longer');
  fs.writeFileSync(path.join(src, 'data/new.txt'), 'new');
  fs.rmSync(path.join(src, 'data/gone.txt'));
  fs.rmSync(path.join(src, 'data/olddir'), { recursive: true });
  fs.rmSync(path.join(src, 'data/t'));
  fs.mkdirSync(path.join(src, 'data/t'));
  fs.writeFileSync(path.join(src, 'data/t/x'), 'inside the new folder');
  fs.chmodSync(path.join(src, 'data/suid'), 0o700);
  fs.linkSync(path.join(src, 'data/h1'), path.join(src, 'data/h3'));
  fs.rmSync(path.join(src, 'data/link'));
  fs.symlinkSync('edit.txt', path.join(src, 'data/link'));
  const b2 = bakker(['backup', '-c', cfg], { env: env() });
  assert.equal(b2.code, 0, b2.stderr);
  assert.match(b2.stdout, /archive cloud: nothing due: \S+ already archives \d{4}-\d\d-\d\d \(select: daily\)/);
  const notDue = bakker(['archive', 'push', '-c', cfg], { env: env() });
  assert.equal(notDue.code, 0, notDue.stderr);
  assert.match(notDue.stdout, /nothing due/);
  const p2 = bakker(['archive', 'push', '-c', cfg, '--force'], { env: env() });
  assert.equal(p2.code, 0, p2.stderr);
  assert.match(p2.stdout, /pushed as an increment on/);

  // 3. More: a folder becomes a file, a new file goes again, a big file changes.
  fs.rmSync(path.join(src, 'data/u'), { recursive: true });
  fs.writeFileSync(path.join(src, 'data/u'), 'now a file');
  fs.rmSync(path.join(src, 'data/new.txt'));
  fs.appendFileSync(path.join(src, 'data/big.bin'), 'tail');
  assert.equal(bakker(['backup', '-c', cfg], { env: env() }).code, 0);
  const p3 = bakker(['archive', 'push', '-c', cfg, '--force', '--json'], { env: env() });
  assert.equal(p3.code, 0, p3.stderr);
  const [s1, s2, s3n] = snapshots(store);

  // status and the textfile know the archive's last push.
  const st = bakker(['status', '--json', '-c', cfg], { env: env() });
  assert.equal(st.code, 0, st.stderr);
  const report = JSON.parse(st.stdout.trim().split('\n').pop()!) as { archives: { archive: string; result: string; snapshot: string; kind: string; lastPushed: { snapshot: string } }[] };
  assert.deepEqual(report.archives.map((a) => [a.archive, a.result, a.snapshot, a.kind, a.lastPushed.snapshot]), [['cloud', 'pushed', s3n, 'incremental', s3n]]);
  const valid = spawnSync('/usr/bin/python3', ['-c', 'import json,sys,jsonschema; jsonschema.validate(json.loads(sys.stdin.read()), json.load(open(sys.argv[1]))); print("valid")', path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../docs/status.schema.json')], { input: JSON.stringify(report), encoding: 'utf8' });
  assert.equal(valid.stdout.trim(), 'valid', valid.stderr);
  assert.match(fs.readFileSync(path.join(work, 'main.prom'), 'utf8'), /^bakker_archive_last_push_timestamp_seconds\{archive="cloud"\} \d+/m);
  assert.match(bakker(['status', '-c', cfg], { env: env() }).stdout, new RegExp(`archive cloud \\(s3://${BUCKET}/main/ at http://127\\.0\\.0\\.1:\\d+\\)\n  last push +\\S+ \\S+: ${s3n} as an increment`));

  const list = bakker(['archive', 'list', '-c', cfg, '--json'], { env: env() });
  assert.equal(list.code, 0, list.stderr);
  const archives = (jsonLines(list.stdout).find((e) => e.event === 'summary')!.archives as { snapshot: string; kind: string; base?: string; storage_class: string; encrypted: boolean; data: { key: string } }[]);
  assert.deepEqual(
    archives.map((a) => [a.snapshot, a.kind, a.base ?? null]),
    [
      [s1, 'full', null],
      [s2, 'incremental', s1],
      [s3n, 'incremental', s2],
    ],
  );
  assert.ok(archives.every((a) => a.storage_class === 'STANDARD_IA' && a.encrypted && a.data.key.endsWith('.tar.zst.age')));

  // 4. Restore the newest (full + 2 increments): equal to the source by rsync and getfacl.
  const r3 = path.join(work, 'r3');
  const res = bakker(['archive', 'restore', '-c', cfg, 'latest', '--to', r3], { env: env() });
  assert.equal(res.code, 0, res.stderr);
  assert.match(res.stdout, /a full and 2 increment\(s\)/);
  assert.equal(rsync(src, path.join(r3, src)), '', 'restored archive differs from the source');
  assert.equal(acl(path.join(r3, src)), acl(src), 'getfacl -R matches');
  assert.equal(fs.statSync(path.join(r3, src, 'data/h1')).ino, fs.statSync(path.join(r3, src, 'data/h3')).ino, 'the hard link added later joins its group');
  // The middle one equals bakker restore of its snapshot from the local store.
  const r2 = path.join(work, 'r2');
  const l2 = path.join(work, 'l2');
  assert.equal(bakker(['archive', 'restore', '-c', cfg, s2!, '--to', r2], { env: env() }).code, 0);
  assert.equal(bakker(['restore', '--store', store, '--snapshot', s2!, '--to', l2]).code, 0);
  // (from tmp/ down: the --to folders themselves are made by each restore at its own time)
  assert.equal(rsync(path.join(l2, 'tmp'), path.join(r2, 'tmp')), '', 'archive restore of the middle snapshot differs from bakker restore of it');
  assert.equal(acl(l2), acl(r2));
  const notEmpty = bakker(['archive', 'restore', '-c', cfg, 'latest', '--to', r3], { env: env() });
  assert.equal(notEmpty.code, 2);
  assert.match(notEmpty.stderr, /is not empty: restore into an empty or new folder/);

  // 5. Each object alone, with stock tools.
  const rel = (p: string) => path.join(src, p).slice(1);
  const obj = (a: (typeof archives)[number]) => s3.objectFile(BUCKET, a.data.key);
  const full = tarListing(obj(archives[0]!));
  assert.ok(full.includes(rel('data/gone.txt')) && full.includes(`${rel('data/olddir')}/`) && full.includes(rel('data/big.bin')));
  const inc2 = tarListing(obj(archives[1]!)).filter((m) => !m.endsWith('/'));
  assert.deepEqual(
    inc2.sort(),
    ['.bakker-removed', ...['data/edit.txt', 'data/fifo', 'data/h2', 'data/h3', 'data/link', 'data/new.txt', 'data/null', 'data/suid', 'data/t/x'].map(rel)].sort(),
    'the increment holds only what is new (and links, specials, the removed list)',
  );
  const removed = execFileSync('tar', ['-xOf', '-', '.bakker-removed'], { input: execFileSync('zstd', ['-dc'], { input: execFileSync('age', ['-d', '-i', keyFile, obj(archives[1]!)]) }) }).toString();
  assert.deepEqual(removed.split('\0').filter(Boolean).sort(), ['data/gone.txt', 'data/olddir', 'data/olddir/inner.txt'].map(rel).sort());
  const impl = execFileSync('zcat', [], { input: execFileSync('age', ['-d', '-i', keyFile, s3.objectFile(BUCKET, archives[1]!.data.key.replace(/\.tar\.zst\.age$/, '.impl.age'))]) }).toString();
  assert.equal(JSON.parse(impl.split('\n')[0]!).snapshot, s2, 'the impl goes alongside');

  // 6. Nothing readable leaves the server: no object holds the source's content or names in clear.
  const found = spawnSync('grep', ['-rlaF', '-e', SECRET, '-e', 'edit.txt', s3.dir], { encoding: 'utf8' }).stdout.trim().split('\n').filter((f) => f && !f.endsWith('.log'));
  assert.deepEqual(found, [], `plaintext found in ${found.join(', ')}`);
});

test('archive: a push killed mid-upload leaves no archive, one stopped by SIGTERM removes its objects; the next push cleans up and succeeds', async () => {
  const cfg = config('kill', '', `    select: daily\n    part_size_mb: 5\n    compression: none\n    encryption: {recipients: [${recipient}], identity: ${keyFile}}\n    after_backup: false\n`);
  const big = path.join(src, 'data/random.bin');
  fs.writeFileSync(big, createHash('sha512').update('seed').digest().toString('hex').repeat(20_000)); // ~2.5 MB
  fs.appendFileSync(big, fs.readFileSync(big)); // 5 MB
  fs.appendFileSync(big, fs.readFileSync(big)); // 10 MB: three parts
  try {
    assert.equal(bakker(['backup', '-c', cfg], { env: env() }).code, 0);
    // SIGTERM mid-upload: the push stops and takes its objects back itself.
    const child = bakkerAsync(['archive', 'push', '-c', cfg], { ...env(), BAKKER_FAULT: 'archive-part-sent:pause' });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const uploads = path.join(s3.dir, BUCKET, '._S3rver_uploads');
    const parts = () => (fs.existsSync(uploads) ? fs.readdirSync(uploads).filter((u) => fs.existsSync(path.join(uploads, u, '1'))).length : 0);
    const before = parts();
    const started = Date.now();
    while (parts() === before && Date.now() - started < 30_000) await new Promise((r) => setTimeout(r, 20));
    child.kill('SIGTERM');
    const code = await new Promise((r) => child.on('close', r));
    assert.equal(code, 1, stderr);
    assert.match(stderr, /the push was stopped by a signal; what it uploaded is removed/);
    const afterTerm = fs.existsSync(path.join(s3.dir, BUCKET, 'kill')) ? fs.readdirSync(path.join(s3.dir, BUCKET, 'kill')).filter((f) => f.endsWith('._S3rver_object')) : [];
    assert.deepEqual(afterTerm, [], 'a stopped push removes its own objects');

    for (const point of ['archive-part-sent', 'archive-before-marker']) {
      const killed = bakker(['archive', 'push', '-c', cfg], { env: { ...env(), BAKKER_FAULT: point } });
      assert.notEqual(killed.code, 0, `killed at ${point}`);
      const list = bakker(['archive', 'list', '-c', cfg], { env: env() });
      assert.equal(list.code, 0, list.stderr);
      assert.match(list.stdout, /no archives yet/, `after a kill at ${point} there is no archive`);
      const left = fs.readdirSync(path.join(s3.dir, BUCKET, 'kill')).filter((f) => f.endsWith('._S3rver_object'));
      assert.ok(left.some((f) => f.includes('.upload')), `the push left its upload record (${left.join(' ')})`);
      assert.ok(!left.some((f) => f.includes('.archive')), 'no marker');
    }
    const again = bakker(['archive', 'push', '-c', cfg], { env: env() });
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /removed what an interrupted push left/);
    assert.match(again.stderr, /the server cannot abort multipart uploads: their parts stay until a lifecycle rule/, 's3rver answers AbortMultipartUpload with 405: said, not hidden');
    assert.match(again.stdout, /pushed as a full/);
    const objs = fs.readdirSync(path.join(s3.dir, BUCKET, 'kill')).filter((f) => f.endsWith('._S3rver_object')).map((f) => f.replace(/^\d{4}_\d\d_\d\d_\d\d/, 'S').replace('._S3rver_object', ''));
    assert.deepEqual(objs.sort(), ['S.archive', 'S.impl.age', 'S.tar.age'], 'exactly one archive, nothing left over');
    const r = path.join(work, 'rk');
    assert.equal(bakker(['archive', 'restore', '-c', cfg, 'latest', '--to', r], { env: env() }).code, 0);
    assert.equal(fs.readFileSync(path.join(r, big)).equals(fs.readFileSync(big)), true, 'the multipart object restores exactly');
  } finally {
    fs.rmSync(big, { force: true });
  }
});

test('archive prune: a kept increment keeps its chain; young STANDARD_IA archives are kept until their minimum duration unless --early', () => {
  const cfg = config('prune', '', `    select: daily\n    storage_class: STANDARD_IA\n    full_every: 3\n    encryption: none\n    after_backup: false\n    retention: {keep_last: 1}\n`);
  const store = path.join(work, 'prune-store');
  const push = (args: string[] = []) => {
    const r = bakker(['archive', 'push', '-c', cfg, '--force', '--no-prune', ...args], { env: env() });
    assert.equal(r.code, 0, r.stderr);
    return r.stdout;
  };
  for (let i = 0; i < 4; i++) {
    fs.writeFileSync(path.join(src, 'data/edit.txt'), `round ${i}`);
    assert.equal(bakker(['backup', '-c', cfg], { env: env() }).code, 0);
    const out = push();
    // full_every: 3 -> full, inc, inc, full
    assert.match(out, i % 3 === 0 ? /pushed as a full/ : /pushed as an increment/, out);
  }
  const names = snapshots(store);
  const markers = () =>
    fs
      .readdirSync(path.join(s3.dir, BUCKET, 'prune'))
      .filter((f) => f.endsWith('.archive._S3rver_object'))
      .map((f) => f.slice(0, 13))
      .sort();
  assert.deepEqual(markers(), names);

  // All are a few seconds old: STANDARD_IA bills 30 days (s3rver takes no GLACIER_IR; GLACIER cannot be read back from it); a plain prune deletes nothing and says why.
  const dry = bakker(['archive', 'prune', '-c', cfg], { env: env() });
  assert.equal(dry.code, 0, dry.stderr);
  assert.match(dry.stderr, /under the 30-day minimum of STANDARD_IA/);
  assert.deepEqual(markers(), names);

  // --early: the newest (a full) is kept, the older chain goes, objects included.
  const early = bakker(['archive', 'prune', '-c', cfg, '--early'], { env: env() });
  assert.equal(early.code, 0, early.stderr);
  assert.match(early.stderr, /warning: archive \S+: deleted 0 days old, before the 30-day minimum of STANDARD_IA: S3 still bills until \d{4}-\d\d-\d\d \(--early\)/);
  assert.deepEqual(markers(), [names[3]]);
  const left = fs.readdirSync(path.join(s3.dir, BUCKET, 'prune')).filter((f) => f.endsWith('._S3rver_object'));
  assert.equal(left.length, 3, `only the kept archive's three objects are left: ${left.join(' ')}`);

  // An increment on it: keep_last 1 keeps the increment, and so its full.
  fs.writeFileSync(path.join(src, 'data/edit.txt'), 'round 5');
  assert.equal(bakker(['backup', '-c', cfg], { env: env() }).code, 0);
  push();
  const kept = bakker(['archive', 'prune', '-c', cfg, '--early', '--json'], { env: env() });
  assert.equal(kept.code, 0, kept.stderr);
  const decisions = jsonLines(kept.stdout).find((e) => e.event === 'summary')!.decisions as { snapshot: string; action: string; reasons: string[] }[];
  assert.deepEqual(
    decisions.map((d) => [d.snapshot, d.action]),
    [
      [names[3], 'keep'],
      [snapshots(store)[4], 'keep'],
    ],
  );
  assert.ok(decisions[0]!.reasons.some((r) => /base of/.test(r)));
  const r = path.join(work, 'rp');
  assert.equal(bakker(['archive', 'restore', '-c', cfg, 'latest', '--to', r], { env: env() }).code, 0);
  assert.equal(fs.readFileSync(path.join(r, src, 'data/edit.txt'), 'utf8'), 'round 5');
});

test('archive: clear errors for a missing bucket, wrong credentials, a hostile marker, no identity', () => {
  const cfg = config('errs', '', `    encryption: {recipients: [${recipient}]}\n    after_backup: false\n`);
  const text = fs.readFileSync(cfg, 'utf8');
  const variant = (from: string, to: string) => {
    const f = path.join(work, `errs-${createHash('md5').update(to).digest('hex').slice(0, 6)}.yaml`);
    fs.writeFileSync(f, text.replace(from, to));
    return f;
  };
  const noBucket = bakker(['archive', 'list', '-c', variant(`bucket: ${BUCKET}`, 'bucket: no-such-bucket')], { env: env() });
  assert.equal(noBucket.code, 1);
  assert.match(noBucket.stderr, /archive cloud: listing errs\/ on s3:\/\/no-such-bucket at http:\/\/127\.0\.0\.1:\d+: the bucket does not exist: create it, or fix archives\.cloud\.bucket/);
  const down = bakker(['archive', 'list', '-c', variant(s3.endpoint, 'http://127.0.0.1:9')], { env: env() });
  assert.equal(down.code, 1);
  assert.match(down.stderr, /cannot reach the endpoint .*check archives\.cloud\.endpoint/);
  assert.equal(down.stderr.trim().split('\n').length, 1, down.stderr);

  // A marker that points at someone else's key is refused, not followed.
  assert.equal(bakker(['backup', '-c', cfg], { env: env() }).code, 0);
  assert.equal(bakker(['archive', 'push', '-c', cfg], { env: env() }).code, 0);
  const marker = fs.readdirSync(path.join(s3.dir, BUCKET, 'errs')).find((f) => f.endsWith('.archive._S3rver_object'))!;
  const mfile = path.join(s3.dir, BUCKET, 'errs', marker);
  const good = fs.readFileSync(mfile);
  const m = JSON.parse(good.toString());
  m.data.key = 'main/../other-host/secret.tar';
  fs.writeFileSync(mfile, JSON.stringify(m));
  const hostile = bakker(['archive', 'list', '-c', cfg], { env: env() });
  assert.equal(hostile.code, 1);
  assert.match(hostile.stderr, /is not a bakker archive marker \(objects\)/);
  fs.writeFileSync(mfile, good);
  // Encrypted, no identity in the config: restore says what to give.
  const noKey = bakker(['archive', 'restore', '-c', cfg, 'latest', '--to', path.join(work, 'nokey')], { env: env() });
  assert.equal(noKey.code, 2);
  assert.match(noKey.stderr, /is encrypted: restoring needs its identity: give --key FILE/);
  const withKey = bakker(['archive', 'restore', '-c', cfg, 'latest', '--to', path.join(work, 'withkey'), '--key', keyFile], { env: env() });
  assert.equal(withKey.code, 0, withKey.stderr);
});
