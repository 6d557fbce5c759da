import { beforeAll, describe, expect, it } from 'vitest';
import { expectError, expectStatus, fixtures, type Fixtures } from '../support/fixtures.js';
import { testFarm, type ApiResult, type TestFarm } from '../support/farm.js';

let farm: TestFarm;
let fx: Fixtures;
let siteId: string;
beforeAll(async () => {
  farm = await testFarm();
  fx = fixtures(farm);
  siteId = (await fx.site()).id;
});

const statuses = (results: ApiResult[]) => results.map((r) => r.status).sort();
const revision = async () => (await farm.api('GET', '/v1/farm')).body.revision as number;
const times = <T>(n: number, f: (i: number) => Promise<T>) => Promise.all(Array.from({ length: n }, (_, i) => f(i)));

describe('concurrent requests', () => {
  it('let exactly one of 10 simultaneous creates of one MAC (in different spellings) succeed; the nine others get 409', async () => {
    const col = await fx.collection(siteId);
    const spellings = ['52:54:00:cc:00:01', '52-54-00-CC-00-01', '5254.00cc.0001', '525400CC0001'];
    const rev = await revision();
    const results = await times(10, (i) => farm.api('POST', '/v1/targets', { body: { mac: spellings[i % 4], name: `race-${i}`, collectionId: col.id } }));
    expect(statuses(results)).toEqual([201, ...Array(9).fill(409)]);
    for (const r of results.filter((r) => r.status === 409)) expectError(r, 409, 'already_exists', 'mac');
    expect(await revision()).toBe(rev + 1);
    // The losers left nothing behind: one target, one reference from it, and their names stay free.
    const { items } = await fx.listAll(`/v1/targets?collectionId=${col.id}`);
    expect(items.map((t) => t.mac)).toEqual(['52:54:00:cc:00:01']);
    const loser = results.findIndex((r) => r.status === 409);
    await fx.target(col.id, { name: `race-${loser}` });
    expect((await farm.api('DELETE', `/v1/targets/${encodeURIComponent('52:54:00:cc:00:01')}`)).status).toBe(204);
    const left = (await fx.listAll(`/v1/targets?collectionId=${col.id}`)).items;
    for (const t of left) expect((await farm.api('DELETE', `/v1/targets/${t.mac}`)).status).toBe(204);
    expect((await farm.api('DELETE', `/v1/collections/${col.id}`)).status).toBe(204);
  });

  it('let exactly one of 10 simultaneous PATCHes with the same If-Match succeed; the nine others get 409', async () => {
    const site = await fx.site();
    const results = await times(10, (i) => farm.api('PATCH', `/v1/sites/${site.id}`, { body: { description: `writer ${i}` }, headers: { 'if-match': '"1"' } }));
    expect(statuses(results)).toEqual([200, ...Array(9).fill(409)]);
    for (const r of results.filter((r) => r.status === 409)) expectError(r, 409, 'version_mismatch');
    const winner = results.find((r) => r.status === 200)!;
    const now = expectStatus(await farm.api('GET', `/v1/sites/${site.id}`), 200);
    expect(now.version).toBe(2);
    expect(now.description).toBe(winner.body.description);
  });

  it('apply all of 10 simultaneous PATCHes with If-Match: *, one after the other', async () => {
    const app = await fx.appliance(siteId);
    const results = await times(10, (i) => farm.api('PATCH', `/v1/appliances/${app.id}`, { body: { description: `writer ${i}` }, headers: { 'if-match': '*' } }));
    expect(statuses(results)).toEqual(Array(10).fill(200));
    expect(results.map((r) => r.body.version).sort((a, b) => a - b)).toEqual([2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    expect((await farm.api('GET', `/v1/appliances/${app.id}`)).body.version).toBe(11);
  });

  it('create 10 distinct targets in one collection at once; the collection refuses deletion until every one is deleted', async () => {
    const col = await fx.collection(siteId);
    const rev = await revision();
    const results = await times(10, () => farm.api('POST', '/v1/targets', { body: { mac: fx.nextMac(), name: fx.name('many'), collectionId: col.id } }));
    expect(statuses(results)).toEqual(Array(10).fill(201));
    expect(await revision()).toBe(rev + 10);
    const macs = results.map((r) => r.body.mac as string);
    expect((await fx.listAll(`/v1/targets?collectionId=${col.id}`)).items.map((t) => t.mac).sort()).toEqual([...macs].sort());
    for (const mac of macs.slice(0, 9)) {
      expect((await farm.api('DELETE', `/v1/targets/${mac}`)).status).toBe(204);
      expectError(await farm.api('DELETE', `/v1/collections/${col.id}`), 409, 'in_use');
    }
    expect((await farm.api('DELETE', `/v1/targets/${macs[9]}`)).status).toBe(204);
    expect((await farm.api('DELETE', `/v1/collections/${col.id}`)).status).toBe(204);
  });

  it('let exactly one of 10 simultaneous creates of one site name succeed', async () => {
    const results = await times(10, () => farm.api('POST', '/v1/sites', { body: { name: 'contested' } }));
    expect(statuses(results)).toEqual([201, ...Array(9).fill(409)]);
    for (const r of results.filter((r) => r.status === 409)) expectError(r, 409, 'already_exists', 'name');
  });

  it('let exactly one of two targets renamed at once to the same name take it, and free the winner its old name', async () => {
    const col = await fx.collection(siteId);
    const a = await fx.target(col.id, { name: 'swap-a' });
    const b = await fx.target(col.id, { name: 'swap-b' });
    const results = await Promise.all([a, b].map((t) => fx.patch(`/v1/targets/${t.mac}`, { name: 'swap-new' })));
    expect(statuses(results)).toEqual([200, 409]);
    const winner = results.find((r) => r.status === 200)!.body;
    const freed = winner.mac === a.mac ? 'swap-a' : 'swap-b';
    await fx.target(col.id, { name: freed });
    expectError(await farm.api('POST', '/v1/targets', { body: { mac: fx.nextMac(), name: 'SWAP-NEW', collectionId: col.id } }), 409, 'already_exists', 'name');
  });

  it('let exactly one of 5 simultaneous new versions of a vDisk start maintenance', async () => {
    const vdisk = await fx.vdisk((await fx.store()).id);
    await fx.version(vdisk.id);
    expectStatus(await fx.patch(`/v1/vdisks/${vdisk.id}/versions/0`, { state: 'production' }), 200);
    const results = await times(5, () => farm.api('POST', `/v1/vdisks/${vdisk.id}/versions`));
    expect(statuses(results)).toEqual([201, 409, 409, 409, 409]);
    const { items } = expectStatus(await farm.api('GET', `/v1/vdisks/${vdisk.id}/versions`), 200);
    expect(items.map((v: any) => [v.number, v.state])).toEqual([
      [0, 'production'],
      [1, 'maintenance'],
    ]);
  });

  it('never leaves a target in a collection deleted at the same moment', async () => {
    const col = await fx.collection(siteId);
    const [del, ...creates] = await Promise.all([
      farm.api('DELETE', `/v1/collections/${col.id}`),
      ...Array.from({ length: 5 }, () => farm.api('POST', '/v1/targets', { body: { mac: fx.nextMac(), name: fx.name('orphan'), collectionId: col.id } })),
    ]);
    const created = creates.filter((r) => r.status === 201);
    for (const r of creates.filter((r) => r.status !== 201)) expectError(r, 400, 'validation_failed', 'collectionId');
    if (del!.status === 204) expect(created).toEqual([]);
    else expectError(del!, 409, 'in_use');
    for (const r of created) expect((await farm.api('GET', `/v1/collections/${r.body.collectionId}`)).status).toBe(200);
  });

  it('never leaves a target assigned to a vDisk deleted at the same moment', async () => {
    const vdisk = await fx.vdisk((await fx.store()).id);
    const col = await fx.collection(siteId);
    const targets = await times(5, () => fx.target(col.id));
    const [del, ...assigns] = await Promise.all([
      farm.api('DELETE', `/v1/vdisks/${vdisk.id}`),
      ...targets.map((t) => fx.patch(`/v1/targets/${t.mac}`, { assignments: [{ vdiskId: vdisk.id }] }, { etag: '"1"' })),
    ]);
    const assigned = assigns.filter((r) => r.status === 200).length;
    if (del!.status === 204) {
      expect(assigned).toBe(0);
      for (const r of assigns) expectError(r, 400, 'validation_failed', 'assignments.0.vdiskId');
    } else {
      expectError(del!, 409, 'in_use');
      expect(assigned).toBeGreaterThan(0);
    }
    const stored = (await fx.listAll(`/v1/targets?collectionId=${col.id}`)).items;
    const exists = (await farm.api('GET', `/v1/vdisks/${vdisk.id}`)).status === 200;
    expect(stored.filter((t) => t.assignments.length > 0).length).toBe(exists ? assigned : 0);
  });
});
