/**
 * Chunk sources against real servers: the peer routes served over HTTP on
 * loopback to `peerSource`, and `presignedSource` fetching from s3rver through
 * real presigned GET URLs.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { serve } from '@hono/node-server';
import { Hono } from 'hono';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openVdiskCache, peerRoutes, peerSource, presignedSource, type ChunkOwner, type VdiskCache } from '../../appliance/cache/index.js';
import { chunkKey, sha256Hex } from '../../model/manifest.js';
import { testAws } from '../support/aws-clients.js';
import { CHUNK, makeVersion, memorySource, needed, recordingLog, tempDir, testKey, vdiskId, type TestVersion } from './cache-support.js';

const key = testKey();
const keys = () => [key];
const SECRET = 's3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t';

describe('peer routes', () => {
  let peer: VdiskCache;
  let v: TestVersion;
  let app: Hono;
  let dir: string;

  beforeAll(async () => {
    v = await makeVersion(key, vdiskId('r'), 1, ['rand', 'zero', 'rand'], 4096);
    dir = await mkdtemp(join(tmpdir(), 'bootfarm-peer-'));
    peer = await openVdiskCache({ dir, keys, sources: () => [memorySource('s3', [v])] });
    await peer.setNeeded([needed(v)]);
    await peer.sync();
    app = new Hono().route('/peer', peerRoutes(peer, SECRET));
  });
  afterAll(async () => {
    await peer?.close();
    await rm(dir, { recursive: true, force: true });
  });

  const get = (path: string, auth?: string) => app.request(path, auth === undefined ? {} : { headers: { authorization: auth } });
  const held = () => [...v.chunks.keys()][0]!;

  it('refuses a missing or wrong bearer with 401, before looking at the hash', async () => {
    for (const auth of [undefined, '', 'Bearer', 'Bearer ', `Bearer ${SECRET}x`, `Basic ${SECRET}`, SECRET, `bearer ${SECRET}`]) {
      const res = await get(`/peer/chunks/${held()}`, auth);
      expect(res.status, String(auth)).toBe(401);
      expect(res.headers.get('www-authenticate')).toBe('Bearer');
    }
    expect((await get('/peer/chunks/..%2F..%2Fetc%2Fpasswd')).status).toBe(401);
  });

  it('refuses anything but 64 lower-case hex with 400 (no path can be reached)', async () => {
    const bad = ['..%2Fx', '..%2F..%2Fmanifests', held().toUpperCase(), held().slice(0, 63), `${held()}0`, `${held().slice(0, 63)}g`, 'x'];
    for (const h of bad) expect((await get(`/peer/chunks/${h}`, `Bearer ${SECRET}`)).status, h).toBe(400);
    // Dot segments are resolved by the URL parser before routing: no route, no file.
    expect((await get('/peer/chunks/%2E%2E', `Bearer ${SECRET}`)).status).toBe(404);
  });

  it('answers 404 for a chunk not held and the exact bytes for one held', async () => {
    expect((await get(`/peer/chunks/${'ab'.repeat(32)}`, `Bearer ${SECRET}`)).status).toBe(404);
    const res = await get(`/peer/chunks/${held()}`, `Bearer ${SECRET}`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/octet-stream');
    expect(Buffer.from(await res.arrayBuffer()).equals(v.chunks.get(held())!)).toBe(true);
  });

  it('takes the current secret from a function; none yet means nobody gets in', async () => {
    let secret: string | undefined;
    const dyn = new Hono().route('/peer', peerRoutes(peer, () => secret));
    const req = () => dyn.request(`/peer/chunks/${held()}`, { headers: { authorization: `Bearer ${SECRET}` } });
    expect((await req()).status).toBe(401);
    secret = SECRET;
    expect((await req()).status).toBe(200);
  });
});

describe('peer first, S3 second, over real HTTP', () => {
  let server: ReturnType<typeof serve> | undefined;
  afterAll(() => new Promise<void>((ok) => (server ? server.close(() => ok()) : ok())));

  it('takes the chunks the peer holds from the peer and only the rest from S3', async () => {
    // The peer holds version 1; version 2 shares its first two data chunks and adds two new ones.
    const shared = [Buffer.alloc(CHUNK, 1), Buffer.alloc(CHUNK, 2)];
    const v1 = await makeVersion(key, vdiskId('h'), 1, [shared[0]!, 'zero', shared[1]!, 'rand']);
    const v2 = await makeVersion(key, vdiskId('h'), 2, [shared[0]!, 'rand', shared[1]!, 'rand', 'zero'], 3000);
    const peer = await openVdiskCache({ dir: await tempDir(), keys, sources: () => [memorySource('s3', [v1])] });
    await peer.setNeeded([needed(v1)]);
    await peer.sync();
    const port = await new Promise<number>((ok) => {
      server = serve({ fetch: new Hono().route('/peer', peerRoutes(peer, SECRET)).fetch, port: 0, hostname: '127.0.0.1' }, (info: AddressInfo) => ok(info.port));
    });

    const s3 = memorySource('s3', [v1, v2]);
    const { log, lines } = recordingLog();
    const cache = await openVdiskCache({
      dir: await tempDir(),
      keys,
      sources: () => [peerSource({ name: 'peer', baseUrl: `http://127.0.0.1:${port}/`, secret: SECRET }), s3],
      log,
    });
    await cache.setNeeded([needed(v2)]);
    await cache.sync();

    const fromPeer = [shared[0]!, shared[1]!].map((b) => sha256Hex(b));
    expect(cache.status().fetchedBySource).toEqual({ peer: { chunks: 2, bytes: 2 * CHUNK }, s3: { chunks: 2, bytes: 2 * CHUNK } });
    expect(s3.served.sort()).toEqual([...v2.chunks.keys()].filter((h) => !fromPeer.includes(h)).sort());
    expect(lines.filter((l) => l.msg === 'chunk fetched' && l.fields?.source === 'peer').map((l) => l.fields?.hash)).toEqual(expect.arrayContaining(fromPeer));
    const r = cache.open(v2.vdiskId, 2);
    expect((await r.read(0, r.sizeBytes)).equals(v2.image)).toBe(true);
    r.close();

    // A peer that refuses us (wrong secret) is a failed source: everything comes from S3.
    const s3b = memorySource('s3', [v2]);
    const other = await openVdiskCache({
      dir: await tempDir(),
      keys,
      sources: () => [peerSource({ name: 'peer', baseUrl: `http://127.0.0.1:${port}`, secret: 'wrong' }), s3b],
      log,
    });
    await other.setNeeded([needed(v2)]);
    await other.sync();
    expect(other.status().fetchedBySource).toEqual({ s3: { chunks: 4, bytes: 4 * CHUNK } });
    expect(lines.find((l) => l.msg === 'chunk source failed')?.fields).toMatchObject({ source: 'peer', error: 'peer: HTTP 401' });
    await Promise.all([cache.close(), other.close(), peer.close()]);
  });

  it('a peer that is down is skipped', async () => {
    const v = await makeVersion(key, vdiskId('d'), 1, ['rand']);
    const cache = await openVdiskCache({
      dir: await tempDir(),
      keys,
      // Port 9 on loopback: nothing listens (connection refused).
      sources: () => [peerSource({ name: 'peer', baseUrl: 'http://127.0.0.1:9', secret: SECRET }), memorySource('s3', [v])],
    });
    await cache.setNeeded([needed(v)]);
    await cache.sync();
    expect(cache.inventory()[0]?.state).toBe('verified');
    await cache.close();
  });
});

describe('presigned S3 source (s3rver)', () => {
  const aws = testAws();
  const owner: ChunkOwner = { vdiskId: vdiskId('s'), number: 4 };
  const presign = (hash: string, signingDate = new Date()) =>
    getSignedUrl(aws.s3, new GetObjectCommand({ Bucket: aws.bucketName, Key: chunkKey(hash) }), { expiresIn: 900, signingDate });
  const put = async (data: Buffer) => {
    const hash = sha256Hex(data);
    await aws.s3.send(new PutObjectCommand({ Bucket: aws.bucketName, Key: chunkKey(hash), Body: data }));
    return hash;
  };

  /** getUrls against the real presigner, recording each call. */
  function controlPlane() {
    const calls: { hashes: string[]; owner: ChunkOwner }[] = [];
    return {
      calls,
      getUrls: async (hashes: string[], o: ChunkOwner) => {
        calls.push({ hashes, owner: o });
        return Object.fromEntries(await Promise.all(hashes.map(async (h) => [h, await presign(h)] as const)));
      },
    };
  }

  it('asks for the URLs of one turn in one call per version and downloads the bytes', async () => {
    const data = Array.from({ length: 6 }, (_, i) => Buffer.alloc(1000 + i, 0x40 + i));
    const hashes = await Promise.all(data.map(put));
    const cp = controlPlane();
    const src = presignedSource({ getUrls: cp.getUrls });
    const other: ChunkOwner = { vdiskId: owner.vdiskId, number: 5 };
    const got = await Promise.all(hashes.map((h, i) => src.fetch(h, undefined, i < 4 ? owner : other)));
    got.forEach((g, i) => expect(Buffer.from(g!).equals(data[i]!)).toBe(true));
    expect(cp.calls).toEqual([
      { hashes: hashes.slice(0, 4), owner },
      { hashes: hashes.slice(4), owner: other },
    ]);
  });

  it('signs prefetched hashes along with the first request, at most 500 per call, and reuses URLs', async () => {
    const data = Array.from({ length: 3 }, (_, i) => Buffer.alloc(500, 0x60 + i));
    const hashes = await Promise.all(data.map(put));
    const cp = controlPlane();
    const src = presignedSource({ getUrls: cp.getUrls, maxBatch: 2 });
    src.prefetch!(hashes.map((hash) => ({ hash, ...owner })));
    await src.fetch(hashes[0]!, undefined, owner);
    expect(cp.calls.map((c) => c.hashes)).toEqual([[hashes[0], hashes[1]]]);
    await src.fetch(hashes[1]!, undefined, owner);
    expect(cp.calls).toHaveLength(1);
    await src.fetch(hashes[2]!, undefined, owner);
    expect(cp.calls.map((c) => c.hashes)).toEqual([[hashes[0], hashes[1]], [hashes[2]]]);
  });

  it('asks again for a URL close to expiry', async () => {
    const hash = await put(Buffer.alloc(700, 0x71));
    let now = 1_000_000;
    const cp = controlPlane();
    const src = presignedSource({ getUrls: cp.getUrls, clock: () => now });
    src.prefetch!([{ hash, ...owner }]);
    const other = await put(Buffer.alloc(700, 0x72));
    await src.fetch(other, undefined, owner); // signs `other` and, prefetched, `hash`
    expect(cp.calls.map((c) => c.hashes)).toEqual([[other, hash]]);
    now += 900_000 - 30_000; // 30 s left of the 900 s the URL says: too little
    await src.fetch(hash, undefined, owner);
    expect(cp.calls.map((c) => c.hashes)).toEqual([[other, hash], [hash]]);
  });

  it('on 403 asks for a fresh URL once; a chunk missing from S3 (404 twice) is a failure; a hash without URL is absent', async () => {
    const hash = await put(Buffer.alloc(300, 0x73));
    let n = 0;
    const src = presignedSource({
      getUrls: async (hs) => {
        n++;
        // First answer: a URL signed 20 minutes ago, expired for S3 (403 AccessDenied) though the appliance could not know.
        return { [hs[0]!]: await presign(hs[0]!, n === 1 ? new Date(Date.now() - 20 * 60_000) : new Date()) };
      },
    });
    expect(Buffer.from((await src.fetch(hash, undefined, owner))!).equals(Buffer.alloc(300, 0x73))).toBe(true);
    expect(n).toBe(2);

    const missing = 'cd'.repeat(32);
    const cp = controlPlane();
    const src2 = presignedSource({ getUrls: cp.getUrls });
    await expect(src2.fetch(missing, undefined, owner)).rejects.toThrow(/HTTP 404/);
    expect(cp.calls).toHaveLength(2);

    const none = presignedSource({ getUrls: async () => ({}) });
    expect(await none.fetch(hash, undefined, owner)).toBeNull();
    const down = presignedSource({
      getUrls: async () => {
        throw new Error('control plane unreachable');
      },
    });
    await expect(down.fetch(hash, undefined, owner)).rejects.toThrow(/unreachable/);
  });

  it('feeds a cache end to end, with the version each chunk is for', async () => {
    const v = await makeVersion(key, owner.vdiskId, owner.number, ['rand', 'zero', 'rand', 'rand'], 5000);
    for (const d of v.chunks.values()) await put(d);
    const cp = controlPlane();
    const cache = await openVdiskCache({ dir: await tempDir(), keys, sources: () => [presignedSource({ getUrls: cp.getUrls })] });
    await cache.setNeeded([needed(v)]);
    await cache.sync();
    expect(cache.inventory()[0]?.state).toBe('verified');
    // The cache announces its queue: one call signs all three chunks.
    expect(cp.calls).toEqual([{ hashes: expect.arrayContaining([...v.chunks.keys()]), owner }]);
    expect(cache.status().fetchedBySource.s3?.chunks).toBe(3);
    await cache.close();
  });
});
