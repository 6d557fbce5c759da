import { beforeAll, describe, expect, it } from 'vitest';
import { expectError, expectStatus, fixtures, type Fixtures } from '../support/fixtures.js';
import { SYSTEM, testFarm, type TestFarm } from '../support/farm.js';

let farm: TestFarm;
let fx: Fixtures;
beforeAll(async () => {
  farm = await testFarm();
  fx = fixtures(farm);
});

const unauthenticated = (res: { status: number; headers: Headers; body: any }) => {
  expectError(res, 401, 'unauthenticated');
  expect(res.headers.get('www-authenticate')).toBe('Bearer realm="bootfarm"');
};

describe('authentication', () => {
  it('answers 401 without an Authorization header', async () => {
    unauthenticated(await farm.api('GET', '/v1/sites', { token: null }));
    unauthenticated(await farm.api('POST', '/v1/sites', { token: null, body: { name: 'x' } }));
  });

  it('answers 401 for a header that is not "Bearer <token>"', async () => {
    unauthenticated(await farm.api('GET', '/v1/sites', { token: null, headers: { authorization: `Basic ${farm.adminToken}` } }));
    unauthenticated(await farm.api('GET', '/v1/sites', { token: null, headers: { authorization: 'Bearer' } }));
  });

  it('answers 401 for a malformed token, an unknown token and a wrong secret', async () => {
    unauthenticated(await farm.api('GET', '/v1/sites', { token: 'nonsense' }));
    unauthenticated(await farm.api('GET', '/v1/sites', { token: `bft_aaaaaaaaaaaaaaaa_${'A'.repeat(43)}` }));
    const [, id] = /^bft_([a-z2-7]{16})_/.exec(farm.adminToken)!;
    unauthenticated(await farm.api('GET', '/v1/sites', { token: `bft_${id}_${'A'.repeat(43)}` }));
  });

  it('answers 401 for an expired token and accepts one that expires later', async () => {
    const past = await farm.repo.createToken({ name: 'expired', role: 'farm-admin', siteId: null, expiresAt: '2020-01-01T00:00:00Z' }, SYSTEM);
    unauthenticated(await farm.api('GET', '/v1/sites', { token: past.secret }));
    const future = await farm.repo.createToken({ name: 'valid', role: 'farm-admin', siteId: null, expiresAt: '2999-01-01T00:00:00Z' }, SYSTEM);
    expectStatus(await farm.api('GET', '/v1/sites', { token: future.secret }), 200);
  });

  it('expires a token at the moment expiresAt passes on the injected clock', async () => {
    let now = new Date('2030-01-01T00:00:00Z');
    const f = await testFarm({ clock: () => now });
    const { secret } = await f.repo.createToken({ name: 'short', role: 'read-only', siteId: null, expiresAt: '2030-01-01T01:00:00Z' }, SYSTEM);
    expectStatus(await f.api('GET', '/v1/farm', { token: secret }), 200);
    now = new Date('2030-01-01T01:00:00Z');
    unauthenticated(await f.api('GET', '/v1/farm', { token: secret }));
  });

  it('serves the OpenAPI document and /health without a token', async () => {
    expect(expectStatus(await farm.api('GET', '/v1/openapi.json', { token: null }), 200).openapi).toBe('3.1.0');
    expectStatus(await farm.api('GET', '/health', { token: null }), 200);
  });
});

describe('/v1/tokens', () => {
  it('creates a token and shows its secret once, with Cache-Control: no-store', async () => {
    const res = await farm.api('POST', '/v1/tokens', { body: { name: 'ci bot', role: 'read-only' } });
    const created = expectStatus(res, 201);
    expect(res.headers.get('cache-control')).toBe('no-store');
    expect(created).toMatchObject({ name: 'ci bot', role: 'read-only', siteId: null, expiresAt: null, createdBy: 'admin' });
    expect(created.token).toMatch(new RegExp(`^bft_${created.id}_[A-Za-z0-9_-]{43}$`));
    expectStatus(await farm.api('GET', '/v1/sites', { token: created.token }), 200);
  });

  it('lists tokens across pages without secrets or hashes', async () => {
    const secrets: string[] = [];
    for (let i = 0; i < 3; i++) secrets.push(expectStatus(await farm.api('POST', '/v1/tokens', { body: { name: fx.name('tok'), role: 'read-only' } }), 201).token);
    const { items, pages } = await fx.listAll('/v1/tokens', { limit: 2 });
    expect(pages).toBeGreaterThanOrEqual(2);
    expect(items.length).toBeGreaterThanOrEqual(4);
    for (const t of items) expect(Object.keys(t).sort()).toEqual(['createdAt', 'createdBy', 'expiresAt', 'id', 'name', 'role', 'siteId']);
    const text = JSON.stringify(items);
    for (const s of [...secrets, farm.adminToken]) expect(text).not.toContain(s.slice(-43));
    const ids = secrets.map((s) => s.slice(4, 20));
    expect(items.map((t) => t.id)).toEqual(expect.arrayContaining(ids));
  });

  it('revokes a token: it then gets 401, and revoking it again is 404', async () => {
    const created = expectStatus(await farm.api('POST', '/v1/tokens', { body: { name: fx.name('tok'), role: 'farm-admin' } }), 201);
    expectStatus(await farm.api('GET', '/v1/farm', { token: created.token }), 200);
    expect((await farm.api('DELETE', `/v1/tokens/${created.id}`)).status).toBe(204);
    unauthenticated(await farm.api('GET', '/v1/farm', { token: created.token }));
    expectError(await farm.api('DELETE', `/v1/tokens/${created.id}`), 404, 'not_found');
    const listed = (await fx.listAll('/v1/tokens')).items.map((t) => t.id);
    expect(listed).not.toContain(created.id);
  });

  it('lets a token revoke itself, after which it is refused', async () => {
    const created = expectStatus(await farm.api('POST', '/v1/tokens', { body: { name: fx.name('tok'), role: 'farm-admin' } }), 201);
    expect((await farm.api('DELETE', `/v1/tokens/${created.id}`, { token: created.token })).status).toBe(204);
    unauthenticated(await farm.api('GET', '/v1/tokens', { token: created.token }));
  });

  it('creates site-scoped tokens that are limited to their site', async () => {
    const site = await fx.site();
    const created = expectStatus(await farm.api('POST', '/v1/tokens', { body: { name: fx.name('tok'), role: 'site-admin', siteId: site.id } }), 201);
    expect(created.siteId).toBe(site.id);
    const other = await fx.site();
    expectError(await farm.api('GET', `/v1/sites/${other.id}`, { token: created.token }), 403, 'forbidden');
    expectStatus(await farm.api('GET', `/v1/sites/${site.id}`, { token: created.token }), 200);
  });

  it.each([
    [{ role: 'site-admin' }, 'siteId'],
    [{ role: 'farm-admin', siteId: 'site_aaaaaaaaaaaaaaaa' }, 'siteId'],
    [{ role: 'read-only', siteId: 'site_aaaaaaaaaaaaaaaa' }, 'siteId'],
    [{ role: 'root' }, 'role'],
    [{ role: 'read-only', expiresAt: 'tomorrow' }, 'expiresAt'],
    [{ role: 'read-only', name: '' }, 'name'],
    [{ role: 'read-only', secret: 'x' }, 'secret'],
  ])('refuses %j, naming the field', async (bad, field) => {
    expectError(await farm.api('POST', '/v1/tokens', { body: { name: fx.name('tok'), ...bad } }), 400, 'validation_failed', field);
  });

  it('answers 400 for a malformed token id', async () => {
    expectError(await farm.api('DELETE', '/v1/tokens/NOT-AN-ID'), 400, 'validation_failed', 'id');
  });
});
