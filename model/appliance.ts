import { z } from 'zod';
import { DescriptionSchema, HostSchema, IdSchema, IpAddressSchema, nameSchema, systemFields } from './common.js';

/** An on-site appliance (PVS: a server running the Stream service). */
export const ApplianceInputSchema = z
  .object({
    siteId: IdSchema,
    name: nameSchema(63),
    description: DescriptionSchema.default(''),
    managementAddress: HostSchema,
    /** Addresses targets stream from; the first is the preferred one. */
    streamingAddresses: z.array(IpAddressSchema).max(16).default([]),
    /** Relative capacity used by load balancing (PVS default 1.0). */
    powerRating: z.number().min(0.1, 'must be between 0.1 and 1000').max(1000, 'must be between 0.1 and 1000').default(1),
    /** PVS "maximum devices booting": default 500; PVS's ceiling per server is 4095. */
    maxTargets: z.number().int().min(1, 'must be between 1 and 4095').max(4095, 'must be between 1 and 4095').default(500),
  })
  .strict();

export const ApplianceSchema = ApplianceInputSchema.extend({
  ...systemFields,
  /** Written by the appliance itself. */
  lastHeartbeat: z.string().nullable(),
  inventory: z.record(z.string(), z.unknown()).nullable(),
}).meta({ id: 'Appliance' });
export type ApplianceInput = z.infer<typeof ApplianceInputSchema>;
export type Appliance = z.infer<typeof ApplianceSchema>;
