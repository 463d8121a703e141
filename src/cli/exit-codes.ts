import { BakkerError } from '../errors.js';

/** The one table from errors to exit codes: 0 ok, 1 failed, 2 usage/config, 3 done but some source entries unreadable, 4 waiting for archived objects to be restored from cold storage. */
export const EXIT = { OK: 0, FAILED: 1, USAGE: 2, PARTIAL: 3, WAITING: 4 } as const;

export function exitCodeOf(err: unknown): number {
  if (err instanceof BakkerError && (err.code === 'USAGE' || err.code === 'CONFIG')) return EXIT.USAGE;
  return EXIT.FAILED;
}
