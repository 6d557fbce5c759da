/**
 * Per-store quotas: least-recently-used eviction of versions no target needs,
 * never of one in use, last use kept across restarts, needed versions that
 * cannot fit reported instead of fetched. The pure planner first, then the
 * cache on a real filesystem.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { openVdiskCache, planStore, type ChunkSource, type PlannedVersion } from '../../appliance/cache/index.js';
import { CHUNK, KiB, STORE_A, STORE_B, makeVersion, memorySource, needed, recordingLog, tempDir, testKey, vdiskId, type TestVersion } from './cache-support.js';

const key = testKey();
const keys = () => [key];

describe('planStore', () => {
  const v = (k: string, chunks: [string, number][], o: Partial<PlannedVersion> = {}): PlannedVersion => ({ key: k, needed: false, inUse: false, lastUsedAt: 0, chunks: new Map(chunks), ...o });
  const all = () => true;

  it('with no quota fetches every needed version and evicts nothing', () => {
    expect(planStore([v('a', [['1', 10]], { needed: true }), v('b', [['2', 10]])], null, all)).toEqual({ fetch: ['a'], evict: [], refused: [] });
  });

  it('evicts unneeded versions oldest first, only until the needed ones fit, never one in use', () => {
    const versions = [
      v('old', [['1', 10]], { lastUsedAt: 1 }),
      v('used', [['2', 10]], { lastUsedAt: 0, inUse: true }),
      v('mid', [['3', 10]], { lastUsedAt: 2 }),
      v('new', [['4', 10]], { lastUsedAt: 3 }),
      v('want', [['5', 10]], { needed: true }),
    ];
    const has = (h: string) => h !== '5';
    expect(planStore(versions, 35, has)).toEqual({ fetch: ['want'], evict: ['old', 'mid'], refused: [] });
    expect(planStore(versions, 50, has)).toEqual({ fetch: ['want'], evict: [], refused: [] });
  });

  it('counts shared chunks once and refuses a needed version that cannot fit even with everything evictable gone', () => {
    const versions = [
      v('a', [['1', 10], ['2', 10]], { needed: true }),
      v('b', [['1', 10], ['3', 10]], { needed: true }),
      v('huge', [['9', 100]], { needed: true }),
      v('spare', [['4', 10]]),
    ];
    const spareHeld = (h: string) => h === '4';
    expect(planStore(versions, 30, spareHeld)).toEqual({ fetch: ['a', 'b'], evict: ['spare'], refused: [{ key: 'huge', needBytes: 100, quotaBytes: 30 }] });
    // Nothing is evicted for a version that is refused anyway.
    expect(planStore([versions[2]!, versions[3]!], 30, spareHeld)).toEqual({ fetch: [], evict: [], refused: [{ key: 'huge', needBytes: 100, quotaBytes: 30 }] });
  });

  it('keeps complete needed versions first, then the furthest along', () => {
    const versions = [v('fresh', [['1', 10]], { needed: true }), v('half', [['2', 10], ['3', 10]], { needed: true }), v('done', [['4', 10]], { needed: true })];
    const has = (h: string) => h === '4' || h === '2';
    expect(planStore(versions, 30, has)).toEqual({ fetch: ['done', 'half'], evict: [], refused: [{ key: 'fresh', needBytes: 10, quotaBytes: 30 }] });
  });
});

describe('cache quotas', () => {
  const QUARTER = 4 * CHUNK; // one test version: four distinct 64 KiB chunks
  const four = (c: string, n = 1) => makeVersion(key, vdiskId(c), n, ['rand', 'rand', 'rand', 'rand']);
  const files = (dir: string, v: TestVersion) => ({
    manifest: existsSync(join(dir, 'manifests', v.vdiskId, `${v.number}.json`)),
    chunks: [...v.chunks.keys()].filter((h) => existsSync(join(dir, 'chunks', h.slice(0, 2), h))).length,
  });

  async function setup(quota: (storeId: string) => number | null, versions: TestVersion[]) {
    const dir = await tempDir();
    const clock = { now: 1_000 };
    const src = memorySource('s3', versions);
    const { log, lines } = recordingLog();
    const openCache = () => openVdiskCache({ dir, keys, sources: (): ChunkSource[] => [src], quotaBytes: quota, clock: () => clock.now, log });
    return { dir, clock, src, lines, openCache };
  }

  it('evicts versions no longer needed, least recently used first, when a needed one does not fit; last use survives a restart', async () => {
    const [a, b, c] = await Promise.all([four('a'), four('b'), four('c')]);
    const t = await setup(() => 2.5 * QUARTER, [a!, b!, c!]);
    let cache = await t.openCache();
    await cache.setNeeded([needed(a!), needed(b!)]);
    await cache.sync();
    t.clock.now = 2_000;
    const r = cache.open(a!.vdiskId, 1);
    await r.read(0, 10);
    r.close();
    await cache.close();

    t.clock.now = 3_000;
    cache = await t.openCache();
    await cache.setNeeded([needed(c!)]);
    await cache.sync();
    expect(cache.inventory().map((e) => [e.vdiskId, e.state])).toEqual([
      [a!.vdiskId, 'verified'],
      [c!.vdiskId, 'verified'],
    ]);
    expect(files(t.dir, b!)).toEqual({ manifest: false, chunks: 0 });
    expect(files(t.dir, a!)).toEqual({ manifest: true, chunks: 4 });
    expect(t.lines.filter((l) => l.msg === 'version evicted').map((l) => l.fields)).toEqual([{ vdiskId: b!.vdiskId, number: 1, reason: 'quota: least recently used, not needed', freedBytes: QUARTER }]);
    expect(cache.status()).toMatchObject({ bytesHeld: 2 * QUARTER, bytesHeldByStore: { [STORE_A]: 2 * QUARTER }, quotaExceeded: false });
    expect(() => cache.open(b!.vdiskId, 1)).toThrow(/not held/);
    await cache.close();
  });

  it('never evicts a version in use: the next least recently used goes, and with nothing left to evict the needed one is refused', async () => {
    const [a, b, c, d] = await Promise.all([four('a'), four('b'), four('c'), four('d')]);
    const t = await setup(() => 2.5 * QUARTER, [a!, b!, c!, d!]);
    const cache = await t.openCache();
    await cache.setNeeded([needed(a!), needed(b!)]);
    await cache.sync();
    const reader = cache.open(a!.vdiskId, 1); // a: used at 1000, b later
    t.clock.now = 2_000;
    cache.open(b!.vdiskId, 1).close();

    await cache.setNeeded([needed(c!)]);
    await cache.sync();
    expect(files(t.dir, a!)).toEqual({ manifest: true, chunks: 4 });
    expect(files(t.dir, b!)).toEqual({ manifest: false, chunks: 0 });
    expect((await reader.read(0, 100)).equals(a!.image.subarray(0, 100))).toBe(true);

    // a in use and c needed fill the quota: d does not fit, so it is neither fetched nor a reason to evict.
    t.src.calls.length = 0;
    await cache.setNeeded([needed(c!), needed(d!)]);
    await cache.sync();
    expect(t.src.calls).toEqual([]);
    expect(cache.status()).toMatchObject({
      quotaExceeded: true,
      quotaExceededVersions: [{ vdiskId: d!.vdiskId, number: 1, storeId: STORE_A, needBytes: QUARTER, quotaBytes: 2.5 * QUARTER }],
    });
    expect(files(t.dir, d!)).toEqual({ manifest: false, chunks: 0 });

    // Once closed, a may go and d fits.
    reader.close();
    await cache.sync();
    expect(files(t.dir, a!).manifest).toBe(false);
    expect(cache.inventory().map((e) => [e.vdiskId, e.state])).toEqual([
      [c!.vdiskId, 'verified'],
      [d!.vdiskId, 'verified'],
    ]);
    expect(cache.status().quotaExceeded).toBe(false);
    await cache.close();
  });

  it('a needed version larger than the quota is reported, not fetched, and nothing is evicted for it', async () => {
    const a = await four('a');
    const big = await makeVersion(key, vdiskId('g'), 1, ['rand', 'rand', 'zero', 'rand', 'rand', 'rand']);
    const t = await setup(() => QUARTER, [a, big]);
    const cache = await t.openCache();
    await cache.setNeeded([needed(a)]);
    await cache.sync();
    t.src.calls.length = 0;

    await cache.setNeeded([needed(big)]);
    await cache.sync();
    expect(t.src.calls).toEqual([]);
    expect(files(t.dir, big)).toEqual({ manifest: false, chunks: 0 });
    expect(files(t.dir, a)).toEqual({ manifest: true, chunks: 4 });
    expect(cache.status()).toMatchObject({
      quotaExceeded: true,
      quotaExceededVersions: [{ vdiskId: big.vdiskId, number: 1, storeId: STORE_A, needBytes: 5 * CHUNK, quotaBytes: QUARTER }],
    });
    expect(cache.inventory().find((e) => e.vdiskId === big.vdiskId)).toMatchObject({ state: 'syncing', percent: 0 });
    expect(t.lines.filter((l) => l.msg === 'needed version does not fit its store quota: not fetched')).toHaveLength(1);
    await cache.sync(); // reported once, not at every pass
    expect(t.lines.filter((l) => l.msg === 'needed version does not fit its store quota: not fetched')).toHaveLength(1);
    await cache.close();
  });

  it('counts a chunk shared by two versions once, and each store against its own quota', async () => {
    const base = await four('a');
    const shared = [...base.chunks.values()];
    const next = await makeVersion(key, base.vdiskId, 2, [shared[0]!, shared[1]!, shared[2]!, 'rand']);
    const other = await four('o');
    const t = await setup((s) => (s === STORE_A ? 5 * CHUNK : null), [base, next, other]);
    const cache = await t.openCache();
    await cache.setNeeded([needed(base), needed(next), needed(other, STORE_B)]);
    await cache.sync();
    expect(cache.inventory().every((e) => e.state === 'verified')).toBe(true);
    expect(cache.status()).toMatchObject({ bytesHeld: 5 * CHUNK + QUARTER, bytesHeldByStore: { [STORE_A]: 5 * CHUNK, [STORE_B]: QUARTER }, quotaExceeded: false });

    // Quotas down to one version per store: evicting version 1 frees only the chunk version 2 does not share.
    await cache.close();
    const third = await four('t');
    const { log, lines } = recordingLog();
    const cache2 = await openVdiskCache({ dir: t.dir, keys, sources: () => [memorySource('s3', [third])], quotaBytes: () => QUARTER, log });
    await cache2.setNeeded([needed(next), needed(third, STORE_B)]);
    await cache2.sync();
    expect(cache2.inventory().map((e) => [e.vdiskId, e.number, e.state])).toEqual([
      [base.vdiskId, 2, 'verified'],
      [third.vdiskId, 1, 'verified'],
    ]);
    expect(files(t.dir, base)).toEqual({ manifest: false, chunks: 3 });
    expect(lines.filter((l) => l.msg === 'version evicted').map((l) => [l.fields?.vdiskId, l.fields?.number, l.fields?.freedBytes])).toEqual([
      [base.vdiskId, 1, CHUNK],
      [other.vdiskId, 1, QUARTER],
    ]);
    expect(files(t.dir, other)).toEqual({ manifest: false, chunks: 0 });
    expect(cache2.status().bytesHeldByStore).toEqual({ [STORE_A]: QUARTER, [STORE_B]: QUARTER });
    await cache2.close();
  });

  it('keeps quota units in bytes: 1 KiB short of a version is too little', async () => {
    const a = await four('a');
    const t = await setup(() => QUARTER - KiB, [a]);
    const cache = await t.openCache();
    await cache.setNeeded([needed(a)]);
    await cache.sync();
    expect(cache.status().quotaExceeded).toBe(true);
    expect(t.src.calls).toEqual([]);
    await cache.close();
  });
});
