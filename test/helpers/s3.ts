import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { freePort, waitListening } from './sshd.js';
import { rmrf, tempDir } from './tree.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const S3RVER = path.resolve(here, '../../../node_modules/s3rver/bin/s3rver.js');

export interface S3rver {
  endpoint: string;
  /** s3rver's data folder: BUCKET/KEY._S3rver_object holds each object's bytes. */
  dir: string;
  objectFile(bucket: string, key: string): string;
  stop(): Promise<void>;
}

/**
 * A real S3-compatible server (s3rver 3.7, a dev dependency) on 127.0.0.1, with one bucket. It
 * runs with --openssl-legacy-provider (its list continuation tokens use a cipher OpenSSL 3
 * disables); stopped by PID.
 */
export async function startS3rver(bucket: string): Promise<S3rver> {
  if (!fs.existsSync(S3RVER)) throw new Error(`s3rver is missing (${S3RVER}): run npm ci (it is a dev dependency)`);
  const dir = tempDir('bakker-s3rver-');
  const port = await freePort();
  const log = path.join(dir, 's3rver.log');
  const fd = fs.openSync(log, 'a');
  const data = path.join(dir, 'data');
  fs.mkdirSync(data);
  const proc = spawn(process.execPath, ['--openssl-legacy-provider', S3RVER, '-d', data, '-a', '127.0.0.1', '-p', String(port), '--configure-bucket', bucket, '--silent'], { stdio: ['ignore', fd, fd] });
  fs.closeSync(fd);
  await waitListening(port, proc, log, 's3rver');
  return {
    endpoint: `http://127.0.0.1:${port}`,
    dir: data,
    objectFile: (b, key) => path.join(data, b, `${key}._S3rver_object`),
    stop: async () => {
      if (proc.exitCode === null) {
        const done = new Promise((r) => proc.once('exit', r));
        proc.kill('SIGTERM');
        await done;
      }
      rmrf(dir);
    },
  };
}

export interface ColdObject {
  body: Buffer;
  storageClass: string;
  restore: 'none' | 'ongoing' | 'done';
}

export interface ColdS3 {
  endpoint: string;
  objects: Map<string, ColdObject>;
  /** "METHOD key?query" of every request, and the RestoreObject request bodies. */
  requests: string[];
  restoreBodies: string[];
  /** Every requested restore completes (as S3 does hours later). */
  finishRestores(): void;
  stop(): Promise<void>;
}

const xml = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const COLD = new Set(['GLACIER', 'DEEP_ARCHIVE']);

/**
 * A small S3 endpoint for the cold-storage flow s3rver lacks (RestoreObject answers 501 there),
 * answering as S3 documents it: a GET of a GLACIER/DEEP_ARCHIVE object is 403 InvalidObjectState
 * until restored; POST ?restore is 202 Accepted the first time, 409 RestoreAlreadyInProgress
 * while it runs, 200 once done; HEAD carries x-amz-storage-class and x-amz-restore
 * (ongoing-request="true", then "false" with an expiry-date). Also PUT, DELETE and
 * ListObjectsV2, enough for a push of a small archive (no multipart: 501, as unsupported).
 * Signatures are not checked.
 */
export async function startColdS3(bucket: string): Promise<ColdS3> {
  const objects = new Map<string, ColdObject>();
  const requests: string[] = [];
  const restoreBodies: string[] = [];
  const error = (res: http.ServerResponse, status: number, code: string, message: string) => {
    res.writeHead(status, { 'content-type': 'application/xml' });
    res.end(`<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${xml(message)}</Message></Error>`);
  };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const url = new URL(req.url ?? '/', 'http://x');
      const parts = url.pathname.split('/').slice(1);
      if (parts[0] !== bucket) return error(res, 404, 'NoSuchBucket', 'The specified bucket does not exist');
      const key = decodeURIComponent(parts.slice(1).join('/'));
      const q = url.searchParams;
      requests.push(`${req.method} ${key}${url.search}`);
      const o = objects.get(key);
      if (!key) {
        if (req.method === 'GET' && q.get('list-type') === '2') {
          const prefix = q.get('prefix') ?? '';
          const keys = [...objects.keys()].filter((k) => k.startsWith(prefix)).sort();
          const contents = keys.map((k) => `<Contents><Key>${xml(k)}</Key><LastModified>2026-11-30T00:00:00.000Z</LastModified><ETag>"0"</ETag><Size>${objects.get(k)!.body.length}</Size><StorageClass>${objects.get(k)!.storageClass}</StorageClass></Contents>`);
          res.writeHead(200, { 'content-type': 'application/xml' });
          return res.end(`<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>${bucket}</Name><Prefix>${xml(prefix)}</Prefix><KeyCount>${keys.length}</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>${contents.join('')}</ListBucketResult>`);
        }
        return error(res, 501, 'NotImplemented', 'not implemented by this test server');
      }
      if (q.has('uploads') || q.has('uploadId')) return error(res, 501, 'NotImplemented', 'multipart uploads are not implemented by this test server');
      switch (req.method) {
        case 'PUT':
          objects.set(key, { body, storageClass: String(req.headers['x-amz-storage-class'] ?? 'STANDARD'), restore: 'none' });
          res.writeHead(200, { etag: '"0"' });
          return res.end();
        case 'DELETE':
          objects.delete(key);
          res.writeHead(204);
          return res.end();
        case 'HEAD': {
          if (!o) {
            res.writeHead(404);
            return res.end();
          }
          const h: Record<string, string> = { 'content-length': String(o.body.length), etag: '"0"', 'last-modified': 'Mon, 30 Nov 2026 00:00:00 GMT' };
          if (o.storageClass !== 'STANDARD') h['x-amz-storage-class'] = o.storageClass;
          if (o.restore === 'ongoing') h['x-amz-restore'] = 'ongoing-request="true"';
          if (o.restore === 'done') h['x-amz-restore'] = 'ongoing-request="false", expiry-date="Fri, 31 Dec 2027 00:00:00 GMT"';
          res.writeHead(200, h);
          return res.end();
        }
        case 'GET':
          if (!o) return error(res, 404, 'NoSuchKey', 'The specified key does not exist.');
          if (COLD.has(o.storageClass) && o.restore !== 'done') return error(res, 403, 'InvalidObjectState', 'The operation is not valid for the object\'s storage class');
          res.writeHead(200, { 'content-length': String(o.body.length), etag: '"0"' });
          return res.end(o.body);
        case 'POST':
          if (!q.has('restore')) return error(res, 501, 'NotImplemented', 'not implemented by this test server');
          if (!o) return error(res, 404, 'NoSuchKey', 'The specified key does not exist.');
          restoreBodies.push(body.toString('utf8'));
          if (!COLD.has(o.storageClass)) return error(res, 403, 'InvalidObjectState', 'Restore is not allowed for the object\'s current storage class');
          if (o.restore === 'ongoing') return error(res, 409, 'RestoreAlreadyInProgress', 'Object restore is already in progress');
          res.writeHead(o.restore === 'done' ? 200 : 202);
          if (o.restore === 'none') o.restore = 'ongoing';
          return res.end();
        default:
          return error(res, 501, 'NotImplemented', 'not implemented by this test server');
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    objects,
    requests,
    restoreBodies,
    finishRestores: () => {
      for (const o of objects.values()) if (o.restore === 'ongoing') o.restore = 'done';
    },
    stop: () => new Promise((r) => server.close(() => r())),
  };
}
