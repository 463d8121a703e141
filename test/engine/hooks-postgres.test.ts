import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { bakker, jsonLines } from '../helpers/cli.js';
import { rmrf, sh } from '../helpers/tree.js';
import { freePort } from '../helpers/sshd.js';

/*
 * A database dump hook against a real PostgreSQL (its own cluster, port and socket folder, run as
 * the postgres user): the dump made by the `before` hook is in the backup, and loaded into a fresh
 * cluster it has the same rows.
 */

let work: string;
let bin: string;
const clusters: { data: string; port: number; sock: string }[] = [];

function pgBin(): string {
  const base = '/usr/lib/postgresql';
  const versions = fs.existsSync(base) ? fs.readdirSync(base).filter((v) => fs.existsSync(path.join(base, v, 'bin', 'initdb'))).sort((a, b) => Number(b) - Number(a)) : [];
  if (!versions.length) throw new Error('PostgreSQL is not installed (scripts/install-test-deps.sh installs the postgresql package)');
  return path.join(base, versions[0]!, 'bin');
}

const asPostgres = (cmd: string, args: string[]) => sh('runuser', ['-u', 'postgres', '--', cmd, ...args]);

async function startCluster(name: string): Promise<{ port: number; sock: string }> {
  const data = path.join(work, name);
  const sock = path.join(work, `${name}-sock`);
  fs.mkdirSync(sock, { mode: 0o755 });
  fs.chownSync(sock, Number(sh('id', ['-u', 'postgres']).trim()), Number(sh('id', ['-g', 'postgres']).trim()));
  asPostgres(path.join(bin, 'initdb'), ['--no-sync', '-D', data, '-A', 'trust', '-U', 'postgres']);
  const port = await freePort();
  asPostgres(path.join(bin, 'pg_ctl'), ['-D', data, '-l', path.join(work, `${name}.log`), '-w', '-o', `-p ${port} -k ${sock} -c listen_addresses=''`, 'start']);
  clusters.push({ data, port, sock });
  return { port, sock };
}

const psql = (c: { port: number; sock: string }, sql: string) => asPostgres(path.join(bin, 'psql'), ['-X', '-q', '-A', '-t', '-h', c.sock, '-p', String(c.port), '-U', 'postgres', '-d', 'postgres', '-c', sql]).trim();

before(() => {
  bin = pgBin();
  // Not under /tmp's private test folders: the postgres user must reach everything here.
  work = fs.mkdtempSync('/var/tmp/bakker-pg-');
  fs.chmodSync(work, 0o755);
  fs.chownSync(work, Number(sh('id', ['-u', 'postgres']).trim()), Number(sh('id', ['-g', 'postgres']).trim()));
});

after(() => {
  for (const c of clusters) {
    // stopped by PID (postmaster.pid's first line), whatever state the test left it in
    try {
      const pid = Number(fs.readFileSync(path.join(c.data, 'postmaster.pid'), 'utf8').split('\n')[0]);
      if (pid > 0) process.kill(pid, 'SIGQUIT');
    } catch {
      // not running
    }
  }
  for (let i = 0; i < 50 && clusters.some((c) => fs.existsSync(path.join(c.data, 'postmaster.pid'))); i++) spawnSync('sleep', ['0.1']);
  if (work) rmrf(work);
});

test('a before hook dumps PostgreSQL into the source; the restored dump loads into a fresh cluster with the same rows', async () => {
  const db = await startCluster('db');
  psql(db, "create table customers(id int primary key, name text, note text); insert into customers select i, 'name ' || i, md5(i::text) from generate_series(1, 5000) i;");
  const src = path.join(work, 'src');
  fs.mkdirSync(src);
  fs.chownSync(src, Number(sh('id', ['-u', 'postgres']).trim()), 0);
  const store = path.join(work, 'store');
  const cfg = path.join(work, 'bakker.yaml');
  fs.writeFileSync(
    cfg,
    [
      'job: db',
      `sources: [${src}]`,
      'hooks:',
      '  before:',
      `    - run: [${path.join(bin, 'pg_dump')}, -h, ${db.sock}, -p, "${db.port}", -U, postgres, -f, ${src}/postgres.sql, postgres]`,
      '      user: postgres',
      '      timeout: 60',
      'targets:',
      '  local:',
      `    store: ${store}`,
      '',
    ].join('\n'),
  );
  const r = bakker(['backup', '-c', cfg, '--json']);
  assert.equal(r.code, 0, r.stderr);
  const s = jsonLines(r.stdout).find((e) => e.event === 'summary')!;
  assert.equal(typeof s.downtimeMs, 'number');

  const to = path.join(work, 'restored');
  const rr = bakker(['restore', '--store', store, '--snapshot', 'latest', '--to', to]);
  assert.equal(rr.code, 0, rr.stderr);
  const dump = path.join(to, src, 'postgres.sql');
  assert.match(fs.readFileSync(dump, 'utf8'), /CREATE TABLE public\.customers/);
  fs.chmodSync(to, 0o755);

  const fresh = await startCluster('fresh');
  asPostgres(path.join(bin, 'psql'), ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-h', fresh.sock, '-p', String(fresh.port), '-U', 'postgres', '-d', 'postgres', '-f', dump]);
  const q = "select count(*) || ' ' || sum(id) || ' ' || md5(string_agg(name || note, ',' order by id)) from customers";
  assert.equal(psql(fresh, q), psql(db, q));
  assert.match(psql(fresh, q), /^5000 12502500 /);
});
