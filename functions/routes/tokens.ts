import { OpenAPIHono, createRoute, z } from '@hono/zod-openapi';
import { DEFAULT_ENROL_TTL_MS, PageQuerySchema, TokenInputSchema, TokenSchema, authorize, pageOf } from '../../model/index.js';
import type { Env } from '../auth.js';
import type { FarmRepo } from '../storage/repo.js';
import { errorResponses } from './resource.js';

const CreatedTokenSchema = TokenSchema.extend({ token: z.string().meta({ description: 'The bearer token. Shown once: only its hash is stored.' }) }).meta({ id: 'CreatedToken' });

/** API tokens (farm admins only). */
export function tokenRoutes(repo: FarmRepo, clock: () => Date = () => new Date()): OpenAPIHono<Env> {
  const app = new OpenAPIHono<Env>();
  const security = [{ bearer: [] }];
  app.openapi(
    createRoute({ method: 'get', path: '/', tags: ['Tokens'], summary: 'List tokens (never their secrets)', security, request: { query: PageQuerySchema }, responses: { 200: { description: 'Tokens', content: { 'application/json': { schema: pageOf(TokenSchema) } } }, ...errorResponses(401, 403) } }),
    async (c) => {
      authorize(c.get('principal'), 'read', 'token', null);
      const q = c.req.valid('query');
      return c.json(await repo.listTokens(q.limit, q.cursor), 200);
    },
  );
  app.openapi(
    createRoute({
      method: 'post',
      path: '/',
      tags: ['Tokens'],
      summary: 'Create a token; the response carries it once',
      security,
      request: { body: { required: true, content: { 'application/json': { schema: TokenInputSchema } } } },
      responses: { 201: { description: 'Created', content: { 'application/json': { schema: CreatedTokenSchema } } }, ...errorResponses(400, 401, 403) },
    }),
    async (c) => {
      const p = c.get('principal');
      authorize(p, 'create', 'token', null);
      const input = c.req.valid('json');
      // Enrolment tokens are one-time and short-lived unless their creator says otherwise.
      if (input.role === 'appliance-enrol' && !input.expiresAt) input.expiresAt = new Date(clock().getTime() + DEFAULT_ENROL_TTL_MS).toISOString();
      const { token, secret } = await repo.createToken(input, p);
      c.header('Cache-Control', 'no-store');
      return c.json({ ...token, token: secret }, 201);
    },
  );
  app.openapi(
    createRoute({
      method: 'delete',
      path: '/{id}',
      tags: ['Tokens'],
      summary: 'Revoke a token',
      security,
      request: { params: z.object({ id: z.string().regex(/^[a-z2-7]{16}$/, 'must be a token id') }) },
      responses: { 204: { description: 'Revoked' }, ...errorResponses(400, 401, 403, 404) },
    }),
    async (c) => {
      const p = c.get('principal');
      authorize(p, 'delete', 'token', null);
      await repo.revokeToken(c.req.valid('param').id, p);
      return c.body(null, 204);
    },
  );
  return app;
}
