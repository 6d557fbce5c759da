/**
 * Heartbeats between a site's appliances: one UDP datagram to every peer's
 * management address, four times per peer timeout. Each says who sends it,
 * which floating addresses it holds, whether its link is up, what it holds
 * verified, whom it serves per vDisk and which targets it has just sent where
 * (so the balance counts a target from the moment a boot script names its
 * appliance, not only once it reads).
 *
 *   "BFH1" | HMAC-SHA256 (32 bytes) | JSON
 *
 * The HMAC key comes from the site's peer secret (in the signed snapshot), so
 * nobody off the site can forge one. A replayed datagram is refused: each
 * carries its sender's incarnation (start time + random) and a sequence
 * number that only grows within it.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';
import { IdSchema } from '../../model/index.js';

export const HEARTBEAT_MAGIC = Buffer.from('BFH1');
/** Larger heartbeats drop their per-target lists (counts stay). 64 KiB is UDP's limit; this leaves room. */
export const MAX_HEARTBEAT_BYTES = 60_000;

const Ipv4 = z.string().regex(/^\d{1,3}(\.\d{1,3}){3}$/);
export const HeartbeatSchema = z
  .object({
    v: z.literal(1),
    site: IdSchema,
    from: IdSchema,
    /** Incarnation: 12 hex digits of start time (ms) + 8 random hex digits. */
    inc: z.string().regex(/^[0-9a-f]{20}$/),
    seq: z.number().int().min(0),
    /** A graceful stop: peers treat the sender as gone at once. */
    leaving: z.boolean().default(false),
    link: z.boolean(),
    /** The peers it hears now, with the incarnation it heard: a peer that just started knows its claims were made knowing it is up. */
    hears: z.array(z.tuple([IdSchema, z.string().regex(/^[0-9a-f]{20}$/)])).max(64).default([]),
    held: z.array(Ipv4).max(64),
    /** Versions held: [vdiskId, number, state]. */
    inventory: z.array(z.tuple([IdSchema, z.number().int().min(0), z.enum(['verified', 'syncing', 'corrupt'])])).max(2000),
    /** Targets served, per vDisk: session keys (client address for HTTP, MAC for NBD). */
    sessions: z.record(z.string(), z.array(z.string().max(64)).max(5000)),
    /** Per vDisk counts when the lists did not fit. */
    counts: z.record(z.string(), z.number().int().min(0)).optional(),
    total: z.number().int().min(0),
    /** Recent boot decisions: [mac, clientIp or '', vdiskId, applianceId, age in ms]. */
    assigned: z.array(z.tuple([z.string().max(17), z.string().max(45), IdSchema, IdSchema, z.number().int().min(0)])).max(2000),
  })
  .strict();
export type Heartbeat = z.infer<typeof HeartbeatSchema>;

export const heartbeatKey = (peerSecret: string) => createHash('sha256').update(`bootfarm-heartbeat|${peerSecret}`).digest();

export function encodeHeartbeat(h: Heartbeat, key: Buffer): Buffer {
  let body = Buffer.from(JSON.stringify(h));
  if (body.length > MAX_HEARTBEAT_BYTES) {
    const counts = Object.fromEntries(Object.entries(h.sessions).map(([k, v]) => [k, v.length]));
    body = Buffer.from(JSON.stringify({ ...h, sessions: {}, counts, assigned: h.assigned.slice(-200) }));
  }
  const mac = createHmac('sha256', key).update(body).digest();
  return Buffer.concat([HEARTBEAT_MAGIC, mac, body]);
}

export class HeartbeatRefused extends Error {
  override name = 'HeartbeatRefused';
}

/** Signature first, then parse: a datagram that was not signed with the site's key never reaches the schema. */
export function decodeHeartbeat(buf: Buffer, key: Buffer): Heartbeat {
  if (buf.length < 36 || !buf.subarray(0, 4).equals(HEARTBEAT_MAGIC)) throw new HeartbeatRefused('not a bootfarm heartbeat');
  const body = buf.subarray(36);
  const want = createHmac('sha256', key).update(body).digest();
  if (!timingSafeEqual(want, buf.subarray(4, 36))) throw new HeartbeatRefused('bad signature (another site, or a forged or damaged datagram)');
  let json: unknown;
  try {
    json = JSON.parse(body.toString('utf8'));
  } catch {
    throw new HeartbeatRefused('signed body is not JSON');
  }
  const r = HeartbeatSchema.safeParse(json);
  if (!r.success) throw new HeartbeatRefused(`malformed: ${r.error.issues[0]?.path.join('.')}: ${r.error.issues[0]?.message}`);
  return r.data;
}

/** A new incarnation id: start time then randomness, so a restarted appliance's id sorts after its old one. */
export function newIncarnation(nowMs: number, random: Buffer): string {
  return Math.floor(nowMs).toString(16).padStart(12, '0').slice(-12) + random.subarray(0, 4).toString('hex');
}

/**
 * Replay guard: a heartbeat is fresh when it comes from a later incarnation
 * than the last one seen from that peer, or from the same one with a higher
 * sequence number.
 */
export function isFresh(last: { inc: string; seq: number } | undefined, h: Pick<Heartbeat, 'inc' | 'seq'>): boolean {
  if (!last) return true;
  if (h.inc !== last.inc) return h.inc > last.inc;
  return h.seq > last.seq;
}
