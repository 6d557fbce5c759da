import { z } from 'zod';
import { DescriptionSchema, IdSchema, MacSchema, nameSchema, systemFields } from './common.js';
import { FarmError } from './errors.js';

export const TARGET_NAME_MAX = 15;

/** PVS auto-add naming: prefix + zero-filled number + suffix, at most 15 characters. */
export const AutoAddNamingSchema = z
  .object({
    prefix: z.string().max(14).regex(/^([A-Za-z0-9-]*[A-Za-z-])?$/, 'may contain letters, digits and hyphens, and must not end with a digit').default(''),
    numberLength: z.number().int().min(1, 'must be between 1 and 9').max(9, 'must be between 1 and 9').default(4),
    suffix: z.string().max(14).regex(/^([A-Za-z-][A-Za-z0-9-]*)?$/, 'may contain letters, digits and hyphens, and must not start with a digit').default(''),
    startNumber: z.number().int().min(0).default(1),
  })
  .strict();
export type AutoAddNaming = z.infer<typeof AutoAddNamingSchema>;

export const CollectionInputSchema = z
  .object({
    siteId: IdSchema,
    name: nameSchema(50),
    description: DescriptionSchema.default(''),
    /** Target whose settings auto-added targets copy (PVS: template device). */
    templateTargetMac: MacSchema.nullable().default(null),
    autoAdd: AutoAddNamingSchema.prefault({ prefix: 'target-' }),
  })
  .strict();

export const CollectionSchema = CollectionInputSchema.extend(systemFields).meta({ id: 'Collection' });
export type CollectionInput = z.infer<typeof CollectionInputSchema>;
export type Collection = z.infer<typeof CollectionSchema>;

export function checkCollection(c: CollectionInput): void {
  const { prefix, numberLength, suffix } = c.autoAdd;
  if (prefix.length + numberLength + suffix.length > TARGET_NAME_MAX)
    throw new FarmError('validation_failed', `autoAdd: prefix, number and suffix together must be at most ${TARGET_NAME_MAX} characters`, 'autoAdd');
  if (!prefix && !suffix) throw new FarmError('validation_failed', 'autoAdd.prefix: a prefix or a suffix is required (a name cannot be all digits)', 'autoAdd.prefix');
}

/** The name auto-add gives the n-th target of a collection (pure; PVS semantics). */
export function autoAddName(naming: AutoAddNaming, n: number): string {
  const num = String(n).padStart(naming.numberLength, '0');
  if (num.length > naming.numberLength) throw new FarmError('in_use', `auto-add numbers of length ${naming.numberLength} are used up`);
  return `${naming.prefix}${num}${naming.suffix}`;
}
