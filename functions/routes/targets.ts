/**
 * Target operations beyond the five resource routes. Mounted under
 * /v1/targets beside them (app.ts).
 */
import { OpenAPIHono, createRoute, z } from '@hono/zod-openapi';
import { MacSchema, TargetSchema, authorize } from '../../model/index.js';
import type { Env } from '../auth.js';
import { expectedVersion } from '../http.js';
import { targetResource } from '../resources.js';
import { siteOf } from '../storage/relations.js';
import type { FarmRepo } from '../storage/repo.js';
import { errorResponses, present, respond } from './resource.js';

export interface TargetRouteDeps {
  repo: FarmRepo;
  clock: () => Date;
}

const MacParams = z.object({ mac: MacSchema });

export function targetRoutes(deps: TargetRouteDeps): OpenAPIHono<Env> {
  const { repo, clock } = deps;
  const app = new OpenAPIHono<Env>();

  app.openapi(
    createRoute({
      method: 'post',
      path: '/{mac}/write-cache/reset',
      tags: ['Targets'],
      summary: "Empty a target's persistent write cache at its next boot",
      description:
        'PVS: a persistent cache on the server is kept across boots until an administrator resets it. Sets `writeCacheResetAt` to now ' +
        '(audited, new farm revision): the appliances empty the cache when the target next boots. No body. ' +
        'Allowed to whoever may operate the target: farm admins, site admins of its site, device operators in scope. ' +
        'If-Match is optional; when given, a stale ETag gets 409.',
      security: [{ bearer: [] }],
      request: {
        params: MacParams,
        headers: z.object({ 'if-match': z.string().optional().meta({ description: 'ETag of the version you read, or *' }) }),
      },
      responses: {
        200: { description: 'The target with its new writeCacheResetAt; ETag holds its new version', content: { 'application/json': { schema: TargetSchema } } },
        ...errorResponses(400, 401, 403, 404, 409),
      },
    }),
    async (c) => {
      const { mac } = c.req.valid('param');
      const p = c.get('principal');
      const { object, revision } = await repo.update(
        'target',
        mac,
        expectedVersion(c, false),
        (current) => {
          // The field PATCH would change, through the same matrix: a device operator may (it operates the
          // device, like disabling it: OPERATOR_TARGET_FIELDS), read-only tokens and other sites may not.
          authorize(p, 'update', 'target', siteOf('target', current), ['writeCacheResetAt']);
          return { ...current, writeCacheResetAt: clock().toISOString() };
        },
        p,
      );
      return respond(c, present(targetResource, object), revision, 200);
    },
  );

  return app;
}
