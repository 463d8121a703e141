import { createCipheriv, createDecipheriv, createHmac, createPrivateKey, createPublicKey, diffieHellman, randomBytes, scryptSync, timingSafeEqual, type KeyObject } from 'node:crypto';
import { BakkerError } from '../errors.js';

/**
 * The age v1 file format (age-encryption.org/v1) with X25519 recipients, on node:crypto: each
 * stored file is one age file, so the stock `age` CLI decrypts any of them with the identity.
 * The payload is ChaCha20-Poly1305 in 64 KiB chunks under a key derived by HKDF-SHA256 from a
 * random 16-byte file key; the file key is wrapped for each recipient with X25519 + HKDF +
 * ChaCha20-Poly1305; the header is authenticated by HMAC-SHA256. Interop both ways with age 1.1
 * is tested (test/crypto/age.test.ts).
 */

const INTRO = 'age-encryption.org/v1\n';
const CHUNK = 64 * 1024;
const TAG = 16;
const X25519_INFO = Buffer.from('age-encryption.org/v1/X25519');
const SCRYPT_LABEL = Buffer.from('age-encryption.org/v1/scrypt');
/** scrypt work factor for new passphrase files (age's default), and the most accepted when reading. */
const SCRYPT_LOG_N = 18;
const SCRYPT_MAX_LOG_N = 22;

function scryptKey(passphrase: string, salt: Buffer, logN: number): Buffer {
  const N = 2 ** logN;
  return scryptSync(Buffer.from(passphrase, 'utf8'), Buffer.concat([SCRYPT_LABEL, salt]), 32, { N, r: 8, p: 1, maxmem: 129 * 8 * N + (1 << 20) }); // scrypt needs 128·N·r bytes
}

// ---- bech32 (BIP 173), for age1... recipients and AGE-SECRET-KEY-1... identities ----
const CHARSET = 'qpzry9x8gf2tvdw0s3jn54khce6mua7l';
const GEN = [0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3];

function polymod(values: number[]): number {
  let chk = 1;
  for (const v of values) {
    const top = chk >>> 25;
    chk = ((chk & 0x1ffffff) << 5) ^ v;
    for (let i = 0; i < 5; i++) if ((top >>> i) & 1) chk ^= GEN[i]!;
  }
  return chk;
}

const hrpExpand = (hrp: string) => [...[...hrp].map((c) => c.charCodeAt(0) >> 5), 0, ...[...hrp].map((c) => c.charCodeAt(0) & 31)];

function convertBits(data: Uint8Array | number[], from: number, to: number, pad: boolean): number[] | null {
  let acc = 0;
  let bits = 0;
  const out: number[] = [];
  const max = (1 << to) - 1;
  for (const v of data) {
    acc = (acc << from) | v;
    bits += from;
    while (bits >= to) {
      bits -= to;
      out.push((acc >> bits) & max);
    }
  }
  if (pad) {
    if (bits > 0) out.push((acc << (to - bits)) & max);
  } else if (bits >= from || ((acc << (to - bits)) & max)) return null;
  return out;
}

export function bech32Encode(hrp: string, data: Buffer): string {
  const words = convertBits(data, 8, 5, true)!;
  const chk = polymod([...hrpExpand(hrp), ...words, 0, 0, 0, 0, 0, 0]) ^ 1;
  const checksum = Array.from({ length: 6 }, (_, i) => (chk >> (5 * (5 - i))) & 31);
  return `${hrp}1${[...words, ...checksum].map((w) => CHARSET[w]).join('')}`;
}

export function bech32Decode(s: string): { hrp: string; data: Buffer } | null {
  const lower = s.toLowerCase();
  if (s !== lower && s !== s.toUpperCase()) return null;
  const at = lower.lastIndexOf('1');
  if (at < 1 || at + 7 > lower.length) return null;
  const hrp = lower.slice(0, at);
  const words: number[] = [];
  for (const c of lower.slice(at + 1)) {
    const w = CHARSET.indexOf(c);
    if (w < 0) return null;
    words.push(w);
  }
  if (polymod([...hrpExpand(hrp), ...words]) !== 1) return null;
  const bytes = convertBits(words.slice(0, -6), 5, 8, false);
  return bytes ? { hrp, data: Buffer.from(bytes) } : null;
}

// ---- keys ----
const b64 = (b: Buffer) => b.toString('base64').replace(/=+$/, '');

// A raw X25519 secret as DER (RFC 8410, PKCS#8).
const PKCS8_X25519 = Buffer.from('302e020100300506032b656e04220420', 'hex');

// Every stored file is an age file of its own, so the per-file cost counts: a JWK import is ~5x
// faster than DER here, and the recipients' and identities' key objects are made once.
function publicKeyObject(raw: Buffer): KeyObject {
  return createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: raw.toString('base64url') }, format: 'jwk' });
}
const recipientKeys = new Map<string, KeyObject>();
/** The X25519 base point (u = 9): X25519(secret, BASEPOINT) is the secret's public key. */
const BASEPOINT = publicKeyObject(Buffer.concat([Buffer.from([9]), Buffer.alloc(31)]));
function recipientKey(raw: Buffer): KeyObject {
  const k = raw.toString('hex');
  let o = recipientKeys.get(k);
  if (!o) recipientKeys.set(k, (o = publicKeyObject(raw)));
  return o;
}
const secretKeys = new Map<string, { key: KeyObject; publicRaw: Buffer }>();
function privateKeyObject(secret: Buffer): { key: KeyObject; publicRaw: Buffer } {
  const k = secret.toString('hex');
  let o = secretKeys.get(k);
  if (!o) {
    const key = createPrivateKey({ key: Buffer.concat([PKCS8_X25519, secret]), format: 'der', type: 'pkcs8' });
    const spki = createPublicKey(key).export({ format: 'der', type: 'spki' });
    secretKeys.set(k, (o = { key, publicRaw: Buffer.from(spki.subarray(spki.length - 32)) }));
  }
  return o;
}

export interface Identity {
  secret: Buffer;
  recipient: string;
}

/**
 * A fresh X25519 key pair: a random secret imported as a key object, its public key computed as
 * X25519(secret, 9). Not generateKeyPairSync + export: on Node 20 a garbage collection during
 * KeyObject.export() can run a finished key-generation job's destructor, which takes the lock
 * export() holds, and the process hangs (seen here with --max-semi-space-size=4 after ~50k files).
 */
function newKeyPair(): { secret: Buffer; privateKey: KeyObject; publicRaw: Buffer } {
  const secret = randomBytes(32);
  const privateKey = createPrivateKey({ key: { kty: 'OKP', crv: 'X25519', d: secret.toString('base64url'), x: '' }, format: 'jwk' });
  return { secret, privateKey, publicRaw: diffieHellman({ privateKey, publicKey: BASEPOINT }) };
}

/** A new X25519 identity: its AGE-SECRET-KEY-1... text and its age1... recipient. */
export function generateIdentity(): { identity: string; recipient: string } {
  const { secret, publicRaw } = newKeyPair();
  return { identity: bech32Encode('age-secret-key-', secret).toUpperCase(), recipient: bech32Encode('age', publicRaw) };
}

/** The 32-byte X25519 key of an age1... recipient. */
export function parseRecipient(r: string): Buffer {
  const d = bech32Decode(r.trim());
  if (!d || d.hrp !== 'age' || d.data.length !== 32) throw new BakkerError('CONFIG', `"${r}" is not an age X25519 recipient (age1... as age-keygen prints it)`);
  return d.data;
}

/** Identities from an identity file's text (AGE-SECRET-KEY-1... lines; # comments). */
export function parseIdentities(text: string, file: string): Identity[] {
  const out: Identity[] = [];
  for (const line of text.split('\n')) {
    const l = line.trim();
    if (!l || l.startsWith('#')) continue;
    const d = bech32Decode(l);
    if (!d || d.hrp !== 'age-secret-key-' || d.data.length !== 32) throw new BakkerError('CONFIG', `${file}: a line is not an age identity (AGE-SECRET-KEY-1...): fix the identity file`);
    out.push({ secret: d.data, recipient: bech32Encode('age', privateKeyObject(d.data).publicRaw) });
  }
  if (out.length === 0) throw new BakkerError('CONFIG', `${file} holds no age identity (AGE-SECRET-KEY-1...)`);
  return out;
}

// ---- the primitives ----
function aead(key: Buffer, nonce: Buffer, data: Buffer): Buffer {
  const c = createCipheriv('chacha20-poly1305', key, nonce, { authTagLength: TAG });
  return Buffer.concat([c.update(data), c.final(), c.getAuthTag()]);
}
function aeadOpen(key: Buffer, nonce: Buffer, sealed: Buffer): Buffer | null {
  if (sealed.length < TAG) return null;
  const d = createDecipheriv('chacha20-poly1305', key, nonce, { authTagLength: TAG });
  d.setAuthTag(sealed.subarray(sealed.length - TAG));
  try {
    return Buffer.concat([d.update(sealed.subarray(0, sealed.length - TAG)), d.final()]);
  } catch {
    return null;
  }
}
/** HKDF-SHA256 (RFC 5869) for one 32-byte block: two HMACs (hkdfSync costs ~25 us a call). */
function hkdf(ikm: Buffer, salt: Buffer, info: string | Buffer): Buffer {
  const prk = createHmac('sha256', salt.length ? salt : Buffer.alloc(32)).update(ikm).digest();
  return createHmac('sha256', prk).update(info).update(ONE).digest();
}
const ONE = Buffer.from([1]);
const ZERO12 = Buffer.alloc(12);

/** Wraps base64 into 64-column lines as age writes stanza bodies (the last line shorter, maybe empty). */
function wrap64(s: string): string {
  const lines: string[] = [];
  for (let i = 0; i <= s.length; i += 64) lines.push(s.slice(i, i + 64));
  if (lines.length === 0 || lines[lines.length - 1]!.length === 64) lines.push('');
  return lines.join('\n');
}

/** The age header for `recipients` (or a passphrase: a scrypt stanza, alone), with the file key it wraps. */
function header(recipients: Buffer[], fileKey: Buffer, passphrase?: string): Buffer {
  let h = INTRO;
  if (passphrase !== undefined) {
    const salt = randomBytes(16);
    h += `-> scrypt ${b64(salt)} ${SCRYPT_LOG_N}\n${wrap64(b64(aead(scryptKey(passphrase, salt, SCRYPT_LOG_N), ZERO12, fileKey)))}\n`;
  }
  for (const r of recipients) {
    const { privateKey, publicRaw: share } = newKeyPair();
    const shared = diffieHellman({ privateKey, publicKey: recipientKey(r) });
    const wrapKey = hkdf(shared, Buffer.concat([share, r]), X25519_INFO);
    h += `-> X25519 ${b64(share)}\n${wrap64(b64(aead(wrapKey, ZERO12, fileKey)))}\n`;
  }
  h += '---';
  const mac = createHmac('sha256', hkdf(fileKey, Buffer.alloc(0), 'header')).update(h).digest();
  return Buffer.from(`${h} ${b64(mac)}\n`);
}

/** The nonce of payload chunk `n` (last: flag 1). */
function chunkNonce(n: number, last: boolean): Buffer {
  const b = Buffer.alloc(12);
  b.writeUIntBE(n, 5, 6); // an 11-byte big-endian counter: 6 bytes are plenty
  b[11] = last ? 1 : 0;
  return b;
}

/**
 * Encrypts a stream for `recipients` (32-byte X25519 keys), yielding the age file's bytes. The
 * plaintext is cut into 64 KiB chunks as it comes; memory stays at a chunk or two.
 */
export async function* encrypt(source: AsyncIterable<Buffer>, recipients: Buffer[], opts: { passphrase?: string } = {}): AsyncGenerator<Buffer> {
  if (recipients.length === 0 && opts.passphrase === undefined) throw new BakkerError('CONFIG', 'no recipients to encrypt for');
  if (recipients.length > 0 && opts.passphrase !== undefined) throw new BakkerError('CONFIG', 'internal: a passphrase file has no other recipients (age requires the scrypt stanza alone)');
  const fileKey = randomBytes(16);
  yield header(recipients, fileKey, opts.passphrase);
  const nonce = randomBytes(16);
  const key = hkdf(fileKey, nonce, 'payload');
  yield nonce;
  let pending: Buffer = Buffer.alloc(0);
  let n = 0;
  for await (const piece of source) {
    pending = pending.length ? Buffer.concat([pending, piece]) : piece;
    // Keep at least one full chunk back: only the last chunk may be short (or empty).
    while (pending.length > CHUNK) {
      yield aead(key, chunkNonce(n++, false), pending.subarray(0, CHUNK));
      pending = pending.subarray(CHUNK);
    }
  }
  yield aead(key, chunkNonce(n, true), pending);
}

/** A whole small plaintext encrypted at once (the same bytes encrypt() yields, joined). */
export function encryptBuffer(data: Buffer, recipients: Buffer[]): Buffer {
  if (recipients.length === 0) throw new BakkerError('CONFIG', 'no recipients to encrypt for');
  const fileKey = randomBytes(16);
  const parts: Buffer[] = [header(recipients, fileKey), randomBytes(16)];
  const key = hkdf(fileKey, parts[1]!, 'payload');
  let n = 0;
  let at = 0;
  for (; data.length - at > CHUNK; at += CHUNK) parts.push(aead(key, chunkNonce(n++, false), data.subarray(at, at + CHUNK)));
  parts.push(aead(key, chunkNonce(n, true), data.subarray(at)));
  return Buffer.concat(parts);
}

/** Reads the header off `data` (the start of an age file): the file key for one of `identities`, and where the payload starts. */
function openHeader(data: Buffer, identities: Identity[], passphrase?: string): { fileKey: Buffer; payloadAt: number } {
  const fail = (why: string): never => {
    throw new BakkerError('IMPL', `not an age file we can open: ${why}`);
  };
  if (!data.subarray(0, INTRO.length).equals(Buffer.from(INTRO))) fail('no age-encryption.org/v1 header');
  const end = data.indexOf('\n---');
  if (end < 0) fail('header without its end');
  const macLineEnd = data.indexOf('\n', end + 4);
  if (macLineEnd < 0) fail('header without its MAC');
  const text = data.toString('latin1', INTRO.length, end + 1);
  const stanzas = text.split('-> ').slice(1);
  const secrets = identities.map((i) => ({ ...privateKeyObject(i.secret), secret: i.secret }));
  let fileKey: Buffer | null = null;
  for (const st of stanzas) {
    const [args, ...body] = st.split('\n');
    const [type, shareB64, logNText] = args!.split(' ');
    if (type === 'scrypt') {
      if (stanzas.length !== 1) fail('a scrypt stanza must be the only one');
      if (passphrase === undefined) fail('it is passphrase-protected: give the passphrase');
      const logN = Number(logNText);
      if (!/^\d+$/.test(logNText ?? '') || logN < 1 || logN > SCRYPT_MAX_LOG_N) fail(`its scrypt work factor ${logNText} is out of range`);
      const salt = Buffer.from(shareB64 ?? '', 'base64');
      const wrapped = Buffer.from(body.join(''), 'base64');
      if (salt.length !== 16 || wrapped.length !== 32) fail('a malformed scrypt stanza');
      const k = aeadOpen(scryptKey(passphrase!, salt, logN), ZERO12, wrapped);
      if (!k) fail('wrong passphrase');
      fileKey = k;
      break;
    }
    if (type !== 'X25519' || !shareB64) continue;
    const share = Buffer.from(shareB64, 'base64');
    const wrapped = Buffer.from(body.join(''), 'base64');
    if (share.length !== 32 || wrapped.length !== 32) continue;
    for (const id of secrets) {
      let shared: Buffer;
      try {
        shared = diffieHellman({ privateKey: id.key, publicKey: publicKeyObject(share) });
      } catch {
        continue; // a low-order share: refused, as age does
      }
      if (shared.every((x) => x === 0)) continue;
      const k = aeadOpen(hkdf(shared, Buffer.concat([share, id.publicRaw]), X25519_INFO), ZERO12, wrapped);
      if (k && k.length === 16) fileKey = k;
    }
    if (fileKey) break;
  }
  if (!fileKey) fail('none of the identities is a recipient of it');
  const mac = Buffer.from(data.toString('latin1', end + 5, macLineEnd), 'base64');
  const want = createHmac('sha256', hkdf(fileKey!, Buffer.alloc(0), 'header')).update(data.subarray(0, end + 4)).digest();
  if (mac.length !== want.length || !timingSafeEqual(mac, want)) fail('its header was altered (MAC mismatch)');
  return { fileKey: fileKey!, payloadAt: macLineEnd + 1 };
}

/** A whole age file decrypted at once (small files; the same checks as decrypt()). */
export function decryptBuffer(data: Buffer, identities: Identity[]): Buffer {
  const fail = (why: string): never => {
    throw new BakkerError('IMPL', `encrypted file damaged or altered: ${why}`);
  };
  const { fileKey, payloadAt } = openHeader(data, identities);
  if (data.length < payloadAt + 16) fail('too short for an age file');
  const key = hkdf(fileKey, data.subarray(payloadAt, payloadAt + 16), 'payload');
  const out: Buffer[] = [];
  let at = payloadAt + 16;
  let n = 0;
  for (; data.length - at > CHUNK + TAG; at += CHUNK + TAG) {
    const plain = aeadOpen(key, chunkNonce(n++, false), data.subarray(at, at + CHUNK + TAG));
    if (!plain) fail(`chunk ${n - 1} does not authenticate`);
    out.push(plain!);
  }
  const last = aeadOpen(key, chunkNonce(n, true), data.subarray(at));
  if (!last) fail(n === 0 && at === data.length ? 'no payload' : 'the last chunk does not authenticate (truncated or extended?)');
  if (last!.length === 0 && n > 0) fail('an empty last chunk after full ones');
  out.push(last!);
  return out.length === 1 ? out[0]! : Buffer.concat(out);
}

/**
 * Decrypts an age file (X25519 recipients) with one of `identities`. Any change to the file
 * (header, a chunk, its order or its length) fails with an IMPL error.
 */
export async function* decrypt(source: AsyncIterable<Buffer>, identities: Identity[], opts: { passphrase?: string } = {}): AsyncGenerator<Buffer> {
  let buf: Buffer = Buffer.alloc(0);
  let key: Buffer | null = null;
  let n = 0;
  const fail = (why: string): never => {
    throw new BakkerError('IMPL', `encrypted file damaged or altered: ${why}`);
  };
  for await (const piece of source) {
    buf = buf.length ? Buffer.concat([buf, piece]) : piece;
    if (!key) {
      if (buf.indexOf('\n---') < 0 || buf.indexOf('\n', buf.indexOf('\n---') + 4) < 0 || buf.length < buf.indexOf('\n', buf.indexOf('\n---') + 4) + 1 + 16) continue;
      const { fileKey, payloadAt } = openHeader(buf, identities, opts.passphrase);
      key = hkdf(fileKey, buf.subarray(payloadAt, payloadAt + 16), 'payload');
      buf = buf.subarray(payloadAt + 16);
    }
    // A full sealed chunk is only known not to be the last once more data follows it.
    while (buf.length > CHUNK + TAG) {
      const plain = aeadOpen(key, chunkNonce(n++, false), buf.subarray(0, CHUNK + TAG));
      if (!plain) fail(`chunk ${n - 1} does not authenticate`);
      yield plain!;
      buf = buf.subarray(CHUNK + TAG);
    }
  }
  if (!key) fail('too short for an age file');
  const last = aeadOpen(key!, chunkNonce(n, true), buf);
  if (!last) fail(n === 0 && buf.length === 0 ? 'no payload' : 'the last chunk does not authenticate (truncated or extended?)');
  if (last!.length === 0 && n > 0) fail('an empty last chunk after full ones');
  yield last!;
}

/**
 * The identities in an identity file: plain (AGE-SECRET-KEY-1... lines, as age-keygen writes), or
 * passphrase-protected (an age file with a scrypt stanza, as `age -p` or `bakker key generate
 * --passphrase-env` writes; the passphrase is needed then).
 */
export async function loadIdentities(file: string, passphrase?: string): Promise<Identity[]> {
  const fs = await import('node:fs');
  let data: Buffer;
  try {
    data = fs.readFileSync(file);
  } catch (err) {
    throw new BakkerError('USAGE', `cannot read the identity file ${file} (${(err as NodeJS.ErrnoException).code}): check the path`);
  }
  if (data.toString('latin1', 0, 34) === '-----BEGIN AGE ENCRYPTED FILE-----') {
    throw new BakkerError('USAGE', `${file} is an armored (PEM) age file: write it without -a, or unwrap it with age -d`);
  }
  if (!data.subarray(0, INTRO.length).equals(Buffer.from(INTRO))) return parseIdentities(data.toString('utf8'), file);
  if (passphrase === undefined) throw new BakkerError('USAGE', `${file} is passphrase-protected: give its passphrase (BAKKER_PASSPHRASE)`);
  const parts: Buffer[] = [];
  async function* once() {
    yield data;
  }
  try {
    for await (const p of decrypt(once(), [], { passphrase })) parts.push(p);
  } catch (err) {
    throw new BakkerError('USAGE', `cannot open the identity file ${file}: ${(err as Error).message}`);
  }
  return parseIdentities(Buffer.concat(parts).toString('utf8'), file);
}
