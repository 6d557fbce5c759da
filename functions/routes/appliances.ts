/**
 * The routes appliances call: enrolment, the signed site snapshot, chunk
 * download URLs, status reports and events. Appliance credentials reach only
 * these routes (model/auth.ts refuses them everywhere else), and each route
 * checks that the credential belongs to the site or appliance it names.
 */
import { OpenAPIHono, createRoute, z } from '@hono/zod-openapi';
import {
  ApplianceInputSchema,
  ApplianceSampleSchema,
  ApplianceSchema,
  ApplianceStatusReportSchema,
  ChunkHashSchema,
  EventBatchSchema,
  EventResultSchema,
  FarmError,
  HISTORY_MINUTES,
  IdSchema,
  PageQuerySchema,
  SignedSnapshotSchema,
  StoredEventSchema,
  autoAddName,
  autoAddRefusal,
  autoAddTarget,
  lastBootAfter,
  sampleMinute,
  authorize,
  pageOf,
  snapshotEtag,
  type ApplianceEvent,
  type ApplianceSample,
  type ApplianceStatus,
  type Collection,
  type EventResult,
  type Principal,
  type Site,
  type StoredEvent,
  type Target,
  type Version,
} from '../../model/index.js';
import type { Env } from '../auth.js';
import { checkApplianceAddresses, checkFloatingAddressFree } from '../resources.js';
import { buildSiteSnapshot } from '../site-snapshot.js';
import type { Signer } from '../signing.js';
import type { BlobStore } from '../storage/blobs.js';
import { newId } from '../storage/ids.js';
import { listAll } from '../storage/list-all.js';
import { RELATIONS } from '../storage/relations.js';
import type { FarmRepo, Obj } from '../storage/repo.js';
import { loadManifest } from '../vdisk-content.js';
import { errorResponses, load } from './resource.js';

export interface ApplianceRouteDeps {
  repo: FarmRepo;
  blobs: BlobStore;
  signer: Signer;
  clock: () => Date;
  /** Lifetime of chunk download URLs. */
  chunkUrlSeconds?: number;
}

/** How far an appliance's clock may run ahead of the control plane's before its boot records are refused. */
const CLOCK_SKEW_MS = 5 * 60_000;

export const EnrolInputSchema = ApplianceInputSchema.omit({ siteId: true }).meta({ id: 'EnrolInput' });

const EnrolledSchema = z
  .object({
    appliance: ApplianceSchema,
    token: z.string().meta({ description: 'The appliance credential. Shown once: only its hash is stored.' }),
    signingKeys: z.array(z.object({ keyId: z.string(), publicKeyPem: z.string() })).meta({ description: 'Keys that sign snapshots and manifests: the appliance trusts these' }),
  })
  .meta({ id: 'Enrolled' });

const ChunkUrlsInputSchema = z
  .object({
    vdiskId: IdSchema,
    number: z.number().int().min(0),
    hashes: z.array(ChunkHashSchema).min(1).max(500, 'at most 500 hashes per request'),
  })
  .strict()
  .meta({ id: 'ChunkUrlsInput' });

const SiteParams = z.object({ id: IdSchema });

/** An appliance credential of this site (or, with `applianceId`, of exactly this appliance). */
export function requireAppliance(p: Principal, siteId: string, applianceId?: string): void {
  if (p.role !== 'appliance') throw new FarmError('forbidden', `${p.role} token "${p.name}" may not use this route: it is for appliance credentials`);
  if (p.siteId !== siteId) throw new FarmError('forbidden', `appliance credential "${p.name}" belongs to site ${p.siteId}, not ${siteId}`);
  if (applianceId !== undefined && p.applianceId !== applianceId) throw new FarmError('forbidden', `appliance credential "${p.name}" belongs to appliance ${p.applianceId}, not ${applianceId}`);
}

/**
 * Whether some target of the site is assigned the vDisk (what an appliance of the site may download).
 * The site index answers first; it lags writes a moment (GSI), so a "no" is checked against the
 * strongly consistent listing: an appliance that just saw the assignment in its snapshot is not refused.
 */
export async function siteUsesVdisk(repo: FarmRepo, siteId: string, vdiskId: string): Promise<boolean> {
  const uses = (l: Obj[]) => (l as unknown as Target[]).some((t) => t.siteId === siteId && t.assignments.some((a) => a.vdiskId === vdiskId));
  return uses(await listAll(repo, 'target', { siteId })) || uses(await listAll(repo, 'target'));
}

export function applianceRoutes(deps: ApplianceRouteDeps): OpenAPIHono<Env> {
  const app = new OpenAPIHono<Env>();
  const { repo } = deps;
  const security = [{ bearer: [] }];
  const json = (schema: z.ZodType, description: string) => ({ description, content: { 'application/json': { schema } } });

  app.openapi(
    createRoute({
      method: 'post',
      path: '/appliances/enrol',
      tags: ['Appliances'],
      summary: 'Enrol an appliance with a one-time appliance-enrol token; returns its credential once',
      security,
      request: { body: { required: true, content: { 'application/json': { schema: EnrolInputSchema } } } },
      responses: { 201: json(EnrolledSchema, 'Enrolled'), ...errorResponses(400, 401, 403, 409) },
    }),
    async (c) => {
      const p = c.get('principal');
      if (p.role !== 'appliance-enrol' || !p.siteId) throw new FarmError('forbidden', `${p.role} token "${p.name}" may not enrol appliances: create an enrolment token with bootfarm token create --role appliance-enrol --site <site>`);
      const input = c.req.valid('json');
      const id = newId(RELATIONS.appliance.idPrefix);
      checkApplianceAddresses({ ...input, siteId: p.siteId });
      await checkFloatingAddressFree(repo, { ...input, siteId: p.siteId, id });
      // The appliance first: a taken name is refused before the one-time token is spent.
      const { object } = await repo.create('appliance', { ...input, siteId: p.siteId, id, lastHeartbeat: null, inventory: null, status: null }, p);
      try {
        await repo.revokeToken(p.tokenId, p);
      } catch (e) {
        // Spent by a concurrent enrolment: this one loses and leaves nothing behind.
        await repo.remove('appliance', id, null, () => undefined, p).catch(() => undefined);
        if (e instanceof FarmError && e.code === 'not_found') throw new FarmError('unauthenticated', 'enrolment token was already used');
        throw e;
      }
      const { secret } = await repo.createApplianceCredential({ id, siteId: p.siteId, name: input.name }, p);
      c.header('Cache-Control', 'no-store');
      c.header('Location', `/v1/appliances/${id}`);
      return c.json({ appliance: object, token: secret, signingKeys: [{ keyId: deps.signer.keyId, publicKeyPem: deps.signer.publicKeyPem }] } as never, 201);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/sites/{id}/snapshot',
      tags: ['Appliances'],
      summary: "The site's signed config snapshot; send If-None-Match with the last ETag to get 304 while nothing changed",
      security,
      request: { params: SiteParams },
      responses: { 200: json(SignedSnapshotSchema, 'Signed snapshot; ETag changes with the farm revision'), 304: { description: 'Unchanged' }, ...errorResponses(400, 401, 403, 404) },
    }),
    async (c) => {
      const p = c.get('principal');
      const { id } = c.req.valid('param');
      // It carries the site's peer secret: only the site's appliances and the admins of the site read it.
      if (p.role === 'appliance') requireAppliance(p, id);
      else if (p.role !== 'farm-admin' && !(p.role === 'site-admin' && p.siteId === id)) throw new FarmError('forbidden', `${p.role} token "${p.name}" may not read site snapshots: they hold the site's peer secret`);
      const ifNoneMatch = c.req.header('if-none-match');
      if (ifNoneMatch) {
        // One strongly consistent read decides "unchanged": that is all an idle appliance costs.
        const tag = snapshotEtag(id, await repo.revision());
        if (ifNoneMatch.split(',').some((t) => t.trim() === tag)) {
          c.header('ETag', tag);
          return c.body(null, 304) as never;
        }
      }
      const { snapshot, signed } = await buildSiteSnapshot(deps, id);
      c.header('ETag', snapshotEtag(id, snapshot.revision));
      c.header('Cache-Control', 'no-store');
      return c.json(signed, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/sites/{id}/chunk-urls',
      tags: ['Appliances'],
      summary: 'Presigned download URLs for chunks of a version the site uses',
      security,
      request: { params: SiteParams, body: { required: true, content: { 'application/json': { schema: ChunkUrlsInputSchema } } } },
      responses: { 200: json(z.object({ urls: z.record(z.string(), z.string()), expiresInSeconds: z.number() }), 'URLs by hash'), ...errorResponses(400, 401, 403, 404) },
    }),
    async (c) => {
      const p = c.get('principal');
      const { id } = c.req.valid('param');
      requireAppliance(p, id);
      const body = c.req.valid('json');
      if (!(await siteUsesVdisk(repo, id, body.vdiskId))) throw new FarmError('forbidden', `vDisk ${body.vdiskId} is not assigned to any target of site ${id}`);
      const version = (await load('version', `${body.vdiskId}.${body.number}`, repo)) as unknown as Version;
      const listed = new Set((await loadManifest(deps, version)).chunks);
      const foreign = body.hashes.find((h) => !listed.has(h));
      if (foreign) throw new FarmError('validation_failed', `hashes: ${foreign} is not a chunk of version ${body.number} of ${body.vdiskId}`, 'hashes');
      const expires = deps.chunkUrlSeconds ?? 900;
      const urls: Record<string, string> = {};
      for (const h of new Set(body.hashes)) urls[h] = await deps.blobs.presignGet(`chunks/${h.slice(0, 2)}/${h}`, expires);
      return c.json({ urls, expiresInSeconds: expires }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'put',
      path: '/appliances/{id}/status',
      tags: ['Appliances'],
      summary: 'Heartbeat: an appliance reports its status (and its inventory when it changed)',
      security,
      request: { params: SiteParams, body: { required: true, content: { 'application/json': { schema: ApplianceStatusReportSchema } } } },
      responses: { 204: { description: 'Recorded' }, ...errorResponses(400, 401, 403, 404) },
    }),
    async (c) => {
      const p = c.get('principal');
      const { id } = c.req.valid('param');
      requireAppliance(p, p.siteId ?? '', id);
      const report = c.req.valid('json');
      await repo.reportStatus(id, { lastHeartbeat: deps.clock().toISOString(), status: report.status, ...(report.inventory ? { inventory: report.inventory } : {}) });
      return c.body(null, 204);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/appliances/{id}/history',
      tags: ['Appliances'],
      summary: 'What an appliance reported over the last hour, one sample a minute (sessions, bytes served): the console chart',
      security,
      request: { params: SiteParams },
      responses: { 200: json(z.object({ samples: z.array(ApplianceSampleSchema) }), `Samples of the last ${HISTORY_MINUTES} minutes, oldest first`), ...errorResponses(401, 403, 404) },
    }),
    async (c) => {
      const { id } = c.req.valid('param');
      const appliance = await load('appliance', id, repo);
      authorize(c.get('principal'), 'read', 'appliance', appliance.siteId as string);
      const from = deps.clock().getTime() - HISTORY_MINUTES * 60_000;
      // Closed minutes are stored samples; the minute under way is the appliance's last report.
      const status = appliance.status as ApplianceStatus | null | undefined;
      const current: ApplianceSample | null =
        appliance.lastHeartbeat && status ? { at: sampleMinute(new Date(appliance.lastHeartbeat as string)).at, startedAt: status.startedAt, sessions: status.sessions, bytesServed: status.bytesServed ?? null } : null;
      const samples = (await repo.applianceHistory(id)).filter((s) => Date.parse(s.at) > from && (!current || s.at < current.at));
      if (current && Date.parse(current.at) > from) samples.push(current);
      return c.json({ samples: samples.sort((a, b) => a.at.localeCompare(b.at)) }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/appliances/{id}/events',
      tags: ['Appliances'],
      summary: 'Deliver events from the appliance outbox (at least once; the event id makes redelivery harmless)',
      security,
      request: { params: SiteParams, body: { required: true, content: { 'application/json': { schema: EventBatchSchema } } } },
      responses: { 200: json(z.object({ results: z.array(EventResultSchema) }), 'What was done with each event'), ...errorResponses(400, 401, 403) },
    }),
    async (c) => {
      const p = c.get('principal');
      const { id } = c.req.valid('param');
      requireAppliance(p, p.siteId ?? '', id);
      const siteId = p.siteId!;
      const results: EventResult[] = [];
      for (const e of c.req.valid('json').events) {
        const before = await repo.getEvent(siteId, e.id);
        if (before) {
          results.push({ ...before.result, id: e.id, outcome: 'duplicate' });
          continue;
        }
        const result = await applyEvent(deps, p, siteId, id, e);
        const record: StoredEvent = { id: e.id, siteId, applianceId: id, type: e.type, at: e.at, receivedAt: deps.clock().toISOString(), data: e.data as Record<string, unknown>, result };
        results.push((await repo.putEvent(record)) ? result : { ...result, outcome: 'duplicate' });
      }
      return c.json({ results }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/sites/{id}/events',
      tags: ['Appliances'],
      summary: "A site's appliance events (boots, offline auto-adds, notices), newest first",
      security,
      request: { params: SiteParams, query: PageQuerySchema },
      responses: { 200: json(pageOf(StoredEventSchema), 'One page'), ...errorResponses(400, 401, 403, 404) },
    }),
    async (c) => {
      const { id } = c.req.valid('param');
      authorize(c.get('principal'), 'read', 'site', id);
      await load('site', id, repo);
      const q = c.req.valid('query');
      return c.json(await repo.listEvents(id, q.limit, q.cursor), 200);
    },
  );

  return app;
}

/**
 * Applies one event. Auto-added targets are created as the appliance added
 * them; a MAC the farm already knows is left alone (redelivery, or another
 * appliance of the site added it too); a name taken meanwhile gets the
 * collection's next free auto-add name. Target names are unique in the whole
 * farm (they become computer names), so a name taken in another site is
 * renamed too: the other sites' names are read only when that happens.
 */
async function applyEvent(deps: ApplianceRouteDeps, p: Principal, siteId: string, applianceId: string, e: ApplianceEvent): Promise<EventResult> {
  if (e.type === 'boot' || e.type === 'boot-completed') {
    // A clock far ahead would pin the target's last boot: no later boot could replace it.
    const at = Date.parse(e.type === 'boot' ? e.at : e.data.bootStartedAt);
    if (at > deps.clock().getTime() + CLOCK_SKEW_MS)
      return { id: e.id, outcome: 'rejected', message: `its time ${new Date(at).toISOString()} is ahead of the control plane's clock: set the appliance's clock (NTP)` };
    // Only a target of this site: an appliance cannot write another site's device status.
    await deps.repo.updateLastBoot(e.data.mac, (cur, target) => (target.siteId === siteId ? lastBootAfter(cur, applianceId, e) : null));
    return { id: e.id, outcome: 'recorded' };
  }
  if (e.type !== 'target-auto-added') return { id: e.id, outcome: 'recorded' };
  const { repo } = deps;
  const sent = e.data.target;
  const existing = await repo.get('target', sent.mac);
  if (existing) return { id: e.id, outcome: 'exists', targetId: existing.id as string };
  // The farm's rules decide, not the appliance: auto-add must be on for this site, the target joins the
  // site's default collection, and everything but its MAC and name comes from the collection's template.
  // (An appliance could otherwise assign itself another site's vDisk and read it.)
  const [farm, site] = await Promise.all([repo.farm(), repo.get('site', siteId)]);
  const refusal = site ? autoAddRefusal(farm.settings, site as unknown as Site) : `site ${siteId} does not exist`;
  if (refusal) return { id: e.id, outcome: 'rejected', message: refusal };
  if (sent.collectionId !== (site as unknown as Site).defaultCollectionId)
    return { id: e.id, outcome: 'rejected', message: `collection ${sent.collectionId} is not the default collection of site ${siteId}` };
  const col = (await repo.get('collection', sent.collectionId)) as unknown as Collection | null;
  if (!col || col.siteId !== siteId) return { id: e.id, outcome: 'rejected', message: `collection ${sent.collectionId} is not a collection of site ${siteId}` };
  const template = col.templateTargetMac ? ((await repo.get('target', col.templateTargetMac)) as unknown as Target | null) : null;
  const t = autoAddTarget(sent.mac, sent.name, col, template);
  const taken = new Set(((await listAll(repo, 'target', { siteId })) as unknown as Target[]).map((x) => x.name.toLowerCase()));
  let n = col.autoAdd.startNumber;
  const nextFree = () => {
    let name: string;
    do name = autoAddName(col.autoAdd, n++);
    while (taken.has(name.toLowerCase()));
    return name;
  };
  try {
    let name = taken.has(t.name.toLowerCase()) ? nextFree() : t.name;
    for (let attempt = 0; ; attempt++) {
      try {
        const { object } = await repo.create('target', { ...t, name, id: t.mac, siteId, lastBoot: null, writeCacheResetAt: null }, p);
        return name === t.name ? { id: e.id, outcome: 'created', targetId: object.id } : { id: e.id, outcome: 'renamed', targetId: object.id, message: `name ${t.name} was taken: added as ${name}` };
      } catch (err) {
        if (!(err instanceof FarmError && err.code === 'already_exists')) throw err;
        const now = await repo.get('target', t.mac);
        if (now) return { id: e.id, outcome: 'exists', targetId: now.id as string };
        if (err.field !== 'name' || attempt >= 3) throw err;
        // Taken in another site (or by a request racing this one): learn every name of the farm once, then take the next free one.
        if (attempt === 0) for (const x of (await listAll(repo, 'target')) as unknown as Target[]) taken.add(x.name.toLowerCase());
        taken.add(name.toLowerCase());
        name = nextFree();
      }
    }
  } catch (err) {
    // Refused by the farm's rules (a vDisk that no longer exists, auto-add numbers used up): recorded, not retried forever.
    if (err instanceof FarmError) return { id: e.id, outcome: 'rejected', message: err.message };
    throw err;
  }
}

