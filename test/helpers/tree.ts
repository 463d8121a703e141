import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';

/**
 * Declarative fixtures built on the real filesystem. Paths are relative to the root and may be
 * Buffers (for names that are not UTF-8).
 */
export type Spec =
  | { file: string | Buffer; content?: string | Buffer; mode?: number; mtime?: number; uid?: number; gid?: number }
  | { dir: string | Buffer; mode?: number }
  | { symlink: string | Buffer; target: string }
  | { hardlink: string | Buffer; to: string | Buffer }
  | { fifo: string | Buffer }
  | { sparse: string | Buffer; size: number; data?: { at: number; text: string }[] };

export function p(root: string, rel: string | Buffer): Buffer {
  return Buffer.concat([Buffer.from(root + '/'), typeof rel === 'string' ? Buffer.from(rel) : rel]);
}

export function build(root: string, specs: Spec[]): void {
  fs.mkdirSync(root, { recursive: true });
  for (const s of specs) {
    if ('file' in s) {
      const a = p(root, s.file);
      fs.mkdirSync(path.dirname(a.toString('latin1')).length ? parentOf(a) : a, { recursive: true });
      fs.writeFileSync(a, s.content ?? '');
      if (s.mode !== undefined) fs.chmodSync(a, s.mode);
      if (s.uid !== undefined) fs.chownSync(a, s.uid, s.gid ?? s.uid);
      if (s.mtime !== undefined) fs.utimesSync(a, s.mtime, s.mtime);
    } else if ('dir' in s) {
      fs.mkdirSync(p(root, s.dir), { recursive: true });
      if (s.mode !== undefined) fs.chmodSync(p(root, s.dir), s.mode);
    } else if ('symlink' in s) {
      fs.mkdirSync(parentOf(p(root, s.symlink)), { recursive: true });
      fs.symlinkSync(s.target, p(root, s.symlink));
    } else if ('hardlink' in s) {
      fs.linkSync(p(root, s.to), p(root, s.hardlink));
    } else if ('fifo' in s) {
      execFileSync('mkfifo', [p(root, s.fifo).toString()]);
    } else if ('sparse' in s) {
      const a = p(root, s.sparse);
      const fd = fs.openSync(a, 'w');
      for (const d of s.data ?? []) fs.writeSync(fd, Buffer.from(d.text), 0, d.text.length, d.at);
      fs.ftruncateSync(fd, s.size);
      fs.closeSync(fd);
    }
  }
}

function parentOf(a: Buffer): Buffer {
  const i = a.lastIndexOf(0x2f);
  return a.subarray(0, i);
}

/** A fresh temp dir on the same filesystem as /tmp, removed by the returned cleanup. */
export function tempDir(prefix = 'bakker-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export function rmrf(dir: string): void {
  fs.rmSync(dir, { recursive: true, force: true });
}

/** Fails (never skips) when a tool the suite relies on is missing: CI must not pass silently. */
export function requireTool(name: string): void {
  const r = spawnSync('sh', ['-c', `command -v ${name}`]);
  if (r.status !== 0) throw new Error(`test tool "${name}" is missing: run scripts/install-test-deps.sh`);
}

export function sh(cmd: string, args: string[], opts: { cwd?: string; input?: string; env?: NodeJS.ProcessEnv } = {}): string {
  return execFileSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20, ...opts });
}

/**
 * A tree with every kind tar and the impl carry, for export and archive tests: owner 1000 with an
 * access ACL (etc/app.conf, content given), a default ACL on a folder, an xattr (on data/big.bin,
 * which `extra` must create), a symlink, a hard-link pair, a fifo, a setuid file, a char device
 * and a name that is not UTF-8 (data/ + `odd`); `extra` first.
 */
export function buildEveryKind(root: string, conf: string, odd: Buffer, extra: Spec[]): void {
  build(root, [
    { file: 'etc/app.conf', content: conf, mode: 0o640, uid: 1000, gid: 1000 },
    ...extra,
    { dir: 'data/empty-dir', mode: 0o750 },
    { symlink: 'data/link', target: '../etc/app.conf' },
    { file: 'data/h1', content: 'hard' },
    { hardlink: 'data/h2', to: 'data/h1' },
    { fifo: 'data/fifo' },
    { file: 'data/suid', content: '#!/bin/sh\n', mode: 0o4755 },
  ]);
  fs.writeFileSync(Buffer.concat([Buffer.from(`${root}/data/`), odd]), 'odd');
  sh('setfattr', ['-n', 'user.note', '-v', 'kept', path.join(root, 'data/big.bin')]);
  sh('setfacl', ['-m', 'u:1000:r,g:1000:rw', path.join(root, 'etc/app.conf')]);
  sh('setfacl', ['-d', '-m', 'u:1000:rx', path.join(root, 'data/empty-dir')]);
  sh('mknod', [path.join(root, 'data/null'), 'c', '1', '3']);
}
