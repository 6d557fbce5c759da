/**
 * Linux vDisks: a kernel and an initramfs travel inside the vDisk itself, so
 * the signed manifest covers them, the appliances replicate and verify them
 * like every other byte, and no second storage path exists.
 *
 * Layout (images/linux/README.md):
 *
 *   sector 0        MBR (DOS partition table, signature 55 AA)
 *   partition 1     type 0xDA "non-FS data": the bootfarm boot area
 *     +0            boot header, 4096 bytes (below)
 *     +4096         kernel (bzImage), then the initramfs, each 4 KiB aligned
 *   partition 2     type 0x83: the root file system (ext4)
 *
 * Boot header (little-endian):
 *
 *   0    8  magic "BFLINUX\0"
 *   8    4  format version (1)
 *   12   4  header size (4096)
 *   16   8  kernel offset (bytes from the start of the disk)
 *   24   8  kernel size
 *   32  32  kernel SHA-256
 *   64   8  initrd offset
 *   72   8  initrd size
 *   80  32  initrd SHA-256
 *   112  2  default command line length
 *   114  n  default command line (ASCII, see CMDLINE_CHARS)
 *   4064 32 SHA-256 of bytes 0-4063
 *
 * Pure: bytes in, values out. `decodeBootHeader` returns null for a disk that
 * is simply not a Linux vDisk (no partition of type 0xDA, no magic) and throws
 * LinuxBootError for one that claims to be and is malformed.
 */
import { createHash } from 'node:crypto';

export const BOOT_HEADER_MAGIC = Buffer.from('BFLINUX\0', 'latin1');
export const BOOT_HEADER_VERSION = 1;
export const BOOT_HEADER_SIZE = 4096;
/** MBR partition type of the boot area ("non-FS data"). */
export const BOOT_PARTITION_TYPE = 0xda;
export const ROOT_PARTITION_TYPE = 0x83;
/** bzImage kernels are a few MiB to a few tens; anything bigger is not one. */
export const MAX_KERNEL_BYTES = 128 * 2 ** 20;
/** An initramfs is loaded into the target's RAM by iPXE: 512 MiB is already more than any target should get. */
export const MAX_INITRD_BYTES = 512 * 2 ** 20;
export const MAX_DEFAULT_CMDLINE = 1024;
/**
 * Characters a default command line may hold: it is written into an iPXE
 * script (no `${`, no `||` / `&&` tokens that would be commands, no `#`, no quotes).
 */
export const CMDLINE_CHARS = /^[A-Za-z0-9 ._,:=/+@%-]*$/;

export interface BootFile {
  offset: number;
  size: number;
  /** Lower-case hex. */
  sha256: string;
}

export interface BootHeader {
  version: number;
  kernel: BootFile;
  initrd: BootFile;
  /** The image's default kernel command line (console, init, ...); the appliance appends bootfarm's parameters. */
  cmdline: string;
}

export class LinuxBootError extends Error {
  override readonly name = 'LinuxBootError';
}

export interface MbrPartition {
  type: number;
  /** In sectors of the disk's sector size. */
  startLba: number;
  sectors: number;
}

const MBR_SIGNATURE = 0x55aa;
const HEADER_SUM_AT = BOOT_HEADER_SIZE - 32;

/** The four primary entries of a DOS partition table (empty ones omitted); null without the 55 AA signature. */
export function decodeMbr(sector0: Buffer): MbrPartition[] | null {
  if (sector0.length < 512 || sector0.readUInt16BE(510) !== MBR_SIGNATURE) return null;
  const out: MbrPartition[] = [];
  for (let i = 0; i < 4; i++) {
    const e = 446 + 16 * i;
    const type = sector0[e + 4]!;
    const startLba = sector0.readUInt32LE(e + 8);
    const sectors = sector0.readUInt32LE(e + 12);
    if (type !== 0 && sectors > 0) out.push({ type, startLba, sectors });
  }
  return out;
}

/**
 * A DOS partition table for an image (LBA only: CHS fields say "use LBA").
 * `bootCode` (at most 440 bytes) goes first: a stub that explains itself when
 * a BIOS tries to boot the disk directly.
 */
export function encodeMbr(partitions: readonly MbrPartition[], o: { diskSignature?: number; bootCode?: Buffer } = {}): Buffer {
  if (partitions.length > 4) throw new RangeError('a DOS partition table has 4 primary entries');
  const b = Buffer.alloc(512);
  if (o.bootCode) {
    if (o.bootCode.length > 440) throw new RangeError('MBR boot code is at most 440 bytes');
    o.bootCode.copy(b, 0);
  }
  b.writeUInt32LE(o.diskSignature ?? 0, 440);
  partitions.forEach((p, i) => {
    const e = 446 + 16 * i;
    if (!Number.isInteger(p.startLba) || !Number.isInteger(p.sectors) || p.startLba < 1 || p.sectors < 1 || p.startLba + p.sectors > 2 ** 32)
      throw new RangeError(`partition ${i + 1}: start ${p.startLba} and ${p.sectors} sectors do not fit a DOS partition table`);
    b[e] = 0x00;
    b.set([0xfe, 0xff, 0xff], e + 1);
    b[e + 4] = p.type;
    b.set([0xfe, 0xff, 0xff], e + 5);
    b.writeUInt32LE(p.startLba, e + 8);
    b.writeUInt32LE(p.sectors, e + 12);
  });
  b.writeUInt16BE(MBR_SIGNATURE, 510);
  return b;
}

/**
 * Where the boot header is (bytes from the start of the disk): the first
 * partition of type 0xDA, when it lies inside the disk and can hold a header.
 * Null when the disk has no partition table or no such partition.
 */
export function bootAreaOffset(sector0: Buffer, sectorSize: number, diskSize: number): number | null {
  const parts = decodeMbr(sector0);
  const p = parts?.find((x) => x.type === BOOT_PARTITION_TYPE);
  if (!p) return null;
  const start = p.startLba * sectorSize;
  const end = start + p.sectors * sectorSize;
  if (end > diskSize) throw new LinuxBootError(`the boot partition ends at byte ${end}, past the end of the disk (${diskSize})`);
  if (p.sectors * sectorSize < BOOT_HEADER_SIZE) throw new LinuxBootError(`the boot partition (${p.sectors * sectorSize} bytes) cannot hold a boot header`);
  return start;
}

export function encodeBootHeader(h: Omit<BootHeader, 'version'>): Buffer {
  const b = Buffer.alloc(BOOT_HEADER_SIZE);
  BOOT_HEADER_MAGIC.copy(b, 0);
  b.writeUInt32LE(BOOT_HEADER_VERSION, 8);
  b.writeUInt32LE(BOOT_HEADER_SIZE, 12);
  const file = (f: BootFile, at: number) => {
    b.writeBigUInt64LE(BigInt(f.offset), at);
    b.writeBigUInt64LE(BigInt(f.size), at + 8);
    if (!/^[0-9a-f]{64}$/.test(f.sha256)) throw new RangeError(`not a SHA-256: ${f.sha256}`);
    Buffer.from(f.sha256, 'hex').copy(b, at + 16);
  };
  file(h.kernel, 16);
  file(h.initrd, 64);
  if (h.cmdline.length > MAX_DEFAULT_CMDLINE || !CMDLINE_CHARS.test(h.cmdline))
    throw new RangeError(`the default command line must be at most ${MAX_DEFAULT_CMDLINE} characters of ${CMDLINE_CHARS.source}`);
  b.writeUInt16LE(h.cmdline.length, 112);
  b.write(h.cmdline, 114, 'latin1');
  createHash('sha256').update(b.subarray(0, HEADER_SUM_AT)).digest().copy(b, HEADER_SUM_AT);
  return b;
}

/**
 * The header at the start of the boot area. Null when the magic is not there
 * (not a Linux vDisk); LinuxBootError when it is and anything else is wrong:
 * version, checksum, files outside the disk or overlapping the header or each
 * other, sizes past the caps, a command line an iPXE script cannot carry.
 */
export function decodeBootHeader(b: Buffer, at: { headerOffset: number; diskSize: number }): BootHeader | null {
  if (b.length < BOOT_HEADER_SIZE || !b.subarray(0, 8).equals(BOOT_HEADER_MAGIC)) return null;
  const version = b.readUInt32LE(8);
  if (version !== BOOT_HEADER_VERSION) throw new LinuxBootError(`boot header version ${version} (this appliance reads version ${BOOT_HEADER_VERSION})`);
  if (b.readUInt32LE(12) !== BOOT_HEADER_SIZE) throw new LinuxBootError(`boot header size ${b.readUInt32LE(12)} (must be ${BOOT_HEADER_SIZE})`);
  const sum = createHash('sha256').update(b.subarray(0, HEADER_SUM_AT)).digest();
  if (!sum.equals(b.subarray(HEADER_SUM_AT, BOOT_HEADER_SIZE))) throw new LinuxBootError('boot header checksum mismatch');
  const file = (what: string, pos: number, max: number): BootFile => {
    const offset = b.readBigUInt64LE(pos);
    const size = b.readBigUInt64LE(pos + 8);
    if (size === 0n) throw new LinuxBootError(`${what} is empty`);
    if (size > BigInt(max)) throw new LinuxBootError(`${what} is ${size} bytes (at most ${max})`);
    if (offset < BigInt(at.headerOffset + BOOT_HEADER_SIZE)) throw new LinuxBootError(`${what} starts at byte ${offset}, inside the partition table or the boot header`);
    if (offset + size > BigInt(at.diskSize)) throw new LinuxBootError(`${what} (bytes ${offset}-${offset + size - 1n}) ends past the end of the disk (${at.diskSize} bytes)`);
    return { offset: Number(offset), size: Number(size), sha256: b.subarray(pos + 16, pos + 48).toString('hex') };
  };
  const kernel = file('the kernel', 16, MAX_KERNEL_BYTES);
  const initrd = file('the initrd', 64, MAX_INITRD_BYTES);
  if (kernel.offset < initrd.offset + initrd.size && initrd.offset < kernel.offset + kernel.size) throw new LinuxBootError('the kernel and the initrd overlap');
  const len = b.readUInt16LE(112);
  if (len > MAX_DEFAULT_CMDLINE) throw new LinuxBootError(`default command line of ${len} bytes (at most ${MAX_DEFAULT_CMDLINE})`);
  const cmdline = b.toString('latin1', 114, 114 + len);
  if (!CMDLINE_CHARS.test(cmdline)) throw new LinuxBootError('the default command line has characters a boot script cannot carry');
  return { version, kernel, initrd, cmdline };
}
