/**
 * The web console: server-rendered pages (Hono JSX) for the people who ran
 * the PVS console, served by the same app as the API (locally by `npm start`,
 * in AWS by the same Lambda). Reads and actions are the API calls the CLI
 * makes, with the signed-in token (./api.ts): the API's validation errors
 * are shown in the form that caused them, and a read-only token sees no
 * action buttons (the API would refuse them anyway).
 */
import { Hono, type Context } from 'hono';
import type { Child } from 'hono/jsx';
import { authorize, DEFAULT_OFFLINE_AFTER_MS, FarmError, historySeries, type Action, type ApplianceSample, type ObjectKind, type Principal } from '../../model/index.js';
import type { FarmRepo } from '../storage/repo.js';
import { ApiError, consoleApi, type InProcess } from './api.js';
import { ASSET_NAMES, CONSOLE_CSS, CONSOLE_JS } from './assets.js';
import { Page, type Section } from './layout.js';
import { Activity, type ApplianceActivity } from './pages/activity.js';
import { AuditPage, type AuditView } from './pages/audit.js';
import { FarmPage } from './pages/farm.js';
import { ErrorPage, LoginPage } from './pages/login.js';
import { SitePage, type SiteView } from './pages/site.js';
import { TargetsPage, type TargetsView } from './pages/targets.js';
import { Matrix, VdiskPage, type VdiskView } from './pages/vdisk.js';
import { deleteCookie } from 'hono/cookie';
import { checkSignIn, endSession, readSession, SESSION_COOKIE, startSession, type Session } from './session.js';

export interface ConsoleDeps {
  repo: FarmRepo;
  /** The app itself, called in-process for every API request. */
  api: InProcess;
  clock: () => Date;
  offlineAfterMs?: number;
}

type Env = { Variables: { session: Session } };
type Row = Record<string, any>;

/** Messages for `?done=` after a successful action (codes, so a link cannot put words in the console's mouth). */
const DONE: Record<string, string> = {
  'target-created': 'Target added.',
  'bulk-applied': 'The collection was updated.',
  'version-state': 'Version state changed.',
  'version-created': 'New maintenance version created.',
  'version-deleted': 'Version deleted.',
  merged: 'Merged into a new base version.',
  'lb-saved': 'Load balancing saved.',
  'site-saved': 'Site settings saved.',
};

/** Whether the principal may do this (model/auth.ts authorize, the API's own rule). */
export function can(p: Principal, action: Action, kind: ObjectKind, siteId: string | null, fields: readonly string[] = []): boolean {
  try {
    authorize(p, action, kind, siteId, fields);
    return true;
  } catch (e) {
    if (e instanceof FarmError) return false;
    throw e;
  }
}

const SECURITY_HEADERS = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  'x-content-type-options': 'nosniff',
  // Not no-referrer: with it browsers send `Origin: null` on the console's own form posts.
  'referrer-policy': 'same-origin',
  'cache-control': 'no-store',
};

export function consoleRoutes(deps: ConsoleDeps): Hono<Env> {
  const app = new Hono<Env>();
  const offlineAfterMs = deps.offlineAfterMs ?? DEFAULT_OFFLINE_AFTER_MS;
  const api = (c: Context<Env>) => consoleApi(deps.api, c.get('session').token);

  const siteAppliances = async (c: Context<Env>, siteId: string): Promise<Row[]> => (await api(c).all(`/v1/appliances?siteId=${encodeURIComponent(siteId)}`)).filter((x: Row) => x.siteId === siteId);
  /** Each appliance's last hour, as the chart draws it. */
  const activityOf = (c: Context<Env>, appliances: Row[]): Promise<ApplianceActivity[]> =>
    Promise.all(
      appliances.map(async (x) => {
        const { samples } = (await api(c).get(`/v1/appliances/${encodeURIComponent(x.id)}/history`)).body as { samples: ApplianceSample[] };
        return { name: x.name as string, points: historySeries(samples, deps.clock()) };
      }),
    );

  const render = (c: Context, status: number, title: string, section: Section, body: Child, principal: Principal | null) => {
    const done = c.req.query('done');
    return c.html(
      <Page title={title} section={section} principal={principal} flash={done && DONE[done] ? { text: DONE[done]! } : null}>
        {body}
      </Page>,
      status as 200,
    );
  };
  const failure = (e: unknown): { status: number; message: string; field: string | null } => {
    if (e instanceof ApiError) return { status: e.status, message: e.message, field: e.field ?? null };
    throw e;
  };

  app.use('*', async (c, next) => {
    await next();
    for (const [k, v] of Object.entries(SECURITY_HEADERS)) if (!c.res.headers.has(k)) c.res.headers.set(k, v);
  });

  // Cross-site form posts: the session cookie is SameSite=Strict (not sent), and browsers say where a request comes from.
  // Browsers without Sec-Fetch-Site still send Origin with a form post: then it must be this host (an opaque `null` origin is
  // refused too). Browsers that send neither rely on the SameSite=Strict cookie alone.
  app.use('*', async (c, next) => {
    if (c.req.method === 'POST') {
      const site = c.req.header('sec-fetch-site');
      const origin = c.req.header('origin');
      const host = c.req.header('x-forwarded-host') ?? c.req.header('host') ?? new URL(c.req.url).host;
      const crossSite = site ? site !== 'same-origin' && site !== 'none' : origin !== undefined && safeHost(origin) !== host;
      if (crossSite) return c.text('Cross-site request refused', 403);
    }
    return next();
  });

  app.get('/assets/:name', (c) => {
    const name = c.req.param('name');
    const body = name === ASSET_NAMES.css ? CONSOLE_CSS : name === ASSET_NAMES.js ? CONSOLE_JS : null;
    if (body === null) return c.text('not found', 404);
    return c.body(body, 200, { 'content-type': name.endsWith('.css') ? 'text/css; charset=utf-8' : 'text/javascript; charset=utf-8', 'cache-control': 'public, max-age=31536000, immutable' });
  });

  app.get('/login', async (c) => {
    if (await readSession(c, deps.repo, deps.clock())) return c.redirect('/console', 303);
    return render(c, 200, 'Sign in', 'login', <LoginPage />, null);
  });
  app.post('/login', async (c) => {
    const form = await c.req.parseBody();
    const token = typeof form.token === 'string' ? form.token.trim() : '';
    const r = await checkSignIn(deps.repo, token, deps.clock());
    if ('error' in r) return render(c, 401, 'Sign in', 'login', <LoginPage error={r.error} />, null);
    await startSession(c, deps.repo, token, deps.clock());
    return c.redirect('/console', 303);
  });
  app.post('/logout', async (c) => {
    await endSession(c, deps.repo);
    return c.redirect('/console/login', 303);
  });

  // Everything else needs a session.
  app.use('*', async (c, next) => {
    const session = await readSession(c, deps.repo, deps.clock());
    if (!session) {
      // Pages go to sign-in; the fragments pages refresh themselves with get a plain 401 (a sign-in page inside a table helps nobody).
      if (c.req.header('accept')?.includes('text/html') && c.req.method === 'GET' && !/\/(matrix|activity)$/.test(c.req.path)) return c.redirect('/console/login', 303);
      return c.text('Sign in first: /console/login', 401);
    }
    c.set('session', session);
    return next();
  });

  // ---------------------------------------------------------------- farm
  app.get('/', async (c) => {
    const a = api(c);
    const [farm, sites, appliances, stores, vdisks, collections, targets] = await Promise.all([
      a.get('/v1/farm').then((r) => r.body),
      a.all('/v1/sites'),
      a.all('/v1/appliances'),
      a.all('/v1/stores'),
      a.all('/v1/vdisks'),
      a.all('/v1/collections'),
      a.all('/v1/targets'),
    ]);
    const perCollection = new Map<string, number>();
    for (const t of targets) perCollection.set(t.collectionId, (perCollection.get(t.collectionId) ?? 0) + 1);
    const p = c.get('session').principal;
    return render(c, 200, 'Farm', 'farm', <FarmPage v={{ farm, sites, appliances, stores, vdisks, collections, targetsPerCollection: perCollection, now: deps.clock(), offlineAfterMs }} />, p);
  });

  // ---------------------------------------------------------------- sites
  const sitePage = async (c: Context<Env>, error: SiteView['error'], typed?: Record<string, string>, status = 200) => {
    const a = api(c);
    const id = c.req.param('id')!;
    const [site, appliances, vdisks] = await Promise.all([a.get(`/v1/sites/${encodeURIComponent(id)}`).then((r) => r.body), siteAppliances(c, id), a.all('/v1/vdisks')]);
    const p = c.get('session').principal;
    const v: SiteView = {
      site,
      appliances,
      vdiskNames: new Map(vdisks.map((d: Row) => [d.id, d.name])),
      activity: await activityOf(c, appliances),
      canEdit: can(p, 'update', 'site', id),
      now: deps.clock(),
      offlineAfterMs,
      error,
      typed,
    };
    return render(c, status, `Site ${site.name}`, 'farm', <SitePage v={v} />, p);
  };
  app.get('/sites/:id', (c) => sitePage(c, null));
  app.get('/sites/:id/activity', async (c) => c.html(<Activity appliances={await activityOf(c, await siteAppliances(c, c.req.param('id')))} now={deps.clock()} />));
  app.post('/sites/:id', async (c) => {
    const id = c.req.param('id');
    const f = await formOf(c);
    const servers: { address: string; port: number }[] = [];
    for (let i = 0; i < 4; i++) {
      const raw = (f[`server${i}`] ?? '').trim();
      if (raw) servers.push(parseServer(raw));
    }
    const num = (name: string) => (f[name]?.trim() === '' || f[name] === undefined ? undefined : Number(f[name]));
    const patch = {
      bootstrap: {
        servers,
        pollingTimeoutMs: num('pollingTimeoutMs'),
        generalTimeoutMs: num('generalTimeoutMs'),
        networkRecovery: { action: f.recovery, rebootDelaySeconds: num('rebootDelaySeconds') },
      },
      proxyDhcp: { enabled: f.proxyDhcp === 'on' },
      rebalance: { enabled: f.rebalance === 'on', triggerPercent: num('triggerPercent'), intervalSeconds: num('intervalSeconds') },
    };
    try {
      await api(c).request('PATCH', `/v1/sites/${encodeURIComponent(id)}`, patch, { 'content-type': 'application/merge-patch+json', 'if-match': `"${f.version ?? ''}"` });
      return c.redirect(`/console/sites/${id}?done=site-saved`, 303);
    } catch (e) {
      const err = failure(e);
      // Changed by someone else since the page was read: show what is stored now, not what was typed over it.
      if (err.status === 409 || err.status === 412) return sitePage(c, { message: `${err.message}: the page shows the site as it is now; make your change again`, field: null }, undefined, err.status);
      return sitePage(c, { message: err.message, field: err.field }, f, err.status);
    }
  });

  // ---------------------------------------------------------------- vDisks
  const vdiskPage = async (c: Context<Env>, errors: VdiskView['errors'] = {}, status = 200) => {
    const a = api(c);
    const id = encodeURIComponent(c.req.param('id')!);
    const [vdisk, versions, matrix, appliances] = await Promise.all([a.get(`/v1/vdisks/${id}`).then((r) => r.body), a.all(`/v1/vdisks/${id}/versions`), a.get(`/v1/vdisks/${id}/replication`).then((r) => r.body), a.all('/v1/appliances')]);
    const store = await a.get(`/v1/stores/${encodeURIComponent(vdisk.storeId)}`).then((r) => r.body, () => null);
    const p = c.get('session').principal;
    const v: VdiskView = { vdisk, store, versions, matrix, appliances, canEdit: can(p, 'update', 'version', null), errors };
    return render(c, status, `vDisk ${vdisk.name}`, 'farm', <VdiskPage v={v} />, p);
  };
  app.get('/vdisks/:id', (c) => vdiskPage(c));
  app.get('/vdisks/:id/matrix', async (c) => {
    const m = (await api(c).get(`/v1/vdisks/${encodeURIComponent(c.req.param('id'))}/replication`)).body;
    return c.html(<Matrix m={m} />);
  });
  /** Runs one API call for a vDisk form; on success back to the page with a message, on refusal the page with the error. */
  const vdiskAction = async (c: Context<Env>, done: string, section: 'versions' | 'loadBalancing', call: () => Promise<unknown>) => {
    try {
      await call();
      return c.redirect(`/console/vdisks/${c.req.param('id')}?done=${done}#${section === 'versions' ? 'versions' : 'lb'}`, 303);
    } catch (e) {
      const err = failure(e);
      return vdiskPage(c, { [section]: err.message, field: err.field }, err.status);
    }
  };
  app.post('/vdisks/:id/versions/:n/state', async (c) => {
    const f = await formOf(c);
    return vdiskAction(c, 'version-state', 'versions', () =>
      api(c).request('PATCH', `/v1/vdisks/${encodeURIComponent(c.req.param('id'))}/versions/${encodeURIComponent(c.req.param('n'))}`, { state: f.state }, { 'if-match': `"${f.version ?? ''}"` }),
    );
  });
  app.post('/vdisks/:id/versions', async (c) => {
    const f = await formOf(c);
    return vdiskAction(c, 'version-created', 'versions', () => api(c).request('POST', `/v1/vdisks/${encodeURIComponent(c.req.param('id'))}/versions`, { description: f.description ?? '' }));
  });
  app.post('/vdisks/:id/versions/:n/delete', (c) =>
    vdiskAction(c, 'version-deleted', 'versions', () => api(c).request('DELETE', `/v1/vdisks/${encodeURIComponent(c.req.param('id'))}/versions/${encodeURIComponent(c.req.param('n'))}`)),
  );
  app.post('/vdisks/:id/merge', async (c) => {
    const f = await formOf(c);
    // The new base keeps the state of the version it merges (a test version stays in test): the API's default is production.
    const state = f.state === 'test' || f.state === 'production' ? f.state : 'test';
    return vdiskAction(c, 'merged', 'versions', () => api(c).request('POST', `/v1/vdisks/${encodeURIComponent(c.req.param('id'))}/merge`, { version: Number(f.from), state }));
  });
  app.post('/vdisks/:id/load-balancing', async (c) => {
    const f = await formOf(c);
    return vdiskAction(c, 'lb-saved', 'loadBalancing', () =>
      api(c).request(
        'PATCH',
        `/v1/vdisks/${encodeURIComponent(c.req.param('id'))}`,
        { loadBalancing: { mode: f.mode, applianceId: f.applianceId || null }, subnetAffinity: f.subnetAffinity },
        { 'content-type': 'application/merge-patch+json', 'if-match': `"${f.version ?? ''}"` },
      ),
    );
  });

  // ---------------------------------------------------------------- targets
  const targetsPage = async (c: Context<Env>, add: TargetsView['add'] = { typed: {}, error: null }, bulk: TargetsView['bulk'] = { error: null }, status = 200) => {
    const a = api(c);
    const q = (c.req.query('q') ?? '').trim();
    const collectionId = c.req.query('collection') ?? add.typed.collectionId ?? '';
    const [all, collections, vdisks, appliances] = await Promise.all([
      a.all(collectionId ? `/v1/targets?collectionId=${encodeURIComponent(collectionId)}` : '/v1/targets'),
      a.all('/v1/collections'),
      a.all('/v1/vdisks'),
      a.all('/v1/appliances'),
    ]);
    const macQuery = q.toLowerCase().replace(/[^0-9a-f]/g, '');
    const matches = all.filter(
      (t: Row) =>
        (!collectionId || t.collectionId === collectionId) &&
        (!q || String(t.name).toLowerCase().includes(q.toLowerCase()) || (macQuery.length >= 2 && String(t.mac).replace(/[^0-9a-f]/g, '').includes(macQuery))),
    );
    const p = c.get('session').principal;
    const anySite = collections[0]?.siteId ?? null;
    const v: TargetsView = {
      q,
      collectionId,
      targets: matches.slice(0, SHOWN),
      matching: matches.length,
      collections,
      vdisks,
      appliances,
      canCreate: collections.some((col: Row) => can(p, 'create', 'target', col.siteId)) || (anySite !== null && can(p, 'create', 'target', anySite)),
      canBulk: collections.some((col: Row) => can(p, 'update', 'target', col.siteId, ['assignments', 'type'])),
      canOperate: collections.some((col: Row) => can(p, 'update', 'target', col.siteId, ['disabled', 'bootFrom'])),
      add,
      bulk,
    };
    return render(c, status, 'Targets', 'targets', <TargetsPage v={v} />, p);
  };
  app.get('/targets', (c) => targetsPage(c));
  app.post('/targets', async (c) => {
    const f = await formOf(c);
    const body = {
      mac: (f.mac ?? '').trim(),
      name: (f.name ?? '').trim(),
      collectionId: f.collectionId ?? '',
      assignments: f.vdiskId ? [{ vdiskId: f.vdiskId }] : [],
      type: f.type || 'production',
    };
    try {
      const created = (await api(c).request('POST', '/v1/targets', body)).body as Row;
      return c.redirect(`/console/targets?q=${encodeURIComponent(created.mac)}&done=target-created`, 303);
    } catch (e) {
      const err = failure(e);
      return targetsPage(c, { typed: f, error: { message: err.message, field: err.field } }, undefined, err.status);
    }
  });
  app.post('/targets/bulk', async (c) => {
    const f = await formOf(c);
    const patch: Row = {};
    if (f.vdiskId === '-') patch.assignments = [];
    else if (f.vdiskId) patch.assignments = [{ vdiskId: f.vdiskId }];
    if (f.type) patch.type = f.type;
    if (f.disabled) patch.disabled = f.disabled === 'true';
    if (f.bootFrom) patch.bootFrom = f.bootFrom;
    if (!f.collectionId || Object.keys(patch).length === 0) return targetsPage(c, undefined, { error: 'Choose a collection and at least one change.' }, 400);
    const a = api(c);
    let members: Row[] = [];
    let done = 0;
    try {
      members = await a.all(`/v1/targets?collectionId=${encodeURIComponent(f.collectionId)}`);
      // One PATCH per target, as `bootfarm target update` would send, each with the version it read.
      for (const t of members) {
        await a.request('PATCH', `/v1/targets/${encodeURIComponent(t.mac)}`, patch, { 'content-type': 'application/merge-patch+json', 'if-match': `"${t.version}"` });
        done++;
      }
      return c.redirect(`/console/targets?collection=${encodeURIComponent(f.collectionId)}&done=bulk-applied`, 303);
    } catch (e) {
      const err = failure(e);
      const where = members[done] ? `Changed ${done} of ${members.length} targets; stopped at ${members[done]!.name} (${members[done]!.mac}): ` : '';
      return targetsPage(c, undefined, { error: `${where}${err.message}` }, err.status);
    }
  });

  // ---------------------------------------------------------------- audit
  app.get('/audit', async (c) => {
    const filters = { actor: c.req.query('actor') ?? '', objectType: c.req.query('objectType') ?? '', objectId: c.req.query('objectId') ?? '', from: c.req.query('from') ?? '', to: c.req.query('to') ?? '' };
    const qs = new URLSearchParams({ limit: '100' });
    for (const [k, v] of Object.entries(filters)) if (v) qs.set(k, k === 'from' || k === 'to' ? utcOf(v, k === 'to') : v);
    const cursor = c.req.query('cursor');
    if (cursor) qs.set('cursor', cursor);
    const p = c.get('session').principal;
    let v: AuditView;
    let status = 200;
    try {
      const page = (await api(c).get(`/v1/audit?${qs}`)).body as { items: Row[]; nextCursor: string | null };
      v = { filters, records: page.items, nextCursor: page.nextCursor, error: null };
    } catch (e) {
      const err = failure(e);
      status = err.status;
      v = { filters, records: [], nextCursor: null, error: { message: err.message, field: err.field } };
    }
    return render(c, status, 'Audit log', 'audit', <AuditPage v={v} />, p);
  });

  app.onError((e, c) => {
    if (!(e instanceof ApiError)) throw e;
    // The token was revoked or expired while signed in.
    if (e.status === 401) {
      deleteCookie(c, SESSION_COOKIE, { path: '/console' });
      return c.redirect('/console/login', 303);
    }
    const session = c.get('session') as Session | undefined;
    const status = (e.status >= 400 && e.status < 500 ? e.status : 502) as 400;
    return render(c, status, 'Not possible', 'farm', <ErrorPage status={e.status} message={e.message} />, session?.principal ?? null);
  });
  return app;
}

async function formOf(c: Context): Promise<Record<string, string>> {
  const body = await c.req.parseBody();
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(body)) if (typeof v === 'string') out[k] = v;
  return out;
}

/** Shown per page: a farm of thousands of targets is searched, not scrolled. */
const SHOWN = 500;

/**
 * A bootstrap server as typed: `host`, `host:port`, an IPv4 address with a port, an IPv6 address alone, or `[IPv6]:port`.
 * The API validates what comes out.
 */
export function parseServer(raw: string): { address: string; port: number } {
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(raw);
  if (v6) return { address: v6[1]!, port: v6[2] ? Number(v6[2]) : 80 };
  if ((raw.match(/:/g) ?? []).length > 1) return { address: raw, port: 80 };
  const m = /^(.*?)(?::(\d+))?$/.exec(raw)!;
  return { address: m[1]!, port: m[2] ? Number(m[2]) : 80 };
}

/** A datetime-local value (UTC, as the form's labels say) as the API's ISO time; `end`: the whole minute it names. */
function utcOf(v: string, end: boolean): string {
  if (/^\d{4}-\d\d-\d\dT\d\d:\d\d$/.test(v)) return `${v}:${end ? '59.999' : '00'}Z`;
  return /[zZ]|[+-]\d\d:\d\d$/.test(v) ? v : `${v}Z`;
}

function safeHost(origin: string): string | null {
  try {
    return new URL(origin).host;
  } catch {
    return null;
  }
}
