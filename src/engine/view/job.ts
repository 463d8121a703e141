import fs from 'node:fs';
import path from 'node:path';
import { BakkerError, errMessage } from '../../errors.js';
import type { HooksConfig, ViewConfig } from '../../config/job-config.js';
import type { SourceSpec } from '../../scan/walker.js';
import { stateDir } from '../../util/state-dir.js';
import type { Emit } from '../events.js';
import { runPhase } from './hooks.js';
import { makeView, type View } from './views.js';

export interface JobViewOptions {
  job: string;
  view?: ViewConfig;
  hooks: HooksConfig;
  /** The targets backed up from the view (BAKKER_TARGET). */
  targets: string[];
  emit: Emit;
  signal?: AbortSignal;
}

/** What the backups made from the view are told about it. */
export interface ViewContext {
  /** Where each source is read from (under the view's origin: from the view). */
  map(sources: string[]): SourceSpec[];
  /** Folders (recorded paths) to leave out: the view's own, when it lives under a source. */
  skip: string[];
  /** For the impl header: the view and the downtime. */
  header: Record<string, unknown>;
  downtimeMs: number | null;
  /**
   * Work for after the view is released (pruning: it must not hold a snapshot of the sources);
   * run right away when there is no view.
   */
  later(work: () => Promise<void>): Promise<void>;
}

const hasHooks = (h: HooksConfig) => h.before.length + h.after_snapshot.length + h.after.length + h.on_failure.length > 0;

/** One run of a job at a time (its snapshot has a fixed name): a PID file in the state dir. */
function lockJob(job: string): () => void {
  const dir = path.join(stateDir(), 'jobs');
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = path.join(dir, `${job}.pid`);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      fs.writeFileSync(file, `${process.pid}\n`, { flag: 'wx', mode: 0o600 });
      return () => fs.rmSync(file, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const pid = Number(fs.readFileSync(file, 'utf8').trim());
    let alive = false;
    try {
      process.kill(pid, 0);
      alive = pid > 0 && pid !== process.pid;
    } catch {
      alive = false;
    }
    if (alive) throw new BakkerError('LOCKED', `job ${job} is already running (PID ${pid}): wait for it, or remove ${file} if that run is surely gone`);
    fs.rmSync(file, { force: true });
  }
  throw new BakkerError('LOCKED', `could not take ${file}: another run keeps taking it`);
}

/** Where each source is read from: under the view's origin, from the view. */
function mapSources(sources: string[], view: View | null, at: string | null, emit: Emit): SourceSpec[] {
  return sources.map((s) => {
    if (!view || !at) return { path: s };
    const o = view.origin;
    if (s === o) return { path: s, readFrom: at };
    if (s.startsWith(o.endsWith('/') ? o : `${o}/`)) return { path: s, readFrom: path.join(at, s.slice(o.length)) };
    emit({ event: 'warning', message: `source ${s} is not under the view's origin ${o}: it is read live, not from the snapshot` });
    return { path: s };
  });
}

/**
 * Runs `body` (the backups that read the sources) inside the job's hooks and view (docs/VIEWS.md):
 * before hooks, snapshot, after_snapshot hooks (always, once the before hooks started, so a
 * service never stays in maintenance), mount, body, unmount and remove, then after hooks or
 * on_failure hooks. Cleanup runs on every way out; a snapshot or mount a crashed run left is
 * removed first. Without a view or hooks, `body` just runs.
 */
export async function withJobView<T>(o: JobViewOptions, body: (ctx: ViewContext) => Promise<T>): Promise<T> {
  if (!o.view && !hasHooks(o.hooks)) return body({ map: (s) => s.map((p) => ({ path: p })), skip: [], header: {}, downtimeMs: null, later: (w) => w() });
  const deferred: (() => Promise<void>)[] = [];
  const { emit } = o;
  const unlock = lockJob(o.job);
  const view = o.view ? makeView(o.view, o.job) : null;
  const env: Record<string, string> = { BAKKER_JOB: o.job, BAKKER_TARGET: o.targets.join(','), BAKKER_VIEW_PATH: '', BAKKER_SNAPSHOT: '' };
  let failure: unknown;
  let result: T | undefined;
  try {
    if (view?.leftOver()) {
      emit({ event: 'info', message: `a snapshot or mount of job ${o.job} was left by an earlier run: removing it first` });
      const left = view.release(emit);
      if (left) throw new BakkerError('VIEW', `cannot remove what an earlier run left (${left}): remove it by hand, then run again`);
    }
    const t0 = Date.now();
    const beforeFailed = await runPhase('before', o.hooks.before, env, emit, o.signal);
    let snapFailed: string | null = null;
    if (!beforeFailed && view) {
      try {
        await view.snapshot();
      } catch (err) {
        snapFailed = errMessage(err);
      }
    }
    // never cut short by a signal: this is what takes the services out of maintenance
    const afterSnapFailed = await runPhase('after_snapshot', o.hooks.after_snapshot, env, emit);
    const downtimeMs = Date.now() - t0;
    emit({ event: 'info', message: `downtime ${(downtimeMs / 1000).toFixed(1)} s (from the first before hook to the end of the after_snapshot hooks)` });
    if (beforeFailed) throw new BakkerError('HOOK', `${beforeFailed}: no snapshot was taken (the after_snapshot hooks ran)`);
    if (snapFailed) throw new BakkerError('VIEW', `${snapFailed} (the after_snapshot hooks ran)`);
    if (afterSnapFailed) throw new BakkerError('HOOK', afterSnapFailed);
    if (o.signal?.aborted) throw new BakkerError('IO', 'interrupted: no backup was made');
    const at = view ? await view.open() : null;
    env.BAKKER_VIEW_PATH = at ?? '';
    const header: Record<string, unknown> = { downtimeMs, ...(view ? { view: view.info } : {}) };
    result = await body({ map: (s) => mapSources(s, view, at, emit), skip: view?.skip ?? [], header, downtimeMs, later: async (w) => void deferred.push(w) });
    const snap = (result as { snapshot?: unknown } | undefined)?.snapshot;
    if (typeof snap === 'string') env.BAKKER_SNAPSHOT = snap;
  } catch (err) {
    failure = err;
  } finally {
    if (view) {
      const left = view.release(emit);
      if (left) {
        const e = new BakkerError('VIEW', `cleanup incomplete: ${left}; the next run removes it, or remove it by hand`);
        if (failure === undefined) failure = e;
        else emit({ event: 'warning', message: e.message });
      }
    }
    unlock();
  }
  if (failure !== undefined) {
    await runPhase('on_failure', o.hooks.on_failure, { ...env, BAKKER_STATUS: 'failed', BAKKER_ERROR: errMessage(failure) }, emit).then((f) => f && emit({ event: 'warning', message: f }));
    throw failure;
  }
  for (const w of deferred) await w();
  const afterFailed = await runPhase('after', o.hooks.after, { ...env, BAKKER_STATUS: 'ok' }, emit, o.signal);
  if (afterFailed) throw new BakkerError('HOOK', `${afterFailed} (the backup itself was made)`);
  return result as T;
}
