import { isIPv4 } from 'node:net';
import { z } from 'zod';
import { DescriptionSchema, HostSchema, IdSchema, IpAddressSchema, nameSchema, systemFields } from './common.js';
import { ChunkHashSchema } from './manifest.js';

/** An on-site appliance (PVS: a server running the Stream service). */
export const ApplianceInputSchema = z
  .object({
    siteId: IdSchema,
    name: nameSchema(63),
    description: DescriptionSchema.default(''),
    managementAddress: HostSchema,
    /** Addresses targets stream from; the first is the preferred one. */
    streamingAddresses: z.array(IpAddressSchema).max(16).default([]),
    /**
     * Its floating address (IPv4, on the site LAN, not any appliance's own address): it serves
     * targets there, and when it goes silent a peer adopts the address and serves them on.
     * Null: no failover address (targets fail over through their boot script's other paths only).
     */
    floatingAddress: z
      .string()
      .refine((s) => isIPv4(s), 'must be an IPv4 address')
      .nullable()
      .default(null),
    /** Relative capacity used by load balancing (PVS default 1.0). */
    powerRating: z.number().min(0.1, 'must be between 0.1 and 1000').max(1000, 'must be between 0.1 and 1000').default(1),
    /** PVS "maximum devices booting": default 500; PVS's ceiling per server is 4095. */
    maxTargets: z.number().int().min(1, 'must be between 1 and 4095').max(4095, 'must be between 1 and 4095').default(500),
  })
  .strict();

/**
 * How far an appliance has got with one vDisk version: `verified` (every chunk
 * is on its disk and matched the signed manifest), `syncing` (fetching chunks;
 * `percent` of the version's bytes are in), `corrupt` (a chunk failed its hash
 * check and could not be fetched again).
 */
export const INVENTORY_STATES = ['verified', 'syncing', 'corrupt'] as const;

export const InventoryEntrySchema = z
  .object({
    vdiskId: IdSchema,
    number: z.number().int().min(0),
    /** The version's contentHash as the appliance computed it from the manifest it holds. */
    contentHash: ChunkHashSchema,
    state: z.enum(INVENTORY_STATES),
    /** With state syncing: share of the version's bytes already held and verified. */
    percent: z.number().min(0).max(100).optional(),
  })
  .strict();
export type InventoryEntry = z.infer<typeof InventoryEntrySchema>;

/**
 * What an appliance reports it holds (issue 4 writes it; the API treats it as
 * read-only). Replication status compares it with the versions by content hash,
 * not by timestamps as PVS does.
 */
export const InventorySchema = z
  .object({
    reportedAt: z.iso.datetime({ offset: true }),
    versions: z
      .array(InventoryEntrySchema)
      .max(10_000)
      .refine((l) => new Set(l.map((e) => `${e.vdiskId}.${e.number}`)).size === l.length, 'a version may be listed only once'),
  })
  .strict()
  .meta({ id: 'Inventory' });
export type Inventory = z.infer<typeof InventorySchema>;

/** What an appliance says about itself every few seconds (PUT /v1/appliances/{id}/status). */
export const ApplianceStatusSchema = z
  .object({
    /** bootfarm version the appliance runs. */
    softwareVersion: z.string().max(64),
    startedAt: z.iso.datetime({ offset: true }),
    /** 1-minute load average of the box. */
    load: z.number().min(0).max(1e6),
    /** Open streaming sessions (HTTP and NBD clients). */
    sessions: z.number().int().min(0),
    /** Farm revision of the snapshot it boots from; null before its first snapshot. */
    snapshotRevision: z.number().int().min(0).nullable(),
    inventoryDigest: z.string().max(64),
    cacheBytes: z.number().int().min(0),
    /** Events written while the cloud was unreachable and not delivered yet. */
    outboxPending: z.number().int().min(0),
    /** When it last lost the control plane; null while connected. Reported after the fact, when the link is back. */
    offlineSince: z.iso.datetime({ offset: true }).nullable(),
    /** Targets streaming each vDisk now (HTTP and NBD), by vDisk id. Optional: appliances before it did not send it. */
    sessionsByVdisk: z.record(IdSchema, z.number().int().min(0)).optional(),
    /** Disk bytes sent to targets since `startedAt` (HTTP and NBD): the console derives throughput from two reports. */
    bytesServed: z.number().int().min(0).optional(),
  })
  .strict()
  .meta({ id: 'ApplianceStatus' });
export type ApplianceStatus = z.infer<typeof ApplianceStatusSchema>;

export const ApplianceStatusReportSchema = z
  .object({
    status: ApplianceStatusSchema,
    /** Sent when it changed (the digest in status says which one the cloud should have). */
    inventory: InventorySchema.optional(),
  })
  .strict()
  .meta({ id: 'ApplianceStatusReport' });
export type ApplianceStatusReport = z.infer<typeof ApplianceStatusReportSchema>;

export const ApplianceSchema = ApplianceInputSchema.extend({
  ...systemFields,
  /** Written by the appliance itself. */
  lastHeartbeat: z.string().nullable(),
  inventory: InventorySchema.nullable(),
  status: ApplianceStatusSchema.nullable().optional(),
}).meta({ id: 'Appliance' });
export type ApplianceInput = z.infer<typeof ApplianceInputSchema>;
export type Appliance = z.infer<typeof ApplianceSchema>;

/** Where targets reach an appliance: its floating address, else its first streaming address, else its management address. */
export function serviceAddress(a: Pick<ApplianceInput, 'floatingAddress' | 'streamingAddresses' | 'managementAddress'>): string {
  return a.floatingAddress ?? a.streamingAddresses[0] ?? a.managementAddress;
}

/**
 * One minute of an appliance's activity, kept for an hour (the console's live
 * chart): the last report of that minute. `bytesServed` is the appliance's
 * counter since `startedAt`, so throughput is the difference of two minutes of
 * the same run.
 */
export const ApplianceSampleSchema = z
  .object({
    /** Start of the minute (ISO). */
    at: z.string(),
    startedAt: z.string(),
    sessions: z.number().int().min(0),
    bytesServed: z.number().int().min(0).nullable(),
  })
  .strict()
  .meta({ id: 'ApplianceSample' });
export type ApplianceSample = z.infer<typeof ApplianceSampleSchema>;

/** How long samples are kept and shown: the last hour, one a minute. */
export const HISTORY_MINUTES = 60;

/** The start of the minute `at` falls in, and its slot in the hour (samples are kept in 60 slots, overwritten an hour later). */
export function sampleMinute(at: Date): { at: string; slot: number } {
  const m = new Date(Math.floor(at.getTime() / 60_000) * 60_000);
  return { at: m.toISOString(), slot: m.getUTCMinutes() };
}

export interface HistoryPoint {
  at: string;
  sessions: number;
  /** Mean bytes per second since the previous minute; null where it cannot be known (first minute of a run, no counter, a gap). */
  bytesPerSecond: number | null;
}

/**
 * The last hour as points, oldest first: samples older than an hour (slots not
 * overwritten since) are dropped; throughput is the counter's growth over the
 * minutes between two samples of the same run.
 */
export function historySeries(samples: readonly ApplianceSample[], now: Date): HistoryPoint[] {
  const from = now.getTime() - HISTORY_MINUTES * 60_000;
  const live = samples.filter((s) => Date.parse(s.at) > from && Date.parse(s.at) <= now.getTime()).sort((a, b) => a.at.localeCompare(b.at));
  return live.map((s, i) => {
    const prev = live[i - 1];
    let rate: number | null = null;
    if (prev && prev.startedAt === s.startedAt && prev.bytesServed !== null && s.bytesServed !== null && s.bytesServed >= prev.bytesServed) {
      rate = (s.bytesServed - prev.bytesServed) / ((Date.parse(s.at) - Date.parse(prev.at)) / 1000);
    }
    return { at: s.at, sessions: s.sessions, bytesPerSecond: rate };
  });
}
