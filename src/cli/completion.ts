import { usageError } from '../errors.js';
import type { Output } from '../ui/output.js';
import { EXIT } from './exit-codes.js';

export const help = `Usage: bakker completion bash

Prints a bash completion script for bakker: commands, subcommands, each command's options,
and file names after options that take a file.

Examples:
  bakker completion bash > /etc/bash_completion.d/bakker
  source <(bakker completion bash)`;

/** Options whose value is a file or folder. */
const FILE_OPTS = ['-c', '--config', '--key', '--exclude-from', '-i', '--identity', '--known-hosts', '--to', '--out', '--store', '-s', '--unit-dir', '--socket'];

/** The script, from each command's own help text (its options and subcommands). */
export async function bashCompletion(commands: Record<string, () => Promise<{ help: string }>>): Promise<string> {
  const names = Object.keys(commands).sort();
  const cases: string[] = [];
  for (const name of names) {
    const help = (await commands[name]!()).help;
    const opts = [...new Set([...help.matchAll(/(?<![\w-])(--[a-z][a-z0-9-]*|-[a-zA-Z])\b/g)].map((m) => m[1]!))].sort();
    const sub = new RegExp(`bakker ${name} ([a-z-]+(?:\\|[a-z-]+)+)`).exec(help)?.[1]?.split('|') ?? [];
    cases.push(`    ${name}) opts="${[...opts, '--help', '--json'].filter((o, i, a) => a.indexOf(o) === i).join(' ')}"; subs="${sub.join(' ')}" ;;`);
  }
  return `# bash completion for bakker (bakker completion bash)
_bakker() {
  local cur prev opts="" subs=""
  cur="\${COMP_WORDS[COMP_CWORD]}"
  prev="\${COMP_WORDS[COMP_CWORD-1]}"
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=( $(compgen -W "${names.join(' ')} help --help --version" -- "$cur") )
    return
  fi
  case "\${COMP_WORDS[1]}" in
${cases.join('\n')}
    help) COMPREPLY=( $(compgen -W "${names.join(' ')}" -- "$cur") ); return ;;
  esac
  case "$prev" in
    ${FILE_OPTS.join('|')}) COMPREPLY=( $(compgen -f -- "$cur") ); return ;;
  esac
  if [ "$COMP_CWORD" -eq 2 ] && [ -n "$subs" ] && [[ "$cur" != -* ]]; then
    COMPREPLY=( $(compgen -W "$subs" -- "$cur") )
  elif [[ "$cur" == -* ]]; then
    COMPREPLY=( $(compgen -W "$opts" -- "$cur") )
  else
    COMPREPLY=( $(compgen -f -- "$cur") )
  fi
}
complete -F _bakker bakker
`;
}

export async function run(argv: string[], out: Output): Promise<number> {
  if (argv[0] !== 'bash') throw usageError(`bakker completion: ${argv[0] ? `"${argv[0]}" is not supported` : 'name the shell'}: only bash (bakker completion bash)`);
  const { COMMANDS } = await import('./main.js');
  process.stdout.write(await bashCompletion(COMMANDS));
  void out;
  return EXIT.OK;
}
