/**
 * Bearer-token authentication: every /v1 route but the OpenAPI document
 * requires a token; the principal it resolves to is on the context.
 */
import type { MiddlewareHandler } from 'hono';
import { FarmError, type Principal } from '../model/index.js';
import type { FarmRepo } from './storage/repo.js';

export type Env = { Variables: { principal: Principal } };

export interface BearerAuthOptions {
  repo: FarmRepo;
  clock?: () => Date;
  /** Paths served without a token. */
  public?: string[];
}

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
    c.set('principal', principal);
    return next();
  };
}
