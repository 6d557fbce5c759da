/**
 * The five REST routes every farm object has (list, create, get, update,
 * delete), built from a ResourceSpec. The routes are the same for every kind;
 * what differs (schemas, derived fields, scoping) is in the spec.
 */
import { OpenAPIHono, createRoute, z } from '@hono/zod-openapi';
import type { Context } from 'hono';
import { FarmError, IdSchema, PageQuerySchema, authorize, mergePatch, pageOf, patchSchemaOf, type Principal } from '../../model/index.js';
import type { Env } from '../auth.js';
import { ErrorBodySchema, validationError } from '../errors.js';
import { etag, expectedVersion } from '../http.js';
import { KIND_LABEL, siteOf, type StoredKind } from '../storage/relations.js';
import type { FarmRepo, ListQuery, Obj } from '../storage/repo.js';

type Fields = Record<string, unknown>;

export interface ListFilter {
  schema: z.ZodType<string>;
  description: string;
  /** The list scope this filter selects, and the site it belongs to (for site-scoped tokens). */
  scope(value: string, repo: FarmRepo): Promise<{ query: Pick<ListQuery, 'parent' | 'siteId'>; siteId: string | null }>;
}

export interface ResourceSpec {
  kind: StoredKind;
  /** Collection path under /v1, e.g. /sites. */
  path: string;
  tag: string;
  schema: z.ZodObject;
  input: z.ZodObject;
  /** Path parameter that names one object. */
  idParam?: { name: string; schema: z.ZodType<string>; example: string };
  newId(fields: Fields): string;
  /** Fields fixed at creation. */
  immutable?: string[];
  /** Fields the control plane or the appliance owns (kept as they are by updates); initial values. */
  readOnly?: Fields;
  /** Derived fields and defaults that depend on other fields or objects; may throw FarmError. `fields.id` is set on update, absent on create. */
  complete?(fields: Fields, repo: FarmRepo): Promise<Fields> | Fields;
  /** Rules across fields. */
  check?(fields: Fields): void;
  filters?: Record<string, ListFilter>;
  /** How a site-scoped token's listing is limited when it names no filter. */
  siteScope?(siteId: string): Pick<ListQuery, 'parent' | 'siteId'>;
}

const errors = (...codes: number[]) =>
  Object.fromEntries(codes.map((code) => [code, { description: DESCRIPTIONS[code] ?? 'error', content: { 'application/json': { schema: ErrorBodySchema } } }]));
const DESCRIPTIONS: Record<number, string> = {
  400: 'Invalid input; the message names the field',
  401: 'No valid token',
  403: "Outside the token's role or site",
  404: 'No such object',
  409: 'Conflict: duplicate, stale version (ETag) or still in use',
  428: 'If-Match header missing',
};
export const COMMON_ERRORS = [400, 401, 403] as const;
export { errors as errorResponses };

export function resourceRoutes(spec: ResourceSpec, repo: FarmRepo): OpenAPIHono<Env> {
  const app = new OpenAPIHono<Env>();
  const [singular] = KIND_LABEL[spec.kind];
  const idName = spec.idParam?.name ?? 'id';
  // Path parameters are named by their key; no zod-openapi extension needed on model schemas.
  const params = z.object({ [idName]: spec.idParam?.schema ?? IdSchema });
  const patchSchema = patchSchemaOf(spec.input) as z.ZodObject;
  const filters = spec.filters ?? {};
  const listQuery = PageQuerySchema.extend(Object.fromEntries(Object.entries(filters).map(([k, f]) => [k, f.schema.optional().meta({ description: f.description })])));
  const security = [{ bearer: [] }];
  const json = (schema: z.ZodType, description: string) => ({ description, content: { 'application/json': { schema } } });

  app.openapi(
    createRoute({ method: 'get', path: '/', tags: [spec.tag], summary: `List ${KIND_LABEL[spec.kind][1]}`, security, request: { query: listQuery }, responses: { 200: json(pageOf(spec.schema), 'One page'), ...errors(400, 401, 403) } }),
    async (c) => {
      const q = c.req.valid('query') as { limit: number; cursor?: string } & Record<string, string | undefined>;
      const p = c.get('principal');
      const given = Object.keys(filters).filter((k) => q[k] !== undefined);
      if (given.length > 1) throw new FarmError('bad_request', `filter by one of ${given.join(', ')} at a time`);
      let scope: Pick<ListQuery, 'parent' | 'siteId'> = {};
      if (given[0]) {
        const r = await filters[given[0]]!.scope(q[given[0]]!, repo);
        authorize(p, 'read', spec.kind, r.siteId);
        scope = r.query;
      } else if (p.siteId && spec.kind === 'site') {
        const site = await repo.get('site', p.siteId);
        return c.json({ items: site ? [present(spec, site)] : [], nextCursor: null });
      } else if (p.siteId && spec.siteScope) {
        scope = spec.siteScope(p.siteId);
      }
      const page = await repo.list(spec.kind, { ...scope, limit: q.limit, cursor: q.cursor });
      return c.json({ items: page.items.map((o) => present(spec, o)), nextCursor: page.nextCursor });
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/',
      tags: [spec.tag],
      summary: `Create a ${singular}`,
      security,
      request: { body: { required: true, content: { 'application/json': { schema: spec.input } } } },
      responses: { 201: json(spec.schema, 'Created; ETag holds its version'), ...errors(400, 401, 403, 409) },
    }),
    async (c) => {
      const p = c.get('principal');
      const fields = await finish(spec, { ...spec.readOnly, ...(c.req.valid('json' as never) as Fields) }, repo);
      authorize(p, 'create', spec.kind, siteOf(spec.kind, fields));
      const { object, revision } = await repo.create(spec.kind, { ...fields, id: spec.newId(fields) }, p);
      return respond(c, present(spec, object), revision, 201, `/v1${spec.path}/${encodeURIComponent(object.id)}`);
    },
  );

  app.openapi(
    createRoute({ method: 'get', path: `/{${idName}}`, tags: [spec.tag], summary: `Get a ${singular}`, security, request: { params }, responses: { 200: json(spec.schema, 'The object; ETag holds its version'), ...errors(400, 401, 403, 404) } }),
    async (c) => {
      const id = (c.req.valid('param') as Record<string, string>)[idName]!;
      const object = await load(spec.kind, id, repo);
      authorize(c.get('principal'), 'read', spec.kind, siteOf(spec.kind, object));
      c.header('ETag', etag(object.version));
      return c.json(present(spec, object), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'patch',
      path: `/{${idName}}`,
      tags: [spec.tag],
      summary: `Update a ${singular}`,
      description: 'JSON merge patch (RFC 7396; null sets a field to null). Requires If-Match with the ETag you read: a stale write gets 409.',
      security,
      request: {
        params,
        headers: z.object({ 'if-match': z.string().optional().meta({ description: 'ETag of the version you read, or *' }) }),
        body: { required: true, content: { 'application/json': { schema: patchSchema } } },
      },
      responses: { 200: json(spec.schema, 'Updated; ETag holds the new version'), ...errors(400, 401, 403, 404, 409, 428) },
    }),
    async (c) => {
      const id = (c.req.valid('param') as Record<string, string>)[idName]!;
      const p = c.get('principal');
      const expected = expectedVersion(c, true);
      const patch = c.req.valid('json' as never) as Fields;
      const { object, revision } = await repo.update(
        spec.kind,
        id,
        expected,
        async (current) => {
          // Scope first (the fields named in the patch), so a token outside it gets 403 before any validation detail.
          authorize(p, 'update', spec.kind, siteOf(spec.kind, current), Object.keys(patch));
          for (const f of spec.immutable ?? [])
            if (f in patch && JSON.stringify(patch[f]) !== JSON.stringify(current[f])) throw new FarmError('validation_failed', `${f}: cannot be changed after creation`, f);
          const ownFields = pick(current, Object.keys(spec.input.shape));
          const parsed = spec.input.safeParse(mergePatch(ownFields, patch));
          if (!parsed.success) throw validationError(parsed.error);
          const kept = pick(current, [...Object.keys(spec.readOnly ?? {})]);
          const next = await finish(spec, { ...kept, ...(parsed.data as Fields), id }, repo);
          const changed = Object.keys(next).filter((k) => JSON.stringify(next[k]) !== JSON.stringify(current[k]));
          authorize(p, 'update', spec.kind, siteOf(spec.kind, current), changed);
          const newSite = siteOf(spec.kind, { ...next, id });
          if (newSite !== siteOf(spec.kind, current)) authorize(p, 'update', spec.kind, newSite, changed);
          return next;
        },
        p,
      );
      return respond(c, present(spec, object), revision, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'delete',
      path: `/{${idName}}`,
      tags: [spec.tag],
      summary: `Delete a ${singular}`,
      description: 'Refused with 409 while other objects still use it. If-Match is optional; when given, a stale ETag gets 409.',
      security,
      request: { params },
      responses: { 204: { description: 'Deleted' }, ...errors(400, 401, 403, 404, 409) },
    }),
    async (c) => {
      const id = (c.req.valid('param') as Record<string, string>)[idName]!;
      const p = c.get('principal');
      const { revision } = await repo.remove(spec.kind, id, expectedVersion(c, false), (current) => authorize(p, 'delete', spec.kind, siteOf(spec.kind, current)), p);
      c.header('X-Farm-Revision', String(revision));
      return c.body(null, 204);
    },
  );

  return app;
}

async function finish(spec: ResourceSpec, fields: Fields, repo: FarmRepo): Promise<Fields> {
  const done = spec.complete ? await spec.complete(fields, repo) : fields;
  spec.check?.(done);
  return done;
}

export async function load(kind: StoredKind, id: string, repo: FarmRepo): Promise<Obj> {
  const o = await repo.get(kind, id);
  if (!o) throw new FarmError('not_found', `${KIND_LABEL[kind][0]} ${id} does not exist`);
  return o;
}

export function respond<S extends 200 | 201>(c: Context, object: { version: number }, revision: number, status: S, location?: string) {
  c.header('ETag', etag(object.version));
  c.header('X-Farm-Revision', String(revision));
  if (location) c.header('Location', location);
  // Typed loosely: the stored object is the schema the route declares.
  return c.json(object as Record<string, unknown>, status) as never;
}

/**
 * The object with its fields in schema order, id first (DynamoDB maps keep no order). A read-only
 * field added after the object was stored (target `writeCacheResetAt`) shows its initial value.
 */
export function present(spec: ResourceSpec, stored: Obj): Obj {
  const o = { ...spec.readOnly, ...stored } as Obj;
  const keys = ['id', ...Object.keys(spec.schema.shape).filter((k) => k !== 'id')];
  return Object.fromEntries([...keys.filter((k) => k in o).map((k) => [k, o[k]]), ...Object.entries(o).filter(([k]) => !keys.includes(k))]) as Obj;
}

function pick(o: Record<string, unknown>, keys: string[]): Fields {
  return Object.fromEntries(keys.filter((k) => k in o).map((k) => [k, o[k]]));
}

export type { Principal };
