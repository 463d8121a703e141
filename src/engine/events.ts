/**
 * The engine never prints: it calls `emit` with these events, and the CLI renders them
 * (ui/). Live counters are a plain object the CLI samples on a timer, so progress costs the
 * run nothing.
 */
export type BakkerEvent =
  /** indexed: unchanged files are found through the previous snapshot's index (local stores). */
  | { event: 'start'; command: string; store: string; snapshot?: string; previous?: string | null; dryRun?: boolean; indexed?: boolean }
  | { event: 'warning'; path?: string; message: string }
  | { event: 'info'; message: string }
  /** One target of several failed (the others go on); a run's own failure is reported by main. */
  | { event: 'error'; target: string; code: string; message: string; exitCode: number }
  | { event: 'entry'; change: string; path: string }
  | { event: 'problem'; snapshot: string; path?: string; message: string }
  | { event: 'snapshot'; name: string; entries: number; bytes: number; newBytes: number; start?: string; durationMs?: number }
  | { event: 'restored'; path: string }
  /** The archive tier (archive/archive.ts): an archive pushed, kept, deleted, waited for, cleaned up. */
  | { event: 'archive'; action: string; snapshot: string; message: string; [k: string]: unknown }
  | { event: 'summary'; [k: string]: unknown };

export type Emit = (ev: BakkerEvent) => void;
export const noEmit: Emit = () => undefined;

export interface Progress {
  phase: string;
  entries: number;
  linked: number;
  copied: number;
  bytesCopied: number;
  /** Bytes of the files sent to be copied so far (done or not). */
  bytesToCopy: number;
  current: Buffer | null;
}

export function newProgress(): Progress {
  return { phase: 'starting', entries: 0, linked: 0, copied: 0, bytesCopied: 0, bytesToCopy: 0, current: null };
}
