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
    /** Write cache limit in MiB; 0 uses the vDisk's default. */
    writeCacheSizeMb: z.number().int().min(0).max(1024 * 1024).default(0),
    personality: PersonalitySchema.default([]),
    /** A disabled target is refused at boot (PVS: "Disable this device"). */
    disabled: z.boolean().default(false),
  })
  .strict();

export const TargetSchema = TargetInputSchema.extend({
  ...systemFields,
  /** The collection's site; kept by the control plane. */
  siteId: IdSchema,
  lastBoot: z.record(z.string(), z.unknown()).nullable(),
}).meta({ id: 'Target' });
export type TargetInput = z.infer<typeof TargetInputSchema>;
export type Target = z.infer<typeof TargetSchema>;

/** Fields a device operator may change (PVS Device Operator: operate devices, not configure them). */
export const OPERATOR_TARGET_FIELDS = ['disabled', 'bootFrom'] as const;
