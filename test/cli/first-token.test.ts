/**
 * `bootfarm cloud first-token`, the post-deploy bootstrap, as an operator
 * runs it: the real CLI process with AWS credentials and an endpoint from
 * the environment (here DynamoDB Local through AWS_ENDPOINT_URL_DYNAMODB).
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, expect, test, inject } from 'vitest';
import { dynamoRepo } from '../../functions/storage/clients.js';
import type { DynamoFarmRepo } from '../../functions/storage/dynamo-repo.js';
import { freshTable } from '../support/farm.js';

const run = promisify(execFile);
const BIN = join(import.meta.dirname, '../../bin/bootfarm.js');

let tableName: string;
let repo: DynamoFarmRepo;
let env: NodeJS.ProcessEnv;

async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(process.execPath, [BIN, ...args], { env, timeout: 60_000 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const err = e as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof err.code === 'number' ? err.code : -1, stdout: err.stdout ?? '', stderr: err.stderr ?? '' };
  }
}

beforeAll(async () => {
  const aws = inject('localAws');
  const t = await freshTable();
  tableName = t.tableName;
  repo = dynamoRepo(t.config, tableName);
  env = {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    AWS_ACCESS_KEY_ID: aws.credentials.accessKeyId,
    AWS_SECRET_ACCESS_KEY: aws.credentials.secretAccessKey,
    AWS_ENDPOINT_URL_DYNAMODB: aws.dynamoEndpoint,
    AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
  };
});

test('creates a working farm-admin token once, prints it once, and records who made it', async () => {
  const r = await cli('--json', 'cloud', 'first-token', '--table', tableName, '--region', inject('localAws').region, '--name', 'alice');
  expect(r.code, r.stderr).toBe(0);
  const out = JSON.parse(r.stdout);
  expect(out).toMatchObject({ role: 'farm-admin', name: 'alice', expiresAt: null });
  const principal = await repo.authenticate(out.token, new Date());
  expect(principal).toMatchObject({ role: 'farm-admin', siteId: null, name: 'alice' });
  const audit = await repo.audit({ limit: 10 });
  expect(audit.items.find((a) => a.objectId === out.id)?.actor.name).toMatch(/^bootfarm cloud first-token \(.+@.+\)$/);

  // A second run refuses: the farm has an admin, who makes more tokens through the API.
  const again = await cli('cloud', 'first-token', '--table', tableName, '--region', inject('localAws').region);
  expect(again.code).not.toBe(0);
  expect(again.stderr).toContain(`this farm already has 1 farm-admin token(s) (${out.id} "alice")`);
  expect(again.stderr).toContain('bootfarm token create --role farm-admin');
  expect((await repo.listTokens(100)).items).toHaveLength(1);

  // --force: the way back in when every admin token is lost.
  const forced = await cli('cloud', 'first-token', '--table', tableName, '--region', inject('localAws').region, '--force', '--name', 'recovery');
  expect(forced.code, forced.stderr).toBe(0);
  const secret = forced.stdout.split('\n')[0]!;
  expect(await repo.authenticate(secret, new Date())).toMatchObject({ role: 'farm-admin', name: 'recovery' });
  expect(forced.stdout).toContain('next: bootfarm login --api');
}, 60_000);

test('an expired admin token does not block a new first token', async () => {
  const t = await freshTable();
  const r2 = dynamoRepo(t.config, t.tableName);
  await r2.createToken({ name: 'old', role: 'farm-admin', siteId: null, expiresAt: '2020-01-01T00:00:00.000Z' }, { tokenId: 'x', name: 'test', role: 'farm-admin', siteId: null });
  const r = await cli('cloud', 'first-token', '--table', t.tableName, '--region', inject('localAws').region);
  expect(r.code, r.stderr).toBe(0);
}, 60_000);

test('bad input: a missing table, a bad or past expiry, missing flags each get a clear error and create nothing', async () => {
  const region = inject('localAws').region;
  const before = (await repo.listTokens(100)).items.length;
  const missing = await cli('cloud', 'first-token', '--table', 'no-such-table', '--region', region);
  expect(missing.code).not.toBe(0);
  expect(missing.stderr).toContain(`no table "no-such-table" in ${region}`);
  const badExpiry = await cli('cloud', 'first-token', '--table', tableName, '--region', region, '--expires', 'next tuesday');
  expect(badExpiry.code).not.toBe(0);
  expect(badExpiry.stderr).toContain('--expires next tuesday: not an ISO 8601 time');
  const past = await cli('cloud', 'first-token', '--table', tableName, '--region', region, '--force', '--expires', '2020-01-01T00:00:00Z');
  expect(past.code).not.toBe(0);
  expect(past.stderr).toContain('--expires 2020-01-01T00:00:00Z: is in the past');
  const noRegion = await cli('cloud', 'first-token', '--table', tableName);
  expect(noRegion.code).not.toBe(0);
  expect(noRegion.stderr).toContain("required option '--region <region>' not specified");
  expect((await repo.listTokens(100)).items).toHaveLength(before);
}, 60_000);

test('credentials the table refuses get a clear error, not a stack trace', async () => {
  // DynamoDB Local refuses an access key with characters outside A-Z, 0-9 (UnrecognizedClientException), as AWS refuses an unknown key.
  const saved = env;
  env = { ...env, AWS_ACCESS_KEY_ID: 'not-a-key!' };
  try {
    const r = await cli('cloud', 'first-token', '--table', tableName, '--region', inject('localAws').region, '--force');
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('AWS refused your credentials (UnrecognizedClientException)');
    expect(r.stderr).not.toMatch(/\n\s+at /);
  } finally {
    env = saved;
  }
}, 60_000);
