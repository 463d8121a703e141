import { spawn } from 'node:child_process';
import os from 'node:os';
import { errMessage } from '../errors.js';
import type { RunRecord } from './status.js';

/** `notify:` of the config (docs/OPERATION.md, "Notifications"). */
export interface NotifyConfig {
  /** failure: only failed runs (the default); always: every run. */
  on: 'failure' | 'always';
  /** Run with `sh -c`; the JSON payload on stdin, BAKKER_RESULT/JOB/HOST/MESSAGE in the environment. */
  command?: string;
  /** POSTed the JSON payload. */
  webhook?: string;
  /** Sent a plain-text mail through the local sendmail. */
  mail?: string;
  sendmail?: string;
}

export interface RunReport {
  event: 'bakker.run';
  result: 'ok' | 'partial' | 'failed';
  host: string;
  job: string;
  start: string;
  end: string;
  message: string;
  targets: RunRecord[];
}

export function makeReport(job: string, start: Date, records: RunRecord[], failure?: string): RunReport {
  const result = failure || records.some((r) => r.result === 'failed') ? 'failed' : records.some((r) => r.result === 'partial') ? 'partial' : 'ok';
  const lines = records.map((r) => `${r.target}: ${r.result}${r.snapshot ? ` (${r.snapshot})` : ''}${r.message ? `: ${r.message}` : ''}`);
  if (failure) lines.push(failure);
  return { event: 'bakker.run', result, host: os.hostname(), job, start: start.toISOString(), end: new Date().toISOString(), message: lines.join('\n'), targets: records };
}

function run(cmd: string, args: string[], input: string, env: NodeJS.ProcessEnv, timeoutMs: number): Promise<string | null> {
  return new Promise((resolve) => {
    let err = '';
    const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['pipe', 'ignore', 'pipe'] });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.stderr.on('data', (c: Buffer) => (err = (err + c.toString()).slice(-500)));
    child.on('error', (e) => {
      clearTimeout(timer);
      resolve(errMessage(e));
    });
    child.on('close', (code, sig) => {
      clearTimeout(timer);
      resolve(code === 0 ? null : `${sig ? `killed (${sig})` : `exit code ${code}`}${err.trim() ? `: ${err.trim().split('\n').pop()}` : ''}`);
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(input);
  });
}

/** Sends the report where the config says; returns what failed (as warnings: a notification never fails a run). */
export async function notify(cfg: NotifyConfig, report: RunReport): Promise<string[]> {
  if (cfg.on === 'failure' && report.result !== 'failed') return [];
  const json = JSON.stringify(report);
  const problems: string[] = [];
  if (cfg.command) {
    const p = await run('sh', ['-c', cfg.command], json + '\n', { BAKKER_RESULT: report.result, BAKKER_JOB: report.job, BAKKER_HOST: report.host, BAKKER_MESSAGE: report.message }, 60_000);
    if (p) problems.push(`notify command failed: ${p}`);
  }
  if (cfg.webhook) {
    try {
      const r = await fetch(cfg.webhook, { method: 'POST', headers: { 'content-type': 'application/json', 'user-agent': 'bakker' }, body: json, signal: AbortSignal.timeout(15_000) });
      if (!r.ok) problems.push(`notify webhook ${cfg.webhook}: HTTP ${r.status}`);
    } catch (err) {
      problems.push(`notify webhook ${cfg.webhook}: ${errMessage((err as { cause?: unknown }).cause ?? err)}`);
    }
  }
  if (cfg.mail) {
    const subject = `bakker ${report.result === 'failed' ? 'FAILED' : report.result} on ${report.host} (job ${report.job})`;
    const mail = `To: ${cfg.mail}\nSubject: ${subject}\nContent-Type: text/plain; charset=utf-8\n\n${report.message}\n\nstart ${report.start}, end ${report.end}\n`;
    const p = await run(cfg.sendmail ?? '/usr/sbin/sendmail', ['-t', '-oi'], mail, {}, 60_000);
    if (p) problems.push(`notify mail to ${cfg.mail}: ${p}`);
  }
  return problems;
}
