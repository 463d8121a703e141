// Encryption speed: bakker's age (node:crypto) against Debian's age CLI on the same data, one
// stream of SIZE_MB (default 512) MiB of incompressible bytes, to and from memory/tmpfs.
//   npm run build && node bench/crypto.mjs
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { encrypt, decrypt, generateIdentity, parseRecipient, parseIdentities } = await import(path.join(root, 'dist/src/crypto/age.js'));
const MB = Number(process.env.SIZE_MB ?? 512);
const dir = fs.mkdtempSync(path.join(process.env.BENCH_DIR ?? '/dev/shm', 'bakker-crypto-'));
try {
  const { identity, recipient } = generateIdentity();
  const idFile = path.join(dir, 'id');
  fs.writeFileSync(idFile, identity + '\n');
  const block = randomBytes(1 << 20);
  const plainFile = path.join(dir, 'plain');
  const fd = fs.openSync(plainFile, 'w');
  for (let i = 0; i < MB; i++) fs.writeSync(fd, block);
  fs.closeSync(fd);

  async function* blocks() {
    for (let i = 0; i < MB; i++) yield block;
  }
  let t = process.hrtime.bigint();
  const parts = [];
  for await (const c of encrypt(blocks(), [parseRecipient(recipient)])) parts.push(c);
  const bakkerEnc = Number(process.hrtime.bigint() - t) / 1e9;
  async function* sealed() {
    for (const c of parts) yield c;
  }
  t = process.hrtime.bigint();
  let n = 0;
  for await (const c of decrypt(sealed(), parseIdentities(identity, 'id'))) n += c.length;
  const bakkerDec = Number(process.hrtime.bigint() - t) / 1e9;
  if (n !== MB << 20) throw new Error('round trip lost bytes');

  const timeCmd = (args) => {
    const s = process.hrtime.bigint();
    const r = spawnSync('age', args, { stdio: ['ignore', 'ignore', 'inherit'] });
    if (r.status !== 0) throw new Error(`age ${args.join(' ')} failed`);
    return Number(process.hrtime.bigint() - s) / 1e9;
  };
  const ageEnc = timeCmd(['-r', recipient, '-o', path.join(dir, 'c.age'), plainFile]);
  const ageDec = timeCmd(['-d', '-i', idFile, '-o', path.join(dir, 'p2'), path.join(dir, 'c.age')]);
  const rate = (s) => (MB / s).toFixed(0);
  console.log(`${MB} MiB, ${os.cpus()[0]?.model ?? 'cpu'}; bakker in memory, age CLI file to file on ${path.dirname(dir)}\n`);
  console.log('| | encrypt MiB/s | decrypt MiB/s |');
  console.log('|---|---:|---:|');
  console.log(`| bakker (node:crypto) | ${rate(bakkerEnc)} | ${rate(bakkerDec)} |`);
  console.log(`| age 1.1 CLI | ${rate(ageEnc)} | ${rate(ageDec)} |`);
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}
