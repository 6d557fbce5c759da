import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { DescribeTableCommand, DynamoDBClient, GetItemCommand, PutItemCommand } from '@aws-sdk/client-dynamodb';
import { GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import {
  dynamoClientConfig,
  ensureTableAndBucket,
  s3ClientConfig,
  startLocalAws,
} from '../functions/local/local-aws.js';
import { GSI1, GSI2, KEY } from '../functions/storage/table.js';
import { testAws } from './support/aws-clients.js';

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Yields `data` in 64 KiB pieces, so the SDK cannot know the length up front. */
function streamOf(data: Buffer): Readable {
  return Readable.from(
    (function* () {
      for (let i = 0; i < data.length; i += 64 * 1024) yield data.subarray(i, i + 64 * 1024);
    })(),
  );
}

describe('shared local AWS (globalSetup)', () => {
  const { ddb, s3, tableName, bucketName } = testAws();
  afterAll(() => {
    ddb.destroy();
    s3.destroy();
  });

  it('has the table with its key schema and both GSIs', async () => {
    const { Table } = await ddb.send(new DescribeTableCommand({ TableName: tableName }));
    expect(Table?.TableStatus).toBe('ACTIVE');
    expect(Table?.KeySchema).toEqual([
      { AttributeName: KEY.pk, KeyType: 'HASH' },
      { AttributeName: KEY.sk, KeyType: 'RANGE' },
    ]);
    const gsis = Object.fromEntries((Table?.GlobalSecondaryIndexes ?? []).map((g) => [g.IndexName, g.KeySchema]));
    expect(gsis).toEqual({
      [GSI1.name]: [
        { AttributeName: GSI1.pk, KeyType: 'HASH' },
        { AttributeName: GSI1.sk, KeyType: 'RANGE' },
      ],
      [GSI2.name]: [
        { AttributeName: GSI2.pk, KeyType: 'HASH' },
        { AttributeName: GSI2.sk, KeyType: 'RANGE' },
      ],
    });
  });

  it('puts and gets an item', async () => {
    const Item = { pk: { S: 'TEST#put-get' }, sk: { S: 'META' }, name: { S: 'hello' }, n: { N: '42' } };
    await ddb.send(new PutItemCommand({ TableName: tableName, Item }));
    const got = await ddb.send(
      new GetItemCommand({ TableName: tableName, Key: { pk: Item.pk, sk: Item.sk }, ConsistentRead: true }),
    );
    expect(got.Item).toEqual(Item);
  });

  it('stores a streamed 5 MiB object byte-identical', async () => {
    const data = randomBytes(5 * 1024 * 1024);
    await s3.send(
      new PutObjectCommand({ Bucket: bucketName, Key: 'test/streamed.bin', Body: streamOf(data), ContentLength: data.length }),
    );
    const got = await s3.send(new GetObjectCommand({ Bucket: bucketName, Key: 'test/streamed.bin' }));
    const back = Buffer.from(await got.Body!.transformToByteArray());
    expect(back.length).toBe(data.length);
    expect(back.equals(data)).toBe(true);
  });

  it('ensureTableAndBucket is idempotent on an existing setup', async () => {
    const aws = inject('localAws');
    await expect(ensureTableAndBucket(aws)).resolves.toBeUndefined();
  });
});

describe('persistent local AWS (dataDir)', () => {
  let dataDir: string | undefined;
  afterAll(async () => {
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  it('keeps items and objects across restarts, and stop() is idempotent and leaves no java', async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'bootfarm-localaws-test-'));
    const body = randomBytes(256 * 1024);
    const Item = { pk: { S: 'TEST#persist' }, sk: { S: 'META' }, v: { S: 'kept' } };

    const first = await startLocalAws({ dataDir });
    const firstPid = first.dynamoPid;
    expect(firstPid).toBeTypeOf('number');
    try {
      await ensureTableAndBucket(first);
      const ddb = new DynamoDBClient(dynamoClientConfig(first));
      const s3 = new S3Client(s3ClientConfig(first));
      await ddb.send(new PutItemCommand({ TableName: first.tableName, Item }));
      await s3.send(new PutObjectCommand({ Bucket: first.bucketName, Key: 'kept.bin', Body: streamOf(body), ContentLength: body.length }));
      ddb.destroy();
      s3.destroy();
    } finally {
      await first.stop();
    }
    expect(isAlive(firstPid!)).toBe(false);
    await first.stop(); // idempotent

    const second = await startLocalAws({ dataDir });
    try {
      await ensureTableAndBucket(second); // table and bucket already there
      const ddb = new DynamoDBClient(dynamoClientConfig(second));
      const s3 = new S3Client(s3ClientConfig(second));
      const got = await ddb.send(
        new GetItemCommand({ TableName: second.tableName, Key: { pk: Item.pk, sk: Item.sk }, ConsistentRead: true }),
      );
      expect(got.Item).toEqual(Item);
      const obj = await s3.send(new GetObjectCommand({ Bucket: second.bucketName, Key: 'kept.bin' }));
      expect(Buffer.from(await obj.Body!.transformToByteArray()).equals(body)).toBe(true);
      ddb.destroy();
      s3.destroy();
    } finally {
      await Promise.all([second.stop(), second.stop()]);
    }
    expect(isAlive(second.dynamoPid!)).toBe(false);
  });
});
