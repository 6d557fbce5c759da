/**
 * `GET /v1/vdisks/{id}/replication`: which appliance holds which version of a
 * vDisk, checked by content (PVS: Replication Status dialog, which compares
 * timestamps). The decisions are model/replication.ts; this file only gathers
 * the versions, appliances and sites that need the vDisk.
 */
import { OpenAPIHono, createRoute, z } from '@hono/zod-openapi';
import {
  DEFAULT_OFFLINE_AFTER_MS,
  IdSchema,
  InventorySchema,
  REPLICA_STATES,
  VERSION_STATES,
  authorize,
  replicationMatrix,
  type MatrixAppliance,
  type Principal,
} from '../../model/index.js';
import type { Env } from '../auth.js';
import type { FarmRepo } from '../storage/repo.js';
import { listAll } from '../storage/list-all.js';
import { targetsUsing, versionsOf } from '../vdisk-content.js';
import { errorResponses, load } from './resource.js';

export interface ReplicationDeps {
  repo: FarmRepo;
  clock: () => Date;
  /** See DEFAULT_OFFLINE_AFTER_MS. */
  offlineAfterMs?: number;
}

const CellSchema = z
  .object({
    state: z.enum(REPLICA_STATES),
    percent: z.number().int().min(0).max(99).optional().meta({ description: 'With in-progress: share of the bytes the appliance holds' }),
  })
  .meta({ id: 'ReplicaCell' });

export const ReplicationSchema = z
  .object({
    vdiskId: z.string(),
    siteId: z.string().nullable().meta({ description: 'The site the matrix covers (site-scoped tokens); null = the whole farm' }),
    generatedAt: z.string(),
    offlineAfterSeconds: z.number().meta({ description: 'Appliances whose last heartbeat is older are unreachable' }),
    sitesNeeding: z.array(z.string()).meta({ description: 'Sites with at least one target assigned this vDisk' }),
    appliances: z.array(
      z.object({
        id: z.string(),
        name: z.string(),
        siteId: z.string(),
        lastHeartbeat: z.string().nullable(),
        reachable: z.boolean(),
        needed: z.boolean().meta({ description: 'Its site needs the vDisk: it counts for pending' }),
      }),
    ),
    versions: z.array(
      z.object({
        number: z.number().int(),
        state: z.enum(VERSION_STATES),
        contentHash: z.string().nullable(),
        pending: z.boolean().meta({ description: 'Some appliance of a site that needs the vDisk does not hold this version up to date' }),
        waitingFor: z.array(z.string()).meta({ description: 'Those appliances' }),
        cells: z.record(z.string(), CellSchema).meta({ description: 'Per appliance id' }),
      }),
    ),
  })
  .meta({ id: 'Replication' });

export function replicationRoutes(deps: ReplicationDeps): OpenAPIHono<Env> {
  const app = new OpenAPIHono<Env>();
  const offlineAfterMs = deps.offlineAfterMs ?? DEFAULT_OFFLINE_AFTER_MS;

  app.openapi(
    createRoute({
      method: 'get',
      path: '/vdisks/{id}/replication',
      tags: ['vDisk content'],
      summary: 'Replication status: each version (merged ones excluded) x each appliance, by content hash',
      description:
        'Cells: up-to-date, missing, in-progress (percent), corrupt, unreachable. A version is pending until every appliance of every site that needs the vDisk holds it up to date. Site-scoped tokens see their site only, and pending then means pending at that site.',
      security: [{ bearer: [] }],
      request: { params: z.object({ id: IdSchema }) },
      responses: { 200: { description: 'The matrix', content: { 'application/json': { schema: ReplicationSchema } } }, ...errorResponses(400, 401, 403, 404) },
    }),
    async (c) => {
      const p = c.get('principal');
      authorize(p, 'read', 'vdisk', null);
      const { id } = c.req.valid('param');
      await load('vdisk', id, deps.repo);
      if (p.siteId) authorize(p, 'read', 'appliance', p.siteId);
      const [versions, appliances, sitesNeeding] = await Promise.all([versionsOf(deps.repo, id), appliancesFor(deps.repo, p), sitesNeedingVdisk(deps.repo, id, p)]);
      const now = deps.clock();
      const m = replicationMatrix(versions, appliances, sitesNeeding, now, offlineAfterMs);
      return c.json(
        { vdiskId: id, siteId: p.siteId, generatedAt: now.toISOString(), offlineAfterSeconds: offlineAfterMs / 1000, sitesNeeding: [...sitesNeeding].sort(), ...m },
        200,
      );
    },
  );
  return app;
}

/** Every appliance the caller may see, in name order; an inventory that does not parse counts as none. */
async function appliancesFor(repo: FarmRepo, p: Principal): Promise<MatrixAppliance[]> {
  const items = await listAll(repo, 'appliance', p.siteId ? { parent: { kind: 'site', id: p.siteId } } : {});
  return items
    .map((a) => {
      const inv = InventorySchema.safeParse(a.inventory);
      return { id: a.id, name: a.name as string, siteId: a.siteId as string, lastHeartbeat: (a.lastHeartbeat as string | null) ?? null, inventory: inv.success ? inv.data : null };
    })
    .sort((x, y) => x.name.localeCompare(y.name));
}

/**
 * Sites with at least one target assigned the vDisk. Targets hold their
 * assignments, so this reads every target (of the caller's site, for a scoped
 * token): one query page per 1000 targets, fine at farm-configuration sizes
 * (PVS farms are thousands of targets, and this runs when an admin looks).
 * The vDisk's target reference counter skips the scan when nothing is assigned;
 * should farms grow far beyond that, a per-site counter kept with the
 * assignment (like the vDisk's) makes it one read per site.
 */
async function sitesNeedingVdisk(repo: FarmRepo, vdiskId: string, p: Principal): Promise<Set<string>> {
  if ((await repo.refCount('vdisk', vdiskId, 'target')) === 0) return new Set();
  return new Set((await targetsUsing(repo, vdiskId)).map((t) => t.siteId).filter((s) => !p.siteId || s === p.siteId));
}
