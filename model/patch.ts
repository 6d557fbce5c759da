import { z } from 'zod';

/**
 * The PATCH body schema of an input schema: every field optional at every
 * object level, and no defaults (a patch must not reset fields it does not name).
 */
export function patchSchemaOf(schema: z.ZodType): z.ZodType {
  const def = (schema as z.ZodType & { def: { type: string } }).def;
  switch (def.type) {
    case 'default':
    case 'prefault':
      return patchSchemaOf((schema as unknown as z.ZodDefault<z.ZodType>).unwrap() as z.ZodType);
    case 'optional':
      return patchSchemaOf((schema as z.ZodOptional<z.ZodType>).unwrap() as z.ZodType).optional();
    case 'nullable':
      return patchSchemaOf((schema as z.ZodNullable<z.ZodType>).unwrap() as z.ZodType).nullable();
    case 'object': {
      const obj = schema as z.ZodObject;
      const shape = Object.fromEntries(Object.entries(obj.shape).map(([k, v]) => [k, patchSchemaOf(v as z.ZodType).optional()]));
      return z.object(shape).strict();
    }
    default:
      return schema;
  }
}

/**
 * Applies a patch: objects merge member by member (JSON Merge Patch, RFC 7396 §2),
 * arrays and scalars replace; unlike RFC 7396 a null sets the field to null
 * (bootfarm's nullable fields mean "none", they are never removed).
 */
export function mergePatch<T>(target: T, patch: unknown): T {
  const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
  if (!isObj(patch) || !isObj(target)) return patch as T;
  const out: Record<string, unknown> = { ...target };
  for (const [k, v] of Object.entries(patch)) {
    if (v === undefined) continue;
    out[k] = isObj(v) && isObj(out[k]) ? mergePatch(out[k], v) : v;
  }
  return out as T;
}

/** The first zod issue as one line that names the field: "bootstrap.servers.0.port: Too big ...". */
export function describeIssues(error: z.ZodError): { message: string; field: string | undefined } {
  const issue = error.issues[0];
  if (!issue) return { message: 'invalid input', field: undefined };
  let path = issue.path.map(String).join('.');
  if (issue.code === 'unrecognized_keys') {
    const keys = (issue as { keys: string[] }).keys;
    path = [path, keys[0]].filter(Boolean).join('.');
    return { message: `${path}: unknown field${keys.length > 1 ? ` (also ${keys.slice(1).join(', ')})` : ''}`, field: path };
  }
  return { message: path ? `${path}: ${issue.message}` : issue.message, field: path || undefined };
}
