import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { BakkerError, usageError } from '../errors.js';
import type { Output } from '../ui/output.js';
import { parse } from './args.js';
import { SELF_ENV, selfCommand } from './self.js';
import { EXIT } from './exit-codes.js';

export const help = `Usage: bakker install [--on-calendar SPEC] [--config PATH] [--agent] [--unit-dir DIR] [--no-enable]
       bakker uninstall [--unit-dir DIR]

Writes and enables systemd units that run bakker on this server:
  bakker.service   oneshot 'bakker backup -c CONFIG', hardened (ProtectSystem=full,
                   PrivateTmp, NoNewPrivileges, ProtectKernelTunables, ProtectControlGroups),
                   at low priority (Nice=10, IOSchedulingClass=idle)
  bakker.timer     OnCalendar=SPEC (default *-*-* 01:00:00), Persistent=true (a run missed
                   while the server was off runs at boot), RandomizedDelaySec=15min
With --agent, bakker-agent.service instead: 'bakker agent -c CONFIG', long-running, which runs
the jobs on the config's agent.schedule and on triggers (bakker trigger, a trigger file on the
store, HTTP): see docs/OPERATION.md. Without systemd running, the units are written and the
equivalent cron line is printed. uninstall stops, disables and removes them.

Options:
      --on-calendar SPEC  when the timer fires (systemd.time(7) OnCalendar syntax)
  -c, --config PATH       the config the service runs with (default /etc/bakker/bakker.yaml)
      --agent             install the agent service instead of the timer
      --unit-dir DIR      where the unit files go (default /etc/systemd/system)
      --no-enable         write the files only

Examples:
  bakker install
  bakker install --on-calendar "*-*-* 03:30:00" --config /etc/bakker/server1.yaml
  bakker install --agent
  bakker uninstall`;

const UNITS = ['bakker.service', 'bakker.timer', 'bakker-agent.service'];

/** The command line systemd runs, quoted for a unit file. */
function execLine(args: string[]): string {
  const q = (s: string) => (/^[A-Za-z0-9_@%+=:,./-]+$/.test(s) ? s : `"${s.replace(/(["\\])/g, '\\$1')}"`);
  return selfCommand(args).map(q).join(' ');
}

export function units(opts: { onCalendar: string; config: string; agent: boolean }): Record<string, string> {
  const hardening = `# Hardening: the backup reads everything (as root) and writes only its stores and state.
ProtectSystem=full
PrivateTmp=yes
NoNewPrivileges=yes
ProtectKernelTunables=yes
ProtectControlGroups=yes
Nice=10
IOSchedulingClass=idle
CPUSchedulingPolicy=batch
StateDirectory=bakker
RuntimeDirectory=bakker
RuntimeDirectoryPreserve=yes
Environment=BAKKER_STATE_DIR=/var/lib/bakker
${Object.entries(SELF_ENV).map(([k, v]) => `Environment=${k}=${v}`).join('\n')}`;
  if (opts.agent) {
    return {
      'bakker-agent.service': `[Unit]
Description=bakker backup agent (schedule and triggers, ${opts.config})
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
ExecStart=${execLine(['agent', '-c', opts.config])}
Restart=on-failure
RestartSec=30
${hardening}

[Install]
WantedBy=multi-user.target
`,
    };
  }
  return {
    'bakker.service': `[Unit]
Description=bakker backup (${opts.config})
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
ExecStart=${execLine(['backup', '-c', opts.config])}
${hardening}
`,
    'bakker.timer': `[Unit]
Description=bakker backup at ${opts.onCalendar}

[Timer]
OnCalendar=${opts.onCalendar}
Persistent=true
RandomizedDelaySec=15min

[Install]
WantedBy=timers.target
`,
  };
}

/** "*-*-* HH:MM[:SS]" as a cron line; null for specs cron cannot say simply. */
export function cronLine(onCalendar: string, config: string): string | null {
  const m = /^\*-\*-\*\s+(\d{1,2}):(\d{2})(?::00)?$/.exec(onCalendar.trim());
  if (!m) return null;
  return `${Number(m[2])} ${Number(m[1])} * * * root ${shellLine(['backup', '-c', config])}`;
}

/** execLine for a shell (cron): the environment the bin's shebang sets, then the command. */
function shellLine(args: string[]): string {
  return [...Object.entries(SELF_ENV).map(([k, v]) => `${k}=${v}`), execLine(args)].join(' ');
}

const systemdRuns = () => fs.existsSync('/run/systemd/system');

function systemctl(args: string[]): void {
  const r = spawnSync('systemctl', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new BakkerError('CONFIG', `systemctl ${args.join(' ')} failed: ${(r.stderr || r.stdout).trim().split('\n').pop()}`);
}

export async function run(argv: string[], out: Output): Promise<number> {
  const { values } = parse('install', argv, { 'on-calendar': { type: 'string' }, config: { type: 'string', short: 'c' }, agent: { type: 'boolean' }, 'unit-dir': { type: 'string' }, 'no-enable': { type: 'boolean' } });
  const onCalendar = values['on-calendar'] ?? '*-*-* 01:00:00';
  if (values['on-calendar'] !== undefined && fs.existsSync('/usr/bin/systemd-analyze')) {
    const r = spawnSync('systemd-analyze', ['calendar', onCalendar], { encoding: 'utf8' });
    if (r.status !== 0) throw usageError(`bakker install: --on-calendar "${onCalendar}" is not a systemd calendar spec (${(r.stderr || '').trim().split('\n').pop()}): see 'man systemd.time', for example "*-*-* 01:00:00"`);
  }
  const config = path.resolve(values.config ?? '/etc/bakker/bakker.yaml');
  if (!fs.existsSync(config)) throw usageError(`bakker install: the config ${config} does not exist: write it first (bakker init makes a starter), or give --config PATH`);
  (await import('../config/config.js')).loadConfig(config); // a broken config is refused now, not at 1 am
  const dir = values['unit-dir'] ?? '/etc/systemd/system';
  fs.mkdirSync(dir, { recursive: true });
  const files = units({ onCalendar, config, agent: values.agent === true });
  for (const [name, text] of Object.entries(files)) {
    fs.writeFileSync(path.join(dir, name), text, { mode: 0o644 });
    out.line(`wrote ${path.join(dir, name)}`);
  }
  const main = values.agent ? 'bakker-agent.service' : 'bakker.timer';
  if (values['no-enable']) return EXIT.OK;
  if (!systemdRuns()) {
    const cron = values.agent ? null : cronLine(onCalendar, config);
    out.line(`systemd is not running on this host: the units are written but not enabled.`);
    if (cron) out.line(`To run from cron instead, put this line in /etc/cron.d/bakker:\n${cron}`);
    else if (values.agent) out.line(`Start the agent another way, for example: ${execLine(['agent', '-c', config])}`);
    else out.line(`"${onCalendar}" has no simple cron form: write the cron schedule yourself, running: ${shellLine(['backup', '-c', config])}`);
    return EXIT.OK;
  }
  systemctl(['daemon-reload']);
  systemctl(['enable', '--now', main]);
  out.line(`enabled and started ${main}`);
  return EXIT.OK;
}

export async function runUninstall(argv: string[], out: Output): Promise<number> {
  const { values } = parse('uninstall', argv, { 'unit-dir': { type: 'string' } });
  const dir = values['unit-dir'] ?? '/etc/systemd/system';
  const present = UNITS.filter((u) => fs.existsSync(path.join(dir, u)));
  if (present.length === 0) {
    out.line(`no bakker units in ${dir}: nothing to remove`);
    return EXIT.OK;
  }
  if (systemdRuns()) for (const u of present.filter((x) => x !== 'bakker.service')) systemctl(['disable', '--now', u]);
  for (const u of present) {
    fs.rmSync(path.join(dir, u));
    out.line(`removed ${path.join(dir, u)}`);
  }
  if (systemdRuns()) systemctl(['daemon-reload']);
  return EXIT.OK;
}
