import { sleepSync } from '../util/sleep.js';

/**
 * Test-only fault injection. BAKKER_FAULT=NAME kills the process with SIGKILL at that point;
 * BAKKER_FAULT=NAME:pause stops it there for 1.5 s (so a test can signal a run at a known step).
 */
export function faultPoint(name: string): void {
  const f = process.env.BAKKER_FAULT;
  if (f === name) process.kill(process.pid, 'SIGKILL');
  else if (f === `${name}:pause`) sleepSync(1500);
}
