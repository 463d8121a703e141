// One timed run of a command under GNU time: wall seconds, CPU seconds, peak RSS (MB). The
// previous step's writeback is flushed first (sync), so it does not land on this one.
import { spawnSync } from 'node:child_process';

export function timedSync(label, cmd, args, opts = {}) {
  spawnSync('sync');
  const r = spawnSync('/usr/bin/time', ['-f', '%e %U %S %M', cmd, ...args], { env: { ...process.env, ...(opts.env ?? {}) }, stdio: ['ignore', opts.out ?? 'ignore', 'pipe'], maxBuffer: 1 << 26 });
  const stderr = r.stderr.toString();
  if (r.status !== 0) throw new Error(`${label} failed: ${stderr.slice(-2000)}`);
  const [wall, user, sys, rss] = stderr.trim().split('\n').pop().split(' ').map(Number);
  const row = { label, wall, cpu: +(user + sys).toFixed(2), rssMB: Math.round(rss / 1024) };
  console.error(JSON.stringify(row));
  return row;
}
