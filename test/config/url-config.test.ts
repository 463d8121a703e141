import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { bakker, bakkerAsync, jsonLines } from '../helpers/cli.js';
import { build, requireTool, rmrf, sh, tempDir } from '../helpers/tree.js';

/* config_url: a controlling service's config over HTTPS (a real TLS server on loopback), checked, cached, fallen back from. */

let work: string;
let server: https.Server;
let base: string;
/** What the server answers at /cfg: a status and a body. */
let answer: { status: number; body: string } = { status: 200, body: '' };

before(async () => {
  requireTool('openssl');
  work = tempDir();
  const key = path.join(work, 'key.pem');
  const cert = path.join(work, 'cert.pem');
  sh('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', key, '-out', cert], { input: '' });
  server = https.createServer({ key: fs.readFileSync(key), cert: fs.readFileSync(cert) }, (req, res) => {
    if (req.url !== '/cfg') {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(answer.status, { 'content-type': 'application/yaml' }).end(answer.body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  build(path.join(work, 'local-src'), [{ file: 'l.txt', content: 'local' }]);
  build(path.join(work, 'url-src'), [{ file: 'u.txt', content: 'from the url' }, { file: 'skip.tmp', content: 'x' }]);
});

after(async () => {
  await new Promise<void>((r) => server?.close(() => r()));
  if (work) rmrf(work);
});

/** bakker as a child process (this process serves the config meanwhile). */
function run(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = bakkerAsync(args, env);
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr })));
}

function config(name: string, url: string, ca: boolean): string {
  const file = path.join(work, `${name}.yaml`);
  fs.writeFileSync(
    file,
    [`sources: [${path.join(work, 'local-src')}]`, `config_url: ${url}`, ...(ca ? [`config_url_ca: ${path.join(work, 'cert.pem')}`] : []), 'targets:', '  local:', `    store: ${path.join(work, `store-${name}`)}`, ''].join('\n'),
  );
  return file;
}

test('config_url: applied when good, the cached copy when the service is down or sends nonsense, nothing when its certificate is not trusted', async () => {
  const env = { BAKKER_STATE_DIR: path.join(work, 'state') };
  const cfg = config('a', `${base}/cfg`, true);
  const tree = (name: string, snap: string) => fs.readdirSync(path.join(work, `store-${name}`, snap, work));
  const summary = (out: string) => jsonLines(out).find((e) => e.event === 'summary')!;

  answer = { status: 200, body: `sources: [${path.join(work, 'url-src')}]\nexclude: ["*.tmp"]\n` };
  const r1 = await run(['backup', '-c', cfg, '--json'], env);
  assert.equal(r1.code, 0, r1.stderr);
  const s1 = summary(r1.stdout);
  assert.equal(s1.urlConfig, 'applied');
  assert.deepEqual(tree('a', String(s1.snapshot)), ['url-src']);
  assert.deepEqual(fs.readdirSync(path.join(work, 'store-a', String(s1.snapshot), work, 'url-src')), ['u.txt'], 'its exclude applied too');

  answer = { status: 200, body: 'sources: [relative/path]\n' };
  const r2 = await run(['backup', '-c', cfg, '--json'], env);
  assert.equal(r2.code, 0, r2.stderr);
  const s2 = summary(r2.stdout);
  assert.equal(s2.urlConfig, 'cached');
  assert.match(String(s2.urlConfigNote), /sources\.0: "relative\/path" is not absolute.*; the last good copy is used$/);
  assert.deepEqual(tree('a', String(s2.snapshot)), ['url-src']);
  assert.ok(jsonLines(r2.stdout).some((e) => e.event === 'warning' && /not usable/.test(String(e.message))));

  answer = { status: 503, body: '' };
  const r3 = await run(['backup', '-c', cfg, '--json'], env);
  assert.equal(r3.code, 0, r3.stderr);
  assert.match(String(summary(r3.stdout).urlConfigNote), /answered HTTP 503; the last good copy is used$/);

  answer = { status: 404, body: '' };
  const r4 = await run(['backup', '-c', cfg, '--json'], env);
  assert.equal(r4.code, 0, r4.stderr);
  const s4 = summary(r4.stdout);
  assert.equal(s4.urlConfig, 'none', 'the service has no config for this server: the local one applies');
  assert.deepEqual(tree('a', String(s4.snapshot)), ['local-src']);

  // Not trusted (self-signed, no config_url_ca): never taken; with no cached copy, the local config.
  answer = { status: 200, body: `sources: [${path.join(work, 'url-src')}]\n` };
  const r5 = await run(['backup', '-c', config('b', `${base}/cfg`, false), '--json'], { BAKKER_STATE_DIR: path.join(work, 'state-b') });
  assert.equal(r5.code, 0, r5.stderr);
  const s5 = summary(r5.stdout);
  assert.equal(s5.urlConfig, 'ignored');
  assert.match(String(s5.urlConfigNote), /^cannot fetch https:\/\/127\.0\.0\.1:\d+\/cfg: self[- ]signed certificate.*no earlier good copy is cached, so the local settings are used$/);
  assert.deepEqual(tree('b', String(s5.snapshot)), ['local-src']);

  const bad = bakker(['backup', '-c', config('c', 'http://127.0.0.1/cfg', false)]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /c\.yaml:2: config_url: expected an https:\/\/ URL, got "http:\/\/127\.0\.0\.1\/cfg"/);
});
