import { beforeAll, describe, expect, it } from 'vitest';
import { expectError, expectStatus, fixtures, type Fixtures } from '../support/fixtures.js';
import { testFarm, type TestFarm } from '../support/farm.js';

let farm: TestFarm;
let fx: Fixtures;
beforeAll(async () => {
  farm = await testFarm();
  fx = fixtures(farm);
});

describe('/v1/stores', () => {
  it('creates a store with its S3 prefix derived from the name', async () => {
    const res = await farm.api('POST', '/v1/stores', { body: { name: 'Main Store' } });
    const store = expectStatus(res, 201);
    expect(store.id).toMatch(/^st_[a-z2-7]{16}$/);
    expect(res.headers.get('location')).toBe(`/v1/stores/${store.id}`);
    expect(res.headers.get('etag')).toBe('"1"');
    expect(res.headers.get('x-farm-revision')).toMatch(/^\d+$/);
    expect(store).toMatchObject({ name: 'Main Store', s3Prefix: 'stores/main-store/', cacheQuota: { defaultBytes: null, perSite: {} } });
  });

  it('gets, updates with If-Match and deletes a store', async () => {
    const store = await fx.store();
    expect(expectStatus(await farm.api('GET', `/v1/stores/${store.id}`), 200)).toEqual(store);
    const res = await farm.api('PATCH', `/v1/stores/${store.id}`, { body: { cacheQuota: { defaultBytes: 1e12 } }, headers: { 'if-match': '"1"' } });
    expect(expectStatus(res, 200).cacheQuota).toEqual({ defaultBytes: 1e12, perSite: {} });
    expect((await farm.api('DELETE', `/v1/stores/${store.id}`)).status).toBe(204);
    expectError(await farm.api('GET', `/v1/stores/${store.id}`), 404, 'not_found');
  });

  it('lists every store once across pages', async () => {
    const ids = [];
    for (let i = 0; i < 4; i++) ids.push((await fx.store()).id);
    const { items, pages } = await fx.listAll('/v1/stores', { limit: 2 });
    expect(pages).toBeGreaterThanOrEqual(2);
    expect(items.map((s) => s.id)).toEqual(expect.arrayContaining(ids));
    expect(new Set(items.map((s) => s.id)).size).toBe(items.length);
  });

  it('refuses to change the S3 prefix once set', async () => {
    const store = await fx.store({ s3Prefix: 'stores/fixed/' });
    expectError(await fx.patch(`/v1/stores/${store.id}`, { s3Prefix: 'stores/other/' }), 400, 'validation_failed', 's3Prefix');
    expectStatus(await fx.patch(`/v1/stores/${store.id}`, { s3Prefix: 'stores/fixed/', description: 'same prefix is fine' }), 200);
  });

  it('refuses duplicate store names and duplicate S3 prefixes', async () => {
    const store = await fx.store({ s3Prefix: 'stores/unique-one/' });
    expectError(await farm.api('POST', '/v1/stores', { body: { name: store.name.toUpperCase() } }), 409, 'already_exists', 'name');
    expectError(await farm.api('POST', '/v1/stores', { body: { name: fx.name('store'), s3Prefix: 'stores/unique-one/' } }), 409, 'already_exists', 's3Prefix');
  });

  it('refuses an S3 prefix with ".." segments or without the trailing slash, naming s3Prefix', async () => {
    expectError(await farm.api('POST', '/v1/stores', { body: { name: fx.name('store'), s3Prefix: 'stores/../x/' } }), 400, 'validation_failed', 's3Prefix');
    expectError(await farm.api('POST', '/v1/stores', { body: { name: fx.name('store'), s3Prefix: 'stores/x' } }), 400, 'validation_failed', 's3Prefix');
  });

  it('refuses to delete a store that holds vDisks, and deletes it once they are gone', async () => {
    const store = await fx.store();
    const vdisk = await fx.vdisk(store.id);
    const res = await farm.api('DELETE', `/v1/stores/${store.id}`);
    expectError(res, 409, 'in_use');
    expect(res.body.error.message).toMatch(/1 vDisk/);
    expect((await farm.api('DELETE', `/v1/vdisks/${vdisk.id}`)).status).toBe(204);
    expect((await farm.api('DELETE', `/v1/stores/${store.id}`)).status).toBe(204);
  });
});
