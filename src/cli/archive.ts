import { configFileOr } from '../config/default-file.js';
import type { ArchiveConfig } from '../archive/archive.js';
import type { ArchiveRecord } from '../agent/status.js';
import type { Config, TargetConfig } from '../config/config.js';
import { BakkerError, errMessage, usageError } from '../errors.js';
import { isEmpty } from '../engine/retention/policy.js';
import { openTargetStore } from '../store/open.js';
import type { Store } from '../store/store.js';
import { bytes, count } from '../ui/format.js';
import type { Output } from '../ui/output.js';
import { parse } from './args.js';
import { EXIT } from './exit-codes.js';

export const help = `Usage: bakker archive push|list|restore|prune [-c CONFIG] [--archive NAME] ...

The third tier: snapshots of a local target as compressed, encrypted archives in S3 or an
S3-compatible object store (docs/ARCHIVES.md). Each archive is a few objects: the snapshot as
a pax tar stream through zstd and age (a full, or only what is new since the previous archive
plus the paths removed), its impl alongside, and a small marker written last.

  bakker archive push [SNAPSHOT] [--force] [--full] [--dry-run]
      Pushes the newest snapshot of the archive's 'from' target when it is due by 'select'
      (monthly: the first of each month...); SNAPSHOT or --force pushes one regardless;
      --full makes it a full. Cleans up what an interrupted push left. Prunes afterwards by
      the archive's retention, when it has one. Also runs after each backup (after_backup).
  bakker archive list [--json]
      The archives: snapshot, full or increment (and its base), size, class, age.
  bakker archive restore NAME|latest --to DIR [--key FILE] [--tier Standard|Bulk|Expedited]
                         [--days N] [--numeric-ids]
      Restores the archive (its full, then the increments up to it) into an empty DIR.
      Objects in GLACIER or DEEP_ARCHIVE are asked to be restored first: the command says
      what it waits for and exits with code 4; run it again once they are readable.
  bakker archive prune [--dry-run] [--early]
      Deletes archives its retention policy does not keep; never a full or increment that a
      kept increment needs. Archives younger than their class's minimum storage duration
      (90 days GLACIER/GLACIER_IR, 180 DEEP_ARCHIVE, 30 STANDARD_IA) are kept with a warning
      until then (S3 bills those days anyway); --early deletes them now.

Options:
  -c, --config FILE   the config with the archives: section (default /etc/bakker/bakker.yaml)
      --archive NAME  which archive, when the config has several
      --key FILE      restore: the age identity the archive is encrypted for
                      (default: encryption.identity of the archive)

Examples:
  bakker archive push -c /etc/bakker/bakker.yaml
  bakker archive list
  bakker archive restore latest --to /srv/restore --key /root/bakker-age.key

Exit codes: 0 ok, 1 failed, 2 usage or config error, 4 waiting for cold objects (re-run later).`;

async function loadArchiveConfig(file: string | undefined): Promise<Config> {
  const f = configFileOr(file);
  if (!f) throw usageError('bakker archive: give the config with -c FILE (archives are set up in its archives: section; see docs/ARCHIVES.md)');
  return (await import('../config/config.js')).loadConfig(f);
}

function pick(config: Config, name: string | undefined): ArchiveConfig {
  if (config.archives.length === 0) throw usageError(`bakker archive: ${config.file} has no archives: section (see docs/ARCHIVES.md)`);
  if (name === undefined) {
    if (config.archives.length > 1) throw usageError(`bakker archive: ${config.file} has several archives (${config.archives.map((a) => a.name).join(', ')}): choose one with --archive NAME`);
    return config.archives[0]!;
  }
  const a = config.archives.find((x) => x.name === name);
  if (!a) throw usageError(`bakker archive: no archive "${name}" in ${config.file} (archives: ${config.archives.map((x) => x.name).join(', ')})`);
  return a;
}

function sourceTarget(config: Config, a: ArchiveConfig): TargetConfig {
  const t = config.targets.find((x) => x.name === a.from);
  if (!t) throw usageError(`bakker archive: archive ${a.name} has no target to archive from: set its from: to a target`);
  return t;
}

/** Push (when due) and prune one archive from its target's store; used by `archive push` and after backups. */
export async function pushOne(config: Config, a: ArchiveConfig, out: Output, opts: { snapshot?: string; force?: boolean; full?: boolean; dryRun?: boolean; prune?: boolean; signal?: AbortSignal } = {}): Promise<void> {
  const { pushArchive, pruneArchives } = await import('../archive/archive.js');
  const t = sourceTarget(config, a);
  const t0 = Date.now();
  const record = async (rec: Omit<ArchiveRecord, 'archive' | 'where' | 'end' | 'durationMs'>) => {
    if (opts.dryRun) return;
    const { recordArchive } = await import('../agent/status.js');
    recordArchive({ archive: a.name, where: `s3://${a.bucket}/${a.prefix}${a.endpoint ? ` at ${a.endpoint}` : ''}`, end: new Date().toISOString(), durationMs: Date.now() - t0, ...rec });
    (await import('../agent/metrics.js')).refreshTextfile(config.operation.monitoring?.textfile, (message) => out.emit({ event: 'warning', message }));
  };
  let store: Store | undefined;
  try {
    store = await openTargetStore(t);
    const r = await pushArchive(a, store, { ...opts, emit: out.emit });
    if (!r.snapshot || opts.dryRun) out.line(`archive ${a.name}: ${r.reason}`); // a push says itself what it pushed
    out.summary({ command: 'archive push', archive: a.name, ...r });
    await record(r.snapshot ? { result: 'pushed', snapshot: r.snapshot, ...(r.kind ? { kind: r.kind } : {}), ...(r.stored !== undefined ? { storedBytes: r.stored } : {}) } : { result: 'not-due', message: r.reason });
  } catch (err) {
    await record({ result: 'failed', message: err instanceof BakkerError ? err.message : errMessage(err) });
    throw err;
  } finally {
    await store?.close();
  }
  if (opts.prune !== false && !opts.dryRun && a.retention && !isEmpty(a.retention)) {
    const p = await pruneArchives(a, { emit: out.emit });
    if (p.deleted) out.line(`archive ${a.name}: pruned ${p.deleted} archive(s) by its retention policy`);
  }
}

/** After a backup: each archive fed from a target that got a snapshot, when due. A failure is reported, not thrown. */
export async function pushAfterBackup(config: Config, targets: string[], out: Output, signal: AbortSignal): Promise<boolean> {
  let ok = true;
  for (const a of config.archives) {
    if (!a.afterBackup || !a.from || !targets.includes(a.from)) continue;
    try {
      await pushOne(config, a, out, { signal });
    } catch (err) {
      ok = false;
      out.emit({ event: 'error', target: `archive ${a.name}`, code: err instanceof BakkerError ? err.code : 'INTERNAL', message: `${errMessage(err)} (the snapshot is made; run bakker archive push again)`, exitCode: EXIT.FAILED });
    }
  }
  return ok;
}

export async function run(argv: string[], out: Output, signal: AbortSignal): Promise<number> {
  const [sub, ...rest] = argv;
  const common = { config: { type: 'string', short: 'c' }, archive: { type: 'string' } } as const;
  switch (sub) {
    case 'push': {
      const { values, positionals } = parse('archive push', rest, { ...common, force: { type: 'boolean' }, full: { type: 'boolean' }, 'dry-run': { type: 'boolean' }, 'no-prune': { type: 'boolean' } }, true);
      if (positionals.length > 1) throw usageError('bakker archive push: name at most one snapshot');
      const config = await loadArchiveConfig(values.config);
      const a = pick(config, values.archive);
      await pushOne(config, a, out, { ...(positionals[0] ? { snapshot: positionals[0] } : {}), force: values.force === true, full: values.full === true, dryRun: values['dry-run'] === true, prune: !values['no-prune'], signal });
      return EXIT.OK;
    }
    case 'list': {
      const { values } = parse('archive list', rest, common);
      const config = await loadArchiveConfig(values.config);
      const a = pick(config, values.archive);
      const { listArchives, openObjects } = await import('../archive/archive.js');
      const s3 = openObjects(a);
      try {
        const list = await listArchives(a, s3);
        out.line(list.length ? `archive ${a.name} (s3://${a.bucket}/${a.prefix}):` : `archive ${a.name} (s3://${a.bucket}/${a.prefix}): no archives yet`);
        for (const m of list) {
          const age = Math.floor((Date.now() - new Date(m.created).getTime()) / 86_400_000);
          out.line(`  ${m.snapshot}  ${m.kind === 'full' ? 'full       ' : 'incremental'}  ${(m.base ?? '').padEnd(13)}  ${bytes(m.data.size).padStart(10)}  ${m.storage_class.padEnd(12)}  ${count(m.entries)} entries, pushed ${age} day(s) ago${m.encrypted ? '' : ', not encrypted'}`);
        }
        out.summary({ command: 'archive list', archive: a.name, archives: list });
      } finally {
        s3.close();
      }
      return EXIT.OK;
    }
    case 'restore': {
      const { values, positionals } = parse('archive restore', rest, { ...common, to: { type: 'string' }, tier: { type: 'string' }, days: { type: 'string' }, 'numeric-ids': { type: 'boolean' } }, true);
      if (positionals.length !== 1) throw usageError(`bakker archive restore: name one archive (a snapshot name, a unique prefix, or latest): see 'bakker archive list'`);
      if (!values.to) throw usageError('bakker archive restore: give --to DIR: an empty or new folder to restore into');
      if (values.tier !== undefined && !['Expedited', 'Standard', 'Bulk'].includes(values.tier)) throw usageError(`bakker archive restore: --tier ${values.tier}: expected Expedited, Standard or Bulk`);
      if (values.days !== undefined && !/^[1-9]\d*$/.test(values.days)) throw usageError(`bakker archive restore: --days ${values.days}: expected a whole number of days (how long restored objects stay readable)`);
      const config = await loadArchiveConfig(values.config);
      const a = pick(config, values.archive);
      const keyFile = values.key ?? a.identity;
      const { loadIdentities } = await import('../crypto/age.js');
      const identities = keyFile ? await loadIdentities(keyFile, process.env.BAKKER_PASSPHRASE) : undefined;
      const { restoreArchive } = await import('../archive/archive.js');
      const r = await restoreArchive(a, positionals[0]!, values.to, { ...(identities ? { identities } : {}), ...(values.tier ? { tier: values.tier } : {}), ...(values.days ? { days: Number(values.days) } : {}), numericIds: values['numeric-ids'] === true, emit: out.emit });
      out.summary({ command: 'archive restore', archive: a.name, ...r });
      if (r.waiting.length) {
        process.stderr.write(`bakker: archive ${r.snapshot}: waiting for ${r.waiting.length} object(s) in cold storage to become readable; nothing is written yet: run this command again later\n`);
        return EXIT.WAITING;
      }
      out.line(`restored archive ${r.snapshot} (${r.chain.length === 1 ? 'a full' : `a full and ${r.chain.length - 1} increment(s): ${r.chain.join(' ')}`}) into ${values.to}: ${count(r.counts.entries)} entries, ${count(r.counts.files)} files, ${bytes(r.counts.bytes)}${r.counts.removed ? `, ${count(r.counts.removed)} removed by increments` : ''}`);
      return EXIT.OK;
    }
    case 'prune': {
      const { values } = parse('archive prune', rest, { ...common, 'dry-run': { type: 'boolean' }, early: { type: 'boolean' } });
      const config = await loadArchiveConfig(values.config);
      const a = pick(config, values.archive);
      if (!a.retention || isEmpty(a.retention)) throw usageError(`bakker archive prune: archive ${a.name} has no retention: policy in ${config.file}: nothing would ever be deleted (see docs/ARCHIVES.md)`);
      const { pruneArchives } = await import('../archive/archive.js');
      const r = await pruneArchives(a, { dryRun: values['dry-run'] === true, early: values.early === true, emit: out.emit });
      out.summary({ command: 'archive prune', archive: a.name, dryRun: values['dry-run'] === true, deleted: r.deleted, decisions: r.decisions });
      return EXIT.OK;
    }
    default:
      throw usageError(`bakker archive: ${sub ? `unknown subcommand "${sub}"` : 'missing subcommand'}: use push, list, restore or prune (see 'bakker archive --help')`);
  }
}
