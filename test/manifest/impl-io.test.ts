import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { FORMAT_VERSION, type ImplHeader } from '../../src/manifest/codec.js';
import type { Entry } from '../../src/manifest/entry.js';
import { ImplReader, ImplWriter } from '../../src/manifest/impl-io.js';
import { LocalStore } from '../../src/store/local/local-store.js';
import { rmrf, tempDir } from '../helpers/tree.js';

const header: ImplHeader = {
  bakker: 'impl',
  format: FORMAT_VERSION,
  snapshot: '2026_01_01_01',
  host: 'h',
  job: 'default',
  sources: ['/s'],
  start: new Date(0).toISOString(),
  previous: null,
  options: { exclude: [], oneFileSystem: false, checksum: null },
};

test('the impl reader splits lines on bytes across compressed chunks; raw lines come back byte for byte', async () => {
  const dir = tempDir();
  try {
    const store = new LocalStore(dir);
    const entries: Entry[] = [];
    // names with multi-byte characters and bytes that are not UTF-8, long enough for many chunks
    for (let i = 0; i < 6000; i++) {
      const name = Buffer.concat([Buffer.from(`s/dir-${Math.floor(i / 100)}/ünïcødé-${String(i).padStart(5, '0')}-`), Buffer.from([0x80 + (i % 64)]), Buffer.from('x'.repeat(i % 50))]);
      entries.push({ path: name, type: 'file', size: i, mode: 0o644, uid: 0, gid: 0, mtime: `${1_700_000_000 + i}.000000001`, ctime: `${1_700_000_000 + i}.000000002` });
    }
    entries.sort((a, b) => Buffer.compare(a.path, b.path));
    const w = new ImplWriter(store, Buffer.from('one.impl'), header);
    for (const e of entries) await w.write(e);
    await w.close({ trailer: true, end: new Date(0).toISOString(), entries: entries.length, summary: {} });
    const file = fs.readFileSync(path.join(dir, 'one.impl'));
    assert.equal(w.digest(), createHash('sha256').update(file).digest('hex'), 'the writer hashes exactly what it wrote');
    const text = zlib.gunzipSync(file);
    assert.ok(text.length > 5 * 16384, 'several chunks');

    // Records decode to the entries written.
    const r = await ImplReader.open(store, Buffer.from('one.impl'));
    for (const e of entries) {
      const got = await r.next();
      assert.ok(got && got.path.equals(e.path) && got.size === e.size && got.mtime === e.mtime, `entry ${e.size}`);
    }
    assert.equal(await r.next(), null);
    assert.equal(r.trailer?.entries, entries.length);
    r.close();

    // Raw lines, written again through writeLines, give back the same bytes.
    const r2 = await ImplReader.open(store, Buffer.from('one.impl'));
    const raw: Buffer[] = [];
    for (let line = await r2.rawLine(); line !== null; line = await r2.rawLine()) if (line.toString().startsWith('{"path"')) raw.push(Buffer.from(line));
    r2.close();
    assert.equal(raw.length, entries.length);
    const w2 = new ImplWriter(store, Buffer.from('two.impl'), header);
    for (let i = 0; i < raw.length; i += 777) await w2.writeLines(raw.slice(i, i + 777));
    await w2.close({ trailer: true, end: new Date(0).toISOString(), entries: entries.length, summary: {} });
    assert.ok(zlib.gunzipSync(fs.readFileSync(path.join(dir, 'two.impl'))).equals(text), 'same bytes');
  } finally {
    rmrf(dir);
  }
});
