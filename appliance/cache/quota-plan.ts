/**
 * Which versions of one store to fetch, keep and evict under its quota. Pure:
 * the cache gathers the facts, this decides.
 *
 * Bytes counted are the unique chunk bytes of the store's versions (a chunk
 * shared by two versions counts once; zero chunks count nothing). Needed
 * versions are never evicted; a needed version is fetched only if it fits
 * next to the other needed ones and the versions in use, assuming every
 * evictable version goes; if it does not, it is refused (reported, not
 * fetched) rather than evicting things for a download that cannot finish.
 * Versions no target needs and no reader holds are then evicted least
 * recently used first, only as far as needed to get under the quota.
 */

export interface PlannedVersion {
  key: string;
  needed: boolean;
  inUse: boolean;
  lastUsedAt: number;
  /** Its chunks once complete: hash -> bytes, null chunks left out. */
  chunks: ReadonlyMap<string, number>;
}

export interface RefusedForQuota {
  key: string;
  /** What the version alone takes. */
  needBytes: number;
  quotaBytes: number;
}

export interface StorePlan {
  /** Needed versions to fetch (or keep: already complete ones are listed too). */
  fetch: string[];
  evict: string[];
  refused: RefusedForQuota[];
}

const sizeOf = (m: ReadonlyMap<string, number>) => [...m.values()].reduce((a, b) => a + b, 0);

function uniqueBytes(sets: Iterable<ReadonlyMap<string, number>>): number {
  const seen = new Map<string, number>();
  for (const s of sets) for (const [h, n] of s) seen.set(h, n);
  return sizeOf(seen);
}

function presentPart(v: PlannedVersion, present: (hash: string) => boolean): Map<string, number> {
  return new Map([...v.chunks].filter(([h]) => present(h)));
}

export function planStore(versions: readonly PlannedVersion[], quotaBytes: number | null, present: (hash: string) => boolean): StorePlan {
  const needed = versions.filter((v) => v.needed);
  if (quotaBytes === null) return { fetch: needed.map((v) => v.key), evict: [], refused: [] };

  // What stays whatever happens: the bytes needed versions already hold, and versions in use.
  const base = versions.filter((v) => v.needed || v.inUse).map((v) => presentPart(v, present));
  const heldBytes = (v: PlannedVersion) => sizeOf(presentPart(v, present));
  // Complete versions first (they serve now), then the furthest along; otherwise the given order.
  const order = needed
    .map((v, i) => ({ v, i, held: heldBytes(v), total: sizeOf(v.chunks) }))
    .sort((a, b) => Number(b.held === b.total) - Number(a.held === a.total) || b.held - a.held || a.i - b.i);

  const accepted: ReadonlyMap<string, number>[] = [];
  const plan: StorePlan = { fetch: [], evict: [], refused: [] };
  for (const { v, held, total } of order) {
    if (held === total || uniqueBytes([...base, ...accepted, v.chunks]) <= quotaBytes) {
      accepted.push(v.chunks);
      plan.fetch.push(v.key);
    } else plan.refused.push({ key: v.key, needBytes: total, quotaBytes });
  }

  const kept = versions
    .filter((v) => !v.needed && !v.inUse)
    .sort((a, b) => a.lastUsedAt - b.lastUsedAt || (a.key < b.key ? -1 : 1))
    .map((v) => ({ key: v.key, part: presentPart(v, present) }));
  while (kept.length && uniqueBytes([...base, ...accepted, ...kept.map((k) => k.part)]) > quotaBytes) plan.evict.push(kept.shift()!.key);
  return plan;
}
