import { beforeAll, describe, expect, it } from 'vitest';
import { expectError, expectStatus, fixtures, type Fixtures } from '../support/fixtures.js';
import { testFarm, type TestFarm } from '../support/farm.js';

let farm: TestFarm;
let fx: Fixtures;
let site: any;
beforeAll(async () => {
  farm = await testFarm();
  fx = fixtures(farm);
  site = await fx.site();
});

/** One object of each kind, its path, and a patch that changes it. */
const KINDS: [string, () => Promise<{ path: string }>, Record<string, unknown>][] = [
  ['site', async () => ({ path: `/v1/sites/${(await fx.site()).id}` }), { description: 'x' }],
  ['appliance', async () => ({ path: `/v1/appliances/${(await fx.appliance(site.id)).id}` }), { description: 'x' }],
  ['store', async () => ({ path: `/v1/stores/${(await fx.store()).id}` }), { description: 'x' }],
  ['vDisk', async () => ({ path: `/v1/vdisks/${(await fx.vdisk((await fx.store()).id)).id}` }), { description: 'x' }],
  ['collection', async () => ({ path: `/v1/collections/${(await fx.collection(site.id)).id}` }), { description: 'x' }],
  ['target', async () => ({ path: `/v1/targets/${(await fx.target((await fx.collection(site.id)).id)).mac}` }), { description: 'x' }],
  [
    'version',
    async () => {
      const vd = await fx.vdisk((await fx.store()).id);
      await fx.version(vd.id);
      return { path: `/v1/vdisks/${vd.id}/versions/0` };
    },
    { description: 'x' },
  ],
];

describe('request bodies', () => {
  it('answers 400 for malformed JSON', async () => {
    expectError(await farm.api('POST', '/v1/sites', { body: '{"name": "x",' }), 400, 'bad_request');
    const res = await fx.patch(`/v1/sites/${site.id}`, '{nope');
    expectError(res, 400, 'bad_request');
    expect(res.body.error.message).toMatch(/JSON/);
  });

  it('answers 415 for a body that is not JSON, and for a JSON body without Content-Type', async () => {
    expectError(await farm.api('POST', '/v1/sites', { body: '{"name":"x"}', headers: { 'content-type': 'text/plain' } }), 415, 'bad_request');
    expectError(await farm.api('POST', '/v1/sites', { body: 'name=x', headers: { 'content-type': 'application/x-www-form-urlencoded' } }), 415, 'bad_request');
    expectError(await fx.patch(`/v1/sites/${site.id}`, '{"description":"x"}', { headers: { 'content-type': 'text/plain' } }), 415, 'bad_request');
  });

  it('answers 400 for a body that is not an object', async () => {
    expectError(await farm.api('POST', '/v1/sites', { body: '[1]' }), 400, 'validation_failed');
    expectError(await farm.api('POST', '/v1/sites', { body: '"site"' }), 400, 'validation_failed');
    expectError(await fx.patch(`/v1/sites/${site.id}`, 'null'), 400, 'validation_failed');
  });

  it('answers 400 naming the first missing required field', async () => {
    expectError(await farm.api('POST', '/v1/sites', { body: {} }), 400, 'validation_failed', 'name');
    expectError(await farm.api('POST', '/v1/appliances', { body: { siteId: site.id, name: fx.name('a') } }), 400, 'validation_failed', 'managementAddress');
  });

  it('answers 400 for a body larger than 1 MiB', async () => {
    const res = await farm.api('POST', '/v1/sites', { body: { name: 'big', description: 'x'.repeat(1024 * 1024 + 1) } });
    expectError(res, 400, 'bad_request');
    expect(res.body.error.message).toMatch(/larger than/);
  });

  it.each([
    ['/v1/sites', () => ({ name: fx.name('s'), colour: 'red' }), 'colour'],
    ['/v1/sites', () => ({ name: fx.name('s'), bootstrap: { retries: 3 } }), 'bootstrap.retries'],
    ['/v1/stores', () => ({ name: fx.name('s'), cacheQuota: { maxBytes: 1 } }), 'cacheQuota.maxBytes'],
  ])('refuses an unknown field in POST %s, naming it', async (path, body, field) => {
    expectError(await farm.api('POST', path, { body: body() }), 400, 'validation_failed', field);
  });

  it.each(['id', 'version', 'createdAt', 'updatedAt'])('refuses the read-only field %s in a POST and in a PATCH of every kind', async (field) => {
    const value = field === 'version' ? 7 : 'x';
    expectError(await farm.api('POST', '/v1/sites', { body: { name: fx.name('s'), [field]: value } }), 400, 'validation_failed', field);
    for (const [kind, make] of KINDS) {
      const { path } = await make();
      const res = await fx.patch(path, { [field]: value });
      expect(res.status, `${kind}: ${JSON.stringify(res.body)}`).toBe(400);
      expectError(res, 400, 'validation_failed', field);
    }
  });

  it('refuses null for a field that cannot be null', async () => {
    expectError(await fx.patch(`/v1/sites/${site.id}`, { name: null }), 400, 'validation_failed', 'name');
    expectError(await fx.patch(`/v1/sites/${site.id}`, { bootstrap: null }), 400, 'validation_failed', 'bootstrap');
  });
});

describe('site bootstrap settings', () => {
  it.each([
    [{ pollingTimeoutMs: 999 }, 'bootstrap.pollingTimeoutMs'],
    [{ pollingTimeoutMs: 60001 }, 'bootstrap.pollingTimeoutMs'],
    [{ pollingTimeoutMs: 1500.5 }, 'bootstrap.pollingTimeoutMs'],
    [{ generalTimeoutMs: 0 }, 'bootstrap.generalTimeoutMs'],
    [{ servers: [1, 2, 3, 4, 5].map((i) => ({ address: `192.0.2.${i}` })) }, 'bootstrap.servers'],
    [{ servers: [{ address: '192.0.2.1', port: 0 }] }, 'bootstrap.servers.0.port'],
    [{ servers: [{ address: '192.0.2.1' }, { address: 'bad host!' }] }, 'bootstrap.servers.1.address'],
    [{ networkRecovery: { action: 'reboot-local', rebootDelaySeconds: 0 } }, 'bootstrap.networkRecovery.rebootDelaySeconds'],
  ])('refuses bootstrap %j on create and update, naming the field', async (bootstrap, field) => {
    expectError(await farm.api('POST', '/v1/sites', { body: { name: fx.name('s'), bootstrap } }), 400, 'validation_failed', field);
    expectError(await fx.patch(`/v1/sites/${site.id}`, { bootstrap }), 400, 'validation_failed', field);
  });

  it('accepts the edges: timeouts of 1000 and 60000 ms and 4 servers', async () => {
    const servers = [1, 2, 3, 4].map((i) => ({ address: `192.0.2.${i}`, port: 8080 }));
    const res = await fx.patch(`/v1/sites/${site.id}`, { bootstrap: { pollingTimeoutMs: 1000, generalTimeoutMs: 60000, servers } });
    expect(expectStatus(res, 200).bootstrap).toMatchObject({ pollingTimeoutMs: 1000, generalTimeoutMs: 60000, servers });
  });

  it.each([4, 5001])('refuses rebalance.triggerPercent %d outside 5-5000', async (triggerPercent) => {
    expectError(await fx.patch(`/v1/sites/${site.id}`, { rebalance: { triggerPercent } }), 400, 'validation_failed', 'rebalance.triggerPercent');
  });

  it('refuses a site name longer than 50 characters or with a path character', async () => {
    expectError(await farm.api('POST', '/v1/sites', { body: { name: 's'.repeat(51) } }), 400, 'validation_failed', 'name');
    expectError(await farm.api('POST', '/v1/sites', { body: { name: 'a/b' } }), 400, 'validation_failed', 'name');
    expectError(await farm.api('POST', '/v1/sites', { body: { name: 'trailing ' } }), 400, 'validation_failed', 'name');
  });
});

describe('query parameters', () => {
  it.each(['0', '1001', 'ten'])('refuses ?limit=%s', async (limit) => {
    expectError(await farm.api('GET', `/v1/sites?limit=${limit}`), 400, 'validation_failed', 'limit');
  });

  it('refuses a cursor that is not one, and a cursor of another listing', async () => {
    expectError(await farm.api('GET', '/v1/sites?cursor=garbage'), 400, 'bad_request', 'cursor');
    expectError(await farm.api('GET', `/v1/sites?cursor=${Buffer.from('{"pk":"site","sk":1}').toString('base64url')}`), 400, 'bad_request', 'cursor');
    await fx.store();
    await fx.store();
    const stores = expectStatus(await farm.api('GET', '/v1/stores?limit=1'), 200);
    expect(stores.nextCursor).toEqual(expect.any(String));
    expectError(await farm.api('GET', `/v1/sites?cursor=${stores.nextCursor}`), 400, 'bad_request', 'cursor');
    const other = await fx.site();
    await fx.appliance(other.id);
    await fx.appliance(other.id);
    const apps = expectStatus(await farm.api('GET', `/v1/appliances?siteId=${other.id}&limit=1`), 200);
    expectError(await farm.api('GET', `/v1/appliances?siteId=${site.id}&cursor=${apps.nextCursor}`), 400, 'bad_request', 'cursor');
  });

  it('refuses a filter value that is not an id, naming the filter', async () => {
    expectError(await farm.api('GET', '/v1/appliances?siteId=berlin'), 400, 'validation_failed', 'siteId');
    expectError(await farm.api('GET', '/v1/vdisks?storeId=1'), 400, 'validation_failed', 'storeId');
  });

  it('refuses a path id of the wrong form, naming the parameter', async () => {
    expectError(await farm.api('GET', '/v1/sites/berlin'), 400, 'validation_failed', 'id');
    expectError(await farm.api('GET', `/v1/vdisks/vd_aaaaaaaaaaaaaaaa/versions/-1`), 400, 'validation_failed', 'number');
  });
});

describe('conditional requests', () => {
  it.each(KINDS.map(([k, make, body]) => [k, make, body] as const))('a %s PATCH needs If-Match (428), refuses a stale one (409) and a malformed one (400)', async (_, make, body) => {
    const { path } = await make();
    expectError(await farm.api('PATCH', path, { body }), 428, 'precondition_required');
    expectError(await farm.api('PATCH', path, { body, headers: { 'if-match': '"2"' } }), 409, 'version_mismatch');
    for (const bad of ['1', 'abc', '"x"', '"1", "2"']) expectError(await farm.api('PATCH', path, { body, headers: { 'if-match': bad } }), 400, 'bad_request', 'If-Match');
    const ok = await farm.api('PATCH', path, { body, headers: { 'if-match': 'W/"1"' } });
    expect(expectStatus(ok, 200).version).toBe(2);
    expect(ok.headers.get('etag')).toBe('"2"');
  });

  it.each(KINDS.map(([k, make]) => [k, make] as const))('a %s DELETE with a stale If-Match gets 409 and keeps the object; with the current one it deletes', async (_, make) => {
    const { path } = await make();
    expectError(await farm.api('DELETE', path, { headers: { 'if-match': '"5"' } }), 409, 'version_mismatch');
    expectStatus(await farm.api('GET', path), 200);
    expectError(await farm.api('DELETE', path, { headers: { 'if-match': 'nope' } }), 400, 'bad_request', 'If-Match');
    expect((await farm.api('DELETE', path, { headers: { 'if-match': '"1"' } })).status).toBe(204);
    expectError(await farm.api('GET', path), 404, 'not_found');
  });

  it('refuses a PATCH with a stale If-Match even when it would change nothing', async () => {
    const s = await fx.site();
    expectStatus(await fx.patch(`/v1/sites/${s.id}`, { description: 'v2' }), 200);
    expectError(await farm.api('PATCH', `/v1/sites/${s.id}`, { body: { description: 'v2' }, headers: { 'if-match': '"1"' } }), 409, 'version_mismatch');
  });

  it('answers 404 to a PATCH or DELETE of an object that does not exist', async () => {
    expectError(await farm.api('PATCH', '/v1/sites/site_aaaaaaaaaaaaaaaa', { body: { description: 'x' }, headers: { 'if-match': '"1"' } }), 404, 'not_found');
    expectError(await farm.api('DELETE', '/v1/targets/52:54:00:ff:ff:fe'), 404, 'not_found');
  });
});

describe('unknown routes', () => {
  it.each([
    ['GET', '/v1/nothing'],
    ['GET', '/v1/sites/site_aaaaaaaaaaaaaaaa/targets'],
    ['PUT', `/v1/sites/site_aaaaaaaaaaaaaaaa`],
    ['DELETE', '/v1/farm'],
    ['POST', '/v1/audit'],
    ['GET', '/v2/sites'],
  ])('answer %s %s with a JSON 404', async (method, path) => {
    const res = await farm.api(method, path, { body: method === 'GET' || method === 'DELETE' ? undefined : {} });
    expectError(res, 404, 'not_found');
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    expect(res.body.error.message).toContain(path);
  });
});
