/**
 * Site high availability, the pure part (the appliance side is appliance/ha/):
 * who owns each floating address, what one appliance adds or drops to get
 * there, and which targets a rebalance moves. Every appliance of a site runs
 * the same functions on what it hears from its peers, so they agree without
 * asking anyone (the cloud may be gone).
 *
 * Address rules, in words:
 * - An appliance that is up holds its own floating address.
 * - An appliance that is silent for the site's peer timeout has its address
 *   adopted by one survivor: the one that already holds it, else the one with
 *   the highest rendezvous weight for that address (so the addresses of
 *   several dead appliances spread over the survivors).
 * - Nobody adds an address a live peer says it holds: the holder lets go
 *   first (when its owner comes back, the adopter releases it, and the owner
 *   takes it back after the adopter's next heartbeat says so). And whoever
 *   holds an address a live peer also claims lets go of it (two holders,
 *   whatever the cause, end at once; the rightful one takes it back).
 * - An appliance whose link is down holds nothing; one that starts or whose
 *   link comes back claims nothing until it is settled: every live peer's
 *   heartbeat shows it heard this appliance's current incarnation (so what
 *   they claim was decided knowing it is up), and it has heard every
 *   appliance of the site or listened for a whole timeout.
 * - In a site of three or more appliances, adopting needs a majority of them
 *   in sight (an appliance cut off alone never takes its peers' addresses).
 *   A site of two cannot tell a dead peer from a cut cable between two live
 *   links; the link rule covers a cut on either appliance's own link.
 */
import { createHash } from 'node:crypto';

export interface HaMember {
  id: string;
  name: string;
  floatingAddress: string | null;
}

/** Rendezvous weight of a candidate for an address: the same number on every appliance. */
export function adoptionWeight(address: string, candidateId: string): bigint {
  return createHash('sha256').update(`${address}|${candidateId}`).digest().readBigUInt64BE(0);
}

/** The highest-weight candidate for an address (ties, which cannot happen for distinct ids, go to the smaller id). */
function pick(address: string, ids: readonly string[]): string | null {
  let best: string | null = null;
  let bestW = -1n;
  for (const id of ids) {
    const w = adoptionWeight(address, id);
    if (w > bestW || (w === bestW && best !== null && id < best)) {
      best = id;
      bestW = w;
    }
  }
  return best;
}

/** True when this many live appliances may adopt addresses: always in a site of one or two, else a strict majority. */
export function hasQuorum(members: number, live: number): boolean {
  return members <= 2 || live * 2 > members;
}

/**
 * Who should hold `member`'s floating address: the member while it is live;
 * else the live appliance already holding it (by `holders`, the claims known),
 * else the live appliance of highest weight; null when nobody is live.
 */
export function addressOwner(member: HaMember, live: ReadonlySet<string>, holders: readonly string[] = []): string | null {
  if (!member.floatingAddress) return null;
  if (live.has(member.id)) return member.id;
  const adopters = [...live].filter((id) => id !== member.id).sort();
  const holding = adopters.filter((id) => holders.includes(id));
  return pick(member.floatingAddress, holding.length ? holding : adopters);
}

/** Every floating address of the site and who should hold it, for one view of who is live. */
export function addressOwners(members: readonly HaMember[], live: ReadonlySet<string>, claims: ReadonlyMap<string, readonly string[]> = new Map()): Map<string, string | null> {
  const out = new Map<string, string | null>();
  for (const m of members) {
    if (!m.floatingAddress) continue;
    const holders = [...claims].filter(([id, held]) => live.has(id) && held.includes(m.floatingAddress!)).map(([id]) => id);
    out.set(m.floatingAddress, addressOwner(m, live, holders));
  }
  return out;
}

export interface AddressView {
  self: string;
  members: readonly HaMember[];
  /** Appliances heard within the peer timeout, this one included. */
  live: ReadonlySet<string>;
  /** What each live peer said it holds in its last heartbeat. */
  claims: ReadonlyMap<string, readonly string[]>;
  /** What this appliance holds now. */
  held: ReadonlySet<string>;
  /** Its LAN link has carrier. */
  linkUp: boolean;
  /** It has listened for a whole peer timeout since it started or since its link came back. */
  settled: boolean;
}

export interface AddressPlan {
  add: string[];
  remove: string[];
  /** Addresses this appliance should hold but may not add yet, and why (logged, shown in health). */
  waiting: { address: string; reason: string }[];
}

/** What one appliance adds and drops now, from what it knows. */
export function planAddresses(v: AddressView): AddressPlan {
  const plan: AddressPlan = { add: [], remove: [], waiting: [] };
  if (!v.linkUp) {
    plan.remove = [...v.held].sort();
    return plan;
  }
  const claims = new Map(v.claims);
  claims.set(v.self, [...v.held]);
  const owners = addressOwners(v.members, v.live, claims);
  const names = new Map(v.members.map((m) => [m.id, m.name]));
  const quorum = hasQuorum(v.members.length, [...v.live].filter((id) => names.has(id)).length);
  const claimedByPeer = (address: string) => [...v.claims].some(([id, held]) => id !== v.self && v.live.has(id) && held.includes(address));
  for (const held of [...v.held].sort()) if (owners.get(held) !== v.self || claimedByPeer(held)) plan.remove.push(held);
  for (const m of v.members) {
    const address = m.floatingAddress;
    if (!address || owners.get(address) !== v.self || v.held.has(address)) continue;
    const holder = [...v.claims].find(([id, held]) => id !== v.self && v.live.has(id) && held.includes(address))?.[0];
    if (holder) plan.waiting.push({ address, reason: `${names.get(holder) ?? holder} still holds it: it lets go when it hears this appliance` });
    else if (!v.settled) plan.waiting.push({ address, reason: 'listening to the site for one peer timeout first' });
    else if (m.id !== v.self && !quorum) plan.waiting.push({ address, reason: `only ${[...v.live].length} of ${v.members.length} appliances in sight: adopting needs a majority` });
    else plan.add.push(address);
  }
  return plan;
}

// ------------------------------------------------------------------ rebalance

export interface RebalanceSettings {
  enabled: boolean;
  triggerPercent: number;
  maxMovesPerCheck: number;
}

export interface RebalanceTarget {
  /** Session key (MAC for NBD). */
  key: string;
  /** Still booting (pre-OS, HTTP sanboot): never moved, and counts against a rebalance. */
  booting: boolean;
  /** May be moved: a read-only NBD export (writable ones live with their write cache). */
  movable: boolean;
}

export interface RebalanceAppliance {
  id: string;
  powerRating: number;
  maxTargets: number;
  /** Targets it serves, per vDisk. */
  targets: ReadonlyMap<string, readonly RebalanceTarget[]>;
  /** Targets in all (max targets). */
  total: number;
}

export interface RebalanceMove {
  key: string;
  vdiskId: string;
  to: string;
}

export interface RebalanceInput {
  self: string;
  settings: RebalanceSettings;
  /** vDisks balanced by the algorithm (fixed ones never move). */
  vdiskIds: readonly string[];
  /** Live appliances of the site, this one included. */
  appliances: readonly RebalanceAppliance[];
  /** Whether an appliance holds what a target of this vDisk reads (the version verified). */
  canServe(applianceId: string, vdiskId: string): boolean;
}

/** PVS's exceptions: no rebalance from an appliance with fewer than this many targets of the vDisk… */
export const REBALANCE_MIN_TARGETS = 5;
/** …or with more than this share of them still booting. */
export const REBALANCE_MAX_BOOTING = 0.2;

/**
 * The targets this appliance gives up now. Per vDisk balanced by the
 * algorithm: when its load (targets / power rating) is more than
 * `triggerPercent` above its fair share, it moves movable targets, in key
 * order, to the eligible appliances furthest below theirs, until it is at its
 * share (rounded up) or has moved `maxMovesPerCheck`. Every appliance decides
 * only for its own targets, from the same numbers.
 */
export function planRebalance(i: RebalanceInput): { moves: RebalanceMove[]; skipped: { vdiskId: string; reason: string }[] } {
  const moves: RebalanceMove[] = [];
  const skipped: { vdiskId: string; reason: string }[] = [];
  if (!i.settings.enabled) return { moves, skipped };
  const self = i.appliances.find((a) => a.id === i.self);
  if (!self) return { moves, skipped };
  const totals = new Map(i.appliances.map((a) => [a.id, a.total]));
  for (const vdiskId of [...i.vdiskIds].sort()) {
    if (moves.length >= i.settings.maxMovesPerCheck) break;
    const mine = self.targets.get(vdiskId) ?? [];
    if (!mine.length) continue;
    if (mine.length < REBALANCE_MIN_TARGETS) {
      skipped.push({ vdiskId, reason: `fewer than ${REBALANCE_MIN_TARGETS} targets here` });
      continue;
    }
    const booting = mine.filter((t) => t.booting).length;
    if (booting > mine.length * REBALANCE_MAX_BOOTING) {
      skipped.push({ vdiskId, reason: `${booting} of ${mine.length} targets still booting (more than ${REBALANCE_MAX_BOOTING * 100} %)` });
      continue;
    }
    const eligible = i.appliances.filter((a) => a.id === i.self || i.canServe(a.id, vdiskId));
    if (eligible.length < 2) continue;
    const count = new Map(eligible.map((a) => [a.id, a.targets.get(vdiskId)?.length ?? 0]));
    const sum = [...count.values()].reduce((x, y) => x + y, 0);
    const ratings = eligible.reduce((x, a) => x + a.powerRating, 0);
    const share = (a: RebalanceAppliance) => (sum * a.powerRating) / ratings;
    const trigger = share(self) * (1 + i.settings.triggerPercent / 100);
    if (mine.length <= trigger) continue;
    const keep = Math.ceil(share(self));
    const movable = mine.filter((t) => t.movable && !t.booting).sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    for (const t of movable) {
      if (count.get(self.id)! <= keep || moves.length >= i.settings.maxMovesPerCheck) break;
      // The appliance furthest below its share that still has room; ties by id.
      const to = eligible
        .filter((a) => a.id !== self.id && totals.get(a.id)! < a.maxTargets)
        .map((a) => ({ a, gap: share(a) - count.get(a.id)! }))
        .filter((x) => x.gap >= 1)
        .sort((x, y) => y.gap - x.gap || (x.a.id < y.a.id ? -1 : 1))[0]?.a;
      if (!to) break;
      moves.push({ key: t.key, vdiskId, to: to.id });
      count.set(self.id, count.get(self.id)! - 1);
      count.set(to.id, count.get(to.id)! + 1);
      totals.set(to.id, totals.get(to.id)! + 1);
    }
  }
  return { moves, skipped };
}
