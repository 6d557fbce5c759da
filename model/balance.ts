/**
 * Which appliance streams a target's vDisk (PVS: the login server sends the
 * target to the least busy server for its vDisk). A pure function of what
 * every appliance of a site knows, so each one answering a boot request makes
 * the same choice for the same target.
 */
import { createHash } from 'node:crypto';
import type { Vdisk } from './vdisk.js';

export interface Candidate {
  id: string;
  name: string;
  /** Where targets reach it: its streaming addresses, first preferred (else its management address). */
  addresses: readonly string[];
  /** PVS power rating: relative capacity (default 1.0). */
  powerRating: number;
  /** PVS "maximum devices booting". */
  maxTargets: number;
  /** Alive as far as the deciding appliance knows (peers: heard within the site's timeout). */
  up: boolean;
  /** Holds this vDisk version, verified. */
  holdsVersion: boolean;
  /** Streaming sessions for this vDisk. */
  sessionsForVdisk: number;
  /** Streaming sessions for any vDisk (max targets). */
  sessionsTotal: number;
}

export interface BalanceDecision<C extends Candidate = Candidate> {
  /** Streams the disk; null when no appliance can. */
  primary: C | null;
  /** The others that could, best first: the boot script's failover paths. */
  failover: C[];
  /** Why the primary was chosen, or why there is none: shown in verbose boot scripts and logs. */
  reason: string;
}

/** IPv4 only: a target and an address share a subnet when their first `prefixLength` bits match. */
export function sameSubnet(a: string, b: string, prefixLength: number): boolean {
  const n = (ip: string) => {
    const p = ip.split('.').map(Number);
    if (p.length !== 4 || p.some((x) => !Number.isInteger(x) || x < 0 || x > 255)) return null;
    return ((p[0]! << 24) | (p[1]! << 16) | (p[2]! << 8) | p[3]!) >>> 0;
  };
  const x = n(a);
  const y = n(b);
  if (x === null || y === null) return false;
  if (prefixLength <= 0) return true;
  const mask = prefixLength >= 32 ? 0xffffffff : (~0 << (32 - prefixLength)) >>> 0;
  return (x & mask) === (y & mask);
}

/**
 * PVS's algorithm: among appliances that are up, hold the version verified and
 * are under their maximum, the least busy for this vDisk weighted by power
 * rating (sessions / rating), ties broken by total load then by id so every
 * appliance decides alike. Subnet affinity (none, best effort, fixed) narrows
 * the field first; a vDisk with a fixed appliance uses that one or none.
 */
export function chooseAppliance<C extends Candidate>(
  candidates: readonly C[],
  o: {
    vdisk: Pick<Vdisk, 'loadBalancing' | 'subnetAffinity'>;
    targetIp: string | null;
    prefixLength?: number;
    /**
     * The target keeps writes on the appliance that streams it across boots (persistent write cache, private image):
     * a key for the target and vDisk. Among the appliances that can stream, the one of highest rendezvous weight for it
     * (the same on every appliance, and the same boot after boot while it is up) rather than the least busy.
     */
    home?: string;
  },
): BalanceDecision<C> {
  const prefix = o.prefixLength ?? 24;
  const why = (c: C) => (!c.up ? 'down' : !c.holdsVersion ? 'does not hold the version yet' : c.sessionsTotal >= c.maxTargets ? `at its maximum of ${c.maxTargets} targets` : null);
  const eligible = candidates.filter((c) => why(c) === null);
  const score = (c: C) => c.sessionsForVdisk / c.powerRating;
  const order = (x: C, y: C) => score(x) - score(y) || x.sessionsTotal / x.powerRating - y.sessionsTotal / y.powerRating || (x.id < y.id ? -1 : x.id > y.id ? 1 : 0);

  if (o.vdisk.loadBalancing.mode === 'fixed') {
    const fixed = candidates.find((c) => c.id === o.vdisk.loadBalancing.applianceId);
    if (!fixed) return { primary: null, failover: [], reason: `the vDisk is fixed to appliance ${o.vdisk.loadBalancing.applianceId}, which is not in this site` };
    const no = why(fixed);
    return no ? { primary: null, failover: [], reason: `the vDisk is fixed to ${fixed.name}, which ${no}` } : { primary: fixed, failover: [], reason: `the vDisk is fixed to ${fixed.name}` };
  }

  let field = eligible;
  let affinity = '';
  if (o.vdisk.subnetAffinity !== 'none' && o.targetIp) {
    const near = eligible.filter((c) => c.addresses.some((a) => sameSubnet(a, o.targetIp!, prefix)));
    if (o.vdisk.subnetAffinity === 'fixed') {
      field = near;
      affinity = ` in the target's subnet (/${prefix}, fixed affinity)`;
    } else if (near.length) {
      field = near;
      affinity = ` in the target's subnet (/${prefix}, best effort)`;
    }
  }
  if (!field.length) {
    const reasons = candidates.map((c) => `${c.name} ${why(c) ?? 'is not in the target subnet'}`);
    return { primary: null, failover: [], reason: candidates.length ? `no appliance can stream it: ${reasons.join('; ')}` : 'the site has no appliance' };
  }
  if (o.home !== undefined) {
    const weight = (c: C) => homeWeight(o.home!, c.id);
    const sorted = [...field].sort((x, y) => (weight(y) > weight(x) ? 1 : weight(y) < weight(x) ? -1 : x.id < y.id ? -1 : 1));
    const primary = sorted[0]!;
    return { primary, failover: sorted.slice(1), reason: `${primary.name} is this target's home for the vDisk${affinity}: its writes are kept there from boot to boot` };
  }
  const sorted = [...field].sort(order);
  const primary = sorted[0]!;
  return {
    primary,
    failover: sorted.slice(1),
    reason: `${primary.name} is the least busy for this vDisk${affinity} (${primary.sessionsForVdisk} sessions, power rating ${primary.powerRating})`,
  };
}

/** Rendezvous weight of an appliance for a target's home key: the same number on every appliance. */
export function homeWeight(key: string, applianceId: string): bigint {
  return createHash('sha256').update(`home|${key}|${applianceId}`).digest().readBigUInt64BE(0);
}
