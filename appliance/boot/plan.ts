/**
 * What a target that asks for its boot script gets: a pure function of the
 * cached snapshot, the targets this appliance auto-added offline, and what
 * the site's appliances hold and serve. No call to the cloud on this path.
 */
import {
  autoAddName,
  autoAddRefusal,
  autoAddTarget,
  chooseAppliance,
  selectVersion,
  streamMode,
  type Candidate,
  type StreamMode,
  type InventoryEntry,
  type Snapshot,
  type TargetInput,
} from '../../model/index.js';
import { linuxCmdline } from './linux-cmdline.js';
import type { BootPlan, DiskPath } from './script.js';

export interface ApplianceState {
  /** Whether the appliance is alive; unknown (null) for a peer not heard yet (or with HA off). */
  up: boolean | null;
  /** Its inventory; null when unknown. */
  holds: ((vdiskId: string, number: number) => InventoryEntry['state'] | null) | null;
  sessionsFor(vdiskId: string): number;
  sessionsTotal(): number;
}

export interface PlanInput {
  snapshot: Snapshot;
  /** Targets this appliance added while its snapshot did not have them yet. */
  autoAdded: readonly TargetInput[];
  /** False when the local limits on offline auto-adds are reached. */
  mayAutoAdd?: boolean;
  mac: string;
  clientIp: string | null;
  self: string;
  /** State of each appliance of the site, by id. */
  state(applianceId: string): ApplianceState;
  /** URL of a version's disk on an appliance. */
  diskUrl(appliance: Snapshot['appliances'][number], vdiskId: string, number: number): string;
  /** This script's own URL (to ask again). */
  selfUrl: string;
  /** The NBD export name for this boot (signed, with a new boot id), for the OS to stream its disk; absent: none offered. */
  nbdExport?(claim: { mac: string; vdiskId: string; version: number; mode: StreamMode }): string;
  /** host:port of an appliance's NBD service as the target reaches it. */
  nbdServer?(appliance: Snapshot['appliances'][number]): string;
  /** The appliance a recent decision sent this target to: kept while it can still stream (the same answer on every appliance). */
  preferred?: string | null;
  /**
   * A version's Linux boot area (kernel and initramfs inside the vDisk, boot/linux-images.ts): its default kernel
   * command line; null or undefined for a vDisk that is not a Linux one (or not read yet): it is sanbooted.
   */
  linux?(vdiskId: string, version: number): { cmdline: string } | null | undefined;
  /** URL of a Linux vDisk's kernel or initramfs on an appliance (needed with `linux`). */
  bootFileUrl?(appliance: Snapshot['appliances'][number], vdiskId: string, version: number, file: 'kernel' | 'initrd'): string;
}

export interface PlanResult {
  plan: BootPlan;
  /** A target to add (offline auto-add): the caller records it and queues the event. */
  added: TargetInput | null;
  event: { targetId: string | null; outcome: 'vdisk' | 'local-disk' | 'refused'; vdiskId: string | null; version: number | null; streamingApplianceId: string | null; message: string };
}

const REFUSE_SECONDS = 60;
const WAIT_SECONDS = 10;

export function planBoot(i: PlanInput): PlanResult {
  const s = i.snapshot;
  // Targets added offline count only while the farm still allows auto-add (the control plane may have refused them).
  const refusal = autoAddRefusal(s.farm, s.site);
  let target: TargetInput | undefined = s.targets.find((t) => t.mac === i.mac) ?? (refusal ? undefined : i.autoAdded.find((t) => t.mac === i.mac));
  let added: TargetInput | null = null;
  const refuse = (message: string, targetId: string | null = null): PlanResult => ({
    plan: { kind: 'refuse', message, seconds: REFUSE_SECONDS },
    added,
    event: { targetId, outcome: 'refused', vdiskId: null, version: null, streamingApplianceId: null, message },
  });

  if (!target) {
    const no = refusal ?? (i.mayAutoAdd === false ? 'this appliance has added as many machines as it may while the cloud has not confirmed them' : null);
    if (no) return refuse(`this machine (${i.mac}) is not a target of site ${s.site.name}, and ${no}. An administrator can add it: bootfarm target create ${i.mac} --name NAME --collection COLLECTION`);
    const col = s.collections.find((c) => c.id === s.site.defaultCollectionId);
    if (!col) return refuse(`this machine (${i.mac}) is not a target of site ${s.site.name}, and the site's default collection is not in this appliance's snapshot`);
    const taken = new Set([...s.targets, ...i.autoAdded].map((t) => t.name.toLowerCase()));
    let n = col.autoAdd.startNumber;
    let name: string;
    try {
      do name = autoAddName(col.autoAdd, n++);
      while (taken.has(name.toLowerCase()));
    } catch (e) {
      return refuse(`cannot add this machine (${i.mac}) automatically: ${(e as Error).message}`);
    }
    const template = col.templateTargetMac ? (s.targets.find((t) => t.mac === col.templateTargetMac) ?? null) : null;
    target = added = autoAddTarget(i.mac, name, col, template);
  }

  const who = { name: target.name, mac: target.mac };
  if (target.disabled) return refuse(`target ${target.name} (${target.mac}) is disabled in the farm: ask an administrator to enable it`, target.mac);
  if (target.bootFrom === 'local-disk')
    return { plan: { kind: 'local-disk', target: who }, added, event: { targetId: target.mac, outcome: 'local-disk', vdiskId: null, version: null, streamingApplianceId: null, message: '' } };
  const assignment = target.assignments[0];
  const vdisk = assignment ? s.vdisks.find((v) => v.id === assignment.vdiskId) : undefined;
  if (!vdisk) return refuse(`target ${target.name} (${target.mac}) has no vDisk assigned`, target.mac);
  const version = selectVersion(
    s.versions.filter((v) => v.vdiskId === vdisk.id && v.manifest),
    target.type,
  );
  if (!version) return refuse(`vDisk ${vdisk.name} has no ${target.type === 'production' ? 'production' : `${target.type} or production`} version for target ${target.name}`, target.mac);

  // The running OS streams its disk over NBD from the same appliances, in the same order, with writes kept as the vDisk says.
  const mode = streamMode(vdisk, target.type, version.state);
  const exportName = i.nbdExport?.({ mac: target.mac, vdiskId: vdisk.id, version: version.number, mode }) ?? null;
  // A write cache lives on one appliance: a writable export names that one only (another would start the disk over).
  const nbdFor = (list: Snapshot['appliances'][number][]) =>
    exportName && i.nbdServer ? { exportName, mode, servers: (mode === 'read-only' ? list : list.slice(0, 1)).map((a) => i.nbdServer!(a)) } : null;

  const known: (Candidate & { a: Snapshot['appliances'][number] })[] = [];
  const unknown: Snapshot['appliances'][number][] = [];
  for (const a of s.appliances) {
    const st = i.state(a.id);
    if (st.up === null || st.holds === null) {
      unknown.push(a);
      continue;
    }
    known.push({
      a,
      id: a.id,
      name: a.name,
      addresses: a.streamingAddresses.length ? a.streamingAddresses : [a.managementAddress],
      powerRating: a.powerRating,
      maxTargets: a.maxTargets,
      up: st.up,
      holdsVersion: st.holds(vdisk.id, version.number) === 'verified',
      sessionsForVdisk: st.sessionsFor(vdisk.id),
      sessionsTotal: st.sessionsTotal(),
    });
  }
  // Writes kept on the streaming appliance from boot to boot (persistent cache, private image) need the same appliance every boot.
  const home = mode === 'appliance-persistent' || mode === 'image' ? { home: `${target.mac}|${vdisk.id}` } : {};
  const chosen = chooseAppliance(known, { vdisk, targetIp: i.clientIp, ...home });
  // A target asked again (a retry, another appliance's ProxyDHCP answer) gets the answer it got before, while that one can still stream.
  const sticky = i.preferred ? [chosen.primary, ...chosen.failover].find((c) => c?.id === i.preferred) : undefined;
  const d =
    sticky && sticky !== chosen.primary
      ? { primary: sticky, failover: [chosen.primary!, ...chosen.failover.filter((c) => c !== sticky)], reason: `${sticky.name} was chosen for this target moments ago` }
      : chosen;
  // Peers whose state this appliance does not know (not heard yet, or HA off) may well stream what it cannot.
  const fixedId = vdisk.loadBalancing.mode === 'fixed' ? vdisk.loadBalancing.applianceId : null;
  const fallback = fixedId ? unknown.filter((a) => a.id === fixedId) : unknown;
  // A Linux vDisk boots its own kernel and initramfs, whose root streams over NBD; any other vDisk is sanbooted.
  const image = i.linux?.(vdisk.id, version.number) ?? null;
  const vdiskPlan = (appliances: Snapshot['appliances'][number][], nbd: ReturnType<typeof nbdFor>, reason: string, streamingApplianceId: string): PlanResult => {
    let paths: DiskPath[] = appliances.map((a) => ({ name: a.name, url: i.diskUrl(a, vdisk.id, version.number) }));
    let linux: { cmdline: string } | null = null;
    if (image) {
      if (!nbd || !i.bootFileUrl)
        return refuse(`vDisk ${vdisk.name} version ${version.number} is a Linux vDisk: its root file system streams over NBD, which this site's appliances do not offer here (nbd.enabled)`, target.mac);
      const recovery = s.site.bootstrap.networkRecovery;
      const c = linuxCmdline({
        base: image.cmdline,
        servers: nbd.servers,
        exportName: nbd.exportName,
        mode: nbd.mode,
        writeCacheType: vdisk.writeCacheType,
        writeCacheSizeMb: target.writeCacheSizeMb,
        mac: target.mac,
        hostname: target.name,
        personality: target.personality,
        // PVS's general timeout (a packet to the server) bounds one request; the network recovery setting says how long I/O waits for the disk.
        requestTimeoutSeconds: Math.max(5, Math.ceil(s.site.bootstrap.generalTimeoutMs / 1000)),
        deadConnectionSeconds: recovery.action === 'restore-connection' ? 86_400 : recovery.rebootDelaySeconds,
        // A floating address is adopted within the peer timeout (twice it, and a margin for the adopter's gratuitous ARP).
        staySeconds: appliances[0]?.floatingAddress ? 2 * Math.ceil(s.site.highAvailability.peerTimeoutMs / 1000) + 3 : 0,
      });
      if (!c.ok) return refuse(`target ${target.name} (${target.mac}) cannot boot vDisk ${vdisk.name}: ${c.message}`, target.mac);
      linux = { cmdline: c.cmdline };
      paths = appliances.map((a, n) => ({ ...paths[n]!, kernelUrl: i.bootFileUrl!(a, vdisk.id, version.number, 'kernel'), initrdUrl: i.bootFileUrl!(a, vdisk.id, version.number, 'initrd') }));
    }
    return {
      plan: { kind: 'vdisk', target: who, vdisk: { name: vdisk.name }, version: version.number, paths, reason, nbd, ...(linux ? { linux } : {}) },
      added,
      event: { targetId: target.mac, outcome: 'vdisk', vdiskId: vdisk.id, version: version.number, streamingApplianceId, message: reason },
    };
  };
  if (!d.primary && fallback.length) {
    const reason = fixedId ? `the vDisk is fixed to ${fallback[0]!.name}` : `this appliance cannot stream it (${d.reason}); trying the site's other appliances`;
    return vdiskPlan(fallback, nbdFor(fallback), reason, fallback[0]!.id);
  }
  if (!d.primary) {
    const mine = i.state(i.self).holds?.(vdisk.id, version.number);
    if (vdisk.loadBalancing.mode === 'algorithm' && (mine === 'syncing' || mine === null || mine === undefined))
      return {
        plan: { kind: 'wait', message: `vDisk ${vdisk.name} version ${version.number} is not on this site's appliances yet (${d.reason})`, retryUrl: i.selfUrl, seconds: WAIT_SECONDS },
        added,
        event: { targetId: target.mac, outcome: 'refused', vdiskId: vdisk.id, version: version.number, streamingApplianceId: null, message: d.reason },
      };
    return refuse(`vDisk ${vdisk.name} version ${version.number} cannot be streamed: ${d.reason}`, target.mac);
  }
  // Appliances whose state this one does not know come last: iPXE tries them only if the others fail.
  const order = [...[d.primary, ...d.failover].map((c) => c.a), ...(vdisk.loadBalancing.mode === 'algorithm' ? unknown : [])];
  // iPXE's sanboot makes whichever path answers first the active one, not the first listed: with a floating address
  // (site HA) the chosen appliance's address itself fails over, so the disk names that one path and the choice holds.
  const diskOrder = order[0]?.floatingAddress ? order.slice(0, 1) : order;
  return vdiskPlan(diskOrder, nbdFor(order), d.reason, d.primary.id);
}
