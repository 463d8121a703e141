import { parseArgs, type ParseArgsConfig } from 'node:util';
import { usageError } from '../errors.js';
import type { EncryptionOptions, SshOptions } from '../store/open.js';

export const COMMON = {
  json: { type: 'boolean' },
  debug: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  // for sftp:// stores
  identity: { type: 'string', short: 'i' },
  'known-hosts': { type: 'string' },
  'host-key': { type: 'string' },
  'reconnect-for': { type: 'string' },
  // encrypted stores
  key: { type: 'string' },
  recipient: { type: 'string', multiple: true },
} as const;

/** The encryption settings given on the command line (--recipient, --key). */
export function cryptOptions(v: { key?: string; recipient?: string[] }): EncryptionOptions {
  return { ...(v.recipient?.length ? { recipients: v.recipient } : {}), ...(v.key ? { identity: v.key } : {}) };
}

/** The SSH settings given on the command line (used only by sftp:// stores). */
export function sshOptions(v: { identity?: string; 'known-hosts'?: string; 'host-key'?: string; 'reconnect-for'?: string }): SshOptions {
  const o: SshOptions = { identity: v.identity, knownHosts: v['known-hosts'], fingerprint: v['host-key'] };
  if (v['reconnect-for'] !== undefined) {
    if (!/^\d+$/.test(v['reconnect-for'])) throw usageError(`--reconnect-for ${v['reconnect-for']}: expected whole seconds (0: fail at once when the connection drops)`);
    o.reconnectFor = Number(v['reconnect-for']);
  }
  return o;
}

/** parseArgs with usage errors that name the command and the way out. */
export function parse<T extends NonNullable<ParseArgsConfig['options']>>(command: string, argv: string[], options: T, positionals = false) {
  try {
    return parseArgs({ args: argv, options: { ...COMMON, ...options }, allowPositionals: positionals, strict: true });
  } catch (err) {
    const msg = (err as Error).message.split('\n')[0]!.replace(/\. To specify a positional argument.*$/, '');
    throw usageError(`bakker ${command}: ${msg}: see 'bakker ${command} --help'`);
  }
}

export function requireOpt<V>(command: string, v: V | undefined, name: string, hint: string): V {
  if (v === undefined || v === '') throw usageError(`bakker ${command}: ${name} is required: ${hint}`);
  return v;
}
