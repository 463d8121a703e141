import { parseCompression } from '../store/open.js';
import { parseRecipient } from '../crypto/age.js';
import fs from 'node:fs';
import path from 'node:path';
import { LineCounter, parseDocument, isMap, isScalar, type Node, type Document } from 'yaml';
import { configError } from '../errors.js';
import { HASH_ALGOS, type HashAlgo } from '../util/hash.js';
import { compilePattern, PatternError } from '../scan/exclude.js';
import { checkHooks, checkRetention, checkView, type HooksConfig, type ViewConfig } from './job-config.js';
import type { Policy } from '../engine/retention/policy.js';
import type { ArchiveConfig } from '../archive/archive.js';
import { checkArchives } from './archive-config.js';
import { checkOperation, type OperationConfig } from './agent-config.js';
import os from 'node:os';

/** The validated config (docs/CONFIG.md). */
export interface Config {
  file: string;
  job: string | undefined;
  sources: string[];
  exclude: string[];
  excludeFrom: string[];
  oneFileSystem: boolean;
  checksum: HashAlgo | undefined;
  targets: TargetConfig[];
  /** A controlling service's config over HTTPS (docs/CONFIG.md, "Config from a URL"), and the CA to check it with. */
  configUrl?: string;
  configUrlCa?: string;
  /** The consistent view and the hooks around it (docs/VIEWS.md). */
  view?: ViewConfig;
  hooks: HooksConfig;
  /** The object-storage tier (docs/ARCHIVES.md). */
  archives: ArchiveConfig[];
  /** The agent, monitoring and notifications (docs/OPERATION.md). */
  operation: OperationConfig;
}

export interface TargetConfig {
  name: string;
  store: string;
  /** sftp:// targets: SSH settings (the command line's --identity etc. win). */
  identity?: string;
  knownHosts?: string;
  hostKey?: string;
  /** Seconds a dropped connection is retried (default 300). */
  reconnectFor?: number;
  /**
   * Where the target's snapshots come from: undefined, the sources; else the name of a local
   * target whose newest snapshot is copied (docs/CONFIG.md, "Several targets").
   */
  from?: string;
  /** Pruned by this policy after each backup to it (docs/RETENTION.md). */
  retention?: Policy;
  /** When the store is short of space for a run: prune first (by the policy, then oldest first down to min_keep), or fail. */
  onFull?: 'prune' | 'fail';
  /** An encrypted target (docs/CONFIG.md, "Encryption"): the recipients it is written for; the identity that reads it. */
  encryption?: { recipients: string[]; identity?: string };
  /** zstd level before encryption (0: off). */
  compression?: number;
}

type Where = (string | number)[];

export class Checker {
  constructor(
    private readonly file: string,
    private readonly doc: Document,
    private readonly lines: LineCounter,
  ) {}

  fail(where: Where, msg: string): never {
    const node = where.length ? (this.doc.getIn(where, true) as Node | undefined) : undefined;
    const range = node && 'range' in node ? node.range : undefined;
    let at = this.file;
    if (range) at += `:${this.lines.linePos(range[0]).line}`;
    const key = where.length ? `${where.join('.')}: ` : '';
    throw configError(`${at}: ${key}${msg}`, this.file);
  }

  keys(where: Where, v: unknown, known: string[]): Record<string, unknown> {
    if (!v || typeof v !== 'object' || Array.isArray(v)) this.fail(where, 'expected a mapping (key: value lines)');
    const o = v as Record<string, unknown>;
    for (const k of Object.keys(o)) {
      if (!known.includes(k)) this.failKey([...where, k], `"${k}" is not a known setting here (known: ${known.join(', ')})`);
    }
    return o;
  }

  private failKey(where: Where, msg: string): never {
    // point at the key itself (the value may be empty)
    const parentNode = this.doc.getIn(where.slice(0, -1), true) as Node | undefined;
    let line: number | undefined;
    if (parentNode && isMap(parentNode)) {
      const pair = parentNode.items.find((p) => isScalar(p.key) && p.key.value === where[where.length - 1]);
      const r = pair && isScalar(pair.key) ? pair.key.range : undefined;
      if (r) line = this.lines.linePos(r[0]).line;
    }
    throw configError(`${this.file}${line ? `:${line}` : ''}: ${msg}`, this.file);
  }

  str(where: Where, v: unknown, what: string): string {
    if (typeof v !== 'string' || v.trim() === '') this.fail(where, `expected ${what}, got ${describe(v)}`);
    return v;
  }

  bool(where: Where, v: unknown): boolean {
    if (typeof v !== 'boolean') this.fail(where, `expected true or false, got ${describe(v)}`);
    return v;
  }

  strList(where: Where, v: unknown, what: string): string[] {
    if (v === undefined || v === null) return [];
    if (typeof v === 'string') return [this.str(where, v, what)];
    if (!Array.isArray(v)) this.fail(where, `expected a list of ${what}s, got ${describe(v)}`);
    return v.map((x, i) => this.str([...where, i], x, what));
  }
}

function describe(v: unknown): string {
  if (v === null || v === undefined) return 'nothing';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return `${typeof v} ${JSON.stringify(v)}`;
}

const TOP = ['job', 'sources', 'exclude', 'exclude_from', 'one_file_system', 'checksum', 'targets', 'config_url', 'config_url_ca', 'view', 'hooks', 'archives', 'agent', 'monitoring', 'notify'];
const TARGET = ['store', 'identity', 'known_hosts', 'host_key', 'reconnect_for', 'from', 'retention', 'on_full', 'encryption', 'compression'];

/** Parses YAML text into its value and a Checker that reports problems with file and line. */
export function parseYaml(text: string, file: string): { c: Checker; raw: unknown } {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const e = doc.errors[0]!;
    const line = e.linePos?.[0]?.line ?? (e.pos ? lines.linePos(e.pos[0]).line : undefined);
    throw configError(`${file}${line ? `:${line}` : ''}: not valid YAML: ${e.message.split('\n')[0]}`, file);
  }
  return { c: new Checker(file, doc, lines), raw: doc.toJS() as unknown };
}

/** `encryption: {recipients: [age1...], identity: FILE}` of a target or an archive. */
export function checkEncryption(c: Checker, w: Where, v: unknown, what: string): { recipients: string[]; identity?: string } {
  const e = c.keys(w, v, ['recipients', 'identity']);
  if (e.recipients === undefined) c.fail(w, `missing "recipients": the age1... public keys ${what} for (bakker key generate prints one)`);
  const recipients = c.strList([...w, 'recipients'], e.recipients, 'age1... recipients');
  if (recipients.length === 0) c.fail([...w, 'recipients'], 'expected at least one age1... recipient');
  recipients.forEach((r, i) => {
    try {
      parseRecipient(r);
    } catch {
      c.fail([...w, 'recipients', i], `"${r}" is not an age X25519 recipient (age1..., as bakker key generate or age-keygen prints it)`);
    }
  });
  return { recipients, ...(e.identity !== undefined ? { identity: c.str([...w, 'identity'], e.identity, 'an age identity file') } : {}) };
}

/** `sources`: a non-empty list of absolute paths (shared with the config on a store). */
export function checkSources(c: Checker, v: unknown): string[] {
  const sources = c.strList(['sources'], v, 'absolute path');
  if (sources.length === 0) c.fail(['sources'], 'expected at least one absolute path');
  sources.forEach((s, i) => {
    if (!path.isAbsolute(s)) c.fail(['sources', i], `"${s}" is not absolute: write it from / (for example /${s.replace(/^\.?\/*/, '')})`);
  });
  return sources;
}

/** `exclude`: patterns that compile (EXCLUDES.md). */
export function checkExclude(c: Checker, v: unknown): string[] {
  const exclude = c.strList(['exclude'], v, 'pattern');
  exclude.forEach((p, i) => {
    try {
      compilePattern(p);
    } catch (err) {
      if (err instanceof PatternError) c.fail(['exclude', i], err.message);
      throw err;
    }
  });
  return exclude;
}

/** `checksum`: an algorithm, or null for none / false. */
export function checkChecksum(c: Checker, v: unknown): HashAlgo | null {
  if (v === 'none' || v === false) return null;
  const a = c.str(['checksum'], v, `one of ${HASH_ALGOS.join(', ')}, none`);
  if (!(HASH_ALGOS as readonly string[]).includes(a)) c.fail(['checksum'], `expected one of ${HASH_ALGOS.join(', ')}, none; got "${a}"`);
  return a as HashAlgo;
}

export function parseConfig(text: string, file: string): Config {
  const { c, raw } = parseYaml(text, file);
  if (raw === null || raw === undefined) throw configError(`${file}: the file is empty: it needs at least sources and targets`, file);
  const o = c.keys([], raw, TOP);

  const job = o.job === undefined ? undefined : c.str(['job'], o.job, 'a job name');
  if (job !== undefined && !/^[A-Za-z0-9._-]+$/.test(job)) c.fail(['job'], 'use only letters, digits, ".", "_" and "-"');
  if (o.sources === undefined) c.fail([], 'missing "sources": list the absolute paths to back up');
  const sources = checkSources(c, o.sources);
  const exclude = checkExclude(c, o.exclude);
  const excludeFrom = c.strList(['exclude_from'], o.exclude_from, 'file path');
  const oneFileSystem = o.one_file_system === undefined ? false : c.bool(['one_file_system'], o.one_file_system);
  const checksum = o.checksum === undefined ? undefined : (checkChecksum(c, o.checksum) ?? undefined);
  if (o.targets === undefined) c.fail([], 'missing "targets": name at least one, for example targets: {local: {store: /backups/server1}}');
  const tmap = c.keys(['targets'], o.targets, Object.keys((o.targets ?? {}) as object));
  const targets: TargetConfig[] = [];
  for (const [name, v] of Object.entries(tmap)) {
    if (!/^[A-Za-z0-9._-]+$/.test(name)) c.fail(['targets', name], 'a target name may use only letters, digits, ".", "_" and "-"');
    const t = c.keys(['targets', name], v, TARGET);
    if (t.store === undefined) c.fail(['targets', name], 'missing "store": a folder path or sftp://user@host[:port]/path');
    const target: TargetConfig = { name, store: c.str(['targets', name, 'store'], t.store, 'a folder path or sftp://user@host[:port]/path') };
    if (t.identity !== undefined) target.identity = c.str(['targets', name, 'identity'], t.identity, 'a private key file');
    if (t.known_hosts !== undefined) target.knownHosts = c.str(['targets', name, 'known_hosts'], t.known_hosts, 'a known_hosts file');
    if (t.host_key !== undefined) {
      target.hostKey = c.str(['targets', name, 'host_key'], t.host_key, 'a host key fingerprint');
      if (!/^SHA256:[A-Za-z0-9+/]{43}$/.test(target.hostKey)) c.fail(['targets', name, 'host_key'], `expected a fingerprint as ssh-keygen -lf prints it (SHA256: and 43 characters), got "${target.hostKey}"`);
    }
    if (t.reconnect_for !== undefined) {
      if (typeof t.reconnect_for !== 'number' || !Number.isInteger(t.reconnect_for) || t.reconnect_for < 0) c.fail(['targets', name, 'reconnect_for'], `expected whole seconds (0: fail at once), got ${JSON.stringify(t.reconnect_for)}`);
      target.reconnectFor = t.reconnect_for as number;
    }
    if (!target.store.startsWith('sftp://') && (target.identity ?? target.knownHosts ?? target.hostKey ?? target.reconnectFor) !== undefined) {
      c.fail(['targets', name], 'identity, known_hosts, host_key and reconnect_for are for sftp:// stores only');
    }
    if (t.from !== undefined) target.from = c.str(['targets', name, 'from'], t.from, '"source" or the name of a local target');
    if (t.retention !== undefined) target.retention = checkRetention(c, ['targets', name, 'retention'], t.retention);
    if (t.on_full !== undefined) {
      if (t.on_full !== 'prune' && t.on_full !== 'fail') c.fail(['targets', name, 'on_full'], `expected prune or fail, got ${JSON.stringify(t.on_full)}`);
      if (t.on_full === 'prune' && !t.retention) c.fail(['targets', name, 'on_full'], 'on_full: prune needs a retention: policy (with min_keep) on this target');
      target.onFull = t.on_full as 'prune' | 'fail';
    }
    if (t.encryption !== undefined) target.encryption = checkEncryption(c, ['targets', name, 'encryption'], t.encryption, 'a backup encrypts');
    if (t.compression !== undefined) {
      const level = typeof t.compression === 'string' ? parseCompression(t.compression) : null;
      if (level === null) c.fail(['targets', name, 'compression'], `expected zstd, zstd:LEVEL (1-19) or none, got ${JSON.stringify(t.compression)}`);
      if (level) target.compression = level;
    }
    targets.push(target);
  }
  if (targets.length === 0) c.fail(['targets'], 'expected at least one target');
  // Remote targets are fed from the first local one, unless they say `from: source`.
  const local = targets.find((t) => !t.store.startsWith('sftp://') && (t.from === undefined || t.from === 'source'));
  for (const t of targets) {
    if (t.from === 'source') delete t.from;
    else if (t.from !== undefined) {
      const f = targets.find((x) => x.name === t.from);
      if (!f || f === t) throw c.fail(['targets', t.name, 'from'], `"${t.from}" is not another target here (targets: ${targets.map((x) => x.name).join(', ')}); or write "source"`);
      if (f.store.startsWith('sftp://')) c.fail(['targets', t.name, 'from'], `"${t.from}" is an sftp:// target: a target can only be fed from a local folder target`);
      if (f.from !== undefined && f.from !== 'source') c.fail(['targets', t.name, 'from'], `"${t.from}" is itself fed from "${f.from}": feed this one from "${f.from}" too`);
    } else if (local && t !== local && t.store.startsWith('sftp://')) t.from = local.name;
  }
  const view = checkView(c, o.view, job ?? 'default');
  const out: Config = { file, job, sources, exclude, excludeFrom, oneFileSystem, checksum, targets, hooks: checkHooks(c, o.hooks), archives: checkArchives(c, o.archives, targets, os.hostname()), operation: checkOperation(c, o), ...(view ? { view } : {}) };
  if (o.config_url !== undefined) {
    out.configUrl = c.str(['config_url'], o.config_url, 'an https:// URL');
    let u: URL | null = null;
    try {
      u = new URL(out.configUrl);
    } catch {
      u = null;
    }
    if (!u || u.protocol !== 'https:') c.fail(['config_url'], `expected an https:// URL, got "${out.configUrl}" (a config that decides what is backed up is only taken over a checked connection)`);
  }
  if (o.config_url_ca !== undefined) {
    out.configUrlCa = c.str(['config_url_ca'], o.config_url_ca, 'a PEM file of the CA that signed the config server\'s certificate');
    if (!out.configUrl) c.fail(['config_url_ca'], 'config_url_ca goes with config_url');
  }
  return out;
}

export function loadConfig(file: string): Config {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw configError(`cannot read config ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}: check the -c path`, file);
  }
  return parseConfig(text, file);
}
