/**
 * AWS Lambda entry: reads its environment once and builds the same app the
 * local server runs (`createApp`). Two handlers over one app:
 *
 * - `handler`: response streaming (`awslambda.streamifyResponse`), what the
 *   CDK stack deploys behind a Function URL in RESPONSE_STREAM mode. Large
 *   bodies (manifests of big vDisks, whole-site snapshots) are not held to
 *   the 6 MB buffered-response limit.
 * - `bufferedHandler`: a buffered result, for an API Gateway HTTP API
 *   (payload format 2.0) or a BUFFERED Function URL.
 *
 * Both take the payload-2.0 event shape that Function URLs and HTTP APIs send.
 * The SDK clients honour AWS_ENDPOINT_URL_<SERVICE>, which is how the tests
 * point this very module at DynamoDB Local, s3rver (an IP endpoint gives
 * path-style URLs) and a KMS stand-in.
 */
import { S3Client } from '@aws-sdk/client-s3';
import { handle, streamHandle } from 'hono/aws-lambda';
import { z } from 'zod';
import { createApp } from './app.js';
import { kmsSigner } from './signing.js';
import { s3BlobStore } from './storage/blobs.js';
import { dynamoRepo } from './storage/clients.js';

export const LambdaEnvSchema = z.object({
  BOOTFARM_TABLE: z.string().min(1),
  BOOTFARM_BUCKET: z.string().min(1),
  BOOTFARM_SIGNING_KEY: z.string().min(1).meta({ description: 'KMS key id or ARN (ECC_NIST_P256, SIGN_VERIFY)' }),
  AWS_REGION: z.string().min(1),
});

const parsed = LambdaEnvSchema.safeParse(process.env);
if (!parsed.success) {
  const names = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ');
  throw new Error(`bootfarm API: bad Lambda environment (${names})`);
}
const env = parsed.data;

// WHEN_REQUIRED: otherwise a presigned PUT carries the CRC32 of an empty body (x-amz-checksum-crc32=AAAAAA==),
// which the uploader's real chunk does not match. The same setting as the local runtime (functions/local/local-aws.ts).
const s3 = new S3Client({ region: env.AWS_REGION, requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED' });
const app = createApp({
  repo: dynamoRepo({ region: env.AWS_REGION }, env.BOOTFARM_TABLE),
  blobs: s3BlobStore(s3, env.BOOTFARM_BUCKET),
  signer: await kmsSigner(env.BOOTFARM_SIGNING_KEY, env.AWS_REGION),
});

/**
 * Function URLs and HTTP APIs pass a body on GET and HEAD through, but a
 * fetch Request cannot carry one (hono's adapter would throw before the app
 * runs: a bare 400 buffered, a 200 "Internal Server Error" streamed). The
 * local server (@hono/node-server) ignores such bodies; so does this.
 */
function withoutBodylessBody<E>(event: E): E {
  const e = event as { body?: unknown; isBase64Encoded?: boolean; requestContext?: { http?: { method?: string } } };
  const method = e.requestContext?.http?.method?.toUpperCase();
  if ((method === 'GET' || method === 'HEAD') && e.body !== undefined) return { ...e, body: undefined, isBase64Encoded: false } as E;
  return event;
}

/** The Node.js Lambda runtime's global (aws-lambda-nodejs-runtime-interface-client): marks a handler as streaming. */
declare const awslambda: { streamifyResponse<H extends (event: unknown, stream: unknown, context: unknown) => Promise<unknown>>(handler: H): H };

// streamHandle's result is already marked; calling it from a marked wrapper keeps the runtime's calling convention.
const streaming = streamHandle(app) as unknown as (event: unknown, stream: unknown, context: unknown) => Promise<unknown>;
const buffered = handle(app);

/** Function URL, RESPONSE_STREAM (what the stack deploys). */
export const handler = awslambda.streamifyResponse((event: unknown, stream: unknown, context: unknown) => streaming(withoutBodylessBody(event), stream, context));
/** API Gateway HTTP API (payload 2.0), or a BUFFERED Function URL. */
export const bufferedHandler: typeof buffered = (event, context) => buffered(withoutBodylessBody(event), context);
