import { describe, expect, it } from 'vitest';
import {
  DEFAULT_OFFLINE_AFTER_MS,
  InventorySchema,
  isReachable,
  replicationMatrix,
  type Inventory,
  type MatrixAppliance,
  type VersionState,
} from '../../model/index.js';

const NOW = new Date('2026-03-01T12:00:00.000Z');
const ago = (ms: number) => new Date(NOW.getTime() - ms).toISOString();
const VD = 'vd_aaaaaaaaaaaaaaaa';
const OTHER_VD = 'vd_bbbbbbbbbbbbbbbb';
const H = (c: string) => c.repeat(64);

const version = (number: number, state: VersionState = 'production', contentHash: string | null = H(String(number % 10))) => ({ vdiskId: VD, number, state, contentHash });
const entry = (number: number, state: 'verified' | 'syncing' | 'corrupt', contentHash = H(String(number % 10)), extra: { percent?: number; vdiskId?: string } = {}) => ({ vdiskId: VD, number, contentHash, state, ...extra });
const inventory = (...versions: Inventory['versions']): Inventory => ({ reportedAt: ago(1000), versions });
const appliance = (id: string, siteId: string, inv: Inventory | null, lastHeartbeat: string | null = ago(5000)): MatrixAppliance => ({ id, name: id, siteId, lastHeartbeat, inventory: inv });

describe('replicationMatrix: one cell per version x appliance', () => {
  it('says up-to-date only for a verified copy with the version\'s content hash', () => {
    const m = replicationMatrix([version(0)], [appliance('a1', 's1', inventory(entry(0, 'verified')))], ['s1'], NOW);
    expect(m.versions[0]!.cells.a1).toEqual({ state: 'up-to-date' });
  });

  it('says missing when the inventory does not list the version (or lists it for another vDisk)', () => {
    const m = replicationMatrix(
      [version(0), version(1)],
      [appliance('a1', 's1', inventory(entry(0, 'verified', H('0'), { vdiskId: OTHER_VD }))), appliance('a2', 's1', null)],
      [],
      NOW,
    );
    for (const row of m.versions) expect(row.cells).toEqual({ a1: { state: 'missing' }, a2: { state: 'missing' } });
  });

  it('says in-progress with the percent while syncing, floored and kept below 100', () => {
    const m = replicationMatrix(
      [version(0), version(1), version(2)],
      [appliance('a1', 's1', inventory(entry(0, 'syncing', H('0'), { percent: 42.7 }), entry(1, 'syncing', H('1'), { percent: 100 }), entry(2, 'syncing')))],
      [],
      NOW,
    );
    expect(m.versions.map((v) => v.cells.a1)).toEqual([
      { state: 'in-progress', percent: 42 },
      { state: 'in-progress', percent: 99 },
      { state: 'in-progress', percent: 0 },
    ]);
  });

  it('says corrupt when the appliance reports it corrupt, or verified with another content hash', () => {
    const m = replicationMatrix([version(0), version(1)], [appliance('a1', 's1', inventory(entry(0, 'corrupt'), entry(1, 'verified', H('f'))))], [], NOW);
    expect(m.versions.map((v) => v.cells.a1!.state)).toEqual(['corrupt', 'corrupt']);
  });

  it('says missing while syncing other content under the same number (a version deleted and pushed again)', () => {
    const m = replicationMatrix([version(3)], [appliance('a1', 's1', inventory(entry(3, 'syncing', H('e'), { percent: 50 })))], [], NOW);
    expect(m.versions[0]!.cells.a1).toEqual({ state: 'missing' });
  });

  it('never calls a copy up to date when the version has no content hash', () => {
    const m = replicationMatrix([version(0, 'production', null)], [appliance('a1', 's1', inventory(entry(0, 'verified')))], ['s1'], NOW);
    expect(m.versions[0]).toMatchObject({ contentHash: null, pending: true, cells: { a1: { state: 'corrupt' } } });
  });

  it('says unreachable without a heartbeat, or with one older than offlineAfterMs, whatever the inventory says', () => {
    const inv = inventory(entry(0, 'verified'));
    const m = replicationMatrix(
      [version(0)],
      [
        appliance('never', 's1', inv, null),
        appliance('stale', 's1', inv, ago(DEFAULT_OFFLINE_AFTER_MS + 1)),
        appliance('edge', 's1', inv, ago(DEFAULT_OFFLINE_AFTER_MS)),
        appliance('skewed', 's1', inv, new Date(NOW.getTime() + 60_000).toISOString()),
      ],
      [],
      NOW,
    );
    expect(m.versions[0]!.cells).toEqual({ never: { state: 'unreachable' }, stale: { state: 'unreachable' }, edge: { state: 'up-to-date' }, skewed: { state: 'up-to-date' } });
    expect(m.appliances.map((a) => [a.id, a.reachable])).toEqual([['never', false], ['stale', false], ['edge', true], ['skewed', true]]);
  });

  it('takes offlineAfterMs from the caller', () => {
    const a = appliance('a1', 's1', inventory(entry(0, 'verified')), ago(20_000));
    expect(replicationMatrix([version(0)], [a], [], NOW, 10_000).versions[0]!.cells.a1!.state).toBe('unreachable');
    expect(replicationMatrix([version(0)], [a], [], NOW, 30_000).versions[0]!.cells.a1!.state).toBe('up-to-date');
  });

  it('leaves merged versions out and orders versions by number', () => {
    const m = replicationMatrix([version(3, 'maintenance'), version(0, 'merged'), version(2, 'production'), version(1, 'merged')], [], [], NOW);
    expect(m.versions.map((v) => [v.number, v.state])).toEqual([[2, 'production'], [3, 'maintenance']]);
  });
});

describe('replicationMatrix: pending', () => {
  const versions = [version(0), version(1, 'test')];

  it('is pending until every appliance of every site that needs the vDisk holds the version up to date', () => {
    const both = inventory(entry(0, 'verified'), entry(1, 'verified'));
    const onlyBase = inventory(entry(0, 'verified'), entry(1, 'syncing', H('1'), { percent: 10 }));
    const before = replicationMatrix(versions, [appliance('a1', 's1', both), appliance('a2', 's1', onlyBase), appliance('b1', 's2', both)], ['s1', 's2'], NOW);
    expect(before.versions.map((v) => [v.number, v.pending, v.waitingFor])).toEqual([[0, false, []], [1, true, ['a2']]]);
    const after = replicationMatrix(versions, [appliance('a1', 's1', both), appliance('a2', 's1', both), appliance('b1', 's2', both)], ['s1', 's2'], NOW);
    expect(after.versions.map((v) => v.pending)).toEqual([false, false]);
  });

  it('ignores appliances of sites that do not need the vDisk', () => {
    const m = replicationMatrix(versions, [appliance('a1', 's1', inventory(entry(0, 'verified'), entry(1, 'verified'))), appliance('z1', 'idle', null)], ['s1'], NOW);
    expect(m.versions.map((v) => v.pending)).toEqual([false, false]);
    expect(m.versions[0]!.cells.z1).toEqual({ state: 'missing' });
    expect(m.appliances.map((a) => [a.id, a.needed])).toEqual([['a1', true], ['z1', false]]);
  });

  it('counts an unreachable appliance as not holding the version', () => {
    const inv = inventory(entry(0, 'verified'), entry(1, 'verified'));
    const m = replicationMatrix(versions, [appliance('a1', 's1', inv), appliance('a2', 's1', inv, ago(10 * 60_000))], ['s1'], NOW);
    expect(m.versions.map((v) => v.waitingFor)).toEqual([['a2'], ['a2']]);
  });

  it('is not pending when no site needs the vDisk, or a needing site has no appliance', () => {
    expect(replicationMatrix(versions, [appliance('a1', 's1', null)], [], NOW).versions.every((v) => !v.pending)).toBe(true);
    expect(replicationMatrix(versions, [appliance('a1', 's1', null)], ['s9'], NOW).versions.every((v) => !v.pending)).toBe(true);
  });
});

describe('isReachable', () => {
  it('refuses null and unparsable heartbeats', () => {
    expect(isReachable(null, NOW)).toBe(false);
    expect(isReachable('yesterday', NOW)).toBe(false);
    expect(isReachable(ago(1000), NOW)).toBe(true);
  });
});

describe('InventorySchema', () => {
  it('accepts a report and refuses a version listed twice or an unknown state', () => {
    const ok = { reportedAt: NOW.toISOString(), versions: [entry(0, 'verified'), entry(1, 'syncing', H('1'), { percent: 5 })] };
    expect(InventorySchema.parse(ok)).toEqual(ok);
    expect(InventorySchema.safeParse({ ...ok, versions: [entry(0, 'verified'), entry(0, 'corrupt')] }).success).toBe(false);
    expect(InventorySchema.safeParse({ ...ok, versions: [{ ...entry(0, 'verified'), state: 'stale' }] }).success).toBe(false);
    expect(InventorySchema.safeParse({ ...ok, versions: [{ ...entry(0, 'verified'), contentHash: 'abc' }] }).success).toBe(false);
  });
});
