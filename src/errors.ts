/**
 * Error classes with a stable `code`. The CLI maps them to exit codes in one table
 * (cli/exit-codes.ts); the engine only throws.
 */
export type ErrorCode =
  | 'USAGE' // bad command line
  | 'CONFIG' // bad config file
  | 'STORE' // the store cannot be used (missing, newer format, corrupt layout)
  | 'LOCKED' // another run holds the store's lock
  | 'NOT_FOUND' // a snapshot or path that does not exist
  | 'IMPL' // a manifest that is corrupt or hostile
  | 'HOOK' // an essential hook failed
  | 'FULL' // the store has no room for the run
  | 'VIEW' // a consistent view (snapshot, mount) could not be made or removed
  | 'UNSAFE' // restore refused to write somewhere it must not
  | 'IO' // an I/O failure writing the store or the restore target
  | 'VERIFY'; // verification found problems

export class BakkerError extends Error {
  readonly code: ErrorCode;
  readonly path: string | undefined;
  constructor(code: ErrorCode, message: string, opts: { cause?: unknown; path?: string } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'BakkerError';
    this.code = code;
    this.path = opts.path;
  }
}

export const usageError = (msg: string) => new BakkerError('USAGE', msg);
export const configError = (msg: string, path?: string) => new BakkerError('CONFIG', msg, { path });

/** errno code of a Node system error, or undefined. */
export function errnoCode(err: unknown): string | undefined {
  if (err && typeof err === 'object' && 'code' in err && typeof (err as { code: unknown }).code === 'string') {
    return (err as { code: string }).code;
  }
  return undefined;
}

export function errMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
