import { beforeAll, describe, expect, it } from 'vitest';
import { expectError, expectStatus, fixtures, type Fixtures } from '../support/fixtures.js';
import { testFarm, type TestFarm } from '../support/farm.js';

let farm: TestFarm;
let fx: Fixtures;
beforeAll(async () => {
  farm = await testFarm();
  fx = fixtures(farm);
});

describe('/v1/sites', () => {
  it('creates a site with PVS bootstrap defaults, answering 201 with Location, ETag and X-Farm-Revision', async () => {
    const before = (await farm.api('GET', '/v1/farm')).body.revision;
    const res = await farm.api('POST', '/v1/sites', { body: { name: 'Berlin', bootstrap: { servers: [{ address: '192.0.2.1' }] } } });
    const site = expectStatus(res, 201);
    expect(site.id).toMatch(/^site_[a-z2-7]{16}$/);
    expect(res.headers.get('location')).toBe(`/v1/sites/${site.id}`);
    expect(res.headers.get('etag')).toBe('"1"');
    expect(Number(res.headers.get('x-farm-revision'))).toBe(before + 1);
    expect(site).toMatchObject({
      name: 'Berlin',
      version: 1,
      description: '',
      bootstrap: { servers: [{ address: '192.0.2.1', port: 80 }], pollingTimeoutMs: 5000, generalTimeoutMs: 5000, verbose: false, networkRecovery: { action: 'restore-connection', rebootDelaySeconds: 50 } },
      rebalance: { enabled: false, triggerPercent: 25 },
      proxyDhcp: { enabled: false },
      defaultCollectionId: null,
    });
    expect(site.createdAt).toBe(site.updatedAt);
  });

  it('gets a site by id with its ETag, and 404 for an unknown id', async () => {
    const site = await fx.site();
    const res = await farm.api('GET', `/v1/sites/${site.id}`);
    expect(expectStatus(res, 200)).toEqual(site);
    expect(res.headers.get('etag')).toBe('"1"');
    expectError(await farm.api('GET', '/v1/sites/site_aaaaaaaaaaaaaaaa'), 404, 'not_found');
  });

  it('updates a site with a merge patch and If-Match, keeping the fields the patch does not name', async () => {
    const site = await fx.site({ bootstrap: { servers: [{ address: '192.0.2.1' }], generalTimeoutMs: 7000 } });
    const res = await farm.api('PATCH', `/v1/sites/${site.id}`, { body: { bootstrap: { verbose: true } }, headers: { 'if-match': '"1"' } });
    const updated = expectStatus(res, 200);
    expect(res.headers.get('etag')).toBe('"2"');
    expect(res.headers.get('x-farm-revision')).toMatch(/^\d+$/);
    expect(updated.version).toBe(2);
    expect(updated.bootstrap).toMatchObject({ verbose: true, generalTimeoutMs: 7000, servers: [{ address: '192.0.2.1', port: 80 }] });
    expect(updated.createdAt).toBe(site.createdAt);
    expect(expectStatus(await farm.api('GET', `/v1/sites/${site.id}`), 200)).toEqual(updated);
  });

  it('accepts the RFC 7396 media type application/merge-patch+json and If-Match: *', async () => {
    const site = await fx.site();
    const res = await farm.api('PATCH', `/v1/sites/${site.id}`, { body: { description: 'lab' }, headers: { 'content-type': 'application/merge-patch+json', 'if-match': '*' } });
    expect(expectStatus(res, 200).description).toBe('lab');
  });

  it('deletes a site with 204 and then answers 404 for it', async () => {
    const site = await fx.site();
    const res = await farm.api('DELETE', `/v1/sites/${site.id}`);
    expect(res.status).toBe(204);
    expect(res.headers.get('x-farm-revision')).toMatch(/^\d+$/);
    expectError(await farm.api('GET', `/v1/sites/${site.id}`), 404, 'not_found');
    expectError(await farm.api('DELETE', `/v1/sites/${site.id}`), 404, 'not_found');
  });

  it('lists every site exactly once across pages of ?limit, in the same order as one big page', async () => {
    const names = ['pg-e', 'pg-a', 'pg-d', 'pg-c', 'pg-b'];
    for (const name of names) await fx.site({ name });
    const first = expectStatus(await farm.api('GET', '/v1/sites?limit=2'), 200);
    expect(first.items).toHaveLength(2);
    expect(first.nextCursor).toEqual(expect.any(String));
    const { items, pages } = await fx.listAll('/v1/sites', { limit: 2 });
    const all = expectStatus(await farm.api('GET', '/v1/sites'), 200);
    expect(all.nextCursor).toBeNull();
    expect(items.map((s) => s.id)).toEqual(all.items.map((s: any) => s.id));
    expect(new Set(items.map((s) => s.id)).size).toBe(items.length);
    expect(pages).toBeGreaterThanOrEqual(Math.ceil(items.length / 2));
    expect(items.map((s) => s.name).filter((n: string) => n.startsWith('pg-')).sort()).toEqual([...names].sort());
  });

  it('refuses a second site with the same name in any letter case, and frees the name on delete', async () => {
    const site = await fx.site({ name: 'Munich' });
    expectError(await farm.api('POST', '/v1/sites', { body: { name: 'MUNICH' } }), 409, 'already_exists', 'name');
    const other = await fx.site();
    expectError(await fx.patch(`/v1/sites/${other.id}`, { name: 'munich' }), 409, 'already_exists', 'name');
    expect((await farm.api('DELETE', `/v1/sites/${site.id}`)).status).toBe(204);
    await fx.site({ name: 'munich' });
  });

  it('refuses to delete a site that still has appliances, and deletes it once they are gone', async () => {
    const site = await fx.site();
    const app = await fx.appliance(site.id);
    const res = await farm.api('DELETE', `/v1/sites/${site.id}`);
    expectError(res, 409, 'in_use');
    expect(res.body.error.message).toMatch(/1 appliance/);
    expect((await farm.api('DELETE', `/v1/appliances/${app.id}`)).status).toBe(204);
    expect((await farm.api('DELETE', `/v1/sites/${site.id}`)).status).toBe(204);
  });

  it('refuses to delete a site that a site-scoped token still names, and deletes it once the token is revoked', async () => {
    const site = await fx.site();
    const tok = expectStatus(await farm.api('POST', '/v1/tokens', { body: { name: 'branch-admin', role: 'site-admin', siteId: site.id } }), 201);
    const res = await farm.api('DELETE', `/v1/sites/${site.id}`);
    expectError(res, 409, 'in_use');
    expect(res.body.error.message).toContain('1 token');
    expect((await farm.api('DELETE', `/v1/tokens/${tok.id}`)).status).toBe(204);
    expect((await farm.api('DELETE', `/v1/sites/${site.id}`)).status).toBe(204);
  });

  it('refuses to delete a site that still has collections, and deletes it once they are gone', async () => {
    const site = await fx.site();
    const col = await fx.collection(site.id);
    expectError(await farm.api('DELETE', `/v1/sites/${site.id}`), 409, 'in_use');
    expect((await farm.api('DELETE', `/v1/collections/${col.id}`)).status).toBe(204);
    expect((await farm.api('DELETE', `/v1/sites/${site.id}`)).status).toBe(204);
  });

  it('refuses to delete the site farm auto-add uses, and deletes it once auto-add points elsewhere', async () => {
    const site = await fx.site();
    expectStatus(await fx.patch('/v1/farm', { autoAdd: { enabled: true, siteId: site.id } }), 200);
    const res = await farm.api('DELETE', `/v1/sites/${site.id}`);
    expectError(res, 409, 'in_use');
    expect(res.body.error.message).toMatch(/auto-add/);
    expectStatus(await fx.patch('/v1/farm', { autoAdd: { enabled: false, siteId: null } }), 200);
    expect((await farm.api('DELETE', `/v1/sites/${site.id}`)).status).toBe(204);
  });

  it('takes a collection of its own as default collection', async () => {
    const site = await fx.site();
    const col = await fx.collection(site.id);
    expect(expectStatus(await fx.patch(`/v1/sites/${site.id}`, { defaultCollectionId: col.id }), 200).defaultCollectionId).toBe(col.id);
  });

  it("refuses another site's collection as default collection, naming defaultCollectionId", async () => {
    const site = await fx.site();
    const other = await fx.site();
    const foreign = await fx.collection(other.id);
    expectError(await fx.patch(`/v1/sites/${site.id}`, { defaultCollectionId: foreign.id }), 400, 'validation_failed', 'defaultCollectionId');
    expectError(await farm.api('POST', '/v1/sites', { body: { name: fx.name('site'), defaultCollectionId: foreign.id } }), 400, 'validation_failed', 'defaultCollectionId');
  });

  it('refuses a default collection that does not exist, naming defaultCollectionId', async () => {
    const site = await fx.site();
    expectError(await fx.patch(`/v1/sites/${site.id}`, { defaultCollectionId: 'col_aaaaaaaaaaaaaaaa' }), 400, 'validation_failed', 'defaultCollectionId');
  });
});
