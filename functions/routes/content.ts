import { OpenAPIHono, createRoute, z } from '@hono/zod-openapi';
import {
  ChunkHashSchema,
  ContentSchema,
  DescriptionSchema,
  FarmError,
  IdSchema,
  SIGNATURE_ALG,
  VersionSchema,
  authorize,
  type Content,
} from '../../model/index.js';
import type { Env } from '../auth.js';
import { collectGarbage, commitUpload, createVersion, loadManifest, openUpload, uploadUrls, versionsOf, type ContentDeps } from '../vdisk-content.js';
import { siteUsesVdisk } from './appliances.js';
import { errorResponses, load, respond } from './resource.js';

const security = [{ bearer: [] }];
const VdiskParams = z.object({ id: IdSchema });
const UploadParams = VdiskParams.extend({ uploadId: z.string().regex(/^[0-9a-f]{32}$/, 'must be an upload id') });
const StartState = z.enum(['maintenance', 'test', 'production']);

const UploadStatusSchema = z
  .object({
    uploadId: z.string(),
    chunks: z.number().int(),
    distinct: z.number().int(),
    stored: z.number().int(),
    arrived: z.number().int(),
    missing: z.array(z.string()),
  })
  .meta({ id: 'UploadStatus' });

const json = (schema: z.ZodType, description: string) => ({ description, content: { 'application/json': { schema } } });
const body = (schema: z.ZodType, required = true) => ({ body: { required, content: { 'application/json': { schema } } } });

/**
 * vDisk content: uploads straight to S3 through presigned URLs (bytes never
 * pass through the API), commit with verification, manifests, merge, GC.
 */
export function contentRoutes(deps: ContentDeps): OpenAPIHono<Env> {
  const app = new OpenAPIHono<Env>();
  const admin = (c: { get(k: 'principal'): import('../../model/index.js').Principal }, action: 'create' | 'update' | 'delete') => authorize(c.get('principal'), action, 'vdisk', null);

  app.openapi(
    createRoute({
      method: 'post',
      path: '/vdisks/{id}/uploads',
      tags: ['vDisk content'],
      summary: 'Start (or resume) an upload: send the chunk list, learn which chunks the farm lacks',
      description: 'The upload id is derived from the content, so the same push resumes where it stopped.',
      security,
      request: { params: VdiskParams, ...body(ContentSchema) },
      responses: { 200: json(UploadStatusSchema, 'What the farm has and lacks'), ...errorResponses(400, 401, 403, 404) },
    }),
    async (c) => {
      admin(c, 'update');
      return c.json(await openUpload(deps, c.req.valid('param').id, c.req.valid('json') as Content), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/vdisks/{id}/uploads/{uploadId}/urls',
      tags: ['vDisk content'],
      summary: 'Presigned S3 PUT URLs for chunks of an upload (at most 1000 a call, valid one hour)',
      security,
      request: { params: UploadParams, ...body(z.object({ hashes: z.array(ChunkHashSchema).min(1).max(1000) }).strict()) },
      responses: { 200: json(z.object({ urls: z.record(z.string(), z.string()) }), 'URL per chunk hash'), ...errorResponses(400, 401, 403, 404) },
    }),
    async (c) => {
      admin(c, 'update');
      const { id, uploadId } = c.req.valid('param');
      return c.json({ urls: await uploadUrls(deps, id, uploadId, (c.req.valid('json') as { hashes: string[] }).hashes) }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/vdisks/{id}/uploads/{uploadId}/commit',
      tags: ['vDisk content'],
      summary: 'Verify every chunk and create the version (201), or return the version that already has this content (200)',
      security,
      request: { params: UploadParams, ...body(z.object({ state: StartState.optional(), description: DescriptionSchema.default('') }).strict(), false) },
      responses: { 200: json(VersionSchema, 'Unchanged: the newest version has this content'), 201: json(VersionSchema, 'Created'), ...errorResponses(400, 401, 403, 404, 409) },
    }),
    async (c) => {
      admin(c, 'create');
      const { id, uploadId } = c.req.valid('param');
      const b = (c.req.valid('json' as never) as { state?: z.infer<typeof StartState>; description?: string } | undefined) ?? {};
      // The first version of a vDisk is its production base (PVS: a new vDisk); later ones start in maintenance.
      const state = b.state ?? ((await versionsOf(deps.repo, id)).length ? 'maintenance' : 'production');
      const r = await commitUpload(deps, id, uploadId, { state, description: b.description ?? '' }, c.get('principal'));
      return respond(c, r.version, r.revision, r.created ? 201 : 200, `/v1/vdisks/${id}/versions/${r.version.number}`);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/vdisks/{id}/versions/{number}/manifest',
      tags: ['vDisk content'],
      summary: 'The signed manifest of a version (verify it with /v1/signing-keys)',
      security,
      request: { params: VdiskParams.extend({ number: z.string().regex(/^\d{1,5}$/) }) },
      responses: { 200: json(z.unknown(), 'Signed manifest'), ...errorResponses(400, 401, 404) },
    }),
    async (c) => {
      const p = c.get('principal');
      const { id, number } = c.req.valid('param');
      // Appliances fetch manifests of the vDisks their site's targets use, and no others.
      if (p.role === 'appliance') {
        if (!p.siteId || !(await siteUsesVdisk(deps.repo, p.siteId, id))) throw new FarmError('forbidden', `vDisk ${id} is not assigned to any target of site ${p.siteId}`);
      } else authorize(p, 'read', 'version', null);
      const v = await load('version', `${id}.${Number(number)}`, deps.repo);
      const raw = await deps.blobs.get(v.manifest as string);
      if (!raw) throw new FarmError('internal', `manifest of version ${number} is missing`);
      return c.body(new Uint8Array(raw), 200, { 'content-type': 'application/json' }) as never;
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/vdisks/{id}/merge',
      tags: ['vDisk content'],
      summary: 'Merge: a new base version with the content of a version (no chunk is copied); older versions become merged',
      security,
      request: {
        params: VdiskParams,
        ...body(z.object({ version: z.number().int().min(0).optional(), state: StartState.default('production'), description: DescriptionSchema.default('') }).strict(), false),
      },
      responses: { 201: json(VersionSchema, 'The new base'), ...errorResponses(400, 401, 403, 404, 409) },
    }),
    async (c) => {
      const p = c.get('principal');
      admin(c, 'create');
      const { id } = c.req.valid('param');
      const b = (c.req.valid('json' as never) as { version?: number; state?: z.infer<typeof StartState>; description?: string } | undefined) ?? {};
      const versions = await versionsOf(deps.repo, id);
      const live = versions.filter((v) => v.state !== 'merged');
      const source = b.version === undefined ? live.filter((v) => v.state !== 'maintenance').at(-1) : versions.find((v) => v.number === b.version);
      if (!source) throw new FarmError(b.version === undefined ? 'in_use' : 'not_found', b.version === undefined ? 'nothing to merge: no test or production version' : `version ${b.version} does not exist`);
      if (source.state === 'merged') throw new FarmError('validation_failed', `version: ${source.number} is already merged`, 'version');
      if (source.state === 'maintenance') throw new FarmError('validation_failed', `version: ${source.number} is in maintenance; promote it before merging`, 'version');
      const m = await loadManifest(deps, source);
      const created = await createVersion(
        deps,
        id,
        { content: { sizeBytes: m.sizeBytes, chunkSize: m.chunkSize, chunks: m.chunks }, state: b.state ?? 'production', description: b.description || `merged base of version ${source.number}`, parent: null },
        p,
      );
      // Everything before the new base is history now (PVS: versions replaced by a merged base).
      for (const v of live) if (v.state !== 'maintenance') await deps.repo.update('version', v.id, null, (cur) => ({ ...cur, state: 'merged' }), p);
      return respond(c, created.version, await deps.repo.revision(), 201, `/v1/vdisks/${id}/versions/${created.version.number}`);
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/gc',
      tags: ['vDisk content'],
      summary: 'Delete chunks that no manifest or open upload references (farm admins)',
      security,
      request: body(z.object({ graceSeconds: z.number().int().min(0).max(30 * 86400).default(3600) }).strict(), false),
      responses: { 200: json(z.record(z.string(), z.number()), 'What was scanned and deleted'), ...errorResponses(401, 403, 409) },
    }),
    async (c) => {
      authorize(c.get('principal'), 'delete', 'store', null);
      const b = (c.req.valid('json' as never) as { graceSeconds?: number } | undefined) ?? {};
      return c.json({ ...(await collectGarbage(deps, b.graceSeconds ?? 3600)) }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/signing-keys',
      tags: ['vDisk content'],
      summary: 'Public keys that sign manifests (and config snapshots)',
      security,
      responses: { 200: json(z.object({ keys: z.array(z.object({ keyId: z.string(), alg: z.string(), publicKeyPem: z.string() })) }), 'Keys'), ...errorResponses(401) },
    }),
    async (c) => c.json({ keys: [{ keyId: deps.signer.keyId, alg: SIGNATURE_ALG, publicKeyPem: deps.signer.publicKeyPem }] }, 200),
  );

  return app;
}
