import { z } from 'zod';
import { PRINCIPAL_ROLES } from './auth.js';

export const AuditChangeSchema = z.object({
  /** Dotted path of the property, e.g. bootstrap.pollingTimeoutMs. */
  property: z.string(),
  old: z.unknown(),
  new: z.unknown(),
});
export type AuditChange = z.infer<typeof AuditChangeSchema>;

export const AuditRecordSchema = z
  .object({
    id: z.string(),
    at: z.string().meta({ description: 'ISO 8601 time of the change' }),
    actor: z.object({ tokenId: z.string(), name: z.string(), role: z.enum([...PRINCIPAL_ROLES, 'system']) }),
    objectType: z.string(),
    objectId: z.string(),
    siteId: z.string().nullable(),
    action: z.enum(['create', 'update', 'delete']),
    changes: z.array(AuditChangeSchema),
  })
  .meta({ id: 'AuditRecord' });
export type AuditRecord = z.infer<typeof AuditRecordSchema>;

/**
 * Property-level differences between two versions of an object, as PVS's audit
 * trail records them: nested objects are walked, arrays and scalars compared whole.
 */
export function diffObjects(oldObj: unknown, newObj: unknown, prefix = ''): AuditChange[] {
  const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
  // A property that appears or disappears with an object value is recorded leaf by leaf.
  if ((isObj(oldObj) || oldObj === undefined) && (isObj(newObj) || newObj === undefined) && (isObj(oldObj) || isObj(newObj))) {
    oldObj ??= {};
    newObj ??= {};
    const [o, n] = [oldObj as Record<string, unknown>, newObj as Record<string, unknown>];
    const keys = [...new Set([...Object.keys(o), ...Object.keys(n)])].sort();
    return keys.flatMap((k) => diffObjects(o[k], n[k], prefix ? `${prefix}.${k}` : k));
  }
  if (JSON.stringify(oldObj ?? null) === JSON.stringify(newObj ?? null)) return []; // absent and null both mean "none"
  return [{ property: prefix, old: oldObj ?? null, new: newObj ?? null }];
}
