/**
 * Events an appliance reports: boots, and what it decided on its own while the
 * cloud was unreachable (auto-added targets). They wait in a durable outbox on
 * the appliance and are delivered at least once; the id is the idempotency key,
 * so a redelivered event is recognised and not applied twice.
 */
import { z } from 'zod';
import { IdSchema, MacSchema } from './common.js';
import { SAME_BOOT_MS, TargetInputSchema, type LastBoot } from './target.js';

/** Time-ordered and unique per appliance: `<ms since epoch, base36, 9 chars>-<random>`. */
export const EventIdSchema = z.string().regex(/^[0-9a-z]{9}-[0-9a-z]{8,32}$/, 'must be <base36 time>-<random>, as the appliance makes it');

const base = { id: EventIdSchema, at: z.iso.datetime({ offset: true }) };

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
 * A target's last boot after one appliance event (pure). Events come at least once and in any order (each appliance has its own
 * outbox): an older boot never replaces a newer one, and the script's event and the OS's completion of the same boot merge
 * whichever arrives first.
 */
export function lastBootAfter(cur: LastBoot | null, applianceId: string, e: Extract<ApplianceEvent, { type: 'boot' | 'boot-completed' }>): LastBoot | null {
  const at = e.type === 'boot' ? e.at : e.data.bootStartedAt;
  const same = cur !== null && Math.abs(Date.parse(cur.at) - Date.parse(at)) < SAME_BOOT_MS;
  if (cur && !same && Date.parse(cur.at) > Date.parse(at)) return null;
  if (e.type === 'boot') {
    const d = e.data;
    const done = same ? { completedAt: cur.completedAt, completedOn: cur.completedOn, durationMs: cur.durationMs } : { completedAt: null, completedOn: null, durationMs: null };
    return { at, applianceId, outcome: d.outcome, vdiskId: d.vdiskId, version: d.version, streamingApplianceId: d.streamingApplianceId, message: d.message, ...done };
  }
  const d = e.data;
  // Redelivered, or another connection of the same boot: the first attachment is when the boot ended.
  if (same && cur.completedAt) return null;
  const base: LastBoot = same ? cur : { at, applianceId: null, outcome: 'vdisk', vdiskId: d.vdiskId, version: d.version, streamingApplianceId: applianceId, message: '', completedAt: null, completedOn: null, durationMs: null };
  return { ...base, completedAt: e.at, completedOn: applianceId, durationMs: d.durationMs };
}
