import { beforeAll, describe, expect, it } from 'vitest';
import { expectError, expectStatus, fixtures, type Fixtures } from '../support/fixtures.js';
import { testFarm, type TestFarm } from '../support/farm.js';

/** A clock the tests move; every reading is 1 ms later, so records are strictly ordered. */
let now = Date.parse('2030-01-01T00:00:00.000Z');
const clock = () => new Date(now++);
const day = (d: number) => Date.parse(`2030-01-0${d}T00:00:00.000Z`);

let farm: TestFarm;
let fx: Fixtures;
let siteA: any;
let siteB: any;
let alice: string;
let aliceId: string;
beforeAll(async () => {
  farm = await testFarm({ clock });
  fx = fixtures(farm);
  siteA = await fx.site();
  siteB = await fx.site();
  alice = await farm.token({ role: 'site-admin', siteId: siteA.id, name: 'alice' });
  aliceId = alice.slice(4, 20);
});

const records = async (query: string, token?: string) => (await fx.listAll(`/v1/audit?${query}`, { token })).items;
const of = (kind: string, id: string) => records(`objectType=${kind}&objectId=${encodeURIComponent(id)}`);

describe('/v1/audit', () => {
  it('records a create with every property as new, nested ones dotted, and the actor', async () => {
    const site = await fx.site({ bootstrap: { verbose: true } });
    const [rec, ...more] = await of('site', site.id);
    expect(more).toEqual([]);
    expect(rec).toMatchObject({ objectType: 'site', objectId: site.id, siteId: site.id, action: 'create', actor: { name: 'admin', role: 'farm-admin', tokenId: expect.any(String) } });
    expect(rec.at).toBe(site.createdAt);
    expect(rec.changes).toEqual(
      expect.arrayContaining([
        { property: 'name', old: null, new: site.name },
        { property: 'bootstrap.verbose', old: null, new: true },
        { property: 'bootstrap.pollingTimeoutMs', old: null, new: 5000 },
        { property: 'bootstrap.networkRecovery.action', old: null, new: 'restore-connection' },
      ]),
    );
    expect(rec.changes.map((c: any) => c.property)).not.toContain('version');
  });

  it('records only the changed properties of an update, with old and new values', async () => {
    const site = await fx.site();
    expectStatus(await fx.patch(`/v1/sites/${site.id}`, { bootstrap: { verbose: true, pollingTimeoutMs: 5000 }, description: 'lab' }), 200);
    const [update, create] = await of('site', site.id);
    expect(create.action).toBe('create');
    expect(update).toMatchObject({ action: 'update', objectId: site.id });
    expect(update.changes).toEqual([
      { property: 'bootstrap.verbose', old: false, new: true },
      { property: 'description', old: '', new: 'lab' },
    ]);
  });

  it('records a delete with every old value and new null', async () => {
    const store = await fx.store();
    expect((await farm.api('DELETE', `/v1/stores/${store.id}`)).status).toBe(204);
    const [del] = await of('store', store.id);
    expect(del).toMatchObject({ action: 'delete', objectType: 'store', siteId: null });
    expect(del.changes).toEqual(expect.arrayContaining([{ property: 'name', old: store.name, new: null }, { property: 's3Prefix', old: store.s3Prefix, new: null }]));
    expect(del.changes.every((c: any) => c.new === null)).toBe(true);
  });

  it("records a target's site, and a version's object id", async () => {
    const col = await fx.collection(siteA.id);
    const t = await fx.target(col.id);
    expect((await of('target', t.mac))[0]).toMatchObject({ siteId: siteA.id, objectId: t.mac });
    const vd = await fx.vdisk((await fx.store()).id);
    await fx.version(vd.id);
    expect((await of('version', `${vd.id}.0`))[0]).toMatchObject({ action: 'create', siteId: null, changes: expect.arrayContaining([{ property: 'state', old: null, new: 'maintenance' }]) });
  });

  it('records token creation and revocation without the secret', async () => {
    const created = expectStatus(await farm.api('POST', '/v1/tokens', { body: { name: 'bob', role: 'read-only' } }), 201);
    expect((await farm.api('DELETE', `/v1/tokens/${created.id}`)).status).toBe(204);
    const recs = await of('token', created.id);
    expect(recs.map((r) => r.action)).toEqual(['delete', 'create']);
    expect(JSON.stringify(recs)).not.toContain(created.token.slice(-43));
  });

  it('filters by actor name or token id', async () => {
    const col = expectStatus(await farm.api('POST', '/v1/collections', { token: alice, body: { siteId: siteA.id, name: fx.name('col') } }), 201);
    expectStatus(await fx.patch(`/v1/collections/${col.id}`, { description: 'by alice' }, { token: alice }), 200);
    await fx.collection(siteA.id);
    for (const actor of ['alice', aliceId]) {
      const recs = await records(`actor=${actor}`);
      expect(recs.map((r) => [r.action, r.objectId])).toEqual([
        ['update', col.id],
        ['create', col.id],
      ]);
      expect(recs.every((r) => r.actor.name === 'alice' && r.actor.role === 'site-admin' && r.actor.tokenId === aliceId)).toBe(true);
    }
  });

  it('filters by objectType alone', async () => {
    const app = await fx.appliance(siteA.id);
    const recs = await records('objectType=appliance');
    expect(recs.length).toBeGreaterThan(0);
    expect(recs.every((r) => r.objectType === 'appliance')).toBe(true);
    expect(recs.map((r) => r.objectId)).toContain(app.id);
  });

  it('filters by time with from and to, inclusive, newest first', async () => {
    now = day(2);
    const early = await fx.store();
    now = day(3);
    const middle = await fx.store();
    now = day(4);
    const late = await fx.store();
    const inRange = await records(`objectType=store&from=${new Date(day(3)).toISOString()}&to=${new Date(day(4) - 1).toISOString()}`);
    expect(inRange.map((r) => r.objectId)).toEqual([middle.id]);
    const from = await records(`objectType=store&from=${encodeURIComponent('2030-01-03T01:00:00+01:00')}`);
    expect(from.map((r) => r.objectId)).toEqual([late.id, middle.id]);
    const to = await records(`objectType=store&to=${new Date(day(2) + 999).toISOString()}`);
    expect(to.map((r) => r.objectId)).toContain(early.id);
    expect(to.map((r) => r.objectId)).not.toContain(middle.id);
    const one = await records(`objectType=store&objectId=${middle.id}&from=${new Date(day(3)).toISOString()}&to=${middle.createdAt}`);
    expect(one).toHaveLength(1);
    const all = await records('');
    const times = all.map((r) => r.at);
    expect(times).toEqual([...times].sort().reverse());
  });

  it('pages through the trail with limit and nextCursor', async () => {
    const first = expectStatus(await farm.api('GET', '/v1/audit?limit=2'), 200);
    expect(first.items).toHaveLength(2);
    expect(first.nextCursor).toEqual(expect.any(String));
    const { items, pages } = await fx.listAll('/v1/audit', { limit: 3 });
    expect(pages).toBeGreaterThan(1);
    expect(new Set(items.map((r) => r.id)).size).toBe(items.length);
    expect(items.length).toBe((await records('')).length);
  });

  it("shows a site-scoped token only its own site's records", async () => {
    const appA = await fx.appliance(siteA.id);
    const appB = await fx.appliance(siteB.id);
    const readerA = await farm.token({ role: 'read-only', siteId: siteA.id });
    for (const token of [alice, readerA]) {
      const recs = await records('', token);
      expect(recs.length).toBeGreaterThan(0);
      expect(recs.every((r) => r.siteId === siteA.id)).toBe(true);
      expect(recs.map((r) => r.objectId)).toContain(appA.id);
      expect(await records(`objectType=appliance&objectId=${appB.id}`, token)).toEqual([]);
    }
    const everyone = await records('', await farm.token({ role: 'read-only' }));
    expect(everyone.map((r) => r.objectId)).toEqual(expect.arrayContaining([appA.id, appB.id]));
  });

  it.each([
    ['objectId=x', 'objectType'],
    ['objectType=nope', 'objectType'],
    ['from=yesterday', 'from'],
    ['to=2030-13-01T00:00:00Z', 'to'],
    ['limit=1001', 'limit'],
  ])('refuses ?%s, naming the field', async (q, field) => {
    expectError(await farm.api('GET', `/v1/audit?${q}`), 400, 'validation_failed', field);
  });

  it('refuses a cursor from another listing', async () => {
    const sites = expectStatus(await farm.api('GET', '/v1/sites?limit=1'), 200);
    expectError(await farm.api('GET', `/v1/audit?cursor=${sites.nextCursor}`), 400, 'bad_request', 'cursor');
  });
});

describe('farm auditing switch', () => {
  it('records turning auditing off, nothing while it is off, and turning it back on', async () => {
    const f = await testFarm();
    const ffx = fixtures(f);
    expectStatus(await ffx.patch('/v1/farm', { auditing: false }), 200);
    const off = (await ffx.listAll('/v1/audit?objectType=farm&objectId=farm')).items;
    expect(off).toHaveLength(1);
    expect(off[0]).toMatchObject({ action: 'update', objectType: 'farm', objectId: 'farm', actor: { name: 'admin' }, changes: [{ property: 'auditing', old: true, new: false }] });

    const before = (await ffx.listAll('/v1/audit')).items;
    const site = await ffx.site();
    expectStatus(await ffx.patch(`/v1/sites/${site.id}`, { description: 'unaudited' }), 200);
    const col = await ffx.collection(site.id);
    expect((await f.api('DELETE', `/v1/collections/${col.id}`)).status).toBe(204);
    const tok = expectStatus(await f.api('POST', '/v1/tokens', { body: { name: 'quiet', role: 'read-only' } }), 201);
    expect((await f.api('DELETE', `/v1/tokens/${tok.id}`)).status).toBe(204);
    expectStatus(await ffx.patch('/v1/farm', { maxVersions: 10 }), 200);
    expect((await ffx.listAll('/v1/audit')).items).toEqual(before);

    expectStatus(await ffx.patch('/v1/farm', { auditing: true }), 200);
    const farmRecs = (await ffx.listAll('/v1/audit?objectType=farm')).items;
    expect(farmRecs.map((r) => r.changes)).toEqual([[{ property: 'auditing', old: false, new: true }], [{ property: 'auditing', old: true, new: false }]]);
    await ffx.site();
    expect((await ffx.listAll('/v1/audit')).items).toHaveLength(before.length + 2);
  });
});
