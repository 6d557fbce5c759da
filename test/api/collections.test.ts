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

describe('/v1/collections', () => {
  it('creates a collection with PVS auto-add naming defaults', async () => {
    const res = await farm.api('POST', '/v1/collections', { body: { siteId, name: 'Lab' } });
    const col = expectStatus(res, 201);
    expect(col.id).toMatch(/^col_[a-z2-7]{16}$/);
    expect(res.headers.get('location')).toBe(`/v1/collections/${col.id}`);
    expect(res.headers.get('etag')).toBe('"1"');
    expect(res.headers.get('x-farm-revision')).toMatch(/^\d+$/);
    expect(col).toMatchObject({ siteId, name: 'Lab', templateTargetMac: null, autoAdd: { prefix: 'target-', numberLength: 4, suffix: '', startNumber: 1 } });
  });

  it('gets, updates with If-Match and deletes a collection', async () => {
    const col = await fx.collection(siteId);
    expect(expectStatus(await farm.api('GET', `/v1/collections/${col.id}`), 200)).toEqual(col);
    const res = await farm.api('PATCH', `/v1/collections/${col.id}`, { body: { autoAdd: { prefix: 'pc-' } }, headers: { 'if-match': '"1"' } });
    expect(expectStatus(res, 200).autoAdd).toEqual({ prefix: 'pc-', numberLength: 4, suffix: '', startNumber: 1 });
    expect((await farm.api('DELETE', `/v1/collections/${col.id}`)).status).toBe(204);
    expectError(await farm.api('GET', `/v1/collections/${col.id}`), 404, 'not_found');
  });

  it('lists the collections of one site with ?siteId across pages, sorted by name', async () => {
    const site = await fx.site();
    for (const name of ['c-e', 'c-a', 'c-d', 'c-c', 'c-b']) await fx.collection(site.id, { name });
    await fx.collection(siteId);
    const { items, pages } = await fx.listAll(`/v1/collections?siteId=${site.id}`, { limit: 2 });
    expect(pages).toBeGreaterThanOrEqual(3);
    expect(items.map((c) => c.name)).toEqual(['c-a', 'c-b', 'c-c', 'c-d', 'c-e']);
  });

  it('refuses a second collection of the same name in one site, and allows it in another site', async () => {
    await fx.collection(siteId, { name: 'Office' });
    expectError(await farm.api('POST', '/v1/collections', { body: { siteId, name: 'OFFICE' } }), 409, 'already_exists', 'name');
    const other = await fx.site();
    await fx.collection(other.id, { name: 'Office' });
  });

  it('refuses a site that does not exist, naming siteId', async () => {
    expectError(await farm.api('POST', '/v1/collections', { body: { siteId: 'site_aaaaaaaaaaaaaaaa', name: fx.name('col') } }), 400, 'validation_failed', 'siteId');
  });

  it.each([
    [{ autoAdd: { prefix: 'abcdefghij', numberLength: 6 } }, 'autoAdd'],
    [{ autoAdd: { prefix: '' } }, 'autoAdd.prefix'],
    [{ autoAdd: { prefix: 'pc1' } }, 'autoAdd.prefix'],
    [{ autoAdd: { numberLength: 10 } }, 'autoAdd.numberLength'],
    [{ name: 'x'.repeat(51) }, 'name'],
    [{ templateTargetMac: 'zz' }, 'templateTargetMac'],
  ])('refuses %j, naming the field', async (bad, field) => {
    expectError(await farm.api('POST', '/v1/collections', { body: { siteId, name: fx.name('col'), ...bad } }), 400, 'validation_failed', field);
  });

  it('refuses a template target that does not exist or belongs to another site', async () => {
    expectError(await farm.api('POST', '/v1/collections', { body: { siteId, name: fx.name('col'), templateTargetMac: '52:54:00:ff:ff:ff' } }), 400, 'validation_failed', 'templateTargetMac');
    const other = await fx.site();
    const foreign = await fx.target((await fx.collection(other.id)).id);
    expectError(await farm.api('POST', '/v1/collections', { body: { siteId, name: fx.name('col'), templateTargetMac: foreign.mac } }), 400, 'validation_failed', 'templateTargetMac');
  });

  it('refuses to delete a target used as template until the collection lets it go', async () => {
    const col = await fx.collection(siteId);
    const template = await fx.target(col.id);
    expectStatus(await fx.patch(`/v1/collections/${col.id}`, { templateTargetMac: template.mac.toUpperCase().replace(/:/g, '-') }), 200);
    expectError(await farm.api('DELETE', `/v1/targets/${template.mac}`), 409, 'in_use');
    expectStatus(await fx.patch(`/v1/collections/${col.id}`, { templateTargetMac: null }), 200);
    expect((await farm.api('DELETE', `/v1/targets/${template.mac}`)).status).toBe(204);
  });

  it('refuses to delete a collection that still has targets, and deletes it once they are gone', async () => {
    const col = await fx.collection(siteId);
    const a = await fx.target(col.id);
    const b = await fx.target(col.id);
    const res = await farm.api('DELETE', `/v1/collections/${col.id}`);
    expectError(res, 409, 'in_use');
    expect(res.body.error.message).toMatch(/2 targets/);
    expect((await farm.api('DELETE', `/v1/targets/${a.mac}`)).status).toBe(204);
    expectError(await farm.api('DELETE', `/v1/collections/${col.id}`), 409, 'in_use');
    expect((await farm.api('DELETE', `/v1/targets/${b.mac}`)).status).toBe(204);
    expect((await farm.api('DELETE', `/v1/collections/${col.id}`)).status).toBe(204);
  });

  it("refuses to delete its site's default collection, and deletes it once the site lets it go", async () => {
    const site = await fx.site();
    const col = await fx.collection(site.id);
    expectStatus(await fx.patch(`/v1/sites/${site.id}`, { defaultCollectionId: col.id }), 200);
    const res = await farm.api('DELETE', `/v1/collections/${col.id}`);
    expectError(res, 409, 'in_use');
    expect(res.body.error.message).toMatch(/default collection/);
    expectStatus(await fx.patch(`/v1/sites/${site.id}`, { defaultCollectionId: null }), 200);
    expect((await farm.api('DELETE', `/v1/collections/${col.id}`)).status).toBe(204);
  });

  it('refuses to move a collection to another site', async () => {
    const col = await fx.collection(siteId);
    const other = await fx.site();
    expectError(await fx.patch(`/v1/collections/${col.id}`, { siteId: other.id }), 400, 'validation_failed', 'siteId');
  });
});
