/**
 * Console sessions: the admin signs in with an API token once; it is kept in
 * an HttpOnly, SameSite=Strict cookie scoped to /console and checked on every
 * request exactly as the API checks a bearer token (repo.authenticate), so a
 * revoked or expired token ends the session at once. The token never appears
 * in a page. Appliance credentials and enrolment tokens cannot sign in.
 */
import type { Context } from 'hono';
import { deleteCookie, getCookie, setCookie } from 'hono/cookie';
import { isApplianceRole, type Principal } from '../../model/index.js';
import type { FarmRepo } from '../storage/repo.js';

export const SESSION_COOKIE = 'bootfarm_console';
/** A console session lasts a working day at most; the token's own expiry ends it sooner. */
export const SESSION_SECONDS = 12 * 3600;

export interface Session {
  token: string;
  principal: Principal;
}

const secure = (c: Context) => new URL(c.req.url).protocol === 'https:' || c.req.header('x-forwarded-proto') === 'https';

export async function readSession(c: Context, repo: FarmRepo, now: Date): Promise<Session | null> {
  const token = getCookie(c, SESSION_COOKIE);
  if (!token) return null;
  const principal = await repo.authenticate(token, now);
  if (!principal || isApplianceRole(principal.role)) return null;
  return { token, principal };
}

/** Checks a token typed at sign-in; returns why it cannot sign in, or null. */
export async function checkSignIn(repo: FarmRepo, token: string, now: Date): Promise<{ principal: Principal } | { error: string }> {
  if (!/^\S+$/.test(token)) return { error: 'Paste the whole token: bft_ followed by letters and digits, no spaces.' };
  const principal = await repo.authenticate(token, now);
  if (!principal) return { error: 'This token is unknown, revoked or expired.' };
  if (isApplianceRole(principal.role)) return { error: `A ${principal.role} token cannot sign in to the console: use an admin, operator or read-only token.` };
  return { principal };
}

export function startSession(c: Context, token: string): void {
  setCookie(c, SESSION_COOKIE, token, { path: '/console', httpOnly: true, sameSite: 'Strict', secure: secure(c), maxAge: SESSION_SECONDS });
}

export function endSession(c: Context): void {
  deleteCookie(c, SESSION_COOKIE, { path: '/console', secure: secure(c) });
}
