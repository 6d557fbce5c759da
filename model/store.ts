import { z } from 'zod';
import { DescriptionSchema, IdSchema, nameSchema, systemFields } from './common.js';

const bytes = z.number().int('must be a whole number of bytes').min(0);

export const S3PrefixSchema = z
  .string()
  .max(200)
  .regex(/^[a-z0-9][a-z0-9._-]*(\/[a-z0-9][a-z0-9._-]*)*\/$/, 'must be a relative S3 prefix of lower-case segments ending with "/", e.g. stores/main/')
  .refine((s) => !s.split('/').some((seg) => seg === '.' || seg === '..'), 'must not contain "." or ".." segments');

/** Where vDisk masters live (S3) and how much of them each site may cache. */
export const StoreInputSchema = z
  .object({
    name: nameSchema(50),
    description: DescriptionSchema.default(''),
    /** Defaults to stores/<name in lower case>/. Cannot change once set. */
    s3Prefix: S3PrefixSchema.optional(),
    cacheQuota: z
      .object({
        /** Bytes an appliance of any site may use for this store's cache; null = no limit. */
        defaultBytes: bytes.nullable().default(null),
        /** Per-site overrides, by site id. */
        perSite: z.record(IdSchema, bytes).default({}),
      })
      .strict()
      .prefault({}),
  })
  .strict();

export const StoreSchema = StoreInputSchema.extend({ ...systemFields, s3Prefix: S3PrefixSchema }).meta({ id: 'Store' });
export type StoreInput = z.infer<typeof StoreInputSchema>;
export type Store = z.infer<typeof StoreSchema>;

export const defaultS3Prefix = (name: string) =>
  `stores/${name.toLowerCase().replace(/[^a-z0-9._-]+/g, '-').replace(/^[^a-z0-9]+/, '') || 'store'}/`;
