import { BakkerError, errMessage } from '../errors.js';
import { journal, Output } from '../ui/output.js';
import { EXIT, exitCodeOf } from './exit-codes.js';

interface Command {
  help: string;
  run(argv: string[], out: Output, signal: AbortSignal): Promise<number>;
}

/** Commands load on demand: a run pays only for the code it uses (time and memory). */
export const COMMANDS: Record<string, () => Promise<Command>> = {
  init: () => import('./init.js'),
  backup: () => import('./backup.js'),
  list: () => import('./list.js'),
  diff: () => import('./diff.js'),
  restore: () => import('./restore.js'),
  verify: () => import('./verify.js'),
  export: () => import('./export.js'),
  archive: () => import('./archive.js'),
  prune: () => import('./prune.js'),
  key: () => import('./key.js'),
  status: () => import('./status.js'),
  install: () => import('./install.js'),
  agent: () => import('./agent.js'),
  trigger: () => import('./trigger.js'),
  completion: () => import('./completion.js'),
  uninstall: () => import('./uninstall.js'),
  storage: () => import('./storage.js'),
};

const USAGE = `Usage: bakker COMMAND [options]

Reverse-incremental hard-link snapshots of a Linux server.

Commands:
  init      set this server up for a store: SSH key, host key, starter config
  backup    make a snapshot (first run full, then incremental)
  list      list the snapshots on a store
  diff      show what changed between two snapshots
  restore   restore a snapshot, or part of it, into a folder
  verify    check snapshots against their impls
  export    write a snapshot (or what is new since another) as a pax tar stream
  archive   push, list, restore and prune archives in S3 object storage (the third tier)
  prune     remove snapshots a retention policy does not keep (merging their diffs)
  key       make an age identity for encrypted stores
  status    last run, last success, a run going on and the next one, per job and target
  install   write and enable the systemd timer (or the agent service); uninstall removes them
  agent     run jobs on a schedule and on triggers (socket, trigger file on the store, HTTP)
  trigger   ask the running agent to run its job now
  completion  print the bash completion script (bakker completion bash)
  storage   manage client accounts on the storage server (as root there)
  help      show help for a command

Run 'bakker COMMAND --help' for a command's options and examples.`;

export async function main(argv: string[]): Promise<number> {
  // Output into a closed pipe (bakker list | head): stop quietly, as a tool killed by SIGPIPE does.
  // (Other errors on stdout reach whoever writes: export's pipeline reports them itself.)
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(141);
  });
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h') {
    process.stdout.write(USAGE + '\n');
    return name ? EXIT.OK : EXIT.USAGE;
  }
  if (name === '--version') {
    process.stdout.write('bakker 0.1.0\n');
    return EXIT.OK;
  }
  if (name === 'help') {
    const load = rest[0] ? COMMANDS[rest[0]] : undefined;
    process.stdout.write((load ? (await load()).help : USAGE) + '\n');
    return EXIT.OK;
  }
  const load = COMMANDS[name];
  if (!load) {
    process.stderr.write(`bakker: unknown command "${name}": run 'bakker --help' for the list\n`);
    return EXIT.USAGE;
  }
  const cmd = await load();
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(cmd.help + '\n');
    return EXIT.OK;
  }
  const json = rest.includes('--json');
  const debug = rest.includes('--debug');
  const out = new Output(json);
  const ac = new AbortController();
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    if (++signals > 1) process.exit(130);
    process.stderr.write(`\nbakker: ${sig}: stopping; a second ${sig} exits at once\n`);
    ac.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    return await cmd.run(rest, out, ac.signal);
  } catch (err) {
    out.stopProgress();
    const code = exitCodeOf(err);
    const message = err instanceof BakkerError ? err.message : `unexpected error: ${errMessage(err)}`;
    if (json) process.stdout.write(JSON.stringify({ event: 'error', code: err instanceof BakkerError ? err.code : 'INTERNAL', message, exitCode: code }) + '\n');
    process.stderr.write(`${journal(3)}${message.startsWith('bakker ') ? '' : 'bakker: '}${message}\n`);
    if (debug || !(err instanceof BakkerError)) process.stderr.write(`${(err as Error)?.stack ?? ''}\n`);
    return code;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
