/**
 * Console sessions. An admin signs in with an API token once. What the browser keeps is a session id and the token sealed
 * with a farm key (AES-256-GCM, the session id as associated data), in a cookie that is HttpOnly, SameSite=Strict, scoped to
 * /console and gone when the browser closes. So:
 * - a copied cookie opens the console only while its session lasts, and the raw token cannot be read out of it to call /v1;
 * - the session is a record on the server: signing out deletes it, and it ends after 12 h whatever the cookie says;
 * - the token is checked on every request exactly as the API checks a bearer token (repo.authenticate), so a revoked or
 *   expired token ends the session at once.
 * The token never appears in a page. Appliance credentials and enrolment tokens cannot sign in.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import type { Context } from 'hono';
import { deleteCookie, getCookie, setCookie } from 'hono/cookie';
import { isApplianceRole, type Principal } from '../../model/index.js';
import type { FarmRepo } from '../storage/repo.js';

export const SESSION_COOKIE = 'bootfarm_console';
/** A console session lasts a working day at most; the token's own expiry ends it sooner. */
export const SESSION_MS = 12 * 3600 * 1000;

export interface Session {
  token: string;
  principal: Principal;
}

const secure = (c: Context) => new URL(c.req.url).protocol === 'https:' || c.req.header('x-forwarded-proto') === 'https';
const idHash = (id: string) => createHash('sha256').update(id).digest('hex');

/** The sealing key, read once per process (it never changes). */
const keys = new WeakMap<FarmRepo, Promise<Buffer>>();
function keyOf(repo: FarmRepo): Promise<Buffer> {
  let k = keys.get(repo);
  if (!k) {
    k = repo.consoleSecret().then((s) => createHash('sha256').update(`bootfarm console cookie\0${s}`).digest());
    k.catch(() => keys.delete(repo));
    keys.set(repo, k);
  }
  return k;
}

export async function seal(repo: FarmRepo, id: string, token: string): Promise<string> {
  const iv = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', await keyOf(repo), iv);
  c.setAAD(Buffer.from(id));
  const body = Buffer.concat([c.update(token, 'utf8'), c.final()]);
  return Buffer.concat([iv, body, c.getAuthTag()]).toString('base64url');
}

export async function unseal(repo: FarmRepo, id: string, sealed: string): Promise<string | null> {
  const raw = Buffer.from(sealed, 'base64url');
  if (raw.length < 12 + 16 + 1) return null;
  try {
    const d = createDecipheriv('aes-256-gcm', await keyOf(repo), raw.subarray(0, 12));
    d.setAAD(Buffer.from(id));
    d.setAuthTag(raw.subarray(raw.length - 16));
    return Buffer.concat([d.update(raw.subarray(12, raw.length - 16)), d.final()]).toString('utf8');
  } catch {
    return null;
  }
}

/** The cookie's session id and sealed token, when it has the shape this console writes. */
function parseCookie(value: string | undefined): { id: string; sealed: string } | null {
  const m = value ? /^([A-Za-z0-9_-]{32})\.([A-Za-z0-9_-]{40,1024})$/.exec(value) : null;
  return m ? { id: m[1]!, sealed: m[2]! } : null;
}

export async function readSession(c: Context, repo: FarmRepo, now: Date): Promise<Session | null> {
  const cookie = parseCookie(getCookie(c, SESSION_COOKIE));
  if (!cookie) return null;
  const expires = await repo.consoleSessionExpiry(idHash(cookie.id));
  if (!expires || Date.parse(expires) <= now.getTime()) return null;
  const token = await unseal(repo, cookie.id, cookie.sealed);
  if (!token) return null;
  const principal = await repo.authenticate(token, now);
  if (!principal || isApplianceRole(principal.role)) return null;
  return { token, principal };
}

/** Checks a token typed at sign-in; returns why it cannot sign in, or null. */
export async function checkSignIn(repo: FarmRepo, token: string, now: Date): Promise<{ principal: Principal } | { error: string }> {
  if (!/^\S+$/.test(token) || token.length > 512) return { error: 'Paste the whole token: bft_ followed by letters and digits, no spaces.' };
  const principal = await repo.authenticate(token, now);
  if (!principal) return { error: 'This token is unknown, revoked or expired.' };
  if (isApplianceRole(principal.role)) return { error: `A ${principal.role} token cannot sign in to the console: use an admin, operator or read-only token.` };
  return { principal };
}

export async function startSession(c: Context, repo: FarmRepo, token: string, now: Date): Promise<void> {
  const id = randomBytes(24).toString('base64url');
  await repo.putConsoleSession(idHash(id), new Date(now.getTime() + SESSION_MS).toISOString());
  // No Max-Age: the browser forgets it when it closes; the server's record decides how long it lasts.
  setCookie(c, SESSION_COOKIE, `${id}.${await seal(repo, id, token)}`, { path: '/console', httpOnly: true, sameSite: 'Strict', secure: secure(c) });
}

export async function endSession(c: Context, repo: FarmRepo): Promise<void> {
  const cookie = parseCookie(getCookie(c, SESSION_COOKIE));
  if (cookie) await repo.deleteConsoleSession(idHash(cookie.id));
  deleteCookie(c, SESSION_COOKIE, { path: '/console', secure: secure(c) });
}
