import path from 'node:path';
import type { Checker } from './config.js';
import { parseDuration, type Policy } from '../engine/retention/policy.js';

/**
 * A job's consistent view and hooks (docs/VIEWS.md): the sources are read from a snapshot of
 * their volume, taken between `before` and `after_snapshot` hooks.
 */
export type ViewConfig =
  | {
      type: 'lvm';
      /** VG/LV (or /dev/VG/LV) of the origin volume. */
      volume: string;
      /** lvcreate's -L (5G, 512M) or -l (10%ORIGIN, 20%FREE) for the copy-on-write space. */
      size: string;
      /** Where the origin is mounted: sources under it are read from the snapshot. */
      origin: string;
      /** Where the snapshot is mounted (read-only). */
      mount: string;
      /** Extra mount options (ro is always there; nouuid is added for XFS). */
      mountOptions: string[];
    }
  | {
      type: 'btrfs';
      /** The subvolume (its path): sources under it are read from the snapshot. */
      subvolume: string;
      /** A folder on the same btrfs filesystem where the read-only snapshot is made. */
      snapshotDir: string;
    };

export type HookPhase = 'before' | 'after_snapshot' | 'after' | 'on_failure';
export const HOOK_PHASES: HookPhase[] = ['before', 'after_snapshot', 'after', 'on_failure'];

export interface Hook {
  /** argv (run as is) or a shell string (run by /bin/sh -c). */
  run: string[] | string;
  /** Seconds before it is stopped (SIGTERM, then SIGKILL 5 s later). */
  timeout: number;
  env: Record<string, string>;
  user?: string;
  cwd?: string;
  /** essential: a failure fails the run (cleanup still runs); optional: a warning. */
  mode: 'essential' | 'optional';
}

export type HooksConfig = Record<HookPhase, Hook[]>;

const VIEW_LVM = ['type', 'volume', 'size', 'origin', 'mount', 'mount_options'];
const VIEW_BTRFS = ['type', 'subvolume', 'snapshot_dir'];
const HOOK_KEYS = ['run', 'timeout', 'env', 'user', 'cwd', 'mode'];
const DEFAULT_TIMEOUT = 600;

function absPath(c: Checker, where: (string | number)[], v: unknown, what: string): string {
  const s = c.str(where, v, what);
  if (!path.isAbsolute(s)) c.fail(where, `"${s}" is not absolute: write it from /`);
  return path.resolve(s);
}

export function checkView(c: Checker, v: unknown, job: string): ViewConfig | undefined {
  if (v === undefined || v === null) return undefined;
  const type = (v as { type?: unknown }).type;
  if (type === 'none') {
    c.keys(['view'], v, ['type']);
    return undefined;
  }
  if (type === 'lvm') {
    const o = c.keys(['view'], v, VIEW_LVM);
    const volume = c.str(['view', 'volume'], o.volume, 'the origin volume as VG/LV or /dev/VG/LV');
    if (!/^(\/dev\/)?[A-Za-z0-9+_.][A-Za-z0-9+_.-]*\/[A-Za-z0-9+_.][A-Za-z0-9+_.-]*$/.test(volume)) c.fail(['view', 'volume'], `"${volume}" is not VG/LV or /dev/VG/LV (see lvs)`);
    const size = o.size === undefined ? '10%ORIGIN' : c.str(['view', 'size'], o.size, 'a snapshot size');
    if (!/^\d+(\.\d+)?[bBsSkKmMgGtT]?$/.test(size) && !/^\d+%(ORIGIN|FREE|VG)$/.test(size)) c.fail(['view', 'size'], `"${size}" is not a size: give one like 5G or 512M, or a share like 10%ORIGIN or 20%FREE`);
    if (o.origin === undefined) c.fail(['view'], 'missing "origin": where the volume is mounted (sources under it are read from the snapshot)');
    const mountOptions = c.strList(['view', 'mount_options'], o.mount_options, 'mount option');
    for (const [i, m] of mountOptions.entries()) if (!/^[A-Za-z0-9_=.,:/-]+$/.test(m)) c.fail(['view', 'mount_options', i], `"${m}" is not a mount option`);
    return {
      type: 'lvm',
      volume: volume.replace(/^\/dev\//, ''),
      size,
      origin: absPath(c, ['view', 'origin'], o.origin, 'an absolute path'),
      mount: o.mount === undefined ? `/run/bakker/view-${job}` : absPath(c, ['view', 'mount'], o.mount, 'an absolute path'),
      mountOptions,
    };
  }
  if (type === 'btrfs') {
    const o = c.keys(['view'], v, VIEW_BTRFS);
    if (o.subvolume === undefined) c.fail(['view'], 'missing "subvolume": the path of the btrfs subvolume the sources live on');
    const subvolume = absPath(c, ['view', 'subvolume'], o.subvolume, 'an absolute path');
    return { type: 'btrfs', subvolume, snapshotDir: o.snapshot_dir === undefined ? path.join(subvolume, '.bakker-snapshots') : absPath(c, ['view', 'snapshot_dir'], o.snapshot_dir, 'an absolute path') };
  }
  c.fail(['view', 'type'], `expected none, lvm or btrfs, got ${JSON.stringify(type ?? null)}`);
}

function checkHook(c: Checker, where: (string | number)[], v: unknown): Hook {
  if (typeof v === 'string' || Array.isArray(v)) return checkHook(c, where, { run: v });
  const o = c.keys(where, v, HOOK_KEYS);
  let run: string[] | string;
  if (Array.isArray(o.run)) {
    run = c.strList([...where, 'run'], o.run, 'command word');
    if (run.length === 0) c.fail([...where, 'run'], 'expected a command: a list of words, or a shell string');
  } else run = c.str([...where, 'run'], o.run, 'a command: a list of words, or a shell string');
  let timeout = DEFAULT_TIMEOUT;
  if (o.timeout !== undefined) {
    if (typeof o.timeout !== 'number' || !(o.timeout > 0)) c.fail([...where, 'timeout'], `expected seconds (more than 0), got ${JSON.stringify(o.timeout)}`);
    timeout = o.timeout as number;
  }
  const env: Record<string, string> = {};
  if (o.env !== undefined) {
    const e = c.keys([...where, 'env'], o.env, Object.keys((o.env ?? {}) as object));
    for (const [k, val] of Object.entries(e)) {
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) c.fail([...where, 'env', k], `"${k}" is not an environment variable name`);
      if (typeof val !== 'string' && typeof val !== 'number' && typeof val !== 'boolean') c.fail([...where, 'env', k], 'expected a string');
      env[k] = String(val);
    }
  }
  const mode = o.mode === undefined ? 'essential' : o.mode;
  if (mode !== 'essential' && mode !== 'optional') c.fail([...where, 'mode'], `expected essential or optional, got ${JSON.stringify(mode)}`);
  const hook: Hook = { run, timeout, env, mode };
  if (o.user !== undefined) hook.user = c.str([...where, 'user'], o.user, 'a user name');
  if (o.cwd !== undefined) hook.cwd = absPath(c, [...where, 'cwd'], o.cwd, 'an absolute path');
  return hook;
}

export function checkHooks(c: Checker, v: unknown): HooksConfig {
  const out: HooksConfig = { before: [], after_snapshot: [], after: [], on_failure: [] };
  if (v === undefined || v === null) return out;
  const o = c.keys(['hooks'], v, HOOK_PHASES);
  for (const phase of HOOK_PHASES) {
    const list = o[phase];
    if (list === undefined || list === null) continue;
    if (!Array.isArray(list)) c.fail(['hooks', phase], 'expected a list of hooks (each a command, or a mapping with run:)');
    out[phase] = list.map((h, i) => checkHook(c, ['hooks', phase, i], h));
  }
  return out;
}

const RETENTION_COUNTS: [string, keyof Policy][] = [
  ['keep_last', 'keepLast'],
  ['keep_hourly', 'keepHourly'],
  ['keep_daily', 'keepDaily'],
  ['keep_weekly', 'keepWeekly'],
  ['keep_monthly', 'keepMonthly'],
  ['keep_yearly', 'keepYearly'],
  ['min_keep', 'minKeep'],
];
const RETENTION_DURATIONS: [string, keyof Policy][] = [
  ['keep_within', 'keepWithin'],
  ['keep_within_hourly', 'keepWithinHourly'],
  ['keep_within_daily', 'keepWithinDaily'],
  ['keep_within_weekly', 'keepWithinWeekly'],
  ['keep_within_monthly', 'keepWithinMonthly'],
  ['keep_within_yearly', 'keepWithinYearly'],
];
export const RETENTION_KEYS = [...RETENTION_COUNTS, ...RETENTION_DURATIONS].map(([k]) => k);

/** A retention policy (docs/RETENTION.md): counts are whole numbers (-1: all), durations like 14d or 1y6m. */
export function checkRetention(c: Checker, where: (string | number)[], v: unknown): Policy {
  const o = c.keys(where, v, RETENTION_KEYS);
  const p: Policy = {};
  for (const [key, field] of RETENTION_COUNTS) {
    const x = o[key];
    if (x === undefined) continue;
    if (typeof x !== 'number' || !Number.isInteger(x) || x < -1 || (key === 'min_keep' && x < 0)) c.fail([...where, key], `expected a whole number${key === 'min_keep' ? '' : ' (-1: all)'}, got ${JSON.stringify(x)}`);
    (p as Record<string, unknown>)[field] = x;
  }
  for (const [key, field] of RETENTION_DURATIONS) {
    const x = o[key];
    if (x === undefined) continue;
    const d = typeof x === 'string' ? parseDuration(x) : null;
    if (!d) c.fail([...where, key], `expected a duration such as 14d, 6m or 1y6m (years, months, days, hours), got ${JSON.stringify(x)}`);
    (p as Record<string, unknown>)[field] = d;
  }
  return p;
}
