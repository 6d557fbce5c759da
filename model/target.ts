import { z } from 'zod';
import { DescriptionSchema, IdSchema, MacSchema, systemFields } from './common.js';
import { TARGET_NAME_MAX } from './collection.js';

/** Target names become computer names: NetBIOS rules (1-15 chars, letters, digits, hyphen, not all digits). */
export const TargetNameSchema = z
  .string()
  .min(1, 'must not be empty')
  .max(TARGET_NAME_MAX, `must be at most ${TARGET_NAME_MAX} characters`)
  .regex(/^[A-Za-z0-9][A-Za-z0-9-]*$/, 'may contain letters, digits and hyphens, and must start with a letter or digit')
  .refine((s) => !/^\d+$/.test(s), 'must not be all digits');

export const PersonalitySchema = z
  .array(
    z
      .object({
        name: z.string().min(1).max(64).regex(/^[A-Za-z0-9_.-]+$/, 'may contain letters, digits, underscore, dot and hyphen'),
        value: z.string().max(1024),
      })
      .strict(),
  )
  .max(64, 'at most 64 personality strings')
  .refine((l) => new Set(l.map((p) => p.name.toLowerCase())).size === l.length, 'personality names must be unique');

export const TargetInputSchema = z
  .object({
    mac: MacSchema,
    name: TargetNameSchema,
    collectionId: IdSchema,
    description: DescriptionSchema.default(''),
    /** vDisks this target may boot, first one by default (PVS: vDisk assignment and boot menu). */
    assignments: z
      .array(z.object({ vdiskId: IdSchema }).strict())
      .max(16, 'at most 16 vDisk assignments')
      .refine((l) => new Set(l.map((a) => a.vdiskId)).size === l.length, 'a vDisk can be assigned only once')
      .default([]),
    /** Which versions the target sees: production, test (newest test or production) or maintenance (the maintenance version, read/write). */
    type: z.enum(['production', 'test', 'maintenance']).default('production'),
    bootFrom: z.enum(['vdisk', 'local-disk']).default('vdisk'),
    /** Write cache limit in MiB for appliance-side caches (temporary and persistent); 0: no limit but the vDisk's size. */
    writeCacheSizeMb: z.number().int().min(0).max(1024 * 1024).default(0),
    personality: PersonalitySchema.default([]),
    /** A disabled target is refused at boot (PVS: "Disable this device"). */
    disabled: z.boolean().default(false),
  })
  .strict();

/**
 * A target's last boot as its appliances reported it (PVS: the device's status): which appliance answered its
 * boot script and which one streams it, and, once the OS attached its disk, when and how long the boot took.
 * Written by the control plane from appliance events, never by an administrator.
 */
export interface LastBoot {
  /** When its boot script was made. */
  at: string;
  /** The boot id its NBD export name carries (the script's event and the OS's completion name it); null when no NBD was offered. */
  bootId: string | null;
  /** The appliance that answered the boot script; null when only the completion was heard. */
  applianceId: string | null;
  outcome: 'vdisk' | 'local-disk' | 'refused';
  vdiskId: string | null;
  version: number | null;
  streamingApplianceId: string | null;
  message: string;
  /** When the OS attached its disk (NBD), and on which appliance; null until then (a boot with no NBD never completes). */
  completedAt: string | null;
  completedOn: string | null;
  /** Boot script to the OS attaching its disk. */
  durationMs: number | null;
}

export const TargetSchema = TargetInputSchema.extend({
  ...systemFields,
  /** The collection's site; kept by the control plane. */
  siteId: IdSchema,
  lastBoot: z.record(z.string(), z.unknown()).nullable(),
  /**
   * When an administrator last asked for the target's persistent write cache to be emptied (ISO time); appliances empty it at the target's next boot.
   * Set only by `POST /v1/targets/{mac}/write-cache/reset`. Defaults to null so that targets stored and snapshots signed before the field existed still parse.
   */
  writeCacheResetAt: z.string().nullable().default(null),
}).meta({ id: 'Target' });
export type TargetInput = z.infer<typeof TargetInputSchema>;
export type Target = z.infer<typeof TargetSchema>;

/**
 * Fields a device operator may change (PVS Device Operator: operate devices, not configure them).
 * `writeCacheResetAt` is not in the input schema (PATCH refuses it): only the write cache reset route sets it.
 * Emptying a target's persistent write cache is an operation on the device, like disabling it or
 * booting it from its local disk: it changes nothing of what the target boots or how, and returns
 * the device to the state of its vDisk that a temporary cache gives at every boot.
 */
export const OPERATOR_TARGET_FIELDS = ['disabled', 'bootFrom', 'writeCacheResetAt'] as const;
