// Benchmark, encrypted stores (issue 6): the same generated tree backed up by bakker to a plain
// local store, by bakker to an encrypted local store (age per file, keyed names), the same with
// zstd before encryption (--compress zstd), and by restic
// (encrypted, deduplicating), in the same run: one full backup each, then ROUNDS incrementals
// after the generator's 1% mutation, then a full restore of the last snapshot by each. Wall time,
// CPU and peak RSS per step, with ratios. Not a test:
//   npm run build && node bench/encrypted.mjs        # COUNT=100000 BIG=1 ROUNDS=2
// Needs restic and GNU time (scripts/install-test-deps.sh).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { timedSync } from './timed.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const COUNT = Number(process.env.COUNT ?? 100000);
const ROUNDS = Number(process.env.ROUNDS ?? 2);
const W = path.resolve(process.env.BENCH_DIR ?? path.join(root, 'bench/work-enc'));
const src = path.join(W, 'src');
// Run as installed: through the bin's shebang (its node options: a small semi-space, --expose-gc).
const bin = path.join(root, 'bin/bakker.js');

const timed = (label, cmd, args, env = {}) => timedSync(label, cmd, args, { env });

fs.mkdirSync(W, { recursive: true });
const made = path.join(W, 'src.ok');
if (!fs.existsSync(made) || fs.readFileSync(made, 'utf8') !== `${COUNT}:${process.env.BIG ?? 1}`) {
  fs.rmSync(src, { recursive: true, force: true });
  spawnSync('bash', [path.join(root, 'bench/make-tree.sh'), src, String(COUNT), '1'], { stdio: 'inherit' });
  fs.writeFileSync(made, `${COUNT}:${process.env.BIG ?? 1}`);
}
for (const d of ['plain', 'enc', 'encz', 'restic', 'restic-cache', 'state', 'r-plain', 'r-enc', 'r-encz', 'r-restic']) fs.rmSync(path.join(W, d), { recursive: true, force: true });
const key = path.join(W, 'id.txt');
fs.rmSync(key, { force: true });
const recipient = spawnSync(process.execPath, [bin, 'key', 'generate', '--out', key]).stdout.toString().trim().split('\n').pop();
const env = { BAKKER_STATE_DIR: path.join(W, 'state') };
const restic = { RESTIC_PASSWORD: 'bench', RESTIC_REPOSITORY: path.join(W, 'restic'), RESTIC_CACHE_DIR: path.join(W, 'restic-cache') };
spawnSync('restic', ['init', '-q'], { env: { ...process.env, ...restic } });

const rows = [];
const round = (phase) => {
  rows.push({ phase, tool: 'bakker', ...timed(`bakker ${phase}`, bin, ['backup', src, '--store', path.join(W, 'plain')], env) });
  rows.push({ phase, tool: 'bakker-enc', ...timed(`bakker encrypted ${phase}`, bin, ['backup', src, '--store', path.join(W, 'enc'), '--recipient', recipient], env) });
  rows.push({ phase, tool: 'bakker-encz', ...timed(`bakker encrypted+zstd ${phase}`, bin, ['backup', src, '--store', path.join(W, 'encz'), '--recipient', recipient, '--compress', 'zstd'], env) });
  rows.push({ phase, tool: 'restic', ...timed(`restic ${phase}`, 'restic', ['backup', '-q', src], restic) });
};
round('full');
for (let i = 1; i <= ROUNDS; i++) {
  spawnSync('bash', [path.join(root, 'bench/make-tree.sh'), '--mutate', src, String(i)], { stdio: 'inherit' });
  round(`incremental ${i}`);
}
rows.push({ phase: 'restore', tool: 'bakker', ...timed('bakker restore', bin, ['restore', '--store', path.join(W, 'plain'), '--snapshot', 'latest', '--to', path.join(W, 'r-plain')], env) });
rows.push({ phase: 'restore', tool: 'bakker-enc', ...timed('bakker encrypted restore', bin, ['restore', '--store', path.join(W, 'enc'), '--snapshot', 'latest', '--to', path.join(W, 'r-enc'), '--key', key], env) });
rows.push({ phase: 'restore', tool: 'bakker-encz', ...timed('bakker encrypted+zstd restore', bin, ['restore', '--store', path.join(W, 'encz'), '--snapshot', 'latest', '--to', path.join(W, 'r-encz'), '--key', key], env) });
rows.push({ phase: 'restore', tool: 'restic', ...timed('restic restore', 'restic', ['restore', 'latest', '--target', path.join(W, 'r-restic')], restic) });
for (const r of ['r-enc', 'r-encz']) {
  const check = spawnSync('rsync', ['-aHn', '--itemize-changes', `${path.join(W, 'r-plain', src)}/`, `${path.join(W, r, src)}/`]).stdout.toString().trim();
  if (check) throw new Error(`${r}: the encrypted restore differs from the plain one:\n${check.slice(0, 2000)}`);
}
const du = (d) => spawnSync('du', ['-sm', path.join(W, d)]).stdout.toString().split('\t')[0];

console.log(`${COUNT} entries (BIG=${process.env.BIG ?? 1}), ${ROUNDS} incrementals of ~1% changes; ${os.cpus().length} x ${os.cpus()[0]?.model ?? 'cpu'}\n`);
console.log('| step | bakker s (cpu s, MB) | encrypted | encrypted+zstd | restic | enc/plain | enc/restic | enc+zstd/restic |');
console.log('|---|---:|---:|---:|---:|---:|---:|---:|');
for (const phase of [...new Set(rows.map((r) => r.phase))]) {
  const of = (t) => rows.find((r) => r.phase === phase && r.tool === t);
  const [p, e, z, r] = [of('bakker'), of('bakker-enc'), of('bakker-encz'), of('restic')];
  const cell = (x) => `${x.wall} (${x.cpu}, ${x.rssMB})`;
  console.log(`| ${phase} | ${cell(p)} | ${cell(e)} | ${cell(z)} | ${cell(r)} | ${(e.wall / p.wall).toFixed(2)} | ${(e.wall / r.wall).toFixed(2)} | ${(z.wall / r.wall).toFixed(2)} |`);
}
console.log(`\nstore size MiB: plain ${du('plain')}, encrypted ${du('enc')}, encrypted+zstd ${du('encz')}, restic ${du('restic')}`);
if (process.env.KEEP !== '1') for (const d of ['plain', 'enc', 'encz', 'restic', 'restic-cache', 'state', 'r-plain', 'r-enc', 'r-encz', 'r-restic']) fs.rmSync(path.join(W, d), { recursive: true, force: true });
