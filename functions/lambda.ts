/**
 * AWS Lambda entry: reads its environment once, builds the same app the
 * local server runs. Function URL and API Gateway v2 events both work.
 */
import { handle } from 'hono/aws-lambda';
import { z } from 'zod';
import { createApp } from './app.js';
import { S3Client } from '@aws-sdk/client-s3';
import { kmsSigner } from './signing.js';
import { s3BlobStore } from './storage/blobs.js';
import { dynamoRepo } from './storage/clients.js';

const env = z
  .object({
    BOOTFARM_TABLE: z.string().min(1),
    BOOTFARM_BUCKET: z.string().min(1),
    BOOTFARM_SIGNING_KEY: z.string().min(1).meta({ description: 'KMS key id or ARN (ECC_NIST_P256)' }),
    AWS_REGION: z.string().min(1),
  })
  .parse(process.env);

const s3 = new S3Client({ region: env.AWS_REGION });
export const handler = handle(
  createApp({
    repo: dynamoRepo({ region: env.AWS_REGION }, env.BOOTFARM_TABLE),
    blobs: s3BlobStore(s3, env.BOOTFARM_BUCKET),
    signer: await kmsSigner(env.BOOTFARM_SIGNING_KEY, env.AWS_REGION),
  }),
);
