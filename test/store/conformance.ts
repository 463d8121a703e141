import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { execFileSync } from 'node:child_process';
import type { Store } from '../../src/store/store.js';
import { createHasher } from '../../src/util/hash.js';
import { fromBigNs, truncateToSeconds } from '../../src/manifest/time.js';

const b = (s: string) => Buffer.from(s);

async function text(store: Store, p: string): Promise<string> {
  const { stream } = await store.openRead(b(p));
  let s = '';
  for await (const c of stream) s += (c as Buffer).toString();
  return s;
}

async function rejectsWith(p: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(p, (err: NodeJS.ErrnoException) => {
    assert.equal(err.code, code);
    return true;
  });
}

/**
 * The contract every store implementation passes (see src/store/store.ts). `make` returns a
 * store over a fresh, empty root, and a cleanup.
 */
export function storeConformance(name: string, make: () => Promise<{ store: Store; cleanup: () => Promise<void>; localPath: string }>): void {
  /** The store's root as a local folder, for checks the interface cannot make (inodes over SFTP). */
  let localPath = '';
  const withStore = (title: string, fn: (s: Store) => Promise<void>) =>
    test(`${name}: ${title}`, async () => {
      const made = await make();
      const { store, cleanup } = made;
      localPath = made.localPath;
      try {
        await fn(store);
      } finally {
        await store.close();
        await cleanup();
      }
    });

  withStore('stat of a missing path is null; reading it is ENOENT', async (s) => {
    assert.equal(await s.stat(b('nope')), null);
    await rejectsWith(s.readFile(b('nope')), 'ENOENT');
    await rejectsWith(s.readdir(b('nope')), 'ENOENT');
  });

  withStore('mkdir, readdir, and EEXIST on a second mkdir', async (s) => {
    await s.mkdir(b('d'), 0o700);
    await s.mkdir(b('d/e'), 0o700);
    await rejectsWith(s.mkdir(b('d'), 0o700), 'EEXIST');
    assert.deepEqual((await s.readdir(b('d'))).map(String), ['e']);
    assert.equal((await s.stat(b('d')))?.type, 'dir');
  });

  withStore('mkdir is ordered: work started before its promise settles finds the directory', async (s) => {
    await s.mkdir(b('s'), 0o700);
    await s.writeFile(b('s/f'), Buffer.from('x'));
    const made: Promise<void>[] = [];
    const linked: Promise<unknown>[] = [];
    for (let i = 0; i < 20; i++) {
      made.push(s.mkdir(b(`o${i}`), 0o700));
      made.push(s.mkdir(b(`o${i}/p`), 0o700));
      linked.push(s.link(b('s/f'), b(`o${i}/p/g`)));
      if (s.linkMany) linked.push(s.linkMany(b('s'), b(`o${i}/p`), [b('f')]).then((codes) => assert.deepEqual(codes, [null])));
    }
    await Promise.all([...made, ...linked]);
    assert.equal((await s.stat(b('o19/p/g')))?.type, 'file');
    await rejectsWith(s.mkdir(b('missing/x'), 0o700), 'ENOENT');
  });

  withStore('writeFile replaces atomically; exclusive refuses an existing file', async (s) => {
    await s.writeFile(b('f'), Buffer.from('one'));
    await s.writeFile(b('f'), Readable.from([Buffer.from('tw'), Buffer.from('o')]));
    assert.equal(await text(s, 'f'), 'two');
    assert.deepEqual((await s.readdir(b(''))).map(String), ['f'], 'no temporary file left');
    await rejectsWith(s.writeFile(b('f'), Buffer.from('x'), { exclusive: true }), 'EEXIST');
    await s.writeFile(b('g'), Buffer.from('x'), { exclusive: true });
    assert.equal((await s.readFile(b('g'))).toString(), 'x');
  });

  withStore('putFile copies a local file with its metadata and checksum; names may be any bytes', async (s) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'conf-'));
    try {
      const local = path.join(dir, 'src');
      const data = Buffer.alloc(300_000, 'q');
      fs.writeFileSync(local, data);
      const lp = Buffer.from(local);
      const name = Buffer.concat([b('odd-'), Buffer.from([0xe9, 0x0a])]);
      const mtime = '1700000000.123456789';
      const res = await s.putFile(name, { path: lp, sparse: false }, { mode: 0o640, mtime }, 'sha256');
      const res2 = await s.putFile(b('plain'), { path: lp, sparse: false }, { mode: 0o600, mtime });
      await rejectsWith(s.putFile(b('plain'), { path: lp, sparse: false }, {}), 'EEXIST');
      const st = fs.statSync(local, { bigint: true });
      for (const r of [res, res2]) {
        assert.deepEqual(r.before, r.after);
        assert.equal(r.before.size, data.length);
        assert.equal(r.before.mtime, fromBigNs(st.mtimeNs));
        assert.equal(r.before.ctime, fromBigNs(st.ctimeNs));
      }
      for (const hash of [undefined, 'md5'] as const) {
        await assert.rejects(s.putFile(b('x'), { path: Buffer.from(path.join(dir, 'missing')), sparse: false }, {}, hash), (err: Error & { code?: string; source?: boolean }) => {
          assert.equal(err.code, 'ENOENT');
          assert.equal(err.source, true, 'a missing source is a source error');
          return true;
        });
        fs.symlinkSync(local, path.join(dir, `link-${hash}`));
        await assert.rejects(s.putFile(b('y'), { path: Buffer.from(path.join(dir, `link-${hash}`)), sparse: false }, {}, hash), (err: Error & { source?: boolean }) => err.source === true);
        assert.equal(await s.stat(b('x')), null);
        assert.equal(await s.stat(b('y')), null);
        // A FIFO put where the walk saw a file: refused at once (opening it must not wait for a writer).
        const fifo = path.join(dir, `fifo-${hash}`);
        execFileSync('mkfifo', [fifo]);
        await assert.rejects(s.putFile(b('z'), { path: Buffer.from(fifo), sparse: false, size: 10 }, {}, hash), (err: Error & { source?: boolean }) => err.source === true);
        assert.equal(await s.stat(b('z')), null);
      }
      const h = createHasher('sha256');
      h.update(data);
      assert.equal(res.sum, h.digest());
      assert.equal(res2.sum, undefined);
      const stored = await s.stat(name);
      assert.equal(stored?.size, data.length);
      assert.equal(stored?.mode, 0o640);
      assert.equal(stored?.mtime, s.caps.nsTimes ? mtime : truncateToSeconds(mtime));
      assert.equal((await s.readFile(name)).length, data.length);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  withStore('putFile keeps holes of a sparse file', async (s) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'conf-'));
    try {
      const local = path.join(dir, 'sparse');
      const fd0 = fs.openSync(local, 'w');
      fs.writeSync(fd0, 'start', 0);
      fs.writeSync(fd0, 'end', 8 << 20);
      fs.closeSync(fd0);
      const size = fs.statSync(local).size;
      for (const hash of [undefined, 'md5'] as const) {
        const name = b(`sp-${hash}`);
        await s.putFile(name, { path: Buffer.from(local), sparse: true }, {}, hash);
        assert.equal((await s.stat(name))?.size, size);
        const data = await s.readFile(name);
        assert.equal(data.subarray(0, 5).toString(), 'start');
        assert.equal(data.subarray(8 << 20).toString(), 'end');
        assert.ok(data.subarray(5, 8 << 20).equals(Buffer.alloc((8 << 20) - 5)));
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  withStore('link shares the inode; symlinks are never followed', async (s) => {
    await s.writeFile(b('a'), Buffer.from('content'));
    await s.link(b('a'), b('b'));
    if (s.caps.inodes) {
      const [sa, sb] = [await s.stat(b('a')), await s.stat(b('b'))];
      assert.equal(sa?.ino, sb?.ino);
      assert.equal(sb?.nlink, 2);
    }
    const [la, lb] = [fs.statSync(path.join(localPath, 'a')), fs.statSync(path.join(localPath, 'b'))];
    assert.equal(la.ino, lb.ino, 'one inode');
    assert.equal(lb.nlink, 2);
    await s.symlink(b('a'), b('l'));
    assert.equal((await s.stat(b('l')))?.type, 'symlink');
    assert.equal((await s.readlink(b('l'))).toString(), 'a');
    await assert.rejects(s.openRead(b('l')));
    await s.link(b('l'), b('l2'));
    assert.equal((await s.stat(b('l2')))?.type, 'symlink', 'a link of a symlink is the symlink');
    await rejectsWith(s.link(b('missing'), b('c')), 'ENOENT');
  });

  withStore('rename replaces a file; setMeta sets mode and times; remove is recursive', async (s) => {
    await s.writeFile(b('x'), Buffer.from('1'));
    await s.writeFile(b('y'), Buffer.from('2'));
    await s.rename(b('x'), b('y'));
    assert.equal((await s.readFile(b('y'))).toString(), '1');
    assert.equal(await s.stat(b('x')), null);
    await s.setMeta(b('y'), { mode: 0o604, mtime: '1600000000.000000001' });
    const st = await s.stat(b('y'));
    assert.equal(st?.mode, 0o604);
    assert.equal(st?.mtime, s.caps.nsTimes ? '1600000000.000000001' : '1600000000.000000000');
    await s.mkdir(b('t'), 0o700);
    await s.mkdir(b('t/u'), 0o700);
    await s.writeFile(b('t/u/f'), Buffer.from('f'));
    await s.symlink(b('/etc'), b('t/etc-link'));
    await s.remove(b('t'));
    assert.equal(await s.stat(b('t')), null);
    assert.ok(fs.existsSync('/etc/hostname') || fs.existsSync('/etc/passwd'), 'remove did not follow the symlink');
    await s.remove(b('never-existed'));
    await s.unlink(b('y'));
    await rejectsWith(s.unlink(b('y')), 'ENOENT');
  });

  withStore('statvfs reports free bytes and inodes; sync works', async (s) => {
    const v = await s.statvfs();
    assert.ok(v.freeBytes > 0 && Number.isFinite(v.freeBytes));
    assert.ok(v.freeInodes >= 0);
    await s.sync();
  });
}
