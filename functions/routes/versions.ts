import { OpenAPIHono, createRoute, z } from '@hono/zod-openapi';
import { FarmError, IdSchema, VersionInputSchema, VersionSchema, VersionUpdateSchema, authorize, checkVersionTransition, chunkCount, pageOf, selectVersion, type Version } from '../../model/index.js';
import type { Env } from '../auth.js';
import { etag, expectedVersion } from '../http.js';
import type { Obj } from '../storage/repo.js';
import { createVersion, loadManifest, targetsUsing, versionId, versionsOf, type ContentDeps } from '../vdisk-content.js';
import { errorResponses, load, respond } from './resource.js';

const VdiskParams = z.object({ id: IdSchema });
const VersionParams = VdiskParams.extend({ number: z.string().regex(/^\d{1,5}$/, 'must be a version number') });

/**
 * vDisk versions (PVS: Versions dialog). A new version starts in maintenance
 * on top of the newest; promote and revert are state changes checked by
 * checkVersionTransition. Only the newest version can be deleted.
 */
export function versionRoutes(deps: ContentDeps): OpenAPIHono<Env> {
  const { repo, clock } = deps;
  const app = new OpenAPIHono<Env>();
  const security = [{ bearer: [] }];
  const json = (description: string) => ({ description, content: { 'application/json': { schema: VersionSchema } } });

  app.openapi(
    createRoute({ method: 'get', path: '/{id}/versions', tags: ['vDisks'], summary: 'List the versions of a vDisk, oldest first', security, request: { params: VdiskParams }, responses: { 200: { description: 'Versions', content: { 'application/json': { schema: pageOf(VersionSchema) } } }, ...errorResponses(400, 401, 404) } }),
    async (c) => {
      authorize(c.get('principal'), 'read', 'version', null);
      const { id } = c.req.valid('param');
      await load('vdisk', id, repo);
      return c.json({ items: await versionsOf(repo, id), nextCursor: null }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/{id}/versions',
      tags: ['vDisks'],
      summary: 'Create a new maintenance version on top of the newest',
      security,
      request: { params: VdiskParams, body: { required: false, content: { 'application/json': { schema: VersionInputSchema } } } },
      responses: { 201: json('Created'), ...errorResponses(400, 401, 403, 404, 409) },
    }),
    async (c) => {
      const p = c.get('principal');
      authorize(p, 'create', 'version', null);
      const { id } = c.req.valid('param');
      const input = VersionInputSchema.parse((c.req.valid('json' as never) as unknown) ?? {});
      const vdisk = await load('vdisk', id, deps.repo);
      const newest = (await versionsOf(deps.repo, id)).at(-1);
      // A new version starts as a copy of the newest (no chunk moves); the first one is a blank disk to image (PVS: Create vDisk).
      const content = newest
        ? await loadManifest(deps, newest)
        : { sizeBytes: vdisk.sizeBytes as number, chunkSize: vdisk.chunkSize as number, chunks: new Array<null>(chunkCount(vdisk.sizeBytes as number, vdisk.chunkSize as number)).fill(null) };
      const { version, revision } = await createVersion(
        deps,
        id,
        { content: { sizeBytes: content.sizeBytes, chunkSize: content.chunkSize, chunks: content.chunks }, state: 'maintenance', description: input.description },
        p,
      );
      return respond(c, version, revision, 201, `/v1/vdisks/${id}/versions/${version.number}`);
    },
  );

  app.openapi(
    createRoute({ method: 'get', path: '/{id}/versions/{number}', tags: ['vDisks'], summary: 'Get a version', security, request: { params: VersionParams }, responses: { 200: json('The version'), ...errorResponses(400, 401, 404) } }),
    async (c) => {
      authorize(c.get('principal'), 'read', 'version', null);
      const { id, number: raw } = c.req.valid('param');
      const number = Number(raw);
      const v = await load('version', versionId(id, number), repo);
      c.header('ETag', etag(v.version));
      return c.json(v as never, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'patch',
      path: '/{id}/versions/{number}',
      tags: ['vDisks'],
      summary: 'Update a version: description, or state (promote / revert)',
      security,
      request: { params: VersionParams, body: { required: true, content: { 'application/json': { schema: VersionUpdateSchema } } } },
      responses: { 200: json('Updated'), ...errorResponses(400, 401, 403, 404, 409, 428) },
    }),
    async (c) => {
      const p = c.get('principal');
      authorize(p, 'update', 'version', null);
      const { id, number: raw } = c.req.valid('param');
      const number = Number(raw);
      const patch = c.req.valid('json');
      const expected = expectedVersion(c, true);
      const { object, revision } = await repo.update(
        'version',
        versionId(id, number),
        expected,
        async (current: Obj) => {
          const cur = current as unknown as Version;
          const next = { ...current, ...patch } as Record<string, unknown>;
          if (patch.state && patch.state !== cur.state) {
            if (patch.state === 'merged') throw new FarmError('validation_failed', 'state: versions become merged only by a merge', 'state');
            if (cur.state === 'merged') throw new FarmError('validation_failed', 'state: a merged version cannot change state', 'state');
            const newest = (await versionsOf(repo, id)).at(-1);
            checkVersionTransition(cur.state, patch.state, newest?.number === cur.number);
            if (patch.state !== 'maintenance') next.promotedAt = clock().toISOString();
          }
          return next;
        },
        p,
      );
      return respond(c, object, revision, 200);
    },
  );

  app.openapi(
    createRoute({ method: 'delete', path: '/{id}/versions/{number}', tags: ['vDisks'], summary: 'Delete the newest version', security, request: { params: VersionParams }, responses: { 204: { description: 'Deleted' }, ...errorResponses(400, 401, 403, 404, 409) } }),
    async (c) => {
      const p = c.get('principal');
      authorize(p, 'delete', 'version', null);
      const { id, number: raw } = c.req.valid('param');
      const number = Number(raw);
      const newest = (await versionsOf(repo, id)).at(-1);
      const { revision } = await repo.remove(
        'version',
        versionId(id, number),
        expectedVersion(c, false),
        async () => {
          if (newest && newest.number !== number) throw new FarmError('in_use', `version ${number} has newer versions on top of it; only the newest (${newest.number}) can be deleted`);
          await refuseIfBooted(deps, id, number);
        },
        p,
      );
      c.header('X-Farm-Revision', String(revision));
      return c.body(null, 204);
    },
  );
  return app;
}

/** A version that targets assigned to its vDisk boot (by their type) cannot be deleted. */
async function refuseIfBooted(deps: ContentDeps, vdiskId: string, number: number): Promise<void> {
  if ((await deps.repo.refCount('vdisk', vdiskId, 'target')) === 0) return;
  const types = new Set((await targetsUsing(deps.repo, vdiskId)).map((t) => t.type));
  const versions = await versionsOf(deps.repo, vdiskId);
  const users = (['production', 'test', 'maintenance'] as const).filter((t) => types.has(t) && selectVersion(versions, t)?.number === number);
  if (users.length) throw new FarmError('in_use', `version ${number} is the version ${users.join(', ')} targets of this vDisk boot; promote another version or unassign the vDisk first`);
}
