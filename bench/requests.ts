/**
 * `npm run bench -- requests`: what a farm asks of AWS at rest and per boot,
 * counted on the real code, priced with the list prices in docs/deploy.md.
 *
 * - The API is the real app (`createApp`, as the Lambda runs it) on DynamoDB
 *   Local and s3rver, signing with a KMS key (the KMS stand-in), served over
 *   HTTP on loopback. Every request is one Lambda invocation.
 * - Appliances are the real daemon (`startAppliance`), enrolled with
 *   `appliance install` against that API: their heartbeat, snapshot poll
 *   (If-None-Match, 304 when nothing changed) and outbox loops decide what
 *   is sent. Boot services answer over HTTP; NBD on; ProxyDHCP, TFTP and site
 *   HA off (none of them talks to the control plane).
 * - At rest is a simulated period: the daemons run with every interval
 *   divided by `speed` (10: heartbeat 500 ms, poll 1 s) for `restSeconds`
 *   (60 s: 10 simulated minutes), and what they sent is scaled to one hour at
 *   the default intervals (each loop's local request time counted once per
 *   iteration, as at full speed).
 * - Boots: iPXE's requests to an appliance (the boot script, then the first
 *   64 KiB of the disk it names), for known targets one after another, known
 *   targets at once, and unknown MACs that the appliance auto-adds. What the
 *   control plane sees of them is the appliances' event deliveries and, for
 *   an auto-add, every appliance fetching the new signed snapshot.
 * - DynamoDB: every call made with ReturnConsumedCapacity=INDEXES (a client
 *   middleware), attributed to the API request that made it. DynamoDB Local
 *   reports a multi-item transaction as one item, so TransactWriteItems is
 *   counted here per item, as DynamoDB charges it: 2 WRU per KB for each
 *   item, before or after the write, whichever is larger, and the same for
 *   each index the item is in (read before and after, outside the count;
 *   the size formula is checked against DynamoDB Local on every plain write).
 * - S3: every command the API's client sends (a middleware), and presigned
 *   URLs it hands out (each becomes one request by whoever uses it). KMS:
 *   each Sign.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DynamoDBClient, GetItemCommand, type AttributeValue } from '@aws-sdk/client-dynamodb';
import { S3Client } from '@aws-sdk/client-s3';
import { serve } from '@hono/node-server';
import { loadConfig, loadCredential } from '../appliance/config.js';
import { ControlClient } from '../appliance/control-client.js';
import { startAppliance, type ApplianceHandle } from '../appliance/daemon.js';
import { install } from '../appliance/install.js';
import { ApiClient } from '../cli/client.js';
import { pushImage } from '../cli/push.js';
import { API_VERSION, createApp } from '../functions/app.js';
import { dynamoClientConfig, ensureTableAndBucket, s3ClientConfig, startLocalAws } from '../functions/local/local-aws.js';
import { DEV_PRINCIPAL } from '../functions/local/dev.js';
import { seedDemoFarm } from '../functions/local/seed.js';
import { kmsSigner, type Signer } from '../functions/signing.js';
import { s3BlobStore } from '../functions/storage/blobs.js';
import { dynamoRepo } from '../functions/storage/clients.js';
import { tableDefinition } from '../functions/storage/table.js';
import { inventoryDigest, type InventoryEntry } from '../model/index.js';
import { startKmsStandIn } from '../test/support/kms-stand-in.js';

export interface RequestsBenchOptions {
  /** Appliances of the one site. */
  appliances: number;
  /** Intervals divided by this during the rest period. */
  speed: number;
  /** Real seconds of rest (simulated: restSeconds x speed). */
  restSeconds: number;
  /** Known targets booted in each of the two known-target batches. */
  boots: number;
  /** Unknown MACs booted (auto-added). */
  autoAdds: number;
  /** Lambda duration billed per request, ms (the app's time on Lambda is not measured here). */
  billedMs: number;
  out: (line: string) => void;
  log: (line: string) => void;
}

// ------------------------------------------------------------------ prices and assumptions (docs/deploy.md, costs)

/** us-east-1 list prices, as docs/deploy.md's "Prices used" table states them; `text` must appear there (checked at start). */
export const PRICES = {
  lambdaRequest: { usd: 0.2 / 1e6, text: '$0.20 per million' },
  lambdaGbSecond: { usd: 0.0000133334, text: '$0.0000133334 per GB-second' },
  wru: { usd: 0.625 / 1e6, text: '$0.625 per million WRU' },
  rru: { usd: 0.125 / 1e6, text: '$0.125 per million RRU' },
  ddbStorageGbMonth: { usd: 0.25, text: '$0.25 / $0.20 per GB-month' },
  pitrGbMonth: { usd: 0.2, text: '$0.25 / $0.20 per GB-month' },
  s3StorageGbMonth: { usd: 0.023, text: '$0.023 per GB-month' },
  s3PutListPerRequest: { usd: 0.005 / 1000, text: 'PUT, LIST $0.005 per 1,000' },
  s3GetPerRequest: { usd: 0.0004 / 1000, text: 'GET $0.0004 per 1,000' },
  transferOutGb: { usd: 0.09, text: '$0.09 per GB' },
  kmsKeyMonth: { usd: 1, text: '$1.00 per month' },
  kmsAsymmetricRequest: { usd: 0.15 / 10000, text: '$0.15 per 10,000' },
  alarmMonth: { usd: 0.1, text: '$0.10 per alarm-month' },
  logsIngestGb: { usd: 0.5, text: '$0.50 per GB / $0.03 per GB-month' },
  logsStoreGbMonth: { usd: 0.03, text: '$0.50 per GB / $0.03 per GB-month' },
  cloudFrontRequest: { usd: 0.01 / 10000, text: 'about $0.01 per 10,000 HTTPS requests' },
} as const;

const HOURS_PER_MONTH = 730;
/** The function's memory (infra/lib/constructs/api-function.ts). */
const FUNCTION_GB = 1;
/** The stack's alarms (infra/lib/constructs/api-alarms.ts). */
const ALARMS = 4;
/** Headers a Function URL adds to each answer (Date, x-amzn-RequestId, X-Amzn-Trace-Id, Connection): bytes out beyond what the app sends. */
const FUNCTION_URL_HEADER_BYTES = 200;
/** Lambda's JSON record around each line the app logs (time, level, requestId). */
const LOG_RECORD_BYTES = 120;
/** Lambda's platform.start and platform.report records per request at system log level INFO (bootfarm:systemLogLevel). */
const PLATFORM_RECORD_BYTES = 400;
/** Log retention (days, the stack's default) and the compression CloudWatch stores at (taken as 6:1). */
const LOG_RETENTION_MONTHS = 3;
const LOG_COMPRESSION = 6;
/** Fixed parts of the farm at rest: masters in S3, and the table. */
const MASTERS_GB = 50;
const FARMS = [
  { name: '1 site / 2 appliances', appliances: 2, tableGb: 0.05 },
  { name: '10 sites / 20 appliances', appliances: 20, tableGb: 0.5 },
];
/** Always-free tiers (docs/deploy.md): Lambda 1 M requests and 400,000 GB-s, DynamoDB 25 GB, CloudWatch 10 alarms and 5 GB of logs, 100 GB out. */
const FREE = { lambdaRequests: 1e6, lambdaGbSeconds: 400_000, ddbGb: 25, alarms: 10, logGb: 5, transferGb: 100 };

// ------------------------------------------------------------------ metering

interface Rec {
  phase: string;
  route: string;
  status: number;
  ms: number;
  rru: number;
  wru: number;
  /** WRU DynamoDB Local itself reported (it counts a transaction as one item). */
  wruLocal: number;
  /** Plain writes refused by their condition: DynamoDB charges them (at least 1 WRU each, counted so). */
  conditionFailures: number;
  /** Transactions cancelled (a condition failed, or a conflict): not counted in WRU. */
  txCancelled: number;
  s3PutList: number;
  s3Get: number;
  /** Presigned URLs handed out, by the class of the request their user makes: PUT (pushes) or GET (chunk downloads). */
  presignedPut: number;
  presignedGet: number;
  kmsSign: number;
  logBytes: number;
  outBytes: number;
}

const newRec = (phase: string, route: string): Rec => ({
  phase,
  route,
  status: 0,
  ms: 0,
  rru: 0,
  wru: 0,
  wruLocal: 0,
  conditionFailures: 0,
  txCancelled: 0,
  s3PutList: 0,
  s3Get: 0,
  presignedPut: 0,
  presignedGet: 0,
  kmsSign: 0,
  logBytes: 0,
  outBytes: 0,
});

const READS = new Set(['GetItemCommand', 'BatchGetItemCommand', 'QueryCommand', 'ScanCommand', 'TransactGetItemsCommand']);
const WRITES = new Set(['PutItemCommand', 'UpdateItemCommand', 'DeleteItemCommand', 'BatchWriteItemCommand', 'TransactWriteItemsCommand']);
const S3_PUT_LIST = new Set(['PutObjectCommand', 'CopyObjectCommand', 'ListObjectsV2Command', 'ListObjectsCommand', 'ListObjectVersionsCommand', 'CreateMultipartUploadCommand', 'UploadPartCommand', 'CompleteMultipartUploadCommand']);
const S3_FREE = new Set(['DeleteObjectCommand', 'DeleteObjectsCommand']);

/** An item's size as DynamoDB counts it (names + values; lists and maps 3 bytes + 1 per element; numbers 1 byte per 2 significant digits + 1). */
export function itemBytes(item: Record<string, AttributeValue>): number {
  const value = (v: AttributeValue): number => {
    if (v.S !== undefined) return Buffer.byteLength(v.S);
    if (v.N !== undefined) {
      const digits = v.N.replace(/^-/, '').replace('.', '').replace(/^0+/, '').replace(/0+$/, '').length;
      return Math.ceil(Math.max(digits, 1) / 2) + 1;
    }
    if (v.B !== undefined) return v.B.length;
    if (v.BOOL !== undefined || v.NULL !== undefined) return 1;
    if (v.L !== undefined) return 3 + v.L.reduce((a, x) => a + value(x) + 1, 0);
    if (v.M !== undefined) return 3 + Object.entries(v.M).reduce((a, [k, x]) => a + Buffer.byteLength(k) + value(x) + 1, 0);
    if (v.SS !== undefined) return v.SS.reduce((a, s) => a + Buffer.byteLength(s), 0);
    if (v.NS !== undefined) return v.NS.reduce((a, n) => a + value({ N: n }), 0);
    if (v.BS !== undefined) return v.BS.reduce((a, b) => a + b.length, 0);
    return 0;
  };
  return Object.entries(item).reduce((a, [k, v]) => a + Buffer.byteLength(k) + value(v), 0);
}

const kb = (bytes: number) => Math.max(1, Math.ceil(bytes / 1024));

class Meter {
  readonly als = new AsyncLocalStorage<Rec>();
  readonly records: Rec[] = [];
  phase = 'setup';
  /** Plain writes whose item size this bench computed, and how many matched what DynamoDB Local charged. */
  readonly sizeCheck = { writes: 0, matched: 0 };
  private direct = new Map<string, Rec>();
  private txQueue: Promise<unknown> = Promise.resolve();

  /** The request a call belongs to, or the phase's record of calls made outside requests (setup through the repo). */
  current(): Rec {
    const r = this.als.getStore();
    if (r) return r;
    let d = this.direct.get(this.phase);
    if (!d) {
      d = newRec(this.phase, '(no request: setup through the repo)');
      this.direct.set(this.phase, d);
      this.records.push(d);
    }
    return d;
  }

  /** A DynamoDB client whose every call asks for, and is charged, its consumed capacity. */
  dynamo(config: ConstructorParameters<typeof DynamoDBClient>[0], tableName: string): DynamoDBClient {
    const client = new DynamoDBClient(config!);
    const raw = new DynamoDBClient(config!);
    const def = tableDefinition(tableName);
    const keyNames = def.KeySchema!.map((k) => k.AttributeName!);
    const indexes = def.GlobalSecondaryIndexes!.map((g) => ({ name: g.IndexName!, keys: g.KeySchema!.map((k) => k.AttributeName!) }));
    // The document client marshals after this middleware runs: keys come as plain strings (the table's keys are strings, farm-table.ts).
    const keyOf = (item: Record<string, unknown>): Record<string, AttributeValue> =>
      Object.fromEntries(keyNames.map((k) => [k, { S: typeof item[k] === 'string' ? (item[k] as string) : (item[k] as { S: string }).S }]));
    const read = async (t: string, key: Record<string, AttributeValue>) => (await raw.send(new GetItemCommand({ TableName: t, Key: key, ConsistentRead: true }))).Item ?? null;
    /** WRU of writing one item from `before` to `after` (null: absent), on the table and each index it is in, times `factor`. */
    const writeUnits = (before: Record<string, AttributeValue> | null, after: Record<string, AttributeValue> | null, factor: number) => {
      let units = factor * kb(Math.max(before ? itemBytes(before) : 0, after ? itemBytes(after) : 0));
      for (const g of indexes) {
        const inIndex = (i: Record<string, AttributeValue> | null) => !!i && g.keys.every((k) => i[k] !== undefined);
        const keyOf = (i: Record<string, AttributeValue>) => JSON.stringify(g.keys.map((k) => i[k]));
        const b = inIndex(before) ? before : null;
        const a = inIndex(after) ? after : null;
        if (b && a && keyOf(b) !== keyOf(a)) units += factor * (kb(itemBytes(b)) + kb(itemBytes(a)));
        else if (b || a) units += factor * kb(Math.max(b ? itemBytes(b) : 0, a ? itemBytes(a) : 0));
      }
      return units;
    };
    const units = (cc: unknown): number => [cc ?? []].flat().reduce((a: number, c: any) => a + (c?.CapacityUnits ?? 0), 0);

    client.middlewareStack.add(
      (next, context) => async (args) => {
        const cmd = context.commandName as string;
        const input = args.input as Record<string, any>;
        const rec = this.current();
        if (READS.has(cmd) || WRITES.has(cmd)) input.ReturnConsumedCapacity = 'INDEXES';
        if (cmd === 'TransactWriteItemsCommand') {
          // One at a time, so that the items read before and after are this transaction's.
          const run = this.txQueue.then(async () => {
            const items = (input.TransactItems as Record<string, any>[]).map((t) => {
              const [kind, op] = Object.entries(t)[0]! as [string, Record<string, any>];
              return { kind, table: op.TableName as string, key: keyOf(kind === 'Put' ? op.Item : op.Key) };
            });
            const before = await Promise.all(items.map((i) => read(i.table, i.key)));
            let out;
            try {
              out = await next(args);
            } catch (e) {
              if ((e as Error).name === 'TransactionCanceledException') rec.txCancelled++;
              throw e;
            }
            const after = await Promise.all(items.map((i) => read(i.table, i.key)));
            // A ConditionCheck (the API sends none: it has no dynamodb:ConditionCheckItem) is counted as a transactional read, 2 RRU per 4 KB.
            items.forEach((it, n) => {
              if (it.kind === 'ConditionCheck') rec.rru += 2 * Math.max(1, Math.ceil((before[n] ? itemBytes(before[n]!) : 0) / 4096));
              else rec.wru += writeUnits(before[n] ?? null, after[n] ?? null, 2);
            });
            rec.wruLocal += units((out.output as any).ConsumedCapacity);
            return out;
          });
          this.txQueue = run.catch(() => undefined);
          return run;
        }
        const before = cmd === 'PutItemCommand' ? await read(input.TableName, keyOf(input.Item)) : undefined;
        let out;
        try {
          out = await next(args);
        } catch (e) {
          if ((e as Error).name === 'ConditionalCheckFailedException') {
            rec.conditionFailures++;
            rec.wru += 1;
            rec.wruLocal += 1;
          }
          throw e;
        }
        const cc = (out.output as any).ConsumedCapacity;
        const u = units(cc);
        if (READS.has(cmd)) rec.rru += u;
        if (WRITES.has(cmd)) {
          rec.wru += u;
          rec.wruLocal += u;
          if (cmd === 'PutItemCommand' && before !== undefined) {
            // The size formula used for transactions, checked on every plain put against what DynamoDB Local charged the table.
            const after = await read(input.TableName, keyOf(input.Item));
            this.sizeCheck.writes++;
            if (kb(Math.max(before ? itemBytes(before) : 0, after ? itemBytes(after) : 0)) === cc?.Table?.CapacityUnits) this.sizeCheck.matched++;
          }
        }
        return out;
      },
      { step: 'initialize', name: 'benchConsumedCapacity' },
    );
    return client;
  }

  /** An S3 client whose sent commands are counted by price class, and whose presigned URLs are counted apart. */
  s3(config: ConstructorParameters<typeof S3Client>[0]): S3Client {
    const client = new S3Client(config!);
    const sent = new WeakSet<object>();
    client.middlewareStack.add(
      (next, context) => async (args) => {
        const out = await next(args);
        // The presigner stops the stack before it sends: no `deserialize` step ran for this call.
        if (!sent.has(context)) {
          if (S3_PUT_LIST.has(context.commandName as string)) this.current().presignedPut++;
          else this.current().presignedGet++;
        }
        return out;
      },
      { step: 'initialize', name: 'benchS3Presigned' },
    );
    client.middlewareStack.add(
      (next, context) => async (args) => {
        sent.add(context);
        const cmd = context.commandName as string;
        const rec = this.current();
        if (S3_PUT_LIST.has(cmd)) rec.s3PutList++;
        // Deletes are free in S3: not counted.
        else if (!S3_FREE.has(cmd)) rec.s3Get++;
        return next(args);
      },
      { step: 'deserialize', name: 'benchS3Sent' },
    );
    return client;
  }

  signer(s: Signer): Signer {
    return { ...s, sign: async (data) => ((this.current().kmsSign += 1), s.sign(data)) };
  }

  log(line: string): void {
    this.current().logBytes += Buffer.byteLength(line) + LOG_RECORD_BYTES;
  }

  /** The app behind a fetch handler that records each request (buffered, so calls made while the body streams count too). */
  fetch(app: { fetch: (req: Request) => Response | Promise<Response> }): (req: Request) => Promise<Response> {
    return (req) => {
      const url = new URL(req.url);
      const rec = newRec(this.phase, routeOf(req.method, url.pathname));
      this.records.push(rec);
      return this.als.run(rec, async () => {
        const t0 = performance.now();
        const res = await app.fetch(req);
        const body = res.status === 204 || res.status === 304 ? null : Buffer.from(await res.arrayBuffer());
        rec.ms = performance.now() - t0;
        rec.status = res.status;
        let head = `HTTP/1.1 ${res.status} ${res.statusText}\r\n`.length + 2;
        res.headers.forEach((v, k) => (head += k.length + v.length + 4));
        rec.outBytes = head + (body?.length ?? 0) + FUNCTION_URL_HEADER_BYTES;
        return new Response(body, { status: res.status, headers: res.headers });
      });
    };
  }
}

/** `PUT /v1/appliances/{id}/status`: ids and version numbers out of the path. */
export function routeOf(method: string, path: string): string {
  return `${method} ${path
    .replace(/\/[a-z]{2,4}_[a-z2-7]{16}(?=\/|$)/g, '/{id}')
    .replace(/\/versions\/\d+/g, '/versions/{n}')
    .replace(/\/uploads\/[0-9a-f]{32}(?=\/|$)/g, '/uploads/{upload}')}`;
}

// ------------------------------------------------------------------ sums and costs

interface Usage {
  requests: number;
  rru: number;
  wru: number;
  s3PutList: number;
  s3Get: number;
  kmsSign: number;
  logBytes: number;
  outBytes: number;
}

const zero = (): Usage => ({ requests: 0, rru: 0, wru: 0, s3PutList: 0, s3Get: 0, kmsSign: 0, logBytes: 0, outBytes: 0 });
function usageOf(recs: Rec[]): Usage {
  const u = zero();
  for (const r of recs) {
    if (r.status) u.requests++;
    u.rru += r.rru;
    u.wru += r.wru;
    // A presigned URL becomes one request by its user: GETs (chunk downloads) in the cheap class, PUTs (pushes) in the other.
    u.s3PutList += r.s3PutList + r.presignedPut;
    u.s3Get += r.s3Get + r.presignedGet;
    u.kmsSign += r.kmsSign;
    u.logBytes += r.logBytes;
    u.outBytes += r.outBytes;
  }
  return u;
}
const scale = (u: Usage, f: number): Usage => Object.fromEntries(Object.entries(u).map(([k, v]) => [k, v * f])) as unknown as Usage;
const add = (a: Usage, b: Usage): Usage => Object.fromEntries(Object.entries(a).map(([k, v]) => [k, v + b[k as keyof Usage]])) as unknown as Usage;

interface Cost {
  lambdaRequests: number;
  lambdaDuration: number;
  ddbReads: number;
  ddbWrites: number;
  s3Requests: number;
  kms: number;
  logIngestion: number;
  transferOut: number;
  total: number;
}

function costOf(u: Usage, billedMs: number): Cost {
  const c = {
    lambdaRequests: u.requests * PRICES.lambdaRequest.usd,
    lambdaDuration: u.requests * (billedMs / 1000) * FUNCTION_GB * PRICES.lambdaGbSecond.usd,
    ddbReads: u.rru * PRICES.rru.usd,
    ddbWrites: u.wru * PRICES.wru.usd,
    s3Requests: u.s3PutList * PRICES.s3PutListPerRequest.usd + u.s3Get * PRICES.s3GetPerRequest.usd,
    kms: u.kmsSign * PRICES.kmsAsymmetricRequest.usd,
    logIngestion: (u.logBytes / 1e9) * PRICES.logsIngestGb.usd,
    transferOut: (u.outBytes / 1e9) * PRICES.transferOutGb.usd,
  };
  return { ...c, total: Object.values(c).reduce((a, b) => a + b, 0) };
}

/** The farm at rest for a month: its appliances' traffic, and what it pays standing still; with and without the always-free tiers. */
function farmMonth(perApplianceMonth: Usage, appliances: number, tableGb: number, billedMs: number) {
  const u = scale(perApplianceMonth, appliances);
  const c = costOf(u, billedMs);
  const fixed = {
    logStorage: ((u.logBytes / 1e9) * LOG_RETENTION_MONTHS * PRICES.logsStoreGbMonth.usd) / LOG_COMPRESSION,
    kmsKey: PRICES.kmsKeyMonth.usd,
    alarms: ALARMS * PRICES.alarmMonth.usd,
    s3Storage: MASTERS_GB * PRICES.s3StorageGbMonth.usd,
    ddbStorage: tableGb * (PRICES.ddbStorageGbMonth.usd + PRICES.pitrGbMonth.usd),
  };
  const total = c.total + Object.values(fixed).reduce((a, b) => a + b, 0);
  const gbSeconds = u.requests * (billedMs / 1000) * FUNCTION_GB;
  const free =
    total -
    Math.min(u.requests, FREE.lambdaRequests) * PRICES.lambdaRequest.usd -
    Math.min(gbSeconds, FREE.lambdaGbSeconds) * PRICES.lambdaGbSecond.usd -
    Math.min(ALARMS, FREE.alarms) * PRICES.alarmMonth.usd -
    Math.min(u.logBytes / 1e9, FREE.logGb) * PRICES.logsIngestGb.usd -
    Math.min(u.outBytes / 1e9, FREE.transferGb) * PRICES.transferOutGb.usd -
    Math.min(tableGb, FREE.ddbGb) * PRICES.ddbStorageGbMonth.usd;
  return { usage: u, cost: c, fixed, total, withFreeTiers: free, gbSeconds };
}

// ------------------------------------------------------------------ formatting

const n0 = (x: number) => Math.round(x).toLocaleString('en-US');
const n1 = (x: number) => x.toLocaleString('en-US', { maximumFractionDigits: 1 });
const n2 = (x: number) => x.toLocaleString('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const usd = (x: number, digits = 2) => `$${x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })}`;
const avg = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0);

// ------------------------------------------------------------------ the run

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until<T>(what: string, probe: () => Promise<T | null | undefined | false>, timeoutMs = 60_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

const macOf = (n: number) => `52:54:00:${((n >> 16) & 255).toString(16).padStart(2, '0')}:${((n >> 8) & 255).toString(16).padStart(2, '0')}:${(n & 255).toString(16).padStart(2, '0')}`;

/** What iPXE asks of an appliance for one boot: the boot script, then the start of the disk it names. */
async function boot(h: ApplianceHandle, mac: string): Promise<void> {
  const r = await fetch(`${h.url}/boot/${mac.replace(/:/g, '-')}.ipxe?arch=x86_64&platform=pcbios`);
  const script = await r.text();
  const url = /sanboot [^\n]*?(https?:\/\/\S+)/.exec(script)?.[1];
  if (r.status !== 200 || !url) throw new Error(`boot script for ${mac}: HTTP ${r.status}, no sanboot:\n${script}`);
  const disk = await fetch(url, { headers: { range: 'bytes=0-65535' } });
  const bytes = (await disk.arrayBuffer()).byteLength;
  if (disk.status !== 206 || bytes !== 65536) throw new Error(`${url}: HTTP ${disk.status}, ${bytes} bytes`);
}

export async function benchRequests(opts: RequestsBenchOptions): Promise<void> {
  // The prices used are the ones docs/deploy.md states.
  const doc = readFileSync(new URL('../docs/deploy.md', import.meta.url), 'utf8');
  const missing = Object.entries(PRICES).filter(([, p]) => !doc.includes(p.text));
  if (missing.length) throw new Error(`docs/deploy.md no longer states these prices (update bench/requests.ts PRICES): ${missing.map(([k, p]) => `${k} "${p.text}"`).join(', ')}`);

  const dir = await mkdtemp(join(tmpdir(), 'bootfarm-bench-requests-'));
  const aws = await startLocalAws({});
  const kms = await startKmsStandIn({ region: aws.region });
  const meter = new Meter();
  const appliances: ApplianceHandle[] = [];
  const applianceErrors: string[] = [];
  let server: ReturnType<typeof serve> | undefined;
  try {
    await ensureTableAndBucket(aws);
    // kmsSigner builds its own KMS client, as in the Lambda: it finds the stand-in and credentials in the environment.
    process.env.AWS_ENDPOINT_URL_KMS = kms.endpoint;
    process.env.AWS_ACCESS_KEY_ID = aws.credentials.accessKeyId;
    process.env.AWS_SECRET_ACCESS_KEY = aws.credentials.secretAccessKey;
    const key = kms.createKey();
    const repo = dynamoRepo(meter.dynamo(dynamoClientConfig(aws), aws.tableName), aws.tableName);
    const app = createApp({ repo, blobs: s3BlobStore(meter.s3(s3ClientConfig(aws)), aws.bucketName), signer: meter.signer(await kmsSigner(key.keyId, aws.region)), log: (l) => meter.log(l) });
    const port = await new Promise<number>((ok, fail) => {
      server = serve({ fetch: meter.fetch(app), port: 0, hostname: '127.0.0.1' }, (info: AddressInfo) => ok(info.port));
      server.once('error', fail);
    });
    const api = `http://127.0.0.1:${port}`;

    // ---- the farm: the demo site, store and collection; 2 vDisks with a production and a test version each; known targets; auto-add on
    opts.log('setting up the farm (2 vDisks x 2 versions, targets, auto-add)...');
    await seedDemoFarm(repo, DEV_PRINCIPAL);
    const { secret: admin } = await repo.createToken({ name: 'bench-admin', role: 'farm-admin', siteId: null, expiresAt: null }, DEV_PRINCIPAL);
    const c = new ApiClient(api, admin);
    const site = (await c.all<{ id: string }>('/v1/sites'))[0]!;
    const store = (await c.all<{ id: string }>('/v1/stores'))[0]!;
    const col = (await c.all<{ id: string }>('/v1/collections'))[0]!;
    const vdiskIds: string[] = [];
    for (const name of ['win11', 'lab']) {
      const image = randomBytes(16 * 2 ** 20);
      const path = join(dir, `${name}.raw`);
      await writeFile(path, image);
      const v0 = await pushImage(c, { storeId: store.id, name, files: [path], state: 'production' });
      randomBytes(2 ** 20).copy(image, 0);
      await writeFile(path, image);
      await pushImage(c, { storeId: store.id, name, files: [path], state: 'test' });
      vdiskIds.push(v0.vdiskId);
    }
    let mac = 0x0b0000;
    const known: string[] = [];
    for (let i = 0; i < 2 * opts.boots; i++) {
      const m = macOf(++mac);
      await c.request('POST', '/v1/targets', { mac: m, name: `pc-${i + 1}`, collectionId: col.id, assignments: [{ vdiskId: vdiskIds[i % vdiskIds.length] }] });
      known.push(m);
    }
    // Test targets: so that appliances hold each vDisk's test version too (4 versions each).
    for (const [i, vdiskId] of vdiskIds.entries()) await c.request('POST', '/v1/targets', { mac: macOf(++mac), name: `test-${i + 1}`, type: 'test', collectionId: col.id, assignments: [{ vdiskId }] });
    const patch = async (path: string, body: unknown) => c.request('PATCH', path, body, { 'if-match': (await c.get(path)).etag! });
    await patch(`/v1/collections/${col.id}`, { templateTargetMac: known[0], autoAdd: { prefix: 'lab-', numberLength: 3, suffix: '', startNumber: 1 } });
    await patch('/v1/farm', { autoAdd: { enabled: true, siteId: site.id } });

    // ---- appliances: enrolled as an admin would, run in-process at `speed`
    const enrol = async (name: string) => {
      const tok = (await c.request('POST', '/v1/tokens', { name: `enrol-${name}`, role: 'appliance-enrol', siteId: site.id })).body.token as string;
      const dataDir = join(dir, name);
      await install({ apiUrl: api, token: tok, dataDir, name, managementAddress: '127.0.0.1', httpHost: '127.0.0.1', httpPort: 0, bootstrapDir: '/usr/lib/ipxe', minFreeBytes: 0, systemd: false, cliPath: '', prerequisites: 'warn' });
      return dataDir;
    };
    let defaults = { heartbeatMs: 0, pollMs: 0 };
    for (let i = 0; i < opts.appliances; i++) {
      const dataDir = await enrol(`bench-app-${i + 1}`);
      const config = await loadConfig(dataDir);
      defaults = { heartbeatMs: config.intervals.heartbeatMs, pollMs: config.intervals.pollMs };
      config.intervals = { ...config.intervals, heartbeatMs: Math.round(defaults.heartbeatMs / opts.speed), pollMs: Math.round(defaults.pollMs / opts.speed) };
      config.boot = { proxyDhcp: { ...config.boot.proxyDhcp, enabled: false }, tftp: { ...config.boot.tftp, enabled: false } };
      config.nbd = { enabled: true, host: '127.0.0.1', port: 0 };
      config.ha = { ...config.ha, enabled: false };
      appliances.push(
        await startAppliance({
          config,
          credential: await loadCredential(dataDir),
          dataDir,
          log: (level, msg, fields) => {
            if (level === 'error') applianceErrors.push(`${config.name}: ${msg} ${JSON.stringify(fields ?? {})}`);
          },
        }),
      );
    }
    opts.log(`${opts.appliances} appliances syncing...`);
    const verified = (h: ApplianceHandle) => h.cache.inventory().filter((e) => e.state === 'verified').length;
    // Each holds every vDisk's production and test version.
    await until('every appliance holding 4 verified versions', async () => appliances.every((h) => verified(h) === 2 * vdiskIds.length), 120_000);
    const held = appliances.map(verified);
    // Settled: the inventory heartbeat after the sync and a 304 poll are behind every appliance.
    await sleep(3 * Math.max(defaults.heartbeatMs, defaults.pollMs) / opts.speed + 500);

    // ---- at rest
    const simulatedSeconds = opts.restSeconds * opts.speed;
    opts.log(`at rest: ${opts.restSeconds} s at ${opts.speed}x = ${simulatedSeconds / 60} simulated minutes...`);
    meter.phase = 'rest';
    await sleep(opts.restSeconds * 1000);

    // ---- boots
    const outboxEmpty = () => until('every outbox delivered', async () => (await Promise.all(appliances.map((h) => h.health()))).every((x) => x.outbox.pending === 0));
    const at = (i: number) => appliances[i % appliances.length]!;
    opts.log(`boots: ${opts.boots} known targets one after another...`);
    meter.phase = 'boot-one-by-one';
    for (const [i, m] of known.slice(0, opts.boots).entries()) {
      await boot(at(i), m);
      await outboxEmpty();
    }
    opts.log(`boots: ${opts.boots} known targets at once...`);
    meter.phase = 'boot-at-once';
    await Promise.all(known.slice(opts.boots).map((m, i) => boot(at(i), m)));
    await outboxEmpty();
    opts.log(`boots: ${opts.autoAdds} unknown MACs, auto-added...`);
    meter.phase = 'boot-auto-add';
    const unknown = Array.from({ length: opts.autoAdds }, (_, i) => macOf(0x0c0000 + i + 1));
    // One at a time, each until every appliance has it in its signed snapshot: the worst case, no two additions sharing a fetch.
    for (const [i, m] of unknown.entries()) {
      await boot(at(i), m);
      await outboxEmpty();
      await until(`every appliance has ${m} in its signed snapshot`, async () => appliances.every((h) => h.snapshot()?.targets.some((t) => t.mac === m)));
    }
    // The last snapshot fetches are answered; then nothing is left to count.
    await sleep(2 * defaults.pollMs / opts.speed);

    // ---- heartbeat writes by versions held: a probe appliance's heartbeats through the real API
    meter.phase = 'probe';
    const probeDir = await enrol('bench-probe');
    const probeConfig = await loadConfig(probeDir);
    const probe = new ControlClient({ apiUrl: api, credential: await loadCredential(probeDir), applianceId: probeConfig.applianceId, siteId: probeConfig.siteId, timeoutMs: 10_000 });
    const versionsHeld = [0, 1, 2, 4, 8, 12, 20];
    const wruByHeld: number[] = [];
    for (const k of versionsHeld) {
      const inv: InventoryEntry[] = Array.from({ length: k }, (_, i) => ({ vdiskId: vdiskIds[i % vdiskIds.length]!, number: i, contentHash: randomBytes(32).toString('hex'), state: 'verified' }));
      const status = { softwareVersion: API_VERSION, startedAt: new Date().toISOString(), load: 0.42, sessions: 12, snapshotRevision: 123, inventoryDigest: inventoryDigest(inv), cacheBytes: 123_456_789_012, outboxPending: 0, offlineSince: null };
      await probe.reportStatus({ status, inventory: { reportedAt: new Date().toISOString(), versions: inv } });
      await probe.reportStatus({ status });
      wruByHeld.push(meter.records.filter((r) => r.phase === 'probe' && r.route === 'PUT /v1/appliances/{id}/status').at(-1)!.wru);
    }
    meter.phase = 'done';

    report(opts, meter, { defaults, simulatedSeconds, held, versionsHeld, wruByHeld, applianceErrors, kmsSigns: kms.calls.filter((x) => x.target === 'TrentService.Sign').length });
  } finally {
    await Promise.all(appliances.map((h) => h.stop().catch(() => undefined)));
    if (server) {
      (server as unknown as { closeAllConnections?: () => void }).closeAllConnections?.();
      await new Promise<void>((ok) => server!.close(() => ok()));
    }
    await kms.close();
    await aws.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

// ------------------------------------------------------------------ the report

interface RunFacts {
  defaults: { heartbeatMs: number; pollMs: number };
  simulatedSeconds: number;
  held: number[];
  versionsHeld: number[];
  wruByHeld: number[];
  applianceErrors: string[];
  kmsSigns: number;
}

/** The requests an appliance's loops make at rest; anything else seen at rest is scaled by time alone. */
const LOOPS: Record<string, 'heartbeatMs' | 'pollMs'> = { 'PUT /v1/appliances/{id}/status 204': 'heartbeatMs', 'GET /v1/sites/{id}/snapshot 304': 'pollMs' };
const keyOf = (r: Rec) => `${r.route} ${r.status}`;

function report(opts: RequestsBenchOptions, meter: Meter, f: RunFacts): void {
  const out = opts.out;
  const recs = meter.records;
  const by = (phase: string) => recs.filter((r) => r.phase === phase);
  const groups = (rs: Rec[]) => {
    const m = new Map<string, Rec[]>();
    for (const r of rs) m.set(keyOf(r), [...(m.get(keyOf(r)) ?? []), r]);
    return [...m.entries()].sort((a, b) => b[1].length - a[1].length);
  };
  const each = (rs: Rec[]) => {
    const u = usageOf(rs);
    const k = rs.filter((r) => r.status).length || 1;
    return { rru: u.rru / k, wru: u.wru / k, s3: (u.s3Get + u.s3PutList) / k, kms: u.kmsSign / k, ms: avg(rs.map((r) => r.ms)), out: u.outBytes / k };
  };
  const A = opts.appliances;

  out(`\n## Requests a farm makes of AWS (node ${process.version}, ${new Date().toISOString().slice(0, 10)})\n`);
  out(`${A} appliances of one site (the real daemon; HA, ProxyDHCP and TFTP off), each holding ${[...new Set(f.held)].join(' or ')} verified versions (2 vDisks, each a production and a test version); ${2 * opts.boots} known targets, auto-add on.`);
  out(`At rest: the daemons at ${opts.speed}x speed (heartbeat ${f.defaults.heartbeatMs / opts.speed} ms, poll ${f.defaults.pollMs / opts.speed} ms, each ±10 %) for ${opts.restSeconds} s = ${n1(f.simulatedSeconds / 60)} simulated minutes each, scaled to an hour at the default intervals (heartbeat ${f.defaults.heartbeatMs / 1000} s, poll ${f.defaults.pollMs / 1000} s).`);

  // ---- at rest
  const rest = by('rest');
  out('\n### At rest, per appliance-hour\n');
  out('| request | per appliance-hour | RRU each | WRU each | S3 each | KMS Sign each | local ms, avg | bytes out each |');
  out('|---|---|---|---|---|---|---|---|');
  let restHour = zero();
  /** Per request of each loop, and its local time: for other intervals below. */
  const perRequest: Partial<Record<'heartbeatMs' | 'pollMs', { u: Usage; ms: number }>> = {};
  const checks: string[] = [];
  const warnings: string[] = [];
  for (const [k, rs] of groups(rest)) {
    const e = each(rs);
    const observed = rs.filter((r) => r.status).length / A;
    const loop = LOOPS[k];
    let perHour: number;
    if (loop) {
      // One request per loop iteration; an iteration is the interval (mean: itself, ±10 % jitter) plus the request's time.
      // At speed that is interval/speed + local time, which is what the run is checked against.
      perHour = 3_600_000 / (f.defaults[loop] + e.ms);
      perRequest[loop] = { u: scale(usageOf(rs), 1 / rs.length), ms: e.ms };
      const expected = (opts.restSeconds * 1000) / (f.defaults[loop] / opts.speed + e.ms);
      checks.push(`${k}: ${n1(observed)} per appliance in the run, ${n1(expected)} expected`);
      if (Math.abs(observed / expected - 1) > 0.05) warnings.push(`${k}: ${n1(observed)} per appliance at rest, not the ${n1(expected)} one request per loop iteration gives: the per-hour figure is wrong`);
    } else perHour = (observed * 3600) / f.simulatedSeconds;
    restHour = add(restHour, scale(usageOf(rs), perHour / observed / A));
    out(`| ${k} | ${n1(perHour)} | ${n2(e.rru)} | ${n2(e.wru)} | ${n2(e.s3)} | ${n2(e.kms)} | ${n1(e.ms)} | ${n0(e.out)} |`);
  }
  out(`| **total** | **${n1(restHour.requests)}** | ${n0(restHour.rru)} RRU/h | ${n0(restHour.wru)} WRU/h | ${n1(restHour.s3Get + restHour.s3PutList)} | ${n1(restHour.kmsSign)} | | ${n0(restHour.outBytes)} B/h |`);
  out(`\nEvent deliveries at rest: ${rest.filter((r) => r.route.endsWith('/events')).length} (the outbox loop sends only when it holds events). App log lines at rest: ${n0(usageOf(rest).logBytes)} bytes.`);
  out(`Per appliance-hour = 3,600 s / (default interval + local request time) for the heartbeat and poll loops, one request per iteration; checked against the run: ${checks.join('; ')}.`);
  for (const w of warnings) out(`**WARNING**: ${w}`);

  out('\n### Heartbeat WRU by versions held (a probe appliance, PUT status through the API)\n');
  out(`| versions held | ${f.versionsHeld.join(' | ')} |`);
  out(`|---|${f.versionsHeld.map(() => '---').join('|')}|`);
  out(`| WRU per heartbeat | ${f.wruByHeld.map(n1).join(' | ')} |`);

  // ---- boots: what they add to the rest traffic (which goes on meanwhile and is left out here)
  const bootPhases = [
    { phase: 'boot-one-by-one', name: `${opts.boots} known targets, one after another`, boots: opts.boots },
    { phase: 'boot-at-once', name: `${opts.boots} known targets at once, spread over ${A} appliances`, boots: opts.boots },
    { phase: 'boot-auto-add', name: `${opts.autoAdds} unknown MACs, auto-added`, boots: opts.autoAdds },
  ];
  const bootCaused = (phase: string) => by(phase).filter((r) => !LOOPS[keyOf(r)]);
  out('\n### Boots (what they add to the traffic at rest, which goes on meanwhile)\n');
  out('| batch | control-plane requests | of which | RRU | WRU | S3 | KMS Sign | bytes out |');
  out('|---|---|---|---|---|---|---|---|');
  for (const b of bootPhases) {
    const rs = bootCaused(b.phase);
    const u = usageOf(rs);
    const kinds = groups(rs).map(([k, x]) => `${x.length} ${k}`).join(', ');
    out(`| ${b.name} | ${u.requests} | ${kinds} | ${n1(u.rru)} | ${n1(u.wru)} | ${u.s3Get + u.s3PutList} | ${u.kmsSign} | ${n0(u.outBytes)} |`);
  }
  const seq = usageOf(bootCaused('boot-one-by-one'));
  const perBoot = scale(seq, 1 / opts.boots);
  const auto = bootCaused('boot-auto-add');
  const autoEvents = usageOf(auto.filter((r) => r.route.endsWith('/events')));
  const snap200 = auto.filter((r) => r.route === 'GET /v1/sites/{id}/snapshot' && r.status === 200);
  const snapEach = usageOf(snap200);
  out(`\nA known target's boot, one at a time (the most requests per boot): ${n2(perBoot.requests)} requests, ${n2(perBoot.rru)} RRU, ${n2(perBoot.wru)} WRU, ${n2(perBoot.s3Get + perBoot.s3PutList)} S3, ${n2(perBoot.kmsSign)} KMS.`);
  out(
    `An auto-added target: ${n2(autoEvents.requests / opts.autoAdds)} event requests, ${n1(autoEvents.rru / opts.autoAdds)} RRU, ${n1(autoEvents.wru / opts.autoAdds)} WRU; then every appliance of the farm fetches the new signed snapshot: per fetch ${n1(snapEach.rru / (snap200.length || 1))} RRU, ${n2(snapEach.kmsSign / (snap200.length || 1))} KMS Sign, ${n0(snapEach.outBytes / (snap200.length || 1))} bytes out, at this farm's size (${snap200.length} fetches for ${opts.autoAdds} added targets and ${A} appliances; additions within one poll would share them).`,
  );

  // ---- one-off: setup (pushes, enrolment, first sync)
  out('\n### One-off requests (setup: 4 pushes of 16 MiB, enrolments, first syncs)\n');
  out('| request | count | RRU avg | WRU avg | S3 avg (presigned included) | KMS Sign avg | local ms avg |');
  out('|---|---|---|---|---|---|---|');
  for (const [k, rs] of groups(by('setup').filter((r) => r.status))) {
    const e = each(rs);
    out(`| ${k} | ${rs.length} | ${n2(e.rru)} | ${n2(e.wru)} | ${n2(e.s3)} | ${n2(e.kms)} | ${n1(e.ms)} |`);
  }

  // ---- costs
  const month = scale(restHour, HOURS_PER_MONTH);
  const cm = costOf(month, opts.billedMs);
  out(`\n### Costs (the prices docs/deploy.md states; ${opts.billedMs} ms billed per request at ${FUNCTION_GB} GB; ${HOURS_PER_MONTH} h a month)\n`);
  out('One appliance at rest for a month:\n');
  out('| | quantity | $ |');
  out('|---|---|---|');
  const gbs = month.requests * (opts.billedMs / 1000) * FUNCTION_GB;
  out(`| Lambda requests | ${n0(month.requests)} | ${cm.lambdaRequests.toFixed(3)} |`);
  out(`| Lambda duration | ${n0(gbs)} GB-s | ${cm.lambdaDuration.toFixed(3)} |`);
  out(`| DynamoDB reads | ${n0(month.rru)} RRU | ${cm.ddbReads.toFixed(3)} |`);
  out(`| DynamoDB writes | ${n0(month.wru)} WRU | ${cm.ddbWrites.toFixed(3)} |`);
  out(`| S3 requests | ${n0(month.s3Get + month.s3PutList)} | ${cm.s3Requests.toFixed(3)} |`);
  out(`| KMS requests | ${n0(month.kmsSign)} | ${cm.kms.toFixed(3)} |`);
  out(`| log ingestion (app lines; system log level WARN) | ${n2(month.logBytes / 1e9)} GB | ${cm.logIngestion.toFixed(3)} |`);
  out(`| data transfer out | ${n2(month.outBytes / 1e9)} GB | ${cm.transferOut.toFixed(3)} |`);
  out(`| **per appliance-month** | | **${cm.total.toFixed(2)}** |`);

  out('\nThe farm at rest for a month:\n');
  const farms = FARMS.map((x) => ({ ...x, m: farmMonth(month, x.appliances, x.tableGb, opts.billedMs) }));
  out(`| | ${farms.map((x) => x.name).join(' | ')} |`);
  out(`|---|${farms.map(() => '---').join('|')}|`);
  out(`| appliances' requests | ${farms.map((x) => n2(x.m.cost.total)).join(' | ')} |`);
  out(`| (of which DynamoDB writes) | ${farms.map((x) => `(${n2(x.m.cost.ddbWrites)})`).join(' | ')} |`);
  out(`| log storage (${LOG_RETENTION_MONTHS} months, ${LOG_COMPRESSION}:1) | ${farms.map((x) => n2(x.m.fixed.logStorage)).join(' | ')} |`);
  out(`| KMS signing key | ${farms.map((x) => n2(x.m.fixed.kmsKey)).join(' | ')} |`);
  out(`| ${ALARMS} alarms | ${farms.map((x) => n2(x.m.fixed.alarms)).join(' | ')} |`);
  out(`| S3: ${MASTERS_GB} GB of masters | ${farms.map((x) => n2(x.m.fixed.s3Storage)).join(' | ')} |`);
  out(`| DynamoDB storage + PITR | ${farms.map((x) => `${x.tableGb} GB: ${n2(x.m.fixed.ddbStorage)}`).join(' | ')} |`);
  out(`| **total per month** | ${farms.map((x) => `**${usd(x.m.total)}**`).join(' | ')} |`);
  out(`| with the always-free tiers | ${farms.map((x) => usd(x.m.withFreeTiers)).join(' | ')} |`);
  out(`| Lambda requests / WRU / GB-s a month | ${farms.map((x) => `${n2(x.m.usage.requests / 1e6)} M / ${n2(x.m.usage.wru / 1e6)} M / ${n0(x.m.gbSeconds)}`).join(' | ')} |`);
  out(`\nWith a custom domain, CloudFront also charges each request: ${usd(month.requests * PRICES.cloudFrontRequest.usd)} per appliance-month beyond its free 10 million requests a month.`);
  out(`At system log level INFO (${PLATFORM_RECORD_BYTES} bytes of platform records per request, assumed): ${usd((month.requests * PLATFORM_RECORD_BYTES * PRICES.logsIngestGb.usd) / 1e9)} more per appliance-month.`);
  if (perRequest.heartbeatMs && perRequest.pollMs) {
    const at = (ms: number) =>
      scale(add(scale(perRequest.heartbeatMs!.u, 3_600_000 / (ms + perRequest.heartbeatMs!.ms)), scale(perRequest.pollMs!.u, 3_600_000 / (ms + perRequest.pollMs!.ms))), HOURS_PER_MONTH);
    const slow = at(30_000);
    out(`With heartbeat and poll both at 30 s (appliance.json intervals): ${n0(slow.requests)} requests, ${usd(costOf(slow, opts.billedMs).total)} per appliance-month.`);
  }

  const c1000 = costOf(scale(perBoot, 1000), opts.billedMs);
  out(`\nPer 1,000 boots of known targets (one at a time): ${n0(perBoot.requests * 1000)} requests, ${n0(perBoot.rru * 1000)} RRU, ${n0(perBoot.wru * 1000)} WRU: **${usd(c1000.total, 4)}** (Lambda ${usd(c1000.lambdaRequests + c1000.lambdaDuration, 4)}, DynamoDB ${usd(c1000.ddbReads + c1000.ddbWrites, 4)}, log ${usd(c1000.logIngestion, 4)}, out ${usd(c1000.transferOut, 4)}).`);
  const perAdded = scale(autoEvents, 1 / opts.autoAdds);
  const perFetch = scale(snapEach, 1 / (snap200.length || 1));
  for (const appliances of [A, 20]) {
    const u = add(perAdded, scale(perFetch, appliances));
    out(`Per auto-added target, farm of ${appliances} appliances (snapshot of this farm's size): ${n1(u.requests)} requests, ${n1(u.rru)} RRU, ${n1(u.wru)} WRU, ${n1(u.kmsSign)} KMS Sign: ${usd(costOf(u, opts.billedMs).total, 5)}; ${usd(costOf(u, opts.billedMs).total * 1000)} per 1,000.`);
  }

  // ---- how far to trust it
  const all = usageOf(recs);
  const wruLocal = recs.reduce((a, r) => a + r.wruLocal, 0);
  const failures = recs.reduce((a, r) => a + r.conditionFailures, 0);
  const cancelled = recs.reduce((a, r) => a + r.txCancelled, 0);
  out(`\nChecks: item sizes computed here matched DynamoDB Local's charge on ${meter.sizeCheck.matched} of ${meter.sizeCheck.writes} plain writes; all writes in the run: ${n1(all.wru)} WRU counted (transactions per item), ${n1(wruLocal)} as DynamoDB Local reports them; ${failures} plain writes refused by a condition (charged 1 WRU each), ${cancelled} transactions cancelled (not charged here); KMS Sign: ${all.kmsSign} counted, ${f.kmsSigns} at the KMS stand-in.`);
  out(`Appliance errors logged during the run: ${f.applianceErrors.length ? f.applianceErrors.slice(0, 5).join('; ') : 'none'}.`);
  out(`Assumed, not measured: ${opts.billedMs} ms billed per request; ${FUNCTION_URL_HEADER_BYTES} bytes of Function URL headers per answer; ${LOG_RECORD_BYTES} bytes of Lambda JSON record per app log line, no platform records (system log level WARN); GSI writes of a transaction doubled like the table's; log storage compressed 6:1; 50 GB of masters and tables of 0.05 / 0.5 GB for the farms.`);
}
