import { beforeAll, describe, expect, it } from 'vitest';
import { expectError, expectStatus, fixtures, type Fixtures } from '../support/fixtures.js';
import { testFarm, type ApiResult, type TestFarm } from '../support/farm.js';

let farm: TestFarm;
let fx: Fixtures;
beforeAll(async () => {
  farm = await testFarm();
  fx = fixtures(farm);
});

const revision = async () => {
  const res = await farm.api('GET', '/v1/farm');
  const body = expectStatus(res, 200);
  expect(res.headers.get('x-farm-revision')).toBe(String(body.revision));
  return body.revision as number;
};

describe('/v1/farm', () => {
  it('starts with PVS-like defaults, version 0 and auditing on', async () => {
    const f = await testFarm();
    const res = await f.api('GET', '/v1/farm');
    expect(expectStatus(res, 200)).toEqual({ name: 'bootfarm', auditing: true, maxVersions: 5, autoAdd: { enabled: false, siteId: null }, version: 0, revision: 0, updatedAt: null });
    expect(res.headers.get('etag')).toBe('"0"');
    expect(res.headers.get('x-farm-revision')).toBe('0');
  });

  it('updates settings with If-Match and returns the new ETag and revision', async () => {
    const cur = await farm.api('GET', '/v1/farm');
    const res = await farm.api('PATCH', '/v1/farm', { body: { name: 'lab farm' }, headers: { 'if-match': cur.headers.get('etag')! } });
    const body = expectStatus(res, 200);
    expect(body).toMatchObject({ name: 'lab farm', auditing: true, maxVersions: 5, version: cur.body.version + 1, revision: cur.body.revision + 1 });
    expect(body.updatedAt).toEqual(expect.any(String));
    expect(res.headers.get('etag')).toBe(`"${cur.body.version + 1}"`);
    expect(res.headers.get('x-farm-revision')).toBe(String(body.revision));
  });

  it.each([2, 51, 4.5, '10'])('refuses maxVersions %j, naming maxVersions', async (maxVersions) => {
    expectError(await fx.patch('/v1/farm', { maxVersions }), 400, 'validation_failed', 'maxVersions');
  });

  it.each([3, 50])('accepts maxVersions %d at the edge of 3-50', async (maxVersions) => {
    expect(expectStatus(await fx.patch('/v1/farm', { maxVersions }), 200).maxVersions).toBe(maxVersions);
  });

  it('refuses a PATCH without If-Match with 428, and a stale If-Match with 409', async () => {
    expectError(await farm.api('PATCH', '/v1/farm', { body: { name: 'x' } }), 428, 'precondition_required');
    const { version } = (await farm.api('GET', '/v1/farm')).body;
    expectError(await farm.api('PATCH', '/v1/farm', { body: { name: 'x' }, headers: { 'if-match': `"${version + 5}"` } }), 409, 'version_mismatch');
  });

  it.each([
    [{ revision: 9 }, 'revision'],
    [{ version: 9 }, 'version'],
    [{ autoAdd: { site: null } }, 'autoAdd.site'],
    [{ autoAdd: { siteId: 'site_aaaaaaaaaaaaaaaa' } }, 'autoAdd.siteId'],
    [{ auditing: 'yes' }, 'auditing'],
  ])('refuses %j, naming the field', async (bad, field) => {
    expectError(await fx.patch('/v1/farm', bad), 400, 'validation_failed', field);
  });

  it('refuses to enable auto-add without a site, naming autoAdd.siteId', async () => {
    expectError(await fx.patch('/v1/farm', { autoAdd: { enabled: true } }), 400, 'validation_failed', 'autoAdd.siteId');
    const site = await fx.site();
    expect(expectStatus(await fx.patch('/v1/farm', { autoAdd: { enabled: true, siteId: site.id } }), 200).autoAdd).toEqual({ enabled: true, siteId: site.id });
    expectError(await fx.patch('/v1/farm', { autoAdd: { siteId: null } }), 400, 'validation_failed', 'autoAdd.siteId');
    expectStatus(await fx.patch('/v1/farm', { autoAdd: { enabled: false, siteId: null } }), 200);
  });

  it('does not bump the revision or the version on a PATCH that changes nothing', async () => {
    const before = (await farm.api('GET', '/v1/farm')).body;
    const res = await fx.patch('/v1/farm', { maxVersions: before.maxVersions, name: before.name });
    expect(expectStatus(res, 200)).toMatchObject({ version: before.version, revision: before.revision });
    expect(res.headers.get('etag')).toBe(`"${before.version}"`);
    expect(await revision()).toBe(before.revision);
  });
});

describe('farm revision', () => {
  it('increases by exactly one on every change of any object, and X-Farm-Revision reports it', async () => {
    let rev = await revision();
    const changed = async (res: ApiResult, status: number) => {
      expectStatus(res, status);
      rev += 1;
      expect(Number(res.headers.get('x-farm-revision'))).toBe(rev);
      expect(await revision()).toBe(rev);
      return res.body;
    };
    const site = await changed(await farm.api('POST', '/v1/sites', { body: { name: fx.name('site') } }), 201);
    await changed(await fx.patch(`/v1/sites/${site.id}`, { bootstrap: { verbose: true } }), 200);
    const app = await changed(await farm.api('POST', '/v1/appliances', { body: { siteId: site.id, name: fx.name('app'), managementAddress: '192.0.2.10' } }), 201);
    await changed(await fx.patch(`/v1/appliances/${app.id}`, { maxTargets: 10 }), 200);
    const store = await changed(await farm.api('POST', '/v1/stores', { body: { name: fx.name('store') } }), 201);
    const vdisk = await changed(await farm.api('POST', '/v1/vdisks', { body: { storeId: store.id, name: fx.name('vd'), sizeBytes: 1 << 30 } }), 201);
    await changed(await farm.api('POST', `/v1/vdisks/${vdisk.id}/versions`), 201);
    await changed(await fx.patch(`/v1/vdisks/${vdisk.id}/versions/0`, { state: 'production' }), 200);
    const col = await changed(await farm.api('POST', '/v1/collections', { body: { siteId: site.id, name: fx.name('col') } }), 201);
    const t = await changed(await farm.api('POST', '/v1/targets', { body: { mac: fx.nextMac(), name: fx.name('t'), collectionId: col.id, assignments: [{ vdiskId: vdisk.id }] } }), 201);
    await changed(await fx.patch(`/v1/targets/${t.mac}`, { disabled: true }), 200);
    await changed(await fx.patch('/v1/farm', { autoAdd: { enabled: true, siteId: site.id } }), 200);
    await changed(await fx.patch('/v1/farm', { autoAdd: { enabled: false, siteId: null } }), 200);
    await changed(await farm.api('DELETE', `/v1/targets/${t.mac}`), 204);
    await changed(await farm.api('DELETE', `/v1/vdisks/${vdisk.id}/versions/0`), 204);
    await changed(await farm.api('DELETE', `/v1/vdisks/${vdisk.id}`), 204);
    await changed(await farm.api('DELETE', `/v1/collections/${col.id}`), 204);
    await changed(await farm.api('DELETE', `/v1/appliances/${app.id}`), 204);
    await changed(await farm.api('DELETE', `/v1/stores/${store.id}`), 204);
    await changed(await farm.api('DELETE', `/v1/sites/${site.id}`), 204);
  });

  it('does not move on reads, no-op PATCHes or refused writes', async () => {
    const site = await fx.site();
    const col = await fx.collection(site.id);
    const t = await fx.target(col.id);
    const rev = await revision();
    for (const path of ['/v1/sites', `/v1/sites/${site.id}`, `/v1/collections?siteId=${site.id}`, `/v1/targets/${t.mac}`, '/v1/stores', '/v1/vdisks', '/v1/appliances', '/v1/audit', '/v1/tokens'])
      expectStatus(await farm.api('GET', path), 200);
    expectStatus(await fx.patch(`/v1/sites/${site.id}`, { name: site.name }), 200);
    expectStatus(await fx.patch(`/v1/targets/${t.mac}`, { disabled: false }), 200);
    expectError(await farm.api('POST', '/v1/sites', { body: { name: site.name } }), 409, 'already_exists');
    expectError(await farm.api('DELETE', `/v1/sites/${site.id}`), 409, 'in_use');
    expectError(await farm.api('PATCH', `/v1/sites/${site.id}`, { body: { name: 'x' }, headers: { 'if-match': '"99"' } }), 409, 'version_mismatch');
    expectError(await farm.api('POST', '/v1/targets', { body: { mac: fx.nextMac(), name: fx.name('t'), collectionId: col.id, assignments: [{ vdiskId: 'vd_aaaaaaaaaaaaaaaa' }] } }), 400, 'validation_failed');
    expect(await revision()).toBe(rev);
    const unchanged = await farm.api('GET', `/v1/sites/${site.id}`);
    expect(unchanged.body.version).toBe(1);
  });
});
