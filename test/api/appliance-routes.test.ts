/**
 * The routes appliances call, against the real app on DynamoDB Local and
 * s3rver: enrolment with one-time tokens, the scope of an appliance
 * credential, the signed site snapshot and its ETag, chunk download URLs for
 * real pushed content, status reports, idempotent events with offline
 * auto-add, and revoking an appliance.
 */
import { createHash, randomBytes } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../../functions/app.js';
import type { FarmRepo, Obj } from '../../functions/storage/repo.js';
import { DEFAULT_ENROL_TTL_MS, newEventId, neededVersions, verifyManifest, verifySnapshot, type SigningKey, type Snapshot } from '../../model/index.js';
import { expectError, expectStatus, fixtures, macOf, type Fixtures } from '../support/fixtures.js';
import { testFarm, type TestFarm } from '../support/farm.js';

const KiB = 1024;
const CHUNK = 64 * KiB;
const CHUNKS = 16; // a 1 MiB vDisk
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

let farm: TestFarm;
let fx: Fixtures;
let keys: SigningKey[];

interface Enrolled {
  appliance: any;
  token: string;
  /** The credential's token id (DELETE /v1/tokens/{id}). */
  tokenId: string;
}

/**
 * Site A has two enrolled appliances (a1, a2), three targets (one of each
 * type) assigned `vdisk` and one with nothing assigned; site B has one enrolled
 * appliance and a target assigned `other`, which no target of A uses.
 */
const w = {} as {
  siteA: any;
  siteB: any;
  colA: any;
  colB: any;
  a1: Enrolled;
  a2: Enrolled;
  b1: Enrolled;
  store: any;
  vdisk: any;
  other: any;
  tProd: any;
  tTest: any;
  tMaint: any;
  tPlain: any;
  tB: any;
  /** Content hash and chunk hashes of each version of vdisk, by number. */
  hash: Record<number, string>;
  chunks: Record<number, (string | null)[]>;
};

// --------------------------------------------------------------- helpers

async function enrolToken(siteId: string, extra: Record<string, unknown> = {}): Promise<string> {
  return expectStatus(await farm.api('POST', '/v1/tokens', { body: { name: fx.name('enrol'), role: 'appliance-enrol', siteId, ...extra } }), 201).token;
}

const enrolBody = (name = fx.name('app'), extra: Record<string, unknown> = {}) => ({ name, managementAddress: '192.0.2.10', streamingAddresses: ['192.0.2.11'], ...extra });
const enrol = (token: string, body: unknown = enrolBody()) => farm.api('POST', '/v1/appliances/enrol', { token, body });

async function enrolled(siteId: string, name?: string): Promise<Enrolled> {
  const b = expectStatus(await enrol(await enrolToken(siteId), enrolBody(name)), 201);
  return { appliance: b.appliance, token: b.token, tokenId: (b.token as string).slice(4, 20) };
}

/** A disk of CHUNKS chunks: random data where `seeds` says, zeros elsewhere. */
function disk(seeds: Record<number, number>): (Buffer | null)[] {
  return Array.from({ length: CHUNKS }, (_, i) => (seeds[i] === undefined ? null : Buffer.alloc(CHUNK, 0).fill(randomBytes(61)).fill(seeds[i]!, 0, 1)));
}

/** Pushes content the way `bootfarm vdisk push` does: open the upload, PUT missing chunks to S3 by presigned URL, commit. */
async function push(vdiskId: string, data: (Buffer | null)[], state?: 'production' | 'test' | 'maintenance'): Promise<any> {
  const byHash = new Map<string, Buffer>();
  const chunks = data.map((b) => {
    if (!b) return null;
    const h = sha256(b);
    byHash.set(h, b);
    return h;
  });
  const up = expectStatus(await farm.api('POST', `/v1/vdisks/${vdiskId}/uploads`, { body: { sizeBytes: CHUNKS * CHUNK, chunkSize: CHUNK, chunks } }), 200);
  if (up.missing.length) {
    const { urls } = expectStatus(await farm.api('POST', `/v1/vdisks/${vdiskId}/uploads/${up.uploadId}/urls`, { body: { hashes: up.missing } }), 200);
    for (const h of up.missing as string[]) {
      const res = await fetch(urls[h], { method: 'PUT', body: byHash.get(h)!, headers: { 'content-type': 'application/octet-stream' } });
      expect(res.ok, `PUT chunk ${h}: ${res.status}`).toBe(true);
    }
  }
  const v = expectStatus(await farm.api('POST', `/v1/vdisks/${vdiskId}/uploads/${up.uploadId}/commit`, { body: state ? { state } : {} }), 201);
  w.hash[v.number] = v.contentHash;
  w.chunks[v.number] = chunks;
  return v;
}

const snapshotOf = (siteId: string, token: string, headers: Record<string, string> = {}) => farm.api('GET', `/v1/sites/${siteId}/snapshot`, { token, headers });

async function verified(siteId: string, token: string): Promise<{ snapshot: Snapshot; etag: string; raw: any }> {
  const res = await snapshotOf(siteId, token);
  const raw = expectStatus(res, 200);
  return { snapshot: verifySnapshot(raw, keys), etag: res.headers.get('etag')!, raw };
}

const statusBody = (over: Record<string, unknown> = {}) => ({
  softwareVersion: '0.1.0',
  startedAt: '2026-03-01T11:00:00.000Z',
  load: 0.25,
  sessions: 3,
  snapshotRevision: 7,
  inventoryDigest: '0123456789abcdef',
  cacheBytes: 1 << 20,
  outboxPending: 0,
  offlineSince: null,
  ...over,
});

const reportStatus = (e: Enrolled, body: unknown, id = e.appliance.id) => farm.api('PUT', `/v1/appliances/${id}/status`, { token: e.token, body });

let eventClock = Date.parse('2026-03-01T12:00:00.000Z');
/** A new event id, later than every one before (as an appliance makes them). */
const eventId = () => newEventId(new Date((eventClock += 1000)), randomBytes(8));
const bootEvent = (mac: string, targetId: string | null) => ({ id: eventId(), at: new Date(eventClock).toISOString(), type: 'boot', data: { mac, targetId, outcome: 'vdisk', vdiskId: w.vdisk.id, version: 2, streamingApplianceId: w.a1.appliance.id } });
const autoAdd = (target: Record<string, unknown>) => ({ id: eventId(), at: new Date(eventClock).toISOString(), type: 'target-auto-added', data: { target } });
const deliver = (e: Enrolled, events: unknown[], id = e.appliance.id) => farm.api('POST', `/v1/appliances/${id}/events`, { token: e.token, body: { events } });

const revision = async () => expectStatus(await farm.api('GET', '/v1/farm'), 200).revision as number;
const siteTargets = async (siteId: string) => (await fx.listAll(`/v1/targets?siteId=${siteId}`)).items;

// ----------------------------------------------------------------- world

beforeAll(async () => {
  farm = await testFarm();
  fx = fixtures(farm);
  keys = expectStatus(await farm.api('GET', '/v1/signing-keys'), 200).keys;
  w.hash = {};
  w.chunks = {};
  w.siteA = await fx.site();
  w.siteB = await fx.site();
  w.colA = await fx.collection(w.siteA.id);
  w.colB = await fx.collection(w.siteB.id);
  w.a1 = await enrolled(w.siteA.id, 'a1');
  w.a2 = await enrolled(w.siteA.id, 'a2');
  w.b1 = await enrolled(w.siteB.id, 'b1');
  w.store = await fx.store();
  w.vdisk = await fx.vdisk(w.store.id, { sizeBytes: CHUNKS * CHUNK, chunkSize: CHUNK });
  w.other = await fx.vdisk(w.store.id, { sizeBytes: CHUNKS * CHUNK, chunkSize: CHUNK });
  // vdisk: 0 and 1 production, merged into base 2 (0 and 1 become merged), 3 test, 4 maintenance.
  await push(w.vdisk.id, disk({ 0: 1, 5: 2 }));
  await push(w.vdisk.id, disk({ 0: 3, 5: 2 }), 'production');
  const base = expectStatus(await farm.api('POST', `/v1/vdisks/${w.vdisk.id}/merge`, { body: {} }), 201);
  w.hash[base.number] = base.contentHash;
  w.chunks[base.number] = w.chunks[1]!;
  await push(w.vdisk.id, disk({ 0: 4, 5: 2, 9: 5 }), 'test');
  await push(w.vdisk.id, disk({ 0: 6, 1: 7, 5: 2, 9: 5, 15: 8 }));
  await push(w.other.id, disk({ 3: 9 }));
  const assigned = { assignments: [{ vdiskId: w.vdisk.id }] };
  w.tProd = await fx.target(w.colA.id, { ...assigned, type: 'production' });
  w.tTest = await fx.target(w.colA.id, { ...assigned, type: 'test' });
  w.tMaint = await fx.target(w.colA.id, { ...assigned, type: 'maintenance' });
  w.tPlain = await fx.target(w.colA.id);
  w.tB = await fx.target(w.colB.id, { assignments: [{ vdiskId: w.other.id }] });
}, 120_000);

// ----------------------------------------------------------------- tests

describe('enrolment', () => {
  it('refuses an appliance-enrol token without a site, naming siteId', async () => {
    expectError(await farm.api('POST', '/v1/tokens', { body: { name: 'enrol-nosite', role: 'appliance-enrol' } }), 400, 'validation_failed', 'siteId');
  });

  it('gives an enrolment token an expiry about 24 hours ahead unless one is given', async () => {
    const before = Date.now();
    const t = expectStatus(await farm.api('POST', '/v1/tokens', { body: { name: fx.name('enrol'), role: 'appliance-enrol', siteId: w.siteA.id } }), 201);
    expect(DEFAULT_ENROL_TTL_MS).toBe(24 * 3600 * 1000);
    const at = Date.parse(t.expiresAt);
    expect(at).toBeGreaterThanOrEqual(before + DEFAULT_ENROL_TTL_MS - 1000);
    expect(at).toBeLessThanOrEqual(Date.now() + DEFAULT_ENROL_TTL_MS + 1000);
    const given = '2030-01-01T00:00:00.000Z';
    expect(expectStatus(await farm.api('POST', '/v1/tokens', { body: { name: fx.name('enrol'), role: 'appliance-enrol', siteId: w.siteA.id, expiresAt: given } }), 201).expiresAt).toBe(given);
    // Other roles keep "never" as their default.
    expect(expectStatus(await farm.api('POST', '/v1/tokens', { body: { name: fx.name('ro'), role: 'read-only' } }), 201).expiresAt).toBeNull();
  });

  it("creates the appliance in the token's site and returns its credential and the farm signing keys, once", async () => {
    const token = await enrolToken(w.siteA.id);
    const res = await enrol(token, enrolBody('enrol-ok'));
    const b = expectStatus(res, 201);
    expect(res.headers.get('location')).toBe(`/v1/appliances/${b.appliance.id}`);
    expect(res.headers.get('cache-control')).toBe('no-store');
    expect(b.appliance).toMatchObject({ siteId: w.siteA.id, name: 'enrol-ok', managementAddress: '192.0.2.10', streamingAddresses: ['192.0.2.11'], powerRating: 1, maxTargets: 500, lastHeartbeat: null, inventory: null });
    expect(b.token).toMatch(/^bft_[a-z2-7]{16}_[A-Za-z0-9_-]{43}$/);
    expect(b.signingKeys).toEqual(keys.map((k) => ({ keyId: k.keyId, publicKeyPem: k.publicKeyPem })));
    expect(expectStatus(await farm.api('GET', `/v1/appliances/${b.appliance.id}`), 200)).toMatchObject({ siteId: w.siteA.id, name: 'enrol-ok' });
    // The credential is an appliance token of that site and appliance; the enrolment token is gone.
    const tokens = (await fx.listAll('/v1/tokens')).items;
    expect(tokens.find((t) => t.id === b.token.slice(4, 20))).toMatchObject({ role: 'appliance', siteId: w.siteA.id, applianceId: b.appliance.id, expiresAt: null });
    expect(tokens.some((t) => t.id === token.slice(4, 20))).toBe(false);
    expectError(await enrol(token, enrolBody('enrol-again')), 401, 'unauthenticated');
    expect((await fx.listAll('/v1/appliances')).items.map((a) => a.name)).not.toContain('enrol-again');
  });

  it('refuses a taken appliance name with 409 and leaves the token unspent', async () => {
    const token = await enrolToken(w.siteA.id);
    // Appliance names are unique in the farm: b1 is in site B.
    expectError(await enrol(token, enrolBody('B1')), 409, 'already_exists', 'name');
    const ok = expectStatus(await enrol(token, enrolBody('enrol-second-try')), 201);
    expect(ok.appliance.siteId).toBe(w.siteA.id);
    expectError(await enrol(token, enrolBody(fx.name('app'))), 401, 'unauthenticated');
  });

  it('refuses an expired enrolment token', async () => {
    const token = await enrolToken(w.siteA.id, { expiresAt: '2020-01-01T00:00:00.000Z' });
    expectError(await enrol(token, enrolBody()), 401, 'unauthenticated');
  });

  it('lets only enrolment tokens enrol (403 for read-only, site-admin, farm-admin and appliance credentials)', async () => {
    const others = {
      'read-only': await farm.token({ role: 'read-only', siteId: w.siteA.id }),
      'site-admin': await farm.token({ role: 'site-admin', siteId: w.siteA.id }),
      'farm-admin': farm.adminToken,
      appliance: w.a1.token,
    };
    for (const [role, token] of Object.entries(others)) {
      const res = await enrol(token, enrolBody(`by-${role}`));
      expectError(res, 403, 'forbidden');
      expect(res.body.error.message, role).toContain(role);
    }
    const names = (await fx.listAll('/v1/appliances')).items.map((a) => a.name as string);
    expect(names.filter((n) => n.startsWith('by-'))).toEqual([]);
  });

  it('refuses a bad body with 400 naming the field, without spending the token', async () => {
    const token = await enrolToken(w.siteA.id);
    expectError(await enrol(token, { ...enrolBody(), serial: 'x' }), 400, 'validation_failed', 'serial');
    expectError(await enrol(token, { ...enrolBody(), siteId: w.siteB.id }), 400, 'validation_failed', 'siteId');
    expectError(await enrol(token, enrolBody(undefined, { managementAddress: 'not an address!' })), 400, 'validation_failed', 'managementAddress');
    expectError(await enrol(token, enrolBody(undefined, { streamingAddresses: ['192.0.2.300'] })), 400, 'validation_failed', 'streamingAddresses.0');
    expectError(await enrol(token, enrolBody(undefined, { maxTargets: 0 })), 400, 'validation_failed', 'maxTargets');
    expectStatus(await enrol(token, enrolBody()), 201);
  });

  it('lets exactly one of two concurrent enrolments with one token succeed, leaving no orphan appliance', async () => {
    for (let round = 0; round < 3; round++) {
      const token = await enrolToken(w.siteA.id);
      const names = [`race-${round}-x`, `race-${round}-y`];
      const results = await Promise.all(names.map((n) => enrol(token, enrolBody(n))));
      expect(results.map((r) => r.status).sort(), JSON.stringify(results.map((r) => r.body))).toEqual([201, 401]);
      const winner = results.find((r) => r.status === 201)!.body;
      const loser = results.find((r) => r.status === 401)!;
      expectError(loser, 401, 'unauthenticated');
      const present = (await fx.listAll(`/v1/appliances?siteId=${w.siteA.id}`)).items.map((a) => a.name);
      expect(present.filter((n) => names.includes(n))).toEqual([winner.appliance.name]);
      // The winner's credential works.
      expectStatus(await snapshotOf(w.siteA.id, winner.token), 200);
    }
  });
});

describe('appliance credential scope', () => {
  it("reads its own site's snapshot and nothing of another site or appliance", async () => {
    expectStatus(await snapshotOf(w.siteA.id, w.a1.token), 200);
    expectError(await snapshotOf(w.siteB.id, w.a1.token), 403, 'forbidden');
    expectError(await farm.api('POST', `/v1/sites/${w.siteB.id}/chunk-urls`, { token: w.a1.token, body: { vdiskId: w.other.id, number: 0, hashes: [w.chunks[4]![0]] } }), 403, 'forbidden');
    // Status and events only as itself, even for an appliance of its own site.
    for (const other of [w.a2, w.b1]) {
      expectError(await reportStatus(w.a1, { status: statusBody() }, other.appliance.id), 403, 'forbidden');
      expectError(await deliver(w.a1, [bootEvent(w.tProd.mac, null)], other.appliance.id), 403, 'forbidden');
    }
    expectError(await farm.api('GET', `/v1/sites/${w.siteA.id}/events`, { token: w.a1.token }), 403, 'forbidden');
  });

  /** Paths name the world's objects by placeholder, so the test names read well and the ids are looked up when the test runs. */
  const ADMIN_ROUTES: [method: string, path: string, body?: () => unknown][] = [
    ['GET', '/v1/farm'],
    ['PATCH', '/v1/farm', () => ({ name: 'owned' })],
    ['GET', '/v1/sites'],
    ['GET', '/v1/sites/{siteA}'],
    ['PATCH', '/v1/sites/{siteA}', () => ({ description: 'owned' })],
    ['GET', '/v1/appliances'],
    ['GET', '/v1/appliances?siteId={siteA}'],
    ['GET', '/v1/appliances/{a1}'],
    ['PATCH', '/v1/appliances/{a1}', () => ({ maxTargets: 1 })],
    ['DELETE', '/v1/appliances/{a2}'],
    ['POST', '/v1/appliances', () => ({ siteId: w.siteA.id, name: 'rogue', managementAddress: '192.0.2.66' })],
    ['GET', '/v1/collections'],
    ['GET', '/v1/collections/{colA}'],
    ['GET', '/v1/targets'],
    ['GET', '/v1/targets?siteId={siteA}'],
    ['GET', '/v1/targets/{tProd}'],
    ['PATCH', '/v1/targets/{tProd}', () => ({ disabled: true })],
    ['POST', '/v1/targets', () => ({ mac: macOf(0xfff0), name: 'rogue', collectionId: w.colA.id })],
    ['DELETE', '/v1/targets/{tPlain}'],
    ['GET', '/v1/stores'],
    ['GET', '/v1/stores/{store}'],
    ['GET', '/v1/vdisks'],
    ['GET', '/v1/vdisks/{vdisk}'],
    ['GET', '/v1/vdisks/{vdisk}/versions'],
    ['GET', '/v1/vdisks/{vdisk}/versions/2'],
    ['POST', '/v1/vdisks/{vdisk}/versions'],
    ['GET', '/v1/vdisks/{vdisk}/replication'],
    ['POST', '/v1/gc', () => ({})],
    ['GET', '/v1/tokens'],
    ['POST', '/v1/tokens', () => ({ name: 'rogue', role: 'farm-admin' })],
    ['DELETE', '/v1/tokens/{a2token}'],
    ['GET', '/v1/audit'],
    ['GET', '/v1/sites/{siteA}/events'],
  ];
  const resolve = (path: string) =>
    path.replace(/\{(\w+)\}/g, (_, k: string) => {
      const ids: Record<string, string> = { siteA: w.siteA.id, a1: w.a1.appliance.id, a2: w.a2.appliance.id, a2token: w.a2.tokenId, colA: w.colA.id, tProd: w.tProd.mac, tPlain: w.tPlain.mac, store: w.store.id, vdisk: w.vdisk.id };
      return ids[k]!;
    });

  it.each(ADMIN_ROUTES)('refuses appliance credentials and enrolment tokens on %s %s (403)', async (method, path, body) => {
    const enrolTok = await enrolToken(w.siteA.id);
    for (const token of [w.a1.token, enrolTok]) {
      const res = await farm.api(method, resolve(path), { token, body: body?.(), headers: { 'if-match': '*' } });
      expect(res.status, `${method} ${path}: ${JSON.stringify(res.body)}`).toBe(403);
      expectError(res, 403, 'forbidden');
    }
  });

  it('still serves the signing keys to appliance credentials (they verify snapshots and manifests with them)', async () => {
    expect(expectStatus(await farm.api('GET', '/v1/signing-keys', { token: w.a1.token }), 200).keys).toEqual(keys);
  });

  it('lets only the site admins of the site, farm admins and its appliances read a snapshot (it holds the peer secret)', async () => {
    const tok = {
      'read-only': await farm.token({ role: 'read-only', siteId: w.siteA.id }),
      'read-only (farm-wide)': await farm.token({ role: 'read-only' }),
      'device-operator': await farm.token({ role: 'device-operator', siteId: w.siteA.id }),
      'device-operator (farm-wide)': await farm.token({ role: 'device-operator' }),
      'site-admin of B': await farm.token({ role: 'site-admin', siteId: w.siteB.id }),
    };
    for (const [who, t] of Object.entries(tok)) {
      const res = await snapshotOf(w.siteA.id, t);
      expect(res.status, who).toBe(403);
      expectError(res, 403, 'forbidden');
      expect(JSON.stringify(res.body)).not.toContain('peerSecret');
    }
    const siteAdmin = await farm.token({ role: 'site-admin', siteId: w.siteA.id });
    expect((await verified(w.siteA.id, siteAdmin)).snapshot.siteId).toBe(w.siteA.id);
    expect((await verified(w.siteA.id, farm.adminToken)).snapshot.siteId).toBe(w.siteA.id);
  });
});

describe('site snapshot', () => {
  it('holds the site, its appliances (configuration only), collections, targets, assigned vDisks, their stores and live versions', async () => {
    // A heartbeat first: its fields must not reach the snapshot.
    expect((await reportStatus(w.a1, { status: statusBody() })).status).toBe(204);
    const { snapshot: s } = await verified(w.siteA.id, w.a1.token);
    expect(s.siteId).toBe(w.siteA.id);
    expect(s.site).toEqual(expectStatus(await farm.api('GET', `/v1/sites/${w.siteA.id}`), 200));
    expect(s.farm).toMatchObject({ name: expect.any(String) });
    const adminView = (await fx.listAll(`/v1/appliances?siteId=${w.siteA.id}`)).items;
    expect(s.appliances.map((a) => a.id).sort()).toEqual(adminView.map((a) => a.id).sort());
    expect(s.appliances.map((a) => a.id)).toEqual(expect.arrayContaining([w.a1.appliance.id, w.a2.appliance.id]));
    expect(s.appliances.map((a) => a.id)).not.toContain(w.b1.appliance.id);
    for (const a of s.appliances) for (const k of ['lastHeartbeat', 'inventory', 'status']) expect(a, k).not.toHaveProperty(k);
    const a1 = s.appliances.find((a) => a.id === w.a1.appliance.id)!;
    const { lastHeartbeat: _h, inventory: _i, status: _s, ...a1Config } = expectStatus(await farm.api('GET', `/v1/appliances/${w.a1.appliance.id}`), 200);
    expect(a1).toEqual(a1Config);
    expect(s.collections.map((c) => c.id)).toEqual([w.colA.id]);
    expect(s.targets.map((t) => t.mac).sort()).toEqual((await siteTargets(w.siteA.id)).map((t) => t.mac).sort());
    expect(s.targets.map((t) => t.mac)).not.toContain(w.tB.mac);
    expect(s.vdisks.map((v) => v.id)).toEqual([w.vdisk.id]);
    expect(s.stores.map((x) => x.id)).toEqual([w.store.id]);
    expect(s.versions.map((v) => [v.vdiskId, v.number, v.state])).toEqual([
      [w.vdisk.id, 2, 'production'],
      [w.vdisk.id, 3, 'test'],
      [w.vdisk.id, 4, 'maintenance'],
    ]);
    expect(s.peerSecret.length).toBeGreaterThanOrEqual(32);
  });

  it('picks the version each target type boots: production -> base 2, test -> 3, maintenance -> 4', async () => {
    const { snapshot: s } = await verified(w.siteA.id, w.a1.token);
    expect(neededVersions(s)).toEqual([
      { vdiskId: w.vdisk.id, number: 2, storeId: w.store.id, contentHash: w.hash[2], targets: 1 },
      { vdiskId: w.vdisk.id, number: 3, storeId: w.store.id, contentHash: w.hash[3], targets: 1 },
      { vdiskId: w.vdisk.id, number: 4, storeId: w.store.id, contentHash: w.hash[4], targets: 1 },
    ]);
    const { snapshot: b } = await verified(w.siteB.id, w.b1.token);
    expect(neededVersions(b)).toEqual([{ vdiskId: w.other.id, number: 0, storeId: w.store.id, contentHash: expect.stringMatching(/^[0-9a-f]{64}$/), targets: 1 }]);
  });

  it("shares one peer secret among a site's appliances and calls, and another one per site", async () => {
    const one = (await verified(w.siteA.id, w.a1.token)).snapshot.peerSecret;
    expect((await verified(w.siteA.id, w.a1.token)).snapshot.peerSecret).toBe(one);
    expect((await verified(w.siteA.id, w.a2.token)).snapshot.peerSecret).toBe(one);
    expect((await verified(w.siteA.id, farm.adminToken)).snapshot.peerSecret).toBe(one);
    expect((await verified(w.siteB.id, w.b1.token)).snapshot.peerSecret).not.toBe(one);
  });

  it('answers 304 without a body while nothing changed, and 200 with a new ETag and a higher revision after a change', async () => {
    const first = await verified(w.siteA.id, w.a1.token);
    expect(first.etag).toBe(`"${w.siteA.id}.r${first.snapshot.revision}"`);
    const same = await snapshotOf(w.siteA.id, w.a1.token, { 'if-none-match': first.etag });
    expect(same.status).toBe(304);
    expect(same.body).toBeNull();
    expect(same.headers.get('etag')).toBe(first.etag);
    // A list of tags with the current one in it also matches; a stale one does not.
    expect((await snapshotOf(w.siteA.id, w.a1.token, { 'if-none-match': `"x.r1", ${first.etag}` })).status).toBe(304);
    expect((await snapshotOf(w.siteA.id, w.a1.token, { 'if-none-match': `"${w.siteA.id}.r0"` })).status).toBe(200);

    expectStatus(await fx.patch(`/v1/targets/${w.tPlain.mac}`, { description: 'changed' }), 200);
    const changed = await snapshotOf(w.siteA.id, w.a1.token, { 'if-none-match': first.etag });
    const s = verifySnapshot(expectStatus(changed, 200), keys);
    expect(changed.headers.get('etag')).not.toBe(first.etag);
    expect(changed.headers.get('etag')).toBe(`"${w.siteA.id}.r${s.revision}"`);
    expect(s.revision).toBeGreaterThan(first.snapshot.revision);
    expect(s.targets.find((t) => t.mac === w.tPlain.mac)!.description).toBe('changed');
  });

  it('keeps its ETag and the farm revision across status reports', async () => {
    const first = await verified(w.siteA.id, w.a1.token);
    const rev = await revision();
    const app = await farm.api('GET', `/v1/appliances/${w.a1.appliance.id}`);
    for (const [e, sessions] of [[w.a1, 1], [w.a2, 2], [w.a1, 5]] as const) expect((await reportStatus(e, { status: statusBody({ sessions }) })).status).toBe(204);
    expect((await snapshotOf(w.siteA.id, w.a1.token, { 'if-none-match': first.etag })).status).toBe(304);
    expect(await revision()).toBe(rev);
    const after = await farm.api('GET', `/v1/appliances/${w.a1.appliance.id}`);
    expect(after.headers.get('etag')).toBe(app.headers.get('etag'));
    expect(after.body.version).toBe(app.body.version);
    expect(after.body.status.sessions).toBe(5);
  });

  it('is refused by verifySnapshot when one byte of the payload or the signature is changed, or the key is unknown', async () => {
    const { raw } = await verified(w.siteA.id, w.a1.token);
    const payload = Buffer.from(raw.payload, 'base64');
    const at = payload.indexOf(Buffer.from(w.siteA.id)) + 1;
    payload[at] = payload[at]! ^ 0x01;
    expect(() => verifySnapshot({ ...raw, payload: payload.toString('base64') }, keys)).toThrow(/signature does not match/);
    const sig = Buffer.from(raw.signature, 'base64');
    sig[sig.length - 1] = sig[sig.length - 1]! ^ 0x01;
    expect(() => verifySnapshot({ ...raw, signature: sig.toString('base64') }, keys)).toThrow(/signature does not match/);
    expect(() => verifySnapshot(raw, [])).toThrow(/unknown key/);
    expect(() => verifySnapshot({ ...raw, extra: 1 }, keys)).toThrow(/not a signed bootfarm snapshot/);
  });
});

/**
 * The repository in front of which the app sees its GSI-backed listings (by
 * parent, by site) lag: objects in `lag` show as they were (null: not there
 * yet), as DynamoDB's eventually consistent indexes do for a moment after a
 * write. Everything else is the real repository on DynamoDB Local.
 */
function laggingIndexes(repo: FarmRepo, lag: Map<string, Obj | null>): FarmRepo {
  return new Proxy(repo, {
    get(target, prop) {
      if (prop === 'list')
        return async (kind: Parameters<FarmRepo['list']>[0], q: Parameters<FarmRepo['list']>[1]) => {
          const page = await target.list(kind, q);
          if (!q.parent && !q.siteId) return page;
          return { ...page, items: page.items.flatMap((o) => (lag.has(o.id) ? (lag.get(o.id) ? [lag.get(o.id)!] : []) : [o])) };
        };
      const v = Reflect.get(target, prop, target);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
}

describe('site snapshot consistency', () => {
  it('holds every write up to the revision its ETag names, even while the site indexes lag', async () => {
    const lag = new Map<string, Obj | null>();
    const app = createApp({ repo: laggingIndexes(farm.repo, lag), blobs: farm.blobs, signer: farm.signer, log: () => {} });
    const get = async (etag?: string) => {
      const res = await app.request(`/v1/sites/${w.siteA.id}/snapshot`, { headers: { authorization: `Bearer ${w.a1.token}`, ...(etag ? { 'if-none-match': etag } : {}) } });
      return { status: res.status, etag: res.headers.get('etag')!, body: res.status === 200 ? verifySnapshot(await res.json(), keys) : null };
    };
    const first = await get();
    expect(first.status).toBe(200);

    // A new target and a changed one, both not yet visible in the indexes.
    const before = (await farm.repo.get('target', w.tTest.mac))!;
    const added = await fx.target(w.colA.id, { name: 'late-1', assignments: [{ vdiskId: w.vdisk.id }] });
    expectStatus(await fx.patch(`/v1/targets/${w.tTest.mac}`, { disabled: true }), 200);
    lag.set(added.mac, null);
    lag.set(w.tTest.mac, before);

    const next = await get(first.etag);
    expect(next.status).toBe(200);
    expect(next.etag).toBe(`"${w.siteA.id}.r${next.body!.revision}"`);
    // The appliance keeps this snapshot until the revision moves again (304): it must already hold both writes.
    expect(next.body!.targets.map((t) => t.mac)).toContain(added.mac);
    expect(next.body!.targets.find((t) => t.mac === w.tTest.mac)!.disabled).toBe(true);
    expect((await get(next.etag)).status).toBe(304);
    expectStatus(await fx.patch(`/v1/targets/${w.tTest.mac}`, { disabled: false }), 200);
    expect((await farm.api('DELETE', `/v1/targets/${added.mac}`)).status).toBe(204);
  });

  it('gives chunk URLs and manifests for a vDisk the snapshot just assigned, while the site index lags', async () => {
    const lag = new Map<string, Obj | null>();
    const app = createApp({ repo: laggingIndexes(farm.repo, lag), blobs: farm.blobs, signer: farm.signer, log: () => {} });
    const call = async (method: string, path: string, body?: unknown) => {
      const res = await app.request(path, { method, headers: { authorization: `Bearer ${w.a1.token}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
      return { status: res.status, headers: res.headers, body: await res.json() };
    };
    const before = (await farm.repo.get('target', w.tPlain.mac))!;
    expectStatus(await fx.patch(`/v1/targets/${w.tPlain.mac}`, { assignments: [{ vdiskId: w.other.id }] }), 200);
    lag.set(w.tPlain.mac, before);
    try {
      const snap = verifySnapshot(expectStatus(await call('GET', `/v1/sites/${w.siteA.id}/snapshot`), 200), keys);
      const need = neededVersions(snap).find((n) => n.vdiskId === w.other.id)!;
      expect(need).toMatchObject({ number: 0, targets: 1 });
      const m = verifyManifest(expectStatus(await call('GET', `/v1/vdisks/${w.other.id}/versions/0/manifest`), 200), keys);
      const hashes = m.chunks.filter((h): h is string => h !== null);
      expect(Object.keys(expectStatus(await call('POST', `/v1/sites/${w.siteA.id}/chunk-urls`, { vdiskId: w.other.id, number: 0, hashes }), 200).urls)).toEqual(hashes);
    } finally {
      expectStatus(await fx.patch(`/v1/targets/${w.tPlain.mac}`, { assignments: [] }), 200);
    }
    expectError(await farm.api('POST', `/v1/sites/${w.siteA.id}/chunk-urls`, { token: w.a1.token, body: { vdiskId: w.other.id, number: 0, hashes: [w.chunks[4]![0]] } }), 403, 'forbidden');
  });
});

describe('chunk URLs and manifests for appliances', () => {
  const chunkUrls = (body: unknown, token = w.a1.token, siteId = w.siteA.id) => farm.api('POST', `/v1/sites/${siteId}/chunk-urls`, { token, body });

  it("gives URLs that download exactly the chunks of a version the site uses, listed in its signed manifest", async () => {
    const manifest = verifyManifest(expectStatus(await farm.api('GET', `/v1/vdisks/${w.vdisk.id}/versions/4/manifest`, { token: w.a1.token }), 200), keys);
    expect(manifest.chunks).toEqual(w.chunks[4]);
    const hashes = manifest.chunks.filter((h): h is string => h !== null);
    expect(hashes).toHaveLength(5);
    const res = expectStatus(await chunkUrls({ vdiskId: w.vdisk.id, number: 4, hashes: [...hashes, hashes[0]] }), 200);
    expect(Object.keys(res.urls).sort()).toEqual([...hashes].sort());
    expect(res.expiresInSeconds).toBeGreaterThan(0);
    for (const h of hashes) {
      const got = await fetch(res.urls[h]);
      expect(got.status, h).toBe(200);
      const bytes = Buffer.from(await got.arrayBuffer());
      expect(bytes.length).toBe(CHUNK);
      expect(sha256(bytes)).toBe(h);
    }
  });

  it('refuses a hash the manifest does not list, naming hashes, even when that chunk exists in the farm', async () => {
    // Chunk 0 of version 3 is stored, but version 4 has other content there.
    const foreign = w.chunks[3]![0]!;
    expect(w.chunks[4]).not.toContain(foreign);
    const res = await chunkUrls({ vdiskId: w.vdisk.id, number: 4, hashes: [w.chunks[4]![0], foreign] });
    expect([400, 422]).toContain(res.status);
    expect(res.body.error.field).toBe('hashes');
    expect(res.body.error.message).toContain(foreign);
  });

  it("refuses a vDisk no target of the site uses (403), more than 500 hashes (400) and others' credentials", async () => {
    const otherHash = w.chunks[4]![0]!; // any well-formed hash
    expectError(await chunkUrls({ vdiskId: w.other.id, number: 0, hashes: [otherHash] }), 403, 'forbidden');
    const many = Array.from({ length: 501 }, (_, i) => sha256(Buffer.from(String(i))));
    expectError(await chunkUrls({ vdiskId: w.vdisk.id, number: 4, hashes: many }), 400, 'validation_failed', 'hashes');
    expectError(await chunkUrls({ vdiskId: w.vdisk.id, number: 4, hashes: ['ABC'] }), 400, 'validation_failed', 'hashes.0');
    expectError(await chunkUrls({ vdiskId: w.vdisk.id, number: 4, hashes: [] }), 400, 'validation_failed', 'hashes');
    expectError(await chunkUrls({ vdiskId: w.vdisk.id, number: 99, hashes: [otherHash] }), 404, 'not_found');
    // Only appliance credentials ask for chunk URLs.
    expectError(await chunkUrls({ vdiskId: w.vdisk.id, number: 4, hashes: [otherHash] }, farm.adminToken), 403, 'forbidden');
    expectError(await chunkUrls({ vdiskId: w.other.id, number: 0, hashes: [otherHash] }, w.b1.token, w.siteA.id), 403, 'forbidden');
  });

  it("serves the appliance the manifests of its site's vDisks and no others", async () => {
    expectStatus(await farm.api('GET', `/v1/vdisks/${w.vdisk.id}/versions/2/manifest`, { token: w.a2.token }), 200);
    expectError(await farm.api('GET', `/v1/vdisks/${w.other.id}/versions/0/manifest`, { token: w.a1.token }), 403, 'forbidden');
    expectStatus(await farm.api('GET', `/v1/vdisks/${w.other.id}/versions/0/manifest`, { token: w.b1.token }), 200);
    expectError(await farm.api('GET', `/v1/vdisks/${w.vdisk.id}/versions/2/manifest`, { token: w.b1.token }), 403, 'forbidden');
  });
});

describe('status reports', () => {
  it('records status and inventory; admins see them, replication follows them, the configuration version does not move', async () => {
    const before = await farm.api('GET', `/v1/appliances/${w.a2.appliance.id}`);
    const inventory = {
      reportedAt: new Date().toISOString(),
      versions: [
        { vdiskId: w.vdisk.id, number: 2, contentHash: w.hash[2], state: 'verified' },
        { vdiskId: w.vdisk.id, number: 3, contentHash: w.hash[3], state: 'syncing', percent: 40 },
        { vdiskId: w.vdisk.id, number: 4, contentHash: w.hash[3], state: 'verified' },
      ],
    };
    const status = statusBody({ sessions: 12, outboxPending: 2 });
    const t0 = Date.now();
    const res = await reportStatus(w.a2, { status, inventory });
    expect(res.status, JSON.stringify(res.body)).toBe(204);
    expect(res.body).toBeNull();
    const after = await farm.api('GET', `/v1/appliances/${w.a2.appliance.id}`);
    const a = expectStatus(after, 200);
    expect(Date.parse(a.lastHeartbeat)).toBeGreaterThanOrEqual(t0 - 1000);
    expect(a.status).toEqual(status);
    expect(a.inventory).toEqual(inventory);
    expect(a.version).toBe(before.body.version);
    expect(after.headers.get('etag')).toBe(before.headers.get('etag'));

    const m = expectStatus(await farm.api('GET', `/v1/vdisks/${w.vdisk.id}/replication`), 200);
    const cell = (n: number) => m.versions.find((v: any) => v.number === n).cells[w.a2.appliance.id];
    expect(cell(2)).toEqual({ state: 'up-to-date' });
    expect(cell(3)).toEqual({ state: 'in-progress', percent: 40 });
    // Verified, but with other content than version 4 has.
    expect(cell(4)).toEqual({ state: 'corrupt' });
    expect(m.appliances.find((x: any) => x.id === w.a2.appliance.id)).toMatchObject({ reachable: true, needed: true });

    // A report without inventory keeps the last one.
    expect((await reportStatus(w.a2, { status: statusBody({ sessions: 0 }) })).status).toBe(204);
    const again = expectStatus(await farm.api('GET', `/v1/appliances/${w.a2.appliance.id}`), 200);
    expect(again.inventory).toEqual(inventory);
    expect(again.status.sessions).toBe(0);
  });

  // An admin PATCH of an appliance reads it, then writes its whole data back on the condition that its
  // version did not move; heartbeats write beside it without moving the version (so they never change the
  // ETag). Reports live in their own attributes, so one landing between that read and write survives.
  it('keeps a report that lands while an admin updates the appliance', async () => {
    const inventory = { reportedAt: new Date().toISOString(), versions: [{ vdiskId: w.vdisk.id, number: 3, contentHash: w.hash[3], state: 'verified' }] };
    const repo = new Proxy(farm.repo, {
      get(target, prop) {
        if (prop === 'update')
          return (kind: any, id: string, expected: any, change: (cur: Obj) => any, actor: any) =>
            target.update(kind, id, expected, async (cur) => {
              if (kind === 'appliance' && id === w.a2.appliance.id) await target.reportStatus(id, { lastHeartbeat: new Date().toISOString(), status: statusBody() as any, inventory: inventory as any });
              return change(cur);
            }, actor);
        const v = Reflect.get(target, prop, target);
        return typeof v === 'function' ? v.bind(target) : v;
      },
    });
    const app = createApp({ repo, blobs: farm.blobs, signer: farm.signer, log: () => {} });
    const res = await app.request(`/v1/appliances/${w.a2.appliance.id}`, { method: 'PATCH', headers: { authorization: `Bearer ${farm.adminToken}`, 'content-type': 'application/json', 'if-match': '*' }, body: JSON.stringify({ description: 'patched' }) });
    expect(res.status).toBe(200);
    const a = expectStatus(await farm.api('GET', `/v1/appliances/${w.a2.appliance.id}`), 200);
    expect(a.description).toBe('patched');
    expect(a.inventory).toEqual(inventory);
  });

  it('refuses an invalid report with 400 naming the field', async () => {
    expectError(await reportStatus(w.a1, { status: statusBody({ sessions: -1 }) }), 400, 'validation_failed', 'status.sessions');
    expectError(await reportStatus(w.a1, { status: statusBody({ cpu: 3 }) }), 400, 'validation_failed', 'status.cpu');
    expectError(await reportStatus(w.a1, { status: statusBody(), uptime: 3 }), 400, 'validation_failed', 'uptime');
    const dup = { vdiskId: w.vdisk.id, number: 2, contentHash: w.hash[2], state: 'verified' };
    expectError(await reportStatus(w.a1, { status: statusBody(), inventory: { reportedAt: new Date().toISOString(), versions: [dup, dup] } }), 400, 'validation_failed', 'inventory.versions');
    expectError(await reportStatus(w.a1, { inventory: { reportedAt: new Date().toISOString(), versions: [] } }), 400, 'validation_failed', 'status');
  });

  it('is refused for other credentials than the appliance itself', async () => {
    const siteAdmin = await farm.token({ role: 'site-admin', siteId: w.siteA.id });
    for (const token of [farm.adminToken, siteAdmin, w.a2.token, w.b1.token])
      expectError(await farm.api('PUT', `/v1/appliances/${w.a1.appliance.id}/status`, { token, body: { status: statusBody() } }), 403, 'forbidden');
  });
});

describe('events', () => {
  beforeAll(async () => {
    // Auto-add on for site A: new targets join its default collection with the template's settings.
    expectStatus(await fx.patch(`/v1/collections/${w.colA.id}`, { templateTargetMac: w.tProd.mac }), 200);
    expectStatus(await fx.patch(`/v1/sites/${w.siteA.id}`, { defaultCollectionId: w.colA.id }), 200);
    expectStatus(await fx.patch('/v1/farm', { autoAdd: { enabled: true, siteId: w.siteA.id } }), 200);
  });

  it('takes only MAC and name from an auto-add event: the rest comes from the farm, so no other vDisk can be reached', async () => {
    const mac = macOf(0xa201);
    // The appliance asks for the other site's vDisk, as maintenance: it gets the template's assignment and type.
    const e = autoAdd({ mac, name: 'grab-1', collectionId: w.colA.id, assignments: [{ vdiskId: w.other.id }], type: 'maintenance', personality: [{ name: 'x', value: 'y' }] });
    expect(expectStatus(await deliver(w.a1, [e]), 200).results[0]).toMatchObject({ outcome: 'created', targetId: mac });
    expect(expectStatus(await farm.api('GET', `/v1/targets/${mac}`), 200)).toMatchObject({ assignments: [{ vdiskId: w.vdisk.id }], type: w.tProd.type, personality: w.tProd.personality });
    expectError(await farm.api('GET', `/v1/vdisks/${w.other.id}/versions/0/manifest`, { token: w.a1.token }), 403, 'forbidden');
  });

  it('rejects auto-add while the farm has it off, for a site it is not on for, and outside the default collection', async () => {
    const colA2 = await fx.collection(w.siteA.id);
    const inOther = expectStatus(await deliver(w.a1, [autoAdd({ mac: macOf(0xa301), name: 'nondefault-1', collectionId: colA2.id })]), 200).results[0];
    expect(inOther).toMatchObject({ outcome: 'rejected', message: expect.stringContaining('not the default collection') });
    const forB = expectStatus(await deliver(w.b1, [autoAdd({ mac: macOf(0xa302), name: 'siteb-1', collectionId: w.colB.id })]), 200).results[0];
    expect(forB).toMatchObject({ outcome: 'rejected', message: expect.stringContaining(`auto-add adds targets to site ${w.siteA.id}`) });
    expectStatus(await fx.patch('/v1/farm', { autoAdd: { enabled: false, siteId: w.siteA.id } }), 200);
    try {
      const off = expectStatus(await deliver(w.a1, [autoAdd({ mac: macOf(0xa303), name: 'off-1', collectionId: w.colA.id })]), 200).results[0];
      expect(off).toMatchObject({ outcome: 'rejected', message: 'auto-add is off for the farm' });
    } finally {
      expectStatus(await fx.patch('/v1/farm', { autoAdd: { enabled: true, siteId: w.siteA.id } }), 200);
    }
    for (const m of [0xa301, 0xa302, 0xa303]) expectError(await farm.api('GET', `/v1/targets/${macOf(m)}`), 404, 'not_found');
  });

  it('records a boot, creates an auto-added target, and recognises the batch when delivered again', async () => {
    const mac = macOf(0xa001);
    const batch = [bootEvent(w.tProd.mac, null), autoAdd({ mac, name: 'offline-1', collectionId: w.colA.id, assignments: [{ vdiskId: w.vdisk.id }] })];
    const first = expectStatus(await deliver(w.a1, batch), 200);
    expect(first.results).toEqual([
      { id: batch[0]!.id, outcome: 'recorded' },
      { id: batch[1]!.id, outcome: 'created', targetId: mac },
    ]);
    const t = expectStatus(await farm.api('GET', `/v1/targets/${mac}`), 200);
    expect(t).toMatchObject({ mac, name: 'offline-1', collectionId: w.colA.id, siteId: w.siteA.id, assignments: [{ vdiskId: w.vdisk.id }], type: 'production', disabled: false });
    const count = (await siteTargets(w.siteA.id)).length;

    // Redelivery (the appliance did not see the answer), also by its peer: nothing is applied twice.
    for (const e of [w.a1, w.a2]) {
      const again = expectStatus(await deliver(e, batch), 200);
      expect(again.results.map((r: any) => [r.id, r.outcome])).toEqual(batch.map((b) => [b.id, 'duplicate']));
      expect(again.results[1].targetId).toBe(mac);
    }
    expect((await siteTargets(w.siteA.id)).length).toBe(count);
    const events = (await fx.listAll(`/v1/sites/${w.siteA.id}/events`)).items;
    expect(events.filter((e) => batch.some((b) => b.id === e.id))).toHaveLength(2);
  });

  it('answers exists for a MAC the farm knows, renamed for a taken name, rejected for a collection of another site', async () => {
    // The collection's auto-add naming is target-NNNN from 1; target-0001 is taken too.
    const taken = await fx.target(w.colA.id, { name: 'target-0001' });
    const [m1, m2, m3, m4] = [macOf(0xa101), macOf(0xa102), macOf(0xa103), macOf(0xa104)];
    const batch = [
      autoAdd({ mac: w.tProd.mac, name: 'whatever-1', collectionId: w.colA.id }),
      autoAdd({ mac: m1, name: w.tPlain.name, collectionId: w.colA.id }),
      autoAdd({ mac: m2, name: 'rejected-1', collectionId: w.colB.id }),
      // A name taken by a target of another site: target names are unique in the whole farm.
      autoAdd({ mac: m3, name: w.tB.name, collectionId: w.colA.id }),
      autoAdd({ mac: m4, name: 'bad-ref', collectionId: 'col_doesnotexists234' }),
    ];
    const { results } = expectStatus(await deliver(w.a1, batch), 200);
    expect(results[0]).toEqual({ id: batch[0]!.id, outcome: 'exists', targetId: w.tProd.mac });
    expect(results[1]).toMatchObject({ id: batch[1]!.id, outcome: 'renamed', targetId: m1 });
    expect(results[1].message).toContain('target-0002');
    expect(results[2]).toMatchObject({ id: batch[2]!.id, outcome: 'rejected' });
    expect(results[2].message).toContain(w.colB.id);
    expect(results[3], JSON.stringify(results[3])).toMatchObject({ id: batch[3]!.id, outcome: 'renamed', targetId: m3 });
    expect(results[4]).toMatchObject({ id: batch[4]!.id, outcome: 'rejected' });

    expect(expectStatus(await farm.api('GET', `/v1/targets/${m1}`), 200)).toMatchObject({ name: 'target-0002', collectionId: w.colA.id });
    expect(expectStatus(await farm.api('GET', `/v1/targets/${m3}`), 200)).toMatchObject({ name: 'target-0003', collectionId: w.colA.id, siteId: w.siteA.id });
    expectError(await farm.api('GET', `/v1/targets/${m2}`), 404, 'not_found');
    expectError(await farm.api('GET', `/v1/targets/${m4}`), 404, 'not_found');
    // The known target is left alone.
    expect(expectStatus(await farm.api('GET', `/v1/targets/${w.tProd.mac}`), 200).name).toBe(w.tProd.name);
    expect(taken.name).toBe('target-0001');

    // A redelivery reports the first outcome's target, as a duplicate.
    const again = expectStatus(await deliver(w.a1, batch), 200).results;
    expect(again.map((r: any) => r.outcome)).toEqual(['duplicate', 'duplicate', 'duplicate', 'duplicate', 'duplicate']);
    expect(again[1].targetId).toBe(m1);
  });

  // A target's id is its MAC: a boot event of a known target names it so.
  it('accepts a boot event that names the target by its id, its MAC', async () => {
    const e = bootEvent(w.tProd.mac, w.tProd.mac);
    expect(expectStatus(await deliver(w.a1, [e]), 200).results).toEqual([{ id: e.id, outcome: 'recorded' }]);
  });

  it('refuses a malformed batch with 400 naming the field', async () => {
    expectError(await deliver(w.a1, []), 400, 'validation_failed', 'events');
    expectError(await deliver(w.a1, [{ ...bootEvent(w.tProd.mac, null), id: 'not-an-id' }]), 400, 'validation_failed', 'events.0.id');
    expectError(await deliver(w.a1, [{ ...bootEvent(w.tProd.mac, null), type: 'reboot' }]), 400, 'validation_failed');
    const tooMany = Array.from({ length: 101 }, () => bootEvent(w.tProd.mac, null));
    expectError(await deliver(w.a1, tooMany), 400, 'validation_failed', 'events');
  });

  it("lists a site's events newest first for its admins and readers; another site's admin gets 403", async () => {
    const e = [bootEvent(w.tTest.mac, null), { id: eventId(), at: new Date(eventClock).toISOString(), type: 'notice', data: { level: 'warn', message: 'cache 90 % full' } }];
    expectStatus(await deliver(w.a2, e), 200);
    const readOnly = await farm.token({ role: 'read-only', siteId: w.siteA.id });
    const siteAdminA = await farm.token({ role: 'site-admin', siteId: w.siteA.id });
    for (const token of [farm.adminToken, siteAdminA, readOnly]) {
      const { items } = await fx.listAll(`/v1/sites/${w.siteA.id}/events`, { token, limit: 3 });
      expect(items.length).toBeGreaterThanOrEqual(9);
      expect(items.map((i) => i.id)).toEqual(items.map((i) => i.id).sort().reverse());
      expect(items[0]).toMatchObject({ id: e[1]!.id, siteId: w.siteA.id, applianceId: w.a2.appliance.id, type: 'notice', result: { outcome: 'recorded' } });
      expect(items[1]).toMatchObject({ id: e[0]!.id, type: 'boot', data: { mac: w.tTest.mac } });
    }
    // Site B holds only its own appliance's (rejected) auto-add, none of site A's events.
    expect(expectStatus(await farm.api('GET', `/v1/sites/${w.siteB.id}/events`), 200).items.map((i: any) => [i.applianceId, i.type, i.result.outcome])).toEqual([[w.b1.appliance.id, 'target-auto-added', 'rejected']]);
    const siteAdminB = await farm.token({ role: 'site-admin', siteId: w.siteB.id });
    expectError(await farm.api('GET', `/v1/sites/${w.siteA.id}/events`, { token: siteAdminB }), 403, 'forbidden');
  });
});

describe('last boot and activity history (the console)', () => {
  const bootIdAt = (at: string) => Date.parse(at).toString(16).padStart(12, '0') + randomBytes(4).toString('hex');
  const bootWithId = (mac: string, at = new Date((eventClock += 1000)).toISOString()) => {
    const e = { ...bootEvent(mac, mac), at };
    return { ...e, data: { ...e.data, bootId: bootIdAt(at) } };
  };
  const completed = (mac: string, bootId: string, durationMs: number) => {
    const bootStartedAt = new Date(parseInt(bootId.slice(0, 12), 16)).toISOString();
    return { id: eventId(), at: new Date(Date.parse(bootStartedAt) + durationMs).toISOString(), type: 'boot-completed', data: { mac, vdiskId: w.vdisk.id, version: 2, bootId, bootStartedAt, durationMs } };
  };
  const lastBoot = async (mac: string) => expectStatus(await farm.api('GET', `/v1/targets/${mac}`), 200).lastBoot;

  it("records a target's last boot from the script's event and the OS's completion, in either order, once", async () => {
    const revisionBefore = await revision();
    const boot = bootWithId(w.tTest.mac);
    expectStatus(await deliver(w.a1, [boot]), 200);
    expect(await lastBoot(w.tTest.mac)).toEqual({
      at: boot.at, bootId: boot.data.bootId, applianceId: w.a1.appliance.id, outcome: 'vdisk', vdiskId: w.vdisk.id, version: 2, streamingApplianceId: w.a1.appliance.id, message: '', completedAt: null, completedOn: null, durationMs: null,
    });
    // The OS attached its disk on a2 (the balancer sent it there) 8.5 s after the script.
    const done = completed(w.tTest.mac, boot.data.bootId, 8500);
    expectStatus(await deliver(w.a2, [done]), 200);
    expect(await lastBoot(w.tTest.mac)).toMatchObject({ at: boot.at, applianceId: w.a1.appliance.id, completedAt: done.at, completedOn: w.a2.appliance.id, durationMs: 8500 });
    // A second connection of the same boot (another event id) does not move the end of the boot.
    expectStatus(await deliver(w.a1, [completed(w.tTest.mac, boot.data.bootId, 20_000)]), 200);
    expect((await lastBoot(w.tTest.mac)).durationMs).toBe(8500);
    // Device status is not configuration: no revision, no audit, and not in the signed snapshot appliances boot from.
    expect(await revision()).toBe(revisionBefore);
    const snap = verifySnapshot(expectStatus(await snapshotOf(w.siteA.id, w.a1.token), 200), keys);
    expect(snap.targets.find((t) => t.mac === w.tTest.mac)!.lastBoot).toBeNull();

    // A reboot 40 s later is a boot of its own; its completion arrives before its script's event (two outboxes).
    const next = bootWithId(w.tTest.mac, new Date(Date.parse(boot.at) + 40_000).toISOString());
    eventClock += 60_000;
    expectStatus(await deliver(w.a2, [completed(w.tTest.mac, next.data.bootId, 4200)]), 200);
    expect(await lastBoot(w.tTest.mac)).toMatchObject({ at: next.at, bootId: next.data.bootId, applianceId: null, streamingApplianceId: w.a2.appliance.id, durationMs: 4200 });
    expectStatus(await deliver(w.a1, [next]), 200);
    expect(await lastBoot(w.tTest.mac)).toMatchObject({ at: next.at, applianceId: w.a1.appliance.id, durationMs: 4200, completedOn: w.a2.appliance.id });
    // The first boot's events delivered again, late, change nothing.
    expectStatus(await deliver(w.a1, [{ ...boot, id: eventId() }, completed(w.tTest.mac, boot.data.bootId, 1)]), 200);
    expect((await lastBoot(w.tTest.mac)).at).toBe(next.at);
  });

  it('refuses boot records from a clock far ahead (they would pin the last boot), and lets a slightly fast clock through', async () => {
    const ahead = bootWithId(w.tPlain.mac, new Date(Date.now() + 3_600_000).toISOString());
    const r = expectStatus(await deliver(w.a1, [ahead]), 200).results[0];
    expect(r).toMatchObject({ outcome: 'rejected', message: expect.stringContaining("ahead of the control plane's clock") });
    expect(await lastBoot(w.tPlain.mac)).toBeNull();
    const fast = bootWithId(w.tPlain.mac, new Date(Date.now() + 60_000).toISOString());
    expect(expectStatus(await deliver(w.a1, [fast]), 200).results[0].outcome).toBe('recorded');
    expect((await lastBoot(w.tPlain.mac)).at).toBe(fast.at);
  });

  it("does not let an appliance write another site's target, and ignores MACs the farm does not know", async () => {
    const before = await lastBoot(w.tB.mac);
    const b = bootWithId(w.tB.mac);
    expectStatus(await deliver(w.a1, [b, completed(w.tB.mac, b.data.bootId, 1)]), 200);
    expect(await lastBoot(w.tB.mac)).toEqual(before);
    const unknown = expectStatus(await deliver(w.a1, [completed(macOf(0xa9f1), bootIdAt(new Date().toISOString()), 1)]), 200).results[0];
    expect(unknown.outcome).toBe('recorded');
    expectError(await farm.api('GET', `/v1/targets/${macOf(0xa9f1)}`), 404, 'not_found');
  });

  it('keeps one sample a minute for the last hour; readers of the site see it, others get 403', async () => {
    const now = Date.now();
    const at = (minutesAgo: number) => new Date(now - minutesAgo * 60_000).toISOString();
    const id = w.a1.appliance.id;
    // Written as the status route writes them; 61 minutes ago is past the hour (its slot was not written again since).
    for (const [ago, sessions, bytes] of [[61, 9, 0], [30, 4, 1_000], [2, 5, 61_000], [0, 6, 181_000]] as const)
      await farm.repo.reportStatus(id, { lastHeartbeat: at(ago), status: statusBody({ sessions, bytesServed: bytes, startedAt: '2026-03-01T11:00:00.000Z' }) as any });
    // The route writes the same sample: the current minute's last report stands for it.
    expect((await reportStatus(w.a1, { status: statusBody({ sessions: 7, bytesServed: 241_000, sessionsByVdisk: { [w.vdisk.id]: 7 } }) })).status).toBe(204);
    const readOnlyA = await farm.token({ role: 'read-only', siteId: w.siteA.id });
    const { samples } = expectStatus(await farm.api('GET', `/v1/appliances/${id}/history`, { token: readOnlyA }), 200);
    // (Unless the minute turned between the two writes: then both are there.)
    const turned = Math.floor(now / 60_000) !== Math.floor(Date.now() / 60_000);
    expect(samples.map((x: any) => [x.sessions, x.bytesServed])).toEqual([[4, 1_000], [5, 61_000], ...(turned ? [[6, 181_000]] : []), [7, 241_000]]);
    expect(samples.map((x: any) => x.at)).toEqual([...samples.map((x: any) => x.at)].sort());
    const siteAdminB = await farm.token({ role: 'site-admin', siteId: w.siteB.id });
    expectError(await farm.api('GET', `/v1/appliances/${id}/history`, { token: siteAdminB }), 403, 'forbidden');
    expectError(await farm.api('GET', `/v1/appliances/${id}/history`, { token: w.a1.token }), 403, 'forbidden');
    expectError(await farm.api('GET', '/v1/appliances/app_doesnotexist2345/history'), 404, 'not_found');
    expect(expectStatus(await farm.api('GET', `/v1/appliances/${id}`), 200).status.sessionsByVdisk).toEqual({ [w.vdisk.id]: 7 });
  });
});

describe('deleting an enrolled appliance', () => {
  it('is refused while its credential exists; after the credential is revoked it gets 401 and the appliance can go', async () => {
    const e = await enrolled(w.siteA.id, 'doomed');
    const secretBefore = verifySnapshot(expectStatus(await snapshotOf(w.siteA.id, e.token), 200), keys).peerSecret;
    const refused = await farm.api('DELETE', `/v1/appliances/${e.appliance.id}`);
    expectError(refused, 409, 'in_use');
    expect(refused.body.error.message).toContain('token');
    expectStatus(await farm.api('GET', `/v1/appliances/${e.appliance.id}`), 200);

    expect((await farm.api('DELETE', `/v1/tokens/${e.tokenId}`)).status).toBe(204);
    expectError(await snapshotOf(w.siteA.id, e.token), 401, 'unauthenticated');
    expectError(await reportStatus(e, { status: statusBody() }), 401, 'unauthenticated');
    expect((await farm.api('DELETE', `/v1/appliances/${e.appliance.id}`)).status).toBe(204);
    expectError(await farm.api('GET', `/v1/appliances/${e.appliance.id}`), 404, 'not_found');
    // What it knew opens no peer of the site any more.
    const secretAfter = verifySnapshot(expectStatus(await snapshotOf(w.siteA.id, w.a1.token), 200), keys).peerSecret;
    expect(secretAfter).not.toBe(secretBefore);
  });
});
