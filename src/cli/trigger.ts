import { configFileOr } from '../config/default-file.js';
import net from 'node:net';
import { BakkerError, errnoCode } from '../errors.js';
import type { Output } from '../ui/output.js';
import { parse } from './args.js';
import { EXIT } from './exit-codes.js';

export const help = `Usage: bakker trigger [JOB] [-c CONFIG] [--socket PATH] [--status]

Asks the running 'bakker agent' on this host to run its job now (through its socket:
agent.socket of the config, default /run/bakker/bakker.sock; root only). When a run is going
on, one more run follows it (several triggers then make one). --status asks the agent what
it is doing instead. Without an agent, run 'bakker backup' yourself.

Examples:
  bakker trigger
  bakker trigger server1 --socket /run/bakker/bakker.sock`;

export async function run(argv: string[], out: Output): Promise<number> {
  const { values, positionals } = parse('trigger', argv, { config: { type: 'string', short: 'c' }, socket: { type: 'string' }, status: { type: 'boolean' } }, true);
  let socket = values.socket;
  const file = configFileOr(values.config);
  if (!socket && file) socket = (await import('../config/config.js')).loadConfig(file).operation.agent.socket;
  socket ??= '/run/bakker/bakker.sock';
  const request = values.status ? { status: true } : { trigger: positionals[0] ?? null };
  const reply = await new Promise<Record<string, unknown>>((resolve, reject) => {
    let buf = '';
    const c = net.connect(socket!, () => c.write(JSON.stringify(request) + '\n'));
    c.setEncoding('utf8');
    c.setTimeout(10_000, () => c.destroy(new Error('ETIMEDOUT')));
    c.on('data', (d: string) => (buf += d));
    c.on('end', () => {
      try {
        resolve(JSON.parse(buf) as Record<string, unknown>);
      } catch {
        reject(new BakkerError('IO', `the agent at ${socket} answered something that is not JSON: ${buf.slice(0, 200)}`));
      }
    });
    c.on('error', (err) => {
      const code = errnoCode(err);
      if (code === 'ENOENT' || code === 'ECONNREFUSED') reject(new BakkerError('NOT_FOUND', `no bakker agent is listening on ${socket}: start it (systemctl start bakker-agent, or bakker agent), or run bakker backup yourself`));
      else if (code === 'EACCES') reject(new BakkerError('USAGE', `${socket} is for root only: run bakker trigger as root`));
      else reject(new BakkerError('IO', `talking to the agent at ${socket}: ${err.message}`));
    });
  });
  out.summary({ command: 'trigger', ...reply });
  if (reply.ok !== true) throw new BakkerError('USAGE', `the agent refused: ${String(reply.error)}`);
  if (values.status) out.line(`agent for job ${String(reply.job)}: ${reply.running ? 'a run is going on' : 'idle'}${reply.queued ? ', one more queued' : ''}; ${String(reply.runs)} run(s) since it started; next scheduled: ${reply.nextRun ? String(reply.nextRun) : 'none'}`);
  else out.line(`job ${String(reply.job)}: ${reply.state === 'started' ? 'run started' : reply.state === 'queued' ? 'a run is going on: one more run follows it' : 'a run is going on and one is queued already: this trigger joins it'}`);
  return EXIT.OK;
}
