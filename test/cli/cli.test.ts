import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { bakker, jsonLines } from '../helpers/cli.js';
import { build, rmrf, tempDir } from '../helpers/tree.js';

let work: string;
let src: string;

before(() => {
  work = tempDir();
  src = path.join(work, 'src');
  build(src, [
    { file: 'a.txt', content: 'a' },
    { file: 'b.log', content: 'b' },
    { file: 'cache/c', content: 'c' },
    { file: 'keep/d', content: 'd' },
  ]);
});

after(() => rmrf(work));

test('every command has --help with examples', () => {
  for (const cmd of ['backup', 'list', 'diff', 'restore', 'verify']) {
    const r = bakker([cmd, '--help']);
    assert.equal(r.code, 0);
    assert.match(r.stdout, new RegExp(`Usage: bakker ${cmd}`));
    assert.match(r.stdout, /Examples:/);
  }
  assert.equal(bakker([]).code, 2);
  const unknown = bakker(['frobnicate']);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /unknown command "frobnicate"/);
});

test('usage errors exit 2 with one line naming the fix', () => {
  const cases: [string[], RegExp][] = [
    [['backup', src], /--store is required/],
    [['backup', src, '--store', path.join(work, 's'), '--frob'], /Unknown option '--frob'.*bakker backup --help/],
    [['backup', src, '--store', path.join(work, 's'), '--checksum', 'crc32'], /--checksum must be one of md5, sha256, blake3, none/],
    [['backup', path.join(work, 'missing'), '--store', path.join(work, 's')], /source .*missing cannot be read \(ENOENT\)/],
    [['backup', src, '--store', path.join(work, 's'), '--exclude', '[bad'], /unclosed \[/],
    [['restore', '--store', path.join(work, 's')], /--to is required/],
    [['diff', '--store', path.join(work, 's'), 'a', 'b', 'c'], /at most two snapshots/],
  ];
  for (const [args, want] of cases) {
    const r = bakker(args);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, want);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  }
});

test('--json gives JSON lines: start, then a summary object', () => {
  const store = path.join(work, 'json-store');
  const r = bakker(['backup', src, '--store', store, '--json']);
  assert.equal(r.code, 0, r.stderr);
  const events = jsonLines(r.stdout);
  assert.equal(events[0]!.event, 'start');
  const summary = events[events.length - 1]!;
  assert.equal(summary.event, 'summary');
  assert.equal(summary.command, 'backup');
  assert.equal(summary.files, 4);
  assert.equal(summary.copied, 4);
  for (const cmd of [['list'], ['verify'], ['diff', 'latest', 'latest']]) {
    const out = bakker([cmd[0]!, '--store', store, '--json', ...cmd.slice(1)]);
    assert.equal(out.code, 0, out.stderr);
    const ev = jsonLines(out.stdout);
    assert.equal(ev[ev.length - 1]!.event, 'summary', cmd[0]);
  }
  const err = bakker(['restore', '--store', path.join(work, 'nope'), '--to', path.join(work, 'x'), '--json']);
  assert.equal(err.code, 1);
  assert.equal(jsonLines(err.stdout)[0]!.event, 'error');
});

test('--dry-run reports what would be copied and writes nothing', () => {
  const store = path.join(work, 'dry');
  const r = bakker(['backup', src, '--store', store, '--dry-run']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /dry run: snapshot \d{4}_\d\d_\d\d_01 would copy 4 files/);
  assert.ok(!fs.existsSync(store));
  const real = path.join(work, 'dry2');
  assert.equal(bakker(['backup', src, '--store', real]).code, 0);
  const before = fs.readdirSync(real).sort();
  const again = bakker(['backup', src, '--store', real, '-n', '--json']);
  const summary = jsonLines(again.stdout).pop()!;
  assert.equal(summary.unchanged, 4);
  assert.equal(summary.dryRun, true);
  assert.deepEqual(fs.readdirSync(real).sort(), before);
});

test('--exclude and --exclude-from leave entries out', () => {
  const store = path.join(work, 'excl');
  const list = path.join(work, 'excludes.txt');
  fs.writeFileSync(list, '# logs\n*.log\n');
  const r = bakker(['backup', src, '--store', store, '--exclude', `${src}/cache/`, '--exclude-from', list]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(fs.readdirSync(path.join(store, 'latest', src)).sort(), ['a.txt', 'keep']);
});

test('--one-file-system does not descend into another filesystem', (t) => {
  const store = path.join(work, 'xdev');
  const mnt = path.join(src, 'mnt');
  fs.mkdirSync(mnt);
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mnt]);
  t.after(() => {
    execFileSync('umount', [mnt]);
    fs.rmdirSync(mnt);
  });
  fs.writeFileSync(path.join(mnt, 'other-fs'), 'x');
  assert.equal(bakker(['backup', src, '--store', store, '-x']).code, 0);
  assert.deepEqual(fs.readdirSync(path.join(store, 'latest', src, 'mnt')), [], 'mount point kept, empty');
  assert.equal(bakker(['backup', src, '--store', store]).code, 0);
  assert.deepEqual(fs.readdirSync(path.join(store, 'latest', src, 'mnt')), ['other-fs']);
});

test('unreadable entries are reported, the run finishes, exit code 3', () => {
  const dir = path.join(work, 'nobody');
  build(dir, [{ file: 'ok.txt', content: 'ok' }, { file: 'secret', content: 's', mode: 0o600 }, { dir: 'closed', mode: 0o700 }, { file: 'closed/x', content: 'x' }]);
  fs.chmodSync(work, 0o755);
  fs.chmodSync(dir, 0o755);
  const store = path.join(work, 'nobody-store');
  fs.mkdirSync(store);
  fs.chownSync(store, 65534, 65534);
  const r = bakker(['backup', dir, '--store', store], { user: 'nobody' });
  assert.equal(r.code, 3, r.stderr);
  assert.match(r.stderr, /warning: .*secret: cannot read, left out of this snapshot: EACCES/);
  assert.match(r.stderr, /warning: .*closed: cannot list directory/);
  assert.match(r.stdout, /2 entries could not be read/);
  assert.equal(fs.readFileSync(path.join(store, 'latest', dir, 'ok.txt'), 'utf8'), 'ok');
});

test('a folder that is not a store is refused; a newer store format is refused', () => {
  const notStore = path.join(work, 'not-store');
  fs.mkdirSync(notStore);
  fs.writeFileSync(path.join(notStore, 'precious'), 'x');
  let r = bakker(['backup', src, '--store', notStore]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /is not empty and is not a bakker store/);
  const store = path.join(work, 'future');
  assert.equal(bakker(['backup', src, '--store', store]).code, 0);
  fs.writeFileSync(path.join(store, '.bakker/format'), '{"format": 9}');
  for (const args of [['backup', src, '--store', store], ['list', '--store', store], ['restore', '--store', store, '--to', path.join(work, 'f')]]) {
    r = bakker(args);
    assert.equal(r.code, 1, args[0]);
    assert.match(r.stderr, /uses format 9; this bakker understands format 1: upgrade bakker/);
  }
});

test('diff lists added, removed, changed and metadata-only paths', () => {
  const store = path.join(work, 'diffs');
  const d = path.join(work, 'dsrc');
  build(d, [{ file: 'same', content: 's' }, { file: 'edit', content: '1' }, { file: 'gone', content: 'g' }, { file: 'perm', content: 'p', mode: 0o644 }]);
  assert.equal(bakker(['backup', d, '--store', store]).code, 0);
  fs.writeFileSync(path.join(d, 'edit'), '22');
  fs.rmSync(path.join(d, 'gone'));
  fs.writeFileSync(path.join(d, 'new'), 'n');
  execFileSync('setfattr', ['-n', 'user.tag', '-v', 'x', path.join(d, 'perm')]);
  assert.equal(bakker(['backup', d, '--store', store]).code, 0);
  const r = bakker(['diff', '--store', store]);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  assert.ok(lines.includes(`M ${d}/edit`), r.stdout);
  assert.ok(lines.includes(`- ${d}/gone`), r.stdout);
  assert.ok(lines.includes(`+ ${d}/new`), r.stdout);
  assert.ok(lines.includes(`m ${d}/perm`), r.stdout);
  assert.ok(!lines.some((l) => l.endsWith('/same')), r.stdout);
  assert.match(lines[lines.length - 1]!, /1 added, 1 removed, 1 changed/);
});

test('verify reports a damaged snapshot with the path and exit code 1', () => {
  const store = path.join(work, 'damaged');
  fs.writeFileSync(path.join(src, 'hl-a'), 'shared');
  fs.linkSync(path.join(src, 'hl-a'), path.join(src, 'hl-b'));
  assert.equal(bakker(['backup', src, '--store', store, '--checksum', 'md5']).code, 0);
  const snap = fs.readlinkSync(path.join(store, 'latest'));
  const f = path.join(store, snap, src, 'a.txt');
  fs.writeFileSync(f, 'X'); // same size, other content
  fs.rmSync(path.join(store, snap, src, 'keep/d'));
  // a hard-link group split apart in the store
  const hl = path.join(store, snap, src, 'hl-b');
  fs.rmSync(hl);
  fs.writeFileSync(hl, 'shared');
  const r = bakker(['verify', '--store', store]);
  assert.equal(r.code, 1);
  assert.match(r.stdout, /a\.txt: content does not match its checksum/);
  assert.match(r.stdout, /keep\/d: file is missing from the snapshot folder/);
  assert.match(r.stdout, /hl-b: is not hard-linked to the rest of its group 1 in the snapshot folder/);
  const restore = bakker(['restore', '--store', store, '--to', path.join(work, 'rd'), '--include', `${src}/a.txt`]);
  assert.equal(restore.code, 1);
  assert.match(restore.stderr, /a\.txt does not match its checksum/);
});

test('a store inside a source is left out of the backup', () => {
  const dir = path.join(work, 'self');
  build(dir, [{ file: 'data.txt', content: 'd' }]);
  const store = path.join(dir, 'backups');
  for (let i = 0; i < 2; i++) {
    const r = bakker(['backup', dir, '--store', store]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /the store .*backups is inside the source .*: it is left out of the backup/);
  }
  assert.deepEqual(fs.readdirSync(path.join(store, 'latest', dir)).sort(), ['data.txt']);
});
