/**
 * Chunks from another appliance of the same site, over the LAN: the client
 * (`peerSource`) and the server routes (`peerRoutes`, mounted by the daemon at
 * `/peer`). Peers authenticate with the site's shared secret from the signed
 * snapshot; the bytes are checked by the fetching cache as from any source.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { Hono } from 'hono';
import { MAX_CHUNK_BYTES, isChunkHash, readCapped, type ChunkSource } from './chunk-source.js';

/** A secret, or a function giving the current one (it comes with each new snapshot). */
export type PeerSecret = string | (() => string | undefined);
const current = (s: PeerSecret) => (typeof s === 'function' ? s() : s);

export interface PeerSourceOptions {
  /** The peer's management URL, e.g. `http://192.0.2.11:8080` (without `/peer`). */
  baseUrl: string;
  secret: PeerSecret;
  /** @default `peer <baseUrl>` */
  name?: string;
  /** A peer that does not answer within this is treated as down. @default 30_000 */
  timeoutMs?: number;
  /** @default globalThis.fetch */
  fetchImpl?: typeof fetch;
}

export function peerSource(opts: PeerSourceOptions): ChunkSource {
  const base = opts.baseUrl.replace(/\/+$/, '');
  const fetchImpl = opts.fetchImpl ?? fetch;
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const name = opts.name ?? `peer ${base}`;
  return {
    name,
    async fetch(hash, signal) {
      if (!isChunkHash(hash)) throw new Error(`${name}: not a chunk hash: ${JSON.stringify(hash)}`);
      const secret = current(opts.secret);
      if (!secret) throw new Error(`${name}: no peer secret yet`);
      const timeout = AbortSignal.timeout(timeoutMs);
      const res = await fetchImpl(`${base}/peer/chunks/${hash}`, {
        headers: { authorization: `Bearer ${secret}` },
        signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
      });
      if (res.status === 404) {
        await res.body?.cancel();
        return null;
      }
      if (!res.ok) {
        await res.body?.cancel();
        throw new Error(`${name}: HTTP ${res.status}`);
      }
      return readCapped(res, MAX_CHUNK_BYTES, `${name}: chunk ${hash}`);
    },
  };
}

/** What the routes need from the cache. */
export interface ChunkReader {
  /** The bytes of a held (verified) chunk, or null. */
  readChunk(hash: string): Promise<Uint8Array | null>;
}

const digest = (s: string) => createHash('sha256').update(s).digest();

/** True when `authorization` is `Bearer <secret>`; compares digests so the time taken says nothing about the secret. */
export function bearerMatches(authorization: string | undefined, secret: string | undefined): boolean {
  if (!secret || !authorization?.startsWith('Bearer ')) return false;
  return timingSafeEqual(digest(authorization.slice('Bearer '.length)), digest(secret));
}

/**
 * `GET /chunks/:hash` for peers: 401 without the site's bearer secret (checked
 * first, so strangers learn nothing), 400 unless the hash is 64 lower-case hex
 * (the only shape that reaches a path), 404 when not held, else the bytes.
 */
export function peerRoutes(chunks: ChunkReader, secret: PeerSecret): Hono {
  const app = new Hono();
  app.get('/chunks/:hash', async (c) => {
    if (!bearerMatches(c.req.header('authorization'), current(secret)))
      return c.json({ error: 'unauthenticated', message: 'peer secret required' }, 401, { 'www-authenticate': 'Bearer' });
    const hash = c.req.param('hash');
    if (!isChunkHash(hash)) return c.json({ error: 'bad_request', message: 'chunk hash must be 64 lower-case hex digits' }, 400);
    const data = await chunks.readChunk(hash);
    if (!data) return c.json({ error: 'not_found', message: 'chunk not held here' }, 404);
    return c.body(new Uint8Array(data.buffer as ArrayBuffer, data.byteOffset, data.byteLength), 200, { 'content-type': 'application/octet-stream' });
  });
  return app;
}
