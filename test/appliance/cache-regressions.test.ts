/**
 * Regressions found in review: the windows a crash or a concurrent change can
 * hit between planning a sync pass and fetching its chunks.
 */
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { openVdiskCache, type VdiskCache } from '../../appliance/cache/vdisk-cache.js';
import { CHUNK, makeVersion, memorySource, needed, recordingLog, tempDir, testKey, vdiskId } from './cache-support.js';

it('a crash between evicting a version and fetching its successor does not orphan the chunks they share', async () => {
  const key = testKey();
  const dir = await tempDir();
  const A = await makeVersion(key, vdiskId('a'), 0, ['rand', 'rand', 'rand', 'rand', 'rand', 'rand', 'rand', 'rand']);
  const shared = [...A.chunks.values()].slice(0, 7);
  const B = await makeVersion(key, vdiskId('a'), 1, [...shared, 'rand']);
  const opts = { dir, keys: () => [key], quotaBytes: () => 8 * CHUNK, usageFlushMs: 60_000 };
  const c1 = await openVdiskCache({ ...opts, sources: () => [memorySource('s3', [A, B])] });
  await c1.setNeeded([needed(A)]);
  await c1.sync();
  expect(c1.inventory()[0]!.state).toBe('verified');
  // The usage file cannot be written: the pass dies after its plan, standing in for kill -9 at that point.
  await rm(join(dir, 'usage.json'), { force: true });
  await mkdir(join(dir, 'usage.json', 'x'), { recursive: true });
  await c1.setNeeded([needed(B)]);
  await expect(c1.sync()).rejects.toThrow();
  await rm(join(dir, 'usage.json'), { recursive: true, force: true });
  // Restart: B needs only the one chunk it does not share with A.
  const src = memorySource('s3', [A, B]);
  const c2 = await openVdiskCache({ ...opts, sources: () => [src] });
  await c2.setNeeded([needed(B)]);
  await c2.sync();
  expect(src.served.length).toBe(1);
  expect(c2.inventory().find((e) => e.number === 1)!.state).toBe('verified');
  await c2.close();
});

it('a setNeeded that drops a planned version during a pass does not break the pass', async () => {
  const key = testKey();
  const dir = await tempDir();
  const X = await makeVersion(key, vdiskId('x'), 0, ['rand', 'rand']);
  const Y = await makeVersion(key, vdiskId('y'), 0, ['rand', 'rand']);
  let cache!: VdiskCache;
  let fired = false;
  const { log } = recordingLog();
  cache = await openVdiskCache({
    dir,
    keys: () => [key],
    sources: () => [memorySource('s3', [X, Y])],
    log,
    // Lands while the pass is between its plan and its fetches, as the refresh loop's setNeeded can.
    quotaBytes: () => {
      if (!fired) {
        fired = true;
        void cache.setNeeded([needed(Y)]);
      }
      return null;
    },
  });
  await cache.setNeeded([needed(X), needed(Y)]);
  await expect(cache.sync()).resolves.toBeUndefined();
  await cache.sync();
  expect(cache.inventory().map((e) => [e.vdiskId, e.state])).toEqual([[Y.vdiskId, 'verified']]);
  await cache.close();
});
