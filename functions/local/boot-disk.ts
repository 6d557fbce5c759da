/**
 * The test vDisk: a raw image (64 MiB by default: iPXE's int13 needs at least
 * one 8 MiB cylinder) whose boot sector (./boot-disk/boot.asm) reads ranges
 * spread over the whole disk through int 13h and prints their CRC-32 on COM1,
 * so a test can tell that a disk really streamed, byte for byte:
 *
 *   BOOTFARM-DISK start
 *   BOOTFARM-DISK message: bootfarm test vDisk, 64 MiB, seed 1: ...
 *   BOOTFARM-DISK OK sum=1a2b3c4d sectors=2048
 *
 * Layout: LBA 0 the boot sector (with an empty partition table, from which iPXE
 * guesses the geometry), LBA 1 the parameter sector (the ranges to read for this
 * image's size, then the message), everything else pseudo-random bytes from
 * `seed`, so a wrong, stale or shifted sector changes the sum. The assembled
 * sector is checked in (boot.bin) so that building a disk needs no nasm.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { crc32 } from 'node:zlib';

export const SECTOR_BYTES = 512;
/** The boot sector reads this many sectors per int 13h call; ranges are whole chunks. */
export const CHUNK_SECTORS = 64;
/** The parameter sector: range table at offset 0, message at offset 64. */
export const PARAMS_LBA = 1;
export const BOOT_SECTOR_ASM = fileURLToPath(new URL('./boot-disk/boot.asm', import.meta.url));
export const BOOT_SECTOR_BIN = fileURLToPath(new URL('./boot-disk/boot.bin', import.meta.url));

/** Range table: at most 6 entries of (lba: u32 LE, chunks: u8), then one of 0 chunks. */
const MAX_RANGES = 6;
const MESSAGE_OFFSET = 64;
const MAX_MESSAGE = 400;
const MIN_SIZE_MIB = 64;

export interface DiskRange {
  lba: number;
  sectors: number;
}

export interface TestDisk {
  path: string;
  sizeBytes: number;
  /** Capacity in 512-byte sectors. */
  sectors: number;
  seed: number;
  /** The text in the parameter sector, printed by the boot sector after `BOOTFARM-DISK message: `. */
  message: string;
  /** What the boot sector reads, in order. */
  ranges: readonly DiskRange[];
  /** Sectors the boot sector reads in all (printed as sectors=). */
  sectorsRead: number;
  /** CRC-32 of those ranges, 8 lower-case hex digits, as the boot sector prints it. */
  expectedSum: string;
  /** The exact success line: `BOOTFARM-DISK OK sum=<expectedSum> sectors=<sectorsRead>`. */
  okLine: string;
}

export interface BuildTestDiskOptions {
  /** Whole MiB, at least 64. @default 64 */
  sizeMiB?: number;
  /** Seeds the pseudo-random content. @default 1 */
  seed?: number;
  /** Printable ASCII, at most 400 characters. @default names size and seed */
  message?: string;
  /** What the boot sector reads (at most 6 ranges of 1-255 chunks of 64 sectors, within the disk). @default readRanges(sectors) */
  ranges?: readonly DiskRange[];
}

/** A long read for failover tests: `chunksPerRange` chunks (32 KiB each) in each of 6 ranges spread over the disk, LBA 0 first. */
export function longReadRanges(totalSectors: number, chunksPerRange: number): DiskRange[] {
  const sectors = chunksPerRange * CHUNK_SECTORS;
  const step = Math.floor(totalSectors / 6 / CHUNK_SECTORS) * CHUNK_SECTORS;
  if (!Number.isInteger(chunksPerRange) || chunksPerRange < 1 || chunksPerRange > 255 || sectors > step) throw new Error(`${chunksPerRange} chunks per range do not fit 6 times in ${totalSectors} sectors`);
  return Array.from({ length: 6 }, (_, i) => ({ lba: i * step, sectors }));
}

/**
 * The ranges read for a disk of `totalSectors`: the start (boot sector, message),
 * two early ranges, one across LBA 65536 (16-bit LBA wrap), one at three quarters
 * and the last 512 sectors up to the final one: 2048 sectors (1 MiB) in all.
 */
export function readRanges(totalSectors: number): DiskRange[] {
  if (!Number.isInteger(totalSectors) || totalSectors < (MIN_SIZE_MIB << 20) / SECTOR_BYTES) {
    throw new Error(`${totalSectors} sectors: the test disk needs at least ${MIN_SIZE_MIB} MiB`);
  }
  return [
    { lba: 0, sectors: 64 },
    { lba: 1000, sectors: 256 },
    { lba: 40_000, sectors: 512 },
    { lba: 65_535, sectors: 256 },
    { lba: Math.floor((totalSectors * 3) / 4) + 3, sectors: 448 },
    { lba: totalSectors - 512, sectors: 512 },
  ];
}

/** The checked-in boot sector (no parameters: those are in the parameter sector). */
export async function bootSector(): Promise<Buffer> {
  const sector = await readFile(BOOT_SECTOR_BIN);
  if (sector.length !== SECTOR_BYTES || sector.readUInt16LE(0x1fe) !== 0xaa55) throw new Error(`${BOOT_SECTOR_BIN}: not a boot sector`);
  return sector;
}

/** LBA 1: the ranges the boot sector reads, then the message it prints. */
export function parameterSector(ranges: readonly DiskRange[], message: string): Buffer {
  if (ranges.length > MAX_RANGES) throw new Error(`at most ${MAX_RANGES} ranges`);
  if (!/^[\x20-\x7e]+$/.test(message) || message.length > MAX_MESSAGE) throw new Error(`message: 1..${MAX_MESSAGE} printable ASCII characters`);
  const sector = Buffer.alloc(SECTOR_BYTES);
  ranges.forEach(({ lba, sectors }, i) => {
    const chunks = sectors / CHUNK_SECTORS;
    if (!Number.isInteger(chunks) || chunks < 1 || chunks > 255) throw new Error(`range at ${lba}: ${sectors} sectors is not 1..255 chunks of ${CHUNK_SECTORS}`);
    if (!Number.isInteger(lba) || lba < 0 || lba + sectors > 2 ** 32) throw new Error(`range at ${lba}: LBA out of 32-bit range`);
    sector.writeUInt32LE(lba, 5 * i);
    sector.writeUInt8(chunks, 5 * i + 4);
  });
  sector.write(message, MESSAGE_OFFSET, 'latin1');
  return sector;
}

/** mulberry32: a small, fast, seeded 32-bit generator; the disk's bytes depend only on the seed. */
function generator(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

/** CRC-32 (zlib's) of the given ranges of an image, in order, as 8 lower-case hex digits. */
export async function checksumRanges(path: string, ranges: readonly DiskRange[]): Promise<string> {
  const file = await open(path, 'r');
  try {
    let crc = 0;
    for (const { lba, sectors } of ranges) {
      const buf = Buffer.alloc(sectors * SECTOR_BYTES);
      const { bytesRead } = await file.read(buf, 0, buf.length, lba * SECTOR_BYTES);
      if (bytesRead !== buf.length) throw new Error(`${path}: range at LBA ${lba} runs past the end`);
      crc = crc32(buf, crc);
    }
    return crc.toString(16).padStart(8, '0');
  } finally {
    await file.close();
  }
}

/** Writes the test vDisk to `path` and returns what its boot sector will print. */
export async function buildTestDisk(path: string, opts: BuildTestDiskOptions = {}): Promise<TestDisk> {
  const sizeMiB = opts.sizeMiB ?? MIN_SIZE_MIB;
  const seed = opts.seed ?? 1;
  if (!Number.isInteger(sizeMiB) || sizeMiB < MIN_SIZE_MIB) throw new Error(`sizeMiB ${sizeMiB}: a whole number >= ${MIN_SIZE_MIB}`);
  const message = opts.message ?? `bootfarm test vDisk, ${sizeMiB} MiB, seed ${seed}: these words came through int 13h`;

  const sizeBytes = sizeMiB << 20;
  const sectors = sizeBytes / SECTOR_BYTES;
  const ranges = opts.ranges ? [...opts.ranges] : readRanges(sectors);
  for (const r of ranges) if (r.lba + r.sectors > sectors) throw new Error(`range at LBA ${r.lba} runs past the end of a ${sizeMiB} MiB disk`);
  const head = Buffer.concat([await bootSector(), parameterSector(ranges, message)]);

  const next = generator(seed);
  const chunk = new Uint32Array(1 << 18); // 1 MiB
  const bytes = Buffer.from(chunk.buffer);
  const file = await open(path, 'w');
  try {
    for (let offset = 0; offset < sizeBytes; offset += bytes.length) {
      for (let i = 0; i < chunk.length; i++) chunk[i] = next();
      if (offset === 0) head.copy(bytes, 0);
      await file.write(bytes, 0, bytes.length, offset);
    }
  } finally {
    await file.close();
  }

  const expectedSum = await checksumRanges(path, ranges);
  const sectorsRead = ranges.reduce((n, r) => n + r.sectors, 0);
  return {
    path,
    sizeBytes,
    sectors,
    seed,
    message,
    ranges,
    sectorsRead,
    expectedSum,
    okLine: `BOOTFARM-DISK OK sum=${expectedSum} sectors=${sectorsRead}`,
  };
}

/** The boot sector's final line: success or a read error. */
export const DISK_RESULT = /BOOTFARM-DISK (?:OK sum=([0-9a-f]{8}) sectors=(\d+)|READ-ERROR ah=([0-9a-f]{2}) lba=(\d+))/;

export type DiskReport =
  | { ok: true; sum: string; sectorsRead: number; message?: string }
  | { ok: false; ah: number; lba: number; message?: string };

/**
 * What the boot sector said on a serial log, or undefined while it has not finished.
 * `message` is the rest of its line: SeaBIOS's serial console may flush late
 * output of its own there (a '.'), so compare with toContain.
 */
export function parseDiskReport(serial: string): DiskReport | undefined {
  const m = DISK_RESULT.exec(serial);
  if (!m) return undefined;
  const message = /BOOTFARM-DISK message: ([^\r\n]*)/.exec(serial)?.[1];
  const extra = message !== undefined ? { message } : {};
  return m[1] !== undefined
    ? { ok: true, sum: m[1], sectorsRead: Number(m[2]), ...extra }
    : { ok: false, ah: parseInt(m[3]!, 16), lba: Number(m[4]), ...extra };
}

/** Assembles boot.asm with nasm (for the test that keeps boot.bin honest). */
export async function assembleBootSector(): Promise<Buffer> {
  const dir = await mkdtemp(join(tmpdir(), 'bootfarm-nasm-'));
  try {
    const out = join(dir, 'boot.bin');
    await new Promise<void>((resolve, reject) =>
      execFile('nasm', ['-f', 'bin', '-o', out, BOOT_SECTOR_ASM], (err, _stdout, stderr) =>
        err ? reject(new Error(`nasm failed: ${stderr || err.message}`)) : resolve(),
      ),
    );
    return await readFile(out);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
