import { OpenAPIHono, createRoute } from '@hono/zod-openapi';
import { FarmError, FarmSchema, FarmSettingsFields, authorize, mergePatch, patchSchemaOf } from '../../model/index.js';
import type { Env } from '../auth.js';
import { validationError } from '../errors.js';
import { expectedVersion, etag } from '../http.js';
import type { FarmRepo, FarmView } from '../storage/repo.js';
import { errorResponses } from './resource.js';

const view = (f: FarmView) => ({ ...f.settings, version: f.version, revision: f.revision, updatedAt: f.updatedAt });

/** Farm settings (PVS: Farm Properties) and the farm revision. */
export function farmRoutes(repo: FarmRepo): OpenAPIHono<Env> {
  const app = new OpenAPIHono<Env>();
  const security = [{ bearer: [] }];
  app.openapi(
    createRoute({ method: 'get', path: '/', tags: ['Farm'], summary: 'Farm settings and configuration revision', security, responses: { 200: { description: 'Farm', content: { 'application/json': { schema: FarmSchema } } }, ...errorResponses(401) } }),
    async (c) => {
      authorize(c.get('principal'), 'read', 'farm', null);
      const f = await repo.farm();
      c.header('ETag', etag(f.version));
      c.header('X-Farm-Revision', String(f.revision));
      return c.json(view(f), 200);
    },
  );
  app.openapi(
    createRoute({
      method: 'patch',
      path: '/',
      tags: ['Farm'],
      summary: 'Update farm settings (farm admins)',
      security,
      request: { body: { required: true, content: { 'application/json': { schema: patchSchemaOf(FarmSettingsFields) } } } },
      responses: { 200: { description: 'Farm', content: { 'application/json': { schema: FarmSchema } } }, ...errorResponses(400, 401, 403, 409, 428) },
    }),
    async (c) => {
      const p = c.get('principal');
      authorize(p, 'update', 'farm', null);
      const expected = expectedVersion(c, true);
      const patch = c.req.valid('json');
      const { object } = await repo.updateFarm(
        expected,
        (current) => {
          const parsed = FarmSettingsFields.safeParse(mergePatch(current, patch));
          if (!parsed.success) throw validationError(parsed.error);
          if (parsed.data.autoAdd.enabled && !parsed.data.autoAdd.siteId)
            throw new FarmError('validation_failed', 'autoAdd.siteId: required when auto-add is enabled (the site whose default collection new targets join)', 'autoAdd.siteId');
          return parsed.data;
        },
        p,
      );
      c.header('ETag', etag(object.version));
      c.header('X-Farm-Revision', String(object.revision));
      return c.json(view(object), 200);
    },
  );
  return app;
}
