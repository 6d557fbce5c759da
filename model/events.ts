/**
 * Events an appliance reports: boots, and what it decided on its own while the
 * cloud was unreachable (auto-added targets). They wait in a durable outbox on
 * the appliance and are delivered at least once; the id is the idempotency key,
 * so a redelivered event is recognised and not applied twice.
 */
import { z } from 'zod';
import { IdSchema, MacSchema } from './common.js';
import { TargetInputSchema, type LastBoot } from './target.js';

/** Time-ordered and unique per appliance: `<ms since epoch, base36, 9 chars>-<random>`. */
export const EventIdSchema = z.string().regex(/^[0-9a-z]{9}-[0-9a-z]{8,32}$/, 'must be <base36 time>-<random>, as the appliance makes it');

const base = { id: EventIdSchema, at: z.iso.datetime({ offset: true }) };

/** A boot's id in NBD export names: its time in ms (12 hex digits) and 32 random bits (appliance/nbd/export-name.ts). */
export const BootIdSchema = z.string().regex(/^[0-9a-f]{20}$/, 'must be 20 hex digits, as in an export name');

export const ApplianceEventSchema = z.discriminatedUnion('type', [
  z
    .object({
      ...base,
      type: z.literal('boot'),
      data: z
        .object({
          mac: MacSchema,
          /** The target's id: its MAC. */
          targetId: MacSchema.nullable(),
          /** What the appliance answered: a boot script for a vDisk, local disk, or a refusal (disabled, unknown, no version). */
          outcome: z.enum(['vdisk', 'local-disk', 'refused']),
          vdiskId: IdSchema.nullable().default(null),
          version: z.number().int().min(0).nullable().default(null),
          /** The appliance chosen to stream the disk. */
          streamingApplianceId: IdSchema.nullable().default(null),
          message: z.string().max(500).default(''),
          /** The boot id of the NBD export name the script handed out (its OS's completion names it too); absent when none was. */
          bootId: BootIdSchema.optional(),
        })
        .strict(),
    })
    .strict(),
  z
    .object({
      ...base,
      /** The booted OS attached its disk (its first NBD connection of that boot): the boot is over. */
      type: z.literal('boot-completed'),
      data: z
        .object({
          mac: MacSchema,
          vdiskId: IdSchema,
          version: z.number().int().min(0),
          /** The boot, from the signed export name the OS opened. */
          bootId: BootIdSchema,
          /** When the boot script of this boot was made (from the export name's boot id). */
          bootStartedAt: z.iso.datetime({ offset: true }),
          /** Boot script to the OS attaching its disk. */
          durationMs: z.number().int().min(0).max(86_400_000),
        })
        .strict(),
    })
    .strict(),
  z
    .object({
      ...base,
      type: z.literal('target-auto-added'),
      /** The target exactly as the appliance added it to its own snapshot. */
      data: z.object({ target: TargetInputSchema }).strict(),
    })
    .strict(),
  z
    .object({
      ...base,
      type: z.literal('notice'),
      data: z.object({ level: z.enum(['info', 'warn', 'error']), message: z.string().max(2000) }).strict(),
    })
    .strict(),
]);
export type ApplianceEvent = z.infer<typeof ApplianceEventSchema>;

export const EventBatchSchema = z
  .object({ events: z.array(ApplianceEventSchema).min(1).max(100, 'at most 100 events per request') })
  .strict()
  .meta({ id: 'EventBatch' });

/** What the control plane did with one event. `duplicate`: delivered before, nothing done again. */
export const EventResultSchema = z.object({
  id: z.string(),
  outcome: z.enum(['recorded', 'duplicate', 'created', 'exists', 'renamed', 'rejected']),
  message: z.string().optional(),
  targetId: z.string().optional(),
});
export type EventResult = z.infer<typeof EventResultSchema>;

export const StoredEventSchema = z
  .object({
    id: z.string(),
    siteId: z.string(),
    applianceId: z.string(),
    type: z.string(),
    at: z.string(),
    receivedAt: z.string(),
    data: z.record(z.string(), z.unknown()),
    result: EventResultSchema,
  })
  .meta({ id: 'ApplianceEventRecord' });
export type StoredEvent = z.infer<typeof StoredEventSchema>;

/** A new event id: sortable by time, unique with 64 random bits. */
export function newEventId(now: Date, random: Uint8Array): string {
  const t = now.getTime().toString(36).padStart(9, '0');
  const r = Buffer.from(random).toString('hex').replace(/[^0-9a-z]/g, '').slice(0, 16).padEnd(8, '0');
  return `${t}-${r}`;
}

/**
 * A target's last boot after one appliance event (pure); null: nothing changes. Events come at least once and in any order (each
 * appliance has its own outbox), so:
 * - the script's event and the OS's completion of one boot (the same boot id) merge, whichever arrives first;
 * - the first completion of a boot is when it ended (another connection, or a redelivery, changes nothing);
 * - an older boot never replaces a newer one (by the time of its script).
 */
export function lastBootAfter(cur: LastBoot | null, applianceId: string, e: Extract<ApplianceEvent, { type: 'boot' | 'boot-completed' }>): LastBoot | null {
  const at = e.type === 'boot' ? e.at : e.data.bootStartedAt;
  const bootId = e.data.bootId ?? null;
  const same = cur !== null && bootId !== null && cur.bootId === bootId;
  if (cur && !same && Date.parse(cur.at) >= Date.parse(at)) return null;
  if (e.type === 'boot') {
    const d = e.data;
    const done = same ? { completedAt: cur.completedAt, completedOn: cur.completedOn, durationMs: cur.durationMs } : { completedAt: null, completedOn: null, durationMs: null };
    return { at, bootId, applianceId, outcome: d.outcome, vdiskId: d.vdiskId, version: d.version, streamingApplianceId: d.streamingApplianceId, message: d.message, ...done };
  }
  const d = e.data;
  if (same && cur.completedAt) return null;
  const base: LastBoot = same ? cur : { at, bootId, applianceId: null, outcome: 'vdisk', vdiskId: d.vdiskId, version: d.version, streamingApplianceId: applianceId, message: '', completedAt: null, completedOn: null, durationMs: null };
  return { ...base, completedAt: e.at, completedOn: applianceId, durationMs: d.durationMs };
}
