import { z } from 'zod';
import { IdSchema } from './common.js';
import { FarmError } from './errors.js';
import { OPERATOR_TARGET_FIELDS } from './target.js';

/**
 * Roles a farm admin can give a token: PVS administrator roles minus the
 * Windows groups, plus `appliance-enrol`, a one-time token an installer trades
 * for an appliance credential (`POST /v1/appliances/enrol`).
 */
export const ROLES = ['farm-admin', 'site-admin', 'device-operator', 'read-only', 'appliance-enrol'] as const;
/** Every role a principal can have: `appliance` credentials are made only by enrolment. */
export const PRINCIPAL_ROLES = [...ROLES, 'appliance'] as const;
export type Role = (typeof PRINCIPAL_ROLES)[number];
export type TokenRole = (typeof ROLES)[number];
/** How long an enrolment token stays valid when its creator gives no expiry. */
export const DEFAULT_ENROL_TTL_MS = 24 * 3600 * 1000;

export const TokenInputSchema = z
  .object({
    name: z.string().min(1).max(64).regex(/^[A-Za-z0-9][A-Za-z0-9 ._@-]*$/, 'may contain letters, digits, space, dot, underscore, @ and hyphen'),
    role: z.enum(ROLES),
    /** Required for site-admin; optional for device-operator and read-only (limits them to one site); never for farm-admin. */
    siteId: IdSchema.nullable().default(null),
    expiresAt: z.iso.datetime({ offset: true }).nullable().default(null),
  })
  .strict()
  .superRefine((t, ctx) => {
    if ((t.role === 'site-admin' || t.role === 'appliance-enrol') && !t.siteId) ctx.addIssue({ code: 'custom', path: ['siteId'], message: `required for role ${t.role}` });
    if (t.role === 'farm-admin' && t.siteId) ctx.addIssue({ code: 'custom', path: ['siteId'], message: 'not allowed for role farm-admin' });
  });
export type TokenInput = z.infer<typeof TokenInputSchema>;

export const TokenSchema = z
  .object({
    id: z.string(),
    name: z.string(),
    role: z.enum(PRINCIPAL_ROLES),
    siteId: IdSchema.nullable(),
    /** For role appliance: the appliance the credential belongs to. */
    applianceId: IdSchema.nullable().optional(),
    expiresAt: z.string().nullable(),
    createdAt: z.string(),
    createdBy: z.string(),
  })
  .meta({ id: 'Token' });
export type Token = z.infer<typeof TokenSchema>;

/** Who is calling: resolved from the bearer token on every request. */
export interface Principal {
  tokenId: string;
  name: string;
  role: Role;
  /** Site scope; null = the whole farm. */
  siteId: string | null;
  /** Role appliance: the appliance this credential belongs to. */
  applianceId?: string | null;
}

/** Appliance credentials and enrolment tokens: only the appliance routes accept them, each checking its own scope. */
export const isApplianceRole = (role: Role) => role === 'appliance' || role === 'appliance-enrol';

export type ObjectKind = 'farm' | 'site' | 'appliance' | 'store' | 'vdisk' | 'version' | 'collection' | 'target' | 'token' | 'audit';
export type Action = 'read' | 'create' | 'update' | 'delete';

/** Kinds a site admin manages inside its own site. */
const SITE_ADMIN_KINDS: ReadonlySet<ObjectKind> = new Set(['appliance', 'collection', 'target']);

/**
 * The whole permission model, as one pure function.
 * `siteId` is the site the object belongs to (null for farm-wide objects: stores, vDisks, versions, tokens).
 * `fields` are the top-level fields an update changes.
 */
export function authorize(p: Principal, action: Action, kind: ObjectKind, siteId: string | null, fields: readonly string[] = []): void {
  if (p.role === 'farm-admin') return;
  const deny = (why: string): never => {
    throw new FarmError('forbidden', `${p.role} token "${p.name}" may not ${action} ${kind}: ${why}`);
  };
  if (isApplianceRole(p.role)) deny(p.role === 'appliance' ? 'appliance credentials may only read their site snapshot and report their own status and events' : 'enrolment tokens may only enrol an appliance');
  const inScope = p.siteId === null || siteId === null || siteId === p.siteId;
  if (kind === 'token') deny('tokens are managed by farm admins');
  if (action === 'read') {
    if (!inScope) deny(`the object belongs to another site than ${p.siteId}`);
    return;
  }
  if (p.role === 'read-only') deny('the token is read-only');
  if (siteId === null || !inScope) deny(siteId === null ? 'farm-wide objects are managed by farm admins' : `the object belongs to another site than ${p.siteId}`);
  if (p.role === 'site-admin') {
    if (SITE_ADMIN_KINDS.has(kind)) return;
    if (kind === 'site' && action === 'update') return;
    deny(`site admins manage appliances, collections and targets of their site${kind === 'site' ? ', and may only update the site itself' : ''}`);
  }
  // device-operator: operates targets (OPERATOR_TARGET_FIELDS: enable/disable, boot source, write cache reset), configures nothing
  if (kind === 'target' && action === 'update') {
    const extra = fields.filter((f) => !(OPERATOR_TARGET_FIELDS as readonly string[]).includes(f));
    if (extra.length === 0) return;
    deny(`device operators may change only disabled and bootFrom (and reset the write cache), not ${extra.join(', ')}`);
  }
  deny('device operators may only enable or disable targets, choose their boot source and reset their write cache');
}
