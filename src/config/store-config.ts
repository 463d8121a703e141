import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { errMessage, errnoCode } from '../errors.js';
import type { Store } from '../store/store.js';
import type { HashAlgo } from '../util/hash.js';
import { stateDir } from '../util/state-dir.js';

/**
 * The config a store may hold (.bakker/config.yaml; docs/CONFIG.md, "Config on the store"): what
 * to back up, set from the storage side or a controlling service. Connection settings never come
 * from there. Each good copy is cached on this server, so a store copy that cannot be read or is
 * invalid falls back to the last good one. The YAML parser is loaded only for a store that has one.
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

/** Validated like the local config (the same checks for the same settings). */
export async function parseStoreConfig(text: string, file: string): Promise<StoreConfig> {
  const { parseYaml, checkSources, checkExclude, checkChecksum } = await import('./config.js');
  const { c, raw } = parseYaml(text, file);
  if (raw === null || raw === undefined) return {};
  const o = c.keys([], raw, KEYS);
  const out: StoreConfig = {};
  if (o.sources !== undefined) out.sources = checkSources(c, o.sources);
  if (o.exclude !== undefined) out.exclude = checkExclude(c, o.exclude);
  if (o.one_file_system !== undefined) out.oneFileSystem = c.bool(['one_file_system'], o.one_file_system);
  if (o.checksum !== undefined) out.checksum = checkChecksum(c, o.checksum);
  return out;
}

export { stateDir };

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
    const config = await parseStoreConfig(text, where);
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
    return { state: 'cached', config: await parseStoreConfig(cached, cacheFile(store.url)), why: `${why}; the last good copy is used` };
  } catch (err) {
    return { state: 'ignored', why: `${why}; the cached copy is invalid too (${errMessage(err)}), so the local settings are used` };
  }
}
