/**
 * Bearer-token authentication: every /v1 route but the OpenAPI document
 * requires a token; the principal it resolves to is on the context.
 */
import type { MiddlewareHandler } from 'hono';
import { FarmError, type Principal, type Role } from '../model/index.js';
import type { FarmRepo } from './storage/repo.js';

export type Env = { Variables: { principal: Principal } };

export interface BearerAuthOptions {
  repo: FarmRepo;
  clock?: () => Date;
  /** Paths served without a token. */
  public?: string[];
}

/**
 * The only routes appliance credentials and enrolment tokens reach (the routes
 * themselves then check the site or appliance they name). An allow-list, so a
 * route added later is closed to them until someone decides otherwise.
 */
const APPLIANCE_ROUTES: Partial<Record<Role, [method: string, path: RegExp][]>> = {
  'appliance-enrol': [['POST', /^\/v1\/appliances\/enrol$/]],
  appliance: [
    ['GET', /^\/v1\/sites\/[^/]+\/snapshot$/],
    ['POST', /^\/v1\/sites\/[^/]+\/chunk-urls$/],
    ['GET', /^\/v1\/vdisks\/[^/]+\/versions\/\d+\/manifest$/],
    ['PUT', /^\/v1\/appliances\/[^/]+\/status$/],
    ['POST', /^\/v1\/appliances\/[^/]+\/events$/],
    ['GET', /^\/v1\/signing-keys$/],
  ],
};

export function bearerAuth(opts: BearerAuthOptions): MiddlewareHandler<Env> {
  const clock = opts.clock ?? (() => new Date());
  const open = new Set(opts.public ?? []);
  return async function bearerAuth(c, next) {
    if (open.has(c.req.path)) return next();
    const header = c.req.header('authorization');
    if (!header) throw new FarmError('unauthenticated', 'missing Authorization: Bearer <token> header');
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (!m) throw new FarmError('unauthenticated', 'Authorization header must be "Bearer <token>"');
    const principal = await opts.repo.authenticate(m[1]!, clock());
    if (!principal) throw new FarmError('unauthenticated', 'token is unknown, revoked or expired');
    const allowed = APPLIANCE_ROUTES[principal.role];
    if (allowed && !allowed.some(([method, path]) => method === c.req.method && path.test(c.req.path)))
      throw new FarmError('forbidden', `${principal.role} token "${principal.name}" may not call ${c.req.method} ${c.req.path}: ${principal.role === 'appliance' ? 'appliance credentials read their site snapshot and manifests and report their own status and events' : 'enrolment tokens may only enrol an appliance'}`);
    c.set('principal', principal);
    return next();
  };
}
