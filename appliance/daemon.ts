/**
 * The appliance daemon: composes the snapshot store, the vDisk cache, the
 * outbox and the HTTP service, and runs three loops (snapshot refresh, sync,
 * heartbeat + outbox delivery). Each loop ends when `stop()` aborts it.
 *
 * Offline first: the cached snapshot is used at once on start; the cloud is
 * only asked for changes. While the control plane is unreachable every loop
 * retries with backoff and jitter, and nothing on the serving path waits for it.
 */
import { randomBytes } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { createServer, type Server } from 'node:http';
import { getRequestListener } from '@hono/node-server';
import { Hono } from 'hono';
import { API_VERSION } from '../functions/app.js';
import {
  inventoryDigest,
  neededVersions,
  newEventId,
  serviceAddress,
  type ApplianceEvent,
  type ApplianceStatus,
  type InventoryEntry,
  type Snapshot,
} from '../model/index.js';
import { retryDelay, sleep } from './backoff.js';
import type { ChunkSource } from './cache/chunk-source.js';
import { peerRoutes, peerSource } from './cache/peer-source.js';
import { presignedSource } from './cache/presigned-source.js';
import { openVdiskCache, type VdiskCache } from './cache/vdisk-cache.js';
import type { ApplianceConfig } from './config.js';
import { ControlClient, Refused, Unreachable } from './control-client.js';
import type { LogFn } from './log.js';
import { PROMETHEUS_CONTENT_TYPE, renderMetrics, type Metric } from './metrics.js';
import { Outbox } from './outbox.js';
import { AutoAdded } from './boot/auto-added.js';
import type { ApplianceState } from './boot/plan.js';
import { linuxImages } from './boot/linux-images.js';
import { bootRoutes } from './boot/routes.js';
import { handleDisk } from './http/disk.js';
import { Sessions } from './sessions.js';
import type { ProxyConfig } from './dhcp/proxy.js';
import { startProxyDhcp } from './dhcp/server.js';
import { startTftpServer } from './tftp/server.js';
import { SnapshotRefused, SnapshotStore, type CachedSnapshot } from './snapshot-store.js';
import { bootTime, newBootId, newerBoot, signExportName, verifyExportName } from './nbd/export-name.js';
import { bootfarmExports } from './nbd/exports.js';
import { startNbdServer, type NbdServer } from './nbd/server.js';
import { WriteCaches } from './write-cache/lifecycle.js';
import { startHa, type Ha, type HaStatus } from './ha/index.js';
import type { TftpServer } from './tftp/server.js';

/** How long a peer that failed a chunk request is left out of the sources. */
export const PEER_RETRY_MS = 30_000;
/** A streaming session with no read for this long is over. */
export const SESSION_IDLE_MS = 60_000;
/** Debian's ipxe links ipxe.efi and ipxe.lkrn to /boot and ROMs to qemu/: the TFTP server may follow links there. */
const BOOTSTRAP_SYMLINK_TARGETS = ['/boot', '/usr/lib/ipxe'];

export interface ApplianceDeps {
  config: ApplianceConfig;
  credential: string;
  dataDir: string;
  log: LogFn;
  clock?: () => Date;
  random?: () => number;
  fetchImpl?: typeof fetch;
}

export interface ApplianceHealth {
  status: 'ok' | 'degraded' | 'starting';
  applianceId: string;
  name: string;
  siteId: string;
  softwareVersion: string;
  startedAt: string;
  snapshot: { revision: number; generatedAt: string; source: 'cache' | 'control-plane' } | null;
  controlPlane: { reachable: boolean; credentialRefused: boolean; offlineSince: string | null; offlineSeconds: number; lastContact: string | null; lastError: string | null };
  /** `problems`: versions the cache will not fetch, and why (quota, refused manifest), in words for an admin. */
  cache: { versions: InventoryEntry[]; bytes: number; syncing: boolean; problems: string[] };
  outbox: { pending: number };
  sessions: number;
  /** Peers, floating addresses held and waited for (null when HA is off in the config). */
  ha: HaStatus | null;
}

export interface ApplianceHandle {
  /** Base URL of the HTTP service (health, metrics, peers). */
  url: string;
  health(): Promise<ApplianceHealth>;
  /** Queues an event durably (boot, auto-add, notice); delivered when the cloud answers. */
  emit(event: Omit<ApplianceEvent, 'id' | 'at'> & Partial<Pick<ApplianceEvent, 'id' | 'at'>>): Promise<ApplianceEvent>;
  /** The snapshot in use, or null before the first one. */
  snapshot(): Snapshot | null;
  cache: VdiskCache;
  /** Streaming sessions per target and vDisk (HTTP; NBD with issue 6). */
  sessions: Sessions;
  /** Resolves when a sync pass has finished with nothing left to fetch. */
  synced(): Promise<void>;
  /** The NBD service (null when off in the config). */
  nbd: NbdServer | null;
  writeCaches: WriteCaches;
  /** Site high availability (null when off in the config). */
  ha: Ha | null;
  stop(): Promise<void>;
}

export async function startAppliance(deps: ApplianceDeps): Promise<ApplianceHandle> {
  const { config, log, dataDir } = deps;
  const clock = deps.clock ?? (() => new Date());
  const random = deps.random ?? Math.random;
  const stopping = new AbortController();
  const policy = { minMs: config.intervals.retryMinMs, maxMs: config.intervals.retryMaxMs };
  const startedAt = clock();

  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const keys = () => config.signingKeys;
  const client = new ControlClient({
    apiUrl: config.apiUrl,
    credential: deps.credential,
    applianceId: config.applianceId,
    siteId: config.siteId,
    timeoutMs: config.intervals.requestTimeoutMs,
    ...(deps.fetchImpl ? { fetchImpl: deps.fetchImpl } : {}),
    userAgent: `bootfarm-appliance/${API_VERSION}`,
  });
  const store = new SnapshotStore(dataDir, config.siteId, keys, log);
  const outbox = await Outbox.open(join(dataDir, 'outbox'), log);

  // ---- connectivity: one place decides "offline since"
  const link = {
    reachable: false,
    offlineSince: null as Date | null,
    /** The start of the last outage, until a heartbeat has told the control plane about it. */
    unreportedOutage: null as Date | null,
    lastContact: null as Date | null,
    lastError: null as string | null,
    /** The control plane refuses our credential (revoked, appliance deleted): re-enrolment needed. */
    credentialRefused: false,
  };
  const markOnline = () => {
    if (link.offlineSince) {
      const seconds = Math.round((clock().getTime() - link.offlineSince.getTime()) / 1000);
      log('info', 'control plane reachable again', { offlineSince: link.offlineSince.toISOString(), offlineSeconds: seconds });
      void emit({ type: 'notice', data: { level: 'info', message: `control plane reachable again after ${seconds} s offline (since ${link.offlineSince.toISOString()})` } }).catch(() => undefined);
    }
    link.reachable = true;
    link.offlineSince = null;
    link.lastContact = clock();
    link.lastError = null;
    link.credentialRefused = false;
  };
  const markOffline = (e: Error) => {
    link.lastError = e.message;
    if (link.reachable || !link.offlineSince) {
      link.offlineSince = clock();
      link.unreportedOutage ??= link.offlineSince;
      log('warn', 'control plane unreachable: serving from the cached snapshot', { reason: e.message, revision: current?.snapshot.revision ?? null });
      void emit({ type: 'notice', data: { level: 'warn', message: `control plane unreachable since ${link.offlineSince.toISOString()}: ${e.message}` } }).catch(() => undefined);
    }
    link.reachable = false;
  };
  const markRefused = (e: Refused, what: string) => {
    link.lastError = e.message;
    if (e.status === 401) {
      if (!link.credentialRefused) log('error', 'the control plane no longer accepts this appliance credential (revoked, or the appliance was deleted): serving from the cached snapshot; re-enrol with bootfarm appliance install --force', { reason: e.message });
      link.credentialRefused = true;
    } else log('error', `control plane refused ${what}`, { reason: e.message });
  };
  const offlineSeconds = () => (link.offlineSince ? Math.max(0, (clock().getTime() - link.offlineSince.getTime()) / 1000) : 0);

  async function emit(partial: Omit<ApplianceEvent, 'id' | 'at'> & Partial<Pick<ApplianceEvent, 'id' | 'at'>>): Promise<ApplianceEvent> {
    const now = clock();
    const event = { ...partial, id: partial.id ?? newEventId(now, randomBytes(8)), at: partial.at ?? now.toISOString() } as ApplianceEvent;
    await outbox.add(event);
    poke('outbox');
    return event;
  }

  // ---- the snapshot in use
  let current: (CachedSnapshot & { source: 'cache' | 'control-plane' }) | null = null;
  const cached = await store.load();
  if (cached) {
    current = { ...cached, source: 'cache' };
    log('info', 'using cached snapshot', { revision: cached.snapshot.revision, generatedAt: cached.snapshot.generatedAt });
  } else log('info', 'no cached snapshot yet: waiting for the control plane');

  // ---- the vDisk cache, fed from peers first, then S3
  const peerUrl = (a: Snapshot['appliances'][number]) => `http://${a.managementAddress.includes(':') ? `[${a.managementAddress}]` : a.managementAddress}:${config.http.port}`;
  const s3 = presignedSource({ getUrls: async (hashes, owner) => (await client.chunkUrls(owner.vdiskId, owner.number, hashes)).urls });
  // A peer that failed is skipped for a while: a dead appliance must not cost every chunk a timeout.
  // (With site HA, a peer not heard within the site's timeout is skipped too.)
  const peerDownUntil = new Map<string, number>();
  const guarded = (id: string, src: ChunkSource): ChunkSource => ({
    name: src.name,
    async fetch(hash, signal, owner) {
      if ((peerDownUntil.get(id) ?? 0) > Date.now() || ha?.state(id).up === false) return null;
      try {
        return await src.fetch(hash, signal, owner);
      } catch (e) {
        if (!signal?.aborted) peerDownUntil.set(id, Date.now() + PEER_RETRY_MS);
        throw e;
      }
    },
  });
  const sources = (): ChunkSource[] => {
    const snap = current?.snapshot;
    const peers = (snap?.appliances ?? [])
      .filter((a) => a.id !== config.applianceId)
      .map((a) => guarded(a.id, peerSource({ name: `peer:${a.name}`, baseUrl: peerUrl(a), secret: snap!.peerSecret, timeoutMs: 3000 })));
    return [...peers, s3];
  };
  const cache = await openVdiskCache({
    dir: join(dataDir, 'cache'),
    keys,
    sources,
    getManifest: (vdiskId, number, signal) => client.manifest(vdiskId, number, signal),
    quotaBytes: (storeId) => {
      const st = current?.snapshot.stores.find((s) => s.id === storeId);
      if (!st) return null;
      return st.cacheQuota.perSite[config.siteId] ?? st.cacheQuota.defaultBytes;
    },
    concurrency: config.sync.concurrency,
    log,
  });

  // Streaming sessions (HTTP now, NBD in issue 6): the load the balancer weighs.
  const sessions = new Sessions(SESSION_IDLE_MS, Date.now, (s) => log('info', 'disk session opened', { client: s.client, vdiskId: s.vdiskId, version: s.number, protocol: s.protocol }));
  const autoAdded = await AutoAdded.open(dataDir, log);

  // ---- HTTP service: health, metrics, peer chunks, boot scripts, bootstrap files, disks
  const http = new Hono();
  http.get('/healthz', async (c) => {
    const h = await health();
    return c.json(h, h.snapshot ? 200 : 503);
  });
  http.get('/metrics', async (c) => c.body(renderMetrics(await metrics()), 200, { 'content-type': PROMETHEUS_CONTENT_TYPE }));
  http.route('/peer', peerRoutes(cache, () => current?.snapshot.peerSecret));
  let port = config.http.port;
  const baseUrl = (a: Snapshot['appliances'][number]) => {
    const host = serviceAddress(a);
    return `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
  };
  const selfState: ApplianceState = {
    up: true,
    holds: (vdiskId, number) => cache.inventory().find((e) => e.vdiskId === vdiskId && e.number === number)?.state ?? null,
    sessionsFor: (vdiskId) => sessions.countFor(vdiskId),
    sessionsTotal: () => sessions.total(),
  };
  // Linux vDisks carry their kernel and initramfs: which versions are such is read from the verified cache, once each.
  const linux = linuxImages({ cache, log });
  // ---- NBD: the running OS's disk, read-only or through a write cache on this appliance
  let nbd: NbdServer | null = null;
  const writeCaches = await WriteCaches.open({
    dir: join(dataDir, 'write-cache'),
    log,
    // A newer boot of the target: its older boot's connections to that vDisk are dead (the machine restarted).
    supersede: (_mode, mac, vdiskId, newer) =>
      nbd?.disconnect((name) => {
        const secret = current?.snapshot.peerSecret;
        const c = secret ? verifyExportName(name, secret) : null;
        return !!c && c.mac === mac && c.vdiskId === vdiskId && newerBoot(newer, c.bootId);
      }, 'the target booted again'),
  });
  let ha: Ha | null = null;
  const exportsProvider = bootfarmExports({ snapshot: () => current?.snapshot ?? null, autoAdded: () => autoAdded.targets(), cache, sessions, writeCaches, log, self: config.applianceId, movedAway: (mac) => ha?.movedAway(mac) ?? null,
    attached: (claim) => {
      const started = bootTime(claim.bootId);
      const data = { mac: claim.mac, vdiskId: claim.vdiskId, version: claim.version, bootId: claim.bootId, bootStartedAt: new Date(started).toISOString(), durationMs: Math.max(0, Math.min(86_400_000, Date.now() - started)) }; // the boot id's clock (Date.now, as newBootId)
      emit({ type: 'boot-completed', data }).catch((e) => log('warn', 'boot completion not recorded', { mac: claim.mac, reason: (e as Error).message }));
    },
  });
  if (config.nbd.enabled) nbd = await startNbdServer({ host: config.nbd.host, port: config.nbd.port, exports: exportsProvider, log });

  // With HA off in the config, peers' load and inventory are unknown: they are failover paths only.
  const unknownPeer: ApplianceState = { up: null, holds: null, sessionsFor: () => 0, sessionsTotal: () => 0 };
  http.route(
    '/',
    bootRoutes({
      snapshot: () => current?.snapshot ?? null,
      autoAdded: () => autoAdded.targets(),
      recordAutoAdd: async (t) => {
        await autoAdded.add(t);
        await emit({ type: 'target-auto-added', data: { target: t } });
      },
      recordBoot: async (e) => {
        await emit({ type: 'boot', data: { mac: e.mac, targetId: e.targetId, outcome: e.outcome, vdiskId: e.vdiskId, version: e.version, streamingApplianceId: e.streamingApplianceId, message: e.message.slice(0, 500), ...(e.bootId ? { bootId: e.bootId } : {}) } });
      },
      self: config.applianceId,
      state: (id) => (ha ? ha.state(id) : id === config.applianceId ? selfState : unknownPeer),
      assigned: (mac, clientIp, vdiskId, applianceId) => ha?.assign(mac, clientIp, vdiskId, applianceId),
      preferred: (mac) => ha?.assignedTo(mac) ?? null,
      baseUrl,
      bootstrapDir: config.bootstrapDir,
      log,
      linux,
      ...(nbd
        ? {
            nbd: {
              port: nbd.port,
              exportName: (claim) => signExportName({ ...claim, bootId: newBootId(Date.now(), randomBytes(4)) }, current!.snapshot.peerSecret),
              // Nothing is thrown away here: anyone may ask for a MAC's script; a write cache is replaced only when the newer boot connects.
              issued: (mac, name, clientIp, description) => exportsProvider.recordBoot(mac, name, clientIp, description),
            },
          }
        : {}),
    }),
  );
  const honoListener = getRequestListener(http.fetch);
  const server: Server = createServer((req, res) => {
    if (!handleDisk({ cache, sessions, log, linux }, req, res)) void honoListener(req, res);
  });
  // iPXE keeps its connection to the disk open between reads.
  server.keepAliveTimeout = 65_000;
  port = await new Promise<number>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => reject(e.code === 'EADDRINUSE' ? new Error(`http.port ${config.http.port} on ${config.http.host} is in use`) : e));
    server.listen(config.http.port, config.http.host, () => resolve((server.address() as AddressInfo).port));
  });
  // ---- boot services: ProxyDHCP (only while the site has it on) and TFTP for the first stage
  const selfInSnapshot = () => current?.snapshot.appliances.find((a) => a.id === config.applianceId);
  const proxyConfig = (): ProxyConfig | null => {
    const snap = current?.snapshot;
    const self = selfInSnapshot();
    if (!snap?.site.proxyDhcp.enabled || !self) return null;
    const serverIp = serviceAddress(self);
    // A floating address this appliance does not hold (yet, or a peer still does): the site's other appliances answer.
    if (self.floatingAddress && config.ha.enabled && !ha?.held().has(self.floatingAddress)) return null;
    const base = `http://${serverIp}:${port}`;
    const files = snap.site.bootstrap.files;
    return { serverIp, scriptUrl: `${base}/boot.ipxe`, httpBootUrl: `${base}/bootstrap/ipxe.efi`, files: { bios: files.bios, uefiX64: files.uefiX64, arm64: files.arm64 } };
  };
  // TFTP answers from its transfer socket: bound to 0.0.0.0 the kernel would pick the interface's first
  // address as source, and firmware (EDK2) drops DATA that does not come from the server it asked.
  // With a floating address, TFTP listens on each floating address held (its own and adopted ones), as they come and go.
  const selfAtStart = selfInSnapshot();
  const tftpHost = config.boot.tftp.host === '0.0.0.0' && selfAtStart ? (selfAtStart.floatingAddress ? null : serviceAddress(selfAtStart)) : config.boot.tftp.host;
  const startTftp = (host: string) => startTftpServer({ host, port: config.boot.tftp.port, root: () => config.bootstrapDir, symlinkTargets: BOOTSTRAP_SYMLINK_TARGETS, log });
  const tftp = config.boot.tftp.enabled && tftpHost ? await startTftp(tftpHost) : null;
  const floatingTftp = new Map<string, Promise<TftpServer | null>>();
  let lastHeld = new Set<string>();
  const syncFloatingTftp = (held: ReadonlySet<string>) => {
    // NBD clients connected on an address this appliance let go of (handed back, link down) reconnect to its holder now.
    for (const a of lastHeld) if (!held.has(a)) nbd?.disconnect((_name, client) => client.localAddress === a, `floating address ${a} handed over`);
    lastHeld = new Set(held);
    if (!config.boot.tftp.enabled || tftpHost) return;
    for (const [a, srv] of floatingTftp)
      if (!held.has(a)) {
        floatingTftp.delete(a);
        void srv.then((x) => x?.close());
      }
    for (const a of held)
      if (!floatingTftp.has(a))
        floatingTftp.set(
          a,
          startTftp(a).catch((e: Error) => {
            log('error', 'tftp cannot listen on a floating address: trying again next round', { address: a, reason: e.message });
            floatingTftp.delete(a);
            return null;
          }),
        );
  };
  const tftpAll = async () => [...(tftp ? [tftp] : []), ...((await Promise.all(floatingTftp.values())).filter(Boolean) as TftpServer[])];
  const dhcp = config.boot.proxyDhcp.enabled
    ? await startProxyDhcp({ bindAddress: config.boot.proxyDhcp.bindAddress, ports: { dhcp: config.boot.proxyDhcp.port, pxe: config.boot.proxyDhcp.pxePort }, config: proxyConfig, log }).catch(async (e) => {
        await Promise.all([tftp?.close(), nbd?.close()]);
        throw e;
      })
    : null;

  // ---- site high availability: peers on the LAN, floating addresses, rebalance
  if (config.ha.enabled)
    ha = await startHa({
      config: config.ha,
      applianceId: config.applianceId,
      siteId: config.siteId,
      snapshot: () => current?.snapshot ?? null,
      inventory: () => cache.inventory(),
      sessions: () => sessions.list(),
      statePath: join(dataDir, 'floating-addresses'),
      log,
      disconnect: (mac, reason) =>
        nbd?.disconnect((name) => {
          const secret = current?.snapshot.peerSecret;
          const c = secret ? verifyExportName(name, secret) : null;
          return !!c && c.mac === mac && c.mode === 'read-only';
        }, reason) ?? 0,
      onHeld: syncFloatingTftp,
    }).catch(async (e) => {
      await Promise.all([dhcp?.close(), tftp?.close(), nbd?.close()]);
      throw e;
    });

  for (const [what, host] of [['http.host', config.http.host], ['nbd.host', config.nbd.enabled ? config.nbd.host : '0.0.0.0']] as const)
    if (selfAtStart?.floatingAddress && host !== '0.0.0.0' && host !== '::' && host !== selfAtStart.floatingAddress)
      log('error', `${what} is ${host}: targets reach this appliance on its floating address ${selfAtStart.floatingAddress} and peers' adopted ones; listen on 0.0.0.0`, {});

  const url = `http://${config.http.host.includes(':') ? `[${config.http.host}]` : config.http.host}:${port}`;
  log('info', 'appliance listening', { url, applianceId: config.applianceId, siteId: config.siteId });

  function cacheProblems(): string[] {
    const st = cache.status();
    return [
      ...st.quotaExceededVersions.map((q) => `version ${q.number} of vDisk ${q.vdiskId} needs ${q.needBytes} bytes, more than the ${q.quotaBytes}-byte cache quota of store ${q.storeId} allows: not cached`),
      ...st.refusedVersions.map((r) => `version ${r.number} of vDisk ${r.vdiskId} refused: ${r.reason}`),
    ];
  }

  async function health(): Promise<ApplianceHealth> {
    const inv = cache.inventory();
    const st = cache.status();
    return {
      status: !current ? 'starting' : link.reachable && !link.credentialRefused ? 'ok' : 'degraded',
      applianceId: config.applianceId,
      name: config.name,
      siteId: config.siteId,
      softwareVersion: API_VERSION,
      startedAt: startedAt.toISOString(),
      snapshot: current ? { revision: current.snapshot.revision, generatedAt: current.snapshot.generatedAt, source: current.source } : null,
      controlPlane: { reachable: link.reachable, credentialRefused: link.credentialRefused, offlineSince: link.offlineSince?.toISOString() ?? null, offlineSeconds: Math.round(offlineSeconds()), lastContact: link.lastContact?.toISOString() ?? null, lastError: link.lastError },
      cache: { versions: inv, bytes: st.bytesHeld, syncing: st.syncInProgress, problems: cacheProblems() },
      outbox: { pending: await outbox.count() },
      sessions: sessions.total(),
      ha: ha?.status() ?? null,
    };
  }

  async function metrics(): Promise<Metric[]> {
    const st = cache.status();
    const inv = cache.inventory();
    const g = (name: string, help: string, value: number, labels?: Record<string, string>): Metric => ({ name, help, type: 'gauge', samples: [{ value, ...(labels ? { labels } : {}) }] });
    return [
      g('bootfarm_appliance_info', 'Appliance identity (value is always 1)', 1, { appliance: config.name, appliance_id: config.applianceId, site_id: config.siteId, version: API_VERSION }),
      g('bootfarm_snapshot_revision', 'Farm revision of the snapshot in use (-1: none yet)', current?.snapshot.revision ?? -1),
      g('bootfarm_control_plane_reachable', '1 while the control plane answers', link.reachable ? 1 : 0),
      g('bootfarm_offline_seconds', 'Seconds since the control plane was last reachable (0 while it is)', Math.round(offlineSeconds())),
      { name: 'bootfarm_cache_bytes', help: 'Bytes of verified chunks held, per store', type: 'gauge', samples: Object.entries(st.bytesHeldByStore).map(([store, value]) => ({ labels: { store }, value })) },
      g('bootfarm_cache_bytes_total', 'Bytes of verified chunks held', st.bytesHeld),
      {
        name: 'bootfarm_sync_percent',
        help: 'Share of each needed version held and verified',
        type: 'gauge',
        samples: inv.map((e) => ({ labels: { vdisk: e.vdiskId, version: String(e.number), state: e.state }, value: e.state === 'verified' ? 100 : (e.percent ?? 0) })),
      },
      { name: 'bootfarm_chunks_fetched_total', help: 'Chunks fetched and verified, by source', type: 'counter', samples: Object.entries(st.fetchedBySource).map(([source, f]) => ({ labels: { source }, value: f.chunks })) },
      { name: 'bootfarm_chunk_bytes_fetched_total', help: 'Bytes of chunks fetched and verified, by source', type: 'counter', samples: Object.entries(st.fetchedBySource).map(([source, f]) => ({ labels: { source }, value: f.bytes })) },
      { name: 'bootfarm_chunk_verify_failures_total', help: 'Chunks a source served with the wrong content', type: 'counter', samples: [{ value: st.verifyFailures }] },
      g('bootfarm_sessions', 'Open streaming sessions (distinct targets)', sessions.total()),
      { name: 'bootfarm_disk_bytes_served_total', help: 'Disk bytes sent to targets, per vDisk', type: 'counter', samples: [...sessions.bytesByVdisk].map(([vdisk, value]) => ({ labels: { vdisk }, value })) },
      g('bootfarm_outbox_pending', 'Events waiting for the control plane', await outbox.count()),
      ...(dhcp
        ? [{ name: 'bootfarm_proxydhcp_packets_total', help: 'ProxyDHCP datagrams by what became of them', type: 'counter' as const, samples: Object.entries(dhcp.stats()).filter(([k]) => k !== 'received').map(([outcome, value]) => ({ labels: { outcome }, value })) }]
        : []),
      ...(nbd
        ? (() => {
            const st = nbd.stats();
            return [
              g('bootfarm_nbd_connections', 'Open NBD connections', st.connections),
              { name: 'bootfarm_nbd_requests_total', help: 'NBD requests by type', type: 'counter' as const, samples: Object.entries(st.requests).map(([type, value]) => ({ labels: { type }, value })) },
              { name: 'bootfarm_nbd_errors_total', help: 'NBD error replies by errno', type: 'counter' as const, samples: Object.entries(st.errors).map(([errno, value]) => ({ labels: { errno }, value })) },
              { name: 'bootfarm_nbd_refused_total', help: 'NBD export names refused', type: 'counter' as const, samples: [{ value: st.refused }] },
              { name: 'bootfarm_nbd_protocol_errors_total', help: 'NBD connections closed for breaking the protocol', type: 'counter' as const, samples: [{ value: st.protocolErrors }] },
              { name: 'bootfarm_write_cache_bytes', help: 'Bytes written to each open write cache', type: 'gauge' as const, samples: writeCaches.usage().map((u) => ({ labels: { mode: u.mode, mac: u.mac }, value: u.usedBytes })) },
            ];
          })()
        : []),
      ...(await (async () => {
        const all = await tftpAll();
        if (!all.length) return [];
        const stats = all.map((t) => t.stats());
        const sum = (k: 'active' | 'started' | 'completed' | 'failed' | 'aborted' | 'refused' | 'retransmits' | 'dataBytes') => stats.reduce((n, x) => n + x[k], 0);
        return [
          g('bootfarm_tftp_transfers_active', 'TFTP transfers in progress', sum('active')),
          { name: 'bootfarm_tftp_transfers', help: 'TFTP read requests by what became of them', type: 'counter' as const, samples: (['started', 'completed', 'failed', 'aborted', 'refused'] as const).map((state) => ({ labels: { state }, value: sum(state) })) },
          { name: 'bootfarm_tftp_retransmits_total', help: 'TFTP packets sent again after a timeout', type: 'counter' as const, samples: [{ value: sum('retransmits') }] },
          { name: 'bootfarm_tftp_bytes_total', help: 'TFTP data bytes sent', type: 'counter' as const, samples: [{ value: sum('dataBytes') }] },
        ];
      })()),
      ...(ha
        ? (() => {
            const st = ha.status();
            return [
              { name: 'bootfarm_ha_peer_up', help: '1 while a peer of the site is heard within the peer timeout', type: 'gauge' as const, samples: st.peers.map((p) => ({ labels: { peer: p.name }, value: p.live ? 1 : 0 })) },
              { name: 'bootfarm_ha_floating_addresses', help: 'Floating addresses this appliance answers on (its own and adopted)', type: 'gauge' as const, samples: [{ value: st.held.length }] },
              g('bootfarm_ha_link_up', '1 while the LAN link of the floating addresses has carrier', st.linkUp ? 1 : 0),
              { name: 'bootfarm_rebalance_moves_total', help: 'Targets this appliance moved away by rebalance', type: 'counter' as const, samples: [{ value: st.moves }] },
            ];
          })()
        : []),
    ];
  }

  // ---- loops
  // Every loop sleeps through `pause`, which ends early when the daemon stops or when something
  // the loop waits for happens (`poke`): a new snapshot wakes the sync, a new event the outbox.
  const pokes = { sync: new Set<() => void>(), outbox: new Set<() => void>() };
  const poke = (what: keyof typeof pokes) => {
    for (const wake of pokes[what]) wake();
  };
  const pause = (ms: number, wakeOn?: keyof typeof pokes) =>
    new Promise<void>((resolve) => {
      if (stopping.signal.aborted) return resolve();
      const done = () => {
        clearTimeout(timer);
        stopping.signal.removeEventListener('abort', done);
        if (wakeOn) pokes[wakeOn].delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      stopping.signal.addEventListener('abort', done, { once: true });
      if (wakeOn) pokes[wakeOn].add(done);
    });
  /** An interval with ±10 % jitter, so a site's appliances started together do not stay in step. */
  const jittered = (ms: number) => Math.round(ms * (0.9 + 0.2 * random()));

  let syncWaiters: (() => void)[] = [];
  let needSync = true;

  async function applySnapshot(next: CachedSnapshot, source: 'cache' | 'control-plane') {
    current = { ...next, source };
    await autoAdded.prune(next.snapshot).catch((e) => log('error', 'cannot update the auto-added targets file', { reason: (e as Error).message }));
    await cache.setNeeded(neededVersions(next.snapshot));
    const local = autoAdded.targets();
    await writeCaches
      .sweep((mac, vdiskId) => [...next.snapshot.targets, ...local].some((t) => t.mac === mac && t.assignments.some((a) => a.vdiskId === vdiskId)))
      .catch((e: Error) => log('error', 'cannot sweep the write caches', { reason: e.message }));
    needSync = true;
    poke('sync');
  }

  async function refreshLoop() {
    let attempt = 0;
    while (!stopping.signal.aborted) {
      let delay = jittered(config.intervals.pollMs);
      try {
        const r = await client.snapshot(current?.etag ?? null, stopping.signal);
        markOnline();
        if (r.changed) {
          const snapshot = store.check(r.signed, current?.snapshot.revision ?? null);
          try {
            await applySnapshot(await store.save(snapshot, r.signed, r.etag), 'control-plane');
          } catch (e) {
            // A disk that cannot take the file must not keep a good snapshot from being used.
            log('error', 'cannot write the snapshot to disk: using it from memory; it will not survive a restart', { reason: (e as Error).message, path: store.path });
            await applySnapshot({ snapshot, signed: r.signed as CachedSnapshot['signed'], etag: r.etag }, 'control-plane');
          }
          log('info', 'snapshot updated', { revision: snapshot.revision });
        } else if (current) current.source = 'control-plane';
        attempt = 0;
      } catch (e) {
        if (stopping.signal.aborted) break;
        if (e instanceof SnapshotRefused) log('error', 'snapshot from the control plane refused: keeping the one in use', { reason: e.message, revision: current?.snapshot.revision ?? null });
        else if (e instanceof Unreachable) markOffline(e);
        else if (e instanceof Refused) markRefused(e, 'the snapshot request');
        else log('error', 'snapshot refresh failed', { reason: (e as Error).message });
        // Failures never poll faster than the normal interval would, and back off from there.
        delay = Math.max(e instanceof Unreachable ? 0 : config.intervals.pollMs, retryDelay(attempt++, policy, random()));
      }
      await pause(delay);
    }
  }

  async function syncLoop() {
    let attempt = 0;
    while (!stopping.signal.aborted) {
      if (!needSync) {
        await pause(config.intervals.pollMs, 'sync');
        continue;
      }
      needSync = false;
      try {
        await cache.sync(stopping.signal);
      } catch (e) {
        if (!stopping.signal.aborted) log('warn', 'sync pass failed', { reason: (e as Error).message });
      }
      if (stopping.signal.aborted) break;
      const incomplete = cache.inventory().some((e) => e.state !== 'verified');
      if (incomplete) {
        // Something could not be fetched (cloud and peers unreachable): try again later, or as soon as a new snapshot comes.
        needSync = true;
        await pause(retryDelay(attempt++, policy, random()), 'sync');
      } else {
        attempt = 0;
        const waiters = syncWaiters;
        syncWaiters = [];
        for (const w of waiters) w();
      }
    }
  }

  /** What the control plane last got of the inventory: entries with whole percents, so progress is reported as it moves. */
  const inventoryReport = (inv: InventoryEntry[]) => JSON.stringify(inv.map((e) => [e.vdiskId, e.number, e.contentHash, e.state, Math.floor(e.percent ?? 0)]));

  async function heartbeatLoop() {
    let attempt = 0;
    let reported: string | null = null;
    while (!stopping.signal.aborted) {
      let delay = jittered(config.intervals.heartbeatMs);
      try {
        const inv = cache.inventory();
        const outage = link.offlineSince ?? link.unreportedOutage;
        const status: ApplianceStatus = {
          softwareVersion: API_VERSION,
          startedAt: startedAt.toISOString(),
          load: loadavg()[0] ?? 0,
          sessions: sessions.total(),
          snapshotRevision: current?.snapshot.revision ?? null,
          inventoryDigest: inventoryDigest(inv),
          cacheBytes: cache.status().bytesHeld,
          outboxPending: await outbox.count(),
          offlineSince: outage?.toISOString() ?? null,
          sessionsByVdisk: sessions.countsByVdisk(),
          bytesServed: sessions.bytesTotal(),
        };
        const report = inventoryReport(inv);
        await client.reportStatus({ status, ...(report !== reported ? { inventory: { reportedAt: clock().toISOString(), versions: inv } } : {}) }, stopping.signal);
        reported = report;
        if (link.unreportedOutage === outage) link.unreportedOutage = null;
        markOnline();
        poke('outbox');
        attempt = 0;
      } catch (e) {
        if (stopping.signal.aborted) break;
        if (e instanceof Unreachable) markOffline(e);
        else if (e instanceof Refused) markRefused(e, 'the heartbeat');
        else log('error', 'heartbeat failed', { reason: (e as Error).message });
        delay = Math.min(config.intervals.heartbeatMs, retryDelay(attempt++, policy, random()));
      }
      await pause(delay);
    }
  }

  /** Delivers the outbox one batch at a time, apart from the heartbeat: a backlog never silences heartbeats. */
  async function outboxLoop() {
    let attempt = 0;
    while (!stopping.signal.aborted) {
      let delay = config.intervals.heartbeatMs;
      try {
        if (link.reachable && (await outbox.count()) > 0) {
          const sent = await outbox.deliverOne(
            (events) => client.deliverEvents(events, stopping.signal),
            (e) => e instanceof Refused && e.status !== 401 && e.status !== 403,
          );
          attempt = 0;
          if (sent > 0) delay = 0;
        }
      } catch (e) {
        if (stopping.signal.aborted) break;
        if (e instanceof Unreachable) markOffline(e);
        else if (e instanceof Refused) markRefused(e, 'events');
        else log('error', 'event delivery failed', { reason: (e as Error).message });
        delay = retryDelay(attempt++, policy, random());
      }
      await pause(delay, 'outbox');
    }
  }

  if (current) await applySnapshot(current, 'cache');
  const loops = [refreshLoop(), syncLoop(), heartbeatLoop(), outboxLoop()].map((p) => p.catch((e) => log('error', 'loop ended unexpectedly', { reason: (e as Error).message })));

  return {
    url,
    health,
    emit,
    snapshot: () => current?.snapshot ?? null,
    cache,
    sessions,
    nbd,
    writeCaches,
    ha,
    synced: () =>
      new Promise<void>((resolve) => {
        syncWaiters.push(resolve);
        if (!needSync && current && !cache.status().syncInProgress && cache.inventory().every((e) => e.state === 'verified')) {
          syncWaiters = syncWaiters.filter((w) => w !== resolve);
          resolve();
        }
      }),
    async stop() {
      // Peers first: they adopt this appliance's address at once instead of after a timeout.
      await ha?.stop().catch((e: Error) => log('error', 'ha stop failed', { reason: e.message }));
      stopping.abort();
      await Promise.all(loops);
      await new Promise<void>((resolve) => {
        (server as unknown as { closeAllConnections?: () => void }).closeAllConnections?.();
        server.close(() => resolve());
      });
      await Promise.all([dhcp?.close(), nbd?.close(), ...(await tftpAll()).map((t) => t.close())]);
      await writeCaches.close();
      sessions.close();
      await cache.close();
      log('info', 'appliance stopped');
    },
  };
}
