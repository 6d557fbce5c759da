/**
 * bootfarm's NBD exports: what a signed export name (export-name.ts) opens,
 * decided from the cached snapshot alone (no call to the cloud).
 *
 * A name is served when its signature checks with the site's peer secret,
 * its target is in the snapshot (or was added offline here), is enabled,
 * boots from a vDisk and still has this one assigned, and this appliance
 * holds the version verified. Then, by the mode fixed at boot:
 * - `read-only`: the version itself (device RAM caches: the target keeps its writes);
 * - `appliance-temporary` / `appliance-persistent` / `image`: a copy-on-write
 *   overlay from WriteCaches, shared by the boot's connections.
 * Bad names get "unknown" and say no more; known targets get the reason.
 */
import type { Snapshot, Target, TargetInput } from '../../model/index.js';
import { writeCacheLimitBytes } from '../../model/index.js';
import type { VdiskCache, VdiskReader } from '../cache/vdisk-cache.js';
import type { LogFn } from '../log.js';
import type { Session, Sessions } from '../sessions.js';
import { OverlayFull } from '../write-cache/overlay.js';
import type { LeaseRequest, WriteCaches } from '../write-cache/lifecycle.js';
import { sameAddress, verifyExportName, type ExportClaim } from './export-name.js';
import { BufferPool } from './buffer-pool.js';
import { NBD_ERRNO } from './codec.js';
import { NbdIoError, type ExportInfo, type ExportRefusal, type NbdClient, type NbdExport, type NbdExports } from './server.js';

export interface BootfarmExportsDeps {
  snapshot(): Snapshot | null;
  /** Targets this appliance added at their first boot while offline. */
  autoAdded(): readonly TargetInput[];
  cache: VdiskCache;
  sessions: Sessions;
  writeCaches: WriteCaches;
  log: LogFn;
  /** This appliance's id (a writable export reached on a peer's adopted address is refused). */
  self?: string;
  /** Why a target was moved away from this appliance (rebalance), while it is refused here. */
  movedAway?(mac: string): string | null;
  /** The OS of a boot opened its disk here for the first time (told once per boot id): the boot is over. */
  attached?(claim: ExportClaim): void;
}

export interface BootfarmExports extends NbdExports {
  /** A boot script carried this name to a target at `clientIp`: OPT_LIST from that address shows it. */
  recordBoot(mac: string, name: string, clientIp: string | null, description: string): void;
}

const MAX_LISTED = 10_000;

interface Resolved {
  claim: ExportClaim;
  /** From the snapshot, or added offline here (then without system fields). */
  target: Target | TargetInput;
  description: string;
  sizeBytes: number;
  contentHash: string;
  sectorSize: number;
}

export function bootfarmExports(deps: BootfarmExportsDeps): BootfarmExports {
  const boots = new Map<string, { name: string; clientIp: string | null; description: string }>();
  /** Boot ids whose disk was opened here (bounded: a boot id is of interest only the first time). */
  const attachedBoots = new Set<string>();
  const markAttached = (claim: ExportClaim) => {
    if (attachedBoots.has(claim.bootId)) return;
    attachedBoots.add(claim.bootId);
    if (attachedBoots.size > MAX_LISTED) attachedBoots.delete(attachedBoots.values().next().value as string);
    deps.attached?.(claim);
  };
  const pool = new BufferPool(64 * 1024 * 1024);

  const unknown = (message: string): ExportRefusal => ({ refused: 'unknown', message });
  const policy = (message: string): ExportRefusal => ({ refused: 'policy', message });

  function resolve(name: string, client: NbdClient): Resolved | ExportRefusal {
    const snap = deps.snapshot();
    if (!snap) return { refused: 'shutdown', message: 'this appliance has no farm configuration yet' };
    const claim = verifyExportName(name, snap.peerSecret);
    if (!claim) return unknown('no such export: export names come from the target\'s boot script');
    const target = snap.targets.find((t) => t.mac === claim.mac) ?? deps.autoAdded().find((t) => t.mac === claim.mac);
    if (!target) return unknown(`target ${claim.mac} is not in site ${snap.site.name}`);
    const moved = claim.mode === 'read-only' ? deps.movedAway?.(claim.mac) : null;
    if (moved) return policy(`target ${target.name} was ${moved}: connect to its next server`);
    if (target.disabled) return policy(`target ${target.name} (${target.mac}) is disabled in the farm`);
    // A name seen on the wire must not let another machine write into this target's disk.
    if (claim.mode !== 'read-only' && claim.address && !sameAddress(claim.address, client.address))
      return policy(`this export of target ${target.name} is writable from ${claim.address} only (the address its boot script went to)`);
    // A writable export reached on a peer's floating address this appliance adopted: its write cache was on that peer.
    const adoptedFrom = claim.mode !== 'read-only' && client.localAddress ? snap.appliances.find((a) => a.floatingAddress === client.localAddress && a.id !== deps.self) : undefined;
    if (adoptedFrom)
      return policy(`the write cache of target ${target.name} was on appliance ${adoptedFrom.name}, which is down; its writes since boot are lost with it: restart the target`);
    if (target.bootFrom !== 'vdisk') return policy(`target ${target.name} (${target.mac}) boots from its local disk`);
    if (!target.assignments.some((a) => a.vdiskId === claim.vdiskId)) return policy(`vDisk ${claim.vdiskId} is no longer assigned to target ${target.name}`);
    const vdisk = snap.vdisks.find((v) => v.id === claim.vdiskId);
    let reader: VdiskReader;
    try {
      reader = deps.cache.open(claim.vdiskId, claim.version);
    } catch (e) {
      return unknown((e as Error).message);
    }
    const r = { sizeBytes: reader.sizeBytes, contentHash: reader.contentHash, sectorSize: reader.sectorSize };
    reader.close();
    const modeText = { 'read-only': 'read-only (the target keeps its writes)', 'appliance-temporary': 'write cache on the appliance, new at every boot', 'appliance-persistent': 'persistent write cache on the appliance', image: 'writes go to the version itself' }[claim.mode];
    return { claim, target, description: `${target.name}: vDisk ${vdisk?.name ?? claim.vdiskId} version ${claim.version}, ${modeText}`, ...r };
  }

  function leaseRequest(r: Resolved): LeaseRequest {
    const { claim } = r;
    return {
      mode: claim.mode as LeaseRequest['mode'],
      mac: claim.mac,
      vdiskId: claim.vdiskId,
      version: claim.version,
      contentHash: r.contentHash,
      bootId: claim.bootId,
      // An administrator's reset. (A target deleted and added again: its caches are swept when the snapshot drops it.)
      resetMark: ('writeCacheResetAt' in r.target ? r.target.writeCacheResetAt : null) ?? null,
      // A private image or maintenance version is the disk itself: only its size bounds it.
      limitBytes: claim.mode === 'image' ? null : writeCacheLimitBytes(r.target),
      openBase: () => deps.cache.open(claim.vdiskId, claim.version),
    };
  }

  function info(r: Resolved): ExportInfo {
    const ro = r.claim.mode === 'read-only';
    // No TRIM: the overlay cannot give space back (see overlay.ts); WRITE_ZEROES is cheap on blocks not written yet.
    return { sizeBytes: r.sizeBytes, readOnly: ro, canTrim: false, canZero: !ro, multiConn: true, preferredBlockSize: Math.max(4096, r.sectorSize), description: r.description };
  }

  return {
    recordBoot(mac, name, clientIp, description) {
      boots.delete(mac);
      boots.set(mac, { name, clientIp, description });
      if (boots.size > MAX_LISTED) boots.delete(boots.keys().next().value as string);
    },

    list(client: NbdClient) {
      // A client sees the exports its own boot scripts named, nobody else's.
      return [...boots.values()].filter((b) => b.clientIp === client.address).map((b) => ({ name: b.name, description: b.description }));
    },

    async describe(name, client) {
      const r = resolve(name, client);
      if ('refused' in r) return r;
      if (r.claim.mode !== 'read-only') {
        const no = await deps.writeCaches.check(leaseRequest(r));
        if (no) return no;
      }
      return info(r);
    },

    async open(name, client) {
      const r = resolve(name, client);
      if ('refused' in r) return r;
      const { claim } = r;
      // The session counts the target as this appliance's load and keeps its version from eviction.
      let session: Session;
      try {
        session = deps.sessions.touch(claim.mac, claim.vdiskId, claim.version, 'nbd', () => deps.cache.open(claim.vdiskId, claim.version));
      } catch (e) {
        return unknown((e as Error).message);
      }
      deps.sessions.hold(session);
      const counted = <T>(f: () => Promise<T>) => countedIn(session, f);
      const base = info(r);
      if (claim.mode === 'read-only') {
        session.movable = true;
        markAttached(claim);
        return sessionExport(base, session, deps.sessions, pool);
      }
      let lease;
      try {
        lease = await deps.writeCaches.acquire(leaseRequest(r));
      } catch (e) {
        deps.sessions.release(session);
        deps.log('error', 'write cache cannot be opened', { mac: claim.mac, vdiskId: claim.vdiskId, client: client.address, reason: (e as Error).message });
        return { refused: 'policy', message: `the write cache of target ${r.target.name} cannot be opened on this appliance: ${(e as Error).message}` };
      }
      if ('refused' in lease) {
        deps.sessions.release(session);
        return lease;
      }
      const o = lease.overlay;
      markAttached(claim);
      const full = (e: unknown) => {
        if (e instanceof OverlayFull) throw new NbdIoError(NBD_ERRNO.ENOSPC, `write cache of target ${r.target.name} is full: ${e.message}`);
        throw e;
      };
      return {
        ...base,
        read: (offset, length) =>
          counted(async () => {
            const data = await o.read(offset, length);
            deps.sessions.sent(session, data.length);
            return data;
          }),
        write: (offset, data, fua) => counted(() => o.write(offset, data, fua).catch(full)),
        writeZeroes: (offset, length, fua) => counted(() => o.writeZeroes(offset, length, fua).catch(full)),
        trim: (offset, length, fua) => counted(() => o.trim(offset, length, fua)),
        flush: () => counted(() => o.flush()),
        close: () => {
          lease.release();
          deps.sessions.release(session);
        },
      } satisfies NbdExport;
    },
  };
}

/** Runs `f` as a request of the session: a session is never closed under one. */
async function countedIn<T>(session: Session, f: () => Promise<T>): Promise<T> {
  session.inFlight++;
  try {
    return await f();
  } finally {
    session.inFlight--;
  }
}

/**
 * A read-only export straight from a streaming session's verified reader
 * (device RAM modes): read buffers come from `pool` and go back once sent.
 * The connection holds the session (`sessions.hold`) until `close`.
 */
export function sessionExport(info: ExportInfo, session: Session, sessions: Sessions, pool: BufferPool): NbdExport {
  return {
    ...info,
    read: (offset, length) =>
      countedIn(session, async () => {
        const data = await session.reader.read(offset, length, pool.take(length));
        sessions.sent(session, data.length);
        return data;
      }),
    recycle: (b) => pool.give(b),
    close: () => sessions.release(session),
  };
}
