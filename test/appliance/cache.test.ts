/**
 * The appliance's verified vDisk cache on a real filesystem with real signed
 * manifests: sync, reads by manifest, refetch avoidance, bad sources, crash
 * leftovers and progress. Sources are in-memory fakes (peers and S3 over real
 * HTTP are in cache-sources.test.ts).
 */
import { existsSync } from 'node:fs';
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { openVdiskCache, type ChunkSource, type OpenVdiskCacheOptions } from '../../appliance/cache/index.js';
import { TEMP_PREFIX } from '../../appliance/fs-atomic.js';
import { FarmError } from '../../model/errors.js';
import {
  CHUNK,
  chunkOf,
  latch,
  makeVersion,
  memorySource,
  needed,
  recordingLog,
  tempDir,
  testKey,
  vdiskId,
  type TestVersion,
} from './cache-support.js';

const key = testKey();
const keys = () => [key];
const chunkPath = (dir: string, hash: string) => join(dir, 'chunks', hash.slice(0, 2), hash);
const manifestPath = (dir: string, v: TestVersion) => join(dir, 'manifests', v.vdiskId, `${v.number}.json`);

function open(dir: string, sources: ChunkSource[], extra: Partial<OpenVdiskCacheOptions> = {}) {
  return openVdiskCache({ dir, keys, sources: () => sources, ...extra });
}

/** Random data, zero chunks, a chunk repeated, and a short last chunk. */
async function mixedVersion(number = 1, id = vdiskId('a')): Promise<TestVersion> {
  const repeated = Buffer.alloc(CHUNK, 7);
  return makeVersion(key, id, number, ['rand', 'zero', repeated, 'rand', 'zero', repeated, 'rand', 'rand'], 1000);
}

async function readAll(cache: Awaited<ReturnType<typeof open>>, v: TestVersion): Promise<Buffer> {
  const r = cache.open(v.vdiskId, v.number);
  try {
    return await r.read(0, r.sizeBytes);
  } finally {
    r.close();
  }
}

describe('sync and reads', () => {
  it('fetches each distinct chunk once and reads back byte-identical to the image', async () => {
    const dir = await tempDir();
    const v = await mixedVersion();
    const src = memorySource('s3', [v]);
    const { log, lines } = recordingLog();
    const cache = await open(dir, [src], { log });
    await cache.setNeeded([needed(v)]);
    await cache.sync();

    expect([...src.calls].sort()).toEqual([...v.chunks.keys()].sort());
    expect(lines.filter((l) => l.msg === 'chunk fetched').map((l) => l.fields)).toHaveLength(v.chunks.size);
    expect(lines.find((l) => l.msg === 'chunk fetched')?.fields).toMatchObject({ source: 's3' });
    expect(cache.inventory()).toEqual([{ vdiskId: v.vdiskId, number: 1, contentHash: v.contentHash, state: 'verified' }]);
    const st = cache.status();
    expect(st.fetchedBySource).toEqual({ s3: { chunks: v.chunks.size, bytes: [...v.chunks.values()].reduce((a, b) => a + b.length, 0) } });
    expect(st.bytesHeld).toBe(st.fetchedBySource.s3!.bytes);
    expect(st.bytesHeldByStore).toEqual({ [needed(v).storeId]: st.bytesHeld });

    expect((await readAll(cache, v)).equals(v.image)).toBe(true);
    await cache.close();
  });

  it('reads any range: across chunk boundaries, inside zero chunks, the short last chunk', async () => {
    const dir = await tempDir();
    const v = await mixedVersion();
    const cache = await open(dir, [memorySource('s3', [v])]);
    await cache.setNeeded([needed(v)]);
    await cache.sync();
    const r = cache.open(v.vdiskId, v.number);
    expect(r.sizeBytes).toBe(7 * CHUNK + 1000);
    expect(r.sectorSize).toBe(512);
    const ranges: [number, number][] = [
      [CHUNK - 100, 300], // data -> zero chunk
      [2 * CHUNK - 1, 2], // zero -> repeated chunk
      [0, 3 * CHUNK + 17], // four chunks
      [CHUNK + 5, 10], // inside a zero chunk
      [7 * CHUNK - 10, 1010], // into the short last chunk, to the end
      [r.sizeBytes - 1, 1],
      [123, 0],
    ];
    for (let i = 0; i < 20; i++) {
      const off = Math.floor(Math.random() * r.sizeBytes);
      ranges.push([off, Math.floor(Math.random() * (r.sizeBytes - off))]);
    }
    for (const [off, len] of ranges) expect((await r.read(off, len)).equals(v.image.subarray(off, off + len)), `${off}+${len}`).toBe(true);
    await expect(r.read(r.sizeBytes - 1, 2)).rejects.toThrow(/outside the disk/);
    await expect(r.read(-1, 1)).rejects.toThrow(/outside the disk/);
    r.close();
    await expect(r.read(0, 1)).rejects.toThrow(/closed/);
    await cache.close();
  });

  it('a second sync and a reopened cache fetch nothing; the manifest comes from disk', async () => {
    const dir = await tempDir();
    const v = await mixedVersion();
    const src = memorySource('s3', [v]);
    let cache = await open(dir, [src]);
    await cache.setNeeded([needed(v)]);
    await cache.sync();
    const first = src.calls.length;
    await cache.sync();
    expect(src.calls).toHaveLength(first);
    await cache.close();

    const again = memorySource('s3', [v]);
    const getManifest = vi.fn(async () => v.signed);
    cache = await open(dir, [again], { getManifest });
    expect(cache.inventory()[0]?.state).toBe('verified');
    await cache.setNeeded([needed(v, undefined, false)]);
    await cache.sync();
    expect(again.calls).toEqual([]);
    expect(getManifest).not.toHaveBeenCalled();
    expect((await readAll(cache, v)).equals(v.image)).toBe(true);
    await cache.close();
  });

  it('gets a manifest from getManifest when neither given nor on disk, and refuses one with other content', async () => {
    const dir = await tempDir();
    const v = await mixedVersion(1);
    const other = await mixedVersion(2);
    const getManifest = vi.fn(async (_id: string, n: number) => (n === 1 ? v.signed : other.signed));
    const cache = await open(dir, [memorySource('s3', [v, other])], { getManifest });
    // Version 2 as the snapshot claims it: its content hash is version 1's, the control plane's manifest disagrees.
    await cache.setNeeded([needed(v, undefined, false), { ...needed(other, undefined, false), contentHash: v.contentHash }]);
    await cache.sync();
    expect(getManifest).toHaveBeenCalledTimes(2);
    expect(cache.inventory().map((e) => [e.number, e.state])).toEqual([
      [1, 'verified'],
      [2, 'syncing'],
    ]);
    expect(cache.status().refusedVersions).toEqual([{ vdiskId: other.vdiskId, number: 2, reason: expect.stringMatching(/content hash/) }]);
    expect(existsSync(manifestPath(dir, other))).toBe(false);
    await cache.close();
  });

  it('setNeeded refuses a manifest whose content hash, signature or identity does not match', async () => {
    const dir = await tempDir();
    const v = await mixedVersion(1);
    const w = await mixedVersion(2);
    const stranger = testKey();
    const foreign = await makeVersion(stranger, v.vdiskId, 3, ['rand']);
    const cache = await open(dir, [memorySource('s3', [v, w, foreign])]);
    const { refused } = await cache.setNeeded([
      { ...needed(v), contentHash: w.contentHash },
      { ...needed(w), number: 5 },
      needed(foreign),
    ]);
    expect(refused.map((r) => [r.number, r.reason])).toEqual([
      [1, expect.stringMatching(/content hash/)],
      [5, expect.stringMatching(/version 2, not .* version 5/)],
      [3, expect.stringMatching(/unknown key/)],
    ]);
    await cache.sync();
    expect(cache.status().fetchedBySource).toEqual({});
    expect(cache.inventory().every((e) => e.state === 'syncing' && e.percent === 0)).toBe(true);
    await cache.close();
  });
});

describe('bad sources', () => {
  it('a chunk with a wrong byte never becomes visible; a second, good source still completes the version', async () => {
    const dir = await tempDir();
    const v = await mixedVersion();
    const bad = [...v.chunks.keys()][0]!;
    const liar = memorySource('liar', [v], { corrupt: new Set([bad]) });
    const good = memorySource('good', [v]);
    const { log, lines } = recordingLog();
    const cache = await open(dir, [liar, good], { log });
    await cache.setNeeded([needed(v)]);
    await cache.sync();
    expect(good.calls).toEqual([bad]);
    expect(cache.inventory()[0]?.state).toBe('verified');
    expect(cache.status().verifyFailures).toBe(1);
    expect(lines).toContainEqual({ level: 'warn', msg: 'chunk from source does not match its hash: discarded', fields: { hash: bad, source: 'liar', bytes: CHUNK } });
    expect((await readAll(cache, v)).equals(v.image)).toBe(true);
    await cache.close();
  });

  it('with only a lying source the version is corrupt, the chunk file absent and the version not served', async () => {
    const dir = await tempDir();
    const v = await mixedVersion();
    const bad = [...v.chunks.keys()][1]!;
    const cache = await open(dir, [memorySource('liar', [v], { corrupt: new Set([bad]) })]);
    await cache.setNeeded([needed(v)]);
    await cache.sync();
    expect(cache.inventory()[0]?.state).toBe('corrupt');
    expect(existsSync(chunkPath(dir, bad))).toBe(false);
    // Not even under a temp name: bytes are hashed before anything is written.
    expect((await readdir(join(dir, 'chunks'), { recursive: true })).filter((p) => p.includes(bad))).toEqual([]);
    expect(() => cache.open(v.vdiskId, v.number)).toThrow(FarmError);
    expect(() => cache.open(v.vdiskId, v.number)).toThrow(/corrupt: only verified versions are served/);
    expect(await cache.readChunk(bad)).toBeNull();
    await cache.close();
  });

  it('a source that throws or lacks a chunk is skipped; with no source at all the version stays syncing, not corrupt', async () => {
    const dir = await tempDir();
    const v = await mixedVersion();
    const down = memorySource('down', [v], { fail: true });
    const empty = memorySource('empty', []);
    const { log, lines } = recordingLog();
    let sources: ChunkSource[] = [down, empty];
    const cache = await openVdiskCache({ dir, keys, sources: () => sources, log });
    await cache.setNeeded([needed(v)]);
    await cache.sync();
    expect(cache.inventory()[0]).toMatchObject({ state: 'syncing', percent: 0 });
    expect(lines.filter((l) => l.msg === 'chunk source failed')).toHaveLength(v.chunks.size);
    expect(lines.filter((l) => l.msg === 'chunk not available from any source')).toHaveLength(v.chunks.size);

    sources = [down, empty, memorySource('s3', [v])];
    await cache.sync();
    expect(cache.inventory()[0]?.state).toBe('verified');
    await cache.close();
  });
});

describe('crash leftovers', () => {
  it('sweeps temp files; a truncated chunk under a temp name is never served and is fetched again', async () => {
    const dir = await tempDir();
    const v = await mixedVersion();
    let cache = await open(dir, [memorySource('s3', [v])]);
    await cache.setNeeded([needed(v)]);
    await cache.sync();
    await cache.close();

    // What kill -9 during a chunk write leaves: the temp file, half written, and no chunk file.
    const victim = [...v.chunks.keys()][2]!;
    const fanout = join(dir, 'chunks', victim.slice(0, 2));
    await rm(chunkPath(dir, victim));
    await writeFile(join(fanout, `${TEMP_PREFIX}${victim}.0123456789ab`), v.chunks.get(victim)!.subarray(0, 1000));
    await writeFile(join(dir, 'manifests', v.vdiskId, `${TEMP_PREFIX}1.json.0123456789ab`), '{"payload":');
    await writeFile(join(dir, `${TEMP_PREFIX}usage.json.0123456789ab`), '{"form');

    const src = memorySource('s3', [v]);
    cache = await open(dir, [src]);
    expect((await readdir(fanout)).filter((n) => n.startsWith(TEMP_PREFIX))).toEqual([]);
    expect((await readdir(join(dir, 'manifests', v.vdiskId))).sort()).toEqual(['1.json']);
    expect((await readdir(dir)).sort()).toEqual(['chunks', 'manifests', 'usage.json']);
    expect(cache.inventory()[0]?.state).toBe('syncing');
    expect(() => cache.open(v.vdiskId, v.number)).toThrow(/syncing \(\d+(\.\d)? %\): only verified/);
    expect(await cache.readChunk(victim)).toBeNull();

    await cache.setNeeded([needed(v, undefined, false)]);
    await cache.sync();
    expect(src.calls).toEqual([victim]);
    expect((await readAll(cache, v)).equals(v.image)).toBe(true);
    await cache.close();
  });

  it('a manifest file with a flipped byte is deleted and logged on open, and its chunks collected', async () => {
    for (const damage of ['payload', 'raw'] as const) {
      const dir = await tempDir();
      const v = await mixedVersion();
      let cache = await open(dir, [memorySource('s3', [v])]);
      await cache.setNeeded([needed(v)]);
      await cache.sync();
      await cache.close();

      const path = manifestPath(dir, v);
      const text = await readFile(path);
      if (damage === 'payload') {
        // Still a well-formed envelope, one bit of the signed manifest changed.
        const env = JSON.parse(text.toString());
        const payload = Buffer.from(env.payload, 'base64');
        payload[40] = payload[40]! ^ 0x01;
        await writeFile(path, JSON.stringify({ ...env, payload: payload.toString('base64') }));
      } else {
        text[10] = text[10]! ^ 0x20;
        await writeFile(path, text);
      }

      const { log, lines } = recordingLog();
      cache = await open(dir, [], { log });
      expect(existsSync(path), damage).toBe(false);
      expect(lines.find((l) => l.level === 'error')?.msg).toBe('manifest on disk failed verification: deleted');
      expect(cache.inventory()).toEqual([]);
      expect(cache.status().chunksHeld).toBe(0);
      expect(lines.find((l) => l.msg === 'vdisk cache opened')?.fields).toMatchObject({ manifestsRefused: 1, orphanChunksRemoved: v.chunks.size });
      await cache.close();
    }
  });

  it('keeps a manifest signed by a key not known yet, and its chunks, and uses it once the key is back', async () => {
    const dir = await tempDir();
    const v = await mixedVersion();
    let cache = await open(dir, [memorySource('s3', [v])]);
    await cache.setNeeded([needed(v)]);
    await cache.sync();
    await cache.close();

    let known: ReturnType<typeof testKey>[] = [];
    cache = await openVdiskCache({ dir, keys: () => known, sources: () => [] });
    expect(cache.inventory()).toEqual([]);
    expect(existsSync(manifestPath(dir, v))).toBe(true);
    known = [key];
    await cache.setNeeded([needed(v, undefined, false)]);
    await cache.sync();
    expect(cache.inventory()[0]?.state).toBe('verified');
    expect((await readAll(cache, v)).equals(v.image)).toBe(true);
    await cache.close();
  });

  it('verifyAll finds a chunk file damaged on disk, deletes it, and the next sync fetches it again', async () => {
    const dir = await tempDir();
    const v = await mixedVersion();
    const src = memorySource('s3', [v]);
    const cache = await open(dir, [src]);
    await cache.setNeeded([needed(v)]);
    await cache.sync();
    const victim = [...v.chunks.keys()][0]!;
    const bytes = await readFile(chunkPath(dir, victim));
    bytes[3] = bytes[3]! ^ 0xff;
    await writeFile(chunkPath(dir, victim), bytes);

    expect(await cache.verifyAll()).toEqual({ checked: v.chunks.size, bad: [victim] });
    expect(cache.inventory()[0]?.state).toBe('syncing');
    src.calls.length = 0;
    await cache.sync();
    expect(src.calls).toEqual([victim]);
    expect((await readAll(cache, v)).equals(v.image)).toBe(true);
    await cache.close();
  });
});

describe('progress', () => {
  it('reports the share of non-zero bytes held while syncing, and serves the version only once verified', async () => {
    const dir = await tempDir();
    // 4 data chunks (one short) and 2 zero chunks: zeros count for nothing.
    const v = await makeVersion(key, vdiskId('p'), 0, ['rand', 'zero', 'rand', 'rand', 'zero', 'rand'], CHUNK / 2);
    const gate = latch();
    let n = 0;
    const src = memorySource('slow', [v], { gate: () => (++n > 2 ? gate.promise : Promise.resolve()) });
    const cache = await open(dir, [src], { concurrency: 1 });
    await cache.setNeeded([needed(v)]);
    const syncing = cache.sync();

    await vi.waitFor(() => expect(cache.inventory()[0]).toEqual({ vdiskId: v.vdiskId, number: 0, contentHash: v.contentHash, state: 'syncing', percent: 57.1 }));
    expect(cache.status().syncInProgress).toBe(true);
    expect(() => cache.open(v.vdiskId, 0)).toThrow(/syncing \(57.1 %\)/);
    // Joins the running sync instead of starting a second one.
    const joined = cache.sync();
    gate.open();
    await Promise.all([syncing, joined]);
    expect(cache.inventory()[0]?.state).toBe('verified');
    expect(cache.status().syncInProgress).toBe(false);
    expect(src.calls).toHaveLength(4);
    await cache.close();
  });

  it('a needed set replaced during a sync is picked up by the sync() call that joins it', async () => {
    const dir = await tempDir();
    const v = await mixedVersion(1);
    const w = await mixedVersion(2);
    const gate = latch();
    let n = 0;
    const src = memorySource('slow', [v, w], { gate: () => (++n === 2 ? gate.promise : Promise.resolve()) });
    const cache = await open(dir, [src], { concurrency: 1 });
    await cache.setNeeded([needed(v)]);
    const first = cache.sync();
    await vi.waitFor(() => expect(n).toBe(2));
    await cache.setNeeded([needed(v), needed(w)]);
    const joined = cache.sync();
    gate.open();
    await Promise.all([first, joined]);
    expect(cache.inventory().map((e) => [e.number, e.state])).toEqual([
      [1, 'verified'],
      [2, 'verified'],
    ]);
    await cache.close();
  });

  it('a pass finishes with the needed set it started with, even if setNeeded replaces it while a manifest is on its way', async () => {
    const dir = await tempDir();
    const v = await mixedVersion(1);
    const gate = latch();
    const getManifest = async () => {
      await gate.promise;
      return v.signed;
    };
    const cache = await open(dir, [memorySource('s3', [v])], { getManifest });
    await cache.setNeeded([needed(v, undefined, false)]);
    const syncing = cache.sync();
    await new Promise((ok) => setImmediate(ok));
    await cache.setNeeded([]);
    gate.open();
    await expect(syncing).resolves.toBeUndefined();
    await cache.close();
  });

  it('an aborted sync resolves, keeps what it verified, and a later sync finishes', async () => {
    const dir = await tempDir();
    const v = await mixedVersion();
    const gate = latch();
    let n = 0;
    const src = memorySource('slow', [v], { gate: () => (++n > 1 ? gate.promise : Promise.resolve()) });
    const cache = await open(dir, [src], { concurrency: 1 });
    await cache.setNeeded([needed(v)]);
    const ac = new AbortController();
    const syncing = cache.sync(ac.signal);
    await vi.waitFor(() => expect(n).toBe(2));
    ac.abort();
    gate.open();
    await syncing;
    const held = cache.status().chunksHeld;
    expect(held).toBeGreaterThanOrEqual(1);
    expect(held).toBeLessThan(v.chunks.size);
    await cache.sync();
    expect(cache.inventory()[0]?.state).toBe('verified');
    await cache.close();
  });
});
