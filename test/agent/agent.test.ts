import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { bakkerAsync, bakkerRun } from '../helpers/cli.js';
import { freePort, startSshd, type SftpAccount, type Sshd } from '../helpers/sshd.js';
import { build, requireTool, rmrf, tempDir } from '../helpers/tree.js';

/*
 * The agent in operation: triggers through the socket, a trigger file on a real SFTP store and
 * HTTP (good, wrong and no token), coalescing; status --json checked against
 * docs/status.schema.json by python3-jsonschema; the Prometheus textfile parsed by the Prometheus
 * project's own parser (python3-prometheus-client); notifications received by a webhook here, a
 * command and a stand-in sendmail. Then the systemd units checked by systemd-analyze verify.
 */

const here = path.dirname(fileURLToPath(import.meta.url));
const SCHEMA = path.resolve(here, '../../../docs/status.schema.json');
const PY = '/usr/bin/python3';
let sshd: Sshd;
let acc: SftpAccount;
let work: string;
let src: string;
let cfg: string;
let token: string;
let httpPort: number;
const hooks: Record<string, unknown>[] = [];
let hookServer: http.Server;
let hookPort: number;
const env = () => ({ BAKKER_STATE_DIR: path.join(work, 'state') });

before(async () => {
  for (const t of [PY, 'systemd-analyze']) requireTool(t);
  const py = spawnSync(PY, ['-c', 'import prometheus_client.parser, jsonschema']);
  if (py.status !== 0) throw new Error(`python3-prometheus-client and python3-jsonschema are missing: run scripts/install-test-deps.sh (${py.stderr})`);
  sshd = await startSshd();
  acc = sshd.addAccount();
  work = tempDir();
  src = path.join(work, 'src');
  build(src, [{ file: 'www/index.html', content: '<h1>hello</h1>' }, { file: 'etc/app.conf', content: 'a = 1\n' }]);
  token = 'tok-' + 'x'.repeat(12) + Math.random().toString(36).slice(2);
  fs.writeFileSync(path.join(work, 'token'), token + '\n', { mode: 0o600 });
  httpPort = await freePort();
  hookServer = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      hooks.push(JSON.parse(body) as Record<string, unknown>);
      res.writeHead(204);
      res.end();
    });
  });
  await new Promise<void>((r) => hookServer.listen(0, '127.0.0.1', r));
  hookPort = (hookServer.address() as { port: number }).port;
  const sendmail = path.join(work, 'sendmail');
  fs.writeFileSync(sendmail, `#!/bin/sh\necho "args: $*" >> ${work}/mail.txt\ncat >> ${work}/mail.txt\n`, { mode: 0o755 });
  cfg = path.join(work, 'agent.yaml');
  fs.writeFileSync(
    cfg,
    `job: web1
sources: [${src}]
targets:
  remote:
    store: ${acc.url}
    identity: ${acc.key}
    known_hosts: ${sshd.knownHosts}
hooks:
  before: ["sleep 3"]
agent:
  socket: ${work}/run/agent.sock
  trigger_poll: 1
  http: {listen: "127.0.0.1:${httpPort}", token_file: ${work}/token}
monitoring: {textfile: ${work}/prom/bakker.prom}
notify:
  on: always
  webhook: http://127.0.0.1:${hookPort}/hook
  command: "cat > ${work}/notified.json"
  mail: admin@example.com
  sendmail: ${sendmail}
`,
  );
});

after(async () => {
  await new Promise<void>((r) => hookServer?.close(() => r()));
  await sshd?.stop();
  if (work) rmrf(work);
});

const snapshots = () => fs.readdirSync(path.join(acc.root, 'backups')).filter((n) => /^\d{4}_\d\d_\d\d_\d\d$/.test(n)).sort();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, ok: () => boolean | Promise<boolean>, ms = 30_000): Promise<void> {
  const t0 = Date.now();
  while (!(await ok())) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

async function agentIdle(): Promise<boolean> {
  const r = await bakkerRun(['trigger', '--status', '-c', cfg, '--json'], env());
  const s = JSON.parse(r.stdout.trim().split('\n').pop()!) as { running: boolean; queued: boolean };
  return !s.running && !s.queued;
}

const post = (headers: Record<string, string>) => fetch(`http://127.0.0.1:${httpPort}/trigger`, { method: 'POST', headers });

test('agent: socket, HTTP and store trigger file start runs; triggers during a run coalesce into one; status, textfile and notifications follow each run', async () => {
  const noAgent = await bakkerRun(['trigger', '-c', cfg], env());
  assert.equal(noAgent.code, 1);
  assert.match(noAgent.stderr, /no bakker agent is listening on .*agent\.sock: start it/);

  const agent = bakkerAsync(['agent', '-c', cfg], { ...env(), JOURNAL_STREAM: '8:1234' });
  let log = '';
  agent.stderr.on('data', (c: Buffer) => (log += c.toString()));
  try {
    await until('the agent socket', () => fs.existsSync(path.join(work, 'run/agent.sock')));
    assert.equal(fs.statSync(path.join(work, 'run/agent.sock')).mode & 0o777, 0o600, 'the socket is for root only');

    // Socket, three times during one run, and HTTP: one run and one follow-up.
    const t1 = await bakkerRun(['trigger', '-c', cfg], env());
    assert.equal(t1.code, 0, t1.stderr);
    assert.match(t1.stdout, /job web1: run started/);
    const t2 = await bakkerRun(['trigger', 'web1', '-c', cfg], env());
    assert.match(t2.stdout, /a run is going on: one more run follows it/);
    const t3 = await bakkerRun(['trigger', '-c', cfg], env());
    assert.match(t3.stdout, /one is queued already: this trigger joins it/);
    const wrongJob = await bakkerRun(['trigger', 'db7', '-c', cfg], env());
    assert.equal(wrongJob.code, 2);
    assert.match(wrongJob.stderr, /this agent runs job "web1", not "db7"/);
    const none = await post({});
    assert.equal(none.status, 401);
    assert.equal(none.headers.get('www-authenticate'), 'Bearer');
    const wrong = await post({ authorization: 'Bearer not-the-token-at-all' });
    assert.equal(wrong.status, 401);
    const good = await post({ authorization: `Bearer ${token}` });
    assert.equal(good.status, 202);
    assert.deepEqual(await good.json(), { ok: true, job: 'web1', state: 'coalesced' });
    await until('the runs to end', agentIdle);
    assert.equal(snapshots().length, 2, 'four triggers during one run made exactly one follow-up run');

    // The storage side drops a trigger file into the store: taken (removed) and run.
    const trigger = path.join(acc.root, 'backups/.bakker/trigger');
    fs.writeFileSync(trigger, '');
    await until('the trigger file to be taken', () => !fs.existsSync(trigger));
    await sleep(300);
    await until('the run to end', agentIdle);
    assert.equal(snapshots().length, 3);
    assert.match(log, /<6>took the trigger file in sftp:\/\//, 'journald priority prefixes under systemd');
    assert.match(log, /<4>HTTP POST \/trigger from 127\.0\.0\.1: no bearer token: refused/);

    // status --json, checked against the documented schema by an independent validator.
    const st = await bakkerRun(['status', '--json', '-c', cfg], env());
    assert.equal(st.code, 0, st.stderr);
    const status = JSON.parse(st.stdout.trim().split('\n').pop()!) as { targets: { job: string; target: string; lastRun: { result: string; snapshot: string } }[] };
    const check = spawnSync(PY, ['-c', 'import json,sys,jsonschema; jsonschema.validate(json.loads(sys.stdin.read()), json.load(open(sys.argv[1]))); print("valid")', SCHEMA], { input: JSON.stringify(status), encoding: 'utf8' });
    assert.equal(check.stdout.trim(), 'valid', check.stderr);
    const bad = spawnSync(PY, ['-c', 'import json,sys,jsonschema; jsonschema.validate(json.loads(sys.stdin.read()), json.load(open(sys.argv[1])))', SCHEMA], { input: JSON.stringify({ ...status, targets: [{ ...status.targets[0], lastRun: { ...status.targets[0]!.lastRun, result: 'fine' } }] }), encoding: 'utf8' });
    assert.notEqual(bad.status, 0, 'the schema check can fail');
    assert.deepEqual(status.targets.map((t) => [t.job, t.target, t.lastRun.result, t.lastRun.snapshot]), [['web1', 'remote', 'ok', snapshots()[2]]]);

    // The textfile, parsed by the Prometheus project's parser.
    const prom = spawnSync(PY, ['-c', 'import sys; from prometheus_client.parser import text_string_to_metric_families as p\nfor f in p(open(sys.argv[1]).read()):\n  for s in f.samples: print(s.name, s.labels["job"], s.labels["target"], s.value)', path.join(work, 'prom/bakker.prom')], { encoding: 'utf8' });
    assert.equal(prom.status, 0, prom.stderr);
    const samples = new Map(prom.stdout.trim().split('\n').map((l) => [l.split(' ')[0]!, l.split(' ')]));
    const lastSuccess = Number(samples.get('bakker_last_success_timestamp_seconds')![3]);
    assert.ok(Math.abs(lastSuccess - Date.now() / 1000) < 120, `last success ${lastSuccess} is now`);
    assert.deepEqual(samples.get('bakker_last_run_success')!.slice(1), ['web1', 'remote', '1.0']);
    assert.ok(Number(samples.get('bakker_store_free_bytes')![3]) > 0);
    assert.ok(samples.has('bakker_last_run_duration_seconds') && samples.has('bakker_last_run_bytes_new') && samples.has('bakker_last_run_errors'));

    // Notifications (on: always): a webhook per run, the command, the mail.
    assert.equal(hooks.length, 3);
    assert.deepEqual(hooks.map((h) => [h.event, h.result, h.job]), [['bakker.run', 'ok', 'web1'], ['bakker.run', 'ok', 'web1'], ['bakker.run', 'ok', 'web1']]);
    assert.equal(JSON.parse(fs.readFileSync(path.join(work, 'notified.json'), 'utf8')).result, 'ok');
    const mail = fs.readFileSync(path.join(work, 'mail.txt'), 'utf8');
    assert.match(mail, /args: -t -oi\nTo: admin@example\.com\nSubject: bakker ok on \S+ \(job web1\)/);

    // A failing run: the webhook says so, status keeps the last success, the textfile says 0.
    fs.renameSync(src, `${src}.away`);
    try {
      await bakkerRun(['trigger', '-c', cfg], env());
      await until('the failing run', () => hooks.length === 4);
    } finally {
      fs.renameSync(`${src}.away`, src);
    }
    assert.equal(hooks[3]!.result, 'failed');
    // (the run notifies before it prints its error line and ends: wait for the line)
    await until("the run's error line", () => /\n<3>bakker backup: source \S+ cannot be read/.test(log), 10_000);
    assert.match(String(hooks[3]!.message), /source .* cannot be read/);
    const st2 = JSON.parse((await bakkerRun(['status', '--json', '-c', cfg], env())).stdout.trim().split('\n').pop()!) as { targets: { lastRun: { result: string; exitCode: number }; lastSuccess: { snapshot: string } }[] };
    assert.equal(st2.targets[0]!.lastRun.result, 'failed');
    assert.equal(st2.targets[0]!.lastRun.exitCode, 2);
    assert.equal(st2.targets[0]!.lastSuccess.snapshot, snapshots()[2]);
    assert.match(fs.readFileSync(path.join(work, 'prom/bakker.prom'), 'utf8'), /bakker_last_run_success\{job="web1",target="remote"\} 0/);
    const text = await bakkerRun(['status', '-c', cfg], env());
    assert.match(text.stdout, /job web1, target remote \(sftp:\/\/.*\)\n  last run +\S+ \S+: failed \(exit 2\)/);
  } finally {
    agent.kill('SIGTERM');
    const code = await new Promise((r) => agent.on('close', r));
    assert.equal(code, 0, log);
  }
  assert.match(log, /stopped after 4 run\(s\)/);
  assert.ok(!fs.existsSync(path.join(work, 'run/agent.sock')), 'the socket is removed');
});

test('install: the unit files pass systemd-analyze verify; uninstall removes them; without systemd the cron line is printed', async () => {
  const dir = path.join(work, 'units');
  const r = await bakkerRun(['install', '-c', cfg, '--unit-dir', dir, '--on-calendar', '*-*-* 03:30:00'], env());
  assert.equal(r.code, 0, r.stderr);
  const service = fs.readFileSync(path.join(dir, 'bakker.service'), 'utf8');
  const timer = fs.readFileSync(path.join(dir, 'bakker.timer'), 'utf8');
  assert.match(service, /^Type=oneshot$/m);
  assert.match(service, new RegExp(`^ExecStart=\\S+node .*bin/bakker\\.js backup -c ${cfg.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}$`, 'm'));
  for (const k of ['ProtectSystem=full', 'PrivateTmp=yes', 'NoNewPrivileges=yes', 'Nice=10', 'IOSchedulingClass=idle', 'Environment=MALLOC_ARENA_MAX=1']) assert.ok(service.includes(`\n${k}\n`), k);
  for (const k of ['OnCalendar=*-*-* 03:30:00', 'Persistent=true', 'RandomizedDelaySec=15min', 'WantedBy=timers.target']) assert.ok(timer.includes(`${k}\n`), k);
  const verify = (...files: string[]) => spawnSync('systemd-analyze', ['verify', '--man=no', ...files], { encoding: 'utf8' });
  const v = verify(path.join(dir, 'bakker.service'), path.join(dir, 'bakker.timer'));
  assert.equal(v.status, 0, v.stderr);
  assert.equal((v.stdout + v.stderr).trim(), '', `systemd-analyze verify complains:\n${v.stdout}${v.stderr}`);
  // The check bites: a misspelt key and a bad value are reported.
  const bad = path.join(work, 'bad/bakker.service');
  fs.mkdirSync(path.dirname(bad), { recursive: true });
  fs.writeFileSync(bad, service.replace('Nice=10', 'Nice=ten').replace('PrivateTmp=yes', 'PrivatTmp=yes'));
  assert.match(verify(bad).stderr, /Unknown key 'PrivatTmp'[\s\S]*Failed to parse nice priority 'ten'/);
  if (!fs.existsSync('/run/systemd/system')) assert.match(r.stdout, /To run from cron instead, put this line in \/etc\/cron\.d\/bakker:\n30 3 \* \* \* root MALLOC_ARENA_MAX=1 \S+node .*bakker\.js backup -c /);

  const agentDir = path.join(work, 'units-agent');
  assert.equal((await bakkerRun(['install', '-c', cfg, '--unit-dir', agentDir, '--agent'], env())).code, 0);
  const va = verify(path.join(agentDir, 'bakker-agent.service'));
  assert.equal((va.stdout + va.stderr).trim(), '', va.stderr);
  assert.match(fs.readFileSync(path.join(agentDir, 'bakker-agent.service'), 'utf8'), /bakker\.js agent -c /);

  const badSpec = await bakkerRun(['install', '-c', cfg, '--unit-dir', dir, '--on-calendar', 'every full moon'], env());
  assert.equal(badSpec.code, 2);
  assert.match(badSpec.stderr, /--on-calendar "every full moon" is not a systemd calendar spec/);
  const u = await bakkerRun(['uninstall', '--unit-dir', dir], env());
  assert.equal(u.code, 0, u.stderr);
  assert.deepEqual(fs.readdirSync(dir), []);
});
