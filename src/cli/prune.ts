import { requireStore } from '../engine/layout.js';
import { isEmpty, parseDuration, type Policy } from '../engine/retention/policy.js';
import { prune, type PruneResult } from '../engine/retention/prune.js';
import { usageError } from '../errors.js';
import { openStore, type EncryptionOptions, type SshOptions } from '../store/open.js';
import type { Output } from '../ui/output.js';
import { cryptOptions, parse, sshOptions } from './args.js';
import { EXIT } from './exit-codes.js';

export const help = `Usage: bakker prune --store STORE [policy options] [--dry-run] [--json]
       bakker prune -c CONFIG [--target NAME] [--dry-run] [--json]

Removes the snapshots a retention policy does not keep (docs/RETENTION.md). The kept snapshot
after each removed one is merged: its diff folder then holds everything new since the previous
kept snapshot. The newest snapshot is always kept; an empty policy removes nothing.

Policy options (as restic forget: the newest snapshot of each of the last N hours, days, ISO
weeks, months, years that have one; durations count back from the newest snapshot):
  --keep-last N            --keep-hourly N      --keep-daily N     --keep-weekly N
  --keep-monthly N         --keep-yearly N      (N = -1: every one)
  --keep-within D          everything within D of the newest (D: 14d, 6m, 1y6m, 36h)
  --keep-within-hourly D   --keep-within-daily D   --keep-within-weekly D
  --keep-within-monthly D  --keep-within-yearly D  the newest of each bucket within D
  --min-keep N             keep at least N snapshots whatever the rules say

Options:
  -s, --store STORE        a folder or sftp://user@host[:port]/path (-i, --known-hosts, --host-key
                           as for backup)
  -c, --config FILE        use each target's retention: from the config
  -t, --target NAME        with -c: this target only
  -n, --dry-run            list every snapshot with keep or remove and the rule that decided it

Examples:
  bakker prune --store /backups/server1 --keep-within 14d --keep-monthly 12 --keep-yearly 4 --min-keep 7 --dry-run
  bakker prune -c /etc/bakker/bakker.yaml`;

const COUNTS = {
  'keep-last': 'keepLast',
  'keep-hourly': 'keepHourly',
  'keep-daily': 'keepDaily',
  'keep-weekly': 'keepWeekly',
  'keep-monthly': 'keepMonthly',
  'keep-yearly': 'keepYearly',
  'min-keep': 'minKeep',
} as const;
const DURATIONS = {
  'keep-within': 'keepWithin',
  'keep-within-hourly': 'keepWithinHourly',
  'keep-within-daily': 'keepWithinDaily',
  'keep-within-weekly': 'keepWithinWeekly',
  'keep-within-monthly': 'keepWithinMonthly',
  'keep-within-yearly': 'keepWithinYearly',
} as const;

const OPTIONS = {
  store: { type: 'string', short: 's' },
  config: { type: 'string', short: 'c' },
  target: { type: 'string', short: 't' },
  'dry-run': { type: 'boolean', short: 'n' },
  ...Object.fromEntries([...Object.keys(COUNTS), ...Object.keys(DURATIONS)].map((k) => [k, { type: 'string' }])),
} as const;

function policyFromFlags(v: Record<string, unknown>): Policy {
  const p: Policy = {};
  for (const [flag, field] of Object.entries(COUNTS)) {
    const x = v[flag];
    if (x === undefined) continue;
    if (typeof x !== 'string' || !/^-?\d+$/.test(x) || Number(x) < (flag === 'min-keep' ? 0 : -1)) throw usageError(`bakker prune: --${flag} ${String(x)}: expected a whole number${flag === 'min-keep' ? '' : ' (-1: all)'}`);
    (p as Record<string, unknown>)[field] = Number(x);
  }
  for (const [flag, field] of Object.entries(DURATIONS)) {
    const x = v[flag];
    if (x === undefined) continue;
    const d = typeof x === 'string' ? parseDuration(x) : null;
    if (!d) throw usageError(`bakker prune: --${flag} ${String(x)}: expected a duration such as 14d, 6m or 1y6m`);
    (p as Record<string, unknown>)[field] = d;
  }
  return p;
}

function show(out: Output, r: PruneResult, url: string, target?: string): void {
  const rows = [['SNAPSHOT', 'STARTED', r.dryRun ? 'WOULD' : 'DID', 'WHY']];
  for (const d of [...r.decisions].reverse()) {
    rows.push([d.name, d.time.toISOString().replace(/\.\d+Z$/, 'Z'), d.keep ? 'keep' : 'remove', d.reasons.join(', ')]);
    if (out.json) out.emit({ event: 'info', message: `${d.keep ? 'keep' : 'remove'} ${d.name}: ${d.reasons.join(', ')}` });
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((row) => row[i]!.length)));
  for (const row of rows) out.line(row.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd());
  const removed = [...r.decisions].reverse().filter((d) => !d.keep).map((d) => d.name); // oldest first
  out.summary({ command: 'prune', ...(target ? { target } : {}), store: url, dryRun: r.dryRun, snapshots: r.decisions.length, kept: r.decisions.length - removed.length, removed, merged: r.merged, phasesMs: { merge: r.mergeMs, remove: r.removeMs }, decisions: r.decisions.map((d) => ({ name: d.name, keep: d.keep, reasons: d.reasons })) });
}

async function pruneStore(address: string, policy: Policy, ssh: SshOptions, enc: EncryptionOptions, dryRun: boolean, out: Output, target?: string): Promise<void> {
  const store = await openStore(address, { ssh, encryption: enc });
  try {
    await requireStore(store);
    const r = await prune(store, policy, { dryRun, emit: out.emit });
    show(out, r, store.url, target);
  } finally {
    await store.close();
  }
}

export async function run(argv: string[], out: Output): Promise<number> {
  const { values: v } = parse('prune', argv, OPTIONS as never);
  const values = v as Record<string, unknown> & { store?: string; config?: string; target?: string; 'dry-run'?: boolean; identity?: string; 'known-hosts'?: string; 'host-key'?: string; 'reconnect-for'?: string; key?: string; recipient?: string[] };
  const dryRun = values['dry-run'] === true;
  const flags = policyFromFlags(values);
  if (values.config) {
    if (values.store) throw usageError('bakker prune: give --store with policy options, or -c CONFIG (its targets\' retention), not both');
    const config = (await import('../config/config.js')).loadConfig(values.config);
    const targets = config.targets.filter((t) => !values.target || t.name === values.target);
    if (targets.length === 0) throw usageError(`bakker prune: no target "${values.target}" in ${config.file} (targets: ${config.targets.map((t) => t.name).join(', ')})`);
    for (const t of targets) {
      const policy = { ...(t.retention ?? {}), ...flags };
      if (isEmpty(policy)) {
        out.line(`target ${t.name}: no retention: nothing to prune`);
        continue;
      }
      const ssh: SshOptions = { ...sshOptions(values), identity: (values.identity as string | undefined) ?? t.identity, knownHosts: (values['known-hosts'] as string | undefined) ?? t.knownHosts, fingerprint: (values['host-key'] as string | undefined) ?? t.hostKey };
      const cli = cryptOptions(values);
      const enc: EncryptionOptions = { ...t.encryption, ...cli };
      await pruneStore(t.store, policy, ssh, enc, dryRun, out, t.name);
    }
    return EXIT.OK;
  }
  if (!values.store) throw usageError("bakker prune: --store is required (or -c CONFIG): see 'bakker prune --help'");
  if (values.target) throw usageError('bakker prune: --target needs -c CONFIG');
  if (isEmpty(flags)) out.emit({ event: 'warning', message: 'no policy given: nothing is removed (see bakker prune --help)' });
  await pruneStore(values.store, flags, sshOptions(values), cryptOptions(values), dryRun, out);
  return EXIT.OK;
}
