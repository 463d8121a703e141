import type { ClientChannel } from 'ssh2';

/**
 * An SFTP version 3 client (draft-ietf-secsh-filexfer-02 plus OpenSSH's extensions) speaking over
 * an ssh2 "sftp" subsystem channel. ssh2 carries the connection (transport, keys, host key check,
 * keepalives); the SFTP framing is here because ssh2's own SFTP client takes paths as strings
 * and writes them as UTF-8, while a backup must keep names that are not UTF-8 byte for byte.
 * Every path here is a Buffer sent as it is. Requests are pipelined: each gets an id and a
 * promise, any number may be in flight, and OpenSSH's server answers them in order.
 */

const INIT = 1;
const VERSION = 2;
const OPEN = 3;
const CLOSE = 4;
const READ = 5;
const WRITE = 6;
const LSTAT = 7;
const FSTAT = 8;
const SETSTAT = 9;
const FSETSTAT = 10;
const OPENDIR = 11;
const READDIR = 12;
const REMOVE = 13;
const MKDIR = 14;
const RMDIR = 15;
const STAT = 17;
const READLINK = 19;
const SYMLINK = 20;
const EXTENDED = 200;
const STATUS = 101;
const HANDLE = 102;
const DATA = 103;
const NAME = 104;
const ATTRS = 105;
const EXTENDED_REPLY = 201;

export const FXF_READ = 0x01;
export const FXF_WRITE = 0x02;
export const FXF_CREAT = 0x08;
export const FXF_TRUNC = 0x10;
export const FXF_EXCL = 0x20;

const A_SIZE = 0x1;
const A_UIDGID = 0x2;
const A_PERMISSIONS = 0x4;
const A_ACMODTIME = 0x8;
const A_EXTENDED = 0x80000000;

/** SSH_FX_* status codes as errno-style codes (OpenSSH folds most errors into FAILURE). */
const STATUS_CODES: Record<number, string> = { 1: 'EOF', 2: 'ENOENT', 3: 'EACCES', 4: 'EFAILURE', 5: 'EINVAL', 6: 'ENOTCONN', 7: 'ECONNRESET', 8: 'ENOTSUP' };

export interface SftpAttrs {
  size?: number;
  uid?: number;
  gid?: number;
  /** st_mode: type and permission bits. */
  mode?: number;
  atime?: number;
  mtime?: number;
}

export interface SftpStatvfs {
  bsize: number;
  frsize: number;
  blocks: number;
  bfree: number;
  bavail: number;
  files: number;
  ffree: number;
  favail: number;
}

/** A failed SFTP request: `code` is ENOENT, EACCES, EFAILURE (OpenSSH's catch-all), ... */
export class SftpError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

interface Pending {
  resolve: (v: Reply) => void;
  reject: (e: Error) => void;
  what: string;
}

type Reply = { type: number; body: Buffer };

/** Writes SFTP fields into a growing buffer. */
class Packet {
  private buf: Buffer;
  private len = 5; // uint32 length + type

  /** `size`: about how many bytes the packet will take (data writes: a little more than the data). */
  constructor(type: number, size = 256) {
    this.buf = Buffer.allocUnsafe(size);
    this.buf[4] = type;
  }

  private room(n: number): void {
    if (this.len + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.len + n));
    this.buf.copy(next, 0, 0, this.len);
    this.buf = next;
  }

  u32(v: number): this {
    this.room(4);
    this.buf.writeUInt32BE(v >>> 0, this.len);
    this.len += 4;
    return this;
  }

  u64(v: number): this {
    this.room(8);
    this.buf.writeUInt32BE(Math.floor(v / 0x1_0000_0000), this.len);
    this.buf.writeUInt32BE(v >>> 0, this.len + 4);
    this.len += 8;
    return this;
  }

  bytes(b: Buffer): this {
    this.u32(b.length);
    this.room(b.length);
    b.copy(this.buf, this.len);
    this.len += b.length;
    return this;
  }

  attrs(a: SftpAttrs): this {
    let flags = 0;
    if (a.size !== undefined) flags |= A_SIZE;
    if (a.uid !== undefined && a.gid !== undefined) flags |= A_UIDGID;
    if (a.mode !== undefined) flags |= A_PERMISSIONS;
    if (a.mtime !== undefined) flags |= A_ACMODTIME;
    this.u32(flags);
    if (flags & A_SIZE) this.u64(a.size!);
    if (flags & A_UIDGID) this.u32(a.uid!).u32(a.gid!);
    if (flags & A_PERMISSIONS) this.u32(a.mode!);
    if (flags & A_ACMODTIME) this.u32(a.atime ?? a.mtime!).u32(a.mtime!);
    return this;
  }

  done(): Buffer {
    this.buf.writeUInt32BE(this.len - 4, 0);
    return this.buf.subarray(0, this.len);
  }
}

/** Reads SFTP fields from a reply body. */
class Reader {
  private at = 0;
  constructor(private readonly b: Buffer) {}
  get left(): number {
    return this.b.length - this.at;
  }
  u32(): number {
    const v = this.b.readUInt32BE(this.at);
    this.at += 4;
    return v;
  }
  u64(): number {
    const hi = this.u32();
    return hi * 0x1_0000_0000 + this.u32();
  }
  bytes(): Buffer {
    const n = this.u32();
    if (this.at + n > this.b.length) throw new SftpError('EPROTO', 'malformed SFTP reply (string past the end)');
    const v = this.b.subarray(this.at, this.at + n);
    this.at += n;
    return v;
  }
  attrs(): SftpAttrs {
    const flags = this.u32();
    const a: SftpAttrs = {};
    if (flags & A_SIZE) a.size = this.u64();
    if (flags & A_UIDGID) {
      a.uid = this.u32();
      a.gid = this.u32();
    }
    if (flags & A_PERMISSIONS) a.mode = this.u32();
    if (flags & A_ACMODTIME) {
      a.atime = this.u32();
      a.mtime = this.u32();
    }
    if (flags & A_EXTENDED) {
      const n = this.u32();
      for (let i = 0; i < n; i++) {
        this.bytes();
        this.bytes();
      }
    }
    return a;
  }
}

/** Requests sent together under consecutive ids, answered into one array (see hardlinkMany). */
interface Run {
  what: string;
  first: number;
  count: number;
  left: number;
  results: (SftpError | null)[];
  paths: Buffer[];
  resolve: (r: (SftpError | null)[]) => void;
  reject: (err: Error) => void;
}

/** Writes the SFTP string "dir/name" at `o`; returns where it ends. */
function writeJoined(buf: Buffer, o: number, dir: Buffer, name: Buffer): number {
  o = buf.writeUInt32BE(dir.length + 1 + name.length, o);
  o += dir.copy(buf, o);
  buf[o++] = 0x2f;
  return o + name.copy(buf, o);
}

export class SftpClient {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private runs: Run[] = [];
  private runRequests = 0;
  private inbox: Buffer[] = [];
  private inboxBytes = 0;
  private closedWith: Error | null = null;
  /** Extensions the server announced, with their versions. */
  readonly extensions = new Map<string, string>();

  private constructor(private readonly chan: ClientChannel) {
    chan.on('data', (d: Buffer) => this.receive(d));
    const fail = (err: Error) => {
      this.closedWith ??= err;
      for (const p of this.pending.values()) p.reject(new SftpError('ECONNRESET', `SFTP connection lost during ${p.what}: ${err.message}`));
      this.pending.clear();
      for (const r of this.runs) r.reject(new SftpError('ECONNRESET', `SFTP connection lost during ${r.what}: ${err.message}`));
      this.runs = [];
      this.runRequests = 0;
    };
    chan.on('close', () => fail(new Error('channel closed')));
    chan.on('error', (err: Error) => fail(err));
  }

  /** Starts SFTP on an open "sftp" subsystem channel. */
  static async start(chan: ClientChannel): Promise<SftpClient> {
    const c = new SftpClient(chan);
    const reply = await new Promise<Reply>((resolve, reject) => {
      c.pending.set(0, { resolve, reject, what: 'init' });
      chan.write(new Packet(INIT).u32(3).done());
    });
    if (reply.type !== VERSION) throw new SftpError('EPROTO', `the server did not answer SFTP init (reply type ${reply.type})`);
    const r = new Reader(reply.body);
    const version = r.u32();
    if (version < 3) throw new SftpError('EPROTO', `the server speaks SFTP version ${version}; bakker needs 3`);
    while (r.left > 0) c.extensions.set(r.bytes().toString('latin1'), r.bytes().toString('latin1'));
    return c;
  }

  private receive(d: Buffer): void {
    this.inbox.push(d);
    this.inboxBytes += d.length;
    for (;;) {
      if (this.inboxBytes < 4) return;
      let buf = this.inbox.length === 1 ? this.inbox[0]! : Buffer.concat(this.inbox);
      const len = buf.readUInt32BE(0);
      if (buf.length < 4 + len) {
        this.inbox = [buf];
        return;
      }
      const type = buf[4]!;
      let id = 0;
      let body: Buffer;
      if (type === VERSION) body = buf.subarray(5, 4 + len);
      else {
        id = buf.readUInt32BE(5);
        body = buf.subarray(9, 4 + len);
      }
      buf = buf.subarray(4 + len);
      this.inbox = buf.length ? [buf] : [];
      this.inboxBytes = buf.length;
      const p = this.pending.get(id);
      if (p) {
        this.pending.delete(id);
        p.resolve({ type, body });
      } else if (this.runs.length > 0) this.runReply(id, type, body);
    }
  }

  private request(type: number, what: string, fill: (p: Packet) => Packet, size?: number): Promise<Reply> {
    if (this.closedWith) return Promise.reject(new SftpError('ECONNRESET', `SFTP connection lost: ${this.closedWith.message}`));
    const id = this.nextId;
    this.nextId = (this.nextId % 0xffff_fffe) + 1;
    const pkt = fill(new Packet(type, size).u32(id)).done();
    return new Promise<Reply>((resolve, reject) => {
      this.pending.set(id, { resolve, reject, what });
      this.send(pkt);
    });
  }

  /**
   * Requests made in one go (a batch of links, the writes of a file) leave in one channel write:
   * one SSH packet for many small requests instead of one each (each packet is encrypted and
   * framed on its own, which is most of the cost of a small request).
   */
  private out: Buffer[] = [];
  private outBytes = 0;
  private send(pkt: Buffer): void {
    this.out.push(pkt);
    this.outBytes += pkt.length;
    if (this.outBytes >= 256 * 1024) this.flushOut();
    else if (this.out.length === 1) setImmediate(() => this.flushOut());
  }

  private flushOut(): void {
    if (this.out.length === 0) return;
    const data = this.out.length === 1 ? this.out[0]! : Buffer.concat(this.out, this.outBytes);
    this.out = [];
    this.outBytes = 0;
    this.chan.write(data);
  }

  private static status(reply: Reply, what: string, path?: Buffer): void {
    if (reply.type !== STATUS) throw new SftpError('EPROTO', `unexpected SFTP reply ${reply.type} to ${what}`);
    const r = new Reader(reply.body);
    const code = r.u32();
    if (code === 0) return;
    let msg = '';
    try {
      msg = r.bytes().toString('utf8');
    } catch {
      msg = '';
    }
    const name = STATUS_CODES[code] ?? `ESFTP${code}`;
    throw new SftpError(name, `${name}: ${what}${path ? ` '${path.toString()}'` : ''} failed${msg ? ` (${msg})` : ''}`);
  }

  private async expectStatus(type: number, what: string, path: Buffer | undefined, fill: (p: Packet) => Packet): Promise<void> {
    SftpClient.status(await this.request(type, what, fill), what, path);
  }

  private async expect(type: number, want: number, what: string, path: Buffer | undefined, fill: (p: Packet) => Packet): Promise<Reader> {
    const reply = await this.request(type, what, fill);
    if (reply.type !== want) {
      SftpClient.status(reply, what, path);
      throw new SftpError('EPROTO', `unexpected SFTP reply ${reply.type} to ${what}`);
    }
    return new Reader(reply.body);
  }

  private ext(name: string): string {
    if (!this.extensions.has(name)) throw new SftpError('ENOTSUP', `the SFTP server lacks the ${name} extension (OpenSSH 5.x or newer has it)`);
    return name;
  }

  async lstat(p: Buffer): Promise<SftpAttrs> {
    return (await this.expect(LSTAT, ATTRS, 'lstat', p, (k) => k.bytes(p))).attrs();
  }

  async stat(p: Buffer): Promise<SftpAttrs> {
    return (await this.expect(STAT, ATTRS, 'stat', p, (k) => k.bytes(p))).attrs();
  }

  async fstat(h: Buffer): Promise<SftpAttrs> {
    return (await this.expect(FSTAT, ATTRS, 'fstat', undefined, (k) => k.bytes(h))).attrs();
  }

  async open(p: Buffer, flags: number, attrs: SftpAttrs = {}): Promise<Buffer> {
    return Buffer.from((await this.expect(OPEN, HANDLE, 'open', p, (k) => k.bytes(p).u32(flags).attrs(attrs))).bytes());
  }

  close(h: Buffer): Promise<void> {
    return this.expectStatus(CLOSE, 'close', undefined, (k) => k.bytes(h));
  }

  /** Up to `len` bytes at `offset`; null at the end of the file. */
  async read(h: Buffer, offset: number, len: number): Promise<Buffer | null> {
    const reply = await this.request(READ, 'read', (k) => k.bytes(h).u64(offset).u32(len));
    if (reply.type === DATA) return Buffer.from(new Reader(reply.body).bytes());
    if (reply.type === STATUS && reply.body.readUInt32BE(0) === 1) return null;
    SftpClient.status(reply, 'read');
    return null;
  }

  /** Writes `data` at `offset`; the bytes are copied into the request at once, so `data` may be reused. */
  async write(h: Buffer, offset: number, data: Buffer): Promise<void> {
    SftpClient.status(await this.request(WRITE, 'write', (k) => k.bytes(h).u64(offset).bytes(data), 32 + h.length + data.length), 'write');
  }

  /** A directory's names (without "." and ".."), in the server's order. */
  async readdir(p: Buffer): Promise<{ name: Buffer; attrs: SftpAttrs }[]> {
    const h = Buffer.from((await this.expect(OPENDIR, HANDLE, 'opendir', p, (k) => k.bytes(p))).bytes());
    const out: { name: Buffer; attrs: SftpAttrs }[] = [];
    try {
      for (;;) {
        const reply = await this.request(READDIR, 'readdir', (k) => k.bytes(h));
        if (reply.type === STATUS && reply.body.readUInt32BE(0) === 1) break;
        if (reply.type !== NAME) SftpClient.status(reply, 'readdir', p);
        const r = new Reader(reply.body);
        const n = r.u32();
        for (let i = 0; i < n; i++) {
          const name = Buffer.from(r.bytes());
          r.bytes(); // long name
          const attrs = r.attrs();
          if ((name.length === 1 && name[0] === 0x2e) || (name.length === 2 && name[0] === 0x2e && name[1] === 0x2e)) continue;
          out.push({ name, attrs });
        }
      }
    } finally {
      this.close(h).catch(() => undefined); // not waited for: what comes next is sent after it
    }
    return out;
  }

  remove(p: Buffer): Promise<void> {
    return this.expectStatus(REMOVE, 'remove', p, (k) => k.bytes(p));
  }

  mkdir(p: Buffer, mode: number): Promise<void> {
    return this.expectStatus(MKDIR, 'mkdir', p, (k) => k.bytes(p).attrs({ mode }));
  }

  rmdir(p: Buffer): Promise<void> {
    return this.expectStatus(RMDIR, 'rmdir', p, (k) => k.bytes(p));
  }

  async readlink(p: Buffer): Promise<Buffer> {
    const r = await this.expect(READLINK, NAME, 'readlink', p, (k) => k.bytes(p));
    if (r.u32() < 1) throw new SftpError('EPROTO', 'readlink returned no name');
    return Buffer.from(r.bytes());
  }

  /** Makes `link` a symlink to `target`. (OpenSSH takes the two in the reverse of the draft's order.) */
  symlink(target: Buffer, link: Buffer): Promise<void> {
    return this.expectStatus(SYMLINK, 'symlink', link, (k) => k.bytes(target).bytes(link));
  }

  fsetstat(h: Buffer, attrs: SftpAttrs): Promise<void> {
    return this.expectStatus(FSETSTAT, 'fsetstat', undefined, (k) => k.bytes(h).attrs(attrs));
  }

  setstat(p: Buffer, attrs: SftpAttrs): Promise<void> {
    return this.expectStatus(SETSTAT, 'setstat', p, (k) => k.bytes(p).attrs(attrs));
  }

  /** setstat that does not follow a final symlink (lsetstat@openssh.com). */
  lsetstat(p: Buffer, attrs: SftpAttrs): Promise<void> {
    return this.expectStatus(EXTENDED, 'lsetstat', p, (k) => k.bytes(Buffer.from(this.ext('lsetstat@openssh.com'))).bytes(p).attrs(attrs));
  }

  /** rename that replaces `to` atomically (posix-rename@openssh.com). */
  posixRename(from: Buffer, to: Buffer): Promise<void> {
    return this.expectStatus(EXTENDED, 'rename', from, (k) => k.bytes(Buffer.from(this.ext('posix-rename@openssh.com'))).bytes(from).bytes(to));
  }

  /** A reply to a request of a run: its result goes into the run's array. */
  private runReply(id: number, type: number, body: Buffer): void {
    for (let i = 0; i < this.runs.length; i++) {
      const r = this.runs[i]!;
      const k = id - r.first;
      if (k < 0 || k >= r.count) continue;
      let result: SftpError | null = null;
      try {
        SftpClient.status({ type, body }, r.what, r.paths[k]);
      } catch (err) {
        result = err as SftpError;
      }
      r.results[k] = result;
      this.runRequests--;
      if (--r.left === 0) {
        this.runs.splice(i, 1);
        r.resolve(r.results);
      }
      return;
    }
  }

  /**
   * Hard links `fromDir/rel` -> `toDir/rel` for each of `rels` (hardlink@openssh.com), sent in
   * one write under consecutive request ids and answered into one array: each link's failure, or
   * null. No promise or packet object per link: this is the hot path of an incremental run.
   * Rejects (ECONNRESET) when the connection is lost; some links may have been made by then.
   */
  hardlinkMany(fromDir: Buffer, toDir: Buffer, rels: Buffer[]): Promise<(SftpError | null)[]> {
    if (rels.length === 0) return Promise.resolve([]);
    const ext = Buffer.from(this.ext('hardlink@openssh.com'));
    // EXTENDED "hardlink@openssh.com" fromDir/rel toDir/rel
    return this.sendRun('hardlink', rels, 4 + ext.length + 4 + fromDir.length + 1 + 4 + toDir.length + 1, 2, (buf, o, r) => {
      buf[o++] = EXTENDED;
      o += 4; // the id, filled in by sendRun
      o = buf.writeUInt32BE(ext.length, o);
      o += ext.copy(buf, o);
      o = writeJoined(buf, o, fromDir, r);
      return [writeJoined(buf, o, toDir, r), o + 4];
    });
  }

  /** Removes `dir/name` for each of `names` (files or symlinks), in one write like hardlinkMany. */
  removeMany(dir: Buffer, names: Buffer[]): Promise<(SftpError | null)[]> {
    if (names.length === 0) return Promise.resolve([]);
    return this.sendRun('remove', names, 4 + dir.length + 1, 1, (buf, o, n) => {
      buf[o++] = REMOVE;
      o += 4;
      return [writeJoined(buf, o, dir, n), o + 4];
    });
  }

  /**
   * Requests sent in one write under consecutive ids and answered into one array: each one's
   * failure, or null. `fixed` is each request's size after type and id, besides `perName` times
   * its name's length; `fill` writes the request from just after the length (type, id space,
   * arguments) and returns where it ended and where the path to name in errors starts. No
   * promise or packet object per request: the hot paths of incremental runs and of pruning.
   * Rejects (ECONNRESET) when the connection is lost; some may have been carried out by then.
   */
  private sendRun(what: string, names: Buffer[], fixed: number, perName: number, fill: (buf: Buffer, at: number, name: Buffer) => [number, number]): Promise<(SftpError | null)[]> {
    if (this.closedWith) return Promise.reject(new SftpError('ECONNRESET', `SFTP connection lost: ${this.closedWith.message}`));
    let size = 0;
    for (const n of names) size += 4 + 1 + 4 + fixed + perName * n.length;
    if (this.nextId + names.length >= 0xffff_fffe) this.nextId = 1; // ids of one run stay consecutive
    const first = this.nextId;
    this.nextId += names.length;
    const buf = Buffer.allocUnsafe(size);
    const paths: Buffer[] = [];
    let o = 0;
    for (let k = 0; k < names.length; k++) {
      const start = o;
      const [end, pathAt] = fill(buf, o + 4, names[k]!);
      buf.writeUInt32BE(end - start - 4, start);
      buf.writeUInt32BE(first + k, start + 5);
      paths.push(buf.subarray(pathAt, end));
      o = end;
    }
    return new Promise((resolve, reject) => {
      this.runs.push({ what, first, count: names.length, left: names.length, results: new Array(names.length).fill(null), paths, resolve, reject });
      this.runRequests += names.length;
      this.send(o === size ? buf : buf.subarray(0, o));
    });
  }

  /** A hard link `link` to `existing` (hardlink@openssh.com). */
  hardlink(existing: Buffer, link: Buffer): Promise<void> {
    return this.expectStatus(EXTENDED, 'hardlink', link, (k) => k.bytes(Buffer.from(this.ext('hardlink@openssh.com'))).bytes(existing).bytes(link));
  }

  fsync(h: Buffer): Promise<void> {
    return this.expectStatus(EXTENDED, 'fsync', undefined, (k) => k.bytes(Buffer.from(this.ext('fsync@openssh.com'))).bytes(h));
  }

  async statvfs(p: Buffer): Promise<SftpStatvfs> {
    const r = await this.expect(EXTENDED, EXTENDED_REPLY, 'statvfs', p, (k) => k.bytes(Buffer.from(this.ext('statvfs@openssh.com'))).bytes(p));
    const [bsize, frsize, blocks, bfree, bavail, files, ffree, favail] = Array.from({ length: 8 }, () => r.u64()) as number[];
    return { bsize: bsize!, frsize: frsize!, blocks: blocks!, bfree: bfree!, bavail: bavail!, files: files!, ffree: ffree!, favail: favail! };
  }

  /** Requests sent and not yet answered. */
  get inFlight(): number {
    return this.pending.size + this.runRequests;
  }

  end(): void {
    this.chan.end();
  }
}
