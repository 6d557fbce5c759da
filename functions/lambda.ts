/**
 * AWS Lambda entry: reads its environment once, builds the same app the
 * local server runs. Function URL and API Gateway v2 events both work.
 */
import { handle } from 'hono/aws-lambda';
import { z } from 'zod';
import { createApp } from './app.js';
import { dynamoRepo } from './storage/clients.js';

const env = z
  .object({
    BOOTFARM_TABLE: z.string().min(1),
    BOOTFARM_BUCKET: z.string().min(1),
    AWS_REGION: z.string().min(1),
  })
  .parse(process.env);

export const handler = handle(createApp({ repo: dynamoRepo({ region: env.AWS_REGION }, env.BOOTFARM_TABLE) }));
