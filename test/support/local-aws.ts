/**
 * Vitest globalSetup: one in-memory local AWS (DynamoDB Local + s3rver) for the
 * whole test run, with the farm table and bucket created. Tests reach it via
 * `inject('localAws')` (see ./aws-clients.ts).
 */
import '../../cli/node-warnings.js';
import type { TestProject } from 'vitest/node';
import { ensureTableAndBucket, startLocalAws } from '../../functions/local/local-aws.js';

export interface ProvidedLocalAws {
  dynamoEndpoint: string;
  s3Endpoint: string;
  region: string;
  credentials: { accessKeyId: string; secretAccessKey: string };
  tableName: string;
  bucketName: string;
}

declare module 'vitest' {
  export interface ProvidedContext {
    localAws: ProvidedLocalAws;
  }
}

export default async function setup({ provide }: TestProject): Promise<() => Promise<void>> {
  const aws = await startLocalAws({
    log: process.env.BOOTFARM_TEST_LOG ? (line) => console.error(`[local-aws] ${line}`) : undefined,
  });
  try {
    await ensureTableAndBucket(aws);
  } catch (err) {
    await aws.stop();
    throw err;
  }
  provide('localAws', {
    dynamoEndpoint: aws.dynamoEndpoint,
    s3Endpoint: aws.s3Endpoint,
    region: aws.region,
    credentials: { ...aws.credentials },
    tableName: aws.tableName,
    bucketName: aws.bucketName,
  });
  return () => aws.stop();
}
