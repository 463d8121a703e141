// Benchmark, remote case (issue 3): bakker to an sftp:// store against `rsync -aH --link-dest`
// over ssh, to the same local OpenSSH sshd (the test fixture: a chrooted SFTP account for bakker,
// a shell account for rsync), on loopback and through a proxy that adds RTT_MS of round trip
// (this kernel has no netem). One full and ROUNDS incrementals (1% mutated) each. Not a test:
//   npm run build && node bench/remote.mjs            # COUNT=100000 BIG=1 RTT_MS=10 ROUNDS=1
// Needs root (accounts, sshd), rsync and openssh-server (scripts/install-test-deps.sh).
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { startSshd } = await import(path.join(root, 'dist/test/helpers/sshd.js'));
const COUNT = Number(process.env.COUNT ?? 100000);
const RTT = Number(process.env.RTT_MS ?? 10);
const ROUNDS = Number(process.env.ROUNDS ?? 1);
const W = path.resolve(process.env.BENCH_DIR ?? path.join(root, 'bench/work-remote'));
const src = path.join(W, 'src');

/** A TCP proxy to `port` that holds every chunk for half the round trip, each way, in order. */
function delayProxy(port, rttMs) {
  const half = rttMs / 2;
  const server = net.createServer((client) => {
    const up = net.connect(port, '127.0.0.1');
    // Nagle's algorithm with delayed ACKs would add up to 40 ms to small exchanges: a real link does not.
    client.setNoDelay(true);
    up.setNoDelay(true);
    // One FIFO per direction drained by one timer: separate timers per chunk can fire out of order
    // (timer lists are per duration and run on the loop's cached clock), and a reordered byte stream
    // breaks the SSH MAC, so the server drops the connection.
    const pipe = (from, to) => {
      const queue = [];
      let timer = null;
      let ended = false;
      const drain = () => {
        timer = null;
        const now = Date.now();
        while (queue.length && queue[0].at <= now) to.write(queue.shift().data);
        if (queue.length) timer = setTimeout(drain, queue[0].at - now);
        else if (ended) to.end();
      };
      from.on('data', (data) => {
        queue.push({ at: Date.now() + half, data });
        if (!timer) timer = setTimeout(drain, half);
      });
      from.on('end', () => {
        ended = true;
        if (!timer) drain();
      });
      from.on('error', () => to.destroy());
      from.on('close', () => { if (!queue.length) to.destroy(); });
    };
    pipe(client, up);
    pipe(up, client);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

/** Runs under GNU time without blocking this process (the proxy lives here). */
async function timed(label, cmd, args, env = {}) {
  // Written data of the previous run (gigabytes after a full one) is flushed first, so its
  // writeback does not land on the next timed run.
  spawnSync('sync');
  const child = spawn('/usr/bin/time', ['-f', '%e %U %S %M', cmd, ...args], { env: { ...process.env, BAKKER_STATE_DIR: path.join(W, 'state'), ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const status = await new Promise((resolve) => child.on('exit', resolve));
  if (status !== 0) throw new Error(`${label} failed: ${stderr.slice(-2000)}`);
  const [wall, user, sys, rss] = stderr.trim().split('\n').pop().split(' ').map(Number);
  const row = { label, wall, cpu: +(user + sys).toFixed(2), rssMB: Math.round(rss / 1024) };
  console.error(JSON.stringify(row));
  return row;
}

fs.mkdirSync(W, { recursive: true });
if (!fs.existsSync(path.join(src, '.made')) || fs.readFileSync(path.join(src, '.made'), 'utf8') !== String(COUNT)) {
  fs.rmSync(src, { recursive: true, force: true });
  spawnSync('bash', [path.join(root, 'bench/make-tree.sh'), src, String(COUNT), '1'], { stdio: 'inherit' });
  fs.writeFileSync(path.join(src, '.made'), String(COUNT));
}
const sshd = await startSshd();
const proxy = await delayProxy(sshd.port, RTT);
const proxyPort = proxy.address().port;
fs.appendFileSync(sshd.knownHosts, `[127.0.0.1]:${proxyPort} ${sshd.hostKey}\n`);
const rows = [];
try {
  for (const [net_, port] of [['loopback', sshd.port], [`${RTT} ms RTT`, proxyPort]]) {
    const acc = sshd.addAccount();
    const sh = sshd.addShellAccount();
    const url = `sftp://${acc.user}@127.0.0.1:${port}/backups/b`;
    const bk = ['backup', src, '--store', url, '--identity', acc.key, '--known-hosts', sshd.knownHosts];
    const e = `ssh -p ${port} -i ${sh.key} -o UserKnownHostsFile=${sshd.knownHosts} -o StrictHostKeyChecking=yes -o BatchMode=yes`;
    const dest = (n) => `${sh.user}@127.0.0.1:${path.join(sh.home, String(n))}/`;
    // A failed run is reported in the table instead of ending the benchmark.
    const tryTimed = (label, cmd, args) => timed(label, cmd, args).catch((err) => ({ label, failed: err.message.split('\n')[0].slice(0, 160) }));
    rows.push({ net: net_, phase: 'full', bakker: await tryTimed(`bakker full ${net_}`, path.join(root, 'bin/bakker.js'), bk), rsync: await tryTimed(`rsync full ${net_}`, 'rsync', ['-aH', '-e', e, `${src}/`, dest(0)]) });
    for (let i = 1; i <= ROUNDS; i++) {
      spawnSync('bash', [path.join(root, 'bench/make-tree.sh'), '--mutate', src, String(1000 + i)], { stdio: 'ignore' });
      const b = await tryTimed(`bakker incremental ${net_}`, path.join(root, 'bin/bakker.js'), bk);
      const r = await tryTimed(`rsync incremental ${net_}`, 'rsync', ['-aH', '-e', e, `--link-dest=${path.join(sh.home, String(i - 1))}`, `${src}/`, dest(i)]);
      rows.push({ net: net_, phase: `incremental ${i}`, bakker: b, rsync: r });
    }
  }
} finally {
  proxy.close();
  await sshd.stop();
}
console.log(`Entries: ${COUNT}; bakker over SFTP vs rsync -aH --link-dest over ssh, same sshd.\n`);
console.log('| network | phase | bakker s | rsync s | bakker / rsync | bakker CPU s | bakker RSS MB |');
console.log('|---|---|---:|---:|---:|---:|---:|');
for (const r of rows) {
  if (r.bakker.failed || r.rsync.failed) console.log(`| ${r.net} | ${r.phase} | ${r.bakker.failed ? `failed: ${r.bakker.failed}` : r.bakker.wall} | ${r.rsync.failed ? `failed: ${r.rsync.failed}` : r.rsync.wall} | | | |`);
  else console.log(`| ${r.net} | ${r.phase} | ${r.bakker.wall} | ${r.rsync.wall} | ${(r.bakker.wall / r.rsync.wall).toFixed(2)} | ${r.bakker.cpu} | ${r.bakker.rssMB} |`);
}
