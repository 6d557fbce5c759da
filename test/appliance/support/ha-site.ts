/**
 * A site with several appliances, each on a machine of its own (a host
 * namespace on the site's bridge), each with a floating address, and the
 * cloud gone: for failover tests and the failover bench.
 *
 * Appliance i has the fixed address 192.0.2.(11+i) and floats 192.0.2.(21+i).
 * They are enrolled and synced on the host first (loopback), then started as
 * real `bootfarm appliance run` processes in their hosts with the control
 * plane stopped, so they boot targets from their signed cached snapshots.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildTestDisk, longReadRanges, type TestDisk } from '../../support/boot-disk.js';
import { macOf } from '../../support/fixtures.js';
import { createSite, type Host, type ManagedProcess, type Site } from '../../support/netns.js';
import { testSite, until, type TestSite } from './site.js';

export interface HaAppliance {
  name: string;
  id: string;
  host: Host;
  /** Its fixed (management) address. */
  address: string;
  floating: string;
  dataDir: string;
  proc: ManagedProcess | null;
  /** Starts `bootfarm appliance run` in its host; resolves once it listens. */
  start(): Promise<void>;
  /** SIGKILL, as a crash: resolves when the process is gone. */
  kill9(): Promise<void>;
  /** Its JSON log lines so far. */
  logs(): Record<string, unknown>[];
  /** GET on its HTTP service through its fixed address, from the site. */
  get(path: string): Promise<string>;
}

export interface HaSite {
  t: TestSite;
  site: Site;
  disk: TestDisk;
  appliances: HaAppliance[];
  /** Targets created for the site (MACs), all assigned the vDisk. */
  macs: string[];
  destroy(): Promise<void>;
}

export interface HaSiteOptions {
  appliances?: number;
  targets?: number;
  /** First MAC number (macOf). */
  macBase?: number;
  sizeMiB?: number;
  /** Chunks of 32 KiB per range the boot sector reads (6 ranges); default: the short standard read. */
  longRead?: number;
  peerTimeoutMs?: number;
  rebalance?: { enabled: boolean; triggerPercent?: number; intervalSeconds?: number; maxMovesPerCheck?: number; spacingSeconds?: number };
  log?: (line: string) => void;
  /** More of the site (vDisks, targets) made while the cloud is up, before the appliances enrol and sync. */
  prepare?: (t: TestSite) => Promise<void>;
}

export async function haSite(o: HaSiteOptions = {}): Promise<HaSite> {
  const n = o.appliances ?? 2;
  const dir = await mkdtemp(join(tmpdir(), 'bootfarm-ha-'));
  const sizeMiB = o.sizeMiB ?? 64;
  const disk = await buildTestDisk(join(dir, 'ha.raw'), { sizeMiB, seed: 7, ...(o.longRead ? { ranges: longReadRanges((sizeMiB << 20) / 512, o.longRead) } : {}) });
  const t = await testSite({ imagePath: disk.path });
  const macs: string[] = [];
  for (let i = 0; i < (o.targets ?? 0); i++) {
    const mac = macOf((o.macBase ?? 0xa000) + i);
    macs.push(mac);
    await t.fx.target(t.collectionId, { mac, assignments: [{ vdiskId: t.vdiskId }] });
  }
  await o.prepare?.(t);
  await t.fx.patch(`/v1/sites/${t.siteId}`, {
    proxyDhcp: { enabled: true },
    highAvailability: { peerTimeoutMs: o.peerTimeoutMs ?? 2000 },
    ...(o.rebalance ? { rebalance: o.rebalance } : {}),
  });

  const enrolled: { name: string; id: string; address: string; floating: string; dataDir: string }[] = [];
  for (let i = 0; i < n; i++) {
    const name = `ha-${String.fromCharCode(97 + i)}`;
    const address = `192.0.2.${11 + i}`;
    const floating = `192.0.2.${21 + i}`;
    const e = await t.enrol(name, { address, port: 80, bootServices: true });
    // Services on every address of the machine, as the installer sets them: the floating addresses come and go.
    const file = join(e.dataDir, 'appliance.json');
    const cfg = JSON.parse(await readFile(file, 'utf8'));
    await writeFile(file, JSON.stringify({ ...cfg, http: { ...cfg.http, host: '0.0.0.0' } }));
    await t.fx.patch(`/v1/appliances/${e.config.applianceId}`, { floatingAddress: floating });
    enrolled.push({ name, id: e.config.applianceId, address, floating, dataDir: e.dataDir });
  }
  // Synced on the host while the cloud is there (HA off: nothing here may touch the host's addresses).
  for (const e of enrolled) {
    const warm = await t.run(e.dataDir, { http: { host: '127.0.0.1', port: 0 }, ha: { enabled: false } });
    await until(
      `${e.name} synced`,
      () => {
        const snap = warm.snapshot();
        const inv = warm.cache.inventory();
        // Every vDisk of the site's targets (one production version each), all verified.
        return snap && snap.appliances.every((a) => a.floatingAddress) && inv.length === snap.vdisks.length && inv.every((v) => v.state === 'verified');
      },
      300_000,
    );
    await warm.stop();
  }
  await t.stopApi();

  const site = await createSite(o.log ? { log: o.log } : {});
  // No ping before each offer: with tens of targets asking at once, dnsmasq's one-at-a-time ping checks delay offers past iPXE's DHCP timeout.
  await site.startDhcp({ separateHost: true, extraArgs: ['--no-ping'] });
  const appliances: HaAppliance[] = [];
  for (const e of enrolled) {
    const host = await site.addHost(e.name.slice(3), e.address);
    const a: HaAppliance = {
      ...e,
      host,
      proc: null,
      async start() {
        a.proc = host.spawnNode('bin/bootfarm.js', ['appliance', 'run', '--data-dir', e.dataDir], { name: e.name, ...(o.log ? { log: o.log } : {}) });
        await a.proc.waitForLine(/"msg":"appliance listening"/, 60_000);
      },
      async kill9() {
        const p = a.proc;
        if (!p) return;
        p.process.kill('SIGKILL');
        await p.exited;
      },
      logs() {
        const out: Record<string, unknown>[] = [];
        for (const l of a.proc?.lines ?? []) {
          const i = l.indexOf('{');
          if (i < 0) continue;
          try {
            out.push(JSON.parse(l.slice(i)));
          } catch {
            /* not a log line */
          }
        }
        return out;
      },
      async get(path) {
        return (await site.exec('curl', ['-sf', '--max-time', '5', `http://${e.address}${path}`])).stdout;
      },
    };
    appliances.push(a);
  }
  await Promise.all(appliances.map((a) => a.start()));
  return {
    t,
    site,
    disk,
    appliances,
    macs,
    async destroy() {
      await site.destroy();
      await t.api.close().catch(() => undefined);
      await Promise.all([rm(dir, { recursive: true, force: true }), rm(t.dir, { recursive: true, force: true })]);
    },
  };
}

/** Every floating address held by each appliance's host now. */
export async function heldAddresses(s: HaSite): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  for (const a of s.appliances) out.set(a.name, (await a.host.addresses()).filter((x) => x !== a.address));
  return out;
}

/**
 * Samples who holds which floating address every `everyMs` until stopped, and
 * records any moment two hosts held the same one (two machines answering ARP
 * for one address: split brain).
 */
export function watchAddresses(s: HaSite, everyMs = 100): { stop(): Promise<{ samples: number; conflicts: string[] }> } {
  let running = true;
  let samples = 0;
  const conflicts: string[] = [];
  const done = (async () => {
    while (running) {
      const held = await heldAddresses(s).catch(() => null);
      if (held) {
        samples++;
        const seen = new Map<string, string>();
        for (const [name, list] of held)
          for (const addr of list) {
            if (seen.has(addr)) conflicts.push(`${new Date().toISOString()}: ${addr} on ${seen.get(addr)} and ${name}`);
            seen.set(addr, name);
          }
      }
      await new Promise((r) => setTimeout(r, everyMs));
    }
  })();
  return {
    async stop() {
      running = false;
      await done;
      return { samples, conflicts };
    },
  };
}
