/**
 * The real-target harness, proved without bootfarm's own servers: the test vDisk
 * boots and checks itself, QEMU reaches a site's DHCP through a tap, and a
 * site leaves nothing behind. Boot timings under TCG are printed.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  assembleBootSector,
  bootSector,
  BOOT_SECTOR_BIN,
  parameterSector,
  buildTestDisk,
  checksumRanges,
  DISK_RESULT,
  parseDiskReport,
  readRanges,
  type TestDisk,
} from './support/boot-disk.js';
import { canRunQemu, canRunTargets, canSimulateLoss, createSite, listSiteNamespaces, spawnProcess, sweepStaleSites, type Site } from './support/netns.js';
import { bios, localDisk, NO_BOOTABLE_DEVICE, plainSerial, uefi, userNet } from './support/qemu.js';

const log = process.env.BOOTFARM_TEST_LOG ? (line: string) => console.error(line) : undefined;
const qemu = canRunQemu();
const targets = canRunTargets();
const loss = canSimulateLoss();
const hasNasm = (() => {
  try {
    execFileSync('nasm', ['-v'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

function seconds(since: number): string {
  return `${((Date.now() - since) / 1000).toFixed(1)} s`;
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

let dir: string;
let disk: TestDisk;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bootfarm-harness-'));
  disk = await buildTestDisk(join(dir, 'disk.img'), { seed: 7 });
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('test vDisk', () => {
  it.skipIf(!hasNasm)('the checked-in boot.bin is boot.asm assembled by nasm', async () => {
    expect((await assembleBootSector()).equals(await readFile(BOOT_SECTOR_BIN))).toBe(true);
  });

  it('is 64 MiB: the boot sector with an empty partition table, the parameter sector, 2048 sectors read up to the last one', async () => {
    expect(statSync(disk.path).size).toBe(64 << 20);
    const head = Buffer.alloc(1024);
    const file = await open(disk.path, 'r');
    await file.read(head, 0, 1024, 0);
    await file.close();
    expect(head.subarray(0, 512).equals(await bootSector())).toBe(true);
    expect(head.readUInt16LE(510)).toBe(0xaa55);
    // iPXE's int13 guesses the geometry from the partition table: anything there breaks sanboot.
    expect(head.subarray(0x1be, 0x1fe).every((b) => b === 0)).toBe(true);
    expect(head.subarray(512, 1024).equals(parameterSector(disk.ranges, disk.message))).toBe(true);
    expect(head.subarray(512 + 64, 512 + 64 + disk.message.length + 1).toString('latin1')).toBe(`${disk.message}\0`);
    expect(disk.ranges).toEqual(readRanges(disk.sectors));
    expect(disk.sectorsRead).toBe(2048);
    expect(Math.max(...disk.ranges.map((r) => r.lba + r.sectors))).toBe(disk.sectors);
    expect(disk.ranges.some((r) => r.lba < 65_536 && r.lba + r.sectors > 65_536)).toBe(true);
    expect(disk.okLine).toMatch(DISK_RESULT);
  });

  it('the sum depends on the seed and on every byte read, and on no byte outside the ranges', async () => {
    const same = await buildTestDisk(join(dir, 'same.img'), { seed: 7 });
    const other = await buildTestDisk(join(dir, 'other.img'), { seed: 8 });
    expect(same.expectedSum).toBe(disk.expectedSum);
    expect(other.expectedSum).not.toBe(disk.expectedSum);

    const poke = async (offset: number) => {
      const file = await open(same.path, 'r+');
      const b = Buffer.alloc(1);
      await file.read(b, 0, 1, offset);
      b[0] = b[0]! ^ 0x01;
      await file.write(b, 0, 1, offset);
      await file.close();
      return checksumRanges(same.path, same.ranges);
    };
    expect(await poke((disk.sectors - 1) * 512 + 511)).not.toBe(disk.expectedSum); // last byte of the disk
    await poke((disk.sectors - 1) * 512 + 511);
    expect(await poke(500 * 512)).toBe(disk.expectedSum); // LBA 500 is not read
    await rm(same.path);
    await rm(other.path);
  });

  it('refuses sizes below 64 MiB and messages the boot sector cannot print', async () => {
    await expect(buildTestDisk(join(dir, 'small.img'), { sizeMiB: 8 })).rejects.toThrow(/64 MiB|>= 64/);
    await expect(buildTestDisk(join(dir, 'bad.img'), { message: 'line\nbreak' })).rejects.toThrow(/printable/);
    await expect(buildTestDisk(join(dir, 'bad.img'), { message: 'x'.repeat(401) })).rejects.toThrow(/printable/);
  });

  it.skipIf(!qemu.ok)(`boots from a local IDE drive and prints the expected sum (${qemu.reason ?? 'qemu present'})`, async () => {
    const vm = await localDisk({ disk: disk.path, log });
    try {
      await vm.waitForSerial(DISK_RESULT, 120_000);
      const exit = await vm.exited;
      console.info(`[harness] local IDE boot of the test disk under TCG: ${seconds(vm.startedAt)} (QEMU start to exit)`);
      const report = parseDiskReport(await vm.serial());
      expect(report, plainSerial(await vm.serial())).toMatchObject({ ok: true, sum: disk.expectedSum, sectorsRead: 2048 });
      expect(report!.message).toContain(disk.message);
      expect(await vm.serial()).toContain(disk.okLine);
      expect(exit).toMatchObject({ code: 1, guestStatus: 0 });
    } finally {
      await vm.dispose();
    }
  }, 180_000);

  it.skipIf(!qemu.ok)('a disk whose ranges run past its end reports a read error and a failure status', async () => {
    // The same boot sector on an image cut to 32 MiB: the ranges near the (64 MiB) end do not exist.
    const cut = join(dir, 'cut.img');
    const src = await open(disk.path, 'r');
    const buf = Buffer.alloc(32 << 20);
    await src.read(buf, 0, buf.length, 0);
    await src.close();
    await writeFile(cut, buf);
    const vm = await localDisk({ disk: cut, log });
    try {
      await vm.waitForSerial(DISK_RESULT, 120_000);
      const report = parseDiskReport(await vm.serial());
      expect(report).toMatchObject({ ok: false, lba: 65_535 });
      expect(await vm.exited).toMatchObject({ code: 5, guestStatus: 2 });
    } finally {
      await vm.dispose();
      await rm(cut, { force: true });
    }
  }, 180_000);

  it.skipIf(!qemu.ok)('boots over HTTP through iPXE sanboot on user-mode networking (no root)', async () => {
    const server = await serveDisk(disk);
    const vm = await userNet({ bootfile: `http://10.0.2.2:${server.port}/boot.ipxe`, log });
    try {
      await vm.waitForSerial(DISK_RESULT, 150_000, NO_BOOTABLE_DEVICE);
      const exit = await vm.exited;
      console.info(`[harness] iPXE HTTP sanboot of the test disk (user-mode net) under TCG: ${seconds(vm.startedAt)}`);
      expect(parseDiskReport(await vm.serial()), plainSerial(await vm.serial())).toMatchObject({
        ok: true,
        sum: disk.expectedSum,
        sectorsRead: 2048,
      });
      expect(exit.guestStatus).toBe(0);
      expect(server.requests).toContain('GET /boot.ipxe');
      expect(server.requests).toContain('HEAD /disk.img');
      expect(server.requests.filter((r) => r.startsWith('GET /disk.img bytes=')).length).toBeGreaterThan(0);
    } finally {
      await vm.dispose();
      await server.close();
    }
  }, 240_000);
});

describe.skipIf(!targets.ok)(`a site with real targets (${targets.reason ?? 'root, ip netns, qemu, OVMF, dnsmasq present'})`, () => {
  let site: Site | undefined;
  afterEach(async () => {
    await site?.destroy();
    site = undefined;
  });

  it('creates bf-<random> with br0 at 192.0.2.1/24, lo up, no route out, and extra addresses inside TEST-NET-1 only', async () => {
    site = await createSite({ log });
    expect(site.name).toMatch(/^bf-[a-z0-9]{6}$/);
    expect(listSiteNamespaces()).toContain(site.name);
    await site.addAddress('192.0.2.10');
    await site.addAddress('192.0.2.11/24');
    const addrs = (await site.exec('ip', ['-4', '-o', 'addr', 'show', 'dev', 'br0'])).stdout;
    expect(addrs).toContain('192.0.2.1/24');
    expect(addrs).toContain('192.0.2.10/24');
    expect(addrs).toContain('192.0.2.11/24');
    expect((await site.exec('ip', ['-o', 'link', 'show', 'lo'])).stdout).toMatch(/UP/);
    expect((await site.exec('ip', ['-4', 'route'])).stdout.trim()).toBe('192.0.2.0/24 dev br0 proto kernel scope link src 192.0.2.1');
    await expect(site.addAddress('10.0.0.1')).rejects.toThrow(/TEST-NET-1/);
    await expect(site.addAddress('192.0.2.12/16')).rejects.toThrow(/TEST-NET-1/);
    await expect(createSite({ bridgeAddress: '198.51.100.1/24' })).rejects.toThrow(/TEST-NET-1/);
  });

  it('a BIOS target (e1000, iPXE ROM) on a tap gets an address from the site dnsmasq', async () => {
    site = await createSite({ log });
    const dhcp = await site.startDhcp();
    const tap = await site.addTap();
    const mac = '52:54:00:00:05:01';
    const vm = await bios({ site, tap, mac, log });
    const address = await dhcp.waitForAck(mac, 120_000);
    console.info(`[harness] BIOS target (e1000/iPXE) to DHCPACK under TCG: ${seconds(vm.startedAt)}`);
    expect(address).toMatch(/^192\.0\.2\.1\d\d$/);
    expect(dhcp.lines.some((l) => l.includes(`DHCPDISCOVER(br0) ${mac}`))).toBe(true);
    // The e1000 ROM is iPXE, so its first DHCP already says user class iPXE.
    expect(dhcp.lines.some((l) => /user class: iPXE/.test(l))).toBe(true);
    expect(await readFile(dhcp.leaseFile, 'utf8').catch(() => '')).toContain(mac);
    await vm.kill();
  }, 180_000);

  it("a UEFI target's own firmware PXE (OVMF, virtio-net without ROM) reaches a DHCP server on its own host, captured", async () => {
    site = await createSite({ log });
    const dhcp = await site.startDhcp({ separateHost: true });
    expect(dhcp.netns).toBe(`${site.name}-dhcp`);
    // UDP 67 stays free in the site's namespace for a ProxyDHCP server, without SO_REUSEADDR.
    const bind67 = "const s = require('node:dgram').createSocket('udp4'); s.bind(67, () => { console.log('bound'); s.close(); });";
    expect((await site.exec(process.execPath, ['-e', bind67])).stdout.trim()).toBe('bound');
    const pcap = join(site.dir, 'dhcp.pcap');
    const capture = await site.capture({ file: pcap, filter: 'udp port 67 or udp port 68' });
    const tap = await site.addTap();
    const mac = '52:54:00:00:05:02';
    const vm = await uefi({ site, tap, mac, log });
    await dhcp.waitForLine(new RegExp(`DHCPDISCOVER\\(eth0\\) ${mac}`), 180_000);
    console.info(`[harness] UEFI target (OVMF) to its first DHCPDISCOVER under TCG: ${seconds(vm.startedAt)}`);
    await dhcp.waitForLine(/vendor class: PXEClient:Arch:00007/, 5_000);
    expect(plainSerial(await vm.serial())).toMatch(/PXE/);
    await vm.kill();
    await capture.kill();
    // A pcap header (24 bytes) and at least one DHCPDISCOVER (> 300 bytes).
    expect(statSync(pcap).size).toBeGreaterThan(24 + 300);
  }, 240_000);

  it('runs a Node server inside the namespace, reachable at an added address from another process inside', async () => {
    site = await createSite({ log });
    await site.addAddress('192.0.2.10');
    const entry = join(site.dir, 'echo-server.ts');
    await writeFile(
      entry,
      `import { createServer } from 'node:http';
const port: number = 8080;
createServer((req, res) => res.end('hello from ' + req.socket.localAddress)).listen(port, '192.0.2.10', () => console.log('listening'));
`,
    );
    const server = site.spawnNode(entry);
    await server.waitForLine(/^listening$/, 20_000);
    const client = await site.exec(process.execPath, ['-e', "fetch('http://192.0.2.10:8080/').then(r => r.text()).then(t => console.log(t))"]);
    expect(client.stdout.trim()).toBe('hello from 192.0.2.10');
    // Not reachable from the host: the address exists only inside the namespace.
    expect(execFileSync('ip', ['-4', '-o', 'addr'], { encoding: 'utf8' })).not.toContain('192.0.2.10');
  }, 60_000);

  it.skipIf(!loss.ok)(`drops packets with setPacketLoss and stops when set to 0 (${loss.reason ?? 'nft present'})`, async () => {
    site = await createSite({ log });
    await site.addAddress('192.0.2.10');
    // 1000 UDP round trips between two sockets inside the namespace: each direction is a packet.
    const probe = `const d = require('node:dgram');
const srv = d.createSocket('udp4'), cli = d.createSocket('udp4');
srv.on('message', (m, r) => srv.send(m, r.port, r.address));
let got = 0; cli.on('message', () => got++);
srv.bind(9999, '192.0.2.10', () => cli.bind(0, '192.0.2.1', async () => {
  for (let i = 0; i < 1000; i++) { cli.send(Buffer.from([i & 255]), 9999, '192.0.2.10'); if (i % 50 === 0) await new Promise(r => setTimeout(r, 5)); }
  setTimeout(() => { console.log(got); process.exit(0); }, 500);
}));`;
    const roundTrips = async () => Number((await site!.exec(process.execPath, ['-e', probe])).stdout.trim());
    expect(await roundTrips()).toBe(1000);
    await site.setPacketLoss(20);
    const lossy = await roundTrips();
    expect(lossy).toBeGreaterThan(540); // 0.8 * 0.8 = 64 % expected
    expect(lossy).toBeLessThan(740);
    await site.setPacketLoss(0);
    expect(await roundTrips()).toBe(1000);
  }, 60_000);

  it('destroy() kills every process it started and deletes the namespace and its folder, twice without error', async () => {
    site = await createSite({ log });
    const dhcp = await site.startDhcp();
    const tap = await site.addTap();
    const vm = await bios({ site, tap, mac: '52:54:00:00:05:03', log });
    const sleeper = site.spawn('sleep', ['600']);
    await new Promise((r) => setTimeout(r, 500));
    const pids = [dhcp.pid, vm.process.pid, sleeper.pid];
    expect(pids.every(isRunning)).toBe(true);
    const { name, dir: siteDir } = site;

    await site.destroy();
    await site.destroy();
    expect(pids.filter(isRunning)).toEqual([]);
    expect(listSiteNamespaces()).not.toContain(name);
    expect(existsSync(`/run/netns/${name}`)).toBe(false);
    expect(existsSync(siteDir)).toBe(false);
    expect(await vm.exited).toMatchObject({ guestStatus: null });
  }, 60_000);

  it('destroy() also removes the DHCP host namespace', async () => {
    site = await createSite({ log });
    const dhcp = await site.startDhcp({ separateHost: true });
    await site.destroy();
    expect(isRunning(dhcp.pid)).toBe(false);
    expect(existsSync(`/run/netns/${dhcp.netns}`)).toBe(false);
  }, 60_000);

  it('sweepStaleSites removes namespaces whose owner is gone, with what runs inside, and spares live ones', async () => {
    site = await createSite({ log });
    const stale = `bf-zz${Math.random().toString(36).slice(2, 6).padEnd(4, '0')}`;
    execFileSync('ip', ['netns', 'add', stale]);
    const orphan = spawnProcess('sleep', ['600'], { netns: stale });
    // An owner record naming a process that has exited.
    const dead = spawnProcess('true', []);
    await dead.exited;
    const owners = join(tmpdir(), 'bootfarm-sites');
    await writeFile(join(owners, `${stale}.json`), JSON.stringify({ pid: dead.pid, dir: join(tmpdir(), 'bootfarm-none') }));

    const removed = await sweepStaleSites();
    expect(removed).toContain(stale);
    expect(removed).not.toContain(site.name);
    expect(listSiteNamespaces()).toContain(site.name);
    expect(listSiteNamespaces()).not.toContain(stale);
    expect((await orphan.exited).signal).toBe('SIGKILL');
  }, 60_000);
});

/** A minimal HTTP server for iPXE: /boot.ipxe sanboots /disk.img, served with HEAD and exact byte ranges. */
async function serveDisk(d: TestDisk): Promise<{ port: number; requests: string[]; close(): Promise<void> }> {
  const requests: string[] = [];
  const image = await open(d.path, 'r');
  let port = 0;
  const server: Server = createServer(async (req, res) => {
    const range = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
    requests.push(`${req.method} ${req.url}${range ? ` bytes=${range[1]}-${range[2]}` : ''}`);
    if (req.url === '/boot.ipxe') {
      res.end(`#!ipxe\necho harness: sanboot of the test disk\nsanboot http://10.0.2.2:${port}/disk.img\n`);
    } else if (req.url === '/disk.img' && req.method === 'HEAD') {
      res.writeHead(200, { 'content-length': d.sizeBytes, 'accept-ranges': 'bytes' }).end();
    } else if (req.url === '/disk.img' && range) {
      const start = Number(range[1]);
      const end = Math.min(Number(range[2]), d.sizeBytes - 1);
      const buf = Buffer.alloc(end - start + 1);
      await image.read(buf, 0, buf.length, start);
      res.writeHead(206, { 'content-length': buf.length, 'content-range': `bytes ${start}-${end}/${d.sizeBytes}` }).end(buf);
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
  return {
    port,
    requests,
    close: async () => {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
      await image.close();
    },
  };
}
