import { z } from 'zod';
import { DescriptionSchema, IdSchema, nameSchema, systemFields } from './common.js';
import { FarmError } from './errors.js';
import { ChunkSizeSchema, DEFAULT_CHUNK_SIZE } from './manifest.js';

export const WRITE_CACHE_TYPES = ['device-ram', 'device-ram-overflow', 'appliance-temporary', 'appliance-persistent'] as const;

/** A virtual disk in a store (PVS: vDisk, with its .pvp properties). */
export const VdiskInputSchema = z
  .object({
    storeId: IdSchema,
    /** Unique in its store; 52 characters like PVS. */
    name: nameSchema(52),
    description: DescriptionSchema.default(''),
    sizeBytes: z
      .number()
      .int('must be a whole number of bytes')
      .min(1024 * 1024, 'must be at least 1 MiB')
      .max(64 * 2 ** 40, 'must be at most 64 TiB'),
    sectorSize: z.union([z.literal(512), z.literal(4096)], { error: 'must be 512 or 4096' }).default(512),
    /** Content is stored in chunks of this size (a power of two, 64 KiB-64 MiB); fixed per vDisk. See DEFAULT_CHUNK_SIZE. */
    chunkSize: ChunkSizeSchema.default(DEFAULT_CHUNK_SIZE),
    /** standard: shared read-only image with a write cache per target; private: one target writes the image itself. */
    accessMode: z.enum(['standard', 'private']).default('standard'),
    /** PVS codes: 3 device RAM, 9 device RAM with overflow (the recommended one), 1 server, 7 server persistent. */
    writeCacheType: z.enum(WRITE_CACHE_TYPES).default('device-ram-overflow'),
    loadBalancing: z
      .object({
        mode: z.enum(['algorithm', 'fixed']).default('algorithm'),
        /** With mode fixed: the one appliance that serves this vDisk. */
        applianceId: IdSchema.nullable().default(null),
      })
      .strict()
      .prefault({}),
    subnetAffinity: z.enum(['none', 'best-effort', 'fixed']).default('none'),
  })
  .strict();

export const VdiskSchema = VdiskInputSchema.extend(systemFields).meta({ id: 'Vdisk' });
export type VdiskInput = z.infer<typeof VdiskInputSchema>;
export type Vdisk = z.infer<typeof VdiskSchema>;

/** Rules that span fields; the schema checks each field alone. */
export function checkVdisk(v: VdiskInput): void {
  if (v.sizeBytes % v.sectorSize !== 0)
    throw new FarmError('validation_failed', `sizeBytes: must be a multiple of the sector size (${v.sectorSize})`, 'sizeBytes');
  if (v.loadBalancing.mode === 'fixed' && !v.loadBalancing.applianceId)
    throw new FarmError('validation_failed', 'loadBalancing.applianceId: required when mode is fixed', 'loadBalancing.applianceId');
  if (v.loadBalancing.mode === 'algorithm' && v.loadBalancing.applianceId)
    throw new FarmError('validation_failed', 'loadBalancing.applianceId: only allowed when mode is fixed', 'loadBalancing.applianceId');
}

/** PVS version access: maintenance (one writer), test, production; merged bases are read-only history. */
export const VERSION_STATES = ['maintenance', 'test', 'production', 'merged'] as const;
export type VersionState = (typeof VERSION_STATES)[number];

export const VersionInputSchema = z
  .object({
    description: DescriptionSchema.default(''),
  })
  .strict();

export const VersionUpdateSchema = z
  .object({
    description: DescriptionSchema,
    state: z.enum(VERSION_STATES),
  })
  .partial()
  .strict();

export const VersionSchema = z
  .object({
    ...systemFields,
    vdiskId: IdSchema,
    number: z.number().int().min(0),
    parent: z.number().int().min(0).nullable(),
    state: z.enum(VERSION_STATES),
    description: DescriptionSchema,
    /** S3 key of the signed manifest (every version has content: pushed, or inherited from its parent). */
    manifest: z.string().nullable(),
    /** SHA-256 of [sizeBytes, chunkSize, chunks] (see contentHash): two versions with the same value have the same content. */
    contentHash: z.string().nullable().optional(),
    promotedAt: z.string().nullable(),
  })
  .meta({ id: 'Version' });
export type Version = z.infer<typeof VersionSchema>;

/**
 * Allowed state changes (PVS: Promote and Revert). Promote moves towards
 * production; revert moves back one step, and only the newest version may be
 * reverted to maintenance (a maintenance version must be the tip).
 * `merged` is set by the merge operation only.
 */
export function checkVersionTransition(from: VersionState, to: VersionState, isNewest: boolean): void {
  if (from === to) return;
  const ok =
    (from === 'maintenance' && (to === 'test' || to === 'production')) ||
    (from === 'test' && to === 'production') ||
    (from === 'production' && to === 'test') ||
    (from === 'test' && to === 'maintenance' && isNewest);
  if (!ok) {
    const why = to === 'maintenance' && !isNewest ? ' (only the newest version can go back to maintenance)' : '';
    throw new FarmError('validation_failed', `state: cannot change a ${from} version to ${to}${why}`, 'state');
  }
}

export type TargetType = 'production' | 'test' | 'maintenance';

/**
 * The version a target of the given type boots (PVS access rules): production
 * targets only production versions; test targets the newest test version, else
 * production; maintenance targets the maintenance version, else as test.
 * Merged versions are history and never boot. Versions are in any order.
 */
export function selectVersion<V extends { number: number; state: VersionState }>(versions: V[], type: TargetType): V | null {
  const newest = (states: VersionState[]) =>
    versions.filter((v) => states.includes(v.state)).reduce<V | null>((a, v) => (a === null || v.number > a.number ? v : a), null);
  if (type === 'production') return newest(['production']);
  if (type === 'test') return newest(['test', 'production']);
  return newest(['maintenance']) ?? newest(['test', 'production']);
}
