/**
 * The Linux vDisk boot area: partition table and boot header codecs, round
 * trips, and every way a header can be malformed (never anything but a
 * LinuxBootError or "not a Linux vDisk").
 */
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  BOOT_HEADER_SIZE,
  BOOT_PARTITION_TYPE,
  LinuxBootError,
  MAX_KERNEL_BYTES,
  ROOT_PARTITION_TYPE,
  bootAreaOffset,
  decodeBootHeader,
  decodeMbr,
  encodeBootHeader,
  encodeMbr,
  type BootHeader,
} from '../../model/linux-boot.js';

const MiB = 2 ** 20;
const DISK = 512 * MiB;
const sha = (s: string) => createHash('sha256').update(s).digest('hex');
const good: Omit<BootHeader, 'version'> = {
  kernel: { offset: MiB + 4096, size: 8 * MiB, sha256: sha('kernel') },
  initrd: { offset: MiB + 4096 + 8 * MiB, size: 3 * MiB, sha256: sha('initrd') },
  cmdline: 'console=ttyS0,115200 panic=30 init=/usr/local/sbin/bootfarm-check',
};
const at = { headerOffset: MiB, diskSize: DISK };

/** A header with one field rewritten and its checksum made right again (so the field's own check is what fails). */
function tampered(edit: (b: Buffer) => void): Buffer {
  const b = encodeBootHeader(good);
  edit(b);
  createHash('sha256').update(b.subarray(0, BOOT_HEADER_SIZE - 32)).digest().copy(b, BOOT_HEADER_SIZE - 32);
  return b;
}

describe('partition table', () => {
  it('round-trips the boot and root partitions, with the boot code in front and 55 AA at the end', () => {
    const parts = [
      { type: BOOT_PARTITION_TYPE, startLba: 2048, sectors: 22528 },
      { type: ROOT_PARTITION_TYPE, startLba: 24576, sectors: 1024000 },
    ];
    const mbr = encodeMbr(parts, { diskSignature: 0x62666c31, bootCode: Buffer.from([0x31, 0xc0]) });
    expect(mbr.length).toBe(512);
    expect(mbr.readUInt16BE(510)).toBe(0x55aa);
    expect(mbr.subarray(0, 2)).toEqual(Buffer.from([0x31, 0xc0]));
    expect(mbr.readUInt32LE(440)).toBe(0x62666c31);
    expect(decodeMbr(mbr)).toEqual(parts);
    expect(bootAreaOffset(mbr, 512, DISK)).toBe(MiB);
    // 4096-byte sectors: LBAs count in the disk's own sectors.
    expect(bootAreaOffset(mbr, 4096, 8 * DISK)).toBe(8 * MiB);
  });

  it('finds no boot area on a disk without a partition table or without a partition of type 0xDA', () => {
    expect(decodeMbr(Buffer.alloc(512))).toBeNull();
    expect(bootAreaOffset(Buffer.alloc(512), 512, DISK)).toBeNull();
    expect(bootAreaOffset(encodeMbr([{ type: 0x07, startLba: 2048, sectors: 4096 }]), 512, DISK)).toBeNull();
  });

  it('refuses a boot partition past the end of the disk or too small for a header', () => {
    expect(() => bootAreaOffset(encodeMbr([{ type: BOOT_PARTITION_TYPE, startLba: 2048, sectors: 2 ** 21 }]), 512, DISK)).toThrow(/past the end of the disk/);
    expect(() => bootAreaOffset(encodeMbr([{ type: BOOT_PARTITION_TYPE, startLba: 2048, sectors: 4 }]), 512, DISK)).toThrow(/cannot hold a boot header/);
  });

  it('will not write a table DOS cannot hold', () => {
    expect(() => encodeMbr([{ type: 0x83, startLba: 0, sectors: 1 }])).toThrow(RangeError);
    expect(() => encodeMbr([{ type: 0x83, startLba: 1, sectors: 2 ** 32 }])).toThrow(RangeError);
    expect(() => encodeMbr([], { bootCode: Buffer.alloc(441) })).toThrow(/440 bytes/);
  });
});

describe('boot header', () => {
  it('round-trips', () => {
    const b = encodeBootHeader(good);
    expect(b.length).toBe(BOOT_HEADER_SIZE);
    expect(b.subarray(0, 8).toString('latin1')).toBe('BFLINUX\0');
    expect(decodeBootHeader(b, at)).toEqual({ version: 1, ...good });
  });

  it('says "not a Linux vDisk" (null) without the magic', () => {
    expect(decodeBootHeader(Buffer.alloc(BOOT_HEADER_SIZE), at)).toBeNull();
    expect(decodeBootHeader(Buffer.alloc(10), at)).toBeNull();
  });

  const malformed: [string, Buffer, RegExp][] = [
    ['a flipped byte (checksum)', (() => { const b = encodeBootHeader(good); b[200] = b[200]! ^ 1; return b; })(), /checksum mismatch/],
    ['another format version', tampered((b) => b.writeUInt32LE(2, 8)), /version 2/],
    ['another header size', tampered((b) => b.writeUInt32LE(512, 12)), /header size 512/],
    ['an empty kernel', tampered((b) => b.writeBigUInt64LE(0n, 24)), /kernel is empty/],
    ['a kernel past the cap', tampered((b) => b.writeBigUInt64LE(BigInt(MAX_KERNEL_BYTES + 1), 24)), /at most/],
    ['a kernel past the end of the disk', tampered((b) => b.writeBigUInt64LE(BigInt(DISK - 4096), 16)), /past the end of the disk/],
    ['an offset near 2^64', tampered((b) => b.writeBigUInt64LE(2n ** 64n - 1n, 64)), /past the end of the disk/],
    ['a kernel over the header', tampered((b) => b.writeBigUInt64LE(BigInt(MiB), 16)), /inside the partition table or the boot header/],
    ['overlapping files', tampered((b) => b.writeBigUInt64LE(BigInt(MiB + 4096 + MiB), 64)), /overlap/],
    ['a command line longer than allowed', tampered((b) => b.writeUInt16LE(2000, 112)), /at most 1024/],
    ['iPXE syntax in the command line', tampered((b) => b.write('${x} || shell', 114, 'latin1')), /cannot carry/],
  ];
  for (const [what, buf, why] of malformed)
    it(`refuses ${what}`, () => {
      expect(() => decodeBootHeader(buf, at)).toThrow(LinuxBootError);
      expect(() => decodeBootHeader(buf, at)).toThrow(why);
    });

  it('will not write what it would refuse to read', () => {
    expect(() => encodeBootHeader({ ...good, cmdline: 'init=/bin/sh ${net0/ip}' })).toThrow(RangeError);
    expect(() => encodeBootHeader({ ...good, kernel: { ...good.kernel, sha256: 'nope' } })).toThrow(RangeError);
  });

  it('never fails on arbitrary bytes with anything but LinuxBootError or null', () => {
    const magic = Buffer.from('BFLINUX\0', 'latin1');
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: BOOT_HEADER_SIZE + 8 }), fc.boolean(), fc.integer({ min: 0, max: 2 ** 40 }), (bytes, withMagic, diskSize) => {
        const b = Buffer.from(bytes);
        if (withMagic && b.length >= 8) magic.copy(b, 0);
        try {
          const h = decodeBootHeader(b, { headerOffset: 0, diskSize });
          if (h) expect(h.kernel.offset + h.kernel.size).toBeLessThanOrEqual(diskSize);
        } catch (e) {
          expect(e).toBeInstanceOf(LinuxBootError);
        }
      }),
      { numRuns: 2000 },
    );
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 512, maxLength: 512 }), fc.integer({ min: 0, max: 2 ** 40 }), (bytes, diskSize) => {
        const b = Buffer.from(bytes);
        b.writeUInt16BE(0x55aa, 510);
        try {
          const off = bootAreaOffset(b, 512, diskSize);
          if (off !== null) expect(off + BOOT_HEADER_SIZE).toBeLessThanOrEqual(diskSize);
        } catch (e) {
          expect(e).toBeInstanceOf(LinuxBootError);
        }
      }),
      { numRuns: 2000 },
    );
  });
});
