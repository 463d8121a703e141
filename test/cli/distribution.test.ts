import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { bakker } from '../helpers/cli.js';
import { build, rmrf, sh, tempDir } from '../helpers/tree.js';

/*
 * Distribution: the single-file build copied alone to another folder backs up and restores;
 * `npm install -g` of the packed package gives a working `bakker`; bash completion; help.
 */

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
let work: string;
let src: string;

before(() => {
  work = tempDir();
  src = path.join(work, 'src');
  build(src, [{ file: 'a/b.txt', content: 'bee' }, { symlink: 'a/l', target: 'b.txt' }, { file: 'c', content: Buffer.alloc(300_000, 1) }]);
});

after(() => {
  if (work) rmrf(work);
});

const rsync = (a: string, b: string) => sh('rsync', ['-aHAXn', '--checksum', '--itemize-changes', `${a}/`, `${b}/`]).trim();

test('single-file build: one .mjs, copied alone elsewhere, backs up and restores (native helper inside)', () => {
  execFileSync(process.execPath, [path.join(root, 'scripts/build-single.mjs')], { cwd: root, stdio: 'pipe' });
  const alone = path.join(work, 'alone');
  fs.mkdirSync(alone);
  const file = path.join(alone, 'bakker.mjs');
  fs.copyFileSync(path.join(root, 'dist/bakker.mjs'), file);
  const run = (args: string[]) => spawnSync(process.execPath, [file, ...args], { cwd: alone, encoding: 'utf8', env: { ...process.env, BAKKER_STATE_DIR: path.join(work, 'state1'), NODE_PATH: '' } });
  const v = run(['--version']);
  assert.equal(v.stdout.trim(), 'bakker 0.1.0', v.stderr);
  const store = path.join(work, 'single-store');
  const b = run(['backup', src, '--store', store]);
  assert.equal(b.status, 0, b.stderr);
  const r = run(['restore', '--store', store, '--snapshot', 'latest', '--to', path.join(work, 'r1')]);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(rsync(src, path.join(work, 'r1', src)), '');
  assert.match(run(['archive', '--help']).stdout, /bakker archive push/);
  assert.deepEqual(fs.readdirSync(alone), ['bakker.mjs'], 'nothing written beside it');
});

test('npm install -g of the packed package gives a working bakker', () => {
  const packDir = path.join(work, 'pack');
  fs.mkdirSync(packDir);
  const tgz = execFileSync('npm', ['pack', '--ignore-scripts', '--silent', '--pack-destination', packDir], { cwd: root, encoding: 'utf8' }).trim().split('\n').pop()!;
  const prefix = path.join(work, 'global');
  const inst = spawnSync('npm', ['install', '-g', '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error', path.join(packDir, tgz)], { encoding: 'utf8' });
  assert.equal(inst.status, 0, inst.stderr);
  const bin = path.join(prefix, 'bin/bakker');
  const v = spawnSync(bin, ['--version'], { encoding: 'utf8' });
  assert.equal(v.stdout.trim(), 'bakker 0.1.0', v.stderr);
  const b = spawnSync(bin, ['backup', src, '--store', path.join(work, 'global-store')], { encoding: 'utf8', env: { ...process.env, BAKKER_STATE_DIR: path.join(work, 'state2') } });
  assert.equal(b.status, 0, b.stderr);
  assert.match(b.stdout, /snapshot \S+ on .*global-store \(first, full\)/);
});

test('bash completion completes commands, subcommands and options; help COMMAND shows examples', () => {
  const script = bakker(['completion', 'bash']).stdout;
  const complete = (words: string[]) => sh('bash', ['-c', `${script}\nCOMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; _bakker; echo "\${COMPREPLY[@]}"`]).trim();
  assert.equal(complete(['bakker', 'ba']), 'backup');
  assert.equal(complete(['bakker', 'backup', '--one']), '--one-file-system');
  assert.equal(complete(['bakker', 'archive', 're']), 'restore');
  assert.equal(complete(['bakker', 'archive', 'restore', '--ti']), '--tier');
  assert.equal(complete(['bakker', 'tr']), 'trigger');
  assert.equal(bakker(['completion', 'zsh']).code, 2);
  for (const c of ['backup', 'archive', 'agent', 'install', 'status', 'trigger']) assert.match(bakker(['help', c]).stdout, /Examples:\n  bakker /, `bakker help ${c}`);
});
