/**
 * Where the cache gets chunk bytes it does not hold: peer appliances of the
 * site (LAN) first, S3 through presigned URLs otherwise. A source only moves
 * bytes; the cache checks every chunk's hash before keeping it, so a source
 * never has to be trusted.
 */

/** A vDisk version a chunk is wanted for: the control plane hands out chunk URLs per version it lets the site read. */
export interface ChunkOwner {
  vdiskId: string;
  number: number;
}

/** A chunk the cache is about to ask for, and the (first) needed version that lists it. */
export interface ChunkWant extends ChunkOwner {
  hash: string;
}

export interface ChunkSource {
  /** Shown in logs and in the per-source fetch counters. */
  readonly name: string;
  /**
   * The chunk's bytes, or null when this source does not have it.
   * Throws when the source failed (down, refused, timed out): the cache then
   * tries the next source. The cache always passes `owner`.
   */
  fetch(hash: string, signal?: AbortSignal, owner?: ChunkOwner): Promise<Uint8Array | null>;
  /**
   * Advisory: the chunks the cache is about to ask for, in order. A source may
   * prepare for them (the presigned source signs their URLs in bulk).
   */
  prefetch?(wants: readonly ChunkWant[]): void;
}

export type CacheLogLevel = 'debug' | 'info' | 'warn' | 'error';
export type CacheLog = (level: CacheLogLevel, msg: string, fields?: Record<string, unknown>) => void;
export const silentLog: CacheLog = () => undefined;

/** A chunk name: lower-case hex SHA-256, the only shape that may reach a file path. */
export const isChunkHash = (s: string) => /^[0-9a-f]{64}$/.test(s);

export const errorMessage = (e: unknown) => (e instanceof Error ? e.message : String(e));

/** No chunk is larger (model/manifest.ts MAX_CHUNK_SIZE): a source sending more is faulty or hostile. */
export const MAX_CHUNK_BYTES = 64 * 1024 * 1024;

/** A chunk request that takes longer than this (connect and whole body) is a failure of that source. */
export const DEFAULT_CHUNK_TIMEOUT_MS = 60_000;

/**
 * The response body, refused once it passes `max` bytes (by its Content-Length
 * or while reading), so a faulty source cannot make the appliance buffer
 * without bound.
 */
export async function readCapped(res: Response, max: number, what: string): Promise<Uint8Array> {
  const declared = Number(res.headers.get('content-length') ?? NaN);
  if (declared > max) {
    await res.body?.cancel();
    throw new Error(`${what}: ${declared} bytes announced, more than the ${max} a chunk can have`);
  }
  if (!res.body) return new Uint8Array(0);
  const parts: Uint8Array[] = [];
  let total = 0;
  for await (const part of res.body as unknown as AsyncIterable<Uint8Array>) {
    total += part.byteLength;
    if (total > max) {
      await res.body.cancel().catch(() => undefined);
      throw new Error(`${what}: more than the ${max} bytes a chunk can have`);
    }
    parts.push(part);
  }
  return Buffer.concat(parts, total);
}
