import { spawn, spawnSync } from 'node:child_process';
import { BakkerError } from '../../errors.js';
import type { Hook, HookPhase } from '../../config/job-config.js';
import type { Emit } from '../events.js';

/** Seconds between SIGTERM and SIGKILL for a hook past its timeout. */
const KILL_GRACE_MS = 5000;

export interface HookOutcome {
  ok: boolean;
  /** Why it failed (exit code, signal, timeout, cannot start). */
  why?: string;
}

function describe(h: Hook): string {
  const s = typeof h.run === 'string' ? h.run : h.run.join(' ');
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

function userIds(user: string): { uid: number; gid: number } {
  const uid = spawnSync('id', ['-u', user], { encoding: 'utf8' });
  const gid = spawnSync('id', ['-g', user], { encoding: 'utf8' });
  if (uid.status !== 0 || gid.status !== 0) throw new BakkerError('CONFIG', `hook user "${user}" does not exist here: fix the hook's user`);
  return { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
}

/**
 * Runs one hook to its end: in its own process group (so a timeout stops everything it started),
 * with BAKKER_* variables and its own env on top of bakker's, as its user, in its folder. Each
 * line it prints becomes an info event ("hook before[0]: ..."), for the journal.
 */
export function runHook(h: Hook, label: string, env: Record<string, string>, emit: Emit, signal?: AbortSignal): Promise<HookOutcome> {
  const argv = typeof h.run === 'string' ? ['/bin/sh', '-c', h.run] : h.run;
  let ids: { uid: number; gid: number } | undefined;
  try {
    ids = h.user ? userIds(h.user) : undefined;
  } catch (err) {
    return Promise.resolve({ ok: false, why: (err as Error).message });
  }
  return new Promise((resolve) => {
    const child = spawn(argv[0]!, argv.slice(1), {
      cwd: h.cwd ?? '/',
      env: { ...process.env, ...env, ...h.env },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
      ...(ids ? { uid: ids.uid, gid: ids.gid } : {}),
    });
    let timedOut = false;
    let killer: NodeJS.Timeout | undefined;
    const timer = setTimeout(() => {
      timedOut = true;
      emit({ event: 'warning', message: `hook ${label} (${describe(h)}) ran past its timeout of ${h.timeout} s: stopping it` });
      kill('SIGTERM');
      killer = setTimeout(() => kill('SIGKILL'), KILL_GRACE_MS);
    }, h.timeout * 1000);
    const kill = (sig: NodeJS.Signals) => {
      try {
        if (child.pid) process.kill(-child.pid, sig);
      } catch {
        // already gone
      }
    };
    const lines = (stream: NodeJS.ReadableStream) => {
      let rest = '';
      stream.setEncoding('utf8');
      stream.on('data', (d: string) => {
        const parts = (rest + d).split('\n');
        rest = parts.pop() ?? '';
        for (const l of parts) if (l.trim()) emit({ event: 'info', message: `hook ${label}: ${l}` });
      });
      stream.on('end', () => {
        if (rest.trim()) emit({ event: 'info', message: `hook ${label}: ${rest}` });
      });
    };
    let interrupted = false;
    const onAbort = () => {
      interrupted = true;
      kill('SIGTERM');
      killer ??= setTimeout(() => kill('SIGKILL'), KILL_GRACE_MS);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    lines(child.stdout!);
    lines(child.stderr!);
    let started = true;
    child.on('error', (err) => {
      started = false;
      clearTimeout(timer);
      resolve({ ok: false, why: `cannot start ${argv[0]}: ${(err as NodeJS.ErrnoException).code ?? err.message}` });
    });
    child.on('close', (code, sig) => {
      clearTimeout(timer);
      if (killer) clearTimeout(killer);
      // A stopped hook's group gets SIGKILL all the same: a member that ignored SIGTERM and closed
      // its output (or was being forked as the SIGTERM went out) would otherwise live on.
      if (timedOut || interrupted) kill('SIGKILL');
      signal?.removeEventListener('abort', onAbort);
      if (!started) return;
      if (timedOut) resolve({ ok: false, why: `timed out after ${h.timeout} s` });
      else if (interrupted) resolve({ ok: false, why: 'stopped: bakker was interrupted' });
      else if (code === 0) resolve({ ok: true });
      else resolve({ ok: false, why: sig ? `killed by ${sig}` : `exit code ${code}` });
    });
  });
}

/**
 * Runs a phase's hooks in order. An essential hook that fails stops the phase and returns its
 * failure (the caller fails the run, after cleanup); an optional one is a warning.
 */
export async function runPhase(phase: HookPhase, hooks: Hook[], env: Record<string, string>, emit: Emit, signal?: AbortSignal): Promise<string | null> {
  for (const [i, h] of hooks.entries()) {
    const label = `${phase}[${i}]`;
    if (signal?.aborted) return `hook ${label} not run: bakker was interrupted`;
    emit({ event: 'info', message: `hook ${label}: ${describe(h)}` });
    const r = await runHook(h, label, { ...env, BAKKER_PHASE: phase }, emit, signal);
    if (r.ok) continue;
    const msg = `hook ${label} (${describe(h)}) failed: ${r.why}`;
    if (h.mode === 'optional') emit({ event: 'warning', message: `${msg} (optional: the run goes on)` });
    else return msg;
  }
  return null;
}
