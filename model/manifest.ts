/**
 * vDisk version manifests: the ordered SHA-256 hashes of a disk's chunks,
 * signed by the control plane. Whoever holds a manifest and the farm's public
 * key can verify every byte of the disk it describes. Format: docs/vdisk-format.md.
 */
import { createHash, createPublicKey, verify as verifySignature, type KeyObject } from 'node:crypto';
import { z } from 'zod';
import { IdSchema } from './common.js';
import { FarmError } from './errors.js';

export const MANIFEST_FORMAT = 'bootfarm.manifest/1';
/** ECDSA over P-256 with SHA-256, DER-encoded signature (what AWS KMS ECC_NIST_P256 returns). */
export const SIGNATURE_ALG = 'ECDSA_P256_SHA256';

/**
 * 4 MiB chunks by default: small enough that a patch Tuesday rewriting scattered
 * files moves a few percent of a disk (PVS's 32 MiB VHDX blocks would move 8x
 * more around each change), large enough that a 100 GiB disk is 25,600 objects
 * and S3's per-request cost and latency stay small next to the bytes.
 */
export const DEFAULT_CHUNK_SIZE = 4 * 1024 * 1024;
export const MIN_CHUNK_SIZE = 64 * 1024;
export const MAX_CHUNK_SIZE = 64 * 1024 * 1024;

export const ChunkHashSchema = z.string().regex(/^[0-9a-f]{64}$/, 'must be a lower-case hex SHA-256');

export const ChunkSizeSchema = z
  .number()
  .int()
  .min(MIN_CHUNK_SIZE, 'must be at least 64 KiB')
  .max(MAX_CHUNK_SIZE, 'must be at most 64 MiB')
  .refine((n) => (n & (n - 1)) === 0, 'must be a power of two');

/** The layout of a disk's content: size, chunk size and one hash per chunk (null = all zeros, no data stored). */
export const ContentSchema = z
  .object({
    sizeBytes: z.number().int().min(1).max(64 * 2 ** 40),
    chunkSize: ChunkSizeSchema,
    chunks: z.array(ChunkHashSchema.nullable()),
  })
  .strict()
  .superRefine((c, ctx) => {
    const want = chunkCount(c.sizeBytes, c.chunkSize);
    if (c.chunks.length !== want) ctx.addIssue({ code: 'custom', path: ['chunks'], message: `must list ${want} chunks for ${c.sizeBytes} bytes in ${c.chunkSize}-byte chunks, not ${c.chunks.length}` });
  });
export type Content = z.infer<typeof ContentSchema>;

export const ManifestSchema = z
  .object({
    format: z.literal(MANIFEST_FORMAT),
    vdiskId: IdSchema,
    version: z.number().int().min(0),
    parent: z.number().int().min(0).nullable(),
    sectorSize: z.union([z.literal(512), z.literal(4096)]),
    sizeBytes: z.number().int().min(1).max(64 * 2 ** 40),
    chunkSize: ChunkSizeSchema,
    chunks: z.array(ChunkHashSchema.nullable()),
    createdAt: z.string(),
  })
  .strict()
  .superRefine((m, ctx) => {
    const want = chunkCount(m.sizeBytes, m.chunkSize);
    if (m.chunks.length !== want) ctx.addIssue({ code: 'custom', path: ['chunks'], message: `must list ${want} chunks, not ${m.chunks.length}` });
  });
export type Manifest = z.infer<typeof ManifestSchema>;

/** What is stored: the exact manifest bytes and a signature over them. */
export const SignedManifestSchema = z
  .object({
    payload: z.string().meta({ description: 'base64 of the manifest JSON bytes that were signed' }),
    alg: z.literal(SIGNATURE_ALG),
    keyId: z.string().regex(/^[0-9a-f]{16}$/),
    signature: z.string().meta({ description: 'base64 DER ECDSA signature over the payload bytes' }),
  })
  .strict();
export type SignedManifest = z.infer<typeof SignedManifestSchema>;

export interface SigningKey {
  keyId: string;
  publicKeyPem: string;
}

/** A version's identity by content: SHA-256 over [sizeBytes, chunkSize, chunks]. Appliances and the API compare versions by it. */
export const contentHash = (c: Pick<Content, 'sizeBytes' | 'chunkSize' | 'chunks'>) => sha256Hex(Buffer.from(JSON.stringify([c.sizeBytes, c.chunkSize, c.chunks])));

export const chunkCount = (sizeBytes: number, chunkSize: number) => Math.ceil(sizeBytes / chunkSize);

/** Byte range [start, end) of chunk i. */
export function chunkRange(i: number, sizeBytes: number, chunkSize: number): { start: number; end: number } {
  const start = i * chunkSize;
  return { start, end: Math.min(start + chunkSize, sizeBytes) };
}

export const sha256Hex = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');

/** S3 key of a chunk: stored once per farm under its hash (fanned out by the first byte). */
export const chunkKey = (hash: string) => `chunks/${hash.slice(0, 2)}/${hash}`;

/** Key id of a public key: the first 8 bytes of SHA-256 over its SPKI DER encoding, in hex. */
export function keyIdOf(publicKey: KeyObject | string): string {
  const key = typeof publicKey === 'string' ? createPublicKey(publicKey) : publicKey;
  return sha256Hex(key.export({ type: 'spki', format: 'der' })).slice(0, 16);
}

export function isAllZero(buf: Uint8Array): boolean {
  // Compare 8 bytes at a time where the buffer is aligned; the tail byte by byte.
  const words = Math.floor(buf.byteLength / 8);
  if (buf.byteOffset % 8 === 0 && words) {
    const view = new BigUint64Array(buf.buffer, buf.byteOffset, words);
    for (let i = 0; i < words; i++) if (view[i] !== 0n) return false;
    for (let i = words * 8; i < buf.byteLength; i++) if (buf[i] !== 0) return false;
    return true;
  }
  for (let i = 0; i < buf.byteLength; i++) if (buf[i] !== 0) return false;
  return true;
}

/** Encodes and signs a manifest with `sign` (a local key or AWS KMS). */
export async function signManifest(manifest: Manifest, key: { keyId: string; sign(data: Buffer): Promise<Buffer> }): Promise<SignedManifest> {
  const payload = Buffer.from(JSON.stringify(ManifestSchema.parse(manifest)));
  return { payload: payload.toString('base64'), alg: SIGNATURE_ALG, keyId: key.keyId, signature: (await key.sign(payload)).toString('base64') };
}

/**
 * Checks the signature first and only then reads the payload: an unsigned or
 * tampered manifest is never parsed into something the caller could use.
 */
export function verifyManifest(raw: unknown, keys: SigningKey[]): Manifest {
  const env = SignedManifestSchema.safeParse(raw);
  if (!env.success) throw new FarmError('bad_request', `manifest: not a signed bootfarm manifest (${env.error.issues[0]?.message})`);
  const key = keys.find((k) => k.keyId === env.data.keyId);
  if (!key) throw new FarmError('forbidden', `manifest: signed with unknown key ${env.data.keyId}`);
  const payload = Buffer.from(env.data.payload, 'base64');
  const ok = verifySignature('sha256', payload, { key: createPublicKey(key.publicKeyPem), dsaEncoding: 'der' }, Buffer.from(env.data.signature, 'base64'));
  if (!ok) throw new FarmError('forbidden', 'manifest: signature does not match its content (tampered or corrupt)');
  let json: unknown;
  try {
    json = JSON.parse(payload.toString('utf8'));
  } catch {
    throw new FarmError('bad_request', 'manifest: signed payload is not JSON');
  }
  const m = ManifestSchema.safeParse(json);
  if (!m.success) throw new FarmError('bad_request', `manifest: ${m.error.issues[0]?.path.join('.')}: ${m.error.issues[0]?.message}`);
  return m.data;
}

/** Checks a chunk's bytes against the hash the manifest lists for it. */
export function verifyChunk(data: Uint8Array, expected: string | null, index: number): void {
  if (expected === null ? !isAllZero(data) : sha256Hex(data) !== expected)
    throw new FarmError('forbidden', `chunk ${index}: content does not match the manifest (expected ${expected ?? 'zeros'})`);
}
