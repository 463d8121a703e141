import { configFileOr } from '../config/default-file.js';
import { Agent, type Log } from '../agent/agent.js';
import { usageError } from '../errors.js';
import { journal, type Output } from '../ui/output.js';
import { parse } from './args.js';
import { EXIT } from './exit-codes.js';

export const help = `Usage: bakker agent [-c CONFIG]

Runs the config's job on its schedule (agent.schedule) and whenever it is triggered, until
stopped (SIGTERM lets a run going on finish; a second one stops it):
  - bakker trigger [JOB]             on this host, through the socket agent.socket
                                     (default /run/bakker/bakker.sock, root only)
  - a file .bakker/trigger dropped into a target's store (by the storage side or an admin),
    looked for every agent.trigger_poll seconds (default 60) and removed when taken
  - POST /trigger with "Authorization: Bearer TOKEN" on agent.http.listen (optional)
One run at a time; triggers during a run make one follow-up run (coalesced). Each run is
'bakker backup -c CONFIG': it records its status (bakker status), the Prometheus textfile and
the notifications like any other. Logs: one line per event, with journald priorities under
systemd ('bakker install --agent' sets it up as a service). See docs/OPERATION.md.

Examples:
  bakker agent -c /etc/bakker/bakker.yaml
  curl -X POST -H "Authorization: Bearer $(cat /etc/bakker/agent.token)" http://127.0.0.1:8732/trigger`;

const PRIORITY = { error: 3, warning: 4, info: 6 } as const;

/** One line per event: with a journald priority prefix under systemd, else with the time. */
export const agentLog: Log = (level, message) => {
  const line = process.env.JOURNAL_STREAM ? `${journal(PRIORITY[level])}${message}` : `${new Date().toISOString()} bakker agent: ${level === 'info' ? '' : `${level}: `}${message}`;
  process.stderr.write(line + '\n');
};

export async function run(argv: string[], _out: Output, signal: AbortSignal): Promise<number> {
  const { values } = parse('agent', argv, { config: { type: 'string', short: 'c' } });
  const file = configFileOr(values.config);
  if (!file) throw usageError('bakker agent: give the config with -c FILE');
  const config = (await import('../config/config.js')).loadConfig(file);
  const agent = new Agent(config, agentLog);
  await agent.listen();
  await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
  agentLog('info', 'stopping: a run going on is let finish (send the signal again to stop at once)');
  process.removeAllListeners('SIGTERM');
  process.removeAllListeners('SIGINT');
  let forced = false;
  const force = () => {
    if (forced) process.exit(130);
    forced = true;
    agentLog('warning', 'stopping the run going on');
    void agent.stop(true);
  };
  process.on('SIGTERM', force);
  process.on('SIGINT', force);
  await agent.stop(false);
  agentLog('info', `stopped after ${agent.runs} run(s)`);
  return EXIT.OK;
}
