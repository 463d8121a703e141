import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The command line that runs this bakker again (a timer's service, the agent's runs): this
 * node, the bin's V8 flags, the bin (dist/src/cli -> bin/bakker.js; a single-file build is the
 * script itself), then `args`.
 */
export function selfCommand(args: string[]): string[] {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const bin = [path.resolve(here, '../../../bin/bakker.js'), process.argv[1] ? fs.realpathSync(process.argv[1]) : ''].find((c) => c && fs.existsSync(c))!;
  return [process.execPath, ...process.execArgv.filter((a) => a.startsWith('--max-semi-space-size') || a === '--expose-gc'), bin, ...args];
}

/**
 * What the bin's shebang puts in the environment, which a run started as `node bin/bakker.js`
 * needs too: one malloc arena for V8's threads (bin/bakker.js says why).
 */
export const SELF_ENV: Record<string, string> = { MALLOC_ARENA_MAX: '1' };
