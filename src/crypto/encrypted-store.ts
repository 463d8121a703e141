import { createHash, createHmac } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import zlib from 'node:zlib';
import { BakkerError, errMessage, errnoCode } from '../errors.js';
import type { Entry } from '../manifest/entry.js';
import { isSnapshotName } from '../engine/naming.js';
import type { Emit } from '../engine/events.js';
import { OPEN_READ, readSmall, SourceError, sourceState, type FileMeta, type LocalSource, type PutResult, type Store, type StoreCaps, type StoreStat } from '../store/store.js';
import { display } from '../util/bpath.js';
import { native } from '../native.js';
import { pack, packSync, unzstd, ZSTD_CHUNK } from '../util/zstd.js';
import { createHasher, type HashAlgo } from '../util/hash.js';
import { decrypt, decryptBuffer, encrypt, encryptBuffer, type Identity } from './age.js';
import { objectName, objectTag, storeKeys, type StoreKeys } from './objects.js';

/**
 * An encrypted store (docs/DESIGN.md, "Encryption"): wraps a local or SFTP store so that the
 * engine writes and reads snapshots as usual while the store holds only age objects under keyed
 * names. Inside a snapshot folder (and a run's tree/diff folders) a path "a/b/c" is stored as
 * "xy/<62 hex>", the keyed hash of the path, so an unchanged file is a hard link by name; folders,
 * owners, modes and times live in the impl only. Impls are stored as NAME.impl.age; this server
 * keeps a plain copy of each impl it wrote ($BAKKER_STATE_DIR/crypt/<store>/impl/), so backups,
 * merges and diffs need no identity. NAME.objects (not secret) lists the object names of a
 * snapshot, so `verify` without the identity can still see that all of them are there.
 */

/** What the engine asks an encrypted store beyond the Store interface. */
export interface Crypt {
  /** An identity was given: objects and impls can be decrypted. */
  readonly canDecrypt: boolean;
  /**
   * For a backup: settles the store key of this run (this server's, or the one the previous
   * snapshot used, read with the identity, or a new one, which is said) and drops local impl
   * copies of snapshots the store no longer has. Returns what goes into the impl header.
   */
  prepare(previous: string | null, complete: string[], emit: Emit): Promise<Record<string, unknown>>;
  /** The plaintext of entry `e`'s object (tree path `p`), checked against its tag; errors name the entry. */
  openPlain(p: Buffer, e: Entry): Promise<Readable>;
  /**
   * The plaintext of a small file's object read at once on this thread (a local store), checked
   * like openPlain; null when the object is not small or the store is not local (use openPlain).
   */
  readSmallPlain(p: Buffer, e: Entry): Promise<Buffer | null>;
  /** Reads entry `e`'s object and checks its tag (needs no identity); a problem's text, or null. */
  checkTag(p: Buffer, e: Entry): Promise<string | null>;
  /** Whether the impl of `name` can be read here (a local copy, or the identity). */
  implReadable(name: string): Promise<boolean>;
  /** The object names listed for snapshot `name` (NAME.objects), or null when it has none. */
  objectList(name: string): Promise<string[] | null>;
  /** stat of object `obj` ("xy/<hex>") of snapshot `name`. */
  statObject(name: string, obj: string): Promise<StoreStat | null>;
}

export interface EncryptedStoreOptions {
  /** X25519 recipients (32-byte keys); none: the store can be read, not written. */
  recipients: Buffer[];
  identities?: Identity[];
  /** The identity file, for messages. */
  identityFile?: string;
  /** This server's state dir (BAKKER_STATE_DIR). */
  stateDir: string;
  /** zstd level for files before encryption (0 or none: off). */
  compression?: number;
}

type Where = { kind: 'plain' } | { kind: 'obj'; root: Buffer; rel: Buffer; owner: string; runTree: string | null } | { kind: 'impl'; name: string; run: boolean };
const PLAIN: Where = { kind: 'plain' };
const RUN_RE = /^\.bakker\/run\/([^/]+)\/(tree|diff|impl)(\/|$)/;
/** The owner of objects in a backup's own run folder: the run's key (set by prepare). */
const CURRENT = '';

function where(p: Buffer): Where {
  const s = p.toString('latin1');
  const slash = s.indexOf('/');
  const first = slash < 0 ? s : s.slice(0, slash);
  if (slash < 0) {
    if (first.endsWith('.impl') && isSnapshotName(first.slice(0, -5))) return { kind: 'impl', name: first.slice(0, -5), run: false };
    return PLAIN;
  }
  const snap = first.endsWith('.diff') ? first.slice(0, -5) : first;
  if (isSnapshotName(snap)) return slash + 1 < s.length ? { kind: 'obj', root: p.subarray(0, slash), rel: p.subarray(slash + 1), owner: snap, runTree: null } : PLAIN;
  if (first !== '.bakker') return PLAIN;
  const m = RUN_RE.exec(s);
  if (!m) return PLAIN;
  const run = m[1]!;
  const owner = run.startsWith('merge-') ? run.slice(6) : CURRENT;
  const rootLen = m[0].length - m[3]!.length;
  if (m[2] === 'impl') return rootLen === s.length ? { kind: 'impl', name: run, run: true } : PLAIN;
  if (rootLen >= s.length - 1) return PLAIN;
  return { kind: 'obj', root: p.subarray(0, rootLen), rel: p.subarray(rootLen + 1), owner, runTree: m[2] === 'tree' ? s.slice(0, rootLen) : null };
}

const age = (p: Buffer) => Buffer.concat([p, Buffer.from('.age')]);
const OBJECTS_SUFFIX = '.objects';
const READ_CHUNK = 256 * 1024;

/** Files up to this size are read at once on the main thread. */
const SYNC_READ = 64 * 1024;

/** The id of a store key (not secret: it tells keys apart, in NAME.objects and messages). */
function keyId(keys: StoreKeys): string {
  return createHmac('sha256', keys.master).update('bakker key id').digest('hex').slice(0, 16);
}

interface ImplRecord {
  size: number;
  mtime: string;
}

export class EncryptedStore implements Store, Crypt {
  readonly url: string;
  readonly caps: StoreCaps;
  readonly folder?: string;
  readonly crypt: Crypt = this;
  readonly canDecrypt: boolean;
  private readonly state: string;
  private readonly keyring = new Map<string, StoreKeys>();
  private current: StoreKeys | null = null;
  /** Snapshot -> its key (from its NAME.objects or its impl header). */
  private readonly owners = new Map<string, Promise<StoreKeys>>();
  /** Shard folders made (or being made) in each run folder. */
  private readonly shards = new Map<string, Promise<void>>();
  /** Object names put into each run's tree (for NAME.objects). */
  private readonly tracked = new Map<string, Set<string>>();

  constructor(
    private readonly inner: Store,
    private readonly opts: EncryptedStoreOptions,
  ) {
    this.url = inner.url;
    this.caps = { ...inner.caps, ownership: false };
    if (inner.folder) this.folder = inner.folder;
    this.canDecrypt = (opts.identities?.length ?? 0) > 0;
    this.state = path.join(opts.stateDir, 'crypt', createHash('sha256').update(inner.url).digest('hex').slice(0, 32));
    this.loadKeyring();
  }

  // ---- this server's state: the keyring and the impl copies ----

  private get keyringFile(): string {
    return path.join(this.state, 'keys.json');
  }

  private loadKeyring(): void {
    let raw: { current?: string; keys?: Record<string, string> };
    try {
      raw = JSON.parse(fs.readFileSync(this.keyringFile, 'utf8')) as typeof raw;
    } catch {
      return;
    }
    for (const [id, k] of Object.entries(raw.keys ?? {})) {
      const keys = storeKeys(Buffer.from(k, 'base64'));
      if (keyId(keys) === id) this.keyring.set(id, keys);
    }
    if (raw.current && this.keyring.has(raw.current)) this.current = this.keyring.get(raw.current)!;
  }

  private saveKeyring(): void {
    fs.mkdirSync(this.state, { recursive: true, mode: 0o700 });
    const keys: Record<string, string> = {};
    for (const [id, k] of this.keyring) keys[id] = k.master.toString('base64');
    const tmp = `${this.keyringFile}.tmp-${process.pid}`;
    fs.writeFileSync(tmp, JSON.stringify({ current: this.current ? keyId(this.current) : undefined, keys }) + '\n', { mode: 0o600 });
    fs.renameSync(tmp, this.keyringFile);
  }

  private addKey(keys: StoreKeys): void {
    const id = keyId(keys);
    if (this.keyring.has(id)) return;
    this.keyring.set(id, keys);
    this.saveKeyring();
  }

  private implCopy(name: string): { file: string; rec: string } {
    const dir = path.join(this.state, 'impl');
    return { file: path.join(dir, `${name}.impl`), rec: path.join(dir, `${name}.json`) };
  }

  private pendingCopy(run: string): string {
    return path.join(this.state, 'impl', `.run-${run}.impl`);
  }

  private dropImplCopy(name: string): void {
    const c = this.implCopy(name);
    fs.rmSync(c.rec, { force: true });
    fs.rmSync(c.file, { force: true });
  }

  /** The local copy of `name`'s impl when it is the one on the store (same size and mtime of its .age file). */
  private async localImpl(name: string): Promise<string | null> {
    const c = this.implCopy(name);
    let rec: ImplRecord;
    try {
      rec = JSON.parse(fs.readFileSync(c.rec, 'utf8')) as ImplRecord;
    } catch {
      return null;
    }
    const st = await this.inner.stat(age(Buffer.from(`${name}.impl`)));
    if (!st || st.size !== rec.size || st.mtime !== rec.mtime || !fs.existsSync(c.file)) return null;
    return c.file;
  }

  // ---- keys ----

  private needIdentity(what: string): BakkerError {
    return new BakkerError('CONFIG', `${what} on the encrypted store ${this.url} needs its identity, and none was given: give it with --key FILE (or encryption.identity in the target's config)`);
  }

  /** Decrypts an age stream, naming `what` in any error (a wrong identity says so). */
  private async *opened(source: AsyncIterable<Buffer>, what: string): AsyncGenerator<Buffer> {
    if (!this.canDecrypt) throw this.needIdentity(`reading ${what}`);
    try {
      yield* decrypt(source, this.opts.identities!);
    } catch (err) {
      throw this.decryptError(err, what);
    }
  }

  /** What a failed decryption of `what` means: a wrong identity, or damage. */
  private decryptError(err: unknown, what: string): BakkerError {
    if (err instanceof BakkerError && err.code === 'VERIFY') return err;
    const msg = errMessage(err);
    if (msg.includes('none of the identities')) {
      return new BakkerError('CONFIG', `cannot decrypt ${what}: the identity ${this.opts.identityFile ?? ''} is not one of the recipients it was written for: give the right --key`.replace('  ', ' '), { cause: err });
    }
    return new BakkerError('VERIFY', `${what} is damaged or was altered on the store (${msg})`, { cause: err });
  }

  /** The header of `name`'s impl, decrypted with the identity. */
  private async implHeader(name: string): Promise<Record<string, unknown>> {
    const local = await this.localImpl(name);
    const raw = local ? fs.createReadStream(local) : Readable.from(this.opened((await this.inner.openRead(age(Buffer.from(`${name}.impl`)))).stream as AsyncIterable<Buffer>, `the impl of ${name}`));
    const gunzip = zlib.createGunzip();
    raw.on('error', (e: Error) => gunzip.destroy(e));
    raw.pipe(gunzip);
    let text = '';
    try {
      for await (const c of gunzip) {
        text += (c as Buffer).toString('utf8');
        if (text.includes('\n')) break;
      }
    } finally {
      raw.destroy();
      gunzip.destroy();
    }
    try {
      return JSON.parse(text.slice(0, text.indexOf('\n'))) as Record<string, unknown>;
    } catch {
      throw new BakkerError('IMPL', `the impl of ${name} has no readable header`);
    }
  }

  private keysOfHeader(h: Record<string, unknown>, name: string): StoreKeys {
    const enc = h.encryption as { key?: unknown } | undefined;
    if (!enc || typeof enc.key !== 'string') throw new BakkerError('IMPL', `the impl of ${name} names no store key: it is damaged`);
    const keys = storeKeys(Buffer.from(enc.key, 'base64'));
    this.addKey(keys);
    return keys;
  }

  /** The key that names `name`'s objects: from its NAME.objects and this server's keyring, else from its impl (identity or local copy). */
  private keysOf(owner: string): Promise<StoreKeys> {
    if (owner === CURRENT) {
      if (!this.current) return Promise.reject(new BakkerError('STORE', 'internal: an encrypted run without a key (prepare was not called)'));
      return Promise.resolve(this.current);
    }
    let k = this.owners.get(owner);
    if (!k) {
      k = (async () => {
        const list = await this.readObjects(owner).catch(() => null);
        const known = list ? this.keyring.get(list.key) : undefined;
        if (known) return known;
        if (!this.canDecrypt && !(await this.localImpl(owner))) {
          throw this.needIdentity(`snapshot ${owner} was made with store key ${list?.key ?? '(unknown)'}, which this server does not hold; reading it`);
        }
        return this.keysOfHeader(await this.implHeader(owner), owner);
      })();
      k.catch(() => this.owners.delete(owner));
      this.owners.set(owner, k);
    }
    return k;
  }

  async prepare(previous: string | null, complete: string[], emit: Emit): Promise<Record<string, unknown>> {
    if (this.opts.recipients.length === 0) throw new BakkerError('CONFIG', `store ${this.url} is encrypted: a backup needs its recipients (encryption.recipients in the target's config, or --recipient age1...)`);
    if (!this.current && previous) {
      if (this.canDecrypt || (await this.localImpl(previous))) {
        this.current = await this.keysOf(previous);
      } else {
        emit({ event: 'warning', message: `this server holds no key and no impl copies for the encrypted store ${this.url}, and no identity was given: this run uses a new store key, so it stores everything anew (give --key to continue the old one)` });
      }
    }
    if (!this.current) {
      this.current = storeKeys();
      this.keyring.set(keyId(this.current), this.current);
    }
    this.saveKeyring();
    // Copies of impls the store no longer has (pruned elsewhere) go.
    const keep = new Set(complete);
    try {
      for (const f of fs.readdirSync(path.join(this.state, 'impl'))) {
        const m = /^(.+)\.(impl|json)$/.exec(f);
        if (m && !m[1]!.startsWith('.') && !keep.has(m[1]!)) fs.rmSync(path.join(this.state, 'impl', f), { force: true });
      }
    } catch {
      // no copies yet
    }
    return { encryption: { format: 'age', key: this.current.master.toString('base64'), keyId: keyId(this.current) } };
  }

  // ---- mapping ----

  /** The stored path of object `rel` in folder `root` (keys of `owner`), its shard folder made first when writing. */
  private async mapped(w: Extract<Where, { kind: 'obj' }>, writing: boolean): Promise<{ p: Buffer; obj: string; keys: StoreKeys }> {
    const keys = await this.keysOf(w.owner);
    const obj = objectName(keys, w.rel);
    if (writing) this.shard(w.root, obj.slice(0, 2));
    return { p: Buffer.concat([w.root, Buffer.from(`/${obj}`)]), obj, keys };
  }

  /** Makes shard folder `root/xy` once; sent before whatever is sent next (a store's mkdir is ordered). */
  private shard(root: Buffer, xy: string): void {
    const key = `${root.toString('latin1')}/${xy}`;
    if (this.shards.has(key)) return;
    const made = this.inner.mkdir(Buffer.from(key, 'latin1'), 0o700).catch((err) => {
      if (errnoCode(err) !== 'EEXIST') throw err;
    });
    made.catch(() => undefined);
    this.shards.set(key, made);
  }

  private track(w: Extract<Where, { kind: 'obj' }>, obj: string): void {
    if (!w.runTree) return;
    let set = this.tracked.get(w.runTree);
    if (!set) this.tracked.set(w.runTree, (set = new Set()));
    set.add(obj);
  }

  private objOf(p: Buffer): Extract<Where, { kind: 'obj' }> | null {
    const w = where(p);
    return w.kind === 'obj' ? w : null;
  }

  // ---- the Store interface ----

  async stat(p: Buffer): Promise<StoreStat | null> {
    const w = where(p);
    if (w.kind === 'obj') return this.inner.stat((await this.mapped(w, false)).p);
    if (w.kind === 'impl') return this.inner.stat(age(p));
    return this.inner.stat(p);
  }

  async readdir(p: Buffer): Promise<Buffer[]> {
    const names = await this.inner.readdir(p);
    if (p.length > 0) return names;
    const out: Buffer[] = [];
    for (const n of names) {
      const s = n.toString('latin1');
      if (s.endsWith('.impl.age')) out.push(n.subarray(0, n.length - 4));
      else if (!s.endsWith(OBJECTS_SUFFIX)) out.push(n);
    }
    return out;
  }

  async readlink(p: Buffer): Promise<Buffer> {
    const w = this.objOf(p);
    if (!w) return this.inner.readlink(p);
    const { p: m } = await this.mapped(w, false);
    const parts: Buffer[] = [];
    for await (const c of this.opened((await this.inner.openRead(m)).stream as AsyncIterable<Buffer>, `the stored symlink ${display(w.rel)}`)) parts.push(c);
    return Buffer.concat(parts);
  }

  async readFile(p: Buffer): Promise<Buffer> {
    if (where(p).kind === 'plain') return this.inner.readFile(p);
    const { stream } = await this.openRead(p);
    const parts: Buffer[] = [];
    for await (const c of stream) parts.push(c as Buffer);
    return Buffer.concat(parts);
  }

  async openRead(p: Buffer): Promise<{ stream: Readable; size: number }> {
    const w = where(p);
    if (w.kind === 'plain') return this.inner.openRead(p);
    if (w.kind === 'obj') throw new BakkerError('STORE', 'internal: objects of an encrypted store are read through openPlain');
    const local = w.run ? null : await this.localImpl(w.name);
    if (local) return { stream: fs.createReadStream(local, { highWaterMark: READ_CHUNK }), size: fs.statSync(local).size };
    const { stream } = await this.inner.openRead(age(p)); // ENOENT when missing, before any identity is asked for
    if (!this.canDecrypt) {
      stream.destroy();
      throw this.needIdentity(`the impl of ${w.name} is encrypted and this server keeps no copy of it; reading it`);
    }
    return { stream: Readable.from(this.opened(stream as AsyncIterable<Buffer>, `the impl of ${w.name}`)), size: -1 };
  }

  async writeFile(p: Buffer, data: Buffer | Readable, opts?: { exclusive?: boolean; mode?: number }): Promise<void> {
    const w = where(p);
    if (w.kind === 'plain') return this.inner.writeFile(p, data, opts);
    if (w.kind !== 'impl' || !w.run) throw new BakkerError('STORE', `internal: ${p.toString()} is not written whole on an encrypted store`);
    if (this.opts.recipients.length === 0) throw new BakkerError('CONFIG', `store ${this.url} is encrypted: writing an impl needs its recipients (encryption.recipients in the target's config, or --recipient age1...)`);
    // A plain copy for this server, written alongside (renamed into place with the impl).
    const pending = this.pendingCopy(w.name);
    fs.mkdirSync(path.dirname(pending), { recursive: true, mode: 0o700 });
    const fd = fs.openSync(pending, 'w', 0o600);
    async function* tee(): AsyncGenerator<Buffer> {
      if (Buffer.isBuffer(data)) {
        fs.writeSync(fd, data);
        yield data;
        return;
      }
      for await (const c of data) {
        fs.writeSync(fd, c as Buffer);
        yield c as Buffer;
      }
    }
    try {
      await this.inner.writeFile(age(p), Readable.from(encrypt(tee(), this.opts.recipients)), opts);
    } catch (err) {
      fs.rmSync(pending, { force: true });
      throw err;
    } finally {
      fs.closeSync(fd);
    }
  }

  async putFile(p: Buffer, src: LocalSource, _meta: FileMeta, hash?: HashAlgo): Promise<PutResult> {
    const w = this.objOf(p);
    if (!w) throw new BakkerError('STORE', `internal: ${p.toString()} is not an object path`);
    const { p: dest, obj, keys } = await this.mapped(w, true);
    const level = src.compressed ? 0 : (this.opts.compression ?? 0); // a copy of a compressed file: not again
    const small = readSmall(src.path, SYNC_READ);
    if (small) {
      // Read on this thread (one read from the page cache costs less than hops to the thread pool).
      const packed = level ? packSync(small.data, level) : null;
      const z = packed !== null;
      const sealed = encryptBuffer(packed ?? small.data, this.opts.recipients);
      const tag = objectTag(keys);
      tag.update(sealed);
      await this.inner.writeNew(dest, [sealed]);
      this.track(w, obj);
      let sum: string | undefined;
      if (hash) {
        const hasher = createHasher(hash);
        hasher.update(small.data);
        sum = hasher.digest();
      }
      return { ...(sum !== undefined ? { sum } : {}), size: small.data.length, tag: tag.digest(), ...(z ? { z: 'zstd' as const } : {}), before: sourceState(small.st0), after: sourceState(small.st1) };
    }
    let fh: fs.promises.FileHandle;
    try {
      fh = await fs.promises.open(src.path, OPEN_READ);
    } catch (err) {
      throw new SourceError(errnoCode(err) ?? 'EIO', (err as Error).message);
    }
    try {
      const st0 = await fh.stat({ bigint: true });
      if (!st0.isFile()) throw new SourceError('EINVAL', `${src.path.toString()} is no longer a regular file`);
      const hasher = hash ? createHasher(hash) : null;
      const tag = objectTag(keys);
      let size = 0;
      const read = async (buf: Buffer): Promise<number> => {
        try {
          return (await fh.read(buf, 0, buf.length, size)).bytesRead;
        } catch (err) {
          throw new SourceError(errnoCode(err) ?? 'EIO', (err as Error).message);
        }
      };
      const chunk = level ? ZSTD_CHUNK : READ_CHUNK;
      async function* plain(): AsyncGenerator<Buffer> {
        for (;;) {
          const buf = Buffer.allocUnsafe(chunk);
          const n = await read(buf);
          if (n === 0) return;
          const part = buf.subarray(0, n);
          hasher?.update(part);
          size += n;
          yield part;
        }
      }
      // Compressed in frames of 1 MiB (on the thread pool) when the first one shrinks; else stored as it is.
      let z = false;
      async function* packed(): AsyncGenerator<Buffer> {
        const it = plain()[Symbol.asyncIterator]();
        const first = await it.next();
        if (first.done) return;
        const c = level ? await pack(first.value, level) : null;
        if (c) {
          z = true;
          yield c;
          for (let r = await it.next(); !r.done; r = await it.next()) yield await native.zstdCompress(r.value, level);
          return;
        }
        yield first.value;
        for (let r = await it.next(); !r.done; r = await it.next()) yield r.value;
      }
      const recipients = this.opts.recipients;
      async function* sealed(): AsyncGenerator<Buffer> {
        for await (const c of encrypt(packed(), recipients)) {
          tag.update(c);
          yield c;
        }
      }
      const body = sealed();
      await this.inner.writeNew(dest, body);
      this.track(w, obj);
      const st1 = await fh.stat({ bigint: true });
      return { ...(hasher ? { sum: hasher.digest() } : {}), size, tag: tag.digest(), ...(z ? { z: 'zstd' as const } : {}), before: sourceState(st0), after: sourceState(st1) };
    } finally {
      await fh.close();
    }
  }

  writeNew(): Promise<number> {
    return Promise.reject(new BakkerError('STORE', 'internal: writeNew on an encrypted store'));
  }

  mkdir(p: Buffer, mode: number): Promise<void> {
    if (where(p).kind === 'obj') return Promise.resolve(); // folders live in the impl only
    return this.inner.mkdir(p, mode);
  }

  /** A symlink is stored as an object holding its target (so it links and is listed like a file). */
  async symlink(target: Buffer, p: Buffer): Promise<void> {
    const w = this.objOf(p);
    if (!w) return this.inner.symlink(target, p);
    if (this.opts.recipients.length === 0) throw new BakkerError('CONFIG', `store ${this.url} is encrypted: writing needs its recipients`);
    const { p: dest, obj } = await this.mapped(w, true);
    await this.inner.writeNew(dest, [encryptBuffer(target, this.opts.recipients)]);
    this.track(w, obj);
  }

  async link(existing: Buffer, p: Buffer): Promise<void> {
    const a = this.objOf(existing);
    const b = this.objOf(p);
    if (!a || !b) return this.inner.link(existing, p);
    const from = await this.mapped(a, false);
    const to = await this.mapped(b, true);
    await this.inner.link(from.p, to.p);
    this.track(b, to.obj);
  }

  async linkMany(fromDir: Buffer, toDir: Buffer, rels: Buffer[]): Promise<(string | null)[]> {
    const probe = (dir: Buffer) => this.objOf(Buffer.concat([dir, Buffer.from('/x')]));
    const a = probe(fromDir);
    const b = probe(toDir);
    if (!a || !b) throw new BakkerError('STORE', 'internal: linkMany outside snapshot folders of an encrypted store');
    const [ka, kb] = await Promise.all([this.keysOf(a.owner), this.keysOf(b.owner)]);
    const fromNames = rels.map((r) => objectName(ka, r));
    const toNames = ka === kb ? fromNames : rels.map((r) => objectName(kb, r));
    for (const n of toNames) this.shard(toDir, n.slice(0, 2));
    let codes: (string | null)[];
    if (this.inner.linkMany && ka === kb) codes = await this.inner.linkMany(fromDir, toDir, fromNames.map((n) => Buffer.from(n)));
    else {
      codes = await Promise.all(
        rels.map((_, i) =>
          this.inner.link(Buffer.from(`${fromDir.toString('latin1')}/${fromNames[i]}`, 'latin1'), Buffer.from(`${toDir.toString('latin1')}/${toNames[i]}`, 'latin1')).then(
            () => null,
            (err) => {
              const code = errnoCode(err);
              if (!code) throw err;
              return code;
            },
          ),
        ),
      );
    }
    codes.forEach((c, i) => c === null && this.track(b, toNames[i]!));
    return codes;
  }

  async rename(from: Buffer, to: Buffer): Promise<void> {
    const a = where(from);
    const b = where(to);
    if (a.kind === 'impl' && b.kind === 'impl') return this.renameImpl(from, a, to, b);
    if (a.kind === 'obj' && b.kind === 'obj') {
      const [x, y] = await Promise.all([this.mapped(a, false), this.mapped(b, true)]);
      return this.inner.rename(x.p, y.p);
    }
    if (a.kind !== 'plain' || b.kind !== 'plain') throw new BakkerError('STORE', `internal: cannot rename ${from.toString()} to ${to.toString()} on an encrypted store`);
    return this.inner.rename(from, to);
  }

  /**
   * Publishing an impl (the commit point): NAME.objects first (from what the run put into its
   * tree), then the impl's rename; this server's copy follows it.
   */
  private async renameImpl(from: Buffer, a: Extract<Where, { kind: 'impl' }>, to: Buffer, b: Extract<Where, { kind: 'impl' }>): Promise<void> {
    if (!a.run || b.run) throw new BakkerError('STORE', 'internal: an impl is only published from a run folder');
    const runTree = `.bakker/run/${a.name}/tree`;
    const set = this.tracked.get(runTree);
    const keys = a.name.startsWith('merge-') ? await this.keysOf(b.name) : this.current;
    if (set && keys) {
      const names = [...set].sort();
      const text = `${JSON.stringify({ bakker: 'objects', snapshot: b.name, key: keyId(keys), count: names.length })}\n${names.join('\n')}${names.length ? '\n' : ''}`;
      await this.inner.writeFile(Buffer.from(`${b.name}${OBJECTS_SUFFIX}`), zlib.gzipSync(text, { level: 1 }));
      this.tracked.delete(runTree);
    }
    await this.inner.rename(age(from), age(to));
    if (keys) this.owners.set(b.name, Promise.resolve(keys));
    const pending = this.pendingCopy(a.name);
    const st = await this.inner.stat(age(to));
    const c = this.implCopy(b.name);
    try {
      if (st && fs.existsSync(pending)) {
        fs.renameSync(pending, c.file);
        const rec: ImplRecord = { size: st.size, mtime: st.mtime };
        fs.writeFileSync(c.rec, JSON.stringify(rec) + '\n', { mode: 0o600 });
      } else this.dropImplCopy(b.name);
    } catch {
      this.dropImplCopy(b.name); // the next run reads it with the identity, or copies everything
    }
  }

  setMeta(p: Buffer, meta: FileMeta, isSymlink?: boolean): Promise<void> {
    if (where(p).kind === 'obj') return Promise.resolve(); // kept in the impl
    return this.inner.setMeta(p, meta, isSymlink);
  }

  setDirMetaMany(items: { p: Buffer; meta: Required<Pick<FileMeta, 'mode' | 'uid' | 'gid' | 'mtime'>> }[]): Promise<void> {
    const rest = items.filter((i) => where(i.p).kind !== 'obj');
    if (rest.length === 0) return Promise.resolve();
    if (this.inner.setDirMetaMany) return this.inner.setDirMetaMany(rest);
    return Promise.all(rest.map((i) => this.inner.setMeta(i.p, i.meta))).then(() => undefined);
  }

  async unlink(p: Buffer): Promise<void> {
    const w = where(p);
    if (w.kind === 'obj') {
      const m = await this.mapped(w, false);
      await this.inner.unlink(m.p);
      if (w.runTree) this.tracked.get(w.runTree)?.delete(m.obj);
      return;
    }
    if (w.kind === 'impl') {
      // Removing a snapshot: its impl (the commit point), then its object list and this server's copy.
      await this.inner.unlink(age(p));
      if (!w.run) {
        await this.inner.unlink(Buffer.from(`${w.name}${OBJECTS_SUFFIX}`)).catch(() => undefined);
        this.dropImplCopy(w.name);
        this.owners.delete(w.name);
      }
      return;
    }
    return this.inner.unlink(p);
  }

  async remove(p: Buffer): Promise<void> {
    const w = where(p);
    if (w.kind === 'obj') return this.inner.remove((await this.mapped(w, false)).p);
    if (w.kind === 'impl') {
      await this.inner.remove(age(p));
      if (w.run) fs.rmSync(this.pendingCopy(w.name), { force: true });
      return;
    }
    const s = p.toString('latin1');
    if (s.startsWith('.bakker/run/')) {
      const run = s.slice('.bakker/run/'.length);
      if (!run.includes('/')) {
        fs.rmSync(this.pendingCopy(run), { force: true });
        for (const k of this.tracked.keys()) if (k.startsWith(`${s}/`)) this.tracked.delete(k);
        for (const k of this.shards.keys()) if (k.startsWith(`${s}/`)) this.shards.delete(k);
      }
    }
    return this.inner.remove(p);
  }

  statvfs(): Promise<{ freeBytes: number; freeInodes: number }> {
    return this.inner.statvfs();
  }

  sync(): Promise<void> {
    return this.inner.sync();
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  // ---- Crypt ----

  private async objectOf(p: Buffer, e: Entry): Promise<{ p: Buffer; obj: string; keys: StoreKeys }> {
    const w = this.objOf(p);
    if (!w) throw new BakkerError('STORE', `internal: ${display(p)} is not an object path`);
    if (e.tag === undefined && e.type === 'file') throw new BakkerError('VERIFY', `${display(e.path)} has no object tag in the impl: the impl is damaged`);
    return this.mapped(w, false);
  }

  private static unreadable(e: Entry, obj: string, err: unknown): BakkerError {
    return new BakkerError('VERIFY', `the stored object of ${display(e.path)} (${obj}) cannot be read (${errnoCode(err) ?? errMessage(err)}): it is missing or damaged`, { cause: err });
  }

  /** Throws when `t`'s digest is not the entry's tag. */
  private static checkDigest(t: ReturnType<typeof objectTag>, e: Entry, obj: string): void {
    if (e.tag !== undefined && t.digest() !== e.tag) {
      throw new BakkerError('VERIFY', `the stored object of ${display(e.path)} (${obj}) is not the one the impl names (its tag differs): it was modified, truncated or swapped`);
    }
  }

  /** The object's bytes with its tag checked at the end (a mismatch throws, naming the entry). */
  private async *tagged(p: Buffer, e: Entry): AsyncGenerator<Buffer> {
    const { p: m, obj, keys } = await this.objectOf(p, e);
    let stream: Readable;
    try {
      stream = (await this.inner.openRead(m)).stream;
    } catch (err) {
      throw EncryptedStore.unreadable(e, obj, err);
    }
    const t = objectTag(keys);
    for await (const c of stream as AsyncIterable<Buffer>) {
      t.update(c);
      yield c;
    }
    EncryptedStore.checkDigest(t, e, obj);
  }

  async openPlain(p: Buffer, e: Entry): Promise<Readable> {
    if (!this.canDecrypt) throw this.needIdentity(`reading the content of ${display(e.path)} (to restore, export or archive it)`);
    await this.objectOf(p, e); // fail early on a bad entry
    const what = `the stored object of ${display(e.path)}`;
    const plain = this.opened(this.tagged(p, e), what);
    return Readable.from(e.z === 'zstd' ? unzstd(plain, what) : plain);
  }

  async readSmallPlain(p: Buffer, e: Entry): Promise<Buffer | null> {
    const root = this.inner.localRoot;
    if (!root || !this.canDecrypt) return null;
    const { p: m, obj, keys } = await this.objectOf(p, e);
    const what = `the stored object of ${display(e.path)}`;
    let sealed: { data: Buffer } | null;
    try {
      sealed = readSmall(Buffer.concat([Buffer.from(`${root}/`), m]), SYNC_READ + 4096);
    } catch (err) {
      throw EncryptedStore.unreadable(e, obj, err);
    }
    if (!sealed) return null;
    const t = objectTag(keys);
    t.update(sealed.data);
    EncryptedStore.checkDigest(t, e, obj);
    let plain: Buffer;
    try {
      plain = decryptBuffer(sealed.data, this.opts.identities!);
    } catch (err) {
      throw this.decryptError(err, what);
    }
    if (e.z !== 'zstd') return plain;
    const f = (() => {
      try {
        return native.zstdFrame(plain);
      } catch {
        return null;
      }
    })();
    if (!f || f[0] !== plain.length) return null; // several frames: the streaming reader takes it
    try {
      return native.zstdDecompressSync(plain, f[1]);
    } catch (err) {
      throw new BakkerError('VERIFY', `${what} is damaged: its zstd data ${errMessage(err)}`);
    }
  }

  async checkTag(p: Buffer, e: Entry): Promise<string | null> {
    try {
      for await (const _ of this.tagged(p, e));
      return null;
    } catch (err) {
      return errMessage(err);
    }
  }

  async implReadable(name: string): Promise<boolean> {
    return this.canDecrypt || (await this.localImpl(name)) !== null;
  }

  private async readObjects(name: string): Promise<{ key: string; names: string[] }> {
    const raw = zlib.gunzipSync(await this.inner.readFile(Buffer.from(`${name}${OBJECTS_SUFFIX}`))).toString('latin1');
    const nl = raw.indexOf('\n');
    const head = JSON.parse(raw.slice(0, nl)) as { bakker?: string; key?: string };
    if (head.bakker !== 'objects' || typeof head.key !== 'string') throw new Error('not an object list');
    const names = raw.slice(nl + 1).split('\n').filter((n) => n.length > 0);
    if (names.some((n) => !/^[0-9a-f]{2}\/[0-9a-f]{62}$/.test(n))) throw new Error('a malformed object name');
    return { key: head.key, names };
  }

  async objectList(name: string): Promise<string[] | null> {
    try {
      return (await this.readObjects(name)).names;
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return null;
      throw new BakkerError('VERIFY', `${name}${OBJECTS_SUFFIX} cannot be read (${errMessage(err)}): it is damaged`);
    }
  }

  statObject(name: string, obj: string): Promise<StoreStat | null> {
    return this.inner.stat(Buffer.from(`${name}/${obj}`));
  }
}
