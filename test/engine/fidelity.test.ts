import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { bakker, jsonLines } from '../helpers/cli.js';
import { build, p, requireTool, rmrf, sh, tempDir } from '../helpers/tree.js';

/**
 * Back up a tree holding every kind of entry twice (with changes in between), restore each
 * snapshot, and compare with independent tools: rsync -aHAX --checksum --itemize-changes must
 * see no difference, getfacl -R output must match, and mtimes must match to the nanosecond.
 */
let work: string;
let src: string;
let store: string;
const latin1Name = Buffer.concat([Buffer.from('caf'), Buffer.from([0xe9]), Buffer.from('-latin1')]);

before(() => {
  for (const t of ['rsync', 'getfacl', 'setfacl', 'setfattr', 'setcap', 'getfattr', 'mknod']) requireTool(t);
  work = tempDir();
  src = path.join(work, 'src');
  store = path.join(work, 'store');
  build(src, [
    { file: 'plain.txt', content: 'hello\n' },
    { file: 'empty', content: '' },
    { dir: 'empty-dir' },
    { file: 'dir with space/new\nline', content: 'newline name' },
    { file: '-leading-dash', content: 'dash' },
    { file: Buffer.concat([Buffer.from('odd/'), latin1Name]), content: 'latin1 name' },
    { file: 'bin/suid', content: '#!/bin/sh\n', mode: 0o4755 },
    { file: 'bin/sgid', content: 'g', mode: 0o2711 },
    { dir: 'shared', mode: 0o2775 },
    { dir: 'sticky', mode: 0o1777 },
    { dir: 'private', mode: 0o700 },
    { file: 'private/secret', content: 's', mode: 0o600, uid: 1234, gid: 4321 },
    { file: 'owned/by-1000', content: 'u', uid: 1000, gid: 1000 },
    { symlink: 'link-rel', target: 'plain.txt' },
    { symlink: 'link-dangling', target: '../does/not/exist' },
    { symlink: 'link-abs', target: '/etc/hostname' },
    { symlink: 'dir-link', target: 'bin' },
    { file: 'hl/a', content: 'hard linked content' },
    { dir: 'hl2' },
    { hardlink: 'hl2/b', to: 'hl/a' },
    { hardlink: 'hl/c', to: 'hl/a' },
    { sparse: 'sparse.img', size: 20 << 20, data: [{ at: 0, text: 'head' }, { at: 10 << 20, text: 'middle' }] },
    { fifo: 'fifo' },
    { file: 'acl/file', content: 'acl' },
    { dir: 'acl/dir' },
    { file: 'xattr/file', content: 'x' },
    { file: 'caps/ping', content: 'cap', mode: 0o755 },
    { file: 'big.bin', content: Buffer.alloc(3 << 20, 7) },
  ]);
  sh('mknod', [path.join(src, 'devnull'), 'c', '1', '3']);
  sh('mknod', [path.join(src, 'blockdev'), 'b', '7', '200']);
  // a unix socket file: listen, then exit without closing so the file stays
  sh(process.execPath, ['-e', 'require("net").createServer().listen(process.argv[1], () => process.exit(0))', path.join(src, 'sock')]);
  sh('setfacl', ['-m', 'u:1000:r--,g:1000:rw-', path.join(src, 'acl/file')]);
  sh('setfacl', ['-m', 'u:1000:rwx', '-d', '-m', 'u:1000:r-x,g::r-x', path.join(src, 'acl/dir')]);
  sh('setfattr', ['-n', 'user.comment', '-v', 'hello world', path.join(src, 'xattr/file')]);
  sh('setfattr', ['-n', 'user.binary', '-v', '0x00ff10', path.join(src, 'xattr/file')]);
  sh('setfattr', ['-n', 'trusted.note', '-v', 'root only', path.join(src, 'xattr/file')]);
  sh('setcap', ['cap_net_raw+ep', path.join(src, 'caps/ping')]);
  sh('touch', ['-h', '-d', '2024-01-02 03:04:05.123456789', path.join(src, 'plain.txt'), path.join(src, 'link-rel')]);
});

after(() => rmrf(work));

function snapshotNames(): string[] {
  return jsonLines(bakker(['list', '--store', store, '--json']).stdout)
    .filter((e) => e.event === 'snapshot')
    .map((e) => e.name as string);
}

/** Every entry's lstat mtime in ns, by relative path (Buffer names as latin1 keys). */
function mtimes(root: string): Map<string, bigint> {
  const out = new Map<string, bigint>();
  const walk = (rel: Buffer) => {
    const abs = rel.length ? p(root, rel) : Buffer.from(root);
    const st = fs.lstatSync(abs, { bigint: true });
    out.set(rel.toString('latin1'), st.mtimeNs);
    if (st.isDirectory()) for (const n of fs.readdirSync(abs, { encoding: 'buffer' })) walk(rel.length ? Buffer.concat([rel, Buffer.from('/'), n]) : n);
  };
  walk(Buffer.alloc(0));
  return out;
}

function compareTrees(ref: string, refTimes: Map<string, bigint>, restored: string): void {
  const itemized = sh('rsync', ['-aHAXn', '--checksum', '--itemize-changes', '--delete', ref + '/', restored + '/']);
  assert.equal(itemized, '', `rsync sees differences:\n${itemized}`);
  const facl = (d: string) => sh('getfacl', ['-RPn', '.'], { cwd: d });
  assert.equal(facl(restored), facl(ref), 'getfacl -R output differs');
  assert.deepEqual(mtimes(restored), refTimes, 'mtimes differ (ns)');
  const xattrs = (d: string) => sh('getfattr', ['-R', '-P', '-h', '-d', '-m', '-', '-e', 'base64', '.'], { cwd: d });
  assert.equal(xattrs(restored), xattrs(ref), 'xattrs differ');
}

test('two snapshots restore exactly, as rsync -aHAX and getfacl see them', () => {
  const ref1 = path.join(work, 'ref1');
  sh('rsync', ['-aHAX', src + '/', ref1 + '/']);
  const times1 = mtimes(src);
  let r = bakker(['backup', src, '--store', store, '--checksum', 'sha256']);
  assert.equal(r.code, 0, r.stderr);

  // changes between the runs
  fs.writeFileSync(path.join(src, 'plain.txt'), 'changed content\n');
  fs.chmodSync(path.join(src, 'bin/sgid'), 0o711);
  fs.rmSync(path.join(src, '-leading-dash'));
  fs.writeFileSync(path.join(src, 'added'), 'new file');
  sh('setfacl', ['-m', 'u:1001:rwx', path.join(src, 'acl/file')]);
  sh('setfattr', ['-n', 'user.comment', '-v', 'changed', path.join(src, 'xattr/file')]);
  const ref2 = path.join(work, 'ref2');
  sh('rsync', ['-aHAX', src + '/', ref2 + '/']);
  const times2 = mtimes(src);
  r = bakker(['backup', src, '--store', store, '--checksum', 'blake3']);
  assert.equal(r.code, 0, r.stderr);

  const names = snapshotNames();
  assert.equal(names.length, 2);
  const rel = src.slice(1);
  const times = [times1, times2];
  for (const [i, ref] of [ref1, ref2].entries()) {
    const to = path.join(work, `restored${i}`);
    r = bakker(['restore', '--store', store, '--snapshot', names[i]!, '--to', to]);
    assert.equal(r.code, 0, r.stderr);
    const restored = path.join(to, rel);
    compareTrees(ref, times[i]!, restored);
    const sparse = fs.statSync(path.join(restored, 'sparse.img'));
    assert.equal(sparse.size, 20 << 20);
    assert.ok(sparse.blocks * 512 < 1 << 20, `sparse file restored dense: ${sparse.blocks} blocks`);
    const a = fs.statSync(path.join(restored, 'hl/a'));
    assert.equal(a.nlink, 3, 'hard-link group restored as one inode');
    assert.equal(fs.statSync(path.join(restored, 'hl2/b')).ino, a.ino);
  }
  r = bakker(['verify', '--store', store, '--snapshot', 'all']);
  assert.equal(r.code, 0, r.stdout + r.stderr);
});

test('the stored copy of a sparse file is sparse too', () => {
  const latest = fs.realpathSync(path.join(store, 'latest'));
  const st = fs.statSync(path.join(latest, src.slice(1), 'sparse.img'));
  assert.ok(st.blocks * 512 < 1 << 20);
});

test('--include restores only the named subtree with its parents', () => {
  const to = path.join(work, 'partial');
  const r = bakker(['restore', '--store', store, '--include', path.join(src, 'hl'), '--to', to, '--json']);
  assert.equal(r.code, 0, r.stderr);
  const restored = path.join(to, src.slice(1));
  assert.deepEqual(fs.readdirSync(restored).sort(), ['hl']);
  assert.equal(fs.readFileSync(path.join(restored, 'hl/c'), 'utf8'), 'hard linked content');
  const summary = jsonLines(r.stdout).find((e) => e.event === 'summary')!;
  assert.equal(summary.command, 'restore');
  const none = bakker(['restore', '--store', store, '--include', 'no/such/path', '--to', path.join(work, 'none')]);
  assert.equal(none.code, 1);
  assert.match(none.stderr, /--include no\/such\/path matches nothing/);
});

test('a run over an unchanged tree writes the same impl records (reused lines and re-encoded ones agree)', () => {
  const r = bakker(['backup', src, '--store', store, '--checksum', 'blake3']);
  assert.equal(r.code, 0, r.stderr);
  const names = snapshotNames();
  const records = (name: string) =>
    zlib
      .gunzipSync(fs.readFileSync(path.join(store, `${name}.impl`)))
      .toString()
      .trim()
      .split('\n')
      .filter((l) => l.startsWith(`{"path":"${src.slice(1)}/`)); // the source's own entries (its parent changes as tests run)
  const [before, after] = [records(names[names.length - 2]!), records(names[names.length - 1]!)];
  assert.ok(before.length > 30);
  assert.deepEqual(after, before);
});
