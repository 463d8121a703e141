import type { ArchiveConfig, Select, StorageClass } from '../archive/archive.js';
import { parseCompression } from '../store/open.js';
import { checkEncryption, type Checker, type TargetConfig } from './config.js';
import { checkRetention } from './job-config.js';

// Kept here (not imported from archive/) so a config loads without loading the AWS SDK.
const STORAGE_CLASSES: StorageClass[] = ['STANDARD', 'STANDARD_IA', 'GLACIER_IR', 'GLACIER', 'DEEP_ARCHIVE'];
const TIERS = ['Expedited', 'Standard', 'Bulk'] as const;
const KEYS = ['name', 'type', 'from', 'endpoint', 'region', 'bucket', 'prefix', 'storage_class', 'credentials', 'path_style', 'select', 'mode', 'full_every', 'compression', 'encryption', 'retention', 'restore_tier', 'restore_days', 'after_backup', 'part_size_mb'];

/** `archives:` (docs/ARCHIVES.md): a list of object-storage archives, each fed from a local target. */
export function checkArchives(c: Checker, v: unknown, targets: TargetConfig[], host: string): ArchiveConfig[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) c.fail(['archives'], 'expected a list of archives (- name: ...)');
  const out: ArchiveConfig[] = [];
  v.forEach((raw, i) => {
    const w = ['archives', i];
    const o = c.keys(w, raw, KEYS);
    const int = (k: string, min: number, dflt: number): number => {
      const x = o[k];
      if (x === undefined) return dflt;
      if (typeof x !== 'number' || !Number.isInteger(x) || x < min) c.fail([...w, k], `expected a whole number of at least ${min}, got ${JSON.stringify(x)}`);
      return x;
    };
    if (o.name === undefined) c.fail(w, 'missing "name": a short name for this archive (letters, digits, ".", "_", "-")');
    const name = c.str([...w, 'name'], o.name, 'a name');
    if (!/^[A-Za-z0-9._-]+$/.test(name)) c.fail([...w, 'name'], 'use only letters, digits, ".", "_" and "-"');
    if (out.some((a) => a.name === name)) c.fail([...w, 'name'], `another archive is named "${name}"`);
    if (o.type !== undefined && o.type !== 's3') c.fail([...w, 'type'], `expected s3, got ${JSON.stringify(o.type)}`);
    for (const k of ['region', 'bucket']) if (o[k] === undefined) c.fail(w, `missing "${k}"`);
    const bucket = c.str([...w, 'bucket'], o.bucket, 'a bucket name');
    if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) c.fail([...w, 'bucket'], `"${bucket}" is not a valid S3 bucket name (3-63 lowercase letters, digits, "." and "-")`);
    const region = c.str([...w, 'region'], o.region, 'an AWS region such as eu-central-1');
    let endpoint: string | undefined;
    if (o.endpoint !== undefined) {
      endpoint = c.str([...w, 'endpoint'], o.endpoint, 'an http(s):// URL');
      let u: URL | null = null;
      try {
        u = new URL(endpoint);
      } catch {
        u = null;
      }
      if (!u || (u.protocol !== 'https:' && u.protocol !== 'http:')) c.fail([...w, 'endpoint'], `expected an https:// URL (or http:// for a server on a network you trust), got "${endpoint}"`);
    }
    let prefix = o.prefix === undefined ? `bakker/${host}/` : typeof o.prefix === 'string' ? o.prefix : c.str([...w, 'prefix'], o.prefix, 'a key prefix');
    prefix = prefix.replace(/^\/+/, '');
    if (prefix && !prefix.endsWith('/')) prefix += '/';
    if (prefix.split('/').some((p, j, all) => (p === '' && j < all.length - 1) || p === '.' || p === '..')) c.fail([...w, 'prefix'], `"${prefix}" has an empty, "." or ".." part`);
    const storageClass = (o.storage_class === undefined ? 'STANDARD' : c.str([...w, 'storage_class'], o.storage_class, 'a storage class')) as StorageClass;
    if (!STORAGE_CLASSES.includes(storageClass)) c.fail([...w, 'storage_class'], `expected one of ${STORAGE_CLASSES.join(', ')}, got "${storageClass}"`);
    let credentials: ArchiveConfig['credentials'] = 'default';
    if (o.credentials !== undefined) {
      if (o.credentials === 'default' || o.credentials === 'env') credentials = o.credentials;
      else if (typeof o.credentials === 'object' && o.credentials !== null && !Array.isArray(o.credentials) && 'profile' in o.credentials) {
        const cr = c.keys([...w, 'credentials'], o.credentials, ['profile']);
        credentials = { profile: c.str([...w, 'credentials', 'profile'], cr.profile, 'a profile name of ~/.aws/credentials') };
      } else if (typeof o.credentials === 'object' && o.credentials !== null && !Array.isArray(o.credentials)) {
        const cr = c.keys([...w, 'credentials'], o.credentials, ['access_key_id', 'secret_access_key', 'session_token']);
        if (cr.access_key_id === undefined || cr.secret_access_key === undefined) c.fail([...w, 'credentials'], 'expected access_key_id and secret_access_key (or write default, env, or profile: NAME)');
        credentials = {
          accessKeyId: c.str([...w, 'credentials', 'access_key_id'], cr.access_key_id, 'an access key id'),
          secretAccessKey: c.str([...w, 'credentials', 'secret_access_key'], cr.secret_access_key, 'a secret access key'),
          ...(cr.session_token !== undefined ? { sessionToken: c.str([...w, 'credentials', 'session_token'], cr.session_token, 'a session token') } : {}),
        };
      } else c.fail([...w, 'credentials'], `expected default (the AWS chain), env, {profile: NAME} or {access_key_id, secret_access_key}, got ${JSON.stringify(o.credentials)}`);
    }
    let select: Select = { kind: 'monthly' };
    if (o.select !== undefined) {
      const s = c.str([...w, 'select'], o.select, 'monthly, weekly, daily or every N');
      const m = /^every\s+(\d+)(?:\s*d(?:ays?)?)?$/.exec(s.trim());
      if (s === 'monthly' || s === 'weekly' || s === 'daily') select = { kind: s };
      else if (m && Number(m[1]) >= 1) select = { kind: 'every', days: Number(m[1]) };
      else c.fail([...w, 'select'], `expected monthly, weekly, daily or "every N" (days), got "${s}"`);
    }
    const mode = o.mode === undefined ? 'incremental' : o.mode;
    if (mode !== 'full' && mode !== 'incremental') c.fail([...w, 'mode'], `expected full or incremental, got ${JSON.stringify(o.mode)}`);
    const fullEvery = int('full_every', 1, 12);
    if (o.full_every !== undefined && mode === 'full') c.fail([...w, 'full_every'], 'full_every goes with mode: incremental');
    let compression = 3;
    if (o.compression !== undefined) {
      const l = typeof o.compression === 'string' ? parseCompression(o.compression) : null;
      if (l === null) c.fail([...w, 'compression'], `expected zstd, zstd:LEVEL (1-19) or none, got ${JSON.stringify(o.compression)}`);
      compression = l;
    }
    if (o.encryption === undefined) c.fail(w, 'missing "encryption": give {recipients: [age1...]} (bakker key generate prints one), or write encryption: none to upload unencrypted on purpose');
    let recipients: string[] | null = null;
    let identity: string | undefined = undefined;
    if (o.encryption !== 'none') ({ recipients, identity } = checkEncryption(c, [...w, 'encryption'], o.encryption, 'archives are encrypted'));
    const tier = o.restore_tier === undefined ? 'Standard' : c.str([...w, 'restore_tier'], o.restore_tier, 'a restore tier');
    if (!(TIERS as readonly string[]).includes(tier)) c.fail([...w, 'restore_tier'], `expected one of ${TIERS.join(', ')}, got "${tier}"`);
    if (tier === 'Expedited' && storageClass === 'DEEP_ARCHIVE') c.fail([...w, 'restore_tier'], 'DEEP_ARCHIVE has no Expedited retrieval: use Standard or Bulk');
    let from: string | undefined;
    if (o.from !== undefined) {
      from = c.str([...w, 'from'], o.from, 'the name of a target');
      if (!targets.some((t) => t.name === from)) c.fail([...w, 'from'], `"${from}" is not a target here (targets: ${targets.map((t) => t.name).join(', ')})`);
    } else {
      const local = targets.find((t) => !t.store.startsWith('sftp://')) ?? targets[0];
      from = local?.name;
    }
    const a: ArchiveConfig = {
      name,
      type: 's3',
      region,
      bucket,
      prefix,
      storageClass,
      credentials,
      select,
      mode,
      fullEvery,
      compression,
      recipients,
      restoreTier: tier as ArchiveConfig['restoreTier'],
      restoreDays: int('restore_days', 1, 7),
      afterBackup: o.after_backup === undefined ? true : c.bool([...w, 'after_backup'], o.after_backup),
      partSize: int('part_size_mb', 5, 8) * 1024 * 1024,
      ...(from !== undefined ? { from } : {}),
      ...(endpoint !== undefined ? { endpoint } : {}),
      ...(identity !== undefined ? { identity } : {}),
      ...(o.path_style !== undefined ? { pathStyle: c.bool([...w, 'path_style'], o.path_style) } : {}),
      ...(o.retention !== undefined ? { retention: checkRetention(c, [...w, 'retention'], o.retention) } : {}),
    };
    out.push(a);
  });
  return out;
}
