import { OpenAPIHono, createRoute, z } from '@hono/zod-openapi';
import { AuditRecordSchema, FarmError, PageQuerySchema, authorize, pageOf } from '../../model/index.js';
import type { Env } from '../auth.js';
import type { FarmRepo } from '../storage/repo.js';
import { errorResponses } from './resource.js';

const time = z.iso.datetime({ offset: true });

const AuditQuerySchema = PageQuerySchema.extend({
  objectType: z.enum(['farm', 'site', 'appliance', 'store', 'vdisk', 'version', 'collection', 'target', 'token']).optional(),
  objectId: z.string().max(200).optional(),
  actor: z.string().max(64).optional().meta({ description: 'Token name or token id' }),
  from: time.optional().meta({ description: 'Earliest time (ISO 8601), inclusive' }),
  to: time.optional().meta({ description: 'Latest time (ISO 8601), inclusive' }),
});

/** The audit trail, newest first. Site-scoped tokens see only their site's records. */
export function auditRoutes(repo: FarmRepo): OpenAPIHono<Env> {
  const app = new OpenAPIHono<Env>();
  app.openapi(
    createRoute({
      method: 'get',
      path: '/',
      tags: ['Audit'],
      summary: 'Query the audit trail by object, actor and time',
      security: [{ bearer: [] }],
      request: { query: AuditQuerySchema },
      responses: { 200: { description: 'Audit records, newest first', content: { 'application/json': { schema: pageOf(AuditRecordSchema) } } }, ...errorResponses(400, 401, 403) },
    }),
    async (c) => {
      const p = c.get('principal');
      authorize(p, 'read', 'audit', p.siteId);
      const q = c.req.valid('query');
      if (q.objectId && !q.objectType) throw new FarmError('validation_failed', 'objectType: required with objectId', 'objectType');
      const toIso = (s: string | undefined) => (s ? new Date(s).toISOString() : undefined);
      const page = await repo.audit({ ...q, from: toIso(q.from), to: toIso(q.to), siteId: p.siteId ?? undefined });
      return c.json(page, 200);
    },
  );
  return app;
}
