import { spawn, spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const BIN = path.resolve(here, '../../../bin/bakker.js');

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function bakker(args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; user?: string } = {}): CliResult {
  // The bin runs through its shebang (node with its V8 flags), as an installed bakker does.
  const cmd = opts.user ? 'runuser' : BIN;
  const argv = opts.user ? ['-u', opts.user, '--', BIN, ...args] : args;
  const r = spawnSync(cmd, argv, { encoding: 'utf8', cwd: opts.cwd, env: { ...process.env, ...opts.env }, maxBuffer: 64 << 20 });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

export function bakkerAsync(args: string[], env: NodeJS.ProcessEnv = {}) {
  return spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
}

export function jsonLines(s: string): Record<string, unknown>[] {
  return s
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** bakker run without blocking this process (for servers that run inside the test process). */
export function bakkerRun(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = bakkerAsync(args, env);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}
