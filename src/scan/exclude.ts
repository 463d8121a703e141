/**
 * Exclude patterns (docs/EXCLUDES.md). Matched against an entry's absolute source path, as bytes:
 *   /data/cache   anchored: starts with '/', must match the whole path
 *   *.tmp         unanchored: matches the last component(s) of any path
 *   www/cache     unanchored with a '/': matches any path ending in /www/cache
 *   cache/        a trailing '/' matches directories only
 *   *  any run of bytes except '/';  **  any run including '/';  ?  one byte except '/'
 *   [abc] [a-z] [!abc]  byte classes;  \x  the byte x literally
 * An excluded directory is skipped with everything under it.
 */
export interface Matcher {
  /** `absPath` is the entry's path with a leading '/', as latin1 (one char per byte). */
  excluded(absPathLatin1: string, isDir: boolean): boolean;
  readonly patterns: readonly string[];
}

interface Compiled {
  re: RegExp;
  dirOnly: boolean;
}

export class PatternError extends Error {}

function globToRegex(glob: string, pattern: string): string {
  let out = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === '*') {
      if (glob[i + 1] === '*') {
        out += '.*';
        i++;
      } else out += '[^/]*';
    } else if (c === '?') out += '[^/]';
    else if (c === '\\') {
      const next = glob[++i];
      if (next === undefined) throw new PatternError(`exclude pattern "${pattern}" ends with a lone backslash: escape it as \\\\`);
      out += escapeRe(next);
    } else if (c === '[') {
      const end = glob.indexOf(']', i + 2);
      if (end < 0) throw new PatternError(`exclude pattern "${pattern}" has an unclosed [: close it or escape it as \\[`);
      let body = glob.slice(i + 1, end);
      const neg = body.startsWith('!') || body.startsWith('^');
      if (neg) body = body.slice(1);
      out += `[${neg ? '^' : ''}${body.replace(/[\\\]^]/g, '\\$&')}]`;
      i = end;
    } else out += escapeRe(c);
  }
  return out;
}

function escapeRe(c: string): string {
  return /[.*+?^${}()|[\]\\/]/.test(c) ? `\\${c}` : c;
}

export function compilePattern(pattern: string): Compiled {
  if (pattern.trim() === '') throw new PatternError('an exclude pattern is empty: remove it');
  let p = Buffer.from(pattern, 'utf8').toString('latin1');
  const dirOnly = p.endsWith('/') && p.length > 1;
  if (dirOnly) p = p.replace(/\/+$/, '');
  const anchored = p.startsWith('/');
  const body = globToRegex(anchored ? p : p, pattern);
  return { re: new RegExp(anchored ? `^${body}$` : `(?:^|/)${body}$`, 's'), dirOnly };
}

export function createMatcher(patterns: readonly string[]): Matcher {
  const compiled = patterns.map(compilePattern);
  return {
    patterns,
    excluded(abs: string, isDir: boolean): boolean {
      for (const c of compiled) if ((!c.dirOnly || isDir) && c.re.test(abs)) return true;
      return false;
    },
  };
}

/** Lines of an --exclude-from file: blank lines and lines starting with '#' are ignored. */
export function parseExcludeFile(text: string): string[] {
  return text.split('\n').map((l) => l.replace(/\r$/, '')).filter((l) => l.trim() !== '' && !l.startsWith('#'));
}
