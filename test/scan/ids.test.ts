import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { IdNames } from '../../src/scan/ids.js';
import { bakker } from '../helpers/cli.js';
import { requireTool, rmrf, tempDir } from '../helpers/tree.js';

/*
 * Owner names from NSS sources beyond /etc/passwd and /etc/group (LDAP, SSSD, ... on real
 * servers): a real NSS module, libnss-extrausers (users in /var/lib/extrausers), put in
 * /etc/nsswitch.conf for the duration of this file and taken out again.
 */

const NSS = '/etc/nsswitch.conf';
const EXTRA = '/var/lib/extrausers';
let savedNss: string;
let savedExtra: string | null = null;
let work: string;

function users(uid: number, gid: number): void {
  fs.writeFileSync(path.join(EXTRA, 'passwd'), `ldapuser:x:${uid}:${gid}::/nonexistent:/usr/sbin/nologin\n`);
  fs.writeFileSync(path.join(EXTRA, 'group'), `ldapgroup:x:${gid}:\n`);
}

before(() => {
  requireTool('getent');
  if (!fs.existsSync('/usr/lib/libnss_extrausers.so.2') && !fs.existsSync('/usr/lib/x86_64-linux-gnu/libnss_extrausers.so.2')) throw new Error('libnss-extrausers is missing: run scripts/install-test-deps.sh');
  work = tempDir();
  savedNss = fs.readFileSync(NSS, 'utf8');
  if (fs.existsSync(EXTRA)) {
    savedExtra = path.join(work, 'extrausers.saved');
    fs.cpSync(EXTRA, savedExtra, { recursive: true });
  }
  fs.mkdirSync(EXTRA, { recursive: true });
  users(4711, 4712);
  fs.writeFileSync(NSS, savedNss.replace(/^(passwd|group):(.*)$/gm, (_, db: string, rest: string) => `${db}:${rest.includes('extrausers') ? rest : `${rest} extrausers`}`));
});

after(() => {
  if (savedNss !== undefined) fs.writeFileSync(NSS, savedNss);
  fs.rmSync(EXTRA, { recursive: true, force: true });
  if (savedExtra) fs.cpSync(savedExtra, EXTRA, { recursive: true });
  if (work) rmrf(work);
});

test('names not in /etc/passwd come from the NSS sources (once per id, misses capped)', () => {
  assert.equal(execFileSync('getent', ['passwd', '4711'], { encoding: 'utf8' }).split(':')[0], 'ldapuser', 'the NSS module answers');
  const log = path.join(work, 'getent.log');
  const wrapper = path.join(work, 'getent');
  fs.writeFileSync(wrapper, `#!/bin/sh\necho "$*" >> ${log}\nexec getent "$@"\n`, { mode: 0o755 });
  const ids = new IdNames('/etc', wrapper);
  assert.equal(ids.user(4711), 'ldapuser');
  assert.equal(ids.user(4711), 'ldapuser');
  assert.equal(ids.group(4712), 'ldapgroup');
  assert.equal(ids.uidOf('ldapuser'), 4711, 'learnt with the id: no second question');
  assert.equal(ids.user(0), 'root', 'files first');
  assert.deepEqual(fs.readFileSync(log, 'utf8').trim().split('\n'), ['passwd 4711', 'group 4712']);
  for (let i = 0; i < 50; i++) assert.equal(ids.user(60000 + i), undefined);
  assert.equal(fs.readFileSync(log, 'utf8').trim().split('\n').length, 2 + 32, 'after 32 misses it stops asking');
  // Only files in nsswitch.conf: getent is never run.
  const etc = path.join(work, 'etc');
  fs.mkdirSync(etc);
  for (const f of ['passwd', 'group']) fs.copyFileSync(`/etc/${f}`, path.join(etc, f));
  fs.writeFileSync(path.join(etc, 'nsswitch.conf'), 'passwd: files\ngroup: files\n');
  fs.rmSync(log);
  assert.equal(new IdNames(etc, wrapper).user(4711), undefined);
  assert.ok(!fs.existsSync(log));
});

test('a backup records the NSS names of owners and ACL entries; restore maps them to this server\'s ids (or keeps ids with --numeric-ids)', () => {
  const src = path.join(work, 'src');
  fs.mkdirSync(src);
  fs.writeFileSync(path.join(src, 'owned'), 'by an LDAP user');
  fs.chownSync(path.join(src, 'owned'), 4711, 4712);
  // ACL entries for them too, and for an id no source knows (kept as it is).
  execFileSync('setfacl', ['-m', 'u:4711:r,g:4712:rw,u:4999:rw', path.join(src, 'owned')]);
  const store = path.join(work, 'store');
  const env = { BAKKER_STATE_DIR: path.join(work, 'state') };
  assert.equal(bakker(['backup', src, '--store', store], { env }).code, 0);
  const impl = fs.readdirSync(store).find((n) => n.endsWith('.impl'))!;
  const line = execFileSync('zcat', [path.join(store, impl)], { encoding: 'utf8' }).split('\n').find((l) => l.includes('owned'))!;
  assert.match(line, /"user":"ldapuser"/);
  assert.match(line, /"group":"ldapgroup"/);
  assert.match(line, /"acl":"user::rw-,user:4711:r--,user:4999:rw-,group::r--,group:4712:rw-,mask::rw-,other::r--"/);
  assert.match(line, /"aclNames":"u:4711=ldapuser,g:4712=ldapgroup"/);
  const acl = (f: string) => execFileSync('getfacl', ['-cpn', f], { encoding: 'utf8' }).trim().split('\n').filter((l) => /^(user|group):\d/.test(l));
  // On the restoring server the same names have other ids.
  users(4811, 4812);
  const r = path.join(work, 'r');
  assert.equal(bakker(['restore', '--store', store, '--snapshot', 'latest', '--to', r], { env }).code, 0);
  const st = fs.statSync(path.join(r, src, 'owned'));
  assert.deepEqual([st.uid, st.gid], [4811, 4812]);
  assert.deepEqual(acl(path.join(r, src, 'owned')), ['user:4811:r--', 'user:4999:rw-', 'group:4812:rw-'], 'ACL entries follow their names too');
  const n = path.join(work, 'n');
  assert.equal(bakker(['restore', '--store', store, '--snapshot', 'latest', '--to', n, '--numeric-ids'], { env }).code, 0);
  const sn = fs.statSync(path.join(n, src, 'owned'));
  assert.deepEqual([sn.uid, sn.gid], [4711, 4712]);
  assert.deepEqual(acl(path.join(n, src, 'owned')), ['user:4711:r--', 'user:4999:rw-', 'group:4712:rw-']);
});
