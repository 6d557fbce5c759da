/**
 * Builds a site's signed config snapshot (model/snapshot.ts): the farm revision
 * is read first, so the snapshot holds that revision's state or a newer one,
 * and an appliance that polls with the ETag never misses a change.
 */
import {
  SNAPSHOT_FORMAT,
  SnapshotApplianceSchema,
  signSnapshot,
  type Collection,
  type SignedSnapshot,
  type Site,
  type Snapshot,
  type Store,
  type Target,
  type Vdisk,
  type Version,
} from '../model/index.js';
import type { Signer } from './signing.js';
import { listAll } from './storage/list-all.js';
import type { FarmRepo } from './storage/repo.js';
import { load } from './routes/resource.js';
import { versionsOf } from './vdisk-content.js';

export interface SnapshotDeps {
  repo: FarmRepo;
  signer: Signer;
  clock: () => Date;
}

export async function buildSiteSnapshot(deps: SnapshotDeps, siteId: string): Promise<{ snapshot: Snapshot; signed: SignedSnapshot }> {
  const { repo } = deps;
  const revision = await repo.revision();
  const [farm, site, appliances, collections, targets, peerSecret] = await Promise.all([
    repo.farm(),
    load('site', siteId, repo),
    listAll(repo, 'appliance', { parent: { kind: 'site', id: siteId } }),
    listAll(repo, 'collection', { parent: { kind: 'site', id: siteId } }),
    listAll(repo, 'target', { siteId }),
    repo.peerSecret(siteId),
  ]);
  const vdiskIds = [...new Set((targets as unknown as Target[]).flatMap((t) => t.assignments.map((a) => a.vdiskId)))].sort();
  const vdisks = (await Promise.all(vdiskIds.map((id) => repo.get('vdisk', id)))).filter((v) => v !== null) as unknown as Vdisk[];
  const storeIds = [...new Set(vdisks.map((v) => v.storeId))].sort();
  const [stores, versions] = await Promise.all([
    Promise.all(storeIds.map((id) => repo.get('store', id))).then((l) => l.filter((s) => s !== null) as unknown as Store[]),
    Promise.all(vdisks.map((v) => versionsOf(repo, v.id))).then((l) => l.flat().filter((v) => v.state !== 'merged')),
  ]);
  const snapshot: Snapshot = {
    format: SNAPSHOT_FORMAT,
    revision,
    generatedAt: deps.clock().toISOString(),
    siteId,
    farm: farm.settings,
    site: site as unknown as Site,
    // Only configuration: heartbeats and inventory change every few seconds and are not part of the farm revision.
    appliances: appliances.map(({ lastHeartbeat, inventory, status, ...a }) => SnapshotApplianceSchema.parse(a)),
    collections: collections as unknown as Collection[],
    targets: targets as unknown as Target[],
    vdisks,
    stores,
    versions: versions as Version[],
    peerSecret,
  };
  return { snapshot, signed: await signSnapshot(snapshot, deps.signer) };
}
