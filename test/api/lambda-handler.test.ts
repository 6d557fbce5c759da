/**
 * The API's Lambda handlers, exactly as deployed: the bundle `cdk deploy`
 * uploads (synthesised here in-process), loaded under a stand-in of the Node
 * Lambda runtime, configured by environment variables like in AWS, and talking
 * to DynamoDB Local, s3rver and a KMS stand-in. Every request goes through
 * four channels and must behave the same:
 *
 * - local:          the app in-process (createApp, as `bootfarm dev` serves it),
 * - url-streaming:  `handler` (response streaming) with a Function URL event, as the stack deploys it,
 * - apigw-buffered: `bufferedHandler` with an API Gateway HTTP API (payload 2.0) event,
 * - url-buffered:   `bufferedHandler` with a Function URL event (BUFFERED invoke mode).
 */
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { ApiClient } from '../../cli/client.js';
import { pushImage } from '../../cli/push.js';
import { createApp } from '../../functions/app.js';
import { s3ClientConfig } from '../../functions/local/local-aws.js';
import { kmsSigner } from '../../functions/signing.js';
import { s3BlobStore } from '../../functions/storage/blobs.js';
import { dynamoRepo } from '../../functions/storage/clients.js';
import { synthFarm } from '../../infra/lib/synth.js';
import { keyIdOf, verifyManifest } from '../../model/manifest.js';
import { freshTable, SYSTEM } from '../support/farm.js';
import { startKmsStandIn, type KmsCall, type KmsStandIn, type StandInKey } from '../support/kms-stand-in.js';
import { functionUrlEvent, httpApiEvent, REGION, requestFromFetch, URL_ID, type HttpRequest, type V2Event } from '../support/lambda-events.js';
import { installLambdaRuntime, invokeBuffered, invokeStreaming, isStreamingHandler, MAX_BUFFERED_PAYLOAD } from '../support/lambda-runtime.js';

const CHANNELS = ['local', 'url-streaming', 'apigw-buffered', 'url-buffered'] as const;
type Channel = (typeof CHANNELS)[number];
const HANDLER_CHANNELS = CHANNELS.filter((c) => c !== 'local');

interface Res {
  status: number;
  headers: Record<string, string>;
  cookies: string[];
  body: Buffer;
  /** The event the handler was given (handler channels). */
  event?: V2Event;
  json(): any;
}

const aws = inject('localAws');
const MiB = 2 ** 20;
let dir: string;
let kms: KmsStandIn;
let signingKey: StandInKey;
let bundle: { handler: unknown; bufferedHandler: unknown };
let bundlePath: string;
let kmsCallsAtLoad: KmsCall[];
let app: ReturnType<typeof createApp>;
let adminToken: string;
let uninstallRuntime: (() => void) | undefined;
const savedEnv = new Map<string, string | undefined>();

function setEnv(vars: Record<string, string | undefined>): void {
  for (const [k, v] of Object.entries(vars)) {
    if (!savedEnv.has(k)) savedEnv.set(k, process.env[k]);
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bootfarm-lambda-'));
  const synth = synthFarm(join(dir, 'cdk.out'));
  if (!synth.apiAssetDir) throw new Error('synth produced no API bundle');
  bundlePath = join(synth.apiAssetDir, 'index.mjs');

  const { config, tableName } = await freshTable();
  kms = await startKmsStandIn({ region: aws.region });
  signingKey = kms.createKey({ alias: 'bootfarm-test' });
  setEnv({
    BOOTFARM_TABLE: tableName,
    BOOTFARM_BUCKET: aws.bucketName,
    BOOTFARM_SIGNING_KEY: signingKey.arn,
    AWS_REGION: aws.region,
    AWS_ACCESS_KEY_ID: aws.credentials.accessKeyId,
    AWS_SECRET_ACCESS_KEY: aws.credentials.secretAccessKey,
    AWS_SESSION_TOKEN: undefined,
    AWS_ENDPOINT_URL_DYNAMODB: aws.dynamoEndpoint,
    AWS_ENDPOINT_URL_S3: aws.s3Endpoint,
    AWS_ENDPOINT_URL_KMS: kms.endpoint,
    // What the Lambda runtime sets besides the function's own variables.
    AWS_LAMBDA_FUNCTION_NAME: 'bootfarm-dev-ApiFunction',
    AWS_EXECUTION_ENV: 'AWS_Lambda_nodejs22.x',
  });
  uninstallRuntime = installLambdaRuntime();
  // Through Vitest's module runner (which rewrites the bundle's import/export statements; a test cannot reach Node's
  // own import()). The native load, as the runtime does it, is checked in a child process below.
  bundle = await import(/* @vite-ignore */ pathToFileURL(bundlePath).href);
  kmsCallsAtLoad = kms.calls.map((c) => ({ ...c }));

  const repo = dynamoRepo(config, tableName);
  app = createApp({
    repo,
    blobs: s3BlobStore(new S3Client(s3ClientConfig(aws)), aws.bucketName),
    signer: await kmsSigner(signingKey.arn, aws.region),
  });
  adminToken = (await repo.createToken({ name: 'lambda-admin', role: 'farm-admin', siteId: null, expiresAt: null }, SYSTEM)).secret;
}, 60_000);

afterAll(async () => {
  uninstallRuntime?.();
  for (const [k, v] of savedEnv) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  await kms?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

// ------------------------------------------------------------------ calling the four channels

const auth = (token = adminToken) => ({ authorization: `Bearer ${token}` });
/** A request with a JSON body and the admin token. */
const jsonReq = (method: string, path: string, body: unknown, headers: Record<string, string | string[]> = {}): HttpRequest => ({
  method,
  path,
  headers: { ...auth(), 'content-type': 'application/json', ...headers },
  body: JSON.stringify(body),
});

function result(status: number, headers: Record<string, string>, cookies: string[], body: Buffer, event?: V2Event): Res {
  return {
    status,
    headers,
    cookies,
    body,
    ...(event ? { event } : {}),
    json() {
      return body.length ? JSON.parse(body.toString('utf8')) : null;
    },
  };
}

async function call(ch: Channel, req: HttpRequest): Promise<Res> {
  if (ch === 'local') {
    const headers = new Headers();
    for (const [k, v] of Object.entries(req.headers ?? {})) for (const one of Array.isArray(v) ? v : [v]) headers.append(k, one);
    const query = typeof req.query === 'string' ? req.query : req.query ? new URLSearchParams(Object.entries(req.query).flatMap(([k, v]) => (Array.isArray(v) ? v : [v]).map((x): [string, string] => [k, x]))).toString() : '';
    // @hono/node-server (bootfarm dev) drops a GET or HEAD body before the app sees the request.
    const body = req.method === 'GET' || req.method === 'HEAD' ? undefined : req.body;
    const res = await app.request(`http://localhost${req.path}${query ? `?${query}` : ''}`, { method: req.method, headers, body });
    const out: Record<string, string> = {};
    res.headers.forEach((v, k) => k !== 'set-cookie' && (out[k] = v));
    return result(res.status, out, res.headers.getSetCookie(), Buffer.from(await res.arrayBuffer()));
  }
  const event = ch === 'apigw-buffered' ? httpApiEvent(req) : functionUrlEvent(req);
  const r = ch === 'url-streaming' ? await invokeStreaming(bundle.handler, event) : await invokeBuffered(bundle.bufferedHandler, event);
  return result(r.statusCode, r.headers, r.cookies, r.body, event);
}

function describeRes(r: Res): string {
  return `${r.status} ${JSON.stringify(r.headers)} ${r.body.subarray(0, 300).toString('utf8')}`;
}

/** Sends one request (that changes nothing) through every channel; each handler must answer as the local app does. */
async function same(req: HttpRequest): Promise<Res> {
  const local = await call('local', req);
  for (const ch of HANDLER_CHANNELS) {
    const r = await call(ch, req);
    const where = `${ch} vs local for ${req.method} ${req.path}: ${describeRes(r)}`;
    expect(r.status, where).toBe(local.status);
    expect(r.headers, where).toEqual(local.headers);
    expect(r.cookies, where).toEqual(local.cookies);
    if (local.headers['content-type']?.startsWith('application/json')) expect(r.json(), where).toEqual(local.json());
    expect(r.body.equals(local.body), where).toBe(true);
  }
  return local;
}

/** Replaces what differs between two runs of one scenario: object ids, times, revisions, the channel's own suffix. */
function normalize(v: unknown, suffix: string): unknown {
  if (typeof v === 'string')
    return v
      .replaceAll(suffix, '<ch>')
      .replace(/\b[a-z]+_[a-z2-7]{16}\b/g, '<id>')
      .replace(/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z/g, '<time>');
  if (Array.isArray(v)) return v.map((x) => normalize(x, suffix));
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, k === 'x-farm-revision' ? '<rev>' : normalize(x, suffix)]));
  return v;
}

const transcriptOf = (r: Res, suffix: string) => normalize({ status: r.status, headers: r.headers, cookies: r.cookies, body: r.body.length ? r.json() : '' }, suffix);

/** An ApiClient fetch that goes through a handler channel (what the CLI would reach at the Function URL). */
function fetchVia(ch: Channel): typeof fetch {
  return (async (input: string | URL | Request, init?: RequestInit) => {
    const r = await call(ch, await requestFromFetch(input, init));
    return new Response(r.status === 204 ? null : new Uint8Array(r.body), { status: r.status, headers: r.headers });
  }) as typeof fetch;
}

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

// ------------------------------------------------------------------ tests

describe('the deployed Lambda bundle', () => {
  it('exports a response-streaming handler and a buffered one, and read its KMS public key once at load', () => {
    expect(isStreamingHandler(bundle.handler)).toBe(true);
    expect(typeof bundle.bufferedHandler).toBe('function');
    expect(isStreamingHandler(bundle.bufferedHandler)).toBe(false);
    expect(kmsCallsAtLoad).toEqual([
      { target: 'TrentService.GetPublicKey', keyId: signingKey.arn, accessKeyId: aws.credentials.accessKeyId, region: aws.region, service: 'kms' },
    ]);
  });

  it('serves the health check and the OpenAPI document without a token', async () => {
    expect((await same({ method: 'GET', path: '/health' })).json()).toEqual({ status: 'ok' });
    const doc = await same({ method: 'GET', path: '/v1/openapi.json', headers: { accept: 'application/json' } });
    expect(doc.status).toBe(200);
    expect(doc.headers['content-type']).toMatch(/^application\/json/);
    expect(doc.json()).toMatchObject({ openapi: '3.1.0', info: { title: 'bootfarm control plane' } });
    expect(Object.keys(doc.json().paths)).toContain('/v1/sites');
  });

  it('answers a request without a token with 401, the JSON error body and WWW-Authenticate', async () => {
    const r = await same({ method: 'GET', path: '/v1/sites' });
    expect(r.status).toBe(401);
    expect(r.json()).toEqual({ error: { code: 'unauthenticated', message: 'missing Authorization: Bearer <token> header' } });
    expect(r.headers['www-authenticate']).toBe('Bearer realm="bootfarm"');
  });

  it.each([
    ['an unknown token', 'Bearer bft_aaaaaaaaaaaaaaaa_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'],
    ['a malformed token', 'Bearer not-a-token'],
    ['another scheme', 'Basic dXNlcjpwYXNz'],
  ])('answers %s with 401', async (_what, authorization) => {
    const r = await same({ method: 'GET', path: '/v1/sites', headers: { authorization } });
    expect(r.status).toBe(401);
    expect(r.json().error.code).toBe('unauthenticated');
  });

  it('ignores a body sent with GET or HEAD, as the local server does', async () => {
    // Function URLs and HTTP APIs pass it through; a fetch Request cannot carry one.
    const r = await same({ method: 'GET', path: '/v1/sites', headers: { ...auth(), 'content-type': 'application/json' }, body: '{}' });
    expect(r.status, describeRes(r)).toBe(200);
    expect(r.json()).toHaveProperty('items');
    const unauth = await same({ method: 'GET', path: '/v1/sites', headers: { 'content-type': 'application/octet-stream' }, body: new Uint8Array([1, 2, 3]) });
    expect(unauth.status).toBe(401);
    expect((await same({ method: 'HEAD', path: '/health', headers: { 'content-type': 'text/plain' }, body: 'x' })).status).toBe(200);
  });

  it('answers an unknown route with 404 and the JSON error body', async () => {
    expect((await same({ method: 'GET', path: '/v1/no-such-thing', headers: auth() })).json()).toEqual({ error: { code: 'not_found', message: 'no route for GET /v1/no-such-thing' } });
    expect((await same({ method: 'DELETE', path: '/nowhere' })).status).toBe(404);
    // An object that does not exist, with its id percent-encoded in the raw path or not.
    for (const path of ['/v1/sites/site_aaaaaaaaaaaaaaaa', '/v1/sites/%73ite_aaaaaaaaaaaaaaaa']) {
      const r = await same({ method: 'GET', path, headers: auth() });
      expect(r.status).toBe(404);
      expect(r.json().error.code).toBe('not_found');
    }
  });

  it('creates, gets, patches (If-Match) and deletes a site with an admin token, the same on every channel', async () => {
    const transcripts = new Map<Channel, unknown[]>();
    for (const ch of CHANNELS) {
      const suffix = `ch-${ch}-${randomBytes(3).toString('hex')}`;
      const t: Res[] = [];
      const created = await call(ch, jsonReq('POST', '/v1/sites', { name: `Zurich ${suffix}`, description: 'Zürich — Hauptsitz ✓' }));
      t.push(created);
      expect(created.status, describeRes(created)).toBe(201);
      const id = created.json().id as string;
      expect(created.headers.location).toBe(`/v1/sites/${id}`);
      expect(created.json().description).toBe('Zürich — Hauptsitz ✓');
      if (created.event) expect(created.event.isBase64Encoded).toBe(false); // application/json travels as text
      t.push(await call(ch, { method: 'GET', path: `/v1/sites/${id}`, headers: auth() }));
      t.push(await call(ch, jsonReq('PATCH', `/v1/sites/${id}`, { description: 'patched' })));
      t.push(await call(ch, jsonReq('PATCH', `/v1/sites/${id}`, { description: 'patched' }, { 'if-match': '"1"' })));
      t.push(await call(ch, jsonReq('PATCH', `/v1/sites/${id}`, { description: 'stale' }, { 'if-match': '"1"' })));
      t.push(await call(ch, { method: 'DELETE', path: `/v1/sites/${id}`, headers: { ...auth(), 'if-match': '"2"' } }));
      t.push(await call(ch, { method: 'GET', path: `/v1/sites/${id}`, headers: auth() }));
      expect(t.map((r) => r.status)).toEqual([201, 200, 428, 200, 409, 204, 404]);
      expect(t[3]!.headers.etag).toBe('"2"');
      expect(t[5]!.body.length).toBe(0);
      transcripts.set(ch, t.map((r) => transcriptOf(r, suffix)));
    }
    for (const ch of HANDLER_CHANNELS) expect(transcripts.get(ch), ch).toEqual(transcripts.get('local'));
  });

  it('lists sites a page at a time with ?limit=1 and the cursor it returns', async () => {
    for (let i = 0; i < 2; i++) expect((await call('local', jsonReq('POST', '/v1/sites', { name: `list-${i}-${randomBytes(3).toString('hex')}` }))).status).toBe(201);
    const first = (await same({ method: 'GET', path: '/v1/sites', query: { limit: '1' }, headers: auth() })).json();
    expect(first.items).toHaveLength(1);
    expect(first.nextCursor).toEqual(expect.any(String));
    const second = (await same({ method: 'GET', path: '/v1/sites', query: { limit: '1', cursor: first.nextCursor }, headers: auth() })).json();
    expect(second.items).toHaveLength(1);
    expect(second.items[0].id).not.toBe(first.items[0].id);
    // A cursor the listing never returned (percent-encoded characters in the raw query string).
    const bad = await same({ method: 'GET', path: '/v1/sites', query: 'limit=1&cursor=%2F%3D%20x', headers: auth() });
    expect(bad.status).toBe(400);
    expect(bad.json().error.field).toBe('cursor');
  });

  it.each([
    ['an empty name', { name: '' }, 'name'],
    ['an unknown field', { name: 'ok', colour: 'red' }, undefined],
    ['a bad rebalance setting', { name: 'ok', rebalance: { triggerPercent: 1 } }, 'rebalance.triggerPercent'],
  ])('refuses %s with 400 naming the field', async (_what, body, field) => {
    const r = await same(jsonReq('POST', '/v1/sites', body));
    expect(r.status).toBe(400);
    expect(r.json().error.code).toBe('validation_failed');
    if (field) {
      expect(r.json().error.field).toBe(field);
      expect(r.json().error.message).toContain(field);
    }
  });

  it('refuses a body over the 1 MiB limit with 400 (the event carries content-length, app.request does not)', async () => {
    const r = await same(jsonReq('POST', '/v1/sites', { name: 'big', description: 'x'.repeat(1024 * 1024 + 1) }));
    expect(r.status).toBe(400);
    expect(r.json().error).toEqual({ code: 'bad_request', message: 'request body larger than 1048576 bytes' });
  });

  it('refuses a body that is not JSON, and one sent as text/plain (415)', async () => {
    const broken = await same({ method: 'POST', path: '/v1/sites', headers: { ...auth(), 'content-type': 'application/json' }, body: '{"name": ' });
    expect(broken.status).toBe(400);
    const text = await same({ method: 'POST', path: '/v1/sites', headers: { ...auth(), 'content-type': 'text/plain' }, body: '{"name":"x"}' });
    expect(text.status).toBe(415);
  });

  it('decodes a base64 event body: a JSON merge patch sent as application/merge-patch+json (binary to both services)', async () => {
    const transcripts = new Map<Channel, unknown>();
    for (const ch of CHANNELS) {
      const suffix = `mp-${ch}-${randomBytes(3).toString('hex')}`;
      const site = (await call('local', jsonReq('POST', '/v1/sites', { name: `mp ${suffix}` }))).json();
      const patch = JSON.stringify({ description: 'Genève ✓', proxyDhcp: { enabled: true } });
      const r = await call(ch, { method: 'PATCH', path: `/v1/sites/${site.id}`, headers: { ...auth(), 'content-type': 'application/merge-patch+json', 'if-match': '"1"' }, body: patch });
      expect(r.status, describeRes(r)).toBe(200);
      expect(r.json()).toMatchObject({ description: 'Genève ✓', proxyDhcp: { enabled: true }, version: 2 });
      if (r.event) {
        expect(r.event.isBase64Encoded).toBe(true);
        expect(Buffer.from(r.event.body!, 'base64').toString('utf8')).toBe(patch);
      }
      transcripts.set(ch, transcriptOf(r, suffix));
    }
    for (const ch of HANDLER_CHANNELS) expect(transcripts.get(ch), ch).toEqual(transcripts.get('local'));
  });

  it('passes repeated headers comma-joined and cookies as the cookies array, and sets no cookies', async () => {
    const site = (await call('local', jsonReq('POST', '/v1/sites', { name: `hdr-${randomBytes(3).toString('hex')}` }))).json();
    const req: HttpRequest = {
      method: 'PATCH',
      path: `/v1/sites/${site.id}`,
      headers: { ...auth(), 'content-type': 'application/json', 'If-Match': ['"1"', '"1"'], Cookie: 'a=1; b=2', 'X-Trace': ['one', 'two'] },
      body: JSON.stringify({ description: 'x' }),
    };
    for (const event of [functionUrlEvent(req), httpApiEvent(req)]) {
      expect(event.headers['if-match']).toBe('"1","1"');
      expect(event.headers['x-trace']).toBe('one,two');
      expect(event.cookies).toEqual(['a=1', 'b=2']);
      expect(event.headers).not.toHaveProperty('cookie');
      expect(Object.keys(event.headers).every((k) => k === k.toLowerCase())).toBe(true);
    }
    // Two If-Match values are not one ETag: refused the same way everywhere, and nothing changes.
    const r = await same(req);
    expect(r.status).toBe(400);
    expect(r.json().error.field).toBe('If-Match');
    expect(r.cookies).toEqual([]);
    const streamed = await invokeStreaming(bundle.handler, functionUrlEvent(req));
    const prelude = JSON.parse(streamed.raw.subarray(0, streamed.raw.indexOf(Buffer.alloc(8))).toString('utf8'));
    expect(prelude).toEqual({ statusCode: 400, headers: expect.objectContaining({ 'content-type': 'application/json' }), cookies: [] });
    expect(streamed.streamContentType).toBe('application/vnd.awslambda.http-integration-response');
    // Repeated query parameters: queryStringParameters joins them, but the handler reads rawQueryString, so the
    // app sees both values, as locally (and refuses a list where it wants one number).
    expect(functionUrlEvent({ method: 'GET', path: '/v1/sites', query: 'limit=1&limit=2' }).queryStringParameters).toEqual({ limit: '1,2' });
    const dup = await same({ method: 'GET', path: '/v1/sites', query: 'limit=1&limit=2', headers: auth() });
    expect(dup.status, dup.body.toString()).toBe(400);
    expect(dup.json().error.field).toBe('limit');
  });

  it('serves the web console: sign-in page, a session cookie in the cookies array, the farm tree with it, the same on every channel', async () => {
    const login = await same({ method: 'GET', path: '/console/login', headers: { accept: 'text/html' } });
    expect(login.status).toBe(200);
    expect(login.headers['content-type']).toMatch(/^text\/html/);
    expect(login.headers['content-security-policy']).toContain("default-src 'none'");
    expect(login.body.toString()).toContain('API token');
    const css = /href="(\/console\/assets\/console\.[0-9a-f]{12}\.css)"/.exec(login.body.toString())![1]!;
    expect((await same({ method: 'GET', path: css })).headers['content-type']).toMatch(/^text\/css/);

    // Signing in answers 303 and sets the session cookie: through a Function URL or an HTTP API that is the response's cookies array.
    const form = { method: 'POST', path: '/console/login', headers: { 'content-type': 'application/x-www-form-urlencoded', 'sec-fetch-site': 'same-origin' }, body: `token=${encodeURIComponent(adminToken)}` };
    for (const ch of HANDLER_CHANNELS) {
      const r = await call(ch, form);
      expect(r.status, describeRes(r)).toBe(303);
      expect(r.headers.location).toBe('/console');
      expect(r.cookies).toHaveLength(1);
      // A session id and the sealed token (never the token itself), a browser-session cookie; Secure: the URL is HTTPS.
      expect(r.cookies[0]).toMatch(/^bootfarm_console=[A-Za-z0-9_-]{32}\.[A-Za-z0-9_-]+; Path=\/console; HttpOnly; Secure; SameSite=Strict$/);
      expect(r.cookies[0]).not.toContain(adminToken.split('_')[2]!);
      const tree = await call(ch, { method: 'GET', path: '/console', headers: { accept: 'text/html', cookie: r.cookies[0]!.split(';')[0]! } });
      expect(tree.status, describeRes(tree)).toBe(200);
      expect(tree.body.toString()).toContain('aria-label="Farm tree"');
    }
    // Without a session, pages send the browser to sign in.
    const anon = await same({ method: 'GET', path: '/console/targets', headers: { accept: 'text/html' } });
    expect(anon.status).toBe(303);
    expect(anon.headers.location).toBe('/console/login');
  });

  describe('vDisk content', () => {
    let storeId: string;
    beforeAll(async () => {
      storeId = (await call('url-streaming', jsonReq('POST', '/v1/stores', { name: `lambda-${randomBytes(3).toString('hex')}` }))).json().id;
    });

    it('pushes a vDisk through the streaming handler (chunks straight to S3) and serves a manifest signed by the KMS key', async () => {
      // 12 MiB raw image: random data in the first 5 MiB, zeros after; 4 MiB chunks → [data, data, zeros].
      const image = join(dir, 'disk.raw');
      const fh = await open(image, 'w');
      await fh.truncate(12 * MiB);
      const data = randomBytes(5 * MiB);
      await fh.write(data, 0, data.length, 0);
      await fh.close();
      const expectedChunks = [sha256(data.subarray(0, 4 * MiB)), sha256(Buffer.concat([data.subarray(4 * MiB), Buffer.alloc(3 * MiB)])), null];

      const before = kms.calls.length;
      const client = new ApiClient(`https://${URL_ID}.lambda-url.${REGION}.on.aws`, adminToken, fetchVia('url-streaming'));
      const pushed = await pushImage(client, { storeId, name: `push-${randomBytes(3).toString('hex')}`, files: [image], concurrency: 2 });
      expect(pushed).toMatchObject({ vdiskCreated: true, versionCreated: true, chunks: 3, zeroChunks: 1, uploadedChunks: 2, uploadedBytes: 8 * MiB });
      const duringPush = kms.calls.slice(before);

      // The manifest and the signing keys, the same through every channel.
      const manifestRes = await same({ method: 'GET', path: `/v1/vdisks/${pushed.vdiskId}/versions/0/manifest`, headers: auth() });
      expect(manifestRes.status).toBe(200);
      const keys = (await same({ method: 'GET', path: '/v1/signing-keys', headers: auth() })).json().keys;
      expect(keys).toEqual([{ keyId: keyIdOf(signingKey.publicKeyPem), alg: 'ECDSA_P256_SHA256', publicKeyPem: signingKey.publicKeyPem }]);
      const manifest = verifyManifest(manifestRes.json(), keys);
      expect(manifest).toMatchObject({ vdiskId: pushed.vdiskId, version: 0, sizeBytes: 12 * MiB, chunkSize: 4 * MiB, chunks: expectedChunks });
      // Tampered: the signature no longer matches.
      const tampered = { ...manifestRes.json(), payload: Buffer.from(JSON.stringify({ ...manifest, chunks: [null, null, null] })).toString('base64') };
      expect(() => verifyManifest(tampered, keys)).toThrow(/signature does not match/);

      // The handler signed through KMS with the SHA-256 digest of the manifest, and fetched no key again.
      expect(duringPush.length).toBeGreaterThan(0);
      for (const c of duringPush)
        expect(c).toEqual({ target: 'TrentService.Sign', keyId: signingKey.arn, messageType: 'DIGEST', signingAlgorithm: 'ECDSA_SHA_256', messageBytes: 32, accessKeyId: aws.credentials.accessKeyId, region: aws.region, service: 'kms' });
    });

    it('streams a manifest larger than the 6 MB buffered limit intact through the streaming handler', async () => {
      // 80,000 chunks of 64 KiB, all the same content: one chunk to upload, a manifest of about 7 MB.
      const n = 80_000;
      const chunkSize = 64 * 1024;
      const chunk = randomBytes(chunkSize);
      const hash = sha256(chunk);
      const post = (path: string, body: unknown) => call('url-streaming', jsonReq('POST', path, body));
      const vdisk = (await post('/v1/vdisks', { storeId, name: `big-${randomBytes(3).toString('hex')}`, sizeBytes: n * chunkSize, chunkSize })).json();
      const upload = await post(`/v1/vdisks/${vdisk.id}/uploads`, { sizeBytes: n * chunkSize, chunkSize, chunks: new Array(n).fill(hash) });
      expect(upload.status, describeRes(upload)).toBe(200);
      expect(upload.json()).toMatchObject({ chunks: n, distinct: 1, missing: [hash] });
      const urls = (await post(`/v1/vdisks/${vdisk.id}/uploads/${upload.json().uploadId}/urls`, { hashes: [hash] })).json().urls;
      expect(urls[hash]).toMatch(/^http:\/\/127\.0\.0\.1:\d+\//); // s3rver, path-style, from the bundle's S3 client
      const put = await fetch(urls[hash], { method: 'PUT', body: chunk });
      expect(put.status).toBe(200);
      const commit = await post(`/v1/vdisks/${vdisk.id}/uploads/${upload.json().uploadId}/commit`, { description: 'big' });
      expect(commit.status, describeRes(commit)).toBe(201);

      const req: HttpRequest = { method: 'GET', path: `/v1/vdisks/${vdisk.id}/versions/0/manifest`, headers: auth() };
      const local = await call('local', req);
      const streamed = await call('url-streaming', req);
      expect(streamed.status).toBe(200);
      expect(streamed.headers['content-type']).toBe(local.headers['content-type']);
      expect(streamed.body.length).toBeGreaterThan(MAX_BUFFERED_PAYLOAD);
      expect(sha256(streamed.body)).toBe(sha256(local.body));
      const m = verifyManifest(streamed.json(), [{ keyId: keyIdOf(signingKey.publicKeyPem), publicKeyPem: signingKey.publicKeyPem }]);
      expect(m.chunks).toHaveLength(n);
      expect(new Set(m.chunks)).toEqual(new Set([hash]));
      // A buffered invocation cannot return it: Lambda refuses a response over 6 MB.
      await expect(invokeBuffered(bundle.bufferedHandler, functionUrlEvent(req))).rejects.toThrow(/exceeded maximum allowed payload size/);
    });
  });

  /** Runs node on a module, as the Lambda runtime would: a fresh process, Node's own ESM loader. */
  const runNode = (args: string[], env: NodeJS.ProcessEnv) =>
    new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      execFile(process.execPath, args, { env, cwd: process.cwd(), timeout: 20_000, maxBuffer: 16 * MiB }, (err, stdout, stderr) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
      );
    });

  it('loads natively in a fresh node process (top-level await on KMS included) and answers a Function URL request', async () => {
    const url = (p: string) => JSON.stringify(pathToFileURL(p).href);
    const code = `
      const rt = await import(${url(join(import.meta.dirname, '../support/lambda-runtime.ts'))});
      const ev = await import(${url(join(import.meta.dirname, '../support/lambda-events.ts'))});
      rt.installLambdaRuntime();
      const bundle = await import(${url(bundlePath)});
      const r = await rt.invokeStreaming(bundle.handler, ev.functionUrlEvent({ method: 'GET', path: '/v1/signing-keys', headers: { authorization: 'Bearer ' + process.env.TEST_TOKEN } }));
      process.stdout.write(JSON.stringify({ status: r.statusCode, body: r.body.toString('utf8') }));
      process.exit(0);`;
    const before = kms.calls.length;
    const run = await runNode(['--enable-source-maps', '--import', 'tsx', '--input-type=module', '-e', code], { ...process.env, TEST_TOKEN: adminToken });
    expect(run.code, run.stderr.slice(-2000)).toBe(0);
    const out = JSON.parse(run.stdout);
    expect(out.status).toBe(200);
    expect(JSON.parse(out.body).keys[0].publicKeyPem).toBe(signingKey.publicKeyPem);
    expect(kms.calls.slice(before).map((c) => c.target)).toEqual(['TrentService.GetPublicKey']);
  });

  it('fails to load with a bad environment, naming the variable', async () => {
    const { BOOTFARM_TABLE: _table, ...withoutTable } = process.env;
    const missing = await runNode(['--enable-source-maps', bundlePath], withoutTable);
    expect(missing.code).not.toBe(0);
    // The message itself (the minified source line printed with the stack also mentions every variable).
    expect(missing.stderr).toMatch(/bootfarm API: bad Lambda environment \(BOOTFARM_TABLE: [^;)]*\)/);
    const empty = await runNode(['--enable-source-maps', bundlePath], { ...process.env, BOOTFARM_TABLE: '' });
    expect(empty.code).not.toBe(0);
    expect(empty.stderr).toMatch(/bad Lambda environment \(BOOTFARM_TABLE: [^;)]*\)/);
  });
});

describe('the KMS stand-in', () => {
  it('refuses what KMS refuses: a digest of the wrong length, an unknown key', async () => {
    const { KMSClient, SignCommand, GetPublicKeyCommand } = await import('@aws-sdk/client-kms');
    const client = new KMSClient({ region: aws.region, endpoint: kms.endpoint, credentials: aws.credentials });
    await expect(client.send(new SignCommand({ KeyId: signingKey.keyId, Message: Buffer.alloc(31), MessageType: 'DIGEST', SigningAlgorithm: 'ECDSA_SHA_256' }))).rejects.toMatchObject({
      name: 'ValidationException',
      message: 'Digest is invalid length for algorithm ECDSA_SHA_256.',
    });
    await expect(client.send(new GetPublicKeyCommand({ KeyId: 'alias/nope' }))).rejects.toMatchObject({ name: 'NotFoundException' });
    await expect(kmsSigner('00000000-0000-4000-8000-000000000000', aws.region)).rejects.toMatchObject({ name: 'NotFoundException' });
    const pub = await client.send(new GetPublicKeyCommand({ KeyId: 'alias/bootfarm-test' }));
    expect(pub).toMatchObject({ KeyId: signingKey.arn, KeySpec: 'ECC_NIST_P256', KeyUsage: 'SIGN_VERIFY', SigningAlgorithms: ['ECDSA_SHA_256'] });
    client.destroy();
  });
});
