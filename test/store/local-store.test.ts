import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { LocalStore } from '../../src/store/local/local-store.js';
import { storeConformance } from './conformance.js';

storeConformance('local', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'store-'));
  return { store: new LocalStore(dir), cleanup: async () => fs.rmSync(dir, { recursive: true, force: true }), localPath: dir };
});
