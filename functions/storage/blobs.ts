/**
 * The farm's object storage (one S3 bucket): vDisk chunks, manifests and
 * upload sessions. Chunk bytes go to and from S3 through presigned URLs; the
 * API only reads chunks back to verify them at commit.
 */
import {
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';

export interface BlobInfo {
  key: string;
  size: number;
  lastModified: Date;
}

export interface BlobStore {
  head(key: string): Promise<{ size: number } | null>;
  /** Whole object (manifests, sessions: small). Null when absent. */
  get(key: string): Promise<Buffer | null>;
  /** Object bytes as a stream (chunks), or null when absent. */
  stream(key: string): Promise<AsyncIterable<Uint8Array> | null>;
  put(key: string, body: Buffer | string, contentType?: string): Promise<void>;
  presignPut(key: string, expiresSeconds: number): Promise<string>;
  presignGet(key: string, expiresSeconds: number): Promise<string>;
  list(prefix: string): AsyncIterable<BlobInfo>;
  delete(keys: string[]): Promise<void>;
}

const isNotFound = (e: unknown) => {
  const err = e as { name?: string; $metadata?: { httpStatusCode?: number } };
  return err.name === 'NotFound' || err.name === 'NoSuchKey' || err.$metadata?.httpStatusCode === 404;
};

export function s3BlobStore(s3: S3Client, bucket: string): BlobStore {
  return {
    async head(key) {
      try {
        const r = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
        return { size: r.ContentLength ?? 0 };
      } catch (e) {
        if (isNotFound(e)) return null;
        throw e;
      }
    },
    async get(key) {
      try {
        const r = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
        return Buffer.from(await r.Body!.transformToByteArray());
      } catch (e) {
        if (isNotFound(e)) return null;
        throw e;
      }
    },
    async stream(key) {
      try {
        const r = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
        return r.Body as unknown as AsyncIterable<Uint8Array>;
      } catch (e) {
        if (isNotFound(e)) return null;
        throw e;
      }
    },
    async put(key, body, contentType = 'application/octet-stream') {
      await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body, ContentType: contentType }));
    },
    presignPut: (key, expiresIn) => getSignedUrl(s3, new PutObjectCommand({ Bucket: bucket, Key: key }), { expiresIn }),
    presignGet: (key, expiresIn) => getSignedUrl(s3, new GetObjectCommand({ Bucket: bucket, Key: key }), { expiresIn }),
    async *list(prefix) {
      let token: string | undefined;
      do {
        const r = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }));
        for (const o of r.Contents ?? []) yield { key: o.Key!, size: o.Size ?? 0, lastModified: o.LastModified ?? new Date(0) };
        token = r.IsTruncated ? r.NextContinuationToken : undefined;
      } while (token);
    },
    async delete(keys) {
      for (let i = 0; i < keys.length; i += 1000) {
        const batch = keys.slice(i, i + 1000);
        if (batch.length) await s3.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true } }));
      }
    },
  };
}
