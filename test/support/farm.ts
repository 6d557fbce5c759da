/**
 * A fresh farm for a test file: its own table on the run's DynamoDB Local,
 * the real app on it, and helpers to call it with tokens of each role.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { CreateTableCommand, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { inject } from 'vitest';
import { createApp } from '../../functions/app.js';
import { dynamoClientConfig, s3ClientConfig } from '../../functions/local/local-aws.js';
import { pemSigner, type Signer } from '../../functions/signing.js';
import { s3BlobStore, type BlobStore } from '../../functions/storage/blobs.js';
import { dynamoRepo } from '../../functions/storage/clients.js';
import type { DynamoFarmRepo } from '../../functions/storage/dynamo-repo.js';
import { tableDefinition } from '../../functions/storage/table.js';
import type { Principal, TokenInput } from '../../model/index.js';
import type {} from './local-aws.js';

export const SYSTEM: Principal = { tokenId: 'system', name: 'test-setup', role: 'farm-admin', siteId: null };

export interface TestFarm {
  repo: DynamoFarmRepo;
  app: ReturnType<typeof createApp>;
  blobs: BlobStore;
  signer: Signer;
  s3: S3Client;
  bucket: string;
  tableName: string;
  adminToken: string;
  token(input: Partial<TokenInput> & Pick<TokenInput, 'role'>): Promise<string>;
  /** Calls the app in-process: api('POST', '/v1/sites', { token, body, headers }). */
  api(method: string, path: string, opts?: { token?: string | null; body?: unknown; headers?: Record<string, string> }): Promise<ApiResult>;
}

export interface ApiResult {
  status: number;
  headers: Headers;
  body: any;
}

export async function freshTable(): Promise<{ config: ReturnType<typeof dynamoClientConfig>; tableName: string }> {
  const aws = inject('localAws');
  const config = dynamoClientConfig(aws);
  const tableName = `t-${randomBytes(6).toString('hex')}`;
  const ddb = new DynamoDBClient(config);
  await ddb.send(new CreateTableCommand(tableDefinition(tableName)));
  ddb.destroy();
  return { config, tableName };
}

export async function testFarm(opts: { clock?: () => Date } = {}): Promise<TestFarm> {
  const { config, tableName } = await freshTable();
  const repo = dynamoRepo(config, tableName, opts.clock);
  const aws = inject('localAws');
  // Each farm gets its own bucket, so chunk garbage collection in one test file cannot touch another's.
  const s3 = new S3Client(s3ClientConfig(aws));
  const bucket = tableName;
  await s3.send(new CreateBucketCommand({ Bucket: bucket }));
  const blobs = s3BlobStore(s3, bucket);
  const signer = pemSigner(generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString());
  const app = createApp({ repo, blobs, signer, clock: opts.clock, log: () => {} });
  const token = async (input: Partial<TokenInput> & Pick<TokenInput, 'role'>) =>
    (await repo.createToken({ name: `${input.role}-${randomBytes(3).toString('hex')}`, siteId: null, expiresAt: null, ...input }, SYSTEM)).secret;
  const adminToken = await token({ role: 'farm-admin', name: 'admin' });
  const api: TestFarm['api'] = async (method, path, o = {}) => {
    const headers: Record<string, string> = { ...(o.headers ?? {}) };
    const tok = o.token === undefined ? adminToken : o.token;
    if (tok) headers.authorization = `Bearer ${tok}`;
    let body: string | undefined;
    if (o.body !== undefined) {
      body = typeof o.body === 'string' ? o.body : JSON.stringify(o.body);
      headers['content-type'] ??= 'application/json';
    }
    const res = await app.request(path, { method, headers, body });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      /* not JSON */
    }
    return { status: res.status, headers: res.headers, body: parsed };
  };
  return { repo, app, blobs, signer, s3, bucket, tableName, adminToken, token, api };
}
