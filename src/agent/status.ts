import fs from 'node:fs';
import path from 'node:path';
import { stateDir } from '../util/state-dir.js';
import { writeFileAtomic } from '../util/atomic.js';

/**
 * What each backup run leaves for `bakker status`, the Prometheus textfile and notifications:
 * one JSON file per job and target in $BAKKER_STATE_DIR/status/ (docs/OPERATION.md), written
 * atomically at the end of every run, and a `running` file updated every few seconds while one
 * runs.
 */

export interface RunRecord {
  job: string;
  target: string;
  store: string;
  start: string;
  end: string;
  durationMs: number;
  result: 'ok' | 'partial' | 'failed';
  exitCode: number;
  message?: string;
  snapshot?: string;
  entries?: number;
  files?: number;
  bytesNew?: number;
  /** Source entries that could not be read (exit code 3). */
  errors?: number;
  storeFreeBytes?: number;
}

export interface TargetStatus {
  job: string;
  target: string;
  store: string;
  lastRun: RunRecord;
  lastSuccess?: { end: string; snapshot?: string; durationMs: number };
}

export interface Running {
  pid: number;
  job: string;
  target: string;
  started: string;
  updated: string;
  progress: { phase: string; entries: number; copied: number; linked: number; bytesCopied: number; current: string | null };
}

export const statusDir = () => path.join(stateDir(), 'status');
const safe = (s: string) => s.replace(/[^A-Za-z0-9._-]/g, '_');
const fileOf = (job: string, target: string) => path.join(statusDir(), `${safe(job)}--${safe(target)}.json`);
const runningFile = (job: string) => path.join(statusDir(), `${safe(job)}.running`);

function readJson<T>(file: string): T | null {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as T;
  } catch {
    return null;
  }
}

export function recordRun(rec: RunRecord): TargetStatus {
  const file = fileOf(rec.job, rec.target);
  const old = readJson<TargetStatus>(file);
  const status: TargetStatus = { job: rec.job, target: rec.target, store: rec.store, lastRun: rec };
  if (rec.result !== 'failed') status.lastSuccess = { end: rec.end, durationMs: rec.durationMs, ...(rec.snapshot ? { snapshot: rec.snapshot } : {}) };
  else if (old?.lastSuccess) status.lastSuccess = old.lastSuccess;
  writeFileAtomic(file, JSON.stringify(status, null, 1) + '\n');
  return status;
}

function statusNames(): string[] {
  try {
    return fs.readdirSync(statusDir());
  } catch {
    return [];
  }
}

export function readStatuses(): TargetStatus[] {
  return statusNames()
    .filter((n) => n.endsWith('.json') && !n.startsWith('archive--'))
    .sort()
    .map((n) => readJson<TargetStatus>(path.join(statusDir(), n)))
    .filter((s): s is TargetStatus => s !== null && typeof s.job === 'string' && !!s.lastRun);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Runs going on now (a file whose process is gone is ignored and removed). */
export function readRunning(): Running[] {
  const out: Running[] = [];
  for (const n of statusNames().filter((x) => x.endsWith('.running'))) {
    const r = readJson<Running>(path.join(statusDir(), n));
    if (r && alive(r.pid)) out.push(r);
    else fs.rmSync(path.join(statusDir(), n), { force: true });
  }
  return out;
}

export function writeRunning(r: Running): void {
  writeFileAtomic(runningFile(r.job), JSON.stringify(r) + '\n');
}

export function clearRunning(job: string): void {
  try {
    fs.rmSync(runningFile(job), { force: true });
  } catch {
    // best effort, as writing it was
  }
}

/** Keeps the job's `running` file current (every 2 s) from a run's live counters; returns the stop. */
export function trackRunning(job: string, target: string, p: { phase: string; entries: number; copied: number; linked: number; bytesCopied: number; current: Buffer | null }): () => void {
  const started = new Date().toISOString();
  const write = () => {
    try {
      writeRunning({ pid: process.pid, job, target, started, updated: new Date().toISOString(), progress: { phase: p.phase, entries: p.entries, copied: p.copied, linked: p.linked, bytesCopied: p.bytesCopied, current: p.current ? p.current.toString('utf8') : null } });
    } catch {
      // status is best effort: a read-only state dir never stops a backup
    }
  };
  write();
  const timer = setInterval(write, 2000);
  timer.unref();
  return () => {
    clearInterval(timer);
    clearRunning(job);
  };
}

/** The last push of an archive (docs/ARCHIVES.md), for status and the textfile. */
export interface ArchiveRecord {
  archive: string;
  where: string;
  end: string;
  result: 'pushed' | 'not-due' | 'failed';
  message?: string;
  snapshot?: string;
  kind?: 'full' | 'incremental';
  storedBytes?: number;
  durationMs?: number;
  /** The last push that uploaded an archive. */
  lastPushed?: { end: string; snapshot: string };
}

const archiveFile = (name: string) => path.join(statusDir(), `archive--${safe(name)}.json`);

export function recordArchive(rec: ArchiveRecord): ArchiveRecord {
  const old = readJson<ArchiveRecord>(archiveFile(rec.archive));
  const out: ArchiveRecord = { ...rec };
  if (rec.result === 'pushed' && rec.snapshot) out.lastPushed = { end: rec.end, snapshot: rec.snapshot };
  else if (old?.lastPushed) out.lastPushed = old.lastPushed;
  try {
    writeFileAtomic(archiveFile(rec.archive), JSON.stringify(out, null, 1) + '\n');
  } catch {
    // best effort, as for runs
  }
  return out;
}

export function readArchiveRecords(): ArchiveRecord[] {
  return statusNames()
    .filter((n) => n.startsWith('archive--') && n.endsWith('.json'))
    .sort()
    .map((n) => readJson<ArchiveRecord>(path.join(statusDir(), n)))
    .filter((r): r is ArchiveRecord => r !== null && typeof r.archive === 'string');
}
