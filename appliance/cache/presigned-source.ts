/**
 * Chunks from S3 through presigned GET URLs the control plane hands out (disk
 * bytes never pass through Lambda). The control plane signs URLs per version
 * the site may read, so requests are batched per version: the hashes of one
 * version asked for within one turn of the event loop, topped up with that
 * version's upcoming hashes, go in one call of at most 500. URLs are reused
 * until shortly before they expire.
 */
import { DEFAULT_CHUNK_TIMEOUT_MS, MAX_CHUNK_BYTES, isChunkHash, readCapped, type ChunkOwner, type ChunkSource } from './chunk-source.js';

export interface PresignedSourceOptions {
  /**
   * Asks the control plane for presigned GET URLs of chunks of one version
   * (`POST /v1/sites/{id}/chunk-urls`); hashes it leaves out are taken as absent from S3.
   */
  getUrls(hashes: string[], owner: ChunkOwner): Promise<Record<string, string>>;
  /** @default 's3' */
  name?: string;
  /** URL lifetime when the URL does not say (`X-Amz-Expires`). @default 15 min */
  urlTtlMs?: number;
  /** A URL is not used once it has less than this left. @default 60_000 */
  refreshMarginMs?: number;
  /** The control plane takes at most 500 hashes per request. @default 500 */
  maxBatch?: number;
  /** @default globalThis.fetch */
  fetchImpl?: typeof fetch;
  /** @default Date.now */
  clock?: () => number;
  /** A download (connect and whole body) that takes longer fails. @default 60 s */
  timeoutMs?: number;
}

interface UrlEntry {
  url: Promise<string | undefined>;
  /** Infinity while the request is in flight. */
  expiresAt: number;
}

interface Waiter {
  hash: string;
  entry: UrlEntry;
  resolve(url: string | undefined): void;
  reject(e: unknown): void;
}

const ownerKey = (o: ChunkOwner) => `${o.vdiskId}.${o.number}`;

/** The URL's own lifetime (SigV4 `X-Amz-Expires`, seconds), counted from when we asked: immune to clock skew with AWS. */
function lifetimeMs(url: string, fallback: number): number {
  try {
    const s = Number(new URL(url).searchParams.get('X-Amz-Expires'));
    return s > 0 ? s * 1000 : fallback;
  } catch {
    return fallback;
  }
}

export function presignedSource(opts: PresignedSourceOptions): ChunkSource {
  const name = opts.name ?? 's3';
  const ttl = opts.urlTtlMs ?? 15 * 60_000;
  const margin = opts.refreshMarginMs ?? 60_000;
  const maxBatch = opts.maxBatch ?? 500;
  const fetchImpl = opts.fetchImpl ?? fetch;
  const clock = opts.clock ?? Date.now;
  const timeoutMs = opts.timeoutMs ?? DEFAULT_CHUNK_TIMEOUT_MS;

  /** URLs by hash (valid whatever version asked for them). */
  const entries = new Map<string, UrlEntry>();
  /** Requests of this turn, by version. */
  let waiting = new Map<string, { owner: ChunkOwner; waiters: Waiter[] }>();
  let scheduled = false;
  /** Hashes the cache said it will ask for, by version, in order. */
  let upcoming = new Map<string, Set<string>>();

  const waiterFor = (hash: string): Waiter => {
    let resolve!: Waiter['resolve'];
    let reject!: Waiter['reject'];
    const url = new Promise<string | undefined>((ok, fail) => ((resolve = ok), (reject = fail)));
    // Prefetched URLs may have no one awaiting them yet: never an unhandled rejection.
    url.catch(() => undefined);
    const entry = { url, expiresAt: Infinity };
    entries.set(hash, entry);
    return { hash, entry, resolve, reject };
  };

  async function request(owner: ChunkOwner, batch: Waiter[]) {
    const now = clock();
    for (const [h, e] of entries) if (e.expiresAt <= now + margin) entries.delete(h);
    const next = upcoming.get(ownerKey(owner)) ?? new Set<string>();
    for (const h of next) {
      if (batch.length >= maxBatch) break;
      next.delete(h);
      if (!entries.has(h)) batch.push(waiterFor(h));
    }
    let urls: Record<string, string>;
    try {
      urls = await opts.getUrls(
        batch.map((w) => w.hash),
        owner,
      );
    } catch (e) {
      for (const w of batch) {
        if (entries.get(w.hash) === w.entry) entries.delete(w.hash);
        w.reject(e);
      }
      return;
    }
    for (const w of batch) {
      const url = urls[w.hash];
      if (url) w.entry.expiresAt = now + lifetimeMs(url, ttl);
      else if (entries.get(w.hash) === w.entry) entries.delete(w.hash);
      w.resolve(url);
    }
  }

  const flush = () => {
    scheduled = false;
    const all = waiting;
    waiting = new Map();
    for (const { owner, waiters } of all.values()) for (let i = 0; i < waiters.length; i += maxBatch) void request(owner, waiters.slice(i, i + maxBatch));
  };

  const urlFor = (hash: string, owner: ChunkOwner): Promise<string | undefined> => {
    upcoming.get(ownerKey(owner))?.delete(hash);
    const e = entries.get(hash);
    if (e && e.expiresAt > clock() + margin) return e.url;
    const w = waiterFor(hash);
    const k = ownerKey(owner);
    const group = waiting.get(k) ?? { owner: { vdiskId: owner.vdiskId, number: owner.number }, waiters: [] };
    group.waiters.push(w);
    waiting.set(k, group);
    if (!scheduled) {
      scheduled = true;
      setImmediate(flush);
    }
    return w.entry.url;
  };

  return {
    name,
    prefetch(wants) {
      upcoming = new Map();
      for (const w of wants) {
        if (!isChunkHash(w.hash)) continue;
        const k = ownerKey(w);
        upcoming.set(k, (upcoming.get(k) ?? new Set<string>()).add(w.hash));
      }
    },
    async fetch(hash, signal, owner) {
      if (!owner) throw new Error(`${name}: the version a chunk belongs to is needed to ask for its URL`);
      for (let attempt = 0; ; attempt++) {
        const url = await urlFor(hash, owner);
        if (!url) return null;
        const timeout = AbortSignal.timeout(timeoutMs);
        const res = await fetchImpl(url, { signal: signal ? AbortSignal.any([signal, timeout]) : timeout });
        if (res.ok) {
          entries.delete(hash);
          return readCapped(res, MAX_CHUNK_BYTES, `${name}: chunk ${hash}`);
        }
        await res.body?.cancel();
        // 403: the URL expired or its signing key was rotated; 404 may be a stale URL. One fresh URL, then give up.
        if ((res.status === 403 || res.status === 404) && attempt === 0) {
          entries.delete(hash);
          continue;
        }
        throw new Error(`${name}: HTTP ${res.status} for chunk ${hash}`);
      }
    },
  };
}
