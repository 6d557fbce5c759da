/**
 * The permission model end to end: every role against every kind of request,
 * in its own site, in another site and on farm-wide objects.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { expectError, expectStatus, fixtures, type Fixtures } from '../support/fixtures.js';
import { testFarm, type ApiResult, type TestFarm } from '../support/farm.js';

const ROLES = ['farm-admin', 'site-admin', 'device-operator', 'device-operator (farm-wide)', 'read-only', 'read-only (farm-wide)'] as const;
type RoleName = (typeof ROLES)[number];
const READERS_OF_OTHER_SITES: RoleName[] = ['farm-admin', 'device-operator (farm-wide)', 'read-only (farm-wide)'];
const OPERATORS: RoleName[] = ['farm-admin', 'site-admin', 'device-operator', 'device-operator (farm-wide)'];

let farm: TestFarm;
let fx: Fixtures;
const tokens = {} as Record<RoleName, string>;
/** Site A is the scoped tokens' own site; B is another site. */
const w = {} as { siteA: any; siteB: any; appA: any; appB: any; colA: any; colB: any; tgtA: any; tgtB: any; store: any; vdisk: any; spareTokenId: string };

beforeAll(async () => {
  farm = await testFarm();
  fx = fixtures(farm);
  w.siteA = await fx.site();
  w.siteB = await fx.site();
  w.appA = await fx.appliance(w.siteA.id);
  w.appB = await fx.appliance(w.siteB.id);
  w.colA = await fx.collection(w.siteA.id);
  w.colB = await fx.collection(w.siteB.id);
  w.tgtA = await fx.target(w.colA.id);
  w.tgtB = await fx.target(w.colB.id);
  w.store = await fx.store();
  w.vdisk = await fx.vdisk(w.store.id);
  await fx.version(w.vdisk.id);
  w.spareTokenId = (await farm.token({ role: 'read-only' })).slice(4, 20);
  tokens['farm-admin'] = farm.adminToken;
  tokens['site-admin'] = await farm.token({ role: 'site-admin', siteId: w.siteA.id });
  tokens['device-operator'] = await farm.token({ role: 'device-operator', siteId: w.siteA.id });
  tokens['device-operator (farm-wide)'] = await farm.token({ role: 'device-operator' });
  tokens['read-only'] = await farm.token({ role: 'read-only', siteId: w.siteA.id });
  tokens['read-only (farm-wide)'] = await farm.token({ role: 'read-only' });
});

interface Case {
  what: string;
  allowed: readonly RoleName[];
  status: number;
  /** `fresh`: the request is expected to succeed, so it must act on an object of its own. */
  run(token: string, fresh: boolean): Promise<ApiResult>;
}

/** The path of the object a request acts on: a new one when the request may change it, else a shared one (a refused request changes nothing). */
type Path = (fresh: boolean) => Promise<string> | string;
const get = (path: string) => (token: string) => farm.api('GET', path, { token });
const post = (path: string, body: () => unknown) => (token: string) => farm.api('POST', path, { token, body: body() });
const patch = (path: Path, body: () => unknown) => async (token: string, fresh: boolean) =>
  farm.api('PATCH', await path(fresh), { token, body: body(), headers: { 'if-match': '*' } });
const del = (path: Path) => async (token: string, fresh: boolean) => farm.api('DELETE', await path(fresh), { token });
const target = (col = () => w.colA, shared = () => w.tgtA) => async (fresh: boolean) => `/v1/targets/${fresh ? (await fx.target(col().id)).mac : shared().mac}`;

const CASES: Case[] = [
  // reads
  { what: 'read the farm settings', allowed: ROLES, status: 200, run: get('/v1/farm') },
  { what: 'read its own site', allowed: ROLES, status: 200, run: (t) => get(`/v1/sites/${w.siteA.id}`)(t) },
  { what: 'read an appliance, a collection and a target of its own site', allowed: ROLES, status: 200, run: async (t) => {
    for (const p of [`/v1/appliances/${w.appA.id}`, `/v1/collections/${w.colA.id}`]) expectStatus(await farm.api('GET', p, { token: t }), 200);
    return get(`/v1/targets/${w.tgtA.mac}`)(t);
  } },
  { what: 'read stores, vDisks and versions', allowed: ROLES, status: 200, run: async (t) => {
    for (const p of ['/v1/stores', `/v1/stores/${w.store.id}`, '/v1/vdisks', `/v1/vdisks/${w.vdisk.id}`, `/v1/vdisks/${w.vdisk.id}/versions`]) expectStatus(await farm.api('GET', p, { token: t }), 200);
    return get(`/v1/vdisks/${w.vdisk.id}/versions/0`)(t);
  } },
  { what: 'read the audit trail', allowed: ROLES, status: 200, run: get('/v1/audit') },
  { what: 'read another site', allowed: READERS_OF_OTHER_SITES, status: 200, run: (t) => get(`/v1/sites/${w.siteB.id}`)(t) },
  { what: "read another site's appliance", allowed: READERS_OF_OTHER_SITES, status: 200, run: (t) => get(`/v1/appliances/${w.appB.id}`)(t) },
  { what: "read another site's collection", allowed: READERS_OF_OTHER_SITES, status: 200, run: (t) => get(`/v1/collections/${w.colB.id}`)(t) },
  { what: "read another site's target", allowed: READERS_OF_OTHER_SITES, status: 200, run: (t) => get(`/v1/targets/${w.tgtB.mac}`)(t) },
  { what: "list another site's targets by ?siteId", allowed: READERS_OF_OTHER_SITES, status: 200, run: (t) => get(`/v1/targets?siteId=${w.siteB.id}`)(t) },
  { what: "list another site's targets by ?collectionId", allowed: READERS_OF_OTHER_SITES, status: 200, run: (t) => get(`/v1/targets?collectionId=${w.colB.id}`)(t) },
  { what: "list another site's appliances and collections by ?siteId", allowed: READERS_OF_OTHER_SITES, status: 200, run: async (t) => {
    const r = await get(`/v1/appliances?siteId=${w.siteB.id}`)(t);
    if (r.status !== 200) return r;
    return get(`/v1/collections?siteId=${w.siteB.id}`)(t);
  } },
  { what: 'list tokens', allowed: ['farm-admin'], status: 200, run: get('/v1/tokens') },

  // sites
  { what: 'create a site', allowed: ['farm-admin'], status: 201, run: post('/v1/sites', () => ({ name: fx.name('site') })) },
  { what: 'update its own site', allowed: ['farm-admin', 'site-admin'], status: 200, run: patch(() => `/v1/sites/${w.siteA.id}`, () => ({ description: fx.name('d') })) },
  { what: 'update another site', allowed: ['farm-admin'], status: 200, run: patch(() => `/v1/sites/${w.siteB.id}`, () => ({ description: fx.name('d') })) },
  { what: 'delete a site', allowed: ['farm-admin'], status: 204, run: del(async (fresh) => `/v1/sites/${fresh ? (await fx.site()).id : w.siteA.id}`) },

  // appliances, collections and targets of its own site
  { what: 'create an appliance in its own site', allowed: ['farm-admin', 'site-admin'], status: 201, run: post('/v1/appliances', () => ({ siteId: w.siteA.id, name: fx.name('app'), managementAddress: '192.0.2.20' })) },
  { what: 'update an appliance of its own site', allowed: ['farm-admin', 'site-admin'], status: 200, run: patch(() => `/v1/appliances/${w.appA.id}`, () => ({ description: fx.name('d') })) },
  { what: 'delete an appliance of its own site', allowed: ['farm-admin', 'site-admin'], status: 204, run: del(async (fresh) => `/v1/appliances/${fresh ? (await fx.appliance(w.siteA.id)).id : w.appA.id}`) },
  { what: 'create a collection in its own site', allowed: ['farm-admin', 'site-admin'], status: 201, run: post('/v1/collections', () => ({ siteId: w.siteA.id, name: fx.name('col') })) },
  { what: 'update a collection of its own site', allowed: ['farm-admin', 'site-admin'], status: 200, run: patch(() => `/v1/collections/${w.colA.id}`, () => ({ description: fx.name('d') })) },
  { what: 'delete a collection of its own site', allowed: ['farm-admin', 'site-admin'], status: 204, run: del(async (fresh) => `/v1/collections/${fresh ? (await fx.collection(w.siteA.id)).id : w.colA.id}`) },
  { what: 'create a target in its own site', allowed: ['farm-admin', 'site-admin'], status: 201, run: post('/v1/targets', () => ({ mac: fx.nextMac(), name: fx.name('t'), collectionId: w.colA.id })) },
  { what: "change a target's disabled in its own site", allowed: OPERATORS, status: 200, run: patch(target(), () => ({ disabled: true })) },
  { what: "change a target's bootFrom in its own site", allowed: OPERATORS, status: 200, run: patch(target(), () => ({ bootFrom: 'local-disk' })) },
  { what: "change a target's disabled and bootFrom together", allowed: OPERATORS, status: 200, run: patch(target(), () => ({ disabled: true, bootFrom: 'local-disk' })) },
  { what: "change a target's assignments", allowed: ['farm-admin', 'site-admin'], status: 200, run: patch(target(), () => ({ assignments: [{ vdiskId: w.vdisk.id }] })) },
  { what: "change a target's disabled together with its description", allowed: ['farm-admin', 'site-admin'], status: 200, run: patch(target(), () => ({ disabled: true, description: 'x' })) },
  { what: 'rename a target', allowed: ['farm-admin', 'site-admin'], status: 200, run: patch(target(), () => ({ name: fx.name('t') })) },
  { what: 'delete a target of its own site', allowed: ['farm-admin', 'site-admin'], status: 204, run: del(target()) },

  // another site's objects
  { what: 'create an appliance in another site', allowed: ['farm-admin'], status: 201, run: post('/v1/appliances', () => ({ siteId: w.siteB.id, name: fx.name('app'), managementAddress: '192.0.2.20' })) },
  { what: "update another site's appliance", allowed: ['farm-admin'], status: 200, run: patch(() => `/v1/appliances/${w.appB.id}`, () => ({ description: fx.name('d') })) },
  { what: "delete another site's collection", allowed: ['farm-admin'], status: 204, run: del(async (fresh) => `/v1/collections/${fresh ? (await fx.collection(w.siteB.id)).id : w.colB.id}`) },
  { what: 'create a target in another site', allowed: ['farm-admin'], status: 201, run: post('/v1/targets', () => ({ mac: fx.nextMac(), name: fx.name('t'), collectionId: w.colB.id })) },
  { what: "disable another site's target", allowed: ['farm-admin', 'device-operator (farm-wide)'], status: 200, run: patch(target(() => w.colB, () => w.tgtB), () => ({ disabled: true })) },
  { what: 'move a target of its own site into another site', allowed: ['farm-admin'], status: 200, run: patch(target(), () => ({ collectionId: w.colB.id })) },

  // farm-wide objects
  { what: 'create a store', allowed: ['farm-admin'], status: 201, run: post('/v1/stores', () => ({ name: fx.name('store') })) },
  { what: 'update a store', allowed: ['farm-admin'], status: 200, run: patch(() => `/v1/stores/${w.store.id}`, () => ({ description: fx.name('d') })) },
  { what: 'delete a store', allowed: ['farm-admin'], status: 204, run: del(async (fresh) => `/v1/stores/${fresh ? (await fx.store()).id : w.store.id}`) },
  { what: 'create a vDisk', allowed: ['farm-admin'], status: 201, run: post('/v1/vdisks', () => ({ storeId: w.store.id, name: fx.name('vd'), sizeBytes: 1 << 30 })) },
  { what: 'update a vDisk', allowed: ['farm-admin'], status: 200, run: patch(() => `/v1/vdisks/${w.vdisk.id}`, () => ({ description: fx.name('d') })) },
  { what: 'delete a vDisk', allowed: ['farm-admin'], status: 204, run: del(async (fresh) => `/v1/vdisks/${fresh ? (await fx.vdisk(w.store.id)).id : w.vdisk.id}`) },
  { what: 'create a version', allowed: ['farm-admin'], status: 201, run: async (t, fresh) => farm.api('POST', `/v1/vdisks/${fresh ? (await fx.vdisk(w.store.id)).id : w.vdisk.id}/versions`, { token: t }) },
  { what: 'update a version', allowed: ['farm-admin'], status: 200, run: patch(() => `/v1/vdisks/${w.vdisk.id}/versions/0`, () => ({ description: fx.name('d') })) },
  { what: 'delete a version', allowed: ['farm-admin'], status: 204, run: del(async (fresh) => {
    if (!fresh) return `/v1/vdisks/${w.vdisk.id}/versions/0`;
    const vd = await fx.vdisk(w.store.id);
    await fx.version(vd.id);
    return `/v1/vdisks/${vd.id}/versions/0`;
  }) },
  { what: 'update the farm settings', allowed: ['farm-admin'], status: 200, run: patch(() => '/v1/farm', () => ({ name: fx.name('farm') })) },
  { what: 'create a token', allowed: ['farm-admin'], status: 201, run: post('/v1/tokens', () => ({ name: fx.name('tok'), role: 'read-only' })) },
  { what: 'revoke a token', allowed: ['farm-admin'], status: 204, run: del(async (fresh) => `/v1/tokens/${fresh ? (await farm.token({ role: 'read-only' })).slice(4, 20) : w.spareTokenId}`) },
];

describe('authorization matrix', () => {
  it.each(CASES.map((c) => [`${c.what}: ${c.allowed.length === ROLES.length ? 'every role may' : `${c.allowed.join(', ')} may, the others get 403`}`, c] as const))('%s', async (_, c) => {
    // The roles' requests are independent (writes that may succeed act on fresh objects): run them together.
    const results = await Promise.all(ROLES.map((role) => c.run(tokens[role], c.allowed.includes(role))));
    for (const [i, role] of ROLES.entries()) {
      const res = results[i]!;
      if (c.allowed.includes(role)) expect(res.status, `${role}: ${JSON.stringify(res.body)}`).toBe(c.status);
      else {
        expect(res.status, `${role}: ${JSON.stringify(res.body)}`).toBe(403);
        expectError(res, 403, 'forbidden');
        expect(res.body.error.message).toContain(role.split(' ')[0]);
      }
    }
  });

  it('leaves an object unchanged when a write is refused', async () => {
    const before = (await farm.api('GET', `/v1/targets/${w.tgtA.mac}`)).body;
    for (const role of ['device-operator', 'read-only'] as const)
      expectError(await farm.api('PATCH', `/v1/targets/${w.tgtA.mac}`, { token: tokens[role], body: { assignments: [{ vdiskId: w.vdisk.id }] }, headers: { 'if-match': `"${before.version}"` } }), 403, 'forbidden');
    expect((await farm.api('GET', `/v1/targets/${w.tgtA.mac}`)).body).toEqual(before);
  });
});

describe('site-scoped listings', () => {
  const scoped: RoleName[] = ['site-admin', 'device-operator', 'read-only'];

  it.each(scoped)('show a %s token only the objects of its site', async (role) => {
    const t = tokens[role];
    const sites = expectStatus(await farm.api('GET', '/v1/sites', { token: t }), 200);
    expect(sites.items.map((s: any) => s.id)).toEqual([w.siteA.id]);
    for (const kind of ['appliances', 'collections', 'targets']) {
      const { items } = await fx.listAll(`/v1/${kind}`, { token: t, limit: 2 });
      expect(items.length, kind).toBeGreaterThan(0);
      expect(items.every((o) => o.siteId === w.siteA.id), kind).toBe(true);
    }
  });

  it('show a farm-wide read-only token the objects of every site', async () => {
    const { items } = await fx.listAll('/v1/targets', { token: tokens['read-only (farm-wide)'] });
    expect(new Set(items.map((o) => o.siteId))).toEqual(new Set([w.siteA.id, w.siteB.id]));
    const sites = await fx.listAll('/v1/sites', { token: tokens['read-only (farm-wide)'] });
    expect(sites.items.map((s) => s.id)).toEqual(expect.arrayContaining([w.siteA.id, w.siteB.id]));
  });
});
