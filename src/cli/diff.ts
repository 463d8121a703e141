import { diffSnapshots } from '../engine/diff.js';
import { listStore, requireStore, resolveSnapshot } from '../engine/layout.js';
import { usageError } from '../errors.js';
import { openStore } from '../store/open.js';
import { display } from '../util/bpath.js';
import type { Output } from '../ui/output.js';
import { cryptOptions, parse, requireOpt, sshOptions } from './args.js';
import { EXIT } from './exit-codes.js';

export const help = `Usage: bakker diff --store DIR [FROM [TO]] [--json]

Shows what changed between two snapshots (default: the two newest), from their impls:
  + path   added            - path   removed
  M path   content changed  m path   metadata only (mode, owner, times, ACLs, xattrs)
Paths are shown from the root (/data/...).

Examples:
  bakker diff --store /backups/server1
  bakker diff --store /backups/server1 2026_11_28_01 latest
  bakker diff --store sftp://server1@storage1/backups -i /etc/bakker/id_ed25519

DIR may also be sftp://user@host[:port]/path; then -i/--identity FILE, --known-hosts FILE and
--host-key SHA256:... say how to connect (see 'bakker backup --help').`;

const MARK = { added: '+', removed: '-', content: 'M', meta: 'm' } as const;

export async function run(argv: string[], out: Output): Promise<number> {
  const { values, positionals } = parse('diff', argv, { store: { type: 'string', short: 's' } }, true);
  if (positionals.length > 2) throw usageError(`bakker diff: expected at most two snapshots, got ${positionals.length}`);
  const store = await openStore(requireOpt('diff', values.store, '--store', 'give the store folder or sftp:// address'), { ssh: sshOptions(values), encryption: cryptOptions(values) });
  try {
    await requireStore(store);
    let from: string;
    let to: string;
    if (positionals.length === 0) {
      const { complete } = await listStore(store);
      if (complete.length < 2) throw usageError(`bakker diff: the store has ${complete.length} snapshot(s); name two to compare`);
      from = complete[complete.length - 2]!;
      to = complete[complete.length - 1]!;
    } else {
      from = await resolveSnapshot(store, positionals[0]!);
      to = await resolveSnapshot(store, positionals[1] ?? 'latest');
    }
    const counts = await diffSnapshots(store, from, to, (change, a, b) => {
      const p = '/' + display((b ?? a)!.path);
      if (out.json) out.emit({ event: 'entry', change, path: p });
      else out.line(`${MARK[change]} ${p}`);
    });
    out.line(`${from} -> ${to}: ${counts.added} added, ${counts.removed} removed, ${counts.content} changed, ${counts.meta} metadata only`);
    out.summary({ command: 'diff', from, to, ...counts });
    return EXIT.OK;
  } finally {
    await store.close();
  }
}
