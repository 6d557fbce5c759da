/**
 * Linux vDisks on a real appliance, the control plane stopped: the boot
 * script boots the kernel and initramfs of the version's boot area with the
 * target's command line; /kernel and /initrd serve exactly those bytes from
 * the verified cache (ranges relative to the file); a vDisk without a boot
 * area, or with a malformed one, is sanbooted as before, logged, and never
 * takes the appliance down.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ApplianceHandle } from '../../appliance/daemon.js';
import { decodeCmdlineValue } from '../../appliance/boot/linux-cmdline.js';
import { writeDisk } from '../../images/linux/build.js';
import { BOOT_HEADER_SIZE } from '../../model/linux-boot.js';
import { macOf } from '../support/fixtures.js';
import { testSite, until, type LogLine, type TestSite } from './support/site.js';

const MiB = 2 ** 20;
let t: TestSite;
let h: ApplianceHandle;
let dir: string;
const logs: LogLine[] = [];
const kernel = randomBytes(700 * 1024 + 123);
const initrd = randomBytes(300 * 1024 + 7);
const ids = { linux: '', bad: '', plain: '' };
const MAC = { linux: macOf(0xc001), bad: macOf(0xc002), plain: '' };
const PERSONALITY = [
  { name: 'role', value: 'kiosk "lobby" & más' },
  { name: 'site.code', value: 'B-12' },
];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bootfarm-linux-http-'));
  t = await testSite({ imageMiB: 2 });
  ids.plain = t.vdiskId;
  MAC.plain = (await t.fx.listAll(`/v1/targets?siteId=${t.siteId}`)).items[0].mac;

  const good = join(dir, 'linux.raw');
  const layout = await writeDisk({ path: good, sizeBytes: 64 * MiB, kernel, initrd, cmdline: 'console=ttyS0,115200 panic=30 init=/sbin/init' });
  // The same disk whose header says the kernel has other bytes (checksum of the header itself made right).
  const bad = join(dir, 'bad.raw');
  const bytes = await readFile(good);
  const header = bytes.subarray(layout.bootOffset, layout.bootOffset + BOOT_HEADER_SIZE);
  header[32] = header[32]! ^ 0xff;
  createHash('sha256').update(header.subarray(0, BOOT_HEADER_SIZE - 32)).digest().copy(header, BOOT_HEADER_SIZE - 32);
  await writeFile(bad, bytes);

  ids.linux = await t.addVdisk(good, { name: 'debian', settings: { writeCacheType: 'device-ram' } });
  ids.bad = await t.addVdisk(bad, { name: 'broken' });
  await t.fx.target(t.collectionId, { mac: MAC.linux, name: 'kiosk-01', assignments: [{ vdiskId: ids.linux }], personality: PERSONALITY, writeCacheSizeMb: 128 });
  await t.fx.target(t.collectionId, { mac: MAC.bad, assignments: [{ vdiskId: ids.bad }] });
  const app = await t.enrol('linux-app');
  h = await t.run(app.dataDir, { logs });
  await until('synced', () => h.cache.inventory().length === 3 && h.cache.inventory().every((e) => e.state === 'verified'), 60_000);
  await t.stopApi();
}, 120_000);

afterAll(async () => {
  await h?.stop();
  await rm(dir, { recursive: true, force: true });
});

const get = async (path: string, headers: Record<string, string> = {}, method = 'GET') => {
  const r = await fetch(`${h.url}${path}`, { headers, method });
  return { status: r.status, headers: r.headers, body: Buffer.from(await r.arrayBuffer()) };
};
const script = async (mac: string) => (await get(`/boot/${mac.replace(/:/g, '-')}.ipxe`)).body.toString();
const dash = (mac: string) => mac.replace(/:/g, '-');

describe('boot scripts of Linux vDisks', () => {
  it("boot the version's kernel and initramfs from this appliance with the target's command line", async () => {
    const text = await script(MAC.linux);
    const base = `${h.url}/vdisks/${ids.linux}/0`;
    const kernelLine = text.split('\n').find((l) => l.startsWith('kernel '))!;
    expect(kernelLine.startsWith(`kernel ${base}/kernel?mac=${dash(MAC.linux)} console=ttyS0,115200 panic=30 init=/sbin/init bootfarm.nbd=`)).toBe(true);
    expect(kernelLine.endsWith(` && initrd ${base}/initrd?mac=${dash(MAC.linux)} && boot ||`)).toBe(true);
    expect(text).toContain('imgfree\n');
    expect(text).not.toContain('sanboot');
    const words = Object.fromEntries(kernelLine.split(' ').filter((w) => w.startsWith('bootfarm.')).map((w) => [w.slice(0, w.indexOf('=')), w.slice(w.indexOf('=') + 1)]));
    const exportName = /set bootfarm-nbd-export (\S+)/.exec(text)![1]!;
    expect(words).toMatchObject({ 'bootfarm.export': exportName, 'bootfarm.mode': 'read-only', 'bootfarm.cache': 'device-ram', 'bootfarm.hostname': 'kiosk-01', 'bootfarm.wcsize': '128', 'bootfarm.mac': dash(MAC.linux) });
    expect(words['bootfarm.nbd']).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(decodeCmdlineValue(words['bootfarm.p.role']!)).toBe('kiosk "lobby" & más');
    expect(decodeCmdlineValue(words['bootfarm.p.site.code']!)).toBe('B-12');
    expect(logs.filter((l) => l.msg === 'Linux vDisk: kernel and initrd in its boot area')).toHaveLength(1);
  });

  it('sanboot a vDisk without a boot area, and one whose boot area is malformed (logged with the reason)', async () => {
    expect(await script(MAC.plain)).toContain('sanboot --no-describe --drive 0x80');
    expect(await script(MAC.bad)).toContain('sanboot --no-describe --drive 0x80');
    const warned = logs.filter((l) => l.msg === 'vDisk version has a malformed Linux boot area: it boots as a plain disk');
    expect(warned).toHaveLength(1);
    expect(warned[0]).toMatchObject({ vdiskId: ids.bad, version: 0, reason: "the kernel's bytes do not match the SHA-256 in the boot header" });
    // Parsed once per version: asking again reads nothing and logs nothing more.
    await script(MAC.bad);
    expect(logs.filter((l) => l.msg.includes('malformed Linux boot area'))).toHaveLength(1);
    expect((await fetch(`${h.url}/healthz`)).status).toBe(200);
  });
});

describe('/kernel and /initrd', () => {
  it('serve the exact bytes of the boot area, with HEAD and ranges relative to the file', async () => {
    const k = await get(`/vdisks/${ids.linux}/0/kernel?mac=${dash(MAC.linux)}`);
    expect(k.status).toBe(200);
    expect(k.body.equals(kernel)).toBe(true);
    expect(k.headers.get('etag')).toBe(`"${createHash('sha256').update(kernel).digest('hex')}"`);
    const i = await get(`/vdisks/${ids.linux}/0/initrd`);
    expect(i.body.equals(initrd)).toBe(true);
    const head = await get(`/vdisks/${ids.linux}/0/initrd`, {}, 'HEAD');
    expect(head.headers.get('content-length')).toBe(String(initrd.length));
    const part = await get(`/vdisks/${ids.linux}/0/kernel`, { range: 'bytes=100-4195' });
    expect(part.status).toBe(206);
    expect(part.headers.get('content-range')).toBe(`bytes 100-4195/${kernel.length}`);
    expect(part.body.equals(kernel.subarray(100, 4196))).toBe(true);
    expect((await get(`/vdisks/${ids.linux}/0/kernel`, { range: `bytes=${kernel.length}-` })).status).toBe(416);
    // The download counts as the target's session on this vDisk, like a sanboot read.
    expect(logs.some((l) => l.msg === 'disk session opened' && l.client === MAC.linux && l.vdiskId === ids.linux)).toBe(true);
  });

  it('are 404 with the reason for a vDisk that is not a Linux one, a malformed one, and a version not held', async () => {
    for (const id of [ids.plain, ids.bad]) {
      const r = await get(`/vdisks/${id}/0/kernel`);
      expect(r.status).toBe(404);
      expect(r.body.toString()).toMatch(/is not a Linux vDisk/);
    }
    expect((await get(`/vdisks/${ids.linux}/7/initrd`)).status).toBe(404);
    expect((await get(`/vdisks/${ids.linux}/0/vmlinuz`)).status).toBe(404);
  });
});
