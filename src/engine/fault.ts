/**
 * Test-only fault injection: when BAKKER_FAULT names this point, the process kills itself with
 * SIGKILL right there, so tests can prove a kill at any step leaves the store consistent.
 */
export function faultPoint(name: string): void {
  if (process.env.BAKKER_FAULT === name) process.kill(process.pid, 'SIGKILL');
}
