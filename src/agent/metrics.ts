import { errMessage } from '../errors.js';
import { writeFileAtomic } from '../util/atomic.js';
import { readArchiveRecords, readStatuses, type ArchiveRecord, type TargetStatus } from './status.js';

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

const ARCHIVE_METRICS: [name: string, help: string, value: (a: ArchiveRecord) => number | undefined][] = [
  ['bakker_archive_last_push_timestamp_seconds', 'When the archive last received a snapshot, Unix time.', (a) => (a.lastPushed ? Date.parse(a.lastPushed.end) / 1000 : undefined)],
  ['bakker_archive_last_run_success', '1 when the last archive push ran without error (pushed or nothing due), else 0.', (a) => (a.result === 'failed' ? 0 : 1)],
  ['bakker_archive_last_stored_bytes', 'Bytes the last pushed archive stored.', (a) => (a.result === 'pushed' ? a.storedBytes : undefined)],
];

/** One metric family: HELP, TYPE and a sample per item that has a value. */
function family<T>(lines: string[], [name, help, value]: [string, string, (x: T) => number | undefined], items: T[], labels: (x: T) => string): void {
  const rows = items.map((x) => [x, value(x)] as const).filter(([, v]) => v !== undefined && Number.isFinite(v));
  if (rows.length === 0) return;
  lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} gauge`);
  for (const [x, v] of rows) lines.push(`${name}{${labels(x)}} ${v}`);
}

export function renderMetrics(statuses: TargetStatus[], archives: ArchiveRecord[] = []): string {
  const lines: string[] = [];
  for (const m of METRICS) family(lines, m, statuses, (s) => `job="${esc(s.job)}",target="${esc(s.target)}"`);
  for (const m of ARCHIVE_METRICS) family(lines, m, archives, (a) => `archive="${esc(a.archive)}"`);
  return lines.join('\n') + '\n';
}

export function writeTextfile(file: string, statuses: TargetStatus[] = readStatuses(), archives: ArchiveRecord[] = readArchiveRecords()): void {
  writeFileAtomic(file, renderMetrics(statuses, archives));
}

/** The config's textfile, when it has one, rewritten from everything recorded; a failure is only a warning. */
export function refreshTextfile(textfile: string | undefined, warn: (message: string) => void): void {
  if (!textfile) return;
  try {
    writeTextfile(textfile);
  } catch (err) {
    warn(`cannot write the Prometheus textfile ${textfile}: ${errMessage(err)}`);
  }
}
