import { z } from 'zod';
import { IdSchema } from './common.js';

/** Farm-wide settings (PVS: Farm Properties). */
export const FarmSettingsFields = z
  .object({
    name: z.string().min(1).max(64).default('bootfarm'),
    /** PVS defaults auditing to off; a farm that cannot say who changed what is hard to run, so bootfarm defaults it on. */
    auditing: z.boolean().default(true),
    /** Versions kept per vDisk before a merge is required (PVS: default 5, range 3-50). */
    maxVersions: z.number().int().min(3, 'must be between 3 and 50').max(50, 'must be between 3 and 50').default(5),
    /** Auto-add: unknown targets that PXE boot are added to this site's default collection. */
    autoAdd: z
      .object({
        enabled: z.boolean().default(false),
        siteId: IdSchema.nullable().default(null),
      })
      .strict()
      .default({ enabled: false, siteId: null }),
  })
  .strict();
export type FarmSettings = z.infer<typeof FarmSettingsFields>;

export const FarmSchema = FarmSettingsFields.extend({
  version: z.number().int(),
  revision: z.number().int().meta({ description: 'Farm configuration revision: increases on every change anywhere in the farm' }),
  updatedAt: z.string().nullable(),
}).meta({ id: 'Farm' });
export type Farm = z.infer<typeof FarmSchema>;
