/**
 * The boot service's HTTP routes: `GET /boot.ipxe` (generic: asks again with
 * MAC and architecture), `GET /boot/{mac}.ipxe` (the target's script) and
 * `GET /bootstrap/{file}` (iPXE binaries for UEFI HTTP boot). All from the
 * cached snapshot: nothing here calls the cloud.
 */
import { createReadStream } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { join } from 'node:path';
import { Hono } from 'hono';
import { normalizeMac, type Snapshot, type StreamMode, type TargetInput } from '../../model/index.js';
import type { LogFn } from '../log.js';
import { bootIdOf } from '../nbd/export-name.js';
import type { LinuxImages } from './linux-images.js';
import { planBoot, type ApplianceState } from './plan.js';
import { bootScript, genericScript, ipxeText, retryScript } from './script.js';

/** The same outcome for the same MAC is recorded again only after this long. */
const BOOT_EVENT_REPEAT_MS = 10 * 60_000;
/** Targets this appliance may hold as added offline, and add per minute. */
const MAX_LOCAL_AUTO_ADDS = 1000;
const MAX_AUTO_ADDS_PER_MINUTE = 60;

export interface BootRouteDeps {
  snapshot(): Snapshot | null;
  autoAdded(): readonly TargetInput[];
  /** Records an offline auto-add (disk + outbox). */
  recordAutoAdd(t: TargetInput): Promise<void>;
  /** Queues the boot event. */
  /** `bootId`: the boot id of the NBD export name the script carries (the OS's completion names the same boot). */
  recordBoot(e: ReturnType<typeof planBoot>['event'] & { mac: string; bootId: string | null }): Promise<void>;
  self: string;
  state(applianceId: string): ApplianceState;
  /** A boot script sent this target to that appliance: it counts as that appliance's load at once (site HA shares it with peers). */
  assigned?(mac: string, clientIp: string | null, vdiskId: string, applianceId: string): void;
  /** Where a recent decision (this appliance's or a peer's) sent this target: asked again, it gets the same answer. */
  preferred?(mac: string): string | null;
  /** Base URL of an appliance's HTTP service as targets reach it. */
  baseUrl(a: Snapshot['appliances'][number]): string;
  bootstrapDir: string;
  log: LogFn;
  /** Boot areas of Linux vDisks (kernel and initramfs inside the vDisk); absent: every vDisk is sanbooted. */
  linux?: LinuxImages;
  /** NBD for the running OS; absent: boot scripts offer none. */
  nbd?: {
    port: number;
    /** Signs an export name for a new boot of this target. */
    exportName(claim: { mac: string; vdiskId: string; version: number; mode: StreamMode; address: string | null }): string;
    /** A boot script named this export: OPT_LIST from that client shows it. Nothing else changes (anyone may ask for a script). */
    issued(mac: string, exportName: string, clientIp: string | null, description: string): void;
  };
}

/** The host of http://<host>[:port] as written (an IPv6 host keeps its brackets and zone id): no URL parsing. */
export function hostOf(base: string): string {
  const b = base.slice('http://'.length);
  if (b.startsWith('[')) return b.slice(0, b.indexOf(']') + 1);
  const colon = b.lastIndexOf(':');
  return colon < 0 ? b : b.slice(0, colon);
}

const text = { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' };

export function bootRoutes(deps: BootRouteDeps): Hono<{ Bindings: { incoming?: { socket?: { remoteAddress?: string } } } }> {
  const app = new Hono<{ Bindings: { incoming?: { socket?: { remoteAddress?: string } } } }>();

  app.get('/boot.ipxe', (c) => {
    const snap = deps.snapshot();
    const peers = (snap?.appliances ?? []).filter((a) => a.id !== deps.self).map((a) => deps.baseUrl(a));
    return c.body(genericScript(peers), 200, text);
  });

  // What was last recorded per MAC: a target retrying (waiting, refused) or a stranger probing must not fill the outbox.
  const lastBoot = new Map<string, { key: string; at: number }>();
  const shouldRecord = (mac: string, key: string) => {
    const now = Date.now();
    const last = lastBoot.get(mac);
    if (last && last.key === key && now - last.at < BOOT_EVENT_REPEAT_MS) return false;
    lastBoot.delete(mac);
    lastBoot.set(mac, { key, at: now });
    if (lastBoot.size > 10_000) lastBoot.delete(lastBoot.keys().next().value as string);
    return true;
  };
  // Offline auto-adds are bounded: a flood of made-up MACs cannot grow the local list (and the outbox) without end.
  let addedRecently: number[] = [];

  app.get('/boot/:file', async (c) => {
    const file = c.req.param('file');
    const mac = file.endsWith('.ipxe') ? normalizeMac(file.slice(0, -5)) : null;
    // Every answer is a 200 script: iPXE does not run the body of an error response, it would just fail the chain.
    if (!mac) return c.body(`#!ipxe\necho bootfarm: ${ipxeText(file)} is not a MAC address script\nsleep 10\nreboot\n`, 200, text);
    const snapshot = deps.snapshot();
    if (!snapshot) return c.body(retryScript('this appliance has no farm configuration yet', c.req.url, 10), 200, text);
    const clientIp = (c.env?.incoming?.socket?.remoteAddress ?? '').replace(/^::ffff:/, '') || null;
    // This appliance as the target reached it (through NAT, on another of its addresses): that address works for the target.
    const host = c.req.header('host');
    const base = (a: Snapshot['appliances'][number]) => (a.id === deps.self && host && /^[A-Za-z0-9.-]+(:\d{1,5})?$|^\[[0-9a-fA-F:.]+\](:\d{1,5})?$/.test(host) ? `http://${host}` : deps.baseUrl(a));
    const now = Date.now();
    addedRecently = addedRecently.filter((t) => now - t < 60_000);
    const input: Parameters<typeof planBoot>[0] = {
      snapshot,
      autoAdded: deps.autoAdded(),
      mayAutoAdd: deps.autoAdded().length < MAX_LOCAL_AUTO_ADDS && addedRecently.length < MAX_AUTO_ADDS_PER_MINUTE,
      mac,
      clientIp,
      self: deps.self,
      state: deps.state,
      preferred: deps.preferred?.(mac) ?? null,
      diskUrl: (a, vdiskId, n) => `${base(a)}/vdisks/${vdiskId}/${n}?mac=${mac.replace(/:/g, '-')}`,
      selfUrl: c.req.url,
      ...(deps.nbd
        ? {
            nbdExport: (claim: { mac: string; vdiskId: string; version: number; mode: StreamMode }) => deps.nbd!.exportName({ ...claim, address: clientIp }),
            // base() is http://<host>:<port> with an IPv6 host in brackets: the host as it is, without URL parsing (zone ids).
            nbdServer: (a: Snapshot['appliances'][number]) => `${hostOf(base(a))}:${deps.nbd!.port}`,
          }
        : {}),
      ...(deps.linux
        ? {
            linux: (vdiskId: string, n: number) => deps.linux!.cached(vdiskId, n),
            bootFileUrl: (a: Snapshot['appliances'][number], vdiskId: string, n: number, f: 'kernel' | 'initrd') => `${base(a)}/vdisks/${vdiskId}/${n}/${f}?mac=${mac.replace(/:/g, '-')}`,
          }
        : {}),
    };
    let r = planBoot(input);
    // Whether a version is a Linux vDisk is read from this appliance's verified copy, once; the first boot of it waits for that.
    if (deps.linux && r.plan.kind === 'vdisk' && r.event.vdiskId && r.event.version !== null && deps.linux.cached(r.event.vdiskId, r.event.version) === undefined) {
      const { vdiskId, version, streamingApplianceId } = r.event;
      const image = await deps.linux.image(vdiskId, version);
      if (image) r = planBoot(input);
      else if (deps.state(deps.self).holds?.(vdiskId, version) !== 'verified' && streamingApplianceId && streamingApplianceId !== deps.self) {
        // Not held here (still syncing): the appliance that streams it can tell a Linux vDisk from another. Ask it.
        const to = snapshot.appliances.find((a) => a.id === streamingApplianceId);
        if (to) r = { ...r, plan: { kind: 'wait', message: `this appliance does not hold vDisk version ${version} yet: asking ${to.name}, which streams it`, retryUrl: `${deps.baseUrl(to)}/boot/${mac.replace(/:/g, '-')}.ipxe`, seconds: 1 } };
      }
    }
    if (r.added) {
      addedRecently.push(now);
      await deps.recordAutoAdd(r.added);
      deps.log('info', 'target added automatically at its first boot', { mac, name: r.added.name, collectionId: r.added.collectionId });
    }
    if (r.event.outcome === 'vdisk' && r.event.vdiskId && r.event.streamingApplianceId) deps.assigned?.(mac, clientIp, r.event.vdiskId, r.event.streamingApplianceId);
    if (r.plan.kind === 'vdisk' && r.plan.nbd && deps.nbd)
      deps.nbd.issued(mac, r.plan.nbd.exportName, clientIp, `${r.plan.target.name}: vDisk ${r.plan.vdisk.name} version ${r.plan.version} (${r.plan.nbd.mode})`);
    // Each boot handed an NBD export is a boot of its own (its id is new); other answers repeat while a target retries.
    const bootId = r.plan.kind === 'vdisk' && r.plan.nbd ? bootIdOf(r.plan.nbd.exportName) : null;
    if (shouldRecord(mac, `${r.event.outcome}|${r.event.vdiskId}|${r.event.version}|${r.event.streamingApplianceId}|${bootId}`)) await deps.recordBoot({ ...r.event, mac, bootId });
    deps.log(r.event.outcome === 'refused' ? 'warn' : 'info', 'boot script', { mac, clientIp, arch: c.req.query('arch') ?? null, outcome: r.event.outcome, vdiskId: r.event.vdiskId, version: r.event.version, appliance: r.event.streamingApplianceId, message: r.event.message });
    return c.body(bootScript(r.plan, snapshot.site.bootstrap), 200, text);
  });

  // iPXE binaries for firmware that boots over HTTP (UEFI HTTP Boot): files of the bootstrap folder only.
  app.get('/bootstrap/:file', async (c) => {
    const file = c.req.param('file');
    const names = await readdir(deps.bootstrapDir).catch(() => [] as string[]);
    if (!names.includes(file) || !/^[A-Za-z0-9._-]+$/.test(file)) return c.body('no such bootstrap file\n', 404, text);
    // Streamed, not read whole: a few hundred UEFI HTTP Boot clients at once must not cost a file each in memory.
    const path = join(deps.bootstrapDir, file);
    const info = await stat(path).catch(() => null);
    if (!info?.isFile()) return c.body('no such bootstrap file\n', 404, text);
    return c.body(Readable.toWeb(createReadStream(path)) as ReadableStream, 200, { 'content-type': 'application/octet-stream', 'content-length': String(info.size) });
  });

  return app;
}
