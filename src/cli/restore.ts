import path from 'node:path';
import { newProgress } from '../engine/events.js';
import { requireStore, resolveSnapshot } from '../engine/layout.js';
import { runRestore } from '../engine/restore/restore.js';
import { openStore } from '../store/open.js';
import { bytes, count } from '../ui/format.js';
import type { Output } from '../ui/output.js';
import { cryptOptions, parse, requireOpt, sshOptions } from './args.js';
import { EXIT } from './exit-codes.js';

export const help = `Usage: bakker restore --store DIR --to DIR [--snapshot NAME] [--include PATH...] [options]

Restores a snapshot (default: latest) into a folder, with owners, modes, times (ns),
ACLs, xattrs, hard links, sparse files, symlinks, fifos and device nodes as the impl
recorded them. Paths keep their place under the target (/data/www -> TO/data/www).
Never writes outside --to and never through a symlink.

Options:
  -s, --store DIR        the store
      --snapshot NAME    a snapshot name, a unique prefix of one, or "latest"
      --to DIR           where to restore (created when missing)
  -i, --include PATH     restore only this path and what is below it (repeatable)
      --numeric-ids      restore owners by uid/gid, not by user and group names
      --json             JSON lines: events, then a summary object

Examples:
  bakker restore --store /backups/server1 --to /tmp/r
  bakker restore --store /backups/server1 --snapshot 2026_11_28_01 --include data/www --to /tmp/r
  bakker restore --store sftp://server1@storage1/backups -i /etc/bakker/id_ed25519 --to /tmp/r

DIR may also be sftp://user@host[:port]/path; then -i/--identity FILE, --known-hosts FILE and
--host-key SHA256:... say how to connect (see 'bakker backup --help').`;

export async function run(argv: string[], out: Output): Promise<number> {
  const { values } = parse('restore', argv, {
    store: { type: 'string', short: 's' },
    snapshot: { type: 'string' },
    to: { type: 'string' },
    include: { type: 'string', short: 'i', multiple: true },
    'numeric-ids': { type: 'boolean' },
  });
  const to = path.resolve(requireOpt('restore', values.to, '--to', 'give the folder to restore into'));
  const store = await openStore(requireOpt('restore', values.store, '--store', 'give the store folder or sftp:// address'), { ssh: sshOptions(values), encryption: cryptOptions(values) });
  try {
    await requireStore(store);
    const snapshot = await resolveSnapshot(store, values.snapshot ?? 'latest');
    out.emit({ event: 'start', command: 'restore', store: store.url, snapshot });
    const progress = newProgress();
    progress.phase = 'restore';
    out.startProgress(progress, 'restore');
    const r = await runRestore({ store, snapshot, to, includes: values.include, numericIds: values['numeric-ids'], emit: out.emit, progress });
    out.stopProgress();
    out.line(`restored ${count(r.entries)} entries (${count(r.files)} files, ${bytes(r.bytes)}) from ${snapshot} into ${to}`);
    out.summary({ command: 'restore', to, ...r });
    return EXIT.OK;
  } finally {
    out.stopProgress();
    await store.close();
  }
}
