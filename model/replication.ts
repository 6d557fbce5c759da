/**
 * Replication status (PVS: Replication Status dialog), decided by content:
 * an appliance holds a version when it has verified every chunk against the
 * signed manifest and its copy has the version's content hash. PVS compares
 * file timestamps instead, so a copy with the right date and the wrong bytes
 * looks fine there and a re-copied identical file looks out of date.
 */
import type { Inventory, InventoryEntry } from './appliance.js';
import type { VersionState } from './vdisk.js';

/**
 * An appliance whose last heartbeat is older than this is shown `unreachable`.
 * Appliances heartbeat every few seconds (docs/architecture.md), so 90 s is many
 * missed beats in a row: a lost request, a Lambda cold start or an appliance
 * restart (well under a minute) does not flash "offline" in the matrix, while
 * one that is really gone shows within a minute and a half. This is an admin
 * view, not failure detection: failover between appliances is decided on the
 * LAN by peer heartbeats (issue 7), never by this value.
 */
export const DEFAULT_OFFLINE_AFTER_MS = 90_000;

export const REPLICA_STATES = ['up-to-date', 'missing', 'in-progress', 'corrupt', 'unreachable'] as const;
export type ReplicaState = (typeof REPLICA_STATES)[number];

export interface ReplicaCell {
  state: ReplicaState;
  /** With in-progress: share of the version's bytes the appliance holds. */
  percent?: number;
}

export interface MatrixVersion {
  number: number;
  state: VersionState;
  /** null only for content the farm cannot identify: no report can then prove a copy good. */
  contentHash?: string | null | undefined;
}

export interface MatrixAppliance {
  id: string;
  name: string;
  siteId: string;
  lastHeartbeat: string | null;
  /** Already validated (InventorySchema); null when the appliance has reported nothing usable. */
  inventory: Inventory | null;
}

export interface ReplicationRow {
  number: number;
  state: VersionState;
  contentHash: string | null;
  /** True until every appliance of every site that needs the vDisk holds this version up to date. */
  pending: boolean;
  /** Appliances (of sites that need the vDisk) that do not hold it up to date yet. */
  waitingFor: string[];
  /** One cell per appliance, keyed by appliance id. */
  cells: Record<string, ReplicaCell>;
}

export interface ReplicationMatrix {
  appliances: { id: string; name: string; siteId: string; lastHeartbeat: string | null; reachable: boolean; needed: boolean }[];
  versions: ReplicationRow[];
}

/** Whether an appliance counts as reachable: a heartbeat no older than offlineAfterMs (a heartbeat from the future, clock skew, counts). */
export function isReachable(lastHeartbeat: string | null, now: Date, offlineAfterMs = DEFAULT_OFFLINE_AFTER_MS): boolean {
  if (!lastHeartbeat) return false;
  const at = Date.parse(lastHeartbeat);
  if (Number.isNaN(at)) return false;
  return now.getTime() - at <= offlineAfterMs;
}

/** The state of one version on one appliance. */
export function replicaCell(version: MatrixVersion, entry: InventoryEntry | undefined, reachable: boolean): ReplicaCell {
  // What an unreachable appliance reported last may no longer be true: say what we know, that we cannot tell.
  if (!reachable) return { state: 'unreachable' };
  if (!entry) return { state: 'missing' };
  const sameContent = !!version.contentHash && entry.contentHash === version.contentHash;
  if (entry.state === 'corrupt') return { state: 'corrupt' };
  if (entry.state === 'verified') return { state: sameContent ? 'up-to-date' : 'corrupt' };
  // syncing: towards this content, or towards other content under the same number
  // (a version deleted and pushed again), which will never make it up to date here.
  if (!sameContent) return { state: 'missing' };
  return { state: 'in-progress', percent: clampPercent(entry.percent) };
}

/**
 * The matrix for one vDisk: every version that is not merged (merged versions
 * are history, never served) x every appliance given.
 *
 * `sitesNeeding`: sites with at least one target assigned the vDisk. A version
 * is pending until every appliance of those sites holds it up to date (an
 * unreachable appliance does not count as holding it: we cannot know). A site
 * that needs the vDisk but has no appliance adds nothing to wait for.
 */
export function replicationMatrix(
  versions: readonly (MatrixVersion & { vdiskId: string })[],
  appliances: readonly MatrixAppliance[],
  sitesNeeding: Iterable<string>,
  now: Date,
  offlineAfterMs: number = DEFAULT_OFFLINE_AFTER_MS,
): ReplicationMatrix {
  const needing = new Set(sitesNeeding);
  const cols = appliances.map((a) => {
    const entries = new Map<string, InventoryEntry>();
    for (const e of a.inventory?.versions ?? []) entries.set(`${e.vdiskId}.${e.number}`, e);
    return { a, entries, reachable: isReachable(a.lastHeartbeat, now, offlineAfterMs), needed: needing.has(a.siteId) };
  });
  const rows = versions
    .filter((v) => v.state !== 'merged')
    .slice()
    .sort((x, y) => x.number - y.number)
    .map((v): ReplicationRow => {
      const cells: Record<string, ReplicaCell> = {};
      const waitingFor: string[] = [];
      for (const col of cols) {
        const cell = replicaCell(v, col.entries.get(`${v.vdiskId}.${v.number}`), col.reachable);
        cells[col.a.id] = cell;
        if (col.needed && cell.state !== 'up-to-date') waitingFor.push(col.a.id);
      }
      return { number: v.number, state: v.state, contentHash: v.contentHash ?? null, pending: waitingFor.length > 0, waitingFor, cells };
    });
  return {
    appliances: cols.map(({ a, reachable, needed }) => ({ id: a.id, name: a.name, siteId: a.siteId, lastHeartbeat: a.lastHeartbeat, reachable, needed })),
    versions: rows,
  };
}

/** A percent to show: 0-100, whole numbers, and never 100 while still syncing. */
function clampPercent(p: number | undefined): number {
  if (p === undefined || Number.isNaN(p)) return 0;
  return Math.min(99, Math.max(0, Math.floor(p)));
}
