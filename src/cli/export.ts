import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import { exportSnapshot, type ExportCounts } from '../archive/export.js';
import { requireStore, resolveSnapshot } from '../engine/layout.js';
import { usageError } from '../errors.js';
import { openStore, parseCompression } from '../store/open.js';
import { zstdStream } from '../util/zstd.js';
import { bytes, count } from '../ui/format.js';
import type { Output } from '../ui/output.js';
import { cryptOptions, parse, requireOpt, sshOptions } from './args.js';
import { EXIT } from './exit-codes.js';

export const help = `Usage: bakker export --store STORE SNAPSHOT [--since OTHER] > FILE

Writes a snapshot as a standard pax tar stream to standard output: every file, folder,
symlink, hard link and device node under its snapshot path, with owners (ids and names),
modes, times to the nanosecond, xattrs and ACLs (GNU tar: tar --xattrs --acls -xpf FILE).
With --since OTHER, only what is new after OTHER: the files and symlinks whose content
first appeared later (from the impl's history), and every folder and special file; the
last member, .bakker-removed, lists the paths gone since OTHER (NUL-terminated). For any destination the
admin uses: a file, a pipe to zstd, age, ssh or an object store.

Options:
  -s, --store STORE   a folder or sftp://user@host[:port]/path (-i, --known-hosts, --host-key
                      as for backup); an encrypted store needs --key FILE
      --since OTHER   an increment: only what is new after snapshot OTHER
      --compress zstd[:N]       the stream as zstd (level N, default 3)
      --encrypt-for age1...     the stream (after compression) as age, for these recipients
                                (repeatable): age -d -i KEY | zstd -d | tar -x opens it

Examples:
  bakker export --store /backups/server1 latest > server1.tar
  bakker export --store /backups/server1 latest --since 2026_11_01_01 --compress zstd --encrypt-for age1... > inc.tar.zst.age`;

export async function run(argv: string[], out: Output): Promise<number> {
  const { values, positionals } = parse('export', argv, { store: { type: 'string', short: 's' }, since: { type: 'string' }, compress: { type: 'string' }, 'encrypt-for': { type: 'string', multiple: true } }, true);
  if (values.recipient?.length) throw usageError('bakker export: --recipient is for backups; to encrypt the stream give --encrypt-for age1...');
  let level = 0;
  if (values.compress !== undefined) {
    const l = parseCompression(values.compress);
    if (l === null) throw usageError(`bakker export: --compress ${values.compress}: expected zstd, zstd:LEVEL (1-19) or none`);
    level = l;
  }
  const { parseRecipient, encrypt } = await import('../crypto/age.js');
  const recipients = (values['encrypt-for'] ?? []).map((r) => parseRecipient(r));
  if (out.json) throw usageError('bakker export: the tar stream is the output: --json does not apply (messages go to standard error)');
  if (positionals.length !== 1) throw usageError(`bakker export: name one snapshot (a name, a unique prefix, or latest): see 'bakker export --help'`);
  if (process.stdout.isTTY) throw usageError('bakker export: standard output is a terminal: redirect it to a file or a pipe (bakker export ... > FILE)');
  const store = await openStore(requireOpt('export', values.store, '--store', 'give the store folder or sftp:// address'), { ssh: sshOptions(values), encryption: cryptOptions(values) });
  try {
    await requireStore(store);
    const snapshot = await resolveSnapshot(store, positionals[0]!);
    const since = values.since !== undefined ? await resolveSnapshot(store, values.since) : undefined;
    if (since !== undefined && since >= snapshot) throw usageError(`bakker export: --since ${since} is not older than ${snapshot}`);
    const counts: ExportCounts = { entries: 0, files: 0, bytes: 0, skipped: 0 };
    let stream: AsyncIterable<Buffer> = exportSnapshot(store, snapshot, { ...(since ? { since } : {}), counts });
    if (level) stream = zstdStream(stream, level);
    if (recipients.length) stream = encrypt(stream, recipients);
    await pipeline(Readable.from(stream), process.stdout);
    if (counts.skipped) process.stderr.write(`bakker: warning: ${counts.skipped} socket(s) left out: tar cannot hold sockets (restore recreates them from the impl)\n`);
    process.stderr.write(`bakker: exported ${snapshot}${since ? ` (new since ${since})` : ''}: ${count(counts.entries)} entries, ${count(counts.files)} files, ${bytes(counts.bytes)}\n`);
    return EXIT.OK;
  } finally {
    await store.close();
  }
}
