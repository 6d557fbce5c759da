/**
 * Where the cache gets chunk bytes it does not hold: peer appliances of the
 * site (LAN) first, S3 through presigned URLs otherwise. A source only moves
 * bytes; the cache checks every chunk's hash before keeping it, so a source
 * never has to be trusted.
 */

export interface ChunkSource {
  /** Shown in logs and in the per-source fetch counters. */
  readonly name: string;
  /**
   * The chunk's bytes, or null when this source does not have it.
   * Throws when the source failed (down, refused, timed out): the cache then
   * tries the next source.
   */
  fetch(hash: string, signal?: AbortSignal): Promise<Uint8Array | null>;
  /**
   * Advisory: the hashes the cache is about to ask for, in order. A source may
   * prepare for them (the presigned source signs their URLs in bulk).
   */
  prefetch?(hashes: readonly string[]): void;
}

export type CacheLogLevel = 'debug' | 'info' | 'warn' | 'error';
export type CacheLog = (level: CacheLogLevel, msg: string, fields?: Record<string, unknown>) => void;
export const silentLog: CacheLog = () => undefined;

/** A chunk name: lower-case hex SHA-256, the only shape that may reach a file path. */
export const isChunkHash = (s: string) => /^[0-9a-f]{64}$/.test(s);

export const errorMessage = (e: unknown) => (e instanceof Error ? e.message : String(e));
