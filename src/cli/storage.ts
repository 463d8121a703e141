import { usageError } from '../errors.js';
import { addClient, checkName, clientStatus, growClient, grantRead, listClientNames, listRequests, parseSize, protectClient, pruneClient, pruneSeals, readClient, removeClient, sealClient } from '../storage/admin.js';
import { isEmpty } from '../engine/retention/policy.js';
import { loadStorageConfig } from '../storage/config.js';
import { bytes } from '../ui/format.js';
import type { Output } from '../ui/output.js';
import { parse } from './args.js';
import { EXIT } from './exit-codes.js';

export const help = `Usage: bakker storage SUBCOMMAND [options]     (as root, on the storage server)

Manages the accounts of the servers that back up here. Optional: everything it does can be
done by hand (docs/STORAGE.md). Each client gets a system account that can do nothing but
SFTP, chrooted to BASE/NAME; its store is always sftp://NAME@THIS-HOST/backups.

Subcommands:
  add-client NAME --pubkey FILE [--size SIZE] [--base DIR]
                 make the account, its chroot, its authorized key (SFTP only) and its sshd
                 Match block, then reload sshd; with --size the client gets its own
                 fixed-size filesystem (a loop-mounted ext4 image) that never grows by itself
  list-clients   space used and allocated, snapshot count, newest snapshot, open requests
  grant NAME --read OTHER [--revoke]
                 let NAME's key read OTHER's store (read-only SFTP as OTHER), e.g. to restore
                 OTHER's snapshots onto a new server; --revoke takes it back
  requests       requests for more space that clients left in their store
  grow NAME --size SIZE
                 grow NAME's own filesystem (online) and clear its requests
  remove-client NAME (--yes | --keep-data)
                 remove the account, its keys and sshd block; --yes deletes its data too
  protect NAME   the storage side keeps read-only copies of NAME's snapshots that NAME cannot
                 delete or alter (its backups folder on btrfs; see docs/RETENTION.md)
  seal [--client NAME]
                 take those copies now for protected clients with a new snapshot (for a timer)
  prune [--client NAME] [--dry-run]
                 apply the storage side's retention (retention: and client_retention: in the
                 storage config) to each client's stores, as that client's account; for a root
                 timer, so retention holds even when a client is gone

Options:
      --storage-config FILE  storage-side settings (default /etc/bakker/storage.yaml if it
                             exists; see docs/STORAGE.md)
      --json                 JSON lines

Examples:
  bakker storage add-client server1 --pubkey /tmp/server1.pub --size 200G
  bakker storage grant server2 --read server1
  bakker storage list-clients
  bakker storage grow server1 --size 300G`;

const OPTIONS = {
  'storage-config': { type: 'string' },
  pubkey: { type: 'string' },
  size: { type: 'string' },
  base: { type: 'string' },
  read: { type: 'string' },
  revoke: { type: 'boolean' },
  yes: { type: 'boolean' },
  'keep-data': { type: 'boolean' },
  client: { type: 'string' },
  'dry-run': { type: 'boolean', short: 'n' },
} as const;

function table(out: Output, rows: string[][], rightFrom: number): void {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const r of rows) out.line(r.map((c, i) => (i >= rightFrom ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd());
}

export async function run(argv: string[], out: Output): Promise<number> {
  const { values, positionals } = parse('storage', argv, OPTIONS, true);
  const [sub, ...args] = positionals;
  const cfg = loadStorageConfig(values['storage-config']);
  const log = (line: string) => (out.json ? out.emit({ event: 'info', message: line }) : process.stderr.write(line + '\n'));
  const noMore = (n: number) => {
    if (args.length > n) throw usageError(`bakker storage ${sub}: unexpected argument "${args[n]}": see 'bakker storage --help'`);
  };
  switch (sub) {
    case 'add-client': {
      noMore(1);
      const name = checkName(args[0]);
      if (!values.pubkey) throw usageError(`bakker storage add-client: --pubkey FILE is required: the client's public key (its .pub file)`);
      const { store, record } = addClient(cfg, { name, pubkey: values.pubkey, sizeBytes: values.size ? parseSize(values.size) : undefined, base: values.base }, log);
      out.line(`client ${name} ready${record.sizeBytes ? ` with its own ${bytes(record.sizeBytes)} filesystem` : ''}; its store is ${store}`);
      out.summary({ command: 'storage add-client', client: name, store, chroot: record.chroot, sizeBytes: record.sizeBytes ?? null });
      return EXIT.OK;
    }
    case 'list-clients': {
      noMore(0);
      const rows = [['CLIENT', 'SNAPSHOTS', 'NEWEST', 'USED', 'SIZE', 'FREE', 'REQUESTS', 'READERS']];
      const all = listClientNames(cfg).map((n) => clientStatus(cfg, n));
      for (const s of all) {
        if (out.json) out.emit({ event: 'client', ...s } as never);
        rows.push([s.name, String(s.snapshots), s.newest ?? '-', bytes(s.usedBytes), s.allocatedBytes === null ? 'shared' : bytes(s.allocatedBytes), s.freeBytes === null ? '-' : bytes(s.freeBytes), String(s.requests), s.readers.join(',') || '-']);
      }
      if (all.length) table(out, rows, 1);
      else out.line('(no clients yet)');
      out.summary({ command: 'storage list-clients', clients: all.length });
      return EXIT.OK;
    }
    case 'grant': {
      noMore(1);
      const name = checkName(args[0]);
      const other = checkName(values.read, '--read client name');
      grantRead(cfg, name, other, values.revoke === true);
      out.line(values.revoke ? `${name} can no longer read ${other}'s store` : `${name}'s key can now read ${other}'s store, read-only: sftp://${other}@${cfg.host ?? 'THIS-HOST'}/backups`);
      out.summary({ command: 'storage grant', client: name, read: other, revoked: values.revoke === true });
      return EXIT.OK;
    }
    case 'requests': {
      noMore(0);
      const all = listClientNames(cfg).flatMap((n) => listRequests(cfg, n));
      const rows = [['CLIENT', 'AT', 'WANTS', 'MESSAGE']];
      for (const r of all) {
        if (out.json) out.emit({ event: 'request', ...r } as never);
        rows.push([r.client, r.at ?? '-', r.wantBytes === null ? '-' : bytes(r.wantBytes), r.message]);
      }
      if (all.length) table(out, rows, 99);
      else out.line('(no open requests)');
      out.summary({ command: 'storage requests', requests: all.length });
      return EXIT.OK;
    }
    case 'grow': {
      noMore(1);
      const name = checkName(args[0]);
      if (!values.size) throw usageError(`bakker storage grow: --size SIZE is required (the new total size, e.g. 300G)`);
      const rec = growClient(cfg, name, parseSize(values.size), log);
      out.line(`${name} grown to ${bytes(rec.sizeBytes!)}`);
      out.summary({ command: 'storage grow', client: name, sizeBytes: rec.sizeBytes });
      return EXIT.OK;
    }
    case 'remove-client': {
      noMore(1);
      const name = checkName(args[0]);
      removeClient(cfg, name, { keepData: values['keep-data'] === true, yes: values.yes === true }, log);
      out.summary({ command: 'storage remove-client', client: name, keptData: values['keep-data'] === true });
      return EXIT.OK;
    }
    case 'protect': {
      noMore(1);
      const name = checkName(args[0]);
      protectClient(cfg, name, log);
      out.summary({ command: 'storage protect', client: name });
      return EXIT.OK;
    }
    case 'seal': {
      noMore(0);
      const names = (values.client ? [checkName(values.client)] : listClientNames(cfg)).filter((n) => readClient(cfg, n).protected);
      const sealed: string[] = [];
      for (const n of names) {
        const s = sealClient(cfg, n, log);
        if (s) sealed.push(s);
      }
      out.summary({ command: 'storage seal', clients: names.length, sealed });
      return EXIT.OK;
    }
    case 'prune': {
      noMore(0);
      const names = values.client ? [checkName(values.client)] : listClientNames(cfg);
      let failed = 0;
      let removed = 0;
      for (const name of names) {
        const policy = cfg.clientRetention[name] ?? cfg.retention;
        if (!policy || isEmpty(policy)) {
          log(`${name}: no retention in ${cfg.file ?? 'the storage config'}: skipped`);
          continue;
        }
        for (const r of pruneClient(cfg, name, policy, { dryRun: values['dry-run'] === true }, log)) {
          if (out.json) out.emit({ event: 'pruned', ...r } as never);
          if (!r.ok) failed++;
          removed += r.removed.length;
        }
        if (readClient(cfg, name).protected) {
          // Sealed copies: the newest state sealed first, then the old ones by the same policy.
          if (!values['dry-run']) sealClient(cfg, name, log);
          const seals = pruneSeals(cfg, name, policy, { dryRun: values['dry-run'] === true }, log);
          if (out.json) out.emit({ event: 'pruned-seals', client: name, removed: seals } as never);
        }
      }
      out.summary({ command: 'storage prune', clients: names.length, removed, failed, dryRun: values['dry-run'] === true });
      return failed ? EXIT.FAILED : EXIT.OK;
    }
    case undefined:
      throw usageError(`bakker storage: a subcommand is required (add-client, list-clients, grant, requests, grow, remove-client, protect, seal, prune): see 'bakker storage --help'`);
    default:
      throw usageError(`bakker storage: unknown subcommand "${sub}": see 'bakker storage --help'`);
  }
}
