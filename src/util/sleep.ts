/** Blocks the thread for `ms` (for code that must not yield: test fault points, admin commands). */
export function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}
