/**
 * The appliance's own settings, written by `bootfarm appliance install` and
 * parsed once at start: a bad value stops start-up with a message naming it.
 * (The farm's settings come from the signed snapshot, not from here.)
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { IdSchema } from '../model/index.js';

export const CONFIG_FILE = 'appliance.json';
export const CREDENTIAL_FILE = 'credential';

const ms = (min: number, max: number, def: number) => z.number().int().min(min, `must be between ${min} and ${max} ms`).max(max, `must be between ${min} and ${max} ms`).default(def);

export const ApplianceConfigSchema = z
  .object({
    /** Control-plane base URL, e.g. https://abc.lambda-url.eu-west-1.on.aws */
    apiUrl: z.url({ protocol: /^https?$/, error: 'must be an http(s) URL' }),
    applianceId: IdSchema,
    siteId: IdSchema,
    name: z.string().min(1),
    /** Farm keys trusted for snapshots and manifests (from enrolment). */
    signingKeys: z.array(z.object({ keyId: z.string().regex(/^[0-9a-f]{16}$/), publicKeyPem: z.string().includes('BEGIN PUBLIC KEY') }).strict()).min(1),
    /** Where the HTTP service listens (health, metrics, peer chunks; boot scripts and disks in issue 5). */
    http: z
      .object({
        host: z.string().default('0.0.0.0'),
        port: z.number().int().min(0).max(65535).default(80),
      })
      .strict()
      .prefault({}),
    /** Plain http to a control plane that is not on loopback (a lab without TLS). Off: snapshots could be replayed on the way. */
    allowInsecureHttp: z.boolean().default(false),
    intervals: z
      .object({
        heartbeatMs: ms(1000, 300_000, 5000),
        /** Snapshot poll: an unchanged farm costs one 304. */
        pollMs: ms(1000, 3_600_000, 10_000),
        /** Retry after a failed call to the control plane: full jitter between min and an exponentially growing cap. */
        retryMinMs: ms(100, 60_000, 1000),
        retryMaxMs: ms(1000, 3_600_000, 60_000),
        requestTimeoutMs: ms(1000, 300_000, 15_000),
      })
      .strict()
      .prefault({}),
    sync: z
      .object({
        /** Chunks fetched at once. */
        concurrency: z.number().int().min(1, 'must be between 1 and 64').max(64, 'must be between 1 and 64').default(4),
      })
      .strict()
      .prefault({}),
    /** Boot services. ProxyDHCP also needs the site's proxyDhcp.enabled (farm setting); these say whether and where this box runs them. */
    boot: z
      .object({
        proxyDhcp: z
          .object({
            enabled: z.boolean().default(true),
            /** 0.0.0.0 receives the broadcast DISCOVERs. */
            bindAddress: z.string().default('0.0.0.0'),
            port: z.number().int().min(0).max(65535).default(67),
            pxePort: z.number().int().min(0).max(65535).default(4011),
          })
          .strict()
          .prefault({}),
        tftp: z
          .object({
            enabled: z.boolean().default(true),
            /** 0.0.0.0: this appliance's own address from the snapshot (answers must come from the address the client asked). */
            host: z.string().default('0.0.0.0'),
            port: z.number().int().min(0).max(65535).default(69),
          })
          .strict()
          .prefault({}),
      })
      .strict()
      .prefault({}),
    /** NBD: the disk of a running OS (boot scripts name the export; see appliance/nbd/README.md). */
    nbd: z
      .object({
        enabled: z.boolean().default(true),
        host: z.string().default('0.0.0.0'),
        /** Every appliance of a site uses the same port (peers' exports are named by address only). */
        port: z.number().int().min(0).max(65535).default(10809),
      })
      .strict()
      .prefault({}),
    /** Site high availability: heartbeats with the site's peers and floating addresses (see appliance/ha/). */
    ha: z
      .object({
        enabled: z.boolean().default(true),
        /** Where heartbeats are received. */
        host: z.string().default('0.0.0.0'),
        /** UDP; every appliance of a site uses the same port (peers send to each other's management address). */
        port: z.number().int().min(0).max(65535).default(7947),
        /** The LAN interface floating addresses go on; null: the one holding the management address. */
        interface: z.string().regex(/^[\w.-]{1,15}$/, 'must be an interface name').nullable().default(null),
        /** Prefix length of floating addresses on that interface. */
        prefixLength: z.number().int().min(8).max(32).default(24),
      })
      .strict()
      .prefault({}),
    /** Folder of the bootstrap files (Debian package ipxe). */
    bootstrapDir: z.string().default('/usr/lib/ipxe'),
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace']).default('info'),
  })
  .strict()
  .superRefine((c, ctx) => {
    if (!c.allowInsecureHttp && !isHttpsOrLoopback(c.apiUrl))
      ctx.addIssue({ code: 'custom', path: ['apiUrl'], message: 'must be https (or http on loopback); set allowInsecureHttp to use plain http' });
    if (c.intervals.retryMinMs > c.intervals.retryMaxMs) ctx.addIssue({ code: 'custom', path: ['intervals', 'retryMinMs'], message: 'must not exceed intervals.retryMaxMs' });
  });
export type ApplianceConfig = z.infer<typeof ApplianceConfigSchema>;

export function isHttpsOrLoopback(url: string): boolean {
  const u = new URL(url);
  return u.protocol === 'https:' || u.hostname === 'localhost' || u.hostname === '[::1]' || /^127\./.test(u.hostname);
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** Parses a config object; the error names the file, the field and what is wrong with it. */
export function parseConfig(raw: unknown, where: string): ApplianceConfig {
  const r = ApplianceConfigSchema.safeParse(raw);
  if (r.success) return r.data;
  const lines = r.error.issues.map((i) => `${i.path.join('.') || '(top level)'}: ${i.message}`);
  throw new ConfigError(`${where}: ${lines.join('; ')}`);
}

export async function loadConfig(dataDir: string): Promise<ApplianceConfig> {
  const path = join(dataDir, CONFIG_FILE);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new ConfigError(`${path}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); run bootfarm appliance install first`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(`${path}: not JSON (${(e as Error).message})`);
  }
  return parseConfig(raw, path);
}

export async function loadCredential(dataDir: string): Promise<string> {
  const path = join(dataDir, CREDENTIAL_FILE);
  const text = (await readFile(path, 'utf8').catch((e: NodeJS.ErrnoException) => {
    throw new ConfigError(`${path}: cannot read the appliance credential (${e.code}); enrol again with bootfarm appliance install`);
  })).trim();
  if (!/^bft_[a-z2-7]{16}_[A-Za-z0-9_-]{43}$/.test(text)) throw new ConfigError(`${path}: not an appliance credential`);
  return text;
}
