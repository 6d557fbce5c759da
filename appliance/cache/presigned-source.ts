/**
 * Chunks from S3 through presigned GET URLs the control plane hands out (disk
 * bytes never pass through Lambda). URL requests are batched: the hashes asked
 * for within one turn of the event loop, topped up with the cache's upcoming
 * hashes, go in one call of at most 500; URLs are reused until shortly before
 * they expire.
 */
import { isChunkHash, type ChunkSource } from './chunk-source.js';

export interface PresignedSourceOptions {
  /** Asks the control plane for presigned GET URLs; hashes it leaves out are taken as absent from S3. */
  getUrls(hashes: string[]): Promise<Record<string, string>>;
  /** @default 's3' */
  name?: string;
  /** URL lifetime when the URL does not say (`X-Amz-Expires`). @default 15 min */
  urlTtlMs?: number;
  /** A URL is not used once it has less than this left. @default 60_000 */
  refreshMarginMs?: number;
  /** @default 500 */
  maxBatch?: number;
  /** @default globalThis.fetch */
  fetchImpl?: typeof fetch;
  /** @default Date.now */
  clock?: () => number;
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

  const entries = new Map<string, UrlEntry>();
  let waiting: Waiter[] = [];
  let scheduled = false;
  let upcoming = new Set<string>();

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

  async function request(batch: Waiter[]) {
    const now = clock();
    for (const [h, e] of entries) if (e.expiresAt <= now + margin) entries.delete(h);
    for (const h of upcoming) {
      if (batch.length >= maxBatch) break;
      upcoming.delete(h);
      if (!entries.has(h)) batch.push(waiterFor(h));
    }
    let urls: Record<string, string>;
    try {
      urls = await opts.getUrls(batch.map((w) => w.hash));
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
    waiting = [];
    for (let i = 0; i < all.length; i += maxBatch) void request(all.slice(i, i + maxBatch));
  };

  const urlFor = (hash: string): Promise<string | undefined> => {
    upcoming.delete(hash);
    const e = entries.get(hash);
    if (e && e.expiresAt > clock() + margin) return e.url;
    const w = waiterFor(hash);
    waiting.push(w);
    if (!scheduled) {
      scheduled = true;
      setImmediate(flush);
    }
    return w.entry.url;
  };

  return {
    name,
    prefetch(hashes) {
      upcoming = new Set(hashes.filter(isChunkHash));
    },
    async fetch(hash, signal) {
      for (let attempt = 0; ; attempt++) {
        const url = await urlFor(hash);
        if (!url) return null;
        const res = await fetchImpl(url, { signal });
        if (res.ok) {
          entries.delete(hash);
          return new Uint8Array(await res.arrayBuffer());
        }
        await res.body?.cancel();
        // 403: the URL expired or its key was rotated; 404 may be a stale URL for a re-uploaded chunk. One fresh URL, then give up.
        if ((res.status === 403 || res.status === 404) && attempt === 0) {
          entries.delete(hash);
          continue;
        }
        throw new Error(`${name}: HTTP ${res.status} for chunk ${hash}`);
      }
    },
  };
}
