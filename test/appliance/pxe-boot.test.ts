/**
 * Real targets boot from a real appliance. A site namespace holds a bridge,
 * dnsmasq (on a DHCP host of its own, addresses only), the appliance (`bootfarm
 * appliance run`, the real process, its cloud unreachable: it boots from its
 * signed cached snapshot and verified cache) and QEMU targets on taps:
 *
 * - BIOS (e1000, whose ROM is iPXE): DHCP + ProxyDHCP -> boot script ->
 *   sanboot over HTTP of the 64 MiB test vDisk, whose boot sector reads 2048
 *   sectors through int 13h and prints their CRC-32: compared with the image's.
 * - UEFI (OVMF, the firmware's own PXE): ProxyDHCP -> TFTP snponly.efi -> iPXE
 *   -> boot script -> the disk's sectors read over HTTP.
 * - An unknown BIOS machine, auto-added at its first boot, boots the template's vDisk.
 */
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestDisk, DISK_RESULT, parseDiskReport, type TestDisk } from '../support/boot-disk.js';
import { macOf } from '../support/fixtures.js';
import { canRunTargets, createSite, type ManagedProcess, type Site } from '../support/netns.js';
import { bios, NO_BOOTABLE_DEVICE, uefi } from '../support/qemu.js';
import { testSite, until, type TestSite } from './support/site.js';

const can = canRunTargets();
const ADDRESS = '192.0.2.10';
const MAC = { bios: macOf(0xc001), uefi: macOf(0xc002), stranger: macOf(0xc0ff) };

describe.skipIf(!can.ok)(`PXE boot of real targets${can.ok ? '' : ` (skipped: ${can.reason})`}`, () => {
  let t: TestSite;
  let disk: TestDisk;
  let site: Site;
  let appliance: ManagedProcess;
  const events: Record<string, unknown>[] = [];

  beforeAll(async () => {
    const dir = await mkdtemp(join(tmpdir(), 'bootfarm-pxe-'));
    disk = await buildTestDisk(join(dir, 'test.raw'), { sizeMiB: 64, seed: 5 });
    t = await testSite({ imagePath: disk.path });
    for (const mac of [MAC.bios, MAC.uefi]) await t.fx.target(t.collectionId, { mac, assignments: [{ vdiskId: t.vdiskId }] });
    const template = (await t.fx.listAll(`/v1/targets?siteId=${t.siteId}`)).items.find((x) => x.mac === MAC.bios);
    await t.fx.patch(`/v1/sites/${t.siteId}`, { proxyDhcp: { enabled: true }, defaultCollectionId: t.collectionId, bootstrap: { verbose: true } });
    await t.fx.patch(`/v1/collections/${t.collectionId}`, { templateTargetMac: template.mac, autoAdd: { prefix: 'pxe-', numberLength: 3, suffix: '', startNumber: 1 } });
    await t.fx.patch('/v1/farm', { autoAdd: { enabled: true, siteId: t.siteId } });

    // Enrolled for 192.0.2.10:80 with its boot services; synced on the host before it moves into the site.
    const app = await t.enrol('pxe-a', { address: ADDRESS, port: 80, bootServices: true });
    const warm = await t.run(app.dataDir, { http: { host: '127.0.0.1', port: 0 } });
    await until('synced', () => warm.cache.inventory()[0]?.state === 'verified', 60_000);
    await warm.stop();

    site = await createSite();
    await site.addAddress(ADDRESS);
    await site.startDhcp({ separateHost: true });
    appliance = site.spawnNode('bin/bootfarm.js', ['appliance', 'run', '--data-dir', app.dataDir], { name: 'appliance' });
    appliance.process.stdout?.on('data', () => undefined);
    await appliance.waitForLine(/"msg":"appliance listening"/, 30_000);
  }, 180_000);

  // The appliance's JSON log, parsed up to now.
  const seen = new Set<string>();
  const collect = () => {
    for (const l of appliance.lines) {
      if (seen.has(l)) continue;
      seen.add(l);
      try {
        events.push(JSON.parse(l.replace(/^[^{]*/, '')));
      } catch {
        /* not a log line */
      }
    }
  };

  afterAll(async () => {
    await site?.destroy();
    await t?.api.close();
  });

  const logged = (pred: (e: Record<string, unknown>) => boolean) => {
    collect();
    return events.find(pred);
  };

  it('boots a BIOS target from the vDisk: the sectors it read through int 13h match the image', async () => {
    const tap = await site.addTap();
    const vm = await bios({ site, tap, mac: MAC.bios });
    try {
      const m = await vm.waitForSerial(DISK_RESULT, 240_000, NO_BOOTABLE_DEVICE);
      const report = parseDiskReport(m[0])!;
      expect(report, (await vm.serial()).slice(-2000)).toMatchObject({ ok: true, sum: disk.expectedSum, sectorsRead: disk.sectorsRead });
      expect(await vm.serial()).toContain(disk.message);
      const seconds = ((Date.now() - vm.startedAt) / 1000).toFixed(1);
      console.log(`BIOS target: power-on to disk checksum in ${seconds} s (TCG)`);
      // The appliance's log line may trail the VM's serial output by a moment.
      await until('boot script logged', () => logged((e) => e.msg === 'boot script' && e.mac === MAC.bios && e.outcome === 'vdisk'), 10_000);
    } finally {
      await vm.dispose();
    }
  }, 300_000);

  it('boots a UEFI target through ProxyDHCP and TFTP to iPXE, which reads the disk over HTTP', async () => {
    const tap = await site.addTap();
    const served = async () => Number(/bootfarm_disk_bytes_served_total\{vdisk="[^"]+"\} (\d+)/.exec((await site.exec('curl', ['-sf', `http://${ADDRESS}/metrics`])).stdout)?.[1] ?? 0);
    const before = await served();
    const vm = await uefi({ site, tap, mac: MAC.uefi });
    try {
      // The boot script was asked for by the iPXE that TFTP delivered, and the disk was read.
      await until('UEFI boot script and disk reads', () => logged((e) => e.msg === 'disk session opened' && e.client === MAC.uefi), 300_000);
      const script = logged((e) => e.msg === 'boot script' && e.mac === MAC.uefi);
      expect(script).toMatchObject({ outcome: 'vdisk', arch: 'x86_64' });
      console.log(`UEFI target: power-on to disk reads in ${((Date.now() - vm.startedAt) / 1000).toFixed(1)} s (TCG)`);
      // Sectors really went out (not just a HEAD), and the script ran: its verbose lines are on the console.
      await until('disk bytes served', async () => (await served()) > before, 60_000);
      await vm.waitForSerial(/bootfarm: [^\r\n]*vDisk/, 60_000);
      // The ProxyDHCP answered it and TFTP sent it snponly.efi.
      const metrics = (await site.exec('curl', ['-sf', `http://${ADDRESS}/metrics`])).stdout;
      expect(Number(/bootfarm_proxydhcp_packets_total\{outcome="replied"\} (\d+)/.exec(metrics)?.[1]), metrics).toBeGreaterThan(0);
      expect(Number(/bootfarm_tftp_transfers\{state="completed"\} (\d+)/.exec(metrics)?.[1]), metrics).toBeGreaterThan(0);
    } finally {
      await vm.dispose();
    }
  }, 360_000);

  it('adds an unknown machine at its first boot and boots it with the template vDisk, cloud unreachable', async () => {
    const tap = await site.addTap();
    const vm = await bios({ site, tap, mac: MAC.stranger });
    try {
      const m = await vm.waitForSerial(DISK_RESULT, 240_000, NO_BOOTABLE_DEVICE);
      expect(parseDiskReport(m[0])).toMatchObject({ ok: true, sum: disk.expectedSum });
      expect(await until('auto-add logged', () => logged((e) => e.msg === 'target added automatically at its first boot' && e.mac === MAC.stranger), 10_000)).toMatchObject({ name: 'pxe-001' });
    } finally {
      await vm.dispose();
    }
  }, 300_000);
});
