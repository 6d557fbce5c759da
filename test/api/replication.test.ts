/**
 * GET /v1/vdisks/{id}/replication against the real app and DynamoDB Local.
 * Appliances do not report yet (issue 4), so the tests write their inventory
 * and heartbeat straight into the repository, as the appliance will.
 */
import { beforeEach, describe, expect, it } from 'vitest';
import type { Inventory } from '../../model/index.js';
import { expectError, expectStatus, fixtures, type Fixtures } from '../support/fixtures.js';
import { SYSTEM, testFarm, type TestFarm } from '../support/farm.js';

const T0 = new Date('2026-03-01T12:00:00.000Z').getTime();
let now = T0;
const clock = () => new Date(now);
const OTHER_HASH = 'f'.repeat(64);

type Entry = { number: number; state: 'verified' | 'syncing' | 'corrupt'; percent?: number; contentHash?: string };

/** A farm with three sites: s1 (appliances a1, a2) and s2 (b1) have targets assigned the vDisk; s3 (c1) does not. */
interface World {
  farm: TestFarm;
  fx: Fixtures;
  s1: any;
  s2: any;
  s3: any;
  a1: any;
  a2: any;
  b1: any;
  c1: any;
  col3: any;
  vdisk: any;
  /** Content hash of each version, by number. */
  hash: Record<number, string>;
}

async function world(): Promise<World> {
  now = T0;
  const farm = await testFarm({ clock });
  const fx = fixtures(farm);
  const [s1, s2, s3] = [await fx.site(), await fx.site(), await fx.site()];
  const a1 = await fx.appliance(s1.id, { name: 'a1' });
  const a2 = await fx.appliance(s1.id, { name: 'a2' });
  const b1 = await fx.appliance(s2.id, { name: 'b1' });
  const c1 = await fx.appliance(s3.id, { name: 'c1' });
  const store = await fx.store();
  const vdisk = await fx.vdisk(store.id);
  // Version 0 (the blank base, promoted to production) and version 1 (maintenance, a copy of it).
  await fx.version(vdisk.id);
  expectStatus(await fx.patch(`/v1/vdisks/${vdisk.id}/versions/0`, { state: 'production' }), 200);
  await fx.version(vdisk.id);
  const col1 = await fx.collection(s1.id);
  const col2 = await fx.collection(s2.id);
  const col3 = await fx.collection(s3.id);
  await fx.target(col1.id, { assignments: [{ vdiskId: vdisk.id }] });
  await fx.target(col2.id, { assignments: [{ vdiskId: vdisk.id }] });
  await fx.target(col3.id);
  const versions = expectStatus(await farm.api('GET', `/v1/vdisks/${vdisk.id}/versions`), 200).items as any[];
  const hash = Object.fromEntries(versions.map((v) => [v.number, v.contentHash as string]));
  return { farm, fx, s1, s2, s3, a1, a2, b1, c1, col3, vdisk, hash };
}

/** What an appliance will do (issue 4): write its inventory and heartbeat, `ageMs` before the test clock. */
async function report(w: World, appliance: any, entries: Entry[], ageMs = 5_000): Promise<void> {
  const inventory: Inventory = {
    reportedAt: new Date(now - ageMs).toISOString(),
    versions: entries.map((e) => ({ vdiskId: w.vdisk.id, number: e.number, contentHash: e.contentHash ?? w.hash[e.number]!, state: e.state, ...(e.percent !== undefined ? { percent: e.percent } : {}) })),
  };
  await w.farm.repo.update('appliance', appliance.id, null, (cur) => ({ ...cur, inventory, lastHeartbeat: new Date(now - ageMs).toISOString() }), SYSTEM);
}

const matrix = async (w: World, token?: string) => expectStatus(await w.farm.api('GET', `/v1/vdisks/${w.vdisk.id}/replication`, { token }), 200);
const cellsOf = (m: any, number: number) => Object.fromEntries(Object.entries(m.versions.find((v: any) => v.number === number).cells).map(([id, c]: [string, any]) => [id, c.percent === undefined ? c.state : `${c.state} ${c.percent}`]));

let w: World;
beforeEach(async () => {
  w = await world();
});

describe('GET /v1/vdisks/{id}/replication', () => {
  it('returns each version x each appliance, with sites and heartbeats', async () => {
    const m = await matrix(w);
    expect(m).toMatchObject({ vdiskId: w.vdisk.id, siteId: null, generatedAt: new Date(T0).toISOString(), offlineAfterSeconds: 90 });
    expect(m.sitesNeeding).toEqual([w.s1.id, w.s2.id].sort());
    expect(m.appliances).toEqual([
      { id: w.a1.id, name: 'a1', siteId: w.s1.id, lastHeartbeat: null, reachable: false, needed: true },
      { id: w.a2.id, name: 'a2', siteId: w.s1.id, lastHeartbeat: null, reachable: false, needed: true },
      { id: w.b1.id, name: 'b1', siteId: w.s2.id, lastHeartbeat: null, reachable: false, needed: true },
      { id: w.c1.id, name: 'c1', siteId: w.s3.id, lastHeartbeat: null, reachable: false, needed: false },
    ]);
    expect(m.versions.map((v: any) => [v.number, v.state, v.contentHash])).toEqual([
      [0, 'production', w.hash[0]],
      [1, 'maintenance', w.hash[1]],
    ]);
    // No appliance has ever reported: all unreachable.
    expect(Object.values(cellsOf(m, 0))).toEqual(['unreachable', 'unreachable', 'unreachable', 'unreachable']);
  });

  it('shows up-to-date, missing, in-progress with percent, corrupt (reported, or verified with other content) and unreachable', async () => {
    const d1 = await w.fx.appliance(w.s3.id, { name: 'd1' });
    await report(w, w.a1, [{ number: 0, state: 'verified' }, { number: 1, state: 'syncing', percent: 42.5 }]);
    await report(w, w.a2, [{ number: 0, state: 'corrupt' }]);
    await report(w, w.b1, [{ number: 0, state: 'verified', contentHash: OTHER_HASH }, { number: 1, state: 'verified' }]);
    await report(w, w.c1, []);
    await report(w, d1, [{ number: 0, state: 'verified' }, { number: 1, state: 'verified' }], 10 * 60_000);
    const m = await matrix(w);
    expect(cellsOf(m, 0)).toEqual({ [w.a1.id]: 'up-to-date', [w.a2.id]: 'corrupt', [w.b1.id]: 'corrupt', [w.c1.id]: 'missing', [d1.id]: 'unreachable' });
    expect(cellsOf(m, 1)).toEqual({ [w.a1.id]: 'in-progress 42', [w.a2.id]: 'missing', [w.b1.id]: 'up-to-date', [w.c1.id]: 'missing', [d1.id]: 'unreachable' });
  });

  it('treats an inventory that does not parse as no inventory', async () => {
    await w.farm.repo.update('appliance', w.a1.id, null, (cur) => ({ ...cur, inventory: { garbage: true }, lastHeartbeat: new Date(now).toISOString() }), SYSTEM);
    expect(cellsOf(await matrix(w), 0)[w.a1.id]).toBe('missing');
  });

  it('leaves merged versions out', async () => {
    expectStatus(await w.fx.patch(`/v1/vdisks/${w.vdisk.id}/versions/1`, { state: 'production' }), 200);
    expectStatus(await w.farm.api('POST', `/v1/vdisks/${w.vdisk.id}/merge`, { body: {} }), 201);
    const m = await matrix(w);
    expect(m.versions.map((v: any) => [v.number, v.state])).toEqual([[2, 'production']]);
  });

  it('answers 404 for a vDisk that does not exist and 400 for a malformed id', async () => {
    expectError(await w.farm.api('GET', '/v1/vdisks/vd_aaaaaaaaaaaaaaaa/replication'), 404, 'not_found');
    expectError(await w.farm.api('GET', '/v1/vdisks/nope/replication'), 400, 'validation_failed');
    expectError(await w.farm.api('GET', `/v1/vdisks/${w.vdisk.id}/replication`, { token: null }), 401, 'unauthenticated');
  });
});

describe('pending', () => {
  const all: Entry[] = [{ number: 0, state: 'verified' }, { number: 1, state: 'verified' }];

  it('stays pending until every appliance of every site that needs the vDisk holds the version, then clears', async () => {
    await report(w, w.a1, all);
    await report(w, w.a2, [{ number: 0, state: 'verified' }, { number: 1, state: 'syncing', percent: 10 }]);
    await report(w, w.c1, []); // s3 does not need the vDisk: its appliance never blocks
    let m = await matrix(w);
    expect(m.versions.map((v: any) => [v.number, v.pending, v.waitingFor])).toEqual([
      [0, true, [w.b1.id]],
      [1, true, [w.a2.id, w.b1.id]],
    ]);

    await report(w, w.b1, all);
    m = await matrix(w);
    expect(m.versions.map((v: any) => [v.number, v.pending, v.waitingFor])).toEqual([
      [0, false, []],
      [1, true, [w.a2.id]],
    ]);

    await report(w, w.a2, all);
    m = await matrix(w);
    expect(m.versions.map((v: any) => v.pending)).toEqual([false, false]);
  });

  it('becomes pending again when a target of another site is assigned the vDisk', async () => {
    for (const a of [w.a1, w.a2, w.b1]) await report(w, a, all);
    expect((await matrix(w)).versions.map((v: any) => v.pending)).toEqual([false, false]);
    await w.fx.target(w.col3.id, { assignments: [{ vdiskId: w.vdisk.id }] });
    const m = await matrix(w);
    expect(m.sitesNeeding).toContain(w.s3.id);
    expect(m.versions.map((v: any) => v.waitingFor)).toEqual([[w.c1.id], [w.c1.id]]);
  });

  it('is never pending when no target is assigned the vDisk', async () => {
    const store = await w.fx.store();
    const lonely = await w.fx.vdisk(store.id);
    await w.fx.version(lonely.id);
    const m = expectStatus(await w.farm.api('GET', `/v1/vdisks/${lonely.id}/replication`), 200);
    expect(m.sitesNeeding).toEqual([]);
    expect(m.versions).toMatchObject([{ number: 0, pending: false, waitingFor: [] }]);
  });
});

describe('unreachable by heartbeat age', () => {
  it('keeps an appliance reachable for 90 s after its heartbeat, then shows it unreachable and the version pending', async () => {
    for (const a of [w.a1, w.a2, w.b1]) await report(w, a, [{ number: 0, state: 'verified' }, { number: 1, state: 'verified' }], 0);
    now = T0 + 90_000;
    let m = await matrix(w);
    expect(m.appliances.find((a: any) => a.id === w.a1.id)).toMatchObject({ lastHeartbeat: new Date(T0).toISOString(), reachable: true });
    expect(cellsOf(m, 0)[w.a1.id]).toBe('up-to-date');
    expect(m.versions.map((v: any) => v.pending)).toEqual([false, false]);

    now = T0 + 91_000;
    await report(w, w.b1, [{ number: 0, state: 'verified' }, { number: 1, state: 'verified' }], 0); // b1 keeps beating
    m = await matrix(w);
    expect(m.appliances.find((a: any) => a.id === w.a1.id)).toMatchObject({ reachable: false });
    expect(cellsOf(m, 0)).toMatchObject({ [w.a1.id]: 'unreachable', [w.a2.id]: 'unreachable', [w.b1.id]: 'up-to-date' });
    expect(m.versions.map((v: any) => v.waitingFor)).toEqual([
      [w.a1.id, w.a2.id],
      [w.a1.id, w.a2.id],
    ]);
  });
});

describe('site scoping', () => {
  it('shows a site-scoped token only its own site, and pending only there', async () => {
    for (const a of [w.a1, w.a2]) await report(w, a, [{ number: 0, state: 'verified' }, { number: 1, state: 'verified' }]);
    for (const token of [await w.farm.token({ role: 'site-admin', siteId: w.s1.id }), await w.farm.token({ role: 'read-only', siteId: w.s1.id }), await w.farm.token({ role: 'device-operator', siteId: w.s1.id })]) {
      const m = await matrix(w, token);
      expect(m.siteId).toBe(w.s1.id);
      expect(m.sitesNeeding).toEqual([w.s1.id]);
      expect(m.appliances.map((a: any) => a.id)).toEqual([w.a1.id, w.a2.id]);
      expect(m.versions.map((v: any) => v.pending)).toEqual([false, false]);
      const text = JSON.stringify(m);
      for (const hidden of [w.b1.id, w.c1.id, w.s2.id, w.s3.id]) expect(text).not.toContain(hidden);
    }
    // The farm-wide view still waits for b1 in s2.
    const farmWide = await matrix(w, await w.farm.token({ role: 'read-only' }));
    expect(farmWide.versions.map((v: any) => v.waitingFor)).toEqual([[w.b1.id], [w.b1.id]]);
    expect(farmWide.appliances).toHaveLength(4);
  });

  it('shows a site that does not need the vDisk its appliances, with nothing pending', async () => {
    const m = await matrix(w, await w.farm.token({ role: 'site-admin', siteId: w.s3.id }));
    expect(m).toMatchObject({ siteId: w.s3.id, sitesNeeding: [] });
    expect(m.appliances.map((a: any) => [a.id, a.needed])).toEqual([[w.c1.id, false]]);
    expect(m.versions.map((v: any) => v.pending)).toEqual([false, false]);
  });
});
