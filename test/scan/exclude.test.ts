import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createMatcher, compilePattern, parseExcludeFile } from '../../src/scan/exclude.js';

const L = (s: string) => Buffer.from(s).toString('latin1');

test('exclude patterns: anchored, unanchored, dir-only, wildcards', () => {
  const table: [string, string, boolean, boolean][] = [
    // pattern, path, isDir, excluded?
    ['*.tmp', '/data/a.tmp', false, true],
    ['*.tmp', '/data/a.tmp.keep', false, false],
    ['*.tmp', '/data/sub/deep/x.tmp', false, true],
    ['/data/cache', '/data/cache', true, true],
    ['/data/cache', '/srv/data/cache', true, false],
    ['cache', '/srv/data/cache', true, true],
    ['cache', '/srv/data/cachex', true, false],
    ['www/cache', '/srv/www/cache', true, true],
    ['www/cache', '/srv/xwww/cache', true, false],
    ['cache/', '/srv/cache', false, false],
    ['cache/', '/srv/cache', true, true],
    ['/data/*/logs', '/data/app/logs', true, true],
    ['/data/*/logs', '/data/app/x/logs', true, false],
    ['/data/**/logs', '/data/app/x/logs', true, true],
    ['file?.txt', '/a/file1.txt', false, true],
    ['file?.txt', '/a/file10.txt', false, false],
    ['[!a]*.log', '/x/b.log', false, true],
    ['[!a]*.log', '/x/a.log', false, false],
    ['[a-c].bin', '/x/b.bin', false, true],
    ['\\*literal', '/x/*literal', false, true],
    ['\\*literal', '/x/aliteral', false, false],
    ['café', L('/x/café'), false, true],
  ];
  for (const [pat, path, dir, want] of table) {
    assert.equal(createMatcher([pat]).excluded(path, dir), want, `${pat} vs ${path}`);
  }
});

test('bad patterns are refused with a hint', () => {
  assert.throws(() => compilePattern('[abc'), /unclosed \[/);
  assert.throws(() => compilePattern('abc\\'), /lone backslash/);
  assert.throws(() => compilePattern('  '), /empty/);
});

test('exclude files skip comments and blank lines', () => {
  assert.deepEqual(parseExcludeFile('# c\n*.tmp\n\n/data/x/\r\n'), ['*.tmp', '/data/x/']);
});
