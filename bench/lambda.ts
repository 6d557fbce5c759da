/**
 * `npm run bench -- lambda`: the API function's deployment package and cold
 * start, measured on the bundle `cdk deploy` uploads (an in-process synth).
 *
 * - Size: index.mjs, its source map, and the zip (deflate, as Lambda stores it).
 * - What is in it: bytes per package, and which AWS SDK clients (only the
 *   ones the API calls: DynamoDB, S3, KMS).
 * - Cold start: a fresh `node` per run imports the bundle (reads its
 *   environment, creates its clients, fetches the KMS public key) and serves
 *   its first request (GET /v1/sites with a token: one token lookup and one
 *   query), against DynamoDB Local, s3rver and the KMS stand-in; then warm
 *   requests in the same process. Through `bufferedHandler` (the streaming
 *   one needs the runtime's response stream); Node is this machine's, not
 *   Lambda's Node 22.
 * - Peers, in the same run, bundled the same way: (a) the smallest Hono
 *   Lambda: the floor; (b) Hono with the same SDK clients, one KMS
 *   GetPublicKey at load and one DynamoDB query per request: what any API on
 *   these three services pays, so the ratio is bootfarm's own cost (the farm
 *   model, zod, OpenAPI, routes); (c) the same app shipped unbundled: the
 *   installed size of the packages the bundle draws from.
 */
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { deflateRawSync } from 'node:zlib';
import * as esbuild from 'esbuild';
import { ensureTableAndBucket, startLocalAws } from '../functions/local/local-aws.js';
import { dynamoClientConfig } from '../functions/local/local-aws.js';
import { dynamoRepo } from '../functions/storage/clients.js';
import { synthFarm } from '../infra/lib/synth.js';
import { startKmsStandIn } from '../test/support/kms-stand-in.js';
import { functionUrlEvent } from '../test/support/lambda-events.js';

const root = fileURLToPath(new URL('../', import.meta.url));

export interface LambdaBenchOptions {
  runs: number;
  warm: number;
  out: (line: string) => void;
  log: (line: string) => void;
}

const kib = (n: number) => `${(n / 1024).toFixed(0)} KiB`;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const ms = (x: number) => `${x.toFixed(0)} ms`;

/** The esbuild options NodejsFunction passes for API_BUNDLING (infra/lib/constructs/api-function.ts), for the metafile. */
const ESBUILD: esbuild.BuildOptions = { bundle: true, platform: 'node', target: 'node22', format: 'esm', mainFields: ['module', 'main'], minify: true, sourcemap: true, sourcesContent: false, logLevel: 'silent' };

function zipBytes(dir: string): number {
  // Lambda stores the package as a zip: deflate per file plus ~100 bytes of headers each.
  return readdirSync(dir).reduce((sum, f) => sum + deflateRawSync(readFileSync(join(dir, f)), { level: 9 }).length + 100, 0);
}

/** A directory tree zipped (deflate per file, as `zip -9` would). */
function zipTreeBytes(dir: string): number {
  let total = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) total += zipTreeBytes(p);
    else if (e.isFile()) total += deflateRawSync(readFileSync(p), { level: 9 }).length + 100;
  }
  return total;
}

/** Bytes in the bundle per package, and those packages zipped as installed (what an unbundled deployment would upload). */
async function composition(): Promise<{ byPackage: [string, number][]; sdkClients: string[]; unbundledZipBytes: number }> {
  const r = await esbuild.build({ ...ESBUILD, entryPoints: [join(root, 'functions/lambda.ts')], outfile: join(tmpdir(), 'bootfarm-lambda-meta.mjs'), write: false, metafile: true, absWorkingDir: root });
  const out = Object.values(r.metafile!.outputs).find((o) => o.entryPoint)!;
  const by = new Map<string, number>();
  for (const [file, v] of Object.entries(out.inputs)) {
    const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(file);
    const key = m ? m[1]! : '(bootfarm)';
    by.set(key, (by.get(key) ?? 0) + v.bytesInOutput);
  }
  const packages = [...by.keys()].filter((k) => k !== '(bootfarm)');
  return {
    byPackage: [...by.entries()].sort((a, b) => b[1] - a[1]),
    sdkClients: packages.filter((p) => p.startsWith('@aws-sdk/client-')).sort(),
    unbundledZipBytes: packages.reduce((sum, p) => sum + zipTreeBytes(join(root, 'node_modules', p)), 0),
  };
}

/** Peer Lambdas bundled like the API: the smallest Hono app, and Hono with the same SDK clients the API creates. */
const PEERS = {
  hello: "import { Hono } from 'hono'; import { handle } from 'hono/aws-lambda'; export const bufferedHandler = handle(new Hono().get('/v1/sites', (c) => c.json({ items: [] })));",
  sdk: [
    "import { Hono } from 'hono'; import { handle } from 'hono/aws-lambda';",
    "import { DynamoDBClient } from '@aws-sdk/client-dynamodb'; import { DynamoDBDocumentClient, QueryCommand } from '@aws-sdk/lib-dynamodb';",
    "import { S3Client } from '@aws-sdk/client-s3'; import { getSignedUrl } from '@aws-sdk/s3-request-presigner'; import { KMSClient, GetPublicKeyCommand } from '@aws-sdk/client-kms';",
    "const region = process.env.AWS_REGION; const doc = DynamoDBDocumentClient.from(new DynamoDBClient({ region })); const s3 = new S3Client({ region }); const kms = new KMSClient({ region });",
    "await kms.send(new GetPublicKeyCommand({ KeyId: process.env.BOOTFARM_SIGNING_KEY }));",
    "export const bufferedHandler = handle(new Hono().get('/v1/sites', async (c) => c.json({ items: (await doc.send(new QueryCommand({ TableName: process.env.BOOTFARM_TABLE, KeyConditionExpression: 'pk = :p', ExpressionAttributeValues: { ':p': 'site' } }))).Items, s3: typeof getSignedUrl, s3c: !!s3 })));",
  ].join('\n'),
};

async function peerBundle(dir: string, name: keyof typeof PEERS): Promise<string> {
  await esbuild.build({ ...ESBUILD, stdin: { contents: PEERS[name], resolveDir: root, loader: 'ts' }, outfile: join(dir, name, 'index.mjs') });
  return join(dir, name);
}

interface ColdRun {
  initMs: number;
  firstMs: number;
  warmMs: number;
  status: number;
}

/** One fresh process: import, first request, then `warm` more. */
function coldStart(bundleDir: string, event: unknown, warm: number, env: NodeJS.ProcessEnv): Promise<ColdRun> {
  const script = `
    globalThis.awslambda = { streamifyResponse: (f) => f, HttpResponseStream: { from: (s) => s } };
    const t0 = performance.now();
    const m = await import(${JSON.stringify(pathToFileURL(join(bundleDir, 'index.mjs')).href)});
    const initMs = performance.now() - t0;
    const event = JSON.parse(process.env.BENCH_EVENT);
    let t = performance.now();
    const r = await m.bufferedHandler(event, {});
    const firstMs = performance.now() - t;
    const warm = [];
    for (let i = 0; i < ${warm}; i++) { t = performance.now(); await m.bufferedHandler(event, {}); warm.push(performance.now() - t); }
    warm.sort((a, b) => a - b);
    process.stdout.write(JSON.stringify({ initMs, firstMs, warmMs: warm[Math.floor(warm.length / 2)] ?? 0, status: r.statusCode }));
  `;
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['--input-type=module', '-e', script], { env: { ...env, BENCH_EVENT: JSON.stringify(event) }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    p.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out) as ColdRun) : reject(new Error(`cold start exited ${code}: ${err.slice(-2000)}`))));
  });
}

export async function benchLambda(opts: LambdaBenchOptions): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'bootfarm-bench-lambda-'));
  const aws = await startLocalAws({});
  const kms = await startKmsStandIn({ region: aws.region });
  try {
    const key = kms.createKey();
    await ensureTableAndBucket(aws);
    opts.log('synthesising the stack (bundles the API as cdk deploy does)...');
    let t = performance.now();
    const synth = synthFarm(join(dir, 'cdk.out'));
    const synthMs = performance.now() - t;
    const apiDir = synth.apiAssetDir!;
    const hello = await peerBundle(dir, 'hello');
    const sdk = await peerBundle(dir, 'sdk');
    const comp = await composition();

    const repo = dynamoRepo(dynamoClientConfig(aws), aws.tableName);
    const { secret } = await repo.createToken({ name: 'bench', role: 'farm-admin', siteId: null, expiresAt: null }, { tokenId: 'bench', name: 'bench', role: 'farm-admin', siteId: null });
    const event = functionUrlEvent({ method: 'GET', path: '/v1/sites', query: 'limit=10', headers: { authorization: `Bearer ${secret}` } });
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH,
      AWS_REGION: aws.region,
      AWS_ACCESS_KEY_ID: aws.credentials.accessKeyId,
      AWS_SECRET_ACCESS_KEY: aws.credentials.secretAccessKey,
      AWS_ENDPOINT_URL_DYNAMODB: aws.dynamoEndpoint,
      AWS_ENDPOINT_URL_S3: aws.s3Endpoint,
      AWS_ENDPOINT_URL_KMS: kms.endpoint,
      AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
      // As the function runs (infra/lib/constructs/api-function.ts), for every bundle alike.
      NODE_OPTIONS: '--enable-source-maps',
      BOOTFARM_TABLE: aws.tableName,
      BOOTFARM_BUCKET: aws.bucketName,
      BOOTFARM_SIGNING_KEY: key.keyId,
    };
    const runs = { api: [] as ColdRun[], sdk: [] as ColdRun[], hello: [] as ColdRun[] };
    // Interleaved, so all three see the same machine state.
    for (let i = 0; i < opts.runs; i++) {
      runs.api.push(await coldStart(apiDir, event, opts.warm, env));
      runs.sdk.push(await coldStart(sdk, event, opts.warm, env));
      runs.hello.push(await coldStart(hello, event, opts.warm, env));
      opts.log(`run ${i + 1}/${opts.runs}: api init ${ms(runs.api.at(-1)!.initMs)} first ${ms(runs.api.at(-1)!.firstMs)}; sdk peer init ${ms(runs.sdk.at(-1)!.initMs)}; hello init ${ms(runs.hello.at(-1)!.initMs)}`);
    }
    for (const [name, rs] of Object.entries(runs)) if (rs.some((r) => r.status !== 200)) throw new Error(`${name} answered ${rs.map((r) => r.status).join(',')}, not 200`);

    const size = (d: string) => ({ js: statSync(join(d, 'index.mjs')).size, zip: zipBytes(d) });
    const sz = { api: size(apiDir), sdk: size(sdk), hello: size(hello) };
    const ratio = (x: number, y: number) => `${(x / y).toFixed(2)}x`;
    const med = (k: keyof typeof runs, f: keyof ColdRun) => median(runs[k].map((r) => r[f]));
    opts.out(`\n## Lambda bundle (synth ${ms(synthMs)}; node ${process.version}; ${opts.runs} cold starts each, ${opts.warm} warm requests)\n`);
    opts.out('| | bootfarm API | Hono + same SDK clients (peer) | API / peer | hello Hono (floor) |');
    opts.out('|---|---|---|---|---|');
    opts.out(`| index.mjs | ${kib(sz.api.js)} | ${kib(sz.sdk.js)} | ${ratio(sz.api.js, sz.sdk.js)} | ${kib(sz.hello.js)} |`);
    opts.out(`| zip (with source map) | ${kib(sz.api.zip)} | ${kib(sz.sdk.zip)} | ${ratio(sz.api.zip, sz.sdk.zip)} | ${kib(sz.hello.zip)} |`);
    opts.out(`| cold import (median) | ${ms(med('api', 'initMs'))} | ${ms(med('sdk', 'initMs'))} | ${ratio(med('api', 'initMs'), med('sdk', 'initMs'))} | ${ms(med('hello', 'initMs'))} |`);
    opts.out(`| first request (median) | ${ms(med('api', 'firstMs'))} | ${ms(med('sdk', 'firstMs'))} | ${ratio(med('api', 'firstMs'), med('sdk', 'firstMs'))} | ${ms(med('hello', 'firstMs'))} |`);
    opts.out(`| warm request (median) | ${med('api', 'warmMs').toFixed(1)} ms | ${med('sdk', 'warmMs').toFixed(1)} ms | ${ratio(med('api', 'warmMs'), med('sdk', 'warmMs'))} | ${med('hello', 'warmMs').toFixed(1)} ms |`);
    opts.out(`\nUnbundled (the same packages zipped as installed, types and every build variant included): ${kib(comp.unbundledZipBytes)}; the bundle's zip is ${ratio(sz.api.zip, comp.unbundledZipBytes)} of that.`);
    opts.out(`\nAWS SDK clients in the bundle: ${comp.sdkClients.join(', ')}`);
    opts.out(`Largest packages in index.mjs: ${comp.byPackage.slice(0, 8).map(([p, n]) => `${p} ${kib(n)}`).join(', ')}`);
    opts.out('Cold import includes reading the environment, creating the clients and one KMS GetPublicKey (to the local stand-in); first request = one token lookup and one DynamoDB query (the peer: one query).');
  } finally {
    await kms.close();
    await aws.stop();
    await rm(dir, { recursive: true, force: true });
  }
}
