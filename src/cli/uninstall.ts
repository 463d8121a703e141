import type { Output } from '../ui/output.js';
import { runUninstall } from './install.js';

export { help } from './install.js';

export function run(argv: string[], out: Output): Promise<number> {
  return runUninstall(argv, out);
}
