import fs from 'node:fs';
import path from 'node:path';
import type { Config, TargetConfig } from '../config/config.js';
import { newProgress } from '../engine/events.js';
import { runBackup } from '../engine/backup/backup.js';
import { BakkerError, errMessage, usageError } from '../errors.js';
import { createMatcher, parseExcludeFile, PatternError } from '../scan/exclude.js';
import { openStore, parseCompression, type EncryptionOptions, type SshOptions } from '../store/open.js';
import type { Store } from '../store/store.js';
import { loadStoreConfig, loadUrlConfig } from '../config/store-config.js';
import { HASH_ALGOS, type HashAlgo } from '../util/hash.js';
import { bytes, count, duration } from '../ui/format.js';
import type { Output } from '../ui/output.js';
import { cryptOptions, parse, sshOptions } from './args.js';
import { EXIT, exitCodeOf } from './exit-codes.js';
import { listStore } from '../engine/layout.js';
import type { SnapshotSummary } from '../engine/summary.js';
import { withJobView, type ViewContext } from '../engine/view/job.js';
import { isEmpty } from '../engine/retention/policy.js';
import { prune } from '../engine/retention/prune.js';
import { makeRoom } from '../engine/retention/on-full.js';
import type { HooksConfig, ViewConfig } from '../config/job-config.js';
import type { RunRecord } from '../agent/status.js';
import { configFileOr } from '../config/default-file.js';
import { stateDir as stateDirOf } from '../util/state-dir.js';

export const help = `Usage: bakker backup [SOURCE...] --store DIR [options]
       bakker backup -c CONFIG [--target NAME] [options]

Makes a snapshot: a full tree where unchanged files are hard links to the previous
snapshot's copies and changed or new files are new copies, with its impl manifest
and its diff folder. The first run on a store copies everything.

Options:
  -s, --store DIR          the store: a local folder, or sftp://user@host[:port]/path
                           (created when missing)
  -i, --identity FILE      sftp://: the SSH private key (default ~/.ssh/id_ed25519)
      --known-hosts FILE   sftp://: where the server's host key is (default
                           ~/.ssh/known_hosts and /etc/ssh/ssh_known_hosts)
      --host-key SHA256:.. sftp://: accept this pinned host key fingerprint
      --recipient age1... encrypt for this age recipient (repeatable; a new store
                           becomes an encrypted one; see docs/ENCRYPTION.md)
      --key FILE           the age identity of an encrypted store (only needed when
                           this server has lost its copy of the store's key)
      --compress zstd[:N]  zstd (level N, default 3) for files that shrink by 1/16
                           or more (before encryption on an encrypted store); none: off
      --reconnect-for SECS sftp://: retry a dropped connection this long, then
                           resume where the run was (default 300; 0: fail at once)
  -c, --config FILE        read sources, excludes and targets from a YAML config
  -t, --target NAME        with -c: back up to this target only (default: all)
  -e, --exclude PATTERN    leave out matching paths (repeatable; see docs/EXCLUDES.md)
      --exclude-from FILE  read patterns from FILE, one per line, # comments
  -x, --one-file-system    do not descend into other filesystems
      --checksum ALGO      record md5, sha256 or blake3 of each new file (off by default)
  -n, --dry-run            show what would be copied; write nothing
      --no-space-check     start even when the store lacks room for the snapshot's
                           folders and impl (by default such a run is refused at once)
      --json               JSON lines: events, then a summary object
      --debug              show stack traces on errors

Exit codes: 0 ok, 1 failed, 2 usage or config error, 3 done but some entries unreadable.

Examples:
  bakker backup /data /etc --store /backups/server1
  bakker backup /srv --store /backups/server1 --exclude '*.tmp' --exclude /srv/cache/
  bakker backup -c /etc/bakker/bakker.yaml
  bakker backup /data --store /backups/server1 --dry-run`;

const OPTIONS = {
  store: { type: 'string', short: 's' },
  config: { type: 'string', short: 'c' },
  target: { type: 'string', short: 't' },
  exclude: { type: 'string', short: 'e', multiple: true },
  'exclude-from': { type: 'string', multiple: true },
  'one-file-system': { type: 'boolean', short: 'x' },
  checksum: { type: 'string' },
  'dry-run': { type: 'boolean', short: 'n' },
  'no-space-check': { type: 'boolean' },
  job: { type: 'string' },
  compress: { type: 'string' },
} as const;

interface Plan {
  /** The config file's settings, when one is used (its archives run after the backup). */
  config?: Config;
  sources: string[];
  stores: Pick<TargetConfig, 'name' | 'store' | 'identity' | 'knownHosts' | 'hostKey' | 'reconnectFor' | 'from' | 'retention' | 'onFull' | 'encryption' | 'compression'>[];
  /** Every target of the config (a target fed from another needs that one's store). */
  all: TargetConfig[];
  exclude: string[];
  oneFileSystem: boolean;
  checksum: HashAlgo | undefined;
  job: string | undefined;
  dryRun: boolean;
  noSpaceCheck: boolean;
  ssh: SshOptions;
  /** --recipient and --key. */
  enc: EncryptionOptions;
  /** --compress. */
  compression?: number;
  /** With config_url: whether the URL's config was applied (none, applied, cached, ignored) and why not. */
  urlConfig?: { state: string; note?: string };
  /** What planning has to say (shown once the run starts). */
  notes: { event: 'info' | 'warning'; message: string }[];
  view?: ViewConfig;
  hooks: HooksConfig;
}

function readExcludeFile(file: string): string[] {
  try {
    return parseExcludeFile(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw usageError(`cannot read exclude file ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}: check --exclude-from`);
  }
}

export async function planBackup(argv: string[], seen: { config?: Config; target?: string } = {}): Promise<Plan> {
  const { values: v, positionals } = parse('backup', argv, OPTIONS, true);
  let config: Config | undefined;
  const configFile = v.config ?? (!v.store && positionals.length === 0 ? configFileOr(undefined) : undefined);
  // yaml is loaded only when a config file is used: it costs ~9 MB of memory.
  if (configFile) config = (await import('../config/config.js')).loadConfig(configFile);
  // (for a run that fails while planning: its config's targets are recorded as failed)
  if (config && !v['dry-run']) Object.assign(seen, { config, ...(v.target ? { target: v.target } : {}) });
  const sources = positionals.length > 0 ? positionals.map((p) => path.resolve(p)) : (config?.sources ?? []);
  if (sources.length === 0) throw usageError(`bakker backup: no sources: name folders to back up, or give -c CONFIG: see 'bakker backup --help'`);
  let stores: Plan['stores'];
  if (v.store) stores = [{ name: 'store', store: v.store }];
  else if (config) {
    stores = config.targets.filter((t) => !v.target || t.name === v.target);
    if (stores.length === 0) throw usageError(`bakker backup: no target "${v.target}" in ${config.file} (targets: ${config.targets.map((t) => t.name).join(', ')})`);
  } else throw usageError(`bakker backup: --store is required (or -c CONFIG): for example --store /backups/$(hostname)`);
  if (v.target && !config) throw usageError('bakker backup: --target needs -c CONFIG');
  const exclude = [...(config?.exclude ?? []), ...(v.exclude ?? [])];
  for (const f of [...(config?.excludeFrom ?? []), ...(v['exclude-from'] ?? [])]) exclude.push(...readExcludeFile(f));
  let checksum = config?.checksum;
  if (v.checksum !== undefined) {
    if (v.checksum === 'none') checksum = undefined;
    else if (!(HASH_ALGOS as readonly string[]).includes(v.checksum)) throw usageError(`bakker backup: --checksum must be one of ${HASH_ALGOS.join(', ')}, none (got "${v.checksum}")`);
    else checksum = v.checksum as HashAlgo;
  }
  let compression: number | undefined;
  if (v.compress !== undefined) {
    const level = parseCompression(v.compress);
    if (level === null) throw usageError(`bakker backup: --compress ${v.compress}: expected zstd, zstd:LEVEL (1-19) or none`);
    compression = level;
  }
  const plan: Plan = { ...(config ? { config } : {}), sources, stores, all: config?.targets ?? [], exclude, oneFileSystem: v['one-file-system'] ?? config?.oneFileSystem ?? false, checksum, job: v.job ?? config?.job, dryRun: v['dry-run'] === true, noSpaceCheck: v['no-space-check'] === true, ssh: sshOptions(v), enc: cryptOptions(v), ...(compression !== undefined ? { compression } : {}), notes: [], hooks: config?.hooks ?? { before: [], after_snapshot: [], after: [], on_failure: [] }, ...(config?.view ? { view: config.view } : {}) };
  if (config?.configUrl) {
    // A controlling service's config replaces what to back up (docs/CONFIG.md, "Config from a URL").
    const sc = await loadUrlConfig(config.configUrl, config.configUrlCa);
    plan.urlConfig = { state: sc.state, ...(sc.state === 'cached' || sc.state === 'ignored' ? { note: sc.why } : {}) };
    if (sc.state === 'ignored') plan.notes.push({ event: 'warning', message: `config from ${config.configUrl} not used: ${sc.why}` });
    if (sc.state === 'cached') plan.notes.push({ event: 'warning', message: `config from ${config.configUrl} not usable: ${sc.why}` });
    if (sc.state === 'applied' || sc.state === 'cached') {
      const c = sc.config;
      if (c.sources) plan.sources = c.sources;
      if (c.exclude) plan.exclude = c.exclude;
      if (c.oneFileSystem !== undefined) plan.oneFileSystem = c.oneFileSystem;
      if (c.checksum !== undefined) plan.checksum = c.checksum ?? undefined;
      plan.notes.push({ event: 'info', message: `using the ${sc.state === 'cached' ? 'cached copy of the ' : ''}config from ${config.configUrl}: sources ${plan.sources.join(' ')}` });
    }
  }
  // Targets fed from another target's snapshots do not read the sources.
  for (const s of plan.stores.some((t) => !t.from) ? plan.sources : []) {
    try {
      fs.lstatSync(s);
    } catch (err) {
      throw usageError(`bakker backup: source ${s} cannot be read (${(err as NodeJS.ErrnoException).code}): check the path${plan.urlConfig?.state === 'applied' || plan.urlConfig?.state === 'cached' ? ` (it comes from ${config!.configUrl})` : ''}`);
    }
  }
  return plan;
}

function matcherOf(exclude: string[]) {
  try {
    return exclude.length ? createMatcher(exclude) : undefined;
  } catch (err) {
    if (err instanceof PatternError) throw usageError(`bakker backup: ${err.message}`);
    throw err;
  }
}

/** The store's own config (.bakker/config.yaml), when it has one, replaces what to back up for that target. */
async function withStoreConfig(store: Store, plan: Plan, out: Output): Promise<{ plan: Plan; storeConfig: string; note?: string }> {
  const sc = await loadStoreConfig(store);
  if (sc.state === 'none') return { plan, storeConfig: 'none' };
  if (sc.state === 'ignored') {
    out.emit({ event: 'warning', message: `config on the store not used: ${sc.why}` });
    return { plan, storeConfig: 'ignored', note: sc.why };
  }
  if (sc.state === 'cached') out.emit({ event: 'warning', message: `config on the store not usable: ${sc.why}` });
  const c = sc.config;
  const next: Plan = {
    ...plan,
    sources: c.sources ?? plan.sources,
    exclude: c.exclude ?? plan.exclude,
    oneFileSystem: c.oneFileSystem ?? plan.oneFileSystem,
    checksum: c.checksum === undefined ? plan.checksum : (c.checksum ?? undefined),
  };
  out.emit({ event: 'info', message: `using the ${sc.state === 'cached' ? 'cached copy of the ' : ''}config on the store: sources ${next.sources.join(' ')}${next.exclude.length ? `, ${next.exclude.length} exclude pattern(s)` : ''}` });
  return { plan: next, storeConfig: sc.state, ...(sc.state === 'cached' ? { note: sc.why } : {}) };
}

type Target = Plan['stores'][number];

/** What one run records per target (for status, the textfile, notifications). */
interface RunLog {
  job: string;
  records: RunRecord[];
  info: Map<string, { store: string; summary?: SnapshotSummary; freeBytes?: number }>;
}

export async function run(argv: string[], out: Output, signal: AbortSignal): Promise<number> {
  const started = new Date();
  let plan0: Plan;
  const seen: { config?: Config; target?: string } = {};
  try {
    plan0 = await planBackup(argv, seen);
  } catch (err) {
    if (seen.config) await failedEarly(seen.config, seen.target, started, err, out);
    throw err;
  }
  matcherOf(plan0.exclude); // bad patterns are a usage error before any connection
  for (const n of plan0.notes) out.emit(n);
  const log: RunLog = { job: plan0.job ?? 'default', records: [], info: new Map() };
  let error: unknown;
  try {
    return await runPlan(plan0, out, signal, log);
  } catch (err) {
    error = err;
    throw err;
  } finally {
    if (!plan0.dryRun) await afterRun(plan0, log, started, error, out);
  }
}

/**
 * A run that failed before it started (a source gone, a bad exclude file) once its config was
 * read: its targets are recorded as failed and the textfile and notifications say so.
 */
async function failedEarly(config: Config, target: string | undefined, started: Date, err: unknown, out: Output): Promise<void> {
  const stores = config.targets.filter((x) => !target || x.name === target);
  await afterRun({ config, stores } as Plan, { job: config.job ?? 'default', records: [], info: new Map() }, started, err, out);
}

/**
 * After a run: every target without a record (the hooks or the view failed first) gets a failed
 * one; then the Prometheus textfile and the notifications (docs/OPERATION.md). Never fails the run.
 */
async function afterRun(plan: Plan, log: RunLog, started: Date, error: unknown, out: Output): Promise<void> {
  const { recordRun } = await import('../agent/status.js');
  const message = error === undefined ? undefined : error instanceof BakkerError ? error.message : errMessage(error);
  for (const t of plan.stores) {
    if (log.records.some((r) => r.target === t.name)) continue;
    if (error === undefined) continue;
    const now = new Date().toISOString();
    const rec: RunRecord = { job: log.job, target: t.name, store: t.store, start: started.toISOString(), end: now, durationMs: Date.now() - started.getTime(), result: 'failed', exitCode: exitCodeOf(error), ...(message ? { message } : {}) };
    try {
      recordRun(rec);
    } catch {
      // warned for already, or the state dir is not writable: the run's outcome stands
    }
    log.records.push(rec);
  }
  const op = plan.config?.operation;
  if (op?.monitoring) (await import('../agent/metrics.js')).refreshTextfile(op.monitoring.textfile, (message) => out.emit({ event: 'warning', message }));
  if (op?.notify) {
    const { makeReport, notify } = await import('../agent/notify.js');
    for (const p of await notify(op.notify, makeReport(log.job, started, log.records, log.records.length === 0 ? message : undefined))) out.emit({ event: 'warning', message: p });
  }
}

async function runPlan(plan0: Plan, out: Output, signal: AbortSignal, log: RunLog): Promise<number> {
  // Targets read from the sources first (inside the job's hooks and view, which is released as
  // soon as they are done); then those fed from a local target's newest snapshot.
  const direct = plan0.stores.filter((t) => !t.from);
  const copies = plan0.stores.filter((t) => t.from);
  const several = plan0.stores.length > 1;
  let code: number = EXIT.OK;
  let failure: unknown;
  const succeeded: string[] = [];
  const failed = (target: Target, err: unknown) => {
    failure ??= err;
    const message = err instanceof BakkerError ? err.message : errMessage(err);
    out.emit({ event: 'error', target: target.name, code: err instanceof BakkerError ? err.code : 'INTERNAL', message, exitCode: exitCodeOf(err) });
  };
  const record = async (target: Target, t0: Date, exitCode: number, err?: unknown) => {
    if (plan0.dryRun) return;
    const { recordRun } = await import('../agent/status.js');
    const i = log.info.get(target.name);
    const s = i?.summary;
    const rec: RunRecord = {
      job: log.job,
      target: target.name,
      store: i?.store ?? target.store,
      start: t0.toISOString(),
      end: new Date().toISOString(),
      durationMs: Date.now() - t0.getTime(),
      result: err !== undefined ? 'failed' : exitCode === EXIT.PARTIAL ? 'partial' : 'ok',
      exitCode,
      ...(err !== undefined ? { message: err instanceof BakkerError ? err.message : errMessage(err) } : {}),
      ...(s ? { snapshot: s.snapshot, entries: s.entries, files: s.files ?? undefined, bytesNew: s.bytesCopied, errors: s.unreadable } : {}),
      ...(i?.freeBytes !== undefined ? { storeFreeBytes: i.freeBytes } : {}),
    };
    try {
      recordRun(rec);
    } catch (e) {
      out.emit({ event: 'warning', message: `cannot record the run's status in ${stateDirOf()}: ${errMessage(e)}` });
    }
    log.records.push(rec);
  };
  const each = async (targets: Target[], one: (t: Target) => Promise<number>) => {
    for (const target of targets) {
      const t0 = new Date();
      try {
        const c = await one(target);
        await record(target, t0, c);
        if (c !== EXIT.OK && code === EXIT.OK) code = c;
        if (c === EXIT.OK || c === EXIT.PARTIAL) succeeded.push(target.name);
      } catch (err) {
        await record(target, t0, exitCodeOf(err), err);
        if (!several) throw err;
        failed(target, err); // one target failing does not stop the others; the run still fails
      }
    }
  };
  if (direct.length > 0) {
    const job = plan0.job ?? 'default';
    try {
      await withJobView({ job, ...(plan0.view && !plan0.dryRun ? { view: plan0.view } : {}), hooks: plan0.dryRun ? NO_HOOKS : plan0.hooks, targets: direct.map((t) => t.name), emit: out.emit, signal }, async (ctx) => {
        const snapshots: string[] = [];
        await each(direct, async (t) => {
          const r = await backupTarget(t, plan0, out, signal, ctx, log);
          if (r.snapshot) snapshots.push(r.snapshot);
          return r.code;
        });
        if (failure !== undefined) throw failure; // the on_failure hooks run
        return { snapshot: snapshots[snapshots.length - 1] };
      });
    } catch (err) {
      if (failure === undefined && !several) throw err;
      if (failure === undefined) failed({ name: `job ${job}`, store: '' }, err);
      else if (err !== failure) out.emit({ event: 'warning', message: errMessage(err) });
    }
  }
  await each(copies, (t) => copyTarget(t, plan0, out, signal, log));
  // The archive tier: after the snapshots it is fed from, when one is due (docs/ARCHIVES.md).
  if (plan0.config?.archives.length && !plan0.dryRun && succeeded.length) {
    const { pushAfterBackup } = await import('./archive.js');
    if (!(await pushAfterBackup(plan0.config, succeeded, out, signal)) && code === EXIT.OK) code = EXIT.FAILED;
  }
  if (failure !== undefined) {
    if (!several) throw failure;
    return exitCodeOf(failure);
  }
  return code;
}

/** The store's free space after a run, for status and the textfile (none when it cannot be told). */
async function freeOf(store: Store): Promise<{ freeBytes?: number }> {
  try {
    return { freeBytes: (await store.statvfs()).freeBytes };
  } catch {
    return {};
  }
}

const NO_HOOKS: HooksConfig = { before: [], after_snapshot: [], after: [], on_failure: [] };

/** A target's encryption: the command line's --recipient and --key win over its config. */
function encFor(target: Target, plan: Plan): EncryptionOptions {
  const recipients = plan.enc.recipients ?? target.encryption?.recipients;
  const identity = plan.enc.identity ?? target.encryption?.identity;
  const compression = plan.compression ?? target.compression;
  return { ...(recipients ? { recipients } : {}), ...(identity ? { identity } : {}), ...(compression ? { compression } : {}) };
}

function sshFor(target: Target, plan: Plan, out: Output): SshOptions {
  return { ...plan.ssh, identity: plan.ssh.identity ?? target.identity, knownHosts: plan.ssh.knownHosts ?? target.knownHosts, fingerprint: plan.ssh.fingerprint ?? target.hostKey, reconnectFor: plan.ssh.reconnectFor ?? target.reconnectFor, log: (message: string) => out.emit({ event: 'info', message }) };
}

/**
 * A target with a retention policy is pruned right after its snapshot is published (never
 * before: deleting must not delay a backup). A failed prune is a warning: the backup stands.
 */
async function pruneAfter(target: Target, store: Store, out: Output): Promise<void> {
  if (!target.retention || isEmpty(target.retention)) return;
  try {
    const r = await prune(store, target.retention, { emit: out.emit });
    out.summary({ command: 'prune', target: target.name, store: store.url, dryRun: false, snapshots: r.decisions.length, kept: r.decisions.length - r.removed.length, removed: r.removed, merged: r.merged });
    if (r.removed.length) out.line(`  pruned ${r.removed.length} snapshot(s) by the retention policy: ${r.removed.join(', ')}`);
  } catch (err) {
    out.emit({ event: 'warning', message: `target ${target.name}: pruning after the backup failed (${errMessage(err)}); the new snapshot is published; run bakker prune again` });
  }
}

function report(out: Output, s: SnapshotSummary, url: string): void {
  out.line(`snapshot ${s.snapshot} on ${url}${s.previous ? ` (previous ${s.previous})` : ' (first, full)'}`);
  out.line(`  ${count(s.entries)} entries: ${count(s.added)} new, ${count(s.changed)} changed, ${count(s.unchanged)} unchanged, ${count(s.removed)} removed`);
  out.line(`  copied ${count(s.copied)} files (${bytes(s.bytesCopied)}), linked ${count(s.linked)} (${bytes(s.bytesLinked)}), in ${duration(s.durationMs)}`);
  if (s.unreadable) out.line(`  ${count(s.unreadable)} entries could not be read (see warnings): exit code 3`);
}

/**
 * A target fed from a local target (docs/CONFIG.md, "Several targets"): the newest snapshot
 * there is copied, sending only what the store's newest snapshot lacks. The sources are not
 * read again; a store that missed runs catches up in one go.
 */
async function copyTarget(target: Target, plan: Plan, out: Output, signal: AbortSignal, log: RunLog): Promise<number> {
  const fromTarget = plan.all.find((t) => t.name === target.from)!;
  const local = await openStore(fromTarget.store, { encryption: fromTarget.encryption ?? {} });
  try {
    const { complete } = await listStore(local);
    const newest = complete[complete.length - 1];
    if (!newest) throw new BakkerError('STORE', `target ${target.name} is fed from target ${fromTarget.name}, which has no snapshot yet: run bakker backup for ${fromTarget.name} first`);
    if (plan.dryRun) {
      out.line(`dry run: target ${target.name} would get a copy of ${newest} from ${local.url}`);
      out.summary({ command: 'backup', target: target.name, store: target.store, dryRun: true, from: { target: fromTarget.name, snapshot: newest } });
      return EXIT.OK;
    }
    const store = await openStore(target.store, { create: true, ssh: sshFor(target, plan, out), encryption: encFor(target, plan) });
    const progress = newProgress();
    try {
      const sc = await loadStoreConfig(store);
      if (sc.state === 'applied' || sc.state === 'cached') {
        out.emit({ event: 'warning', message: `the config on ${store.url} is not applied: target ${target.name} gets copies of ${fromTarget.name}'s snapshots; give it "from: source" to back up the sources to it directly` });
      }
      out.startProgress(progress, 'backup');
      const r = await runBackup({ store, sources: [], from: { store: local, snapshot: newest }, noSpaceCheck: plan.noSpaceCheck, emit: out.emit, progress, signal });
      out.stopProgress();
      const s = r.summary;
      log.info.set(target.name, { store: store.url, summary: s, ...(await freeOf(store)) });
      out.summary({ command: 'backup', target: target.name, store: store.url, dryRun: false, from: { target: fromTarget.name, store: local.url, snapshot: newest }, ...(r.upToDate ? { upToDate: r.upToDate } : {}), ...s });
      if (r.upToDate) out.line(`target ${target.name}: nothing to copy: ${r.upToDate}`);
      else {
        report(out, s, store.url);
        out.line(`  (a copy of ${newest} on ${local.url})`);
        await pruneAfter(target, store, out);
      }
      return s.unreadable > 0 ? EXIT.PARTIAL : EXIT.OK;
    } finally {
      out.stopProgress();
      await store.close();
    }
  } finally {
    await local.close();
  }
}

async function backupTarget(target: Target, plan0: Plan, out: Output, signal: AbortSignal, view: ViewContext, log: RunLog): Promise<{ code: number; snapshot: string | null }> {
  const store = await openStore(target.store, { ...(plan0.dryRun ? { mayBeMissing: true } : { create: true }), ssh: sshFor(target, plan0, out), encryption: encFor(target, plan0) });
  const progress = newProgress();
  let stopTracking = () => undefined as void;
  try {
    const { plan, storeConfig, note } = await withStoreConfig(store, plan0, out);
    const matcher = matcherOf(plan.exclude);
    if (plan.sources !== plan0.sources) {
      for (const s of plan.sources) {
        if (!fs.existsSync(s)) throw usageError(`bakker backup: source ${s} (from the config on the store) does not exist here: fix .bakker/config.yaml on ${store.url}`);
      }
    }
    const room = target.onFull === 'prune' && !plan.dryRun ? async (force: boolean) => makeRoom(store, target.retention!, out.emit, force) : null;
    await room?.(false);
    out.startProgress(progress, 'backup');
    if (!plan0.dryRun) stopTracking = (await import('../agent/status.js')).trackRunning(log.job, target.name, progress);
    const once = () => runBackup({
      store,
      sources: view.map(plan.sources),
      skip: view.skip,
      headerExtra: view.header,
      exclude: matcher,
      oneFileSystem: plan.oneFileSystem,
      checksum: plan.checksum,
      dryRun: plan.dryRun,
      noSpaceCheck: plan.noSpaceCheck,
      job: plan.job,
      emit: out.emit,
      progress,
      signal,
    });
    let r: Awaited<ReturnType<typeof once>>;
    try {
      r = await once();
    } catch (err) {
      // Short of space though the estimate said it would fit: make room by the policy, once more.
      if (!room || !(err instanceof BakkerError && err.code === 'FULL')) throw err;
      out.stopProgress();
      if ((await room(true)).length === 0) throw err;
      out.startProgress(progress, 'backup');
      r = await once();
    }
    out.stopProgress();
    const s = r.summary;
    if (!r.dryRun) log.info.set(target.name, { store: store.url, summary: s, ...(await freeOf(store)) });
    const url = plan0.urlConfig ? { urlConfig: plan0.urlConfig.state, ...(plan0.urlConfig.note ? { urlConfigNote: plan0.urlConfig.note } : {}) } : {};
    out.summary({ command: 'backup', target: target.name, store: store.url, dryRun: r.dryRun, ...url, storeConfig, ...(note ? { storeConfigNote: note } : {}), ...(view.downtimeMs !== null ? { downtimeMs: view.downtimeMs } : {}), ...s });
    if (r.dryRun) {
      out.line(`dry run: snapshot ${s.snapshot} would copy ${count(s.added + s.changed)} files (${bytes(s.bytesCopied)}), link ${count(s.unchanged)}; ${count(s.removed)} entries gone since ${s.previous ?? 'nothing'}`);
    } else {
      report(out, s, store.url);
      if (view.downtimeMs !== null) out.line(`  downtime ${(view.downtimeMs / 1000).toFixed(1)} s (from the first before hook to the end of the after_snapshot hooks)`);
      // With a view, pruning waits until it is released (then with its own connection).
      if (view.downtimeMs === null) await pruneAfter(target, store, out);
      else await view.later(async () => {
        if (!target.retention || isEmpty(target.retention)) return;
        const again = await openStore(target.store, { ssh: sshFor(target, plan0, out), encryption: encFor(target, plan0) });
        try {
          await pruneAfter(target, again, out);
        } finally {
          await again.close();
        }
      });
    }
    return { code: s.unreadable > 0 ? EXIT.PARTIAL : EXIT.OK, snapshot: r.dryRun ? null : s.snapshot };
  } finally {
    stopTracking();
    out.stopProgress();
    await store.close();
  }
}
