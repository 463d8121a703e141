import fs from 'node:fs';
import path from 'node:path';
import { BakkerError } from '../errors.js';
import { LocalStore } from './local/local-store.js';
import type { Store } from './store.js';

/**
 * Opens a store from its address: a folder path (absolute or relative) or file:///path.
 * (sftp://user@host[:port]/path arrives with the SFTP store.)
 */
export async function openStore(address: string, opts: { create?: boolean; mayBeMissing?: boolean } = {}): Promise<Store> {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(address) && !address.startsWith('file://')) {
    const scheme = address.slice(0, address.indexOf(':'));
    throw new BakkerError('USAGE', `store address ${address}: the ${scheme}:// scheme is not supported yet: give a local folder`);
  }
  const dir = path.resolve(address.startsWith('file://') ? new URL(address).pathname : address);
  let st: fs.Stats | undefined;
  try {
    st = fs.statSync(dir);
  } catch {
    st = undefined;
  }
  if (!st) {
    if (opts.mayBeMissing) return new LocalStore(dir);
    if (!opts.create) throw new BakkerError('STORE', `store ${dir} does not exist: check --store, or run a backup to create it`);
    try {
      fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    } catch (err) {
      throw new BakkerError('STORE', `cannot create store folder ${dir}: ${(err as Error).message}`, { cause: err });
    }
  } else if (!st.isDirectory()) {
    throw new BakkerError('STORE', `store ${dir} is not a folder: point --store at a folder`);
  }
  return new LocalStore(dir);
}
