/**
 * Site high availability with real machines: two appliances, each on a host
 * of its own on the site LAN with a floating address, dnsmasq for addresses,
 * QEMU BIOS targets, and the control plane stopped for the whole test (the
 * site runs from its signed cached snapshots).
 *
 * - 20 targets boot at once and are spread over the appliances by the algorithm.
 * - One appliance is killed (-9) while targets read their disks (sanboot) and
 *   an NBD client reads its export: every target finishes with the right
 *   checksum, the reader resumes on the same address; times are printed.
 * - The killed appliance restarts from its cache, rejoins and takes its
 *   address back only after the adopter let go.
 * - Each appliance's link is cut in turn: no address is ever on two machines.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DISK_RESULT, parseDiskReport } from '../support/boot-disk.js';
import { canRunTargets, type ManagedProcess } from '../support/netns.js';
import { bios, NO_BOOTABLE_DEVICE, type Vm } from '../support/qemu.js';
import { haSite, heldAddresses, watchAddresses, type HaAppliance, type HaSite } from './support/ha-site.js';
import { until } from './support/site.js';

const can = canRunTargets();
const PARALLEL = 20;
const TIMEOUT_MS = 2000;

describe.skipIf(!can.ok)(`site HA with real targets${can.ok ? '' : ` (skipped: ${can.reason})`}`, () => {
  let s: HaSite;
  let watch: ReturnType<typeof watchAddresses>;
  const vms: Vm[] = [];

  beforeAll(async () => {
    // 6 ranges of 40 chunks: each target reads 7.5 MiB through int 13h, long enough to be killed under.
    s = await haSite({ appliances: 2, targets: PARALLEL + 4, longRead: 40, peerTimeoutMs: TIMEOUT_MS });
    await until('both appliances hold their own floating address', async () => {
      const held = await heldAddresses(s);
      return s.appliances.every((a) => held.get(a.name)?.join() === a.floating);
    }, 30_000);
    watch = watchAddresses(s);
  }, 300_000);

  afterAll(async () => {
    await Promise.all(vms.map((v) => v.dispose().catch(() => undefined)));
    await watch?.stop();
    await s?.destroy();
  });

  const served = (a: HaAppliance, mac: string) => a.logs().find((e) => e.msg === 'disk session opened' && e.client === mac);
  const boot = async (mac: string, memoryMiB = 96) => {
    const tap = await s.site.addTap();
    const vm = await bios({ site: s.site, tap, mac, memoryMiB });
    vms.push(vm);
    return vm;
  };
  // The whole last line (its CR LF too): a serial file read while the guest still writes could end inside the number.
  const DISK_LINE = new RegExp(`${DISK_RESULT.source}\r?\n`);
  const finish = async (vm: Vm) => {
    const m = await vm.waitForSerial(DISK_LINE, 420_000, NO_BOOTABLE_DEVICE);
    return parseDiskReport(m[0])!;
  };

  it(`boots ${PARALLEL} BIOS targets at once, spread over the appliances by the algorithm`, async () => {
    const started = Date.now();
    const macs = s.macs.slice(0, PARALLEL);
    // Powered on a quarter second apart (as a rack's machines come up), all booting at the same time.
    const batch: Vm[] = [];
    for (const mac of macs) {
      batch.push(await boot(mac));
      await new Promise((r) => setTimeout(r, 250));
    }
    const reports = await Promise.all(batch.map(finish));
    for (const r of reports) expect(r).toMatchObject({ ok: true, sum: s.disk.expectedSum, sectorsRead: s.disk.sectorsRead });
    // Whichever appliance a target asked (both answer its PXE), every answer named the same one, and the target read from it.
    const chosen = new Map<string, HaAppliance>();
    for (const mac of macs) {
      const ids = new Set(s.appliances.flatMap((a) => a.logs()).filter((e) => e.msg === 'boot script' && e.mac === mac && e.outcome === 'vdisk').map((e) => e.appliance));
      expect([...ids], mac).toHaveLength(1);
      const a = s.appliances.find((x) => ids.has(x.id))!;
      expect(served(a, mac), `${mac} read from ${a.name}`).toBeTruthy();
      chosen.set(mac, a);
    }
    const perAppliance = s.appliances.map((a) => macs.filter((mac) => chosen.get(mac) === a).length);
    console.log(`${PARALLEL} BIOS targets booted in ${((Date.now() - started) / 1000).toFixed(1)} s (TCG, 2 cores); streamed by: ${s.appliances.map((a, i) => `${a.name} ${perAppliance[i]}`).join(', ')}`);
    // Each appliance took a fair part (least busy first, counting targets sent there a moment ago).
    for (const n of perAppliance) expect(n).toBeGreaterThanOrEqual(PARALLEL / 2 - 3);
    await Promise.all(batch.map((v) => v.dispose()));
  }, 900_000);

  let victim: HaAppliance;
  let survivor: HaAppliance;
  let killedAt = 0;

  it('keeps every target going when the appliance serving it is killed mid-boot and mid-NBD-read', async () => {
    const macs = s.macs.slice(PARALLEL);
    victim = s.appliances[0]!;
    survivor = s.appliances[1]!;
    // An NBD client on the victim's floating address (the export name from a boot script, as an OS gets it), reading slowly.
    const script = await victim.get(`/boot/${s.macs[0]!.replace(/:/g, '-')}.ipxe`);
    const exportName = /set bootfarm-nbd-export (\S+)/.exec(script)?.[1];
    expect(exportName, script).toBeTruthy();
    const reader: ManagedProcess = s.site.spawnNode('test/appliance/support/nbd-reader.ts', [exportName!, victim.floating, '10809', '200'], { name: 'nbd-reader' });
    await reader.waitForLine(/"event":"connected"/, 30_000);

    const batch = await Promise.all(macs.map((mac) => boot(mac)));
    const choice = (mac: string) => s.appliances.flatMap((a) => a.logs()).find((e) => e.msg === 'boot script' && e.mac === mac && e.outcome === 'vdisk')?.appliance;
    // Killed the moment one of its targets reads its disk and has not finished (sanboot mid-read), once every target has
    // its boot script (a machine still fetching its script from the dying appliance fails that PXE boot, as with PVS).
    const midBoot: string[] = [];
    await until(
      'a target of the victim mid-read',
      async () => {
        if (!macs.every((mac) => choice(mac))) return false;
        for (const [i, mac] of macs.entries())
          if (choice(mac) === victim.id && served(victim, mac) && !DISK_RESULT.test(await batch[i]!.serial()) && !midBoot.includes(mac)) midBoot.push(mac);
        return midBoot.length > 0;
      },
      300_000,
    );
    killedAt = Date.now();
    await victim.kill9();

    // Every target finishes, with the right bytes.
    const reports = await Promise.all(batch.map(finish));
    if (reports.some((r) => !r.ok))
      console.log(`a target failed after the kill (${JSON.stringify(reports)}); survivor's log:\n${survivor.proc!.lines.slice(-40).join('\n')}\nserial:\n${(await batch[reports.findIndex((r) => !r.ok)]!.serial()).slice(-1500)}`);
    for (const r of reports) expect(r).toMatchObject({ ok: true, sum: s.disk.expectedSum, sectorsRead: s.disk.sectorsRead });
    const done = JSON.parse((await reader.waitForLine(/"event":"done"/, 180_000)).input.replace(/^[^{]*/, ''));
    const resumed = reader.lines.map((l) => l.replace(/^[^{]*/, '')).filter((l) => l.includes('"resumed"')).map((l) => JSON.parse(l));
    expect(resumed.length).toBeGreaterThan(0);
    expect(done.bytes).toBe(s.disk.sizeBytes);
    const { createHash } = await import('node:crypto');
    expect(done.sha256).toBe(createHash('sha256').update(s.t.image).digest('hex'));

    const adopted = survivor.logs().find((e) => e.msg === 'floating address adopted' && e.address === victim.floating);
    expect(adopted, 'the survivor adopted the address').toBeTruthy();
    const adoptMs = Date.parse(adopted!.time as string) - killedAt;
    const resumedSessions = midBoot.map((mac) => survivor.logs().find((e) => e.msg === 'disk session opened' && e.client === mac && Date.parse(e.time as string) > killedAt)).filter(Boolean);
    expect(resumedSessions.length, "every target mid-boot read again from the survivor").toBe(midBoot.length);
    const firstResume = Math.min(...resumedSessions.map((e) => Date.parse(e!.time as string) - killedAt));
    console.log(
      `kill -9 of ${victim.name} with ${midBoot.length} targets mid-boot: address adopted by ${survivor.name} after ${(adoptMs / 1000).toFixed(2)} s; ` +
        `first sanboot read resumed on it after ${(firstResume / 1000).toFixed(2)} s; NBD reader resumed after ${(resumed[0].gapMs / 1000).toFixed(2)} s; all ${macs.length} targets finished with the right checksum`,
    );
    expect(adoptMs).toBeLessThan(TIMEOUT_MS + 2000);
    await Promise.all(batch.map((v) => v.dispose()));
  }, 900_000);

  it('restarts the killed appliance from its cache; it rejoins and takes its address back after the adopter lets go', async () => {
    const restartAt = Date.now();
    await victim.start();
    await until('the victim holds its own address again, and only it', async () => {
      const held = await heldAddresses(s);
      return held.get(victim.name)?.join() === victim.floating && held.get(survivor.name)?.join() === survivor.floating;
    }, 30_000);
    const released = survivor.logs().find((e) => e.msg === 'floating address released' && e.address === victim.floating && Date.parse(e.time as string) > restartAt);
    const taken = victim.logs().find((e) => e.msg === 'floating address taken' && e.address === victim.floating);
    expect(released && taken).toBeTruthy();
    expect(Date.parse(taken!.time as string)).toBeGreaterThanOrEqual(Date.parse(released!.time as string));
    console.log(`${victim.name} restarted: address back after ${((Date.parse(taken!.time as string) - restartAt) / 1000).toFixed(2)} s`);
  }, 120_000);

  for (const which of [0, 1])
    it(`cuts appliance ${which === 0 ? 'a' : 'b'}'s link: it lets go, its peer adopts, and it takes the address back once healed`, async () => {
      const cut = s.appliances[which]!;
      const other = s.appliances[1 - which]!;
      await cut.host.setLink(false);
      const at = Date.now();
      await until('the peer adopted the cut appliance\'s address', async () => (await heldAddresses(s)).get(other.name)?.includes(cut.floating), 15_000);
      expect((await cut.host.addresses()).includes(cut.floating)).toBe(false);
      console.log(`link of ${cut.name} cut: ${other.name} serves ${cut.floating} after ${((Date.now() - at) / 1000).toFixed(2)} s`);
      // The adopted address answers on the LAN.
      expect(await s.site.exec('curl', ['-sf', '--max-time', '5', `http://${cut.floating}/healthz`]).then((r) => JSON.parse(r.stdout).name)).toBe(other.name);
      await cut.host.setLink(true);
      await until('addresses back home', async () => {
        const held = await heldAddresses(s);
        return s.appliances.every((a) => held.get(a.name)?.join() === a.floating);
      }, 30_000);
    }, 120_000);

  it('never had one floating address on two machines', async () => {
    const r = await watch.stop();
    expect(r.samples).toBeGreaterThan(50);
    expect(r.conflicts).toEqual([]);
  });
});
