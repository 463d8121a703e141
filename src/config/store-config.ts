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

function cacheFile(kind: string, key: string): string {
  return path.join(stateDir(), kind, `${createHash('sha256').update(key).digest('hex').slice(0, 32)}.yaml`);
}

/**
 * A config from elsewhere (a store, or a controlling service's URL): applied when valid (and
 * cached), the cached copy when it cannot be read or is invalid, nothing when there is none
 * (`read` rejects with code ENOENT).
 */
async function loadRemoteConfig(kind: string, key: string, where: string, read: () => Promise<string>): Promise<StoreConfigState> {
  const cache = cacheFile(kind, key);
  let why: string;
  try {
    const text = await read();
    const config = await parseStoreConfig(text, where);
    try {
      fs.mkdirSync(path.dirname(cache), { recursive: true, mode: 0o700 });
      fs.writeFileSync(`${cache}.tmp`, text, { mode: 0o600 });
      fs.renameSync(`${cache}.tmp`, cache);
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
    cached = fs.readFileSync(cache, 'utf8');
  } catch {
    return { state: 'ignored', why: `${why}; no earlier good copy is cached, so the local settings are used` };
  }
  try {
    return { state: 'cached', config: await parseStoreConfig(cached, cache), why: `${why}; the last good copy is used` };
  } catch (err) {
    return { state: 'ignored', why: `${why}; the cached copy is invalid too (${errMessage(err)}), so the local settings are used` };
  }
}

/** The store's .bakker/config.yaml (docs/CONFIG.md, "Config on the store"). */
export function loadStoreConfig(store: Store): Promise<StoreConfigState> {
  return loadRemoteConfig('store-config', store.url, `${store.url}/.bakker/config.yaml`, async () => (await store.readFile(STORE_CONFIG)).toString('utf8'));
}

/** At most this much config is read from a URL. */
const URL_LIMIT = 1 << 20;

/**
 * The config a controlling service serves over HTTPS (`config_url`; docs/CONFIG.md): the same
 * settings and checks as the config on a store. The server's certificate is checked against the
 * system's CAs, or only against `ca` (a PEM file) when given. 404 means "no config".
 */
export function loadUrlConfig(url: string, ca?: string): Promise<StoreConfigState> {
  return loadRemoteConfig('url-config', url, url, () => fetchText(url, ca));
}

async function fetchText(url: string, caFile?: string): Promise<string> {
  const https = await import('node:https');
  const ca = caFile ? fs.readFileSync(caFile) : undefined;
  return new Promise<string>((resolve, reject) => {
    const req = https.get(url, { ...(ca ? { ca } : {}), timeout: 15_000, headers: { accept: 'application/yaml, text/plain' } }, (res) => {
      if (res.statusCode === 404) {
        res.resume();
        reject(Object.assign(new Error(`${url}: 404`), { code: 'ENOENT' }));
        return;
      }
      if (res.statusCode !== 200) {
        res.resume();
        reject(new Error(`${url} answered HTTP ${res.statusCode}`));
        return;
      }
      const parts: Buffer[] = [];
      let size = 0;
      res.on('data', (d: Buffer) => {
        size += d.length;
        if (size > URL_LIMIT) req.destroy(new Error(`${url} sent more than ${URL_LIMIT} bytes`));
        else parts.push(d);
      });
      res.on('end', () => resolve(Buffer.concat(parts).toString('utf8')));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${url} did not answer within 15 s`)));
    req.on('error', (err) => reject(new Error(`cannot fetch ${url}: ${errMessage(err)}`)));
  });
}
