import { newProgress } from '../engine/events.js';
import { listStore, requireStore, resolveSnapshot } from '../engine/layout.js';
import { verifySnapshot } from '../engine/verify/verify.js';
import { openStore } from '../store/open.js';
import { count } from '../ui/format.js';
import type { Output } from '../ui/output.js';
import { cryptOptions, parse, requireOpt, sshOptions } from './args.js';
import { EXIT } from './exit-codes.js';

export const help = `Usage: bakker verify --store DIR [--snapshot NAME|latest|all] [--no-read-data] [--json]

Checks snapshots against their impls: the impl is whole and in order, every file is in
the snapshot folder with its recorded size and type, symlinks have their targets, and,
where the impl holds checksums (backup --checksum), every file's content matches.
Exit code 1 when any problem is found; each one is listed.

Examples:
  bakker verify --store /backups/server1
  bakker verify --store /backups/server1 --snapshot all
  bakker verify --store sftp://server1@storage1/backups -i /etc/bakker/id_ed25519

DIR may also be sftp://user@host[:port]/path; then -i/--identity FILE, --known-hosts FILE and
--host-key SHA256:... say how to connect (see 'bakker backup --help').`;

export async function run(argv: string[], out: Output): Promise<number> {
  const { values } = parse('verify', argv, {
    store: { type: 'string', short: 's' },
    snapshot: { type: 'string' },
    'no-read-data': { type: 'boolean' },
  });
  const store = await openStore(requireOpt('verify', values.store, '--store', 'give the store folder or sftp:// address'), { ssh: sshOptions(values), encryption: cryptOptions(values) });
  try {
    await requireStore(store);
    const which = values.snapshot ?? 'latest';
    const names = which === 'all' ? (await listStore(store)).complete : [await resolveSnapshot(store, which)];
    let problems = 0;
    const results = [];
    for (const name of names) {
      const progress = newProgress();
      progress.phase = name;
      out.startProgress(progress, 'verify');
      const r = await verifySnapshot(store, name, { emit: out.emit, progress, readData: !values['no-read-data'] });
      out.stopProgress();
      problems += r.problems;
      results.push(r);
      out.line(`${name}: ${r.problems === 0 ? 'ok' : `${count(r.problems)} problem(s)`} (${count(r.entries)} entries, ${count(r.checkedData)} contents checked)`);
    }
    out.summary({ command: 'verify', snapshots: results, problems });
    return problems === 0 ? EXIT.OK : EXIT.FAILED;
  } finally {
    await store.close();
  }
}
