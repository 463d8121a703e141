import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { bech32Decode, bech32Encode, decrypt, encrypt, generateIdentity, loadIdentities, parseIdentities, parseRecipient } from '../../src/crypto/age.js';
import { requireTool, rmrf, sh, tempDir } from '../helpers/tree.js';
import { bakker } from '../helpers/cli.js';

/* The age format on node:crypto, checked against Debian's age 1.1 both ways. */

let work: string;
before(() => {
  for (const t of ['age', 'age-keygen']) requireTool(t);
  work = tempDir();
});
after(() => work && rmrf(work));

async function collect(it: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const p of it) parts.push(p);
  return Buffer.concat(parts);
}
async function* pieces(b: Buffer, size = 10_000): AsyncGenerator<Buffer> {
  for (let i = 0; i < b.length; i += size) yield b.subarray(i, i + size);
}
const SIZES = [0, 1, 65535, 65536, 65537, 3 * 65536, 1_000_003];

test('age: identities and recipients are what age-keygen makes of them', () => {
  const { identity, recipient } = generateIdentity();
  assert.match(identity, /^AGE-SECRET-KEY-1[0-9A-Z]{58}$/);
  assert.match(recipient, /^age1[0-9a-z]{58}$/);
  const f = path.join(work, 'id.txt');
  fs.writeFileSync(f, `# a comment\n${identity}\n`);
  assert.equal(sh('age-keygen', ['-y', f]).trim(), recipient);
  assert.equal(parseIdentities(fs.readFileSync(f, 'utf8'), f)[0]!.recipient, recipient);
  const theirs = path.join(work, 'theirs.txt');
  sh('age-keygen', ['-o', theirs]);
  const r = sh('age-keygen', ['-y', theirs]).trim();
  assert.equal(parseIdentities(fs.readFileSync(theirs, 'utf8'), theirs)[0]!.recipient, r);
  assert.deepEqual(bech32Decode(bech32Encode('age', parseRecipient(r)))!.data, parseRecipient(r));
  assert.throws(() => parseRecipient('age1notarecipient'), /is not an age X25519 recipient/);
});

test('age: what bakker encrypts, age decrypts, and the other way, at chunk edges', async () => {
  const { identity, recipient } = generateIdentity();
  const idFile = path.join(work, 'id2.txt');
  fs.writeFileSync(idFile, identity + '\n');
  const ids = parseIdentities(identity, 'id');
  const other = generateIdentity();
  for (const size of SIZES) {
    const plain = randomBytes(size);
    const enc = path.join(work, `ours-${size}.age`);
    fs.writeFileSync(enc, await collect(encrypt(pieces(plain), [parseRecipient(other.recipient), parseRecipient(recipient)])));
    const out = path.join(work, `ours-${size}.out`);
    sh('age', ['-d', '-i', idFile, '-o', out, enc]);
    const got = fs.existsSync(out) ? fs.readFileSync(out) : Buffer.alloc(0); // age makes no file for no bytes
    assert.ok(got.equals(plain), `age decrypts bakker's ${size} bytes`);

    const src = path.join(work, `plain-${size}`);
    fs.writeFileSync(src, plain);
    const theirs = path.join(work, `theirs-${size}.age`);
    sh('age', ['-r', recipient, '-r', other.recipient, '-o', theirs, src]);
    const back = await collect(decrypt(pieces(fs.readFileSync(theirs), 7_777), ids));
    assert.ok(back.equals(plain), `bakker decrypts age's ${size} bytes`);
  }
});

test('age: an altered, truncated, extended or foreign file is refused', async () => {
  const { identity, recipient } = generateIdentity();
  const ids = parseIdentities(identity, 'id');
  const plain = randomBytes(200_000);
  const good = await collect(encrypt(pieces(plain), [parseRecipient(recipient)]));
  const tries: [string, Buffer, RegExp][] = [
    ['a flipped payload byte', Buffer.from(good), /chunk 1 does not authenticate|does not authenticate/],
    ['truncated by a chunk', good.subarray(0, good.length - 4000 - 16 - 65536), /last chunk does not authenticate/],
    ['one byte cut', good.subarray(0, good.length - 1), /last chunk does not authenticate/],
    ['a byte added', Buffer.concat([good, Buffer.from([0])]), /last chunk does not authenticate/],
    ['the header altered', Buffer.from(good), /its header was altered|none of the identities/],
  ];
  const flipped = tries[0]![1];
  flipped[good.length - 100_000] = flipped[good.length - 100_000]! ^ 1;
  const hdr = tries[4]![1];
  const at = hdr.indexOf('\n---') - 3;
  hdr[at] = hdr[at] === 0x41 ? 0x42 : 0x41;
  for (const [what, data, re] of tries) await assert.rejects(collect(decrypt(pieces(data), ids)), re, what);
  const stranger = parseIdentities(generateIdentity().identity, 'x');
  await assert.rejects(collect(decrypt(pieces(good), stranger)), /none of the identities is a recipient of it/);
  assert.ok((await collect(decrypt(pieces(good), ids))).equals(plain));
});

test('bakker key generate: an identity file age reads, its recipient printed, never overwritten', () => {
  const f = path.join(work, 'bakker-id.txt');
  const r = bakker(['key', 'generate', '--out', f]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(fs.statSync(f).mode & 0o777, 0o600);
  assert.equal(r.stdout.trim(), sh('age-keygen', ['-y', f]).trim());
  const plain = path.join(work, 'p.txt');
  fs.writeFileSync(plain, 'for the identity');
  sh('age', ['-r', r.stdout.trim(), '-o', `${plain}.age`, plain]);
  assert.equal(sh('age', ['-d', '-i', f, `${plain}.age`]), 'for the identity');
  const again = bakker(['key', 'generate', '--out', f]);
  assert.equal(again.code, 2);
  assert.match(again.stderr, /exists: an identity is never overwritten/);
});

test('age: passphrase files (scrypt) both ways with the age CLI (through a pty: age asks on the terminal)', async () => {
  const plain = randomBytes(150_000);
  const ours = path.join(work, 'pw-ours.age');
  fs.writeFileSync(ours, await collect(encrypt(pieces(plain), [], { passphrase: 'correct horse' })));
  const out = path.join(work, 'pw-ours.out');
  spawnSync('script', ['-qec', `age -d -o ${out} ${ours}`, '/dev/null'], { input: 'correct horse\n', timeout: 30_000 });
  assert.ok(fs.existsSync(out) && fs.readFileSync(out).equals(plain), 'age decrypts a passphrase file bakker made');

  const src = path.join(work, 'pw-plain');
  fs.writeFileSync(src, plain);
  const theirs = path.join(work, 'pw-theirs.age');
  spawnSync('script', ['-qec', `age -p -o ${theirs} ${src}`, '/dev/null'], { input: 'battery staple\nbattery staple\n', timeout: 30_000 });
  assert.ok(fs.existsSync(theirs), 'age -p made its file');
  assert.ok((await collect(decrypt(pieces(fs.readFileSync(theirs)), [], { passphrase: 'battery staple' }))).equals(plain));
  await assert.rejects(collect(decrypt(pieces(fs.readFileSync(theirs)), [], { passphrase: 'wrong' })), /wrong passphrase/);
  await assert.rejects(collect(decrypt(pieces(fs.readFileSync(theirs)), parseIdentities(generateIdentity().identity, 'x'))), /passphrase-protected: give the passphrase/);
});

test('bakker key generate --passphrase-env: a passphrase-protected identity age opens, and bakker loads with the passphrase', async () => {
  const f = path.join(work, 'protected-id.age');
  const r = bakker(['key', 'generate', '--out', f, '--passphrase-env', 'KEYPASS'], { env: { KEYPASS: 'open sesame' } });
  assert.equal(r.code, 0, r.stderr);
  const recipient = r.stdout.trim();
  assert.equal(fs.readFileSync(f).toString('latin1', 0, 22), 'age-encryption.org/v1\n');
  // age opens it with the passphrase, and what is inside is the identity of that recipient
  const inside = path.join(work, 'protected-id.txt');
  spawnSync('script', ['-qec', `age -d -o ${inside} ${f}`, '/dev/null'], { input: 'open sesame\n', timeout: 30_000 });
  assert.equal(sh('age-keygen', ['-y', inside]).trim(), recipient);
  // bakker loads it with the passphrase and decrypts what age encrypted to the recipient
  const plain = path.join(work, 'for-protected.txt');
  fs.writeFileSync(plain, 'only with the passphrase');
  sh('age', ['-r', recipient, '-o', `${plain}.age`, plain]);
  const ids = await loadIdentities(f, 'open sesame');
  assert.equal((await collect(decrypt(pieces(fs.readFileSync(`${plain}.age`)), ids))).toString(), 'only with the passphrase');
  await assert.rejects(loadIdentities(f), /is passphrase-protected: give its passphrase \(BAKKER_PASSPHRASE\)/);
  await assert.rejects(loadIdentities(f, 'nope'), /cannot open the identity file .*: .*wrong passphrase/);
  const missing = bakker(['key', 'generate', '--out', path.join(work, 'x.age'), '--passphrase-env', 'NOT_SET_HERE']);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /--passphrase-env NOT_SET_HERE: that variable is not set or empty/);
});

test('many files encrypted under heavy garbage collection never hang (Node 20: export() during GC could deadlock key generation)', () => {
  // With generateKeyPairSync + KeyObject.export() per file, this hung at once (a GC inside
  // export() ran a key-generation job's destructor, which waited for the lock export() held).
  const script = `
    const { encryptBuffer, decryptBuffer, generateIdentity, parseRecipient, parseIdentities } = await import(${JSON.stringify(new URL('../../src/crypto/age.js', import.meta.url).href)});
    const { identity, recipient } = generateIdentity();
    const r = [parseRecipient(recipient)];
    const data = Buffer.alloc(3000, 5);
    let last;
    const held = []; // other objects alive, as in a backup run: the collections it triggers are what hung
    for (let i = 0; i < 20000; i++) {
      last = encryptBuffer(data, r);
      held.push(Buffer.alloc(100));
      if (held.length > 1000) held.length = 0;
    }
    if (!decryptBuffer(last, parseIdentities(identity, 'id')).equals(data)) process.exit(3);
    console.log('done');`;
  const r = spawnSync(process.execPath, ['--max-semi-space-size=1', '--input-type=module', '-e', script], { timeout: 90_000, encoding: 'utf8' });
  assert.equal(r.signal, null, 'the run did not hang (killed by the timeout)');
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim(), 'done');
});
