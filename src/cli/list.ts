import { listStore, requireStore } from '../engine/layout.js';
import { readSummary } from '../engine/summary.js';
import { openStore } from '../store/open.js';
import { bytes, count, duration } from '../ui/format.js';
import type { Output } from '../ui/output.js';
import { cryptOptions, parse, requireOpt, sshOptions } from './args.js';
import { EXIT } from './exit-codes.js';

export const help = `Usage: bakker list --store DIR [--json]

Lists the complete snapshots on a store, oldest first, with their size and what was new.

Examples:
  bakker list --store /backups/server1
  bakker list --store /backups/server1 --json | jq -r .name
  bakker list --store sftp://server1@storage1/backups -i /etc/bakker/id_ed25519

DIR may also be sftp://user@host[:port]/path; then -i/--identity FILE, --known-hosts FILE and
--host-key SHA256:... say how to connect (see 'bakker backup --help').`;

export async function run(argv: string[], out: Output): Promise<number> {
  const { values } = parse('list', argv, { store: { type: 'string', short: 's' } });
  const store = await openStore(requireOpt('list', values.store, '--store', 'give the store folder or sftp:// address'), { ssh: sshOptions(values), encryption: cryptOptions(values) });
  try {
    await requireStore(store);
    const { complete } = await listStore(store);
    const rows: string[][] = [['SNAPSHOT', 'STARTED', 'ENTRIES', 'SIZE', 'NEW', 'TOOK']];
    for (const name of complete) {
      const s = await readSummary(store, name);
      if (out.json) out.emit({ event: 'snapshot', name, entries: s.entries, bytes: s.bytes, newBytes: s.bytesCopied, start: s.start, durationMs: s.durationMs });
      rows.push([name, s.start ?? '', count(s.entries ?? 0), bytes(s.bytes ?? 0), bytes(s.bytesCopied ?? 0), duration(s.durationMs ?? 0)]);
    }
    const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
    for (const r of rows) out.line(r.map((c, i) => (i >= 2 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd());
    if (complete.length === 0) out.line('(no snapshots yet)');
    out.summary({ command: 'list', store: store.url, snapshots: complete.length });
    return EXIT.OK;
  } finally {
    await store.close();
  }
}
