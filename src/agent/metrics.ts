import fs from 'node:fs';
import path from 'node:path';
import type { TargetStatus } from './status.js';

/**
 * The Prometheus textfile (node_exporter's textfile collector): every job and target's last run,
 * in the text exposition format 0.0.4, written whole and renamed into place so the collector never
 * reads half a file (docs/OPERATION.md, "Monitoring").
 */

const esc = (v: string) => v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');

const METRICS: [name: string, help: string, value: (s: TargetStatus) => number | undefined][] = [
  ['bakker_last_success_timestamp_seconds', 'When the last successful (or partial) run ended, Unix time.', (s) => (s.lastSuccess ? Date.parse(s.lastSuccess.end) / 1000 : undefined)],
  ['bakker_last_run_timestamp_seconds', 'When the last run ended, Unix time.', (s) => Date.parse(s.lastRun.end) / 1000],
  ['bakker_last_run_success', '1 when the last run succeeded (exit code 0 or 3), else 0.', (s) => (s.lastRun.result === 'failed' ? 0 : 1)],
  ['bakker_last_run_exit_code', 'Exit code of the last run.', (s) => s.lastRun.exitCode],
  ['bakker_last_run_duration_seconds', 'Duration of the last run.', (s) => s.lastRun.durationMs / 1000],
  ['bakker_last_run_bytes_new', 'Bytes copied (new content) by the last run.', (s) => s.lastRun.bytesNew],
  ['bakker_last_run_files', 'Files in the last snapshot.', (s) => s.lastRun.files],
  ['bakker_last_run_entries', 'Entries in the last snapshot.', (s) => s.lastRun.entries],
  ['bakker_last_run_errors', 'Source entries the last run could not read.', (s) => s.lastRun.errors ?? (s.lastRun.result === 'failed' ? undefined : 0)],
  ['bakker_store_free_bytes', 'Free bytes on the store after the last run.', (s) => s.lastRun.storeFreeBytes],
];

export function renderMetrics(statuses: TargetStatus[]): string {
  const lines: string[] = [];
  for (const [name, help, value] of METRICS) {
    const rows = statuses.map((s) => [s, value(s)] as const).filter(([, v]) => v !== undefined && Number.isFinite(v));
    if (rows.length === 0) continue;
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} gauge`);
    for (const [s, v] of rows) lines.push(`${name}{job="${esc(s.job)}",target="${esc(s.target)}"} ${v}`);
  }
  return lines.join('\n') + '\n';
}

export function writeTextfile(file: string, statuses: TargetStatus[]): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  fs.writeFileSync(tmp, renderMetrics(statuses), { mode: 0o644 });
  fs.renameSync(tmp, file);
}
