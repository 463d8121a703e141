import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import { readArchiveRecords, readRunning, readStatuses, type ArchiveRecord, type Running, type TargetStatus } from '../agent/status.js';
import { nextRun } from '../config/agent-config.js';
import { configFileOr } from '../config/default-file.js';
import { bytes, count, duration } from '../ui/format.js';
import type { Output } from '../ui/output.js';
import { parse } from './args.js';
import { EXIT } from './exit-codes.js';

export const help = `Usage: bakker status [-c CONFIG] [--json]

What each job and target did last and what happens next: the last run (when, result, duration,
snapshot, bytes new, the store's free space), the last success, a run going on now (live
counters), and the next scheduled run (the systemd timer's, else the agent's schedule).
Read from this server's state ($BAKKER_STATE_DIR/status, default /var/lib/bakker): every
backup, by hand, timer or agent, records itself there. --json: one summary object, as
docs/status.schema.json describes.

Examples:
  bakker status
  bakker status --json | jq '.targets[] | select(.lastRun.result == "failed")'`;

export interface StatusReport {
  command: 'status';
  host: string;
  generatedAt: string;
  nextRun: string | null;
  nextRunSource: 'timer' | 'agent' | null;
  targets: (TargetStatus & { running: Running | null })[];
  running: Running[];
  /** Each archive's last push (docs/ARCHIVES.md). */
  archives: ArchiveRecord[];
}

/** The timer's next elapse, when systemd runs and bakker.timer is installed. */
function timerNext(): string | null {
  if (!fs.existsSync('/run/systemd/system')) return null;
  const r = spawnSync('systemctl', ['show', 'bakker.timer', '--property=NextElapseUSecRealtime', '--value'], { encoding: 'utf8', timeout: 5000 });
  const v = r.status === 0 ? r.stdout.trim() : '';
  const t = v && v !== 'n/a' ? new Date(v.replace(/^\w{3} /, '')) : null;
  return t && !Number.isNaN(t.getTime()) ? t.toISOString() : null;
}

export async function statusReport(configFile: string | undefined): Promise<StatusReport> {
  const running = readRunning();
  let next: string | null = timerNext();
  let source: StatusReport['nextRunSource'] = next ? 'timer' : null;
  const file = configFileOr(configFile);
  if (!next && file) {
    const schedule = (await import('../config/config.js')).loadConfig(file).operation.agent.schedule;
    const t = schedule ? nextRun(schedule, new Date()) : null;
    if (t) {
      next = t.toISOString();
      source = 'agent';
    }
  }
  const targets = readStatuses().map((s) => ({ ...s, running: running.find((r) => r.job === s.job && r.target === s.target) ?? null }));
  return { command: 'status', host: os.hostname(), generatedAt: new Date().toISOString(), nextRun: next, nextRunSource: source, targets, running, archives: readArchiveRecords() };
}

const when = (iso: string) => new Date(iso).toLocaleString('sv-SE');

export async function run(argv: string[], out: Output): Promise<number> {
  const { values } = parse('status', argv, { config: { type: 'string', short: 'c' } });
  const r = await statusReport(values.config);
  if (r.targets.length === 0 && r.running.length === 0) out.line('no backup has run on this server yet (nothing recorded in the state folder)');
  for (const t of r.targets) {
    const l = t.lastRun;
    out.line(`job ${t.job}, target ${t.target} (${t.store})`);
    out.line(`  last run      ${when(l.end)}: ${l.result}${l.result === 'failed' ? ` (exit ${l.exitCode})` : ''}, ${duration(l.durationMs)}${l.snapshot ? `, snapshot ${l.snapshot}` : ''}${l.bytesNew !== undefined ? `, ${bytes(l.bytesNew)} new` : ''}${l.errors ? `, ${count(l.errors)} unreadable` : ''}`);
    if (l.message) out.line(`                ${l.message}`);
    out.line(`  last success  ${t.lastSuccess ? `${when(t.lastSuccess.end)}${t.lastSuccess.snapshot ? ` (${t.lastSuccess.snapshot})` : ''}` : 'never'}`);
    if (l.storeFreeBytes !== undefined) out.line(`  store free    ${bytes(l.storeFreeBytes)}`);
  }
  for (const a of r.archives) {
    out.line(`archive ${a.archive} (${a.where})`);
    out.line(`  last push     ${when(a.end)}: ${a.result === 'pushed' ? `${a.snapshot} as ${a.kind === 'full' ? 'a full' : 'an increment'}${a.storedBytes !== undefined ? `, ${bytes(a.storedBytes)} stored` : ''}` : a.result === 'not-due' ? 'nothing due' : `failed: ${a.message ?? ''}`}`);
    out.line(`  last archived ${a.lastPushed ? `${a.lastPushed.snapshot} (${when(a.lastPushed.end)})` : 'never'}`);
  }
  for (const g of r.running) out.line(`running now: job ${g.job}, target ${g.target}, since ${when(g.started)} (PID ${g.pid}): ${g.progress.phase}, ${count(g.progress.entries)} entries, ${count(g.progress.copied)} copied (${bytes(g.progress.bytesCopied)}), ${count(g.progress.linked)} linked`);
  out.line(`next run: ${r.nextRun ? `${when(r.nextRun)} (${r.nextRunSource === 'timer' ? 'systemd timer' : 'agent schedule'})` : 'none scheduled (bakker install sets up a timer)'}`);
  out.summary({ ...r });
  return EXIT.OK;
}
