import { beforeAll, describe, expect, it } from 'vitest';
import { expectError, expectStatus, fixtures, macOf, type Fixtures } from '../support/fixtures.js';
import { testFarm, type TestFarm } from '../support/farm.js';

let farm: TestFarm;
let fx: Fixtures;
let siteId: string;
let collectionId: string;
let vdiskId: string;
beforeAll(async () => {
  farm = await testFarm();
  fx = fixtures(farm);
  siteId = (await fx.site()).id;
  collectionId = (await fx.collection(siteId)).id;
  vdiskId = (await fx.vdisk((await fx.store()).id)).id;
  await fx.target(collectionId, { mac: '52:54:00:aa:00:02' });
  await fx.target(collectionId, { mac: '52:54:00:aa:00:10' });
});

describe('/v1/targets', () => {
  it('creates a target keyed by its MAC in canonical form, with its site taken from the collection', async () => {
    const res = await farm.api('POST', '/v1/targets', { body: { mac: '52-54-00-AA-00-01', name: 'PC-0001', collectionId, assignments: [{ vdiskId }] } });
    const t = expectStatus(res, 201);
    expect(t.id).toBe('52:54:00:aa:00:01');
    expect(t.mac).toBe('52:54:00:aa:00:01');
    expect(res.headers.get('location')).toBe('/v1/targets/52%3A54%3A00%3Aaa%3A00%3A01');
    expect(res.headers.get('etag')).toBe('"1"');
    expect(res.headers.get('x-farm-revision')).toMatch(/^\d+$/);
    expect(t).toMatchObject({ siteId, collectionId, type: 'production', bootFrom: 'vdisk', disabled: false, writeCacheSizeMb: 0, personality: [], lastBoot: null });
  });

  it.each(['52:54:00:aa:00:02', '52-54-00-AA-00-02', '5254.00aa.0002', '525400AA0002'])('gets a target by its MAC spelled %s', async (spelling) => {
    const res = await farm.api('GET', `/v1/targets/${encodeURIComponent(spelling)}`);
    expect(expectStatus(res, 200).mac).toBe('52:54:00:aa:00:02');
    expect(res.headers.get('etag')).toMatch(/^"\d+"$/);
  });

  it('updates a target with If-Match and deletes it', async () => {
    const t = await fx.target(collectionId);
    const res = await farm.api('PATCH', `/v1/targets/${t.mac}`, { body: { disabled: true, personality: [{ name: 'role', value: 'kiosk' }] }, headers: { 'if-match': '"1"' } });
    expect(expectStatus(res, 200)).toMatchObject({ disabled: true, personality: [{ name: 'role', value: 'kiosk' }], version: 2 });
    expect((await farm.api('DELETE', `/v1/targets/${t.mac.toUpperCase()}`)).status).toBe(204);
    expectError(await farm.api('GET', `/v1/targets/${t.mac}`), 404, 'not_found');
  });

  it('lists targets by ?collectionId and by ?siteId across pages', async () => {
    const site = await fx.site();
    const colA = await fx.collection(site.id);
    const colB = await fx.collection(site.id);
    const inA = [];
    for (let i = 0; i < 3; i++) inA.push((await fx.target(colA.id)).mac);
    const inB = [(await fx.target(colB.id)).mac, (await fx.target(colB.id)).mac];
    const a = await fx.listAll(`/v1/targets?collectionId=${colA.id}`, { limit: 2 });
    expect(a.pages).toBeGreaterThanOrEqual(2);
    expect(a.items.map((t) => t.mac).sort()).toEqual(inA.sort());
    const s = await fx.listAll(`/v1/targets?siteId=${site.id}`, { limit: 2 });
    expect(s.pages).toBeGreaterThanOrEqual(3);
    expect(s.items.map((t) => t.mac).sort()).toEqual([...inA, ...inB].sort());
    const all = await fx.listAll('/v1/targets', { limit: 3 });
    expect(all.items.map((t) => t.mac)).toEqual(expect.arrayContaining([...inA, ...inB]));
  });

  it('refuses two filters at once', async () => {
    expectError(await farm.api('GET', `/v1/targets?siteId=${siteId}&collectionId=${collectionId}`), 400, 'bad_request');
  });

  it('answers 400 naming collectionId when filtering by a collection that does not exist', async () => {
    expectError(await farm.api('GET', '/v1/targets?collectionId=col_aaaaaaaaaaaaaaaa'), 400, 'validation_failed', 'collectionId');
  });

  it.each(['52:54:00:aa:00:10', '52-54-00-AA-00-10', '5254.00aa.0010', '525400aa0010'])('refuses a duplicate MAC spelled %s', async (spelling) => {
    expectError(await farm.api('POST', '/v1/targets', { body: { mac: spelling, name: fx.name('t'), collectionId } }), 409, 'already_exists', 'mac');
  });

  it('refuses a duplicate target name in any letter case, also in another collection', async () => {
    await fx.target(collectionId, { name: 'kiosk-1' });
    const other = await fx.collection(siteId);
    expectError(await farm.api('POST', '/v1/targets', { body: { mac: fx.nextMac(), name: 'KIOSK-1', collectionId: other.id } }), 409, 'already_exists', 'name');
  });

  it('frees the old name on rename and takes the new one', async () => {
    const t = await fx.target(collectionId, { name: 'old-name' });
    expectStatus(await fx.patch(`/v1/targets/${t.mac}`, { name: 'new-name' }), 200);
    await fx.target(collectionId, { name: 'old-name' });
    expectError(await farm.api('POST', '/v1/targets', { body: { mac: fx.nextMac(), name: 'new-name', collectionId } }), 409, 'already_exists', 'name');
  });

  it.each([
    [{ name: 'abcdefghijklmnop' }, 'name'],
    [{ name: '12345' }, 'name'],
    [{ name: 'has space' }, 'name'],
    [{ mac: '52:54:00:zz:00:01' }, 'mac'],
    [{ mac: '01:00:5e:00:00:01' }, 'mac'],
    [{ mac: '52:54:00:aa-00:01' }, 'mac'],
    [{ assignments: [{ vdiskId: 'vd_aaaaaaaaaaaaaaaa' }] }, 'assignments.0.vdiskId'],
    [{ collectionId: 'col_aaaaaaaaaaaaaaaa' }, 'collectionId'],
    [{ type: 'private' }, 'type'],
    [{ personality: [{ name: 'a', value: '1' }, { name: 'A', value: '2' }] }, 'personality'],
  ])('refuses %j, naming the field', async (bad, field) => {
    expectError(await farm.api('POST', '/v1/targets', { body: { mac: fx.nextMac(), name: fx.name('t'), collectionId, ...bad } }), 400, 'validation_failed', field);
  });

  it('accepts a 15-character name with digits', async () => {
    await fx.target(collectionId, { name: 'abcdefghijk-123' });
  });

  it('refuses to change the MAC, and refuses lastBoot and siteId in a body', async () => {
    const t = await fx.target(collectionId);
    expectError(await fx.patch(`/v1/targets/${t.mac}`, { mac: macOf(0xfffff0) }), 400, 'validation_failed', 'mac');
    expectError(await fx.patch(`/v1/targets/${t.mac}`, { lastBoot: { at: 'now' } }), 400, 'validation_failed', 'lastBoot');
    expectError(await fx.patch(`/v1/targets/${t.mac}`, { siteId }), 400, 'validation_failed', 'siteId');
  });

  it('moves a target to a collection of another site, and its site with it', async () => {
    const t = await fx.target(collectionId);
    const site = await fx.site();
    const col = await fx.collection(site.id);
    const moved = expectStatus(await fx.patch(`/v1/targets/${t.mac}`, { collectionId: col.id }), 200);
    expect(moved).toMatchObject({ collectionId: col.id, siteId: site.id });
    expect((await fx.listAll(`/v1/targets?siteId=${site.id}`)).items.map((x) => x.mac)).toEqual([t.mac]);
    expect((await fx.listAll(`/v1/targets?collectionId=${collectionId}`)).items.map((x) => x.mac)).not.toContain(t.mac);
    // The old collection no longer counts it: it can be deleted once empty.
    const empty = await fx.collection(siteId);
    const t2 = await fx.target(empty.id);
    expectStatus(await fx.patch(`/v1/targets/${t2.mac}`, { collectionId: col.id }), 200);
    expect((await farm.api('DELETE', `/v1/collections/${empty.id}`)).status).toBe(204);
  });

  it('answers 400 naming the MAC path parameter for a malformed MAC', async () => {
    expectError(await farm.api('GET', '/v1/targets/not-a-mac'), 400, 'validation_failed', 'mac');
  });
});
