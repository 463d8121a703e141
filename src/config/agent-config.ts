import type { NotifyConfig } from '../agent/notify.js';
import type { Checker } from './config.js';

/** `agent:` of the config: how `bakker agent` runs jobs (docs/OPERATION.md). */
export interface AgentConfig {
  /** When jobs run: "*-*-* HH:MM[:SS]", "daily" or "hourly" (the timer takes any OnCalendar). */
  schedule?: string;
  /** The local trigger socket (root only). */
  socket: string;
  /** Seconds between looks for a trigger file in each target's store (0: never). */
  triggerPoll: number;
  /** An HTTP trigger endpoint with a bearer token. */
  http?: { host: string; port: number; tokenFile: string };
}

export interface OperationConfig {
  agent: AgentConfig;
  monitoring?: { textfile: string };
  notify?: NotifyConfig;
}

/** "*-*-* 01:00:00" / "daily" / "hourly" -> the next time after `now`, or null when not of that form. */
export function nextRun(schedule: string, now: Date): Date | null {
  const s = schedule.trim();
  const t = new Date(now.getTime());
  t.setMilliseconds(0);
  if (s === 'hourly') {
    t.setMinutes(0, 0);
    t.setHours(t.getHours() + 1);
    return t;
  }
  const m = s === 'daily' ? ['', '0', '0', '0'] : /^(?:\*-\*-\*\s+)?(\d{1,2}):(\d{2})(?::(\d{2}))?$/.exec(s);
  if (!m) return null;
  const [h, mi, se] = [Number(m[1]), Number(m[2]), Number(m[3] ?? 0)];
  if (h > 23 || mi > 59 || se > 59) return null;
  t.setHours(h, mi, se);
  if (t.getTime() <= now.getTime()) t.setDate(t.getDate() + 1);
  return t;
}

export function checkOperation(c: Checker, o: Record<string, unknown>): OperationConfig {
  const out: OperationConfig = { agent: { socket: '/run/bakker/bakker.sock', triggerPoll: 60 } };
  if (o.agent !== undefined) {
    const w = ['agent'];
    const a = c.keys(w, o.agent, ['schedule', 'socket', 'trigger_poll', 'http']);
    if (a.schedule !== undefined) {
      const s = c.str([...w, 'schedule'], a.schedule, 'a time such as "*-*-* 01:00:00"');
      if (!nextRun(s, new Date())) c.fail([...w, 'schedule'], `expected "*-*-* HH:MM[:SS]", "daily" or "hourly", got "${s}" (the systemd timer of bakker install takes any OnCalendar)`);
      out.agent.schedule = s;
    }
    if (a.socket !== undefined) out.agent.socket = c.str([...w, 'socket'], a.socket, 'a socket path');
    if (a.trigger_poll !== undefined) {
      if (typeof a.trigger_poll !== 'number' || !Number.isInteger(a.trigger_poll) || a.trigger_poll < 0) c.fail([...w, 'trigger_poll'], `expected whole seconds (0: off), got ${JSON.stringify(a.trigger_poll)}`);
      out.agent.triggerPoll = a.trigger_poll as number;
    }
    if (a.http !== undefined) {
      const hw = [...w, 'http'];
      const h = c.keys(hw, a.http, ['listen', 'token_file']);
      const listen = c.str([...hw, 'listen'], h.listen, 'HOST:PORT');
      const m = /^(.+):(\d{1,5})$/.exec(listen);
      if (!m || Number(m[2]) > 65535) c.fail([...hw, 'listen'], `expected HOST:PORT such as 127.0.0.1:8732, got "${listen}"`);
      if (h.token_file === undefined) c.fail(hw, 'missing "token_file": a file holding the bearer token callers must send (at least 16 characters)');
      out.agent.http = { host: m[1]!.replace(/^\[|\]$/g, ''), port: Number(m[2]), tokenFile: c.str([...hw, 'token_file'], h.token_file, 'a token file') };
    }
  }
  if (o.monitoring !== undefined) {
    const m = c.keys(['monitoring'], o.monitoring, ['textfile']);
    out.monitoring = { textfile: c.str(['monitoring', 'textfile'], m.textfile, 'a .prom file path in node_exporter\'s textfile directory') };
    if (!out.monitoring.textfile.endsWith('.prom')) c.fail(['monitoring', 'textfile'], `node_exporter reads only *.prom files: got "${out.monitoring.textfile}"`);
  }
  if (o.notify !== undefined) {
    const n = c.keys(['notify'], o.notify, ['on', 'command', 'webhook', 'mail', 'sendmail']);
    const cfg: NotifyConfig = { on: 'failure' };
    if (n.on !== undefined) {
      if (n.on !== 'failure' && n.on !== 'always') c.fail(['notify', 'on'], `expected failure or always, got ${JSON.stringify(n.on)}`);
      cfg.on = n.on as NotifyConfig['on'];
    }
    if (n.command !== undefined) cfg.command = c.str(['notify', 'command'], n.command, 'a shell command');
    if (n.webhook !== undefined) {
      cfg.webhook = c.str(['notify', 'webhook'], n.webhook, 'an http(s):// URL');
      if (!/^https?:\/\/[^/\s]+/.test(cfg.webhook)) c.fail(['notify', 'webhook'], `expected an http(s):// URL, got "${cfg.webhook}"`);
    }
    if (n.mail !== undefined) {
      cfg.mail = c.str(['notify', 'mail'], n.mail, 'a mail address');
      if (!/^[^@\s]+@[^@\s]+$/.test(cfg.mail)) c.fail(['notify', 'mail'], `expected a mail address, got "${cfg.mail}"`);
    }
    if (n.sendmail !== undefined) cfg.sendmail = c.str(['notify', 'sendmail'], n.sendmail, 'the sendmail program');
    if (!cfg.command && !cfg.webhook && !cfg.mail) c.fail(['notify'], 'give at least one of command, webhook, mail');
    out.notify = cfg;
  }
  return out;
}
