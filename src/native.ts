import os from 'node:os';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

/** The native helpers built from src/native/bakker_native.c (see the comment there for contracts). */
export interface Native {
  /** Every xattr of `p` (never following a symlink) as [name, value, ...], or null when it has none. */
  getXattrs(p: Buffer): (string | Buffer)[] | null;
  setXattr(p: Buffer, name: string, value: Buffer): void;
  /** utimensat without following symlinks. */
  utimens(p: Buffer, atimeSec: number, atimeNsec: number, mtimeSec: number, mtimeNsec: number): void;
  mknod(p: Buffer, mode: number, dev: number): void;
  syncfs(p: Buffer | string): void;
  /** syncfs on the thread pool; never rejects (a head start for the sync a run waits for). */
  syncfsSoon(p: Buffer | string): Promise<void>;
  /** Hard-links pairs ("from\0to\0"..., relative to `root`) on the thread pool; results[i] = 0 or errno. */
  linkBatch(root: Buffer | string, pairs: Buffer, count: number, results: Int32Array): Promise<void>;
  metaBatch(root: Buffer | string, paths: Buffer, count: number, meta: Float64Array, results: Int32Array): Promise<void>;
  /** Whole-file copy on the thread pool; see COPY_FIELDS in the C source for the result layout. */
  copyIn(src: Buffer, dest: Buffer, flags: number, mode: number, uid: number, gid: number, mtimeSec: number, mtimeNsec: number): Promise<Float64Array>;
  /** copyIn for several files in one thread-pool job: paths "src\0dest\0" each, 6 params each (flags, mode, uid, gid, mtime s, ns); COPY_FIELDS results each. */
  copyMany(paths: Buffer, params: Float64Array): Promise<Float64Array>;
  /** One directory sorted and lstat'ed on the thread pool: [names "a\0b\0", SCAN_FIELDS doubles per entry]. */
  /** rm -rf on the thread pool, never following a symlink; missing is fine. */
  removeTree(path: Buffer): Promise<void>;
  /** One zstd frame of `src` (its content size recorded) at `level`, on the thread pool. */
  zstdCompress(src: Buffer, level: number): Promise<Buffer>;
  zstdCompressSync(src: Buffer, level: number): Buffer;
  /** [compressed size, content size] of the first frame in `buf`, or null when more bytes are needed. */
  zstdFrame(buf: Buffer): [number, number] | null;
  zstdDecompressSync(frame: Buffer, contentSize: number): Buffer;
  scanDir(dir: Buffer, probeXattrs?: boolean, fast?: [Buffer | null, Buffer, Buffer] | [Buffer | null, null, null]): Promise<[Buffer, Float64Array, Buffer?]>;
}

function load(): Native {
  const require = createRequire(import.meta.url);
  const here = path.dirname(fileURLToPath(import.meta.url));
  const candidates = [
    path.resolve(here, '../../build/Release/bakker_native.node'), // dist/src -> package root
    path.resolve(here, '../build/Release/bakker_native.node'),
  ];
  let lastErr: unknown;
  for (const c of candidates) {
    try {
      return require(c) as Native;
    } catch (err) {
      lastErr = err;
    }
  }
  // The single-file build (scripts/build-single.mjs) carries the helper inside: written to a
  // fresh private folder, loaded, and unlinked (a loaded library stays mapped).
  const embedded = (globalThis as { __bakkerNative?: string }).__bakkerNative;
  if (embedded) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bakker-native-'));
    const file = path.join(dir, 'bakker_native.node');
    try {
      fs.writeFileSync(file, Buffer.from(embedded, 'base64'), { mode: 0o500 });
      return require(file) as Native;
    } catch (err) {
      lastErr = err;
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
  throw new Error(`bakker's native helper is not built: run 'npm rebuild' in the bakker package (${String(lastErr)})`);
}

export const native: Native = load();
