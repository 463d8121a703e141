// Benchmark, the archive tier (issue 7): how fast a snapshot of about 1 GB goes to object
// storage, stage by stage, and whether the whole is bound by compression, encryption or the
// network rather than by bakker's own code. In one run, on the same snapshot:
//   export        bakker export > /dev/null                 (bakker's own code: impl + tar stream)
//   +zstd         bakker export --compress zstd:3
//   +zstd+age     bakker export --compress zstd:3 --encrypt-for R
//   network       the finished .tar.zst.age file uploaded to s3rver by bakker's S3 layer
//   push          bakker archive push --full (all of it, streamed into a multipart upload)
// and the same stages by stock tools: tar -c | zstd -3 | age -r. MB/s are of the tar stream
// (what the snapshot holds). Not a test:
//   npm run build && node bench/archive.mjs          # COUNT=50000 (about 1 GB with the 100 MiB files)
// Needs GNU time, tar, zstd, age (scripts/install-test-deps.sh) and s3rver (a dev dependency).
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { timedSync } from './timed.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const COUNT = Number(process.env.COUNT ?? 50000);
const W = path.resolve(process.env.BENCH_DIR ?? path.join(root, 'bench/work-archive'));
const src = path.join(W, 'src');
const store = path.join(W, 'store');
const bin = path.join(root, 'bin/bakker.js');
const env = { BAKKER_STATE_DIR: path.join(W, 'state') };

const timed = (label, cmd, args, opts = {}) => timedSync(label, cmd, args, { ...opts, env: { ...env, ...(opts.env ?? {}) } });
const sh = (cmd) => timed(cmd.split(' ')[0], 'bash', ['-c', `set -o pipefail; ${cmd}`]);

fs.mkdirSync(W, { recursive: true });
const made = path.join(W, 'src.ok');
if (!fs.existsSync(made) || fs.readFileSync(made, 'utf8') !== String(COUNT)) {
  fs.rmSync(src, { recursive: true, force: true });
  spawnSync('bash', [path.join(root, 'bench/make-tree.sh'), src, String(COUNT), '1'], { stdio: 'inherit' });
  fs.writeFileSync(made, String(COUNT));
}
for (const d of ['store', 'state', 's3', 'tmp']) fs.rmSync(path.join(W, d), { recursive: true, force: true });
fs.mkdirSync(path.join(W, 'tmp'));
const key = path.join(W, 'id.txt');
fs.rmSync(key, { force: true });
const recipient = spawnSync(process.execPath, [bin, 'key', 'generate', '--out', key]).stdout.toString().trim().split('\n').pop();
if (spawnSync(bin, ['backup', src, '--store', store], { env: { ...process.env, ...env } }).status !== 0) throw new Error('backup failed');

// s3rver on a free port
const port = await new Promise((res) => {
  const s = net.createServer().listen(0, '127.0.0.1', () => {
    const p = s.address().port;
    s.close(() => res(p));
  });
});
fs.mkdirSync(path.join(W, 's3'));
const s3 = spawn(process.execPath, ['--openssl-legacy-provider', path.join(root, 'node_modules/s3rver/bin/s3rver.js'), '-d', path.join(W, 's3'), '-a', '127.0.0.1', '-p', String(port), '--configure-bucket', 'bench', '--silent'], { stdio: 'ignore' });
await new Promise((r) => setTimeout(r, 1500));
const cfg = path.join(W, 'bench.yaml');
fs.writeFileSync(
  cfg,
  `sources: [${src}]
targets:
  local: {store: ${store}}
archives:
  - name: bench
    endpoint: http://127.0.0.1:${port}
    region: us-east-1
    bucket: bench
    credentials: {access_key_id: S3RVER, secret_access_key: S3RVER}
    compression: zstd:3
    encryption: {recipients: [${recipient}]}
`,
);

try {
  const tar = path.join(W, 'tmp/snap.tar');
  const enc = path.join(W, 'tmp/snap.tar.zst.age');
  timed('export to file (for sizes)', bin, ['export', '--store', store, 'latest'], { out: fs.openSync(tar, 'w') });
  const tarBytes = fs.statSync(tar).size;
  timed('export+zstd+age to file', bin, ['export', '--store', store, 'latest', '--compress', 'zstd:3', '--encrypt-for', recipient], { out: fs.openSync(enc, 'w') });
  const encBytes = fs.statSync(enc).size;
  const rows = [];
  const add = (stage, r) => rows.push({ stage, ...r, MBps: +(tarBytes / 1e6 / r.wall).toFixed(1) });
  add('bakker export (own code)', timed('export', bin, ['export', '--store', store, 'latest']));
  add('bakker export +zstd:3', timed('export+zstd', bin, ['export', '--store', store, 'latest', '--compress', 'zstd:3']));
  add('bakker export +zstd:3 +age', timed('export+zstd+age', bin, ['export', '--store', store, 'latest', '--compress', 'zstd:3', '--encrypt-for', recipient]));
  const upload = `
    import fs from 'node:fs';
    const { ObjectStore } = await import(${JSON.stringify(path.join(root, 'dist/src/archive/s3.js'))});
    const s = new ObjectStore({ name: 'bench', endpoint: 'http://127.0.0.1:${port}', region: 'us-east-1', bucket: 'bench', credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } });
    await s.upload('raw/upload', fs.createReadStream(${JSON.stringify(enc)}, { highWaterMark: 1 << 20 }), { storageClass: 'STANDARD', partSize: 8 << 20 });
    s.close();`;
  const net1 = timed('network', process.execPath, ['--input-type=module', '-e', upload]);
  rows.push({ stage: `network: upload of the ${(encBytes / 1e6).toFixed(0)} MB object to s3rver`, ...net1, MBps: +(tarBytes / 1e6 / net1.wall).toFixed(1), objectMBps: +(encBytes / 1e6 / net1.wall).toFixed(1) });
  add('bakker archive push --full (whole)', timed('push', bin, ['archive', 'push', '-c', cfg, '--full', '--force']));
  // (through cat: GNU tar skips reading the files when its output is /dev/null)
  add('stock: tar -c (its own read of the tree)', sh(`tar -cf - -C / ${src.slice(1)} | cat > /dev/null`));
  add('stock: zstd -3 of the tar', sh(`zstd -3 -T1 -c ${tar} > /dev/null`));
  add('stock: age -r of the tar.zst', sh(`zstd -3 -T1 -c ${tar} > ${tar}.zst && age -r ${recipient} ${tar}.zst > /dev/null`));
  add('stock: tar -c | zstd -3 | age -r', sh(`tar -cf - -C / ${src.slice(1)} | zstd -3 -T1 | age -r ${recipient} > /dev/null`));
  console.log(JSON.stringify({ tarBytes, encBytes, rows }, null, 1));
  const out = path.join(root, 'bench/results', `archive-${new Date().toISOString().slice(0, 19).replace(/:/g, '')}.json`);
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, JSON.stringify({ count: COUNT, tarBytes, encBytes, rows }, null, 1));
} finally {
  s3.kill('SIGTERM');
}
