/**
 * Builds a site's signed config snapshot (model/snapshot.ts): the farm revision
 * is read first, so the snapshot holds that revision's state or a newer one,
 * and an appliance that polls with the ETag never misses a change.
 *
 * That promise needs strongly consistent reads: an appliance keeps a snapshot
 * until the revision moves again (304), so one built from a lagging read would
 * hide a change until some later, unrelated change. The site-scoped listings
 * are GSI queries, eventually consistent (docs/data-model.md), so each kind is
 * read whole from its own partition (strong) and filtered here: farm
 * configuration sizes, read only when the revision moved.
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
import type { FarmRepo, Obj } from './storage/repo.js';
import { load } from './routes/resource.js';

export interface SnapshotDeps {
  repo: FarmRepo;
  signer: Signer;
  clock: () => Date;
}

export async function buildSiteSnapshot(deps: SnapshotDeps, siteId: string): Promise<{ snapshot: Snapshot; signed: SignedSnapshot }> {
  const { repo } = deps;
  const revision = await repo.revision();
  const site = await load('site', siteId, repo);
  const ofSite = (l: Obj[]) => l.filter((o) => o.siteId === siteId).sort(byName);
  const [farm, appliances, collections, targets, allVersions, peerSecret] = await Promise.all([
    repo.farm(),
    listAll(repo, 'appliance').then(ofSite),
    listAll(repo, 'collection').then(ofSite),
    listAll(repo, 'target').then(ofSite),
    listAll(repo, 'version') as unknown as Promise<Version[]>,
    repo.peerSecret(siteId),
  ]);
  const vdiskIds = [...new Set((targets as unknown as Target[]).flatMap((t) => t.assignments.map((a) => a.vdiskId)))].sort();
  const vdisks = (await Promise.all(vdiskIds.map((id) => repo.get('vdisk', id)))).filter((v) => v !== null) as unknown as Vdisk[];
  const storeIds = [...new Set(vdisks.map((v) => v.storeId))].sort();
  const stores = (await Promise.all(storeIds.map((id) => repo.get('store', id)))).filter((s) => s !== null) as unknown as Store[];
  const used = new Set(vdisks.map((v) => v.id));
  const versions = allVersions.filter((v) => used.has(v.vdiskId) && v.state !== 'merged').sort((a, b) => (a.vdiskId < b.vdiskId ? -1 : a.vdiskId > b.vdiskId ? 1 : a.number - b.number));
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
    // A target's last boot is device status, not configuration (and changes at every boot).
    targets: targets.map((t) => ({ ...t, lastBoot: null })) as unknown as Target[],
    vdisks,
    stores,
    versions,
    peerSecret,
  };
  return { snapshot, signed: await signSnapshot(snapshot, deps.signer) };
}

/** The order the admin listings use: by name, case-insensitive (then id, for a stable order). */
const byName = (a: Obj, b: Obj) => {
  const x = String(a.name).toLowerCase();
  const y = String(b.name).toLowerCase();
  return x < y ? -1 : x > y ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
};
