import type { Client } from 'ssh2';
import { BakkerError } from '../../errors.js';
import { FXF_CREAT, FXF_EXCL, FXF_TRUNC, type SftpAttrs, type SftpClient, type SftpError, type SftpStatvfs } from './sftp-client.js';

/** What the SFTP store needs from an SFTP session (SftpClient, or ResilientSftp around it). */
export type Sftp = Pick<
  SftpClient,
  | 'extensions'
  | 'lstat'
  | 'stat'
  | 'fstat'
  | 'open'
  | 'close'
  | 'read'
  | 'write'
  | 'readdir'
  | 'remove'
  | 'mkdir'
  | 'rmdir'
  | 'readlink'
  | 'symlink'
  | 'fsetstat'
  | 'setstat'
  | 'lsetstat'
  | 'posixRename'
  | 'hardlink'
  | 'hardlinkMany'
  | 'removeMany'
  | 'fsync'
  | 'statvfs'
  | 'inFlight'
  | 'end'
>;

export interface Session {
  ssh: Client;
  sftp: SftpClient;
}

/** ECONNRESET: our client lost its channel (or the server said "connection lost"). */
function lost(err: unknown): boolean {
  return (err as { code?: unknown })?.code === 'ECONNRESET';
}

const code = (err: unknown) => (err as { code?: unknown })?.code;

interface OpenFile {
  path: Buffer;
  flags: number;
  real: Buffer;
  /** The connection `real` belongs to. */
  generation: number;
  /** Requests on this handle not yet settled. */
  pending: number;
  reopening?: Promise<Buffer>;
  closed?: boolean;
  /** The connection whose handle close() closed. */
  closedIn?: number;
}

/**
 * An SFTP session that survives a dropped connection (docs/DESIGN.md, "Reconnecting"). A request
 * that fails because the connection is gone waits for a new connection (tries after 1, 2, 4, ...
 * 30 s, for at most `budgetMs`) and is sent again; requests that were in flight are re-sent in
 * the order they were first sent, so the store's ordering (mkdir before what goes in it) holds.
 * Handles are this layer's own: after a reconnect, a file is opened again (without CREAT, EXCL,
 * TRUNC) at its first use, and writes at offsets simply repeat. A request sent again may have
 * been done already before the drop: then "already there" (mkdir, hardlink, symlink, an
 * exclusive open) and "already gone" (remove, rmdir, rename) count as done.
 */
export class ResilientSftp implements Sftp {
  private session: Session;
  private generation = 0;
  private reconnecting: Promise<void> | null = null;
  private readonly files = new Map<string, OpenFile>();
  private nextHandle = 1;
  private closed = false;
  /** Connection drops survived so far. */
  reconnects = 0;

  constructor(
    first: Session,
    private readonly connect: () => Promise<Session>,
    private readonly budgetMs: number,
    private readonly log: (message: string) => void,
  ) {
    this.session = first;
  }

  get extensions(): Map<string, string> {
    return this.session.sftp.extensions;
  }

  get inFlight(): number {
    return this.session.sftp.inFlight;
  }

  end(): void {
    this.closed = true;
    this.session.sftp.end();
    this.session.ssh.end();
  }

  private async reconnect(generation: number, cause: unknown): Promise<void> {
    if (this.generation !== generation) return; // someone else already did
    if (this.closed || this.budgetMs <= 0) throw cause;
    this.reconnecting ??= (async () => {
      const started = Date.now();
      try {
        this.session.ssh.end();
      } catch {
        // already gone
      }
      for (let attempt = 1, delay = 1000; ; attempt++, delay = Math.min(delay * 2, 30_000)) {
        const left = this.budgetMs - (Date.now() - started);
        if (left <= 0) throw new BakkerError('IO', `SFTP connection lost and not restored within ${Math.round(this.budgetMs / 1000)} s: ${(cause as Error).message}`, { cause });
        const wait = Math.min(delay, left);
        this.log(`connection to the store lost; reconnecting in ${Math.round(wait / 1000)} s (attempt ${attempt})`);
        await new Promise((r) => setTimeout(r, wait));
        try {
          this.session = await this.connect();
          this.generation++;
          this.reconnects++;
          this.log(`reconnected to the store after ${((Date.now() - started) / 1000).toFixed(1)} s; the run goes on where it was`);
          return;
        } catch (err) {
          if ((err as BakkerError).code === 'USAGE') throw err; // the key cannot be read: waiting will not help
          cause = err;
        }
      }
    })().finally(() => (this.reconnecting = null));
    return this.reconnecting;
  }

  /**
   * Runs `op` on the current session; after a drop, again on a new one. `redone` decides what an
   * error means for a request that was sent again (it may have been carried out before the drop).
   */
  private async call<T>(op: (s: SftpClient) => Promise<T>, redone?: (err: unknown) => Promise<T | typeof FAIL>): Promise<T> {
    let again = false;
    for (;;) {
      const generation = this.generation;
      try {
        return await op(this.session.sftp);
      } catch (err) {
        if (lost(err)) {
          await this.reconnect(generation, err);
          again = true;
          continue;
        }
        if (again && redone) {
          const v = await redone(err);
          if (v !== FAIL) return v;
        }
        throw err;
      }
    }
  }

  private async exists(p: Buffer): Promise<boolean> {
    return this.call((s) => s.lstat(p)).then(
      () => true,
      () => false,
    );
  }

  private file(h: Buffer): OpenFile {
    const f = this.files.get(h.toString('latin1'));
    if (!f) throw new BakkerError('IO', 'internal: unknown or closed SFTP handle');
    return f;
  }

  /** Opens a file again on the current connection (without CREAT, EXCL, TRUNC); one open for all who ask. */
  private reopen(f: OpenFile): Promise<Buffer> {
    const generation = this.generation;
    f.reopening ??= this.session.sftp
      .open(f.path, f.flags & ~(FXF_CREAT | FXF_EXCL | FXF_TRUNC), {})
      .then((real) => {
        f.real = real;
        f.generation = generation;
        return real;
      })
      .finally(() => (f.reopening = undefined));
    return f.reopening;
  }

  /**
   * A request on one of our handles. While the connection holds, it goes out at once (so requests
   * on a handle keep their order on the channel: write, setstat, close); after a reconnect, the
   * file is opened again first. The handle stays known until its last request settled.
   */
  private onHandle<T>(h: Buffer, op: (s: SftpClient, real: Buffer) => Promise<T>): Promise<T> {
    const f = this.file(h);
    f.pending++;
    return this.call((s) => (f.generation === this.generation ? op(s, f.real) : this.reopen(f).then((real) => op(this.session.sftp, real)))).finally(() => {
      if (--f.pending === 0 && f.closed) this.forget(h, f);
    });
  }

  /** Drops a closed handle; a file opened again after its close (a request redone) is closed too. */
  private forget(h: Buffer, f: OpenFile): void {
    this.files.delete(h.toString('latin1'));
    if (f.generation !== f.closedIn && f.generation === this.generation) void this.session.sftp.close(f.real).catch(() => undefined);
  }

  lstat(p: Buffer): Promise<SftpAttrs> {
    return this.call((s) => s.lstat(p));
  }

  stat(p: Buffer): Promise<SftpAttrs> {
    return this.call((s) => s.stat(p));
  }

  fstat(h: Buffer): Promise<SftpAttrs> {
    return this.onHandle(h, (s, r) => s.fstat(r));
  }

  async open(p: Buffer, flags: number, attrs: SftpAttrs = {}): Promise<Buffer> {
    const real = await this.call(
      (s) => s.open(p, flags, attrs),
      // An exclusive create sent again finds the file it made before the drop.
      async (err) => ((flags & FXF_EXCL) !== 0 && (code(err) === 'EFAILURE' || code(err) === 'EEXIST') ? this.call((s) => s.open(p, flags & ~(FXF_EXCL | FXF_TRUNC), attrs)) : FAIL),
    );
    const h = Buffer.alloc(8);
    h.writeUInt32BE(this.nextHandle++, 4);
    this.files.set(h.toString('latin1'), { path: p, flags, real, generation: this.generation, pending: 0 });
    return h;
  }

  async close(h: Buffer): Promise<void> {
    const f = this.file(h);
    f.closed = true;
    f.closedIn = f.generation;
    if (f.generation === this.generation) {
      // Sent now, after the requests already sent on this handle.
      await this.session.sftp.close(f.real).catch((err) => {
        if (!lost(err)) throw err;
      });
    }
    if (f.pending === 0 && this.files.get(h.toString('latin1')) === f) this.files.delete(h.toString('latin1'));
  }

  read(h: Buffer, offset: number, len: number): Promise<Buffer | null> {
    return this.onHandle(h, (s, r) => s.read(r, offset, len));
  }

  write(h: Buffer, offset: number, data: Buffer): Promise<void> {
    return this.onHandle(h, (s, r) => s.write(r, offset, data));
  }

  fsetstat(h: Buffer, attrs: SftpAttrs): Promise<void> {
    return this.onHandle(h, (s, r) => s.fsetstat(r, attrs));
  }

  fsync(h: Buffer): Promise<void> {
    return this.onHandle(h, (s, r) => s.fsync(r));
  }

  readdir(p: Buffer): Promise<{ name: Buffer; attrs: SftpAttrs }[]> {
    return this.call((s) => s.readdir(p));
  }

  remove(p: Buffer): Promise<void> {
    return this.call(
      (s) => s.remove(p),
      async (err) => (code(err) === 'ENOENT' ? undefined : FAIL),
    );
  }

  rmdir(p: Buffer): Promise<void> {
    return this.call(
      (s) => s.rmdir(p),
      async (err) => (code(err) === 'ENOENT' ? undefined : FAIL),
    );
  }

  private madeBefore = async (p: Buffer, err: unknown): Promise<void | typeof FAIL> => ((code(err) === 'EFAILURE' || code(err) === 'EEXIST') && (await this.exists(p)) ? undefined : FAIL);

  mkdir(p: Buffer, mode: number): Promise<void> {
    return this.call(
      (s) => s.mkdir(p, mode),
      (err) => this.madeBefore(p, err),
    );
  }

  readlink(p: Buffer): Promise<Buffer> {
    return this.call((s) => s.readlink(p));
  }

  symlink(target: Buffer, link: Buffer): Promise<void> {
    return this.call(
      (s) => s.symlink(target, link),
      (err) => this.madeBefore(link, err),
    );
  }

  hardlink(existing: Buffer, link: Buffer): Promise<void> {
    return this.call(
      (s) => s.hardlink(existing, link),
      (err) => this.madeBefore(link, err),
    );
  }

  /** Sent again after a drop: a link found made (by the run before the drop) counts as done. */
  hardlinkMany(fromDir: Buffer, toDir: Buffer, rels: Buffer[]): Promise<(SftpError | null)[]> {
    return this.callMany(
      (s) => s.hardlinkMany(fromDir, toDir, rels),
      async (k, err) => (await this.madeBefore(Buffer.concat([toDir, Buffer.from('/'), rels[k]!]), err)) !== FAIL,
    );
  }

  /** Sent again after a drop: a file found gone (removed before the drop) counts as done. */
  removeMany(dir: Buffer, names: Buffer[]): Promise<(SftpError | null)[]> {
    return this.callMany(
      (s) => s.removeMany(dir, names),
      (_k, err) => code(err) === 'ENOENT',
    );
  }

  /**
   * A run of requests answered into one array (call() for many): after a drop the whole run is
   * sent again on a new session, and `doneBefore` tells which failures of that second sending
   * were carried out before the drop (they count as done).
   */
  private async callMany(op: (s: SftpClient) => Promise<(SftpError | null)[]>, doneBefore: (k: number, err: SftpError) => boolean | Promise<boolean>): Promise<(SftpError | null)[]> {
    for (let again = false; ; again = true) {
      const generation = this.generation;
      let results: (SftpError | null)[];
      try {
        results = await op(this.session.sftp);
      } catch (err) {
        if (!lost(err)) throw err;
        await this.reconnect(generation, err);
        continue;
      }
      if (again) {
        for (let k = 0; k < results.length; k++) {
          const err = results[k];
          if (err && (await doneBefore(k, err))) results[k] = null;
        }
      }
      return results;
    }
  }

  setstat(p: Buffer, attrs: SftpAttrs): Promise<void> {
    return this.call((s) => s.setstat(p, attrs));
  }

  lsetstat(p: Buffer, attrs: SftpAttrs): Promise<void> {
    return this.call((s) => s.lsetstat(p, attrs));
  }

  posixRename(from: Buffer, to: Buffer): Promise<void> {
    return this.call(
      (s) => s.posixRename(from, to),
      async (err) => ((code(err) === 'ENOENT' || code(err) === 'EFAILURE') && !(await this.exists(from)) && (await this.exists(to)) ? undefined : FAIL),
    );
  }

  statvfs(p: Buffer): Promise<SftpStatvfs> {
    return this.call((s) => s.statvfs(p));
  }
}

const FAIL: unique symbol = Symbol('fail');
