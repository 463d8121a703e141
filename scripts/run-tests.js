#!/usr/bin/env node
// Runs every compiled test file with node's test runner. The suite needs root (mknod, chown,
// mount, runuser) and the tools from scripts/install-test-deps.sh; a missing one fails the run,
// it is never skipped.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

if (process.getuid?.() !== 0) {
  console.error('the test suite needs root (it makes device nodes, chowns files, mounts tmpfs): run it as root');
  process.exit(1);
}
const root = path.resolve(import.meta.dirname ?? path.dirname(new URL(import.meta.url).pathname), '..', 'dist', 'test');
const files = [];
const walk = (d) => {
  for (const e of fs.readdirSync(d, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
    const p = path.join(d, e.name);
    if (e.isDirectory()) walk(p);
    else if (e.name.endsWith('.test.js')) files.push(p);
  }
};
walk(root);
if (files.length === 0) {
  console.error(`no compiled tests under ${root}: run 'npm run build' first`);
  process.exit(1);
}
const filter = process.argv[2];
const chosen = filter ? files.filter((f) => f.includes(filter)) : files;
// The agent's state (cached store configs, remote stores' indexes) goes to a folder of this run's,
// not /var/lib/bakker; tests that look at it set their own.
const state = fs.mkdtempSync('/var/tmp/bakker-test-state-');
const r = spawnSync(process.execPath, ['--test', ...chosen], { stdio: 'inherit', env: { ...process.env, UV_THREADPOOL_SIZE: '16', BAKKER_STATE_DIR: state } });
fs.rmSync(state, { recursive: true, force: true });
process.exit(r.status ?? 1);
