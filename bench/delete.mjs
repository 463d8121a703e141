// Deletion: `bakker prune --keep-last 1` of a store with two snapshots of the generated tree
// (it removes one snapshot and merges the other), against `rm -rf` of a hard-linked copy of what
// it removes (the snapshot's tree and diff folder): locally, and over SFTP against the storage
// server's own rm -rf.
//   npm run build && node bench/delete.mjs            # COUNT=100000
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { startSshd } = await import(path.join(root, 'dist/test/helpers/sshd.js'));
const COUNT = Number(process.env.COUNT ?? 100000);
const W = path.resolve(process.env.BENCH_DIR ?? path.join(root, 'bench/work-delete'));
const src = path.join(W, 'src');
const BIN = path.join(root, 'bin/bakker.js');

async function timed(label, cmd, args, env = {}) {
  spawnSync('sync');
  const child = spawn('/usr/bin/time', ['-f', '%e %U %S %M', cmd, ...args], { env: { ...process.env, BAKKER_STATE_DIR: path.join(W, 'state'), ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  let stdout = '';
  child.stderr.on('data', (d) => (stderr += d));
  child.stdout.on('data', (d) => (stdout += d));
  const status = await new Promise((resolve) => child.on('exit', resolve));
  if (status !== 0) throw new Error(`${label} failed: ${stderr.slice(-2000)}`);
  const [wall, user, sys, rss] = stderr.trim().split('\n').pop().split(' ').map(Number);
  const row = { label, wall, cpu: +(user + sys).toFixed(2), rssMB: Math.round(rss / 1024) };
  const summary = stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l)).find((e) => e.event === 'summary');
  if (summary?.phasesMs) row.phasesMs = summary.phasesMs;
  console.error(JSON.stringify(row));
  return row;
}
const run = (cmd, args) => {
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, BAKKER_STATE_DIR: path.join(W, 'state') } });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed`);
};

fs.mkdirSync(W, { recursive: true });
if (!fs.existsSync(path.join(src, '.made')) || fs.readFileSync(path.join(src, '.made'), 'utf8') !== String(COUNT)) {
  fs.rmSync(src, { recursive: true, force: true });
  spawnSync('bash', [path.join(root, 'bench/make-tree.sh'), src, String(COUNT), '1'], { stdio: 'inherit' });
  fs.writeFileSync(path.join(src, '.made'), String(COUNT));
}
const rows = [];

// Local: two snapshots, then prune one; rm -rf of a hard-linked copy of a snapshot tree.
const store = path.join(W, 'local');
fs.rmSync(store, { recursive: true, force: true });
run(BIN, ['backup', src, '--store', store]);
spawnSync('bash', [path.join(root, 'bench/make-tree.sh'), '--mutate', src, '77'], { stdio: 'ignore' });
run(BIN, ['backup', src, '--store', store]);
const snap = fs.readdirSync(store).filter((n) => /^\d{4}_\d\d_\d\d_\d\d$/.test(n)).sort()[0];
// What prune removes: the snapshot's tree and its diff folder (the first snapshot's holds all of it).
fs.mkdirSync(path.join(W, 'copy'));
run('cp', ['-al', path.join(store, snap), path.join(W, 'copy', 'tree')]);
run('cp', ['-al', path.join(store, `${snap}.diff`), path.join(W, 'copy', 'diff')]);
rows.push({ where: 'local', bakker: await timed('bakker prune (local)', BIN, ['prune', '--store', store, '--keep-last', '1', '--json']), rm: await timed('rm -rf (local)', 'rm', ['-rf', path.join(W, 'copy')]) });
fs.rmSync(store, { recursive: true, force: true });

// SFTP (loopback): the same through a chrooted account; against the storage server's own
// rm -rf of a hard-linked copy of the snapshot tree (run there as root: what deleting costs the
// server, without a network; a chown of the copy would change the snapshot's files too).
const sshd = await startSshd();
try {
  const acc = sshd.addAccount();
  const ssh = ['--identity', acc.key, '--known-hosts', sshd.knownHosts];
  const url = `sftp://${acc.user}@127.0.0.1:${sshd.port}/backups/b`;
  run(BIN, ['backup', src, '--store', url, ...ssh]);
  spawnSync('bash', [path.join(root, 'bench/make-tree.sh'), '--mutate', src, '78'], { stdio: 'ignore' });
  run(BIN, ['backup', src, '--store', url, ...ssh]);
  const remote = path.join(acc.root, 'backups/b');
  const first = fs.readdirSync(remote).filter((n) => /^\d{4}_\d\d_\d\d_\d\d$/.test(n)).sort()[0];
  const copy = path.join(acc.root, 'copy');
  fs.mkdirSync(copy);
  run('cp', ['-al', path.join(remote, first), path.join(copy, 'tree')]);
  run('cp', ['-al', path.join(remote, `${first}.diff`), path.join(copy, 'diff')]);
  rows.push({ where: 'SFTP, loopback', bakker: await timed('bakker prune (sftp)', BIN, ['prune', '--store', url, '--keep-last', '1', '--json', ...ssh]), rm: await timed('rm -rf on the server', 'rm', ['-rf', copy]) });
} finally {
  await sshd.stop();
}

console.log(`Entries: ${COUNT}; bakker prune --keep-last 1 of two snapshots (removes one, merges the other) vs rm -rf of a copy of what it removes (tree and diff folder).\n`);
console.log('| where | bakker prune s | of which merging s | of which removing s | rm -rf s | removing / rm | bakker CPU s | bakker RSS MB |');
console.log('|---|---:|---:|---:|---:|---:|---:|---:|');
for (const r of rows) {
  const p = r.bakker.phasesMs ?? {};
  console.log(`| ${r.where} | ${r.bakker.wall} | ${(p.merge / 1000).toFixed(2)} | ${(p.remove / 1000).toFixed(2)} | ${r.rm.wall} | ${(p.remove / 1000 / r.rm.wall).toFixed(2)} | ${r.bakker.cpu} | ${r.bakker.rssMB} |`);
}
