import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { parseConfig } from '../../src/config/config.js';
import { bakker } from '../helpers/cli.js';
import { rmrf, tempDir } from '../helpers/tree.js';

const good = `# bakker config
job: server1
sources:
  - /data
  - /etc
exclude: ["*.tmp", /data/cache/]
one_file_system: true
checksum: sha256
targets:
  local:
    store: /backups/server1
`;

test('a good config loads with every field', () => {
  const c = parseConfig(good, 'bakker.yaml');
  assert.deepEqual(c.sources, ['/data', '/etc']);
  assert.deepEqual(c.exclude, ['*.tmp', '/data/cache/']);
  assert.equal(c.oneFileSystem, true);
  assert.equal(c.checksum, 'sha256');
  assert.deepEqual(c.targets, [{ name: 'local', store: '/backups/server1' }]);
  const enc = parseConfig(good.replace('    store: /backups/server1', '    store: /backups/server1\n    encryption:\n      recipients: [age1zdegvnzl264azqktjedang2xur5x9vz55f68erylhh2nqma5kvcsvy7tzs]\n      identity: /etc/bakker/age.key'), 'bakker.yaml');
  assert.deepEqual(enc.targets[0]!.encryption, { recipients: ['age1zdegvnzl264azqktjedang2xur5x9vz55f68erylhh2nqma5kvcsvy7tzs'], identity: '/etc/bakker/age.key' });
});

test('bad configs name the file, the line, the key and what is expected', () => {
  const table: [string, RegExp][] = [
    [good.replace('job: server1', 'jobb: server1'), /^bakker\.yaml:2: "jobb" is not a known setting here \(known: job, sources/],
    [good.replace('checksum: sha256', 'checksum: sha1'), /^bakker\.yaml:8: checksum: expected one of md5, sha256, blake3, none; got "sha1"/],
    [good.replace('one_file_system: true', 'one_file_system: yes please'), /^bakker\.yaml:7: one_file_system: expected true or false, got string "yes please"/],
    [good.replace('  - /etc', '  - etc'), /^bakker\.yaml:5: sources\.1: "etc" is not absolute/],
    [good.replace('    store: /backups/server1', '    stor: /backups/server1'), /^bakker\.yaml:11: "stor" is not a known setting here \(known: store, identity, known_hosts, host_key, reconnect_for, from, retention, on_full, encryption, compression\)/],
    [good.replace('    store: /backups/server1', '    store: /backups/server1\n    encryption: {identity: /k}'), /^bakker\.yaml:12: targets\.local\.encryption: missing "recipients": the age1\.\.\. public keys/],
    [good.replace('    store: /backups/server1', '    store: /backups/server1\n    encryption:\n      recipients: [age1x, age1zdegvnzl264azqktjedang2xur5x9vz55f68erylhh2nqma5kvcsvy7tzs]'), /^bakker\.yaml:13: targets\.local\.encryption\.recipients\.0: "age1x" is not an age X25519 recipient/],
    [good.replace('    store: /backups/server1', '    store: /backups/server1\n    compression: zstd:30'), /^bakker\.yaml:12: targets\.local\.compression: expected zstd, zstd:LEVEL \(1-19\) or none, got "zstd:30"/],
    [good.replace('    store: /backups/server1', '    store: /backups/server1\n    encryption: {recipients: [], idenity: /k}'), /"idenity" is not a known setting here \(known: recipients, identity\)/],
    [good.replace('    store: /backups/server1', '    store: 42'), /^bakker\.yaml:11: targets\.local\.store: expected a folder path or sftp:\/\/user@host\[:port\]\/path, got number 42/],
    [good.replace('    store: /backups/server1', '    store: sftp://u@h/b\n    reconnect_for: soon'), /^bakker\.yaml:12: targets\.local\.reconnect_for: expected whole seconds \(0: fail at once\), got "soon"/],
    [good.replace('    store: /backups/server1', '    store: /backups/server1\n    identity: /k'), /^bakker\.yaml:11: targets\.local: identity, known_hosts, host_key and reconnect_for are for sftp:\/\/ stores only/],
    [good.replace('    store: /backups/server1', '    store: sftp://u@h/b\n    host_key: MD5:aa'), /^bakker\.yaml:12: targets\.local\.host_key: expected a fingerprint as ssh-keygen -lf prints it/],
    [good.replace('exclude: ["*.tmp", /data/cache/]', 'exclude: ["[oops"]'), /^bakker\.yaml:6: exclude\.0: exclude pattern "\[oops" has an unclosed \[/],
    [good.replace(/targets:[\s\S]*/, ''), /^bakker\.yaml: missing "targets"/],
    ['sources: [/a]\ntargets: {a: {store: /b}}\nsources: [/c]\n', /^bakker\.yaml:3: not valid YAML: Map keys must be unique/],
    ['', /bakker\.yaml: the file is empty/],
    ['- just\n- a list\n', /expected a mapping/],
  ];
  for (const [text, want] of table) {
    assert.throws(() => parseConfig(text, 'bakker.yaml'), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'CONFIG');
      assert.match(err.message, want);
      return true;
    });
  }
});

test('the CLI reports a config error on one line with exit code 2', () => {
  const dir = tempDir();
  try {
    const file = path.join(dir, 'bakker.yaml');
    fs.writeFileSync(file, good.replace('checksum: sha256', 'checksum: crc'));
    const r = bakker(['backup', '-c', file]);
    assert.equal(r.code, 2);
    assert.equal(r.stderr.trim().split('\n').length, 1);
    assert.match(r.stderr, /bakker\.yaml:8: checksum: expected one of/);
    const missing = bakker(['backup', '-c', path.join(dir, 'nope.yaml')]);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /cannot read config .*nope\.yaml: ENOENT: check the -c path/);
  } finally {
    rmrf(dir);
  }
});

test('a config drives a real backup to each named target', () => {
  const dir = tempDir();
  try {
    fs.mkdirSync(path.join(dir, 'data/cache'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'data/keep.txt'), 'k');
    fs.writeFileSync(path.join(dir, 'data/drop.tmp'), 'd');
    fs.writeFileSync(path.join(dir, 'data/cache/x'), 'c');
    const file = path.join(dir, 'bakker.yaml');
    fs.writeFileSync(file, `sources: [${dir}/data]\nexclude: ["*.tmp", ${dir}/data/cache/]\ntargets:\n  a: {store: ${dir}/sa}\n  b: {store: ${dir}/sb}\n`);
    const r = bakker(['backup', '-c', file]);
    assert.equal(r.code, 0, r.stderr);
    for (const s of ['sa', 'sb']) {
      const snap = path.join(dir, s, 'latest', dir, 'data');
      assert.deepEqual(fs.readdirSync(snap).sort(), ['keep.txt']);
    }
    const only = bakker(['backup', '-c', file, '--target', 'b']);
    assert.equal(only.code, 0, only.stderr);
    assert.equal(fs.readdirSync(path.join(dir, 'sb')).filter((n) => n.endsWith('.impl')).length, 2);
    assert.equal(fs.readdirSync(path.join(dir, 'sa')).filter((n) => n.endsWith('.impl')).length, 1);
    const bad = bakker(['backup', '-c', file, '--target', 'zzz']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /no target "zzz" .*\(targets: a, b\)/);
  } finally {
    rmrf(dir);
  }
});

test('view and hooks: checked like the rest, each mistake named on one line', () => {
  const base = `sources: [/srv]\ntargets:\n  local:\n    store: /backups/server1\n`;
  const c = parseConfig(`${base}view:\n  type: lvm\n  volume: /dev/vg0/srv\n  origin: /srv\nhooks:\n  before:\n    - "occ maintenance:mode --on"\n    - run: [pg_dump, -f, /srv/db.sql]\n      user: postgres\n      timeout: 30\n      mode: optional\n`, 'b.yaml');
  assert.deepEqual(c.view, { type: 'lvm', volume: 'vg0/srv', size: '10%ORIGIN', origin: '/srv', mount: '/run/bakker/view-default', mountOptions: [] });
  assert.deepEqual(c.hooks.before, [
    { run: 'occ maintenance:mode --on', timeout: 600, env: {}, mode: 'essential' },
    { run: ['pg_dump', '-f', '/srv/db.sql'], timeout: 30, env: {}, mode: 'optional', user: 'postgres' },
  ]);
  const bad: [string, RegExp][] = [
    [`${base}view:\n  type: zfs\n`, /^b\.yaml:6: view\.type: expected none, lvm or btrfs, got "zfs"$/],
    [`${base}view:\n  type: lvm\n  volume: vg0\n  origin: /srv\n`, /^b\.yaml:7: view\.volume: "vg0" is not VG\/LV or \/dev\/VG\/LV/],
    [`${base}view:\n  type: lvm\n  volume: vg0/srv\n`, /^b\.yaml:6: view: missing "origin"/],
    [`${base}view:\n  type: lvm\n  volume: vg0/srv\n  origin: /srv\n  size: lots\n`, /view\.size: "lots" is not a size/],
    [`${base}view:\n  type: btrfs\n  subvolume: srv\n`, /view\.subvolume: "srv" is not absolute/],
    [`${base}hooks:\n  befor: [x]\n`, /"befor" is not a known setting here \(known: before, after_snapshot, after, on_failure\)/],
    [`${base}hooks:\n  before:\n    - run: x\n      mode: maybe\n`, /hooks\.before\.0\.mode: expected essential or optional, got "maybe"/],
    [`${base}hooks:\n  before:\n    - run: x\n      timeout: -1\n`, /hooks\.before\.0\.timeout: expected seconds \(more than 0\), got -1/],
    [`${base}hooks:\n  after: [[]]\n`, /hooks\.after\.0\.run: expected a command/],
  ];
  for (const [text, re] of bad) assert.throws(() => parseConfig(text, 'b.yaml'), (e: Error) => re.test(e.message), `${re} for:\n${text}`);
});

test('archives: a good one loads with its defaults; each mistake is named with its line', () => {
  const R = 'age1zdegvnzl264azqktjedang2xur5x9vz55f68erylhh2nqma5kvcsvy7tzs';
  const base = `${good}archives:\n  - name: glacier\n    region: eu-central-1\n    bucket: acme-backups\n    encryption: {recipients: [${R}]}\n`;
  const c = parseConfig(base + '    storage_class: DEEP_ARCHIVE\n    select: every 30\n    retention: {keep_monthly: 12}\n', 'b.yaml');
  const a = c.archives[0]!;
  assert.equal(a.from, 'local', 'fed from the first local target');
  assert.equal(a.prefix.startsWith('bakker/') && a.prefix.endsWith('/'), true);
  assert.deepEqual([a.storageClass, a.mode, a.fullEvery, a.compression, a.restoreTier, a.restoreDays, a.afterBackup, a.credentials], ['DEEP_ARCHIVE', 'incremental', 12, 3, 'Standard', 7, true, 'default']);
  assert.deepEqual(a.select, { kind: 'every', days: 30 });
  assert.deepEqual(a.recipients, [R]);
  assert.equal(a.retention?.keepMonthly, 12);
  const bad: [string, RegExp][] = [
    [base.replace(`    encryption: {recipients: [${R}]}\n`, ''), /^b\.yaml:13: archives\.0: missing "encryption": give \{recipients: \[age1\.\.\.\]\}.*or write encryption: none/],
    [base + '    storage_class: GLACIER_FLEXIBLE\n', /^b\.yaml:\d+: archives\.0\.storage_class: expected one of STANDARD, STANDARD_IA, GLACIER_IR, GLACIER, DEEP_ARCHIVE, got "GLACIER_FLEXIBLE"/],
    [base + '    select: fortnightly\n', /archives\.0\.select: expected monthly, weekly, daily or "every N" \(days\), got "fortnightly"/],
    [base.replace('bucket: acme-backups', 'bucket: Acme_Backups'), /archives\.0\.bucket: "Acme_Backups" is not a valid S3 bucket name/],
    [base + '    bukket: x\n', /^b\.yaml:\d+: "bukket" is not a known setting here \(known: name, type, from/],
    [base + '    mode: full\n    full_every: 3\n', /archives\.0\.full_every: full_every goes with mode: incremental/],
    [base + '    from: offsite\n', /archives\.0\.from: "offsite" is not a target here \(targets: local\)/],
    [base + '    storage_class: DEEP_ARCHIVE\n    restore_tier: Expedited\n', /DEEP_ARCHIVE has no Expedited retrieval/],
    [base + '    credentials: {access_key_id: AK}\n', /archives\.0\.credentials: expected access_key_id and secret_access_key/],
    [base + '    endpoint: s3.example.com\n', /archives\.0\.endpoint: expected an https:\/\/ URL/],
    [base + '    prefix: a/../b\n', /archives\.0\.prefix: "a\/\.\.\/b\/" has an empty, "\." or "\.\." part/],
    [base + '  - name: glacier\n    region: r\n    bucket: other-bucket\n    encryption: none\n', /archives\.1\.name: another archive is named "glacier"/],
    [`${good}archives: {name: x}\n`, /archives: expected a list of archives/],
  ];
  for (const [text, re] of bad) assert.throws(() => parseConfig(text, 'b.yaml'), (e: Error) => re.test(e.message), `${re} for:\n${text}`);
});
