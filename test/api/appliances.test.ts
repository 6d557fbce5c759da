import { beforeAll, describe, expect, it } from 'vitest';
import { expectError, expectStatus, fixtures, type Fixtures } from '../support/fixtures.js';
import { testFarm, type TestFarm } from '../support/farm.js';

let farm: TestFarm;
let fx: Fixtures;
let siteId: string;
beforeAll(async () => {
  farm = await testFarm();
  fx = fixtures(farm);
  siteId = (await fx.site()).id;
});

describe('/v1/appliances', () => {
  it('creates an appliance with PVS server defaults and read-only fields null', async () => {
    const res = await farm.api('POST', '/v1/appliances', { body: { siteId, name: 'pvs-01', managementAddress: 'pvs-01.example.net', streamingAddresses: ['192.0.2.11'] } });
    const app = expectStatus(res, 201);
    expect(app.id).toMatch(/^app_[a-z2-7]{16}$/);
    expect(res.headers.get('location')).toBe(`/v1/appliances/${app.id}`);
    expect(res.headers.get('etag')).toBe('"1"');
    expect(res.headers.get('x-farm-revision')).toMatch(/^\d+$/);
    expect(app).toMatchObject({ siteId, name: 'pvs-01', powerRating: 1, maxTargets: 500, streamingAddresses: ['192.0.2.11'], lastHeartbeat: null, inventory: null, version: 1 });
  });

  it('takes a floating address no machine of the site has, and refuses one that is taken or its own', async () => {
    const site = await fx.site();
    const a = expectStatus(await farm.api('POST', '/v1/appliances', { body: { siteId: site.id, name: 'ha-a', managementAddress: '192.0.2.11', floatingAddress: '192.0.2.21' } }), 201);
    expect(a.floatingAddress).toBe('192.0.2.21');
    expect(expectStatus(await farm.api('POST', '/v1/appliances', { body: { siteId: site.id, name: 'ha-plain', managementAddress: '192.0.2.15' } }), 201).floatingAddress).toBeNull();
    expectError(await farm.api('POST', '/v1/appliances', { body: { siteId: site.id, name: 'ha-b', managementAddress: '192.0.2.12', floatingAddress: '192.0.2.21' } }), 409, 'already_exists', 'floatingAddress');
    expectError(await farm.api('POST', '/v1/appliances', { body: { siteId: site.id, name: 'ha-b', managementAddress: '192.0.2.12', floatingAddress: '192.0.2.12' } }), 400, 'validation_failed', 'floatingAddress');
    expectError(await farm.api('POST', '/v1/appliances', { body: { siteId: site.id, name: 'ha-b', managementAddress: '192.0.2.12', floatingAddress: '192.0.2.11' } }), 400, 'validation_failed', 'floatingAddress');
    expectError(await farm.api('POST', '/v1/appliances', { body: { siteId: site.id, name: 'ha-b', managementAddress: '192.0.2.21' } }), 400, 'validation_failed', 'managementAddress');
    expectError(await farm.api('POST', '/v1/appliances', { body: { siteId: site.id, name: 'ha-b', managementAddress: '192.0.2.12', floatingAddress: '2001:db8::1' } }), 400, 'validation_failed', 'floatingAddress');
    // Another site may use the same address (another LAN).
    expect(expectStatus(await farm.api('POST', '/v1/appliances', { body: { siteId, name: 'ha-other', managementAddress: '192.0.2.31', floatingAddress: '192.0.2.21' } }), 201).floatingAddress).toBe('192.0.2.21');
    // Moving it is a PATCH like any other field; nothing was lost on the refusals.
    expect(expectStatus(await farm.api('PATCH', `/v1/appliances/${a.id}`, { body: { floatingAddress: '192.0.2.22' }, headers: { 'if-match': '*' } }), 200).floatingAddress).toBe('192.0.2.22');
    expect((await fx.listAll(`/v1/appliances?siteId=${site.id}`)).items.map((x: { name: string }) => x.name).sort()).toEqual(['ha-a', 'ha-plain']);
  });

  it('gets, updates with If-Match and deletes an appliance', async () => {
    const app = await fx.appliance(siteId);
    const got = await farm.api('GET', `/v1/appliances/${app.id}`);
    expect(expectStatus(got, 200)).toEqual(app);
    const res = await farm.api('PATCH', `/v1/appliances/${app.id}`, { body: { powerRating: 2.5, maxTargets: 4095 }, headers: { 'if-match': got.headers.get('etag')! } });
    expect(expectStatus(res, 200)).toMatchObject({ powerRating: 2.5, maxTargets: 4095, version: 2 });
    expect(res.headers.get('etag')).toBe('"2"');
    expect((await farm.api('DELETE', `/v1/appliances/${app.id}`)).status).toBe(204);
    expectError(await farm.api('GET', `/v1/appliances/${app.id}`), 404, 'not_found');
  });

  it('lists appliances of one site with ?siteId across pages', async () => {
    const site = await fx.site();
    const mine = [];
    for (let i = 0; i < 5; i++) mine.push((await fx.appliance(site.id)).id);
    await fx.appliance(siteId);
    const { items, pages } = await fx.listAll(`/v1/appliances?siteId=${site.id}`, { limit: 2 });
    expect(pages).toBeGreaterThanOrEqual(3);
    expect(items.map((a) => a.id).sort()).toEqual(mine.sort());
    const all = await fx.listAll('/v1/appliances', { limit: 3 });
    expect(all.items.length).toBeGreaterThanOrEqual(6);
    expect(new Set(all.items.map((a) => a.id)).size).toBe(all.items.length);
  });

  it('refuses a site that does not exist, naming siteId', async () => {
    expectError(await farm.api('POST', '/v1/appliances', { body: { siteId: 'site_aaaaaaaaaaaaaaaa', name: fx.name('app'), managementAddress: '192.0.2.10' } }), 400, 'validation_failed', 'siteId');
  });

  it('refuses to move an appliance to another site (siteId is fixed at creation)', async () => {
    const app = await fx.appliance(siteId);
    const other = await fx.site();
    expectError(await fx.patch(`/v1/appliances/${app.id}`, { siteId: other.id }), 400, 'validation_failed', 'siteId');
  });

  it('refuses heartbeat and inventory in a body: the appliance owns them', async () => {
    const app = await fx.appliance(siteId);
    expectError(await fx.patch(`/v1/appliances/${app.id}`, { lastHeartbeat: '2026-01-01T00:00:00Z' }), 400, 'validation_failed', 'lastHeartbeat');
    expectError(await farm.api('POST', '/v1/appliances', { body: { siteId, name: fx.name('app'), managementAddress: '192.0.2.10', inventory: {} } }), 400, 'validation_failed', 'inventory');
  });

  it('refuses a second appliance with the same name', async () => {
    const app = await fx.appliance(siteId);
    expectError(await farm.api('POST', '/v1/appliances', { body: { siteId, name: app.name.toUpperCase(), managementAddress: '192.0.2.10' } }), 409, 'already_exists', 'name');
  });

  it.each([
    [{ powerRating: 0 }, 'powerRating'],
    [{ maxTargets: 4096 }, 'maxTargets'],
    [{ managementAddress: 'not a host!' }, 'managementAddress'],
    [{ streamingAddresses: ['192.0.2.300'] }, 'streamingAddresses.0'],
  ])('refuses %j, naming the field', async (bad, field) => {
    expectError(await farm.api('POST', '/v1/appliances', { body: { siteId, name: fx.name('app'), managementAddress: '192.0.2.10', ...bad } }), 400, 'validation_failed', field);
  });

  it("refuses to delete the appliance a vDisk is fixed to, and deletes it once the vDisk balances again", async () => {
    const app = await fx.appliance(siteId);
    const store = await fx.store();
    const vdisk = await fx.vdisk(store.id, { loadBalancing: { mode: 'fixed', applianceId: app.id } });
    const res = await farm.api('DELETE', `/v1/appliances/${app.id}`);
    expectError(res, 409, 'in_use');
    expect(res.body.error.message).toMatch(/1 vDisk/);
    expectStatus(await fx.patch(`/v1/vdisks/${vdisk.id}`, { loadBalancing: { mode: 'algorithm', applianceId: null } }), 200);
    expect((await farm.api('DELETE', `/v1/appliances/${app.id}`)).status).toBe(204);
  });

  it('refuses to fix a vDisk to an appliance that does not exist, naming loadBalancing.applianceId', async () => {
    const store = await fx.store();
    expectError(
      await farm.api('POST', '/v1/vdisks', { body: { storeId: store.id, name: fx.name('vd'), sizeBytes: 1 << 30, loadBalancing: { mode: 'fixed', applianceId: 'app_aaaaaaaaaaaaaaaa' } } }),
      400,
      'validation_failed',
      'loadBalancing.applianceId',
    );
  });
});
