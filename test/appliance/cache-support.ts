/**
 * Fixtures for the vDisk cache tests: a real P-256 signing key, random disk
 * images cut into chunks with real signed manifests, in-memory chunk sources
 * that count, misbehave or pause on request, and a log that records.
 */
import { generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { onTestFinished } from 'vitest';
import type { CacheLog, ChunkSource } from '../../appliance/cache/index.js';
import { MANIFEST_FORMAT, chunkCount, chunkRange, contentHash, keyIdOf, sha256Hex, signManifest, type Manifest, type SignedManifest, type SigningKey } from '../../model/manifest.js';

export const KiB = 1024;
export const CHUNK = 64 * KiB;
export const STORE_A = 'st_aaaaaaaaaaaaaaaa';
export const STORE_B = 'st_bbbbbbbbbbbbbbbb';
export const vdiskId = (c: string) => `vd_${c.repeat(16)}`;

export function testKey(): SigningKey & { sign(data: Buffer): Promise<Buffer> } {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return {
    keyId: keyIdOf(publicKey),
    publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    sign: async (data) => sign('sha256', data, { key: privateKey, dsaEncoding: 'der' }),
  };
}

/** One chunk of an image: random bytes, zeros, or given bytes (the last chunk may be short). */
export type ChunkSpec = 'rand' | 'zero' | Buffer;

export interface TestVersion {
  vdiskId: string;
  number: number;
  image: Buffer;
  manifest: Manifest;
  signed: SignedManifest;
  contentHash: string;
  /** Non-zero chunks: hash -> bytes. */
  chunks: Map<string, Buffer>;
}

/** A version from chunk specs; `lastBytes` makes the last chunk short. */
export async function makeVersion(key: ReturnType<typeof testKey>, id: string, number: number, specs: ChunkSpec[], lastBytes = CHUNK): Promise<TestVersion> {
  const parts = specs.map((s, i) => {
    const len = i === specs.length - 1 ? lastBytes : CHUNK;
    if (s === 'rand') return randomBytes(len);
    if (s === 'zero') return Buffer.alloc(len);
    return s.subarray(0, len);
  });
  const image = Buffer.concat(parts);
  const chunks = new Map<string, Buffer>();
  const hashes = parts.map((p) => {
    if (p.every((b) => b === 0)) return null;
    const h = sha256Hex(p);
    chunks.set(h, p);
    return h;
  });
  const manifest: Manifest = {
    format: MANIFEST_FORMAT,
    vdiskId: id,
    version: number,
    parent: null,
    sectorSize: 512,
    sizeBytes: image.length,
    chunkSize: CHUNK,
    chunks: hashes,
    createdAt: '2024-01-01T00:00:00.000Z',
  };
  if (chunkCount(manifest.sizeBytes, CHUNK) !== hashes.length) throw new Error('bad fixture');
  return { vdiskId: id, number, image, manifest, signed: await signManifest(manifest, key), contentHash: contentHash(manifest), chunks };
}

export const needed = (v: TestVersion, storeId = STORE_A, withManifest = true) => ({
  vdiskId: v.vdiskId,
  number: v.number,
  storeId,
  contentHash: v.contentHash,
  ...(withManifest ? { signedManifest: v.signed } : {}),
});

/** The bytes of chunk `i` of a version, from its image. */
export function chunkOf(v: TestVersion, i: number): Buffer {
  const { start, end } = chunkRange(i, v.manifest.sizeBytes, v.manifest.chunkSize);
  return v.image.subarray(start, end);
}

export interface MemorySource extends ChunkSource {
  /** Hashes asked for, in order. */
  calls: string[];
  /** Hashes it answered with bytes. */
  served: string[];
}

/**
 * A source serving the chunks of the given versions from memory.
 * `corrupt`: hashes it answers with one byte flipped. `gate`: awaited before
 * each answer (to pause a sync). `fail`: throws instead of answering.
 */
export function memorySource(
  name: string,
  versions: TestVersion[],
  opts: { corrupt?: Set<string>; gate?: (hash: string) => Promise<void>; fail?: boolean; only?: Set<string> } = {},
): MemorySource {
  const data = new Map(versions.flatMap((v) => [...v.chunks]));
  const src: MemorySource = {
    name,
    calls: [],
    served: [],
    async fetch(hash) {
      src.calls.push(hash);
      await opts.gate?.(hash);
      if (opts.fail) throw new Error(`${name} is down`);
      const d = data.get(hash);
      if (!d || (opts.only && !opts.only.has(hash))) return null;
      src.served.push(hash);
      const out = Buffer.from(d);
      if (opts.corrupt?.has(hash)) out[17] = out[17]! ^ 0x01;
      return out;
    },
  };
  return src;
}

export interface LogLine {
  level: string;
  msg: string;
  fields?: Record<string, unknown>;
}

export function recordingLog(): { log: CacheLog; lines: LogLine[] } {
  const lines: LogLine[] = [];
  return { lines, log: (level, msg, fields) => lines.push({ level, msg, ...(fields ? { fields } : {}) }) };
}

/** A temp directory removed after the test. */
export async function tempDir(prefix = 'bootfarm-cache-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  onTestFinished(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** A promise with its resolve, for pausing sources. */
export function latch(): { promise: Promise<void>; open(): void } {
  let open!: () => void;
  const promise = new Promise<void>((ok) => (open = ok));
  return { promise, open };
}
