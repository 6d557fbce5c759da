import { z } from 'zod';
import { DescriptionSchema, HostSchema, IdSchema, PortSchema, nameSchema, systemFields } from './common.js';

/** PVS "Configure Bootstrap": login servers and timeouts a booting target uses. */
export const BootstrapServerSchema = z
  .object({
    address: HostSchema,
    /** Port of the appliance's boot (HTTP) service. */
    port: PortSchema.default(80),
  })
  .strict();

const timeoutMs = z
  .number()
  .int('must be a whole number of milliseconds')
  .min(1000, 'must be between 1000 and 60000 ms')
  .max(60000, 'must be between 1000 and 60000 ms');

export const BootstrapSchema = z
  .object({
    /** Up to 4 servers, tried in this order (PVS limit and semantics). */
    servers: z.array(BootstrapServerSchema).max(4, 'at most 4 bootstrap servers').default([]),
    pollingTimeoutMs: timeoutMs.default(5000),
    generalTimeoutMs: timeoutMs.default(5000),
    verbose: z.boolean().default(false),
    /** First-stage iPXE files the ProxyDHCP offers, by firmware (Debian package ipxe names). */
    files: z
      .object({
        /** BIOS: undionly.kpxe drives the NIC through its PXE ROM; ipxe.pxe uses iPXE's own drivers. */
        bios: z.enum(['undionly.kpxe', 'ipxe.pxe']).default('undionly.kpxe'),
        /** UEFI x64: snponly.efi uses the firmware's network driver; ipxe.efi iPXE's own. */
        uefiX64: z.enum(['snponly.efi', 'ipxe.efi']).default('snponly.efi'),
        /** ARM64 UEFI: a file in the appliance's bootstrap folder, or null when there is none (Debian 12's ipxe has none). */
        arm64: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'must be a file name').nullable().default(null),
      })
      .strict()
      .prefault({}),
    /** What a target does when it loses its appliance (PVS: restore connection, or reboot to hard disk after 50 s). */
    networkRecovery: z
      .object({
        action: z.enum(['restore-connection', 'reboot-local']).default('restore-connection'),
        rebootDelaySeconds: z.number().int().min(1).max(3600).default(50),
      })
      .strict()
      .prefault({}),
  })
  .strict();

export const SiteInputSchema = z
  .object({
    name: nameSchema(50),
    description: DescriptionSchema.default(''),
    bootstrap: BootstrapSchema.prefault({}),
    proxyDhcp: z.object({ enabled: z.boolean().default(false) }).strict().prefault({}),
    rebalance: z
      .object({
        enabled: z.boolean().default(false),
        triggerPercent: z
          .number()
          .int()
          .min(5, 'must be between 5 and 5000')
          .max(5000, 'must be between 5 and 5000')
          .default(25),
        /** How often each appliance checks its balance (PVS: about every 10 minutes). */
        intervalSeconds: z.number().int().min(5, 'must be between 5 and 86400 seconds').max(86400, 'must be between 5 and 86400 seconds').default(600),
        /** At most this many targets an appliance moves per check, one every `spacingSeconds`: a rebalance never becomes a reconnect storm. */
        maxMovesPerCheck: z.number().int().min(1, 'must be between 1 and 1000').max(1000, 'must be between 1 and 1000').default(10),
        spacingSeconds: z.number().min(0.1, 'must be between 0.1 and 600 seconds').max(600, 'must be between 0.1 and 600 seconds').default(1),
      })
      .strict()
      .prefault({}),
    /**
     * Site high availability (issue 7): appliances heartbeat each other on the LAN and adopt a
     * silent peer's floating address. PVS's "server cache timeout" is 8 s; bootfarm's heartbeats
     * go 4 times per timeout, so 2 s is safe on a LAN and fails over in about that.
     */
    highAvailability: z
      .object({
        peerTimeoutMs: z.number().int().min(1000, 'must be between 1000 and 60000 ms').max(60000, 'must be between 1000 and 60000 ms').default(2000),
      })
      .strict()
      .prefault({}),
    /** Collection that auto-added targets of this site join (PVS: site > Properties > Options). */
    defaultCollectionId: IdSchema.nullable().default(null),
  })
  .strict();

export const SiteSchema = SiteInputSchema.extend(systemFields).meta({ id: 'Site' });
export type SiteInput = z.infer<typeof SiteInputSchema>;
export type Site = z.infer<typeof SiteSchema>;
