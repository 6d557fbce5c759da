/**
 * Site high availability on the appliance: heartbeats with the site's peers
 * on the LAN (heartbeat.ts), who is live, the floating addresses this
 * appliance holds (addresses.ts, decided by model/ha.ts), the load the boot
 * decisions weigh, and rebalancing. Nothing here asks the cloud.
 */
import { randomBytes } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { planAddresses, planRebalance, type InventoryEntry, type RebalanceAppliance, type Snapshot } from '../../model/index.js';
import type { ApplianceState } from '../boot/plan.js';
import type { LogFn } from '../log.js';
import type { Session } from '../sessions.js';
import { startAddressManager, type AddressManager } from './addresses.js';
import { decodeHeartbeat, encodeHeartbeat, HeartbeatRefused, heartbeatKey, isFresh, newIncarnation, type Heartbeat } from './heartbeat.js';

/** A boot decision counts toward its appliance's load this long, or until that appliance reports the target's session. */
export const ASSIGNMENT_TTL_MS = 30_000;
/** A target moved away by a rebalance is refused here this long (it reconnects to its next server). */
export const MOVED_TTL_MS = 60_000;

export interface HaConfig {
  enabled: boolean;
  /** Where heartbeats are received. */
  host: string;
  /** The same on every appliance of the site. */
  port: number;
  /** The LAN interface floating addresses go on; null: the one holding the management address. */
  interface: string | null;
  prefixLength: number;
}

export interface HaDeps {
  config: HaConfig;
  applianceId: string;
  siteId: string;
  snapshot(): Snapshot | null;
  inventory(): InventoryEntry[];
  sessions(): Session[];
  /** Where the state file of held addresses goes. */
  statePath: string;
  log: LogFn;
  /** Closes a target's NBD connections (rebalance); returns how many. */
  disconnect(mac: string, reason: string): number;
  /** The floating addresses held changed (TFTP listens on them). */
  onHeld?(held: ReadonlySet<string>): void;
  now?: () => number;
}

export interface PeerView {
  id: string;
  name: string;
  live: boolean;
  lastHeardMs: number | null;
  link: boolean | null;
  held: string[];
  sessions: number;
}

export interface HaStatus {
  enabled: boolean;
  interface: string | null;
  linkUp: boolean;
  settled: boolean;
  held: string[];
  waiting: { address: string; reason: string }[];
  peers: PeerView[];
  moves: number;
}

export interface Ha {
  port: number;
  /** What a boot decision knows of an appliance. */
  state(applianceId: string): ApplianceState;
  /** A boot script sent this target to that appliance. */
  assign(mac: string, clientIp: string | null, vdiskId: string, applianceId: string): void;
  /** The appliance a recent boot decision (anyone's) sent this target to, if still fresh. */
  assignedTo(mac: string): string | null;
  /** The reason a target was moved away from here, while it is refused here. */
  movedAway(mac: string): string | null;
  /** Addresses this appliance answers on for the site (its own and adopted floating addresses). */
  held(): ReadonlySet<string>;
  status(): HaStatus;
  /** One round now (tests; also run on a timer). */
  tick(): Promise<void>;
  /** Runs the rebalance check now (also on the site's interval). */
  rebalance(): Promise<number>;
  stop(): Promise<void>;
}

interface PeerRecord {
  hb: Heartbeat;
  at: number;
}

/** Sessions and boot decisions are both keyed by the target's MAC (disk URLs carry it; NBD names do). */
const keyOf = (s: Session) => s.client;

export async function startHa(deps: HaDeps): Promise<Ha> {
  const now = deps.now ?? (() => performance.now());
  const { log, applianceId: self } = deps;
  const startedAt = now();
  /** This appliance's incarnation: new at start and whenever its link comes back (peers then ack the new one). */
  let inc = newIncarnation(Date.now(), randomBytes(4));
  let seq = 0;
  const peers = new Map<string, PeerRecord>();
  const lastSeen = new Map<string, { inc: string; seq: number }>();
  /** Recent boot decisions: this appliance's own (sent on in heartbeats) and its peers' (counted, not sent on). */
  const assignments = new Map<string, { clientIp: string; vdiskId: string; to: string; at: number; mine: boolean }>();
  const MAX_ASSIGNMENTS = 10_000;
  const remember = (mac: string, a: { clientIp: string; vdiskId: string; to: string; at: number; mine: boolean }) => {
    assignments.delete(mac);
    assignments.set(mac, a);
    if (assignments.size > MAX_ASSIGNMENTS) assignments.delete(assignments.keys().next().value as string);
  };
  const moved = new Map<string, { until: number; reason: string }>();
  let linkUp = true;
  let settledAt = startedAt;
  let waiting: HaStatus['waiting'] = [];
  let manager: AddressManager | null = null;
  let managerProblem: string | null = null;
  let moves = 0;
  const refusedLogged = new Set<string>();
  let refusedSince = now();
  /** Peers that said they were stopping: down at once, not unknown. */
  const left = new Set<string>();

  const timeoutMs = () => deps.snapshot()?.site.highAvailability.peerTimeoutMs ?? 2000;
  const members = () => deps.snapshot()?.appliances ?? [];
  const live = (id: string) => {
    if (id === self) return linkUp;
    const p = peers.get(id);
    return !!p && now() - p.at <= timeoutMs();
  };
  /** Listened long enough: a whole timeout, or a heartbeat from every other appliance of the site since it began listening. */
  let listeningSince = now();
  const settled = () => {
    const others = members().filter((a) => a.id !== self);
    // Every live peer has heard this incarnation: what it claims was decided knowing this appliance is up.
    const acked = others.filter((a) => live(a.id)).every((a) => peers.get(a.id)!.hb.hears.some(([id, i]) => id === self && i === inc));
    const heardAll = others.every((a) => (peers.get(a.id)?.at ?? -Infinity) > listeningSince);
    return acked && (heardAll || now() >= settledAt);
  };

  // ---- receiving
  const sock: Socket = createSocket({ type: 'udp4', reuseAddr: false });
  sock.on('message', (buf, rinfo) => {
    const snap = deps.snapshot();
    // A stopping appliance adopts nothing (its peers may be stopping too).
    if (!snap || stopped) return;
    let hb: Heartbeat;
    try {
      hb = decodeHeartbeat(buf, heartbeatKey(snap.peerSecret));
    } catch (e) {
      const k = `${rinfo.address}|${(e as Error).message}`;
      if (!refusedLogged.has(k) && refusedLogged.size < 100) {
        refusedLogged.add(k);
        log('warn', 'heartbeat refused', { from: rinfo.address, reason: e instanceof HeartbeatRefused ? e.message : String(e) });
      }
      return;
    }
    if (hb.site !== deps.siteId || hb.from === self || !snap.appliances.some((a) => a.id === hb.from)) return;
    if (!isFresh(lastSeen.get(hb.from), hb)) return;
    lastSeen.set(hb.from, { inc: hb.inc, seq: hb.seq });
    const was = live(hb.from);
    if (hb.leaving) {
      peers.delete(hb.from);
      left.add(hb.from);
      if (was) log('info', 'peer left', { peer: name(hb.from) });
      void tick();
      return;
    }
    const before = peers.get(hb.from)?.hb.held.join();
    peers.set(hb.from, { hb, at: now() });
    left.delete(hb.from);
    // Their recent decisions count here too (and make the choice for that target the same here): only for appliances of
    // the site and MAC-shaped keys, and never older than they said (so they expire on time here too).
    for (const [mac, clientIp, vdiskId, to, age] of hb.assigned) {
      if (!/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/.test(mac) || !snap.appliances.some((a) => a.id === to) || age >= ASSIGNMENT_TTL_MS) continue;
      const at = now() - age;
      const cur = assignments.get(mac);
      if (!cur || (!cur.mine && cur.at < at)) remember(mac, { clientIp, vdiskId, to, at, mine: false });
    }
    if (!was) {
      log('info', 'peer up', { peer: name(hb.from), held: hb.held });
      void tick();
    } else if (before !== hb.held.join()) void tick(); // a peer let go of (or took) an address: act now, not at the next round
  });
  const port = await new Promise<number>((resolve, reject) => {
    sock.once('error', (e: NodeJS.ErrnoException) => reject(e.code === 'EADDRINUSE' ? new Error(`ha.port ${deps.config.port} on ${deps.config.host} is in use`) : e));
    sock.bind({ address: deps.config.host, port: deps.config.port, exclusive: true }, () => resolve(sock.address().port));
  });
  sock.on('error', (e) => log('warn', 'heartbeat socket error', { reason: e.message }));
  const name = (id: string) => members().find((a) => a.id === id)?.name ?? id;

  // ---- what this appliance is doing, for peers and for its own decisions
  /** Sessions that count here: a target moved away by a rebalance no longer does (its session lingers until idle). */
  const counted = () => deps.sessions().filter((s) => !(moved.has(s.client) && s.connections === 0 && s.protocol === 'nbd'));
  function localSessions(): Map<string, Set<string>> {
    const by = new Map<string, Set<string>>();
    for (const s of counted()) {
      const set = by.get(s.vdiskId) ?? new Set<string>();
      set.add(keyOf(s));
      by.set(s.vdiskId, set);
    }
    return by;
  }

  function heartbeat(leaving = false): Heartbeat {
    const t = now();
    const fresh = [...assignments].filter(([, a]) => a.mine && t - a.at < ASSIGNMENT_TTL_MS);
    return {
      v: 1,
      site: deps.siteId,
      from: self,
      inc,
      seq: ++seq,
      leaving,
      link: linkUp,
      hears: [...peers].filter(([id]) => live(id)).map(([id, p]) => [id, p.hb.inc] as [string, string]),
      held: [...(manager?.held() ?? [])].sort(),
      inventory: deps.inventory().map((e) => [e.vdiskId, e.number, e.state] as [string, number, 'verified' | 'syncing' | 'corrupt']),
      sessions: Object.fromEntries([...localSessions()].map(([vd, keys]) => [vd, [...keys]])),
      total: new Set(counted().map(keyOf)).size,
      assigned: fresh.slice(-2000).map(([mac, a]) => [mac, a.clientIp, a.vdiskId, a.to, Math.round(t - a.at)] as [string, string, string, string, number]),
    };
  }

  /** An appliance with a floating address it cannot manage stays silent: its peers adopt the address and serve its targets. */
  const mute = () => !!managerProblem && !!members().find((a) => a.id === self)?.floatingAddress;
  async function send(hb: Heartbeat) {
    const snap = deps.snapshot();
    if (!snap || (mute() && !hb.leaving)) return;
    const buf = encodeHeartbeat(hb, heartbeatKey(snap.peerSecret));
    await Promise.all(
      snap.appliances
        .filter((a) => a.id !== self)
        .map(
          (a) =>
            new Promise<void>((resolve) => {
              sock.send(buf, deps.config.port, a.managementAddress, () => resolve());
            }),
        ),
    ).catch(() => undefined);
  }

  // ---- addresses
  let managerRetryAt = 0;
  async function ensureManager(): Promise<AddressManager | null> {
    if (manager) return manager;
    // A failure is tried again every 30 s (an interface renamed, a disk that was full).
    if (managerProblem && now() < managerRetryAt) return null;
    managerProblem = null;
    const snap = deps.snapshot();
    if (!snap || !snap.appliances.some((a) => a.floatingAddress)) return null;
    const me = snap.appliances.find((a) => a.id === self);
    let iface = deps.config.interface;
    if (!iface && me) iface = await interfaceOf(me.managementAddress);
    if (!iface) {
      managerProblem = `no interface holds this appliance's management address ${me?.managementAddress ?? '?'}: set ha.interface in appliance.json; floating addresses are not managed here`;
      managerRetryAt = now() + 30_000;
      log('error', managerProblem);
      return null;
    }
    try {
      manager = await startAddressManager({ iface, prefixLength: deps.config.prefixLength, statePath: deps.statePath, log });
      linkUp = await manager.linkUp();
      log('info', 'floating addresses managed', { interface: iface, linkUp });
    } catch (e) {
      managerProblem = (e as Error).message;
      managerRetryAt = now() + 30_000;
      log('error', 'cannot manage floating addresses', { reason: managerProblem });
    }
    return manager;
  }

  let ticking: Promise<void> | null = null;
  let again = false;
  async function tick(): Promise<void> {
    // Asked while a round runs (news from a peer): one more round after it, with what is known then.
    if (ticking) {
      again = true;
      return ticking;
    }
    ticking = (async () => {
      const snap = deps.snapshot();
      if (!snap) return;
      const mgr = await ensureManager();
      if (mgr) {
        const up = await mgr.linkUp();
        if (up && !linkUp) {
          settledAt = now() + timeoutMs();
          listeningSince = now();
          inc = newIncarnation(Date.now(), randomBytes(4));
          log('warn', 'link is back: listening to the site before claiming addresses', { interface: mgr.iface });
        } else if (!up && linkUp) log('error', 'link is down: letting go of every floating address', { interface: mgr.iface });
        linkUp = up;
        const liveSet = new Set(snap.appliances.map((a) => a.id).filter(live));
        const claims = new Map([...peers].filter(([id]) => live(id)).map(([id, p]) => [id, p.hb.held]));
        const plan = planAddresses({ self, members: snap.appliances, live: liveSet, claims, held: mgr.held(), linkUp, settled: settled() });
        for (const a of plan.remove) {
          await mgr.remove(a).then(
            () => log('info', 'floating address released', { address: a, owner: ownerName(snap, a) }),
            (e: Error) => log('error', 'cannot release a floating address', { address: a, reason: e.message }),
          );
        }
        for (const a of plan.add) {
          await mgr.add(a).then(
            () => log('info', ownerOf(snap, a) === self ? 'floating address taken' : 'floating address adopted', { address: a, owner: ownerName(snap, a) }),
            (e: Error) => log('error', 'cannot add a floating address', { address: a, reason: e.message }),
          );
        }
        deps.onHeld?.(mgr.held());
        const w = JSON.stringify(plan.waiting);
        if (w !== JSON.stringify(waiting) && plan.waiting.length) log('info', 'waiting to take floating addresses', { waiting: plan.waiting });
        waiting = plan.waiting;
      }
      await send(heartbeat());
      for (const [mac, a] of assignments) if (now() - a.at > ASSIGNMENT_TTL_MS) assignments.delete(mac);
      for (const [mac, m] of moved) if (now() > m.until) moved.delete(mac);
      if (now() - refusedSince > 3_600_000) {
        refusedLogged.clear();
        refusedSince = now();
      }
    })().finally(() => {
      ticking = null;
      if (again && !stopped) {
        again = false;
        void tick();
      }
    });
    return ticking;
  }
  const ownerOf = (snap: Snapshot, address: string) => snap.appliances.find((a) => a.floatingAddress === address)?.id ?? null;
  const ownerName = (snap: Snapshot, address: string) => {
    const id = ownerOf(snap, address);
    return id ? name(id) : null;
  };

  // ---- load as the boot decisions see it
  /** Targets sent to an appliance a moment ago that read nowhere yet (once one reads, it counts where it reads). */
  function pendingFor(applianceId: string, vdiskId: string | null): string[] {
    const t = now();
    const reading = new Set(counted().map(keyOf));
    for (const [id, p] of peers) if (live(id)) for (const list of Object.values(p.hb.sessions)) for (const k of list) reading.add(k);
    return [...assignments]
      .filter(([mac, a]) => a.to === applianceId && (vdiskId === null || a.vdiskId === vdiskId) && t - a.at < ASSIGNMENT_TTL_MS && !reading.has(mac))
      .map(([mac]) => mac);
  }
  function servedAddress(id: string): boolean {
    const a = members().find((m) => m.id === id);
    if (!a?.floatingAddress) return true;
    if (manager?.held().has(a.floatingAddress)) return true;
    if (!manager) return true; // addresses are not managed here: trust the peer's liveness
    return [...peers].some(([pid, p]) => live(pid) && p.hb.held.includes(a.floatingAddress!));
  }

  function state(id: string): ApplianceState {
    if (id === self) {
      const mine = localSessions();
      return {
        up: linkUp && servedAddress(self),
        holds: (vdiskId, number) => deps.inventory().find((e) => e.vdiskId === vdiskId && e.number === number)?.state ?? null,
        sessionsFor: (vdiskId) => new Set([...(mine.get(vdiskId) ?? []), ...pendingFor(self, vdiskId)]).size,
        sessionsTotal: () => new Set([...counted().map(keyOf), ...pendingFor(self, null)]).size,
      };
    }
    const p = peers.get(id);
    // Before this appliance has listened for a whole timeout, a peer it has not heard is unknown, not down.
    if (!p) return left.has(id) || settled() || now() - startedAt > timeoutMs() ? { up: false, holds: () => null, sessionsFor: () => 0, sessionsTotal: () => 0 } : { up: null, holds: null, sessionsFor: () => 0, sessionsTotal: () => 0 };
    const up = live(id) && p.hb.link && servedAddress(id);
    return {
      up,
      holds: (vdiskId, number) => p.hb.inventory.find(([v, n]) => v === vdiskId && n === number)?.[2] ?? null,
      sessionsFor: (vdiskId) => new Set([...(p.hb.sessions[vdiskId] ?? []), ...pendingFor(id, vdiskId)]).size + (p.hb.counts?.[vdiskId] ?? 0),
      sessionsTotal: () => p.hb.total + pendingFor(id, null).length,
    };
  }

  // ---- rebalance
  async function rebalance(): Promise<number> {
    const snap = deps.snapshot();
    if (!snap?.site.rebalance.enabled) return 0;
    const settings = snap.site.rebalance;
    const vdiskIds = snap.vdisks.filter((v) => v.loadBalancing.mode === 'algorithm').map((v) => v.id);
    const mineByVdisk = new Map<string, { key: string; booting: boolean; movable: boolean }[]>();
    for (const s of counted()) {
      const list = mineByVdisk.get(s.vdiskId) ?? [];
      const existing = list.find((x) => x.key === s.client);
      const t = { key: s.client, booting: s.protocol === 'http', movable: s.protocol === 'nbd' && s.movable === true && s.connections > 0 };
      if (existing) Object.assign(existing, { booting: existing.booting || t.booting, movable: existing.movable || t.movable });
      else list.push(t);
      mineByVdisk.set(s.vdiskId, list);
    }
    const apps: RebalanceAppliance[] = [];
    for (const a of snap.appliances) {
      const st = state(a.id);
      if (!st.up) continue;
      if (a.id === self) apps.push({ id: a.id, powerRating: a.powerRating, maxTargets: a.maxTargets, targets: mineByVdisk, total: st.sessionsTotal() });
      else {
        const targets = new Map(vdiskIds.map((vd) => [vd, Array.from({ length: st.sessionsFor(vd) }, (_, i) => ({ key: `${a.id}#${i}`, booting: false, movable: false }))]));
        apps.push({ id: a.id, powerRating: a.powerRating, maxTargets: a.maxTargets, targets, total: st.sessionsTotal() });
      }
    }
    const r = planRebalance({
      self,
      settings,
      vdiskIds,
      appliances: apps,
      canServe: (id, vdiskId) => {
        const st = state(id);
        const versions = new Set(deps.sessions().filter((s) => s.vdiskId === vdiskId).map((s) => s.number));
        return [...versions].every((n) => st.holds?.(vdiskId, n) === 'verified');
      },
    });
    for (const s of r.skipped) log('info', 'rebalance skipped', { vdiskId: s.vdiskId, reason: s.reason });
    let done = 0;
    for (const m of r.moves) {
      if (stopped) break;
      const reason = `moved to ${name(m.to)} by rebalance`;
      moved.set(m.key, { until: now() + MOVED_TTL_MS, reason });
      const session = deps.sessions().find((s) => s.client === m.key && s.vdiskId === m.vdiskId);
      remember(m.key, { clientIp: '', vdiskId: m.vdiskId, to: m.to, at: now(), mine: true });
      const closed = deps.disconnect(m.key, reason);
      log('info', 'rebalance: target moved', { target: m.key, vdiskId: m.vdiskId, to: name(m.to), connections: closed, version: session?.number ?? null });
      done++;
      moves++;
      // One at a time: a rebalance never turns into a reconnect storm.
      await sleepUnlessStopped(settings.spacingSeconds * 1000);
    }
    return done;
  }

  // ---- timers
  let stopped = false;
  let sendSoon: NodeJS.Immediate | null = null;
  const loop = async () => {
    while (!stopped) {
      await tick().catch((e: Error) => log('error', 'ha round failed', { reason: e.message }));
      // The next round: the heartbeat interval, or just after the first live peer's timeout runs out (adopt on time).
      const t = now();
      const expiries = [...peers].filter(([id]) => live(id)).map(([, p]) => p.at + timeoutMs() - t + 5);
      await sleepUnlessStopped(Math.max(20, Math.min(Math.floor(timeoutMs() / 4), ...expiries)));
    }
  };
  // Heartbeats on their own timer: a round held up by a slow disk or `ip` does not silence this appliance.
  const senderLoop = async () => {
    while (!stopped) {
      await sleepUnlessStopped(Math.max(100, Math.floor(timeoutMs() / 4)));
      if (!stopped && !ticking) await send(heartbeat()).catch(() => undefined);
    }
  };
  const rebalanceLoop = async () => {
    while (!stopped) {
      await sleepUnlessStopped((deps.snapshot()?.site.rebalance.intervalSeconds ?? 600) * 1000);
      if (stopped) break;
      await rebalance().catch((e: Error) => log('error', 'rebalance failed', { reason: e.message }));
    }
  };
  const sleepers = new Set<() => void>();
  const sleepUnlessStopped = (ms: number) =>
    new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(t);
        sleepers.delete(done);
        resolve();
      };
      const t = setTimeout(done, ms);
      sleepers.add(done);
    });
  settledAt = startedAt + timeoutMs();
  const loops = [loop(), senderLoop(), rebalanceLoop()];

  return {
    port,
    state,
    assign(mac, clientIp, vdiskId, applianceId) {
      remember(mac, { clientIp: clientIp ?? '', vdiskId, to: applianceId, at: now(), mine: true });
      // Peers hear of it at once (one heartbeat for a burst): in a boot storm they weigh it in their next decision.
      if (!sendSoon) sendSoon = setImmediate(() => {
        sendSoon = null;
        if (!stopped) void send(heartbeat());
      });
    },
    assignedTo(mac) {
      const a = assignments.get(mac);
      return a && now() - a.at < ASSIGNMENT_TTL_MS ? a.to : null;
    },
    movedAway(mac) {
      const m = moved.get(mac);
      return m && now() < m.until ? m.reason : null;
    },
    held: () => manager?.held() ?? new Set(),
    status: () => ({
      enabled: true,
      interface: manager?.iface ?? null,
      linkUp,
      settled: settled(),
      held: [...(manager?.held() ?? [])].sort(),
      waiting,
      peers: members()
        .filter((a) => a.id !== self)
        .map((a) => {
          const p = peers.get(a.id);
          return { id: a.id, name: a.name, live: live(a.id), lastHeardMs: p ? Math.round(now() - p.at) : null, link: p?.hb.link ?? null, held: p?.hb.held ?? [], sessions: p?.hb.total ?? 0 };
        }),
      moves,
    }),
    tick,
    rebalance,
    async stop() {
      stopped = true;
      for (const wake of [...sleepers]) wake();
      await Promise.all(loops);
      await ticking?.catch(() => undefined);
      // Peers adopt at once instead of after a timeout.
      await manager?.close().catch((e: Error) => log('error', 'cannot release floating addresses', { reason: e.message }));
      await send(heartbeat(true)).catch(() => undefined);
      await new Promise<void>((r) => sock.close(() => r()));
    },
  };
}

/** The interface holding an IPv4 address (`ip -j -4 addr`), or null. */
export async function interfaceOf(address: string): Promise<string | null> {
  try {
    const { stdout } = await promisify(execFile)('ip', ['-j', '-4', 'addr', 'show']);
    const list = JSON.parse(stdout) as { ifname: string; addr_info?: { local: string }[] }[];
    return list.find((i) => i.addr_info?.some((a) => a.local === address))?.ifname ?? null;
  } catch {
    return null;
  }
}
