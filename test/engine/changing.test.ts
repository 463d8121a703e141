import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { spawn } from 'node:child_process';
import { bakker, jsonLines } from '../helpers/cli.js';
import { rmrf, tempDir } from '../helpers/tree.js';

/** A file rewritten all through the backup is re-read, then flagged "changing"; the next run copies it again. */
let work: string;
let src: string;
let store: string;

before(() => {
  work = tempDir();
  src = path.join(work, 'src');
  store = path.join(work, 'store');
  fs.mkdirSync(src);
  fs.writeFileSync(path.join(src, 'steady'), 'steady');
  fs.writeFileSync(path.join(src, 'busy.db'), Buffer.alloc(32 << 20, 1));
});

after(() => rmrf(work));

function implEntries(name: string): Record<string, unknown>[] {
  const text = zlib.gunzipSync(fs.readFileSync(path.join(store, `${name}.impl`))).toString();
  return text.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>).filter((o) => typeof o.path === 'string');
}

test('a file modified while it is copied is retried, then flagged, and copied again next time', async () => {
  // The writer rewrites a block and bumps the mtime in a tight loop until it is killed, so every
  // copy attempt (32 MiB, a few ms at least) sees the file change under it.
  const writer = spawn(process.execPath, ['-e', `
    const fs = require('fs'); const f = process.argv[1]; let i = 0;
    const fd = fs.openSync(f, 'r+');
    const block = Buffer.alloc(4096, 7);
    process.stdout.write('go\\n', () => { for (;;) { fs.writeSync(fd, block, 0, 4096, (++i * 4096) % (32 << 20)); fs.futimesSync(fd, i, i); } });
  `, path.join(src, 'busy.db')], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise((r) => writer.stdout.once('data', r));
  let r;
  try {
    r = bakker(['backup', src, '--store', store, '--json']);
  } finally {
    writer.kill('SIGKILL');
    await new Promise((res) => writer.on('exit', res));
  }
  assert.equal(r.code, 0, r.stderr);
  const events = jsonLines(r.stdout);
  const warning = events.find((e) => e.event === 'warning' && String(e.path).endsWith('busy.db'));
  assert.match(String(warning?.message), /kept changing while being copied/);
  assert.equal(events.at(-1)!.changing, 1);
  const first = fs.readlinkSync(path.join(store, 'latest'));
  const busy = implEntries(first).find((e) => String(e.path).endsWith('busy.db'))!;
  assert.equal(busy.changing, true);
  assert.equal(fs.statSync(path.join(store, first, src, 'busy.db')).size, busy.size, 'the impl describes the stored copy');

  const again = bakker(['backup', src, '--store', store, '--json']);
  assert.equal(again.code, 0, again.stderr);
  const second = fs.readlinkSync(path.join(store, 'latest'));
  const busy2 = implEntries(second).find((e) => String(e.path).endsWith('busy.db'))!;
  assert.equal(busy2.changing, undefined);
  assert.equal(busy2.since, second, 'copied again, not linked to the inconsistent copy');
  assert.notEqual(fs.statSync(path.join(store, first, src, 'busy.db')).ino, fs.statSync(path.join(store, second, src, 'busy.db')).ino);
  assert.ok(fs.readFileSync(path.join(store, second, src, 'busy.db')).equals(fs.readFileSync(path.join(src, 'busy.db'))));
});
