/**
 * The Linux image builder's pieces that need no root: the disk layout it
 * writes (read back with the appliance's decoder), the MBR stub a BIOS runs
 * when someone boots the disk directly, the module load order from
 * modules.dep, and bootfarm-nbd compiling warning-free. The whole build and
 * boot: test/appliance/linux-target.test.ts.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, mkdir, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { moduleLoadOrder, writeDisk } from '../../images/linux/build.js';
import { bootAreaOffset, decodeBootHeader, decodeMbr } from '../../model/linux-boot.js';
import { canRunQemu } from '../support/netns.js';
import { localDisk } from '../support/qemu.js';

const run = promisify(execFile);
const MiB = 2 ** 20;
let dir: string;
const kernel = randomBytes(5 * MiB + 17);
const initrd = randomBytes(2 * MiB + 5);
let image: string;
let layout: Awaited<ReturnType<typeof writeDisk>>;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bootfarm-linux-image-'));
  image = join(dir, 'disk.raw');
  layout = await writeDisk({ path: image, sizeBytes: 64 * MiB, kernel, initrd, cmdline: 'console=ttyS0,115200 init=/sbin/init' });
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const readAt = async (off: number, len: number) => {
  const fh = await open(image, 'r');
  try {
    const b = Buffer.alloc(len);
    await fh.read(b, 0, len, off);
    return b;
  } finally {
    await fh.close();
  }
};

describe('the disk the builder writes', () => {
  it('has the boot area at 1 MiB, the kernel and initramfs where its header says, and the root partition after them, 1 MiB aligned', async () => {
    const mbr = await readAt(0, 512);
    expect(decodeMbr(mbr)).toEqual([
      { type: 0xda, startLba: 2048, sectors: (layout.rootOffset - MiB) / 512 },
      { type: 0x83, startLba: layout.rootOffset / 512, sectors: (64 * MiB - layout.rootOffset) / 512 },
    ]);
    expect(layout.rootOffset % MiB).toBe(0);
    const at = bootAreaOffset(mbr, 512, 64 * MiB)!;
    const h = decodeBootHeader(await readAt(at, 4096), { headerOffset: at, diskSize: 64 * MiB })!;
    expect(h.cmdline).toBe('console=ttyS0,115200 init=/sbin/init');
    expect((await readAt(h.kernel.offset, h.kernel.size)).equals(kernel)).toBe(true);
    expect((await readAt(h.initrd.offset, h.initrd.size)).equals(initrd)).toBe(true);
    expect(h.initrd.offset % 4096).toBe(0);
    expect(h.initrd.offset + h.initrd.size).toBeLessThanOrEqual(layout.rootOffset);
  });

  it('refuses a size that leaves no room for a root file system', async () => {
    await expect(writeDisk({ path: join(dir, 'small.raw'), sizeBytes: 8 * MiB, kernel, initrd, cmdline: '' })).rejects.toThrow(/no room for a root file system/);
  });

  it.skipIf(!canRunQemu().ok)('tells a BIOS that boots it directly what it is (MBR stub on COM1)', async () => {
    const vm = await localDisk({ disk: image, memoryMiB: 32 });
    try {
      await vm.waitForSerial(/bootfarm: a Linux vDisk, booted by a bootfarm appliance \(not the BIOS\)/, 60_000);
    } finally {
      await vm.dispose();
    }
  }, 120_000);
});

describe('initramfs modules', () => {
  it('loads each module after its dependencies, skips built-in and missing ones, and refuses a cycle', async () => {
    const mods = join(dir, 'modules');
    await mkdir(mods, { recursive: true });
    await writeFile(
      join(mods, 'modules.dep'),
      [
        'kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko',
        'kernel/fs/jbd2/jbd2.ko: kernel/lib/crc16.ko',
        'kernel/fs/mbcache.ko:',
        'kernel/lib/crc16.ko:',
        'kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio.ko',
        'kernel/drivers/virtio/virtio.ko:',
        'kernel/crypto/crc32c-generic.ko.xz:',
        '',
      ].join('\n'),
    );
    const order = await moduleLoadOrder(mods, ['crc32c_generic', 'ext4', 'virtio_pci', 'not_there', 'jbd2']);
    expect(order).toEqual(['kernel/crypto/crc32c-generic.ko.xz', 'kernel/lib/crc16.ko', 'kernel/fs/mbcache.ko', 'kernel/fs/jbd2/jbd2.ko', 'kernel/fs/ext4/ext4.ko', 'kernel/drivers/virtio/virtio.ko', 'kernel/drivers/virtio/virtio_pci.ko']);
    await writeFile(join(mods, 'modules.dep'), 'a.ko: b.ko\nb.ko: a.ko\n');
    await expect(moduleLoadOrder(mods, ['a'])).rejects.toThrow(/cycle: a -> b -> a/);
  });
});

const gcc = ['/usr/bin/gcc', '/usr/bin/cc'].find(existsSync);
describe.skipIf(!gcc || !existsSync('/usr/include/linux/nbd-netlink.h'))('bootfarm-nbd', () => {
  it('builds static and warning-free, and refuses bad arguments with its usage', async () => {
    const src = fileURLToPath(new URL('../../images/linux/initramfs/bootfarm-nbd.c', import.meta.url));
    const bin = join(dir, 'bootfarm-nbd');
    await run(gcc!, ['-static', '-Os', '-Wall', '-Wextra', '-Werror', '-o', bin, src]);
    for (const args of [[], ['-e', 'x', '/dev/sda', '192.0.2.1:10809'], ['-e', 'x', '/dev/nbd0'], ['-e', 'x', '-t', '0', '/dev/nbd0', '192.0.2.1:1'], ['-e', 'x', '/dev/nbd0', '192.0.2.1:port']]) {
      const r = await run(bin, args).then(() => ({ code: 0, stderr: '' }), (e: { code: number; stderr: string }) => e);
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.stderr).toMatch(/^usage: bootfarm-nbd /);
    }
  });
});

// The initramfs decodes what the boot script encoded (appliance/boot/linux-cmdline.ts) with its own shell function: run that
// very function under busybox, as the target does, on values an admin may type.
const BUSYBOX = ['/bin/busybox', '/usr/bin/busybox'].find((p) => existsSync(p));
describe.skipIf(!BUSYBOX)("the initramfs's decoding of personality values", () => {
  it('gives back exactly what the boot script encoded, options-looking values and shell characters included', async () => {
    const { encodeCmdlineValue } = await import('../../appliance/boot/linux-cmdline.js');
    const init = await import('node:fs/promises').then((f) => f.readFile(fileURLToPath(new URL('../../images/linux/initramfs/init', import.meta.url)), 'utf8'));
    const fn = init.split('\n').find((l) => l.startsWith('unescape() '))!;
    expect(fn).toBeDefined();
    for (const value of ['-n', '-e', '-ne', 'plain', 'a b', '" & más ${x} `id` $(id) \\ %41', 'line\\nbreak-less', '-']) {
      const { stdout } = await run(BUSYBOX!, ['sh', '-c', `${fn}\nunescape "$1"`, 'sh', encodeCmdlineValue(value)]);
      expect(stdout, value).toBe(value);
    }
  });
});
