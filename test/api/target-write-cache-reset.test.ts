/**
 * POST /v1/targets/{mac}/write-cache/reset: an administrator asks for a
 * target's persistent write cache to be emptied at its next boot (PVS: a
 * persistent cache on server is kept until an administrator resets it).
 */
import { serve } from '@hono/node-server';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../cli/main.js';
import { verifySnapshot, type SigningKey } from '../../model/index.js';
import { expectError, expectStatus, fixtures, type Fixtures } from '../support/fixtures.js';
import { SYSTEM, testFarm, type TestFarm } from '../support/farm.js';

/** A clock the tests move; every reading is 1 ms later. */
let now = Date.parse('2030-06-01T08:00:00.000Z');
const clock = () => new Date(now++);

let farm: TestFarm;
let fx: Fixtures;
let siteA: any;
let siteB: any;
let colA: any;
let colB: any;
let keys: SigningKey[];
const tokens: Record<string, string> = {};

beforeAll(async () => {
  farm = await testFarm({ clock });
  fx = fixtures(farm);
  siteA = await fx.site();
  siteB = await fx.site();
  colA = await fx.collection(siteA.id);
  colB = await fx.collection(siteB.id);
  keys = expectStatus(await farm.api('GET', '/v1/signing-keys'), 200).keys;
  tokens['site-admin'] = await farm.token({ role: 'site-admin', siteId: siteA.id });
  tokens['device-operator'] = await farm.token({ role: 'device-operator', siteId: siteA.id });
  tokens['device-operator (farm-wide)'] = await farm.token({ role: 'device-operator' });
  tokens['read-only'] = await farm.token({ role: 'read-only', siteId: siteA.id });
  tokens['read-only (farm-wide)'] = await farm.token({ role: 'read-only' });
});

const reset = (mac: string, o: { token?: string; headers?: Record<string, string> } = {}) => farm.api('POST', `/v1/targets/${mac}/write-cache/reset`, o);
const revision = async () => expectStatus(await farm.api('GET', '/v1/farm'), 200).revision as number;
const auditOf = async (mac: string) => (await fx.listAll(`/v1/audit?objectType=target&objectId=${encodeURIComponent(mac)}`)).items;

describe('POST /v1/targets/{mac}/write-cache/reset', () => {
  it('starts as null on a new target', async () => {
    const t = await fx.target(colA.id);
    expect(t.writeCacheResetAt).toBeNull();
    expect(expectStatus(await farm.api('GET', `/v1/targets/${t.mac}`), 200).writeCacheResetAt).toBeNull();
  });

  it('sets writeCacheResetAt to now, bumps the version and the farm revision, and returns the target', async () => {
    const t = await fx.target(colA.id);
    const before = await revision();
    const t0 = now;
    const res = await reset(t.mac);
    const body = expectStatus(res, 200);
    expect(body).toMatchObject({ id: t.mac, mac: t.mac, name: t.name, version: t.version + 1 });
    expect(Date.parse(body.writeCacheResetAt)).toBeGreaterThanOrEqual(t0);
    expect(Date.parse(body.writeCacheResetAt)).toBeLessThan(now);
    expect(Object.keys(body)[0]).toBe('id');
    expect(res.headers.get('etag')).toBe(`"${t.version + 1}"`);
    const rev = Number(res.headers.get('x-farm-revision'));
    expect(rev).toBeGreaterThan(before);
    expect(await revision()).toBe(rev);
    expect(expectStatus(await farm.api('GET', `/v1/targets/${t.mac}`), 200)).toEqual(body);

    // A second reset is a new request: a later time, a new version and revision.
    const again = expectStatus(await reset(t.mac), 200);
    expect(Date.parse(again.writeCacheResetAt)).toBeGreaterThan(Date.parse(body.writeCacheResetAt));
    expect(again.version).toBe(body.version + 1);
    expect(await revision()).toBeGreaterThan(rev);
  });

  it('records an audit entry with the old and new value and the actor', async () => {
    const t = await fx.target(colA.id);
    const first = expectStatus(await reset(t.mac, { token: tokens['device-operator'] }), 200);
    const second = expectStatus(await reset(t.mac), 200);
    const [r2, r1, created] = await auditOf(t.mac);
    expect(created.action).toBe('create');
    expect(r1).toMatchObject({ action: 'update', objectType: 'target', objectId: t.mac, siteId: siteA.id, actor: { role: 'device-operator' } });
    expect(r1.changes).toEqual([{ property: 'writeCacheResetAt', old: null, new: first.writeCacheResetAt }]);
    expect(r2).toMatchObject({ action: 'update', actor: { name: 'admin', role: 'farm-admin' } });
    expect(r2.changes).toEqual([{ property: 'writeCacheResetAt', old: first.writeCacheResetAt, new: second.writeCacheResetAt }]);
  });

  it("reaches the site's appliances in the signed snapshot", async () => {
    const t = await fx.target(colA.id);
    const res = await reset(t.mac);
    const r = expectStatus(res, 200);
    const snap = verifySnapshot(expectStatus(await farm.api('GET', `/v1/sites/${siteA.id}/snapshot`), 200), keys);
    expect(snap.revision).toBeGreaterThanOrEqual(Number(res.headers.get('x-farm-revision')));
    expect(snap.targets.find((x) => x.mac === t.mac)?.writeCacheResetAt).toBe(r.writeCacheResetAt);
  });

  it('treats a target stored before the field existed as never reset', async () => {
    const t = await fx.target(colA.id);
    // Stored as an older release wrote it: no writeCacheResetAt at all.
    await farm.repo.update('target', t.mac, null, ({ writeCacheResetAt: _w, ...cur }) => ({ ...cur, description: 'old release' }), SYSTEM);
    expect('writeCacheResetAt' in (await farm.repo.get('target', t.mac))!).toBe(false);
    expect(expectStatus(await farm.api('GET', `/v1/targets/${t.mac}`), 200).writeCacheResetAt).toBeNull();
    const snap = verifySnapshot(expectStatus(await farm.api('GET', `/v1/sites/${siteA.id}/snapshot`), 200), keys);
    expect(snap.targets.find((x) => x.mac === t.mac)?.writeCacheResetAt).toBeNull();
    // A PATCH keeps it absent (no audit noise); a reset sets it.
    expectStatus(await fx.patch(`/v1/targets/${t.mac}`, { description: 'patched' }), 200);
    expect((await auditOf(t.mac))[0].changes).toEqual([{ property: 'description', old: 'old release', new: 'patched' }]);
    const r = expectStatus(await reset(t.mac), 200);
    expect(typeof r.writeCacheResetAt).toBe('string');
    expect((await auditOf(t.mac))[0].changes).toEqual([{ property: 'writeCacheResetAt', old: null, new: r.writeCacheResetAt }]);
  });

  it.each(['52-54-00-AA-BB-01', '5254.00aa.bb01', '525400AABB01', '52:54:00:aa:bb:01'])('accepts the MAC spelled %s', async (spelling) => {
    const mac = '52:54:00:aa:bb:01';
    if (!(await farm.repo.get('target', mac))) await fx.target(colA.id, { mac });
    const r = expectStatus(await reset(encodeURIComponent(spelling)), 200);
    expect(r.mac).toBe(mac);
  });

  it('answers 404 with the JSON error for an unknown MAC, and 400 for a malformed one', async () => {
    const before = await revision();
    expectError(await reset('52:54:00:ff:ff:fe'), 404, 'not_found');
    expectError(await reset('not-a-mac'), 400, 'validation_failed', 'mac');
    expect(await revision()).toBe(before);
  });

  it('honours If-Match when given: a stale ETag is 409 and changes nothing', async () => {
    const t = await fx.target(colA.id);
    expectStatus(await reset(t.mac, { headers: { 'if-match': `"${t.version}"` } }), 200);
    expectError(await reset(t.mac, { headers: { 'if-match': `"${t.version}"` } }), 409, 'version_mismatch');
    expectError(await reset(t.mac, { headers: { 'if-match': 'nope' } }), 400, 'bad_request');
    expect(expectStatus(await farm.api('GET', `/v1/targets/${t.mac}`), 200).version).toBe(t.version + 1);
  });

  it.each([
    ['site-admin', () => colA, 200],
    ['device-operator', () => colA, 200],
    ['device-operator (farm-wide)', () => colB, 200],
    ['read-only', () => colA, 403],
    ['read-only (farm-wide)', () => colA, 403],
    ['site-admin', () => colB, 403],
    ['device-operator', () => colB, 403],
  ] as const)('%s on a target of %s: %i', async (role, col, status) => {
    const t = await fx.target(col().id);
    const res = await reset(t.mac, { token: tokens[role] });
    if (status === 200) {
      expect(typeof expectStatus(res, 200).writeCacheResetAt).toBe('string');
      return;
    }
    expectError(res, 403, 'forbidden');
    expect(res.body.error.message).toContain(role.split(' ')[0]);
    const after = expectStatus(await farm.api('GET', `/v1/targets/${t.mac}`), 200);
    expect(after).toEqual(t);
  });

  it('refuses an appliance credential', async () => {
    const t = await fx.target(colA.id);
    const enrol = expectStatus(await farm.api('POST', '/v1/tokens', { body: { name: fx.name('enrol'), role: 'appliance-enrol', siteId: siteA.id } }), 201).token;
    const cred = expectStatus(await farm.api('POST', '/v1/appliances/enrol', { token: enrol, body: { name: fx.name('app'), managementAddress: '192.0.2.10' } }), 201).token;
    expectError(await reset(t.mac, { token: cred }), 403, 'forbidden');
  });
});

describe('writeCacheResetAt is read-only', () => {
  it('is refused in a create body, naming the field', async () => {
    expectError(
      await farm.api('POST', '/v1/targets', { body: { mac: fx.nextMac(), name: fx.name('t'), collectionId: colA.id, writeCacheResetAt: '2030-01-01T00:00:00.000Z' } }),
      400,
      'validation_failed',
      'writeCacheResetAt',
    );
  });

  it('is refused in a PATCH, like lastBoot, for admins and device operators alike', async () => {
    const t = await fx.target(colA.id);
    for (const token of [farm.adminToken, tokens['device-operator']!]) {
      expectError(await fx.patch(`/v1/targets/${t.mac}`, { writeCacheResetAt: '2030-01-01T00:00:00.000Z' }, { token }), 400, 'validation_failed', 'writeCacheResetAt');
      expectError(await fx.patch(`/v1/targets/${t.mac}`, { writeCacheResetAt: null }, { token }), 400, 'validation_failed', 'writeCacheResetAt');
    }
    expect(expectStatus(await farm.api('GET', `/v1/targets/${t.mac}`), 200)).toEqual(t);
  });

  it('is kept by a PATCH of other fields', async () => {
    const t = await fx.target(colA.id);
    const r = expectStatus(await reset(t.mac), 200);
    const p = expectStatus(await fx.patch(`/v1/targets/${t.mac}`, { disabled: true }, { token: tokens['device-operator'] }), 200);
    expect(p).toMatchObject({ disabled: true, writeCacheResetAt: r.writeCacheResetAt });
  });

  it('is documented in the OpenAPI document: the field and the route', async () => {
    const doc = expectStatus(await farm.api('GET', '/v1/openapi.json', { token: null }), 200);
    expect(doc.components.schemas.Target.properties.writeCacheResetAt).toBeDefined();
    const op = doc.paths['/v1/targets/{mac}/write-cache/reset']?.post;
    expect(op).toBeDefined();
    expect(Object.keys(op.responses)).toEqual(expect.arrayContaining(['200', '403', '404']));
  });
});

describe('bootfarm target reset-cache', () => {
  let server: ReturnType<typeof serve>;
  let api: string;
  beforeAll(async () => {
    await new Promise<void>((ok) => {
      server = serve({ fetch: farm.app.fetch, port: 0, hostname: '127.0.0.1' }, (info: AddressInfo) => {
        api = `http://127.0.0.1:${info.port}`;
        ok();
      });
    });
  });
  afterAll(async () => {
    await new Promise<void>((ok) => server?.close(() => ok()));
  });

  async function cli(...args: string[]) {
    const out: string[] = [];
    const err: string[] = [];
    const code = await main(['--api', api, '--token', farm.adminToken, ...args], { log: (s) => out.push(s), err: (s) => err.push(s) });
    return { code, stdout: out.join('\n'), stderr: err.join('\n') };
  }

  it('resets by name and by MAC in any spelling, printing one line', async () => {
    const t = await fx.target(colA.id, { name: 'KIOSK-7' });
    const r = await cli('target', 'reset-cache', 'kiosk-7');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe(`write cache of target KIOSK-7 (${t.mac}) will be emptied at its next boot`);
    const r2 = await cli('target', 'reset-cache', t.mac.toUpperCase().replaceAll(':', '-'));
    expect(r2.code, r2.stderr).toBe(0);
    expect((await auditOf(t.mac)).filter((a) => a.changes.some((c: any) => c.property === 'writeCacheResetAt'))).toHaveLength(2);
  });

  it('prints the target with --json', async () => {
    const t = await fx.target(colA.id);
    const r = await cli('--json', 'target', 'reset-cache', t.mac);
    expect(r.code, r.stderr).toBe(0);
    const body = JSON.parse(r.stdout);
    expect(body).toEqual(expectStatus(await farm.api('GET', `/v1/targets/${t.mac}`), 200));
    expect(typeof body.writeCacheResetAt).toBe('string');
  });

  it('says which target it does not know, and relays a 403', async () => {
    const r = await cli('target', 'reset-cache', 'nope');
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('no target named "nope"');
    const t = await fx.target(colA.id);
    const out: string[] = [];
    const err: string[] = [];
    const code = await main(['--api', api, '--token', tokens['read-only']!, 'target', 'reset-cache', t.mac], { log: (s) => out.push(s), err: (s) => err.push(s) });
    expect(code).toBe(1);
    expect(err.join('\n')).toContain('HTTP 403 forbidden');
  });
});
