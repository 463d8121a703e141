import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { errMessage, errnoCode } from '../errors.js';
import { compilePattern, PatternError } from '../scan/exclude.js';
import type { Store } from '../store/store.js';
import { HASH_ALGOS, type HashAlgo } from '../util/hash.js';
import { parseYaml } from './config.js';

/**
 * The config a store may hold (.bakker/config.yaml; docs/CONFIG.md, "Config on the store"): what
 * to back up, set from the storage side or a controlling service. Connection settings never come
 * from there. Each good copy is cached on this server, so a store copy that cannot be read or is
 * invalid falls back to the last good one.
 */
export interface StoreConfig {
  sources?: string[];
  exclude?: string[];
  oneFileSystem?: boolean;
  checksum?: HashAlgo | null;
}

export type StoreConfigState = { state: 'none' } | { state: 'applied'; config: StoreConfig } | { state: 'cached'; config: StoreConfig; why: string } | { state: 'ignored'; why: string };

export const STORE_CONFIG = Buffer.from('.bakker/config.yaml');
const KEYS = ['sources', 'exclude', 'one_file_system', 'checksum'];

export function parseStoreConfig(text: string, file: string): StoreConfig {
  const { c, raw } = parseYaml(text, file);
  if (raw === null || raw === undefined) return {};
  const o = c.keys([], raw, KEYS);
  const out: StoreConfig = {};
  if (o.sources !== undefined) {
    const sources = c.strList(['sources'], o.sources, 'absolute path');
    if (sources.length === 0) c.fail(['sources'], 'expected at least one absolute path');
    sources.forEach((s, i) => {
      if (!path.isAbsolute(s)) c.fail(['sources', i], `"${s}" is not absolute: write it from /`);
    });
    out.sources = sources;
  }
  if (o.exclude !== undefined) {
    out.exclude = c.strList(['exclude'], o.exclude, 'pattern');
    out.exclude.forEach((p, i) => {
      try {
        compilePattern(p);
      } catch (err) {
        if (err instanceof PatternError) c.fail(['exclude', i], err.message);
        throw err;
      }
    });
  }
  if (o.one_file_system !== undefined) out.oneFileSystem = c.bool(['one_file_system'], o.one_file_system);
  if (o.checksum !== undefined) {
    if (o.checksum === 'none' || o.checksum === false) out.checksum = null;
    else {
      const v = c.str(['checksum'], o.checksum, `one of ${HASH_ALGOS.join(', ')}, none`);
      if (!(HASH_ALGOS as readonly string[]).includes(v)) c.fail(['checksum'], `expected one of ${HASH_ALGOS.join(', ')}, none; got "${v}"`);
      out.checksum = v as HashAlgo;
    }
  }
  return out;
}

/** Where this server keeps its state (cached store configs): BAKKER_STATE_DIR or /var/lib/bakker. */
export function stateDir(): string {
  return process.env.BAKKER_STATE_DIR ?? '/var/lib/bakker';
}

function cacheFile(storeUrl: string): string {
  return path.join(stateDir(), 'store-config', `${createHash('sha256').update(storeUrl).digest('hex').slice(0, 32)}.yaml`);
}

/**
 * Reads the store's config: applied when valid (and cached), the cached copy when the store's
 * cannot be read or is invalid, nothing when the store has none.
 */
export async function loadStoreConfig(store: Store): Promise<StoreConfigState> {
  const where = `${store.url}/.bakker/config.yaml`;
  let why: string;
  try {
    const text = (await store.readFile(STORE_CONFIG)).toString('utf8');
    const config = parseStoreConfig(text, where);
    try {
      const f = cacheFile(store.url);
      fs.mkdirSync(path.dirname(f), { recursive: true, mode: 0o700 });
      fs.writeFileSync(`${f}.tmp`, text, { mode: 0o600 });
      fs.renameSync(`${f}.tmp`, f);
    } catch {
      // a cache that cannot be written only loses the fallback
    }
    return { state: 'applied', config };
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return { state: 'none' };
    why = errMessage(err);
  }
  let cached: string;
  try {
    cached = fs.readFileSync(cacheFile(store.url), 'utf8');
  } catch {
    return { state: 'ignored', why: `${why}; no earlier good copy is cached, so the local settings are used` };
  }
  try {
    return { state: 'cached', config: parseStoreConfig(cached, cacheFile(store.url)), why: `${why}; the last good copy is used` };
  } catch (err) {
    return { state: 'ignored', why: `${why}; the cached copy is invalid too (${errMessage(err)}), so the local settings are used` };
  }
}
