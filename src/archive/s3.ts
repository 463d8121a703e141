import { createHash } from 'node:crypto';
import { BakkerError, errMessage } from '../errors.js';
import { faultPoint } from '../engine/fault.js';

// bakker pins its AWS SDK version (the last releases for Node 20); the SDK's notice about later ones is not the admin's concern.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
const sdk = await import('@aws-sdk/client-s3');

export type Credentials = 'default' | 'env' | { accessKeyId: string; secretAccessKey: string; sessionToken?: string } | { profile: string };

export interface S3Settings {
  /** The config's name for this archive, for messages. */
  name: string;
  endpoint?: string;
  region: string;
  bucket: string;
  credentials: Credentials;
  /** Path-style addressing (endpoint/bucket/key): the default with an endpoint. */
  pathStyle?: boolean;
}

export interface ObjectInfo {
  key: string;
  size: number;
  modified: Date;
}

export interface HeadInfo {
  size: number;
  storageClass: string;
  /** The x-amz-restore state of an archived object: in progress, or readable until `expiry`. */
  restore?: { ongoing: boolean; expiry?: string };
}

export interface Uploaded {
  size: number;
  sha256: string;
  parts: number;
}

interface SdkError {
  name?: string;
  Code?: string;
  code?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number };
}

/** An SDK error's S3 code (or Node's errno code) and HTTP status. */
function failure(err: unknown): { code: string; status: number | undefined } {
  const e = err as SdkError;
  return { code: e.Code ?? e.name ?? e.code ?? '', status: e.$metadata?.httpStatusCode };
}

/**
 * The few S3 operations the archive tier uses, on @aws-sdk/client-s3 (checksums only where S3
 * requires them: s3rver and other S3-compatible servers store aws-chunked bodies otherwise), with
 * every failure turned into one line that names the archive, the bucket and the fix.
 */
export class ObjectStore {
  private readonly client: InstanceType<typeof sdk.S3Client>;
  readonly where: string;

  constructor(readonly s: S3Settings) {
    let credentials: { accessKeyId: string; secretAccessKey: string; sessionToken?: string } | undefined;
    if (s.credentials === 'env') {
      const id = process.env.AWS_ACCESS_KEY_ID;
      const secret = process.env.AWS_SECRET_ACCESS_KEY;
      if (!id || !secret) throw new BakkerError('CONFIG', `archive ${s.name}: credentials: env needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment`);
      credentials = { accessKeyId: id, secretAccessKey: secret, ...(process.env.AWS_SESSION_TOKEN ? { sessionToken: process.env.AWS_SESSION_TOKEN } : {}) };
    } else if (typeof s.credentials === 'object' && 'accessKeyId' in s.credentials) credentials = s.credentials;
    if (typeof s.credentials === 'object' && 'profile' in s.credentials) process.env.AWS_PROFILE = s.credentials.profile;
    this.client = new sdk.S3Client({
      region: s.region,
      ...(s.endpoint ? { endpoint: s.endpoint } : {}),
      forcePathStyle: s.pathStyle ?? s.endpoint !== undefined,
      ...(credentials ? { credentials } : {}),
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      maxAttempts: 5,
    });
    this.where = `s3://${s.bucket}${s.endpoint ? ` at ${s.endpoint}` : ` (${s.region})`}`;
  }

  close(): void {
    this.client.destroy();
  }

  /** One request, its failure as a BakkerError that says what to do. */
  private async send<T>(what: string, cmd: object): Promise<T> {
    try {
      return (await this.client.send(cmd as never)) as T;
    } catch (err) {
      throw this.explain(what, err);
    }
  }

  explain(what: string, err: unknown): BakkerError {
    const e = err as SdkError;
    const { code, status } = failure(err);
    const at = `archive ${this.s.name}: ${what} on ${this.where}`;
    let fix: string;
    if (code === 'NoSuchBucket') fix = `the bucket does not exist: create it, or fix archives.${this.s.name}.bucket`;
    else if (['InvalidAccessKeyId', 'SignatureDoesNotMatch', 'AccessDenied', 'ExpiredToken', 'InvalidToken', 'Forbidden'].includes(code) || status === 403)
      fix = `${code || 'HTTP 403'}: the credentials are refused or lack the permission: check archives.${this.s.name}.credentials and the bucket policy`;
    else if (code === 'CredentialsProviderError' || /Could not load credentials/.test(e.message ?? '')) fix = `no AWS credentials found: set archives.${this.s.name}.credentials, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or ~/.aws/credentials`;
    else if (['ECONNREFUSED', 'ENOTFOUND', 'ETIMEDOUT', 'ECONNRESET', 'EAI_AGAIN', 'EHOSTUNREACH'].includes(code) || /ECONNREFUSED|ENOTFOUND|ETIMEDOUT|socket hang up/.test(e.message ?? ''))
      fix = `cannot reach the endpoint (${code || errMessage(err)}): check archives.${this.s.name}.endpoint and the network`;
    else fix = `${code || 'error'}${status ? ` (HTTP ${status})` : ''}: ${e.message ?? errMessage(err)}`;
    const out = new BakkerError('STORE', `${at}: ${fix}`, { cause: err });
    (out as BakkerError & { s3Code?: string; status?: number }).s3Code = code;
    (out as BakkerError & { s3Code?: string; status?: number }).status = status;
    return out;
  }

  async putSmall(key: string, body: Buffer, storageClass = 'STANDARD'): Promise<void> {
    await this.send(`writing ${key}`, new sdk.PutObjectCommand({ Bucket: this.s.bucket, Key: key, Body: body, StorageClass: storageClass as never, ContentLength: body.length }));
  }

  /**
   * Streams `source` into one object: a multipart upload of `partSize` parts, up to `parallel`
   * in flight (memory: about partSize x (parallel + 1)); a stream smaller than one part is one
   * PutObject. `onStart` gets the upload id before any part is sent (to record it for cleanup).
   */
  async upload(key: string, source: AsyncIterable<Buffer>, opts: { storageClass: string; partSize: number; parallel?: number; onStart?: (uploadId: string) => Promise<void> }): Promise<Uploaded> {
    // S3 allows 10,000 parts: the part size doubles every 1,000 (8 MiB parts reach 8 TB).
    const partSize = () => opts.partSize * 2 ** Math.floor(parts.length / 1000);
    const hash = createHash('sha256');
    const parallel = opts.parallel ?? 3;
    let size = 0;
    let held: Buffer[] = [];
    let heldBytes = 0;
    let uploadId: string | undefined;
    const parts: { PartNumber: number; ETag: string }[] = [];
    const inFlight = new Set<Promise<void>>();
    let failed: unknown;
    const sendPart = async (body: Buffer) => {
      if (!uploadId) {
        const r = await this.send<{ UploadId?: string }>(`starting an upload of ${key}`, new sdk.CreateMultipartUploadCommand({ Bucket: this.s.bucket, Key: key, StorageClass: opts.storageClass as never }));
        uploadId = r.UploadId!;
        await opts.onStart?.(uploadId);
      }
      const n = parts.length + 1;
      const slot = { PartNumber: n, ETag: '' };
      parts.push(slot);
      const p = this.send<{ ETag?: string }>(`uploading part ${n} of ${key}`, new sdk.UploadPartCommand({ Bucket: this.s.bucket, Key: key, UploadId: uploadId, PartNumber: n, Body: body, ContentLength: body.length })).then(
        (r) => {
          slot.ETag = r.ETag!;
          faultPoint('archive-part-sent');
        },
        (err) => {
          failed ??= err;
        },
      );
      const tracked = p.finally(() => inFlight.delete(tracked));
      inFlight.add(tracked);
      while (inFlight.size >= parallel) await Promise.race(inFlight);
      if (failed) throw failed;
    };
    for await (const chunk of source) {
      hash.update(chunk);
      size += chunk.length;
      held.push(chunk);
      heldBytes += chunk.length;
      while (heldBytes >= partSize()) {
        const size = partSize();
        const all = held.length === 1 ? held[0]! : Buffer.concat(held);
        await sendPart(all.subarray(0, size));
        const rest = all.subarray(size);
        held = rest.length ? [rest] : [];
        heldBytes = rest.length;
      }
    }
    const last = held.length === 1 ? held[0]! : Buffer.concat(held);
    if (!uploadId) {
      await this.send(`writing ${key}`, new sdk.PutObjectCommand({ Bucket: this.s.bucket, Key: key, Body: last, StorageClass: opts.storageClass as never, ContentLength: last.length }));
      return { size, sha256: hash.digest('hex'), parts: 1 };
    }
    if (last.length > 0 || parts.length === 0) await sendPart(last);
    await Promise.all(inFlight);
    if (failed) throw failed;
    await this.send(`completing the upload of ${key}`, new sdk.CompleteMultipartUploadCommand({ Bucket: this.s.bucket, Key: key, UploadId: uploadId, MultipartUpload: { Parts: parts } }));
    return { size, sha256: hash.digest('hex'), parts: parts.length };
  }

  /** An object's bytes as a stream; null when it does not exist. */
  async get(key: string): Promise<AsyncIterable<Buffer> | null> {
    try {
      const r = await this.client.send(new sdk.GetObjectCommand({ Bucket: this.s.bucket, Key: key }));
      return r.Body as unknown as AsyncIterable<Buffer>;
    } catch (err) {
      if (failure(err).code === 'NoSuchKey') return null;
      throw this.explain(`reading ${key}`, err);
    }
  }

  async getBuffer(key: string): Promise<Buffer | null> {
    const body = await this.get(key);
    if (!body) return null;
    const parts: Buffer[] = [];
    try {
      for await (const c of body) parts.push(Buffer.from(c));
    } catch (err) {
      throw this.explain(`reading ${key}`, err);
    }
    return Buffer.concat(parts);
  }

  async head(key: string): Promise<HeadInfo | null> {
    let r: { ContentLength?: number; StorageClass?: string; Restore?: string };
    try {
      r = await this.client.send(new sdk.HeadObjectCommand({ Bucket: this.s.bucket, Key: key }));
    } catch (err) {
      const { code, status } = failure(err);
      if (code === 'NotFound' || code === 'NoSuchKey' || status === 404) return null;
      throw this.explain(`looking at ${key}`, err);
    }
    const info: HeadInfo = { size: r.ContentLength ?? 0, storageClass: r.StorageClass ?? 'STANDARD' };
    if (r.Restore) {
      const expiry = /expiry-date="([^"]+)"/.exec(r.Restore)?.[1];
      info.restore = { ongoing: /ongoing-request="true"/.test(r.Restore), ...(expiry ? { expiry } : {}) };
    }
    return info;
  }

  async list(prefix: string): Promise<ObjectInfo[]> {
    const out: ObjectInfo[] = [];
    let token: string | undefined;
    do {
      const r = await this.send<{ Contents?: { Key?: string; Size?: number; LastModified?: Date }[]; NextContinuationToken?: string; IsTruncated?: boolean }>(
        `listing ${prefix || '/'}`,
        new sdk.ListObjectsV2Command({ Bucket: this.s.bucket, Prefix: prefix, ...(token ? { ContinuationToken: token } : {}) }),
      );
      for (const o of r.Contents ?? []) out.push({ key: o.Key!, size: o.Size ?? 0, modified: o.LastModified ?? new Date(0) });
      token = r.IsTruncated ? r.NextContinuationToken : undefined;
    } while (token);
    return out;
  }

  async delete(key: string): Promise<void> {
    await this.send(`deleting ${key}`, new sdk.DeleteObjectCommand({ Bucket: this.s.bucket, Key: key }));
  }

  /** Asks S3 to make an archived object readable for `days`; 'started', or 'running' when a request is already under way. */
  async restore(key: string, days: number, tier: string): Promise<'started' | 'running' | 'ready'> {
    try {
      const r = await this.client.send(new sdk.RestoreObjectCommand({ Bucket: this.s.bucket, Key: key, RestoreRequest: { Days: days, GlacierJobParameters: { Tier: tier as never } } }));
      return r.$metadata.httpStatusCode === 200 ? 'ready' : 'started';
    } catch (err) {
      if (failure(err).code === 'RestoreAlreadyInProgress') return 'running';
      throw this.explain(`requesting the restore of ${key}`, err);
    }
  }

  /** Aborts a multipart upload; false when the server does not implement it (s3rver). */
  async abortUpload(key: string, uploadId: string): Promise<boolean> {
    try {
      await this.client.send(new sdk.AbortMultipartUploadCommand({ Bucket: this.s.bucket, Key: key, UploadId: uploadId }));
      return true;
    } catch (err) {
      const { code, status } = failure(err);
      if (code === 'NoSuchUpload' || status === 404) return true;
      if (status === 405 || status === 501) return false;
      throw this.explain(`aborting the upload of ${key}`, err);
    }
  }

  /** The unfinished multipart uploads under a prefix; null when the server does not list them. */
  async uploads(prefix: string): Promise<{ key: string; uploadId: string }[] | null> {
    try {
      const r = await this.client.send(new sdk.ListMultipartUploadsCommand({ Bucket: this.s.bucket, Prefix: prefix }));
      return (r.Uploads ?? []).map((u) => ({ key: u.Key!, uploadId: u.UploadId! }));
    } catch (err) {
      const { status } = failure(err);
      if (status === 405 || status === 501) return null;
      throw this.explain('listing unfinished uploads', err);
    }
  }
}
