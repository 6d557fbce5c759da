/**
 * A real diskless Linux target (issue 10): a Debian vDisk made by
 * `bootfarm image build-linux` (images/linux), in a site of two appliances
 * on machines of their own with floating addresses, dnsmasq, and the control
 * plane stopped. A QEMU BIOS target's iPXE loads the kernel and initramfs
 * from the vDisk's boot area over HTTP; the initramfs attaches the root over
 * NBD from the chosen appliance; the image's login-less check
 * (images/linux/rootfs/bootfarm-check) prints on the serial port and powers off.
 *
 * - Device RAM cache: boots, prints its host name and personality (from the
 *   boot script's kernel command line), reads a file of the image, writes one.
 * - The appliance serving it is killed -9 mid-run: the survivor adopts its
 *   floating address and the target's root reads on (heartbeats after the kill).
 * - A second boot sees a clean disk (device RAM, appliance temporary) or its
 *   earlier file (appliance persistent).
 *
 * Builds the image once into .bootfarm/cache/linux (a few minutes the first
 * time: debootstrap from the Debian mirror), then reuses it.
 */
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildLinuxImage, type BuildLinuxResult } from '../../images/linux/build.js';
import { macOf } from '../support/fixtures.js';
import { canRunTargets, type Capability } from '../support/netns.js';
import { bios, plainSerial, type Vm } from '../support/qemu.js';
import { haSite, heldAddresses, type HaAppliance, type HaSite } from './support/ha-site.js';
import { until } from './support/site.js';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const CACHE = process.env.BOOTFARM_IMAGE_CACHE ?? join(REPO, '.bootfarm/cache/linux');
const MiB = 2 ** 20;

function canBuild(): Capability {
  const problems: string[] = [];
  const has = (tool: string) => ['/usr/sbin', '/usr/bin', '/sbin', '/bin'].some((d) => existsSync(join(d, tool)));
  for (const [tool, pkg] of [['debootstrap', 'debootstrap'], ['mkfs.ext4', 'e2fsprogs'], ['cpio', 'cpio'], ['gcc', 'gcc'], ['busybox', 'busybox-static']])
    if (!has(tool!)) problems.push(`${tool} not found (Debian package ${pkg})`);
  const kernels = existsSync('/lib/modules') ? readdirSync('/lib/modules').filter((v) => existsSync(`/boot/vmlinuz-${v}`)) : [];
  if (!kernels.length) problems.push('no kernel in /boot with its modules (Debian package linux-image-amd64)');
  if (!existsSync('/usr/include/linux/nbd-netlink.h')) problems.push('no /usr/include/linux/nbd-netlink.h (Debian package linux-libc-dev)');
  return problems.length ? { ok: false, reason: problems.join('; ') } : { ok: true };
}

const targets = canRunTargets();
const build = canBuild();
const can: Capability = targets.ok && build.ok ? { ok: true } : { ok: false, reason: [targets.reason, build.reason].filter(Boolean).join('; ') };

const MAC = { check: macOf(0xd001), failover: macOf(0xd002), temporary: macOf(0xd003), persistent: macOf(0xd004) };
const NAME = { check: 'kiosk-01', failover: 'kiosk-02', temporary: 'lab-tmp', persistent: 'lab-per' };
const PERSONALITY = { name: 'role', value: 'kiosk "lobby" & más ${x}' };
/** What the check prints: `BOOTFARM-CHECK <what>`. */
const CHECK = /BOOTFARM-CHECK ([^\r\n]*)\r?\n/g;
const FAILED = /bootfarm-initramfs: FAILED[^\n]*|Kernel panic[^\n]*|No bootable device/;

describe.skipIf(!can.ok)(`a diskless Linux target${can.ok ? '' : ` (skipped: ${can.reason})`}`, () => {
  let image: BuildLinuxResult;
  let s: HaSite;
  const vms: Vm[] = [];
  const vdisks = { ram: '', temporary: '', persistent: '' };

  beforeAll(async () => {
    image = await buildLinuxImage({ cacheDir: CACHE, log: (l) => console.log(`build-linux: ${l}`) });
    console.log(
      `Linux image ${image.key}: ${image.reused ? 'from the cache' : `built in ${image.seconds.toFixed(0)} s`}; ${image.sizeBytes / MiB} MiB raw, kernel ${(image.kernelBytes / MiB).toFixed(1)} MiB, ` +
        `initramfs ${(image.initrdBytes / MiB).toFixed(1)} MiB, root files ${(image.rootBytes / MiB).toFixed(0)} MiB (${image.kernelVersion})`,
    );
    s = await haSite({
      appliances: 2,
      targets: 0,
      peerTimeoutMs: 2000,
      async prepare(t) {
        const push = (name: string, writeCacheType: string) => t.addVdisk(image.path, { name, chunkSize: 4 * MiB, settings: { writeCacheType } });
        vdisks.ram = await push('debian-ram', 'device-ram');
        vdisks.temporary = await push('debian-temporary', 'appliance-temporary');
        vdisks.persistent = await push('debian-persistent', 'appliance-persistent');
        const target = (k: keyof typeof MAC, vdiskId: string, personality: { name: string; value: string }[] = []) =>
          t.fx.target(t.collectionId, { mac: MAC[k], name: NAME[k], assignments: [{ vdiskId }], personality });
        await target('check', vdisks.ram, [PERSONALITY]);
        // The check reads its mode from personality strings: this one keeps reading its root until the connection came back.
        await target('failover', vdisks.ram, [{ name: 'bootfarm-check.mode', value: 'failover' }, { name: 'bootfarm-check.seconds', value: '300' }]);
        await target('temporary', vdisks.temporary);
        await target('persistent', vdisks.persistent);
      },
    });
    await until('both appliances hold their own floating address', async () => {
      const held = await heldAddresses(s);
      return s.appliances.every((a) => held.get(a.name)?.join() === a.floating);
    }, 30_000);
  }, 1_800_000);

  afterAll(async () => {
    await Promise.all(vms.map((v) => v.dispose().catch(() => undefined)));
    await s?.destroy();
  });

  /** Powers a target on; its serial lines are timed as they arrive (host clock). */
  const powerOn = async (mac: string) => {
    const vm = await bios({ site: s.site, tap: await s.site.addTap(), mac, memoryMiB: 512 });
    vms.push(vm);
    const seen: { line: string; at: number }[] = [];
    let stop = false;
    const watching = (async () => {
      while (!stop) {
        const lines = [...plainSerial(await vm.serial()).matchAll(CHECK)].map((m) => m[1]!);
        for (const line of lines.slice(seen.length)) seen.push({ line, at: Date.now() });
        if (vm.process.exit) break;
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    return {
      vm,
      seen,
      /** Waits for the check's last line and for the machine to power off; returns every check line. */
      async finish(timeoutMs = 600_000) {
        await vm.waitForSerial(/BOOTFARM-CHECK done uptime=[\d.]+\r?\n/, timeoutMs, FAILED);
        const exit = await Promise.race([vm.exited, new Promise<null>((r) => setTimeout(() => r(null), 60_000))]);
        stop = true;
        await watching;
        expect(exit, 'the check powered the machine off').toMatchObject({ code: 0 });
        return [...plainSerial(await vm.serial()).matchAll(CHECK)].map((m) => m[1]!);
      },
    };
  };
  const value = (lines: string[], key: string) => lines.find((l) => l.startsWith(`${key}=`))?.slice(key.length + 1);
  /** The appliances that opened the target's root (NBD export) between `since` and `until` (ms). */
  const servedBy = (mac: string, since = 0, until = Infinity) =>
    s.appliances.filter((a) =>
      a.logs().some((e) => e.msg === 'NBD export opened' && String(e.export).includes(`.${mac.replace(/:/g, '')}.`) && Date.parse(e.time as string) >= since && Date.parse(e.time as string) <= until),
    );

  it('boots the Linux vDisk: host name and personality from the boot script, a file of the image read, a file written (device RAM)', async () => {
    const t = await powerOn(MAC.check);
    const lines = await t.finish();
    const startAt = t.seen.find((l) => l.line.startsWith('start '))!.at;
    console.log(`${NAME.check}: power-on to the first line of the check (root mounted, init running) in ${((startAt - t.vm.startedAt) / 1000).toFixed(1)} s (TCG)`);

    expect(value(lines, 'hostname')).toBe(NAME.check);
    expect(value(lines, 'release')).toBe(image.release);
    // The serial file is read as bytes (latin1): the UTF-8 of the value, as the guest wrote it.
    expect(lines).toContain(Buffer.from(`personality ${PERSONALITY.name}=${PERSONALITY.value}`, 'utf8').toString('latin1'));
    expect(value(lines, 'previous')).toBe('none');
    expect(lines.find((l) => l.startsWith('wrote='))).toMatch(new RegExp(`^wrote=boot [0-9a-f-]{36} of ${NAME.check} read-back=ok$`));
    // The kernel came from the boot area over HTTP, the root over NBD (read-only: the writes stayed in the target's RAM).
    const [a, ...others] = servedBy(MAC.check);
    expect(others).toEqual([]);
    expect(a!.logs().some((e) => e.msg === 'disk session opened' && e.client === MAC.check && e.protocol === 'http')).toBe(true);
    expect(a!.logs().find((e) => e.msg === 'NBD export opened' && String(e.export).includes(MAC.check.replace(/:/g, '')))).toMatchObject({ readOnly: true });
  }, 900_000);

  let victim: HaAppliance;
  it('keeps running when the appliance serving its root is killed -9: the survivor adopts the address and the root reads on', async () => {
    const t = await powerOn(MAC.failover);
    await t.vm.waitForSerial(/BOOTFARM-CHECK heartbeat 3 /, 600_000, FAILED);
    const [serving, ...others] = servedBy(MAC.failover);
    expect(others).toEqual([]);
    victim = serving!;
    const survivor = s.appliances.find((a) => a !== victim)!;
    const beats = t.seen.length;
    const killedAt = Date.now();
    await victim.kill9();

    const lines = await t.finish();
    for (const l of lines.filter((x) => x.startsWith('heartbeat '))) expect(l).toMatch(/ read=ok /);
    expect(lines.find((l) => l.startsWith('after-failover '))).toBe(`after-failover release=${image.release} write=ok`);
    // The guest saw its connection die and come back on the same address, now the survivor's.
    const serial = plainSerial(await t.vm.serial());
    const lost = /\[ *([\d.]+)\] bootfarm-nbd: connection of \/dev\/nbd0 to (\S+) lost/.exec(serial);
    const reconnected = /bootfarm-nbd: \/dev\/nbd0 reconnected to (\S+) after ([\d.]+) s/.exec(serial);
    expect(lost?.[2]).toBe(`${victim.floating}:10809`);
    expect(reconnected?.[1]).toBe(`${victim.floating}:10809`);
    const adopted = survivor.logs().find((e) => e.msg === 'floating address adopted' && e.address === victim.floating);
    expect(adopted, 'the survivor adopted the address').toBeTruthy();
    expect(servedBy(MAC.failover, killedAt)).toEqual([survivor]);
    // The second marker: heartbeats whose reads ran after the connection died (guest clock), read from the survivor.
    const lostAt = Number(lost![1]);
    const after = t.seen.slice(beats).filter((l) => / read=ok reconnects=1$/.test(l.line) && Number(/uptime=([\d.]+)/.exec(l.line)![1]) > lostAt);
    expect(after.length, 'heartbeats after the kill').toBeGreaterThanOrEqual(5);
    console.log(
      `kill -9 of ${victim.name} under ${NAME.failover}: ${survivor.name} adopted ${victim.floating} after ${((Date.parse(adopted!.time as string) - killedAt) / 1000).toFixed(2)} s; ` +
        `bootfarm-nbd reconnected to it ${reconnected![2]} s after the connection died (guest clock); kill to the first heartbeat after it on the serial port: ${((after[0]!.at - killedAt) / 1000).toFixed(2)} s`,
    );
  }, 900_000);

  it('brings the killed appliance back (its address returns to it)', async () => {
    await victim.start();
    await until('every appliance holds its own address again', async () => {
      const held = await heldAddresses(s);
      return s.appliances.every((a) => held.get(a.name)?.join() === a.floating);
    }, 60_000);
  }, 120_000);

  const bootTwice = async (mac: string) => {
    const t0 = Date.now();
    const first = await (await powerOn(mac)).finish();
    const t1 = Date.now();
    const second = await (await powerOn(mac)).finish();
    const by = (since: number, until = Infinity) => servedBy(mac, since, until).map((a) => a.name).join(',');
    console.log(`${mac}: first boot's root from ${by(t0, t1)}, second boot's from ${by(t1)}`);
    return { first, second, wrote: first.find((l) => l.startsWith('wrote='))!.replace(/^wrote=| read-back=ok$/g, '') };
  };

  it('a second boot sees a clean disk with a device RAM cache and an appliance temporary cache', async () => {
    for (const [mac, name] of [[MAC.check, NAME.check], [MAC.temporary, NAME.temporary]] as const) {
      const r = await bootTwice(mac);
      expect(value(r.first, 'hostname')).toBe(name);
      expect(r.first.find((l) => l.startsWith('wrote='))).toMatch(/read-back=ok$/);
      expect(value(r.second, 'previous'), `${name}: second boot`).toBe('none');
    }
    // The temporary cache lived on the appliance (writable export), the RAM cache on the target (read-only export).
    const exp = (mac: string) => s.appliances.flatMap((a) => a.logs()).filter((e) => e.msg === 'NBD export opened' && String(e.export).includes(mac.replace(/:/g, '')));
    expect(exp(MAC.temporary).every((e) => e.readOnly === false)).toBe(true);
    expect(exp(MAC.check).every((e) => e.readOnly === true)).toBe(true);
  }, 1_200_000);

  it('a second boot sees the file its first boot wrote with an appliance persistent cache', async () => {
    const r = await bootTwice(MAC.persistent);
    expect(value(r.first, 'previous')).toBe('none');
    expect(value(r.second, 'previous')).toBe(r.wrote);
  }, 1_200_000);
});
