import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { bakker } from '../helpers/cli.js';
import { build, requireTool, rmrf, sh, tempDir } from '../helpers/tree.js';

let work: string;
let src: string;
let store: string;
let s1: string;
let s2: string;

function listFiles(root: string, rel = ''): string[] {
  const out: string[] = [];
  for (const n of fs.readdirSync(path.join(root, rel)).sort()) {
    const r = rel ? `${rel}/${n}` : n;
    const st = fs.lstatSync(path.join(root, r));
    if (st.isDirectory()) out.push(...listFiles(root, r));
    else out.push(r);
  }
  return out;
}

before(() => {
  requireTool('setfacl');
  work = tempDir();
  src = path.join(work, 'src');
  store = path.join(work, 'store');
  build(src, [
    { file: 'same.txt', content: 'same' },
    { file: 'edit.txt', content: 'v1' },
    { file: 'chmod.txt', content: 'mode', mode: 0o644 },
    { file: 'chown.txt', content: 'owner' },
    { file: 'acl.txt', content: 'acl' },
    { file: 'gone.txt', content: 'bye' },
    { file: 'deep/er/same.bin', content: Buffer.alloc(5000, 1) },
    { symlink: 'link', target: 'same.txt' },
  ]);
  assert.equal(bakker(['backup', src, '--store', store]).code, 0);
  s1 = fs.readlinkSync(path.join(store, 'latest'));
  fs.writeFileSync(path.join(src, 'edit.txt'), 'v2');
  fs.chmodSync(path.join(src, 'chmod.txt'), 0o600);
  fs.chownSync(path.join(src, 'chown.txt'), 1000, 1000);
  sh('setfacl', ['-m', 'u:1000:r--', path.join(src, 'acl.txt')]);
  fs.rmSync(path.join(src, 'gone.txt'));
  fs.writeFileSync(path.join(src, 'new.txt'), 'new');
  const r = bakker(['backup', src, '--store', store]);
  assert.equal(r.code, 0, r.stderr);
  s2 = fs.readlinkSync(path.join(store, 'latest'));
  assert.notEqual(s1, s2);
});

after(() => rmrf(work));

const ino = (snap: string, f: string) => fs.lstatSync(path.join(store, snap, src, f)).ino;

test('unchanged entries share one inode across snapshots', () => {
  for (const f of ['same.txt', 'deep/er/same.bin', 'link', 'acl.txt']) assert.equal(ino(s1, f), ino(s2, f), f);
});

test('changed, chmod-ed, chown-ed and new files get their own inode; the old one is untouched', () => {
  for (const f of ['edit.txt', 'chmod.txt', 'chown.txt']) assert.notEqual(ino(s1, f), ino(s2, f), f);
  const old = fs.statSync(path.join(store, s1, src, 'chmod.txt'));
  assert.equal(old.mode & 0o777, 0o644, 'the older snapshot keeps its mode');
  assert.equal(fs.statSync(path.join(store, s1, src, 'chown.txt')).uid, 0);
  assert.equal(fs.readFileSync(path.join(store, s1, src, 'edit.txt'), 'utf8'), 'v1');
  assert.equal(fs.readFileSync(path.join(store, s2, src, 'edit.txt'), 'utf8'), 'v2');
  assert.ok(!fs.existsSync(path.join(store, s2, src, 'gone.txt')));
  assert.ok(fs.existsSync(path.join(store, s1, src, 'gone.txt')));
});

test('the diff folder holds exactly the new content, as hard links', () => {
  const diff = path.join(store, `${s2}.diff`, src);
  assert.deepEqual(listFiles(diff), ['chmod.txt', 'chown.txt', 'edit.txt', 'new.txt']);
  for (const f of listFiles(diff)) assert.equal(fs.lstatSync(path.join(diff, f)).ino, ino(s2, f));
  assert.deepEqual(listFiles(path.join(store, `${s1}.diff`, src)), listFiles(path.join(store, s1, src)));
});

test('deleting an older snapshot folder leaves the newer one whole', () => {
  fs.rmSync(path.join(store, s1), { recursive: true });
  fs.rmSync(path.join(store, `${s1}.impl`));
  fs.rmSync(path.join(store, `${s1}.diff`), { recursive: true });
  const r = bakker(['verify', '--store', store, '--snapshot', 'all']);
  assert.equal(r.code, 0, r.stdout);
  assert.equal(fs.readFileSync(path.join(store, 'latest', src, 'same.txt'), 'utf8'), 'same');
});

test('a stored copy missing from the previous snapshot is copied anew, with a warning', () => {
  const latest = fs.readlinkSync(path.join(store, 'latest'));
  for (const f of ['same.txt', 'deep/er/same.bin', 'link']) fs.rmSync(path.join(store, latest, src, f));
  const r = bakker(['backup', src, '--store', store]);
  assert.equal(r.code, 0, r.stderr);
  for (const f of ['same.txt', 'deep/er/same.bin', 'link']) {
    assert.equal(r.stderr.split('\n').filter((l) => l.includes(`${f}: stored copy in the previous snapshot is missing`)).length, 1, f);
  }
  const v = bakker(['verify', '--store', store]);
  assert.equal(v.code, 0, v.stdout);
  assert.equal(fs.readFileSync(path.join(store, 'latest', src, 'same.txt'), 'utf8'), 'same');
  assert.equal(fs.readlinkSync(path.join(store, 'latest', src, 'link')), 'same.txt');
});

test('many missing stored copies (more than the queue holds) are each copied anew exactly once', () => {
  const src2 = path.join(work, 'many');
  const store2 = path.join(work, 'many-store');
  for (let i = 0; i < 1500; i++) build(src2, [{ file: `d${i % 10}/f${i}`, content: `file ${i}` }]);
  assert.equal(bakker(['backup', src2, '--store', store2]).code, 0);
  const latest = fs.readlinkSync(path.join(store2, 'latest'));
  for (let i = 0; i < 1500; i += 2) fs.rmSync(path.join(store2, latest, src2, `d${i % 10}/f${i}`));
  const r = bakker(['backup', src2, '--store', store2]);
  assert.equal(r.code, 0, r.stderr.slice(-500));
  assert.equal(r.stderr.split('\n').filter((l) => l.includes('stored copy in the previous snapshot is missing')).length, 750);
  assert.equal(bakker(['verify', '--store', store2]).code, 0);
  const second = fs.readlinkSync(path.join(store2, 'latest'));
  const lines = zlib.gunzipSync(fs.readFileSync(path.join(store2, `${second}.impl`))).toString().trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  const since = (f: string) => lines.find((o) => o.path === `${src2.slice(1)}/${f}`)?.since;
  assert.equal(since('d0/f0'), second, 'a copy made anew is new in this snapshot');
  assert.equal(since('d1/f1'), latest, 'an unchanged file keeps the snapshot it first appeared in');
});
