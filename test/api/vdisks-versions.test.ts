import { beforeAll, describe, expect, it } from 'vitest';
import { expectError, expectStatus, fixtures, type Fixtures } from '../support/fixtures.js';
import { testFarm, type TestFarm } from '../support/farm.js';

let farm: TestFarm;
let fx: Fixtures;
let storeId: string;
beforeAll(async () => {
  farm = await testFarm();
  fx = fixtures(farm);
  storeId = (await fx.store()).id;
});

const versions = async (vdiskId: string) => expectStatus(await farm.api('GET', `/v1/vdisks/${vdiskId}/versions`), 200).items as any[];
const setState = (vdiskId: string, n: number, state: string) => fx.patch(`/v1/vdisks/${vdiskId}/versions/${n}`, { state });

describe('/v1/vdisks', () => {
  it('creates a vDisk with PVS defaults', async () => {
    const res = await farm.api('POST', '/v1/vdisks', { body: { storeId, name: 'win11-22h2', sizeBytes: 64 * 2 ** 30 } });
    const vdisk = expectStatus(res, 201);
    expect(vdisk.id).toMatch(/^vd_[a-z2-7]{16}$/);
    expect(res.headers.get('location')).toBe(`/v1/vdisks/${vdisk.id}`);
    expect(res.headers.get('etag')).toBe('"1"');
    expect(res.headers.get('x-farm-revision')).toMatch(/^\d+$/);
    expect(vdisk).toMatchObject({ storeId, sectorSize: 512, accessMode: 'standard', writeCacheType: 'device-ram-overflow', loadBalancing: { mode: 'algorithm', applianceId: null }, subnetAffinity: 'none' });
  });

  it('gets, updates with If-Match and deletes a vDisk', async () => {
    const vdisk = await fx.vdisk(storeId);
    expect(expectStatus(await farm.api('GET', `/v1/vdisks/${vdisk.id}`), 200)).toEqual(vdisk);
    const res = await farm.api('PATCH', `/v1/vdisks/${vdisk.id}`, { body: { writeCacheType: 'device-ram', description: 'golden image' }, headers: { 'if-match': '"1"' } });
    expect(expectStatus(res, 200)).toMatchObject({ writeCacheType: 'device-ram', description: 'golden image', version: 2 });
    expect((await farm.api('DELETE', `/v1/vdisks/${vdisk.id}`)).status).toBe(204);
    expectError(await farm.api('GET', `/v1/vdisks/${vdisk.id}`), 404, 'not_found');
  });

  it('lists the vDisks of one store with ?storeId across pages', async () => {
    const store = await fx.store();
    const ids = [];
    for (let i = 0; i < 5; i++) ids.push((await fx.vdisk(store.id)).id);
    await fx.vdisk(storeId);
    const { items, pages } = await fx.listAll(`/v1/vdisks?storeId=${store.id}`, { limit: 2 });
    expect(pages).toBeGreaterThanOrEqual(3);
    expect(items.map((v) => v.id).sort()).toEqual(ids.sort());
    const all = await fx.listAll('/v1/vdisks', { limit: 4 });
    expect(all.items.map((v) => v.id)).toEqual(expect.arrayContaining(ids));
  });

  it('refuses a second vDisk of the same name in one store, and allows it in another store', async () => {
    await fx.vdisk(storeId, { name: 'golden' });
    expectError(await farm.api('POST', '/v1/vdisks', { body: { storeId, name: 'GOLDEN', sizeBytes: 1 << 30 } }), 409, 'already_exists', 'name');
    const other = await fx.store();
    await fx.vdisk(other.id, { name: 'golden' });
  });

  it('refuses a store that does not exist, naming storeId', async () => {
    expectError(await farm.api('POST', '/v1/vdisks', { body: { storeId: 'st_aaaaaaaaaaaaaaaa', name: fx.name('vd'), sizeBytes: 1 << 30 } }), 400, 'validation_failed', 'storeId');
  });

  it.each([
    [{ name: 'x'.repeat(53) }, 'name'],
    [{ sizeBytes: (1 << 30) + 512, sectorSize: 4096 }, 'sizeBytes'],
    [{ sizeBytes: 1000 }, 'sizeBytes'],
    [{ sectorSize: 1024 }, 'sectorSize'],
    [{ loadBalancing: { mode: 'fixed' } }, 'loadBalancing.applianceId'],
    [{ writeCacheType: 'cache-on-server' }, 'writeCacheType'],
  ])('refuses %j, naming the field', async (bad, field) => {
    expectError(await farm.api('POST', '/v1/vdisks', { body: { storeId, name: fx.name('vd'), sizeBytes: 1 << 30, ...bad } }), 400, 'validation_failed', field);
  });

  it('accepts a 52-character name', async () => {
    await fx.vdisk(storeId, { name: 'n'.repeat(52) });
  });

  it('refuses to change storeId or sectorSize after creation', async () => {
    const vdisk = await fx.vdisk(storeId);
    const other = await fx.store();
    expectError(await fx.patch(`/v1/vdisks/${vdisk.id}`, { storeId: other.id }), 400, 'validation_failed', 'storeId');
    expectError(await fx.patch(`/v1/vdisks/${vdisk.id}`, { sectorSize: 4096 }), 400, 'validation_failed', 'sectorSize');
  });

  it('refuses to change the size of a vDisk (every version is cut to it)', async () => {
    const vdisk = await fx.vdisk(storeId, { sectorSize: 4096 });
    expectError(await fx.patch(`/v1/vdisks/${vdisk.id}`, { sizeBytes: 2 ** 31 }), 400, 'validation_failed', 'sizeBytes');
    expect(expectStatus(await fx.patch(`/v1/vdisks/${vdisk.id}`, { sizeBytes: vdisk.sizeBytes, description: 'same size is fine' }), 200).sizeBytes).toBe(vdisk.sizeBytes);
  });

  it('refuses to delete a vDisk assigned to a target, and deletes it once unassigned', async () => {
    const vdisk = await fx.vdisk(storeId);
    const site = await fx.site();
    const col = await fx.collection(site.id);
    const target = await fx.target(col.id, { assignments: [{ vdiskId: vdisk.id }] });
    const res = await farm.api('DELETE', `/v1/vdisks/${vdisk.id}`);
    expectError(res, 409, 'in_use');
    expect(res.body.error.message).toMatch(/1 target/);
    expectStatus(await fx.patch(`/v1/targets/${target.mac}`, { assignments: [] }), 200);
    expect((await farm.api('DELETE', `/v1/vdisks/${vdisk.id}`)).status).toBe(204);
  });

  it('deletes its versions with the vDisk', async () => {
    const vdisk = await fx.vdisk(storeId);
    await fx.version(vdisk.id);
    expectStatus(await setState(vdisk.id, 0, 'production'), 200);
    await fx.version(vdisk.id);
    expect(await versions(vdisk.id)).toHaveLength(2);
    expect((await farm.api('DELETE', `/v1/vdisks/${vdisk.id}`)).status).toBe(204);
    expectError(await farm.api('GET', `/v1/vdisks/${vdisk.id}/versions`), 404, 'not_found');
    expectError(await farm.api('GET', `/v1/vdisks/${vdisk.id}/versions/0`), 404, 'not_found');
    expect(await farm.repo.get('version', `${vdisk.id}.0`)).toBeNull();
    expect(await farm.repo.get('version', `${vdisk.id}.1`)).toBeNull();
  });
});

describe('/v1/vdisks/{id}/versions', () => {
  it('numbers versions 0, 1, 2 on top of each other, each starting in maintenance', async () => {
    const vdisk = await fx.vdisk(storeId);
    const res = await farm.api('POST', `/v1/vdisks/${vdisk.id}/versions`, { body: { description: 'base image' } });
    const v0 = expectStatus(res, 201);
    expect(res.headers.get('location')).toBe(`/v1/vdisks/${vdisk.id}/versions/0`);
    expect(res.headers.get('etag')).toBe('"1"');
    expect(res.headers.get('x-farm-revision')).toMatch(/^\d+$/);
    expect(v0).toMatchObject({ vdiskId: vdisk.id, number: 0, parent: null, state: 'maintenance', description: 'base image', promotedAt: null });
    // The first version is a blank disk (PVS: Create vDisk) with a signed manifest of its own.
    expect(v0.manifest).toMatch(new RegExp(`/${vdisk.id}/0\\.[0-9a-f]{16}\\.manifest\\.json$`));
    expectStatus(await setState(vdisk.id, 0, 'production'), 200);
    const v1 = await fx.version(vdisk.id);
    expect(v1).toMatchObject({ number: 1, parent: 0, state: 'maintenance', description: '' });
    expectStatus(await setState(vdisk.id, 1, 'test'), 200);
    expect(await fx.version(vdisk.id)).toMatchObject({ number: 2, parent: 1 });
    expect((await versions(vdisk.id)).map((v) => [v.number, v.state])).toEqual([
      [0, 'production'],
      [1, 'test'],
      [2, 'maintenance'],
    ]);
    const got = await farm.api('GET', `/v1/vdisks/${vdisk.id}/versions/1`);
    expect(expectStatus(got, 200)).toMatchObject({ number: 1, state: 'test' });
    expect(got.headers.get('etag')).toBe('"2"');
  });

  it('keeps only one maintenance version: a new one is refused with 409 until it is promoted', async () => {
    const vdisk = await fx.vdisk(storeId);
    await fx.version(vdisk.id);
    const res = await farm.api('POST', `/v1/vdisks/${vdisk.id}/versions`);
    expectError(res, 409, 'in_use');
    expect(res.body.error.message).toMatch(/maintenance/);
    expectStatus(await setState(vdisk.id, 0, 'test'), 200);
    expect((await fx.version(vdisk.id)).number).toBe(1);
  });

  it('promotes maintenance -> test -> production and stamps promotedAt', async () => {
    const vdisk = await fx.vdisk(storeId);
    await fx.version(vdisk.id);
    const test = expectStatus(await setState(vdisk.id, 0, 'test'), 200);
    expect(test.state).toBe('test');
    expect(test.promotedAt).toEqual(expect.any(String));
    expect(expectStatus(await setState(vdisk.id, 0, 'production'), 200).state).toBe('production');
  });

  it('stamps promotedAt with the time of the promotion, from the farm clock', async () => {
    const clock = () => new Date('2031-05-06T07:08:09.000Z');
    const local = await testFarm({ clock });
    const lfx = fixtures(local);
    const vdisk = await lfx.vdisk((await lfx.store()).id);
    await lfx.version(vdisk.id);
    const promoted = expectStatus(await lfx.patch(`/v1/vdisks/${vdisk.id}/versions/0`, { state: 'test' }), 200);
    expect(promoted.promotedAt).toBe('2031-05-06T07:08:09.000Z');
    expect(promoted.updatedAt).toBe(promoted.promotedAt);
  });

  it('reverts production -> test, and test -> maintenance for the newest version', async () => {
    const vdisk = await fx.vdisk(storeId);
    await fx.version(vdisk.id);
    expectStatus(await setState(vdisk.id, 0, 'production'), 200);
    expectStatus(await setState(vdisk.id, 0, 'test'), 200);
    expect(expectStatus(await setState(vdisk.id, 0, 'maintenance'), 200).state).toBe('maintenance');
  });

  it.each([
    ['production', 'maintenance'],
    ['maintenance', 'merged'],
  ])('refuses %s -> %s with 400 naming state', async (from, to) => {
    const vdisk = await fx.vdisk(storeId);
    await fx.version(vdisk.id);
    if (from !== 'maintenance') expectStatus(await setState(vdisk.id, 0, from), 200);
    expectError(await setState(vdisk.id, 0, to), 400, 'validation_failed', 'state');
  });

  it('refuses to put an older version back into maintenance', async () => {
    const vdisk = await fx.vdisk(storeId);
    await fx.version(vdisk.id);
    expectStatus(await setState(vdisk.id, 0, 'test'), 200);
    await fx.version(vdisk.id);
    expectStatus(await setState(vdisk.id, 1, 'test'), 200);
    const res = await setState(vdisk.id, 0, 'maintenance');
    expectError(res, 400, 'validation_failed', 'state');
    expect(res.body.error.message).toMatch(/newest/);
  });

  it('refuses an unknown state or an unknown field in a version patch', async () => {
    const vdisk = await fx.vdisk(storeId);
    await fx.version(vdisk.id);
    expectError(await setState(vdisk.id, 0, 'pending'), 400, 'validation_failed', 'state');
    expectError(await fx.patch(`/v1/vdisks/${vdisk.id}/versions/0`, { number: 3 }), 400, 'validation_failed', 'number');
  });

  it('updates a version description with If-Match, and refuses a stale one', async () => {
    const vdisk = await fx.vdisk(storeId);
    await fx.version(vdisk.id);
    const res = await farm.api('PATCH', `/v1/vdisks/${vdisk.id}/versions/0`, { body: { description: 'patched' }, headers: { 'if-match': '"1"' } });
    expect(expectStatus(res, 200)).toMatchObject({ description: 'patched', version: 2 });
    expectError(await farm.api('PATCH', `/v1/vdisks/${vdisk.id}/versions/0`, { body: { description: 'again' }, headers: { 'if-match': '"1"' } }), 409, 'version_mismatch');
    expectError(await farm.api('PATCH', `/v1/vdisks/${vdisk.id}/versions/0`, { body: { description: 'again' } }), 428, 'precondition_required');
  });

  it('deletes only the newest version, and then the one below it', async () => {
    const vdisk = await fx.vdisk(storeId);
    await fx.version(vdisk.id);
    expectStatus(await setState(vdisk.id, 0, 'production'), 200);
    await fx.version(vdisk.id);
    const res = await farm.api('DELETE', `/v1/vdisks/${vdisk.id}/versions/0`);
    expectError(res, 409, 'in_use');
    expect(res.body.error.message).toMatch(/only the newest \(1\)/);
    const del = await farm.api('DELETE', `/v1/vdisks/${vdisk.id}/versions/1`);
    expect(del.status).toBe(204);
    expect(del.headers.get('x-farm-revision')).toMatch(/^\d+$/);
    expect((await farm.api('DELETE', `/v1/vdisks/${vdisk.id}/versions/0`)).status).toBe(204);
    expect(await versions(vdisk.id)).toEqual([]);
    expect((await fx.version(vdisk.id)).number).toBe(0);
  });

  it('answers 404 for versions of a vDisk that does not exist and for a missing version number', async () => {
    expectError(await farm.api('POST', '/v1/vdisks/vd_aaaaaaaaaaaaaaaa/versions'), 404, 'not_found');
    expectError(await farm.api('GET', '/v1/vdisks/vd_aaaaaaaaaaaaaaaa/versions'), 404, 'not_found');
    const vdisk = await fx.vdisk(storeId);
    expectError(await farm.api('GET', `/v1/vdisks/${vdisk.id}/versions/7`), 404, 'not_found');
    expectError(await farm.api('DELETE', `/v1/vdisks/${vdisk.id}/versions/7`), 404, 'not_found');
  });

  it('refuses more live versions than the farm maxVersions', async () => {
    const local = await testFarm();
    const lfx = fixtures(local);
    expectStatus(await lfx.patch('/v1/farm', { maxVersions: 3 }), 200);
    const vdisk = await lfx.vdisk((await lfx.store()).id);
    for (let n = 0; n < 3; n++) {
      await lfx.version(vdisk.id);
      expectStatus(await lfx.patch(`/v1/vdisks/${vdisk.id}/versions/${n}`, { state: 'production' }), 200);
    }
    const res = await local.api('POST', `/v1/vdisks/${vdisk.id}/versions`);
    expectError(res, 409, 'in_use');
    expect(res.body.error.message).toMatch(/maxVersions 3/);
  });
});
