import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, timingSafeEqual } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import type { Config } from '../config/config.js';
import { nextRun } from '../config/agent-config.js';
import { BakkerError, errMessage, errnoCode } from '../errors.js';
import { openTargetStore } from '../store/open.js';
import { SELF_ENV, selfCommand } from '../cli/self.js';

/**
 * `bakker agent`: runs the config's job on its schedule and on demand (docs/OPERATION.md):
 * from `bakker trigger` through a root-only unix socket, from a trigger file dropped into a
 * target's store (`.bakker/trigger`, polled, removed when taken: the storage side needs no
 * connection to the server), and from an HTTP endpoint with a bearer token. One run at a time;
 * triggers during a run are coalesced into one follow-up run. Each run is a child
 * `bakker backup -c CONFIG`, so it records its status, textfile and notifications as any run.
 */

export type Log = (level: 'info' | 'warning' | 'error', message: string) => void;

export type TriggerState = 'started' | 'queued' | 'coalesced';

export const TRIGGER_FILE = Buffer.from('.bakker/trigger');

export class Agent {
  private child: ChildProcess | null = null;
  private pending: string | null = null;
  private stopping = false;
  private timer: NodeJS.Timeout | null = null;
  private poller: NodeJS.Timeout | null = null;
  private socket: net.Server | null = null;
  private web: http.Server | null = null;
  private token: Buffer | null = null;
  runs = 0;
  private idle: (() => void)[] = [];

  constructor(
    private readonly config: Config,
    private readonly log: Log,
  ) {}

  get job(): string {
    return this.config.job ?? 'default';
  }

  /** A trigger from `source`: a run now, or one follow-up after the current run. */
  trigger(source: string): TriggerState {
    if (this.stopping) throw new BakkerError('USAGE', 'the agent is stopping');
    if (this.child) {
      const state = this.pending ? 'coalesced' : 'queued';
      this.pending ??= source;
      this.log('info', `trigger from ${source}: a run is going on; ${state === 'queued' ? 'one more run follows it' : 'already queued after it (coalesced)'}`);
      return state;
    }
    this.start(source);
    return 'started';
  }

  private start(source: string): void {
    const [node, ...args] = selfCommand(['backup', '-c', this.config.file]);
    this.log('info', `run started (trigger: ${source})`);
    const started = Date.now();
    this.runs++;
    const child = spawn(node!, args, { stdio: ['ignore', 'inherit', 'inherit'], env: { ...process.env, ...SELF_ENV } });
    this.child = child;
    child.on('error', (err) => this.log('error', `cannot start the run: ${errMessage(err)}`));
    child.on('close', (code, sig) => {
      this.child = null;
      const secs = ((Date.now() - started) / 1000).toFixed(1);
      if (code === 0) this.log('info', `run finished in ${secs} s`);
      else this.log(code === 3 ? 'warning' : 'error', `run ended with ${sig ? `signal ${sig}` : `exit code ${code}`} after ${secs} s (see bakker status)`);
      const next = this.pending;
      this.pending = null;
      if (next && !this.stopping) this.start(`${next} (coalesced)`);
      else for (const f of this.idle.splice(0)) f();
    });
  }

  /** Resolves when no run is going on and none is queued. */
  whenIdle(): Promise<void> {
    return this.child ? new Promise((r) => this.idle.push(r)) : Promise.resolve();
  }

  state(): { job: string; running: boolean; queued: boolean; runs: number; nextRun: string | null } {
    const schedule = this.config.operation.agent.schedule;
    const n = schedule ? nextRun(schedule, new Date()) : null;
    return { job: this.job, running: this.child !== null, queued: this.pending !== null, runs: this.runs, nextRun: n ? n.toISOString() : null };
  }

  async listen(): Promise<void> {
    const a = this.config.operation.agent;
    await this.listenSocket(a.socket);
    if (a.http) await this.listenHttp(a.http.host, a.http.port, a.http.tokenFile);
    if (a.schedule) this.schedule(a.schedule);
    if (a.triggerPoll > 0) this.poll(a.triggerPoll * 1000);
    this.log('info', `agent for job ${this.job} (${this.config.file}): socket ${a.socket}${a.http ? `, HTTP ${a.http.host}:${a.http.port}` : ''}${a.schedule ? `, schedule ${a.schedule}` : ', no schedule'}${a.triggerPoll > 0 ? `, trigger files every ${a.triggerPoll} s` : ''}`);
  }

  private schedule(spec: string): void {
    const at = nextRun(spec, new Date())!;
    // Long waits in steps (timers cap at 24.8 days; the clock may jump).
    const wait = Math.min(at.getTime() - Date.now(), 3_600_000);
    this.timer = setTimeout(() => {
      if (Date.now() >= at.getTime() - 500) this.safeTrigger('schedule');
      this.schedule(spec);
    }, Math.max(wait, 0));
  }

  private safeTrigger(source: string): void {
    try {
      this.trigger(source);
    } catch (err) {
      this.log('warning', `trigger from ${source} refused: ${errMessage(err)}`);
    }
  }

  private async listenSocket(file: string): Promise<void> {
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    if (fs.existsSync(file)) {
      const live = await new Promise<boolean>((res) => {
        const c = net.connect(file, () => {
          c.destroy();
          res(true);
        });
        c.on('error', () => res(false));
      });
      if (live) throw new BakkerError('LOCKED', `another bakker agent listens on ${file}: stop it first (systemctl stop bakker-agent)`);
      fs.rmSync(file, { force: true });
    }
    const server = net.createServer((conn) => {
      let buf = '';
      conn.setEncoding('utf8');
      conn.on('error', () => undefined);
      conn.on('data', (d: string) => {
        buf += d;
        if (!buf.includes('\n') && buf.length < 4096) return;
        let reply: Record<string, unknown>;
        try {
          const req = JSON.parse(buf.split('\n')[0]!) as { trigger?: string | null; status?: boolean };
          if (req.status) reply = { ok: true, ...this.state() };
          else if (req.trigger !== undefined && req.trigger !== null && req.trigger !== this.job) reply = { ok: false, error: `this agent runs job "${this.job}", not "${req.trigger}"` };
          else reply = { ok: true, job: this.job, state: this.trigger('socket') };
        } catch (err) {
          reply = { ok: false, error: err instanceof SyntaxError ? 'not a JSON request line' : errMessage(err) };
        }
        conn.end(JSON.stringify(reply) + '\n');
      });
    });
    await new Promise<void>((res, rej) => {
      server.once('error', rej);
      server.listen(file, () => res());
    });
    fs.chmodSync(file, 0o600); // root only: the socket starts backups
    this.socket = server;
  }

  private async listenHttp(host: string, port: number, tokenFile: string): Promise<void> {
    let text: string;
    try {
      text = fs.readFileSync(tokenFile, 'utf8').trim();
    } catch (err) {
      throw new BakkerError('CONFIG', `cannot read agent.http.token_file ${tokenFile} (${errnoCode(err) ?? errMessage(err)}): write a random token there (openssl rand -hex 32 > ${tokenFile}; chmod 600)`);
    }
    if (text.length < 16) throw new BakkerError('CONFIG', `the token in ${tokenFile} is shorter than 16 characters: use a random one (openssl rand -hex 32)`);
    if (fs.statSync(tokenFile).mode & 0o077) this.log('warning', `${tokenFile} can be read by other users than its owner: chmod 600 it`);
    this.token = createHash('sha256').update(text).digest();
    const server = http.createServer((req, res) => {
      const send = (status: number, body: Record<string, unknown>, headers: Record<string, string> = {}) => {
        res.writeHead(status, { 'content-type': 'application/json', ...headers });
        res.end(JSON.stringify(body) + '\n');
      };
      const auth = req.headers.authorization ?? '';
      const m = /^Bearer\s+(.+)$/i.exec(auth);
      const given = m ? createHash('sha256').update(m[1]!.trim()).digest() : null;
      if (!given || !timingSafeEqual(given, this.token!)) {
        this.log('warning', `HTTP ${req.method} ${req.url} from ${req.socket.remoteAddress}: ${given ? 'wrong' : 'no'} bearer token: refused`);
        return send(401, { ok: false, error: 'a valid bearer token is required' }, { 'www-authenticate': 'Bearer' });
      }
      const url = new URL(req.url ?? '/', 'http://agent');
      if (req.method === 'POST' && url.pathname === '/trigger') {
        const job = url.searchParams.get('job');
        if (job !== null && job !== this.job) return send(404, { ok: false, error: `this agent runs job "${this.job}", not "${job}"` });
        try {
          return send(202, { ok: true, job: this.job, state: this.trigger(`HTTP from ${req.socket.remoteAddress}`) });
        } catch (err) {
          return send(503, { ok: false, error: errMessage(err) });
        }
      }
      if (req.method === 'GET' && url.pathname === '/status') return send(200, { ok: true, ...this.state() });
      return send(404, { ok: false, error: 'POST /trigger[?job=JOB] or GET /status' });
    });
    await new Promise<void>((res, rej) => {
      server.once('error', (err) => rej(new BakkerError('CONFIG', `agent.http.listen ${host}:${port}: ${errMessage(err)}`)));
      server.listen(port, host, () => res());
    });
    this.web = server;
  }

  /** Takes `.bakker/trigger` from each target's store (removing it is taking it: only one taker wins). */
  private poll(everyMs: number): void {
    const look = async () => {
      for (const t of this.config.targets) {
        if (this.stopping) return;
        try {
          const store = await openTargetStore({ ...t, reconnectFor: 0 });
          try {
            await store.unlink(TRIGGER_FILE);
            this.log('info', `took the trigger file in ${store.url}`);
            this.safeTrigger(`trigger file in target ${t.name}`);
          } catch (err) {
            if (errnoCode(err) !== 'ENOENT') throw err;
          } finally {
            await store.close();
          }
        } catch (err) {
          this.log('warning', `cannot look for a trigger file in target ${t.name}: ${errMessage(err)}`);
        }
      }
    };
    const loop = () => {
      this.poller = setTimeout(() => void look().finally(() => !this.stopping && loop()), everyMs);
    };
    loop();
  }

  /** Stops listening; a run going on is let finish (SIGTERM is passed on when `now`). */
  async stop(now: boolean): Promise<void> {
    this.stopping = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.poller) clearTimeout(this.poller);
    this.pending = null;
    await Promise.all([
      new Promise<void>((r) => (this.socket ? this.socket.close(() => r()) : r())),
      new Promise<void>((r) => {
        if (!this.web) return r();
        this.web.close(() => r());
        this.web.closeAllConnections();
      }),
    ]);
    if (this.child && now) this.child.kill('SIGTERM');
    await this.whenIdle();
  }
}
