/**
 * Damaged and hostile files: every problem is an ImageError that names the
 * file and the problem; nothing crashes, hangs or allocates by a size field.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { crc32cWithZeroedField } from '../../model/images/crc32c.js';
import { guidToString } from '../../model/images/guid.js';
import { ImageError, bufferReader, openImage, openImageFrom, type DiskImage } from '../../model/images/index.js';
import { vhdChecksum } from '../../model/images/vhd.js';
import { hasQemu, qemuImg, qemuIo, tempDir } from './support/tools.js';
import { applyWrite, newLayer } from './support/content.js';
import { seededBytes, writeVhdx } from './support/writers.js';

const MiB = 2 ** 20;
const KiB = 1024;
const tmp = tempDir('images-bad');
afterAll(() => tmp.cleanup());

async function open(bytes: Buffer, file: string): Promise<DiskImage> {
  return openImageFrom([{ file, reader: bufferReader(bytes, file) }]);
}

/** Opens (and reads the first and last MiB of) an image expected to be refused; returns the error. */
async function refusal(bytes: Buffer, file: string): Promise<ImageError> {
  const err = await (async () => {
    const img = await open(bytes, file);
    await img.read(0, Math.min(MiB, img.sizeBytes));
    await img.read(Math.max(0, img.sizeBytes - MiB), Math.min(MiB, img.sizeBytes));
  })().then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, 'expected the image to be refused').toBeInstanceOf(ImageError);
  expect((err as Error).message.startsWith(`${file}: `)).toBe(true);
  return err as ImageError;
}

const copy = (b: Buffer) => Buffer.from(b);

// --- VHD --------------------------------------------------------------------

const fixFooter = (b: Buffer, at: number) => b.writeUInt32BE(vhdChecksum(b.subarray(at, at + 512), 64), at + 64);
const fixDynamicHeader = (b: Buffer) => b.writeUInt32BE(vhdChecksum(b.subarray(512, 1536), 36), 512 + 36);

describe.skipIf(!hasQemu)('damaged VHD files', () => {
  let dynamic: Buffer;
  let fixed: Buffer;
  beforeAll(() => {
    const d = tmp.path('d.vhd');
    qemuImg('create', '-q', '-f', 'vpc', '-o', 'subformat=dynamic', d, '16M');
    qemuIo('vpc', d, ['write -P 0x11 0 3M', 'write -P 0x22 10M 4k']);
    dynamic = readFileSync(d);
    const f = tmp.path('f.vhd');
    qemuImg('create', '-q', '-f', 'vpc', '-o', 'subformat=fixed', f, '4M');
    fixed = readFileSync(f);
  });
  const footerAt = () => dynamic.length - 512;

  it('refuses a footer whose checksum does not match', async () => {
    const b = copy(dynamic);
    b[footerAt() + 48 + 3]! ^= 0x40; // Current Size
    const e = await refusal(b, 'disk.vhd');
    expect(e.code).toBe('malformed');
    expect(e.message).toMatch(/^disk\.vhd: VHD footer checksum mismatch \(stored 0x[0-9a-f]{8}, computed 0x[0-9a-f]{8}\)$/);
  });

  it('refuses a dynamic header whose checksum does not match', async () => {
    const b = copy(dynamic);
    b[512 + 32]! ^= 1; // Block Size
    expect((await refusal(b, 'disk.vhd')).message).toContain('VHD dynamic header checksum mismatch');
  });

  it('refuses a truncated dynamic VHD, saying the footer copy at the start is still there', async () => {
    const e = await refusal(dynamic.subarray(0, dynamic.length - 1024 * 1024), 'disk.vhd');
    expect(e.message).toContain('footer at the end of the file is missing');
    expect(e.message).toContain('truncated');
  });

  it('refuses a truncated fixed VHD whose footer was kept', async () => {
    const b = Buffer.concat([fixed.subarray(0, MiB), fixed.subarray(fixed.length - 512)]);
    expect((await refusal(b, 'disk.vhd')).message).toMatch(/fixed VHD of \d+ bytes needs \d+ bytes of file, but the file has \d+: truncated\?/);
  });

  it('refuses, when read, a BAT entry pointing past the end of the file', async () => {
    const b = copy(dynamic);
    const table = Number(b.readBigUInt64BE(512 + 16));
    b.writeUInt32BE(0x00ffffff, table);
    expect((await refusal(b, 'disk.vhd')).message).toContain('BAT entry for block 0 points to sector 16777215, outside the file');
  });

  it('refuses an absurd disk size', async () => {
    const b = copy(dynamic);
    b.writeBigUInt64BE(2n ** 50n, footerAt() + 48);
    fixFooter(b, footerAt());
    expect((await refusal(b, 'disk.vhd')).message).toContain('larger than the 2 TiB a VHD can hold');
  });

  it('refuses a disk size that is not a whole number of sectors', async () => {
    const b = copy(dynamic);
    b.writeBigUInt64BE(b.readBigUInt64BE(footerAt() + 48) - 100n, footerAt() + 48);
    fixFooter(b, footerAt());
    expect((await refusal(b, 'disk.vhd')).message).toContain('is not a multiple of the 512-byte sector size');
  });

  it('refuses a block size that is not a power of two', async () => {
    const b = copy(dynamic);
    b.writeUInt32BE(3 * MiB, 512 + 32);
    fixDynamicHeader(b);
    expect((await refusal(b, 'disk.vhd')).message).toContain('VHD block size 3145728 is not a power of two between 512 bytes and 256 MiB');
  });

  it('refuses a BAT too small for the disk', async () => {
    const b = copy(dynamic);
    b.writeUInt32BE(2, 512 + 28);
    fixDynamicHeader(b);
    expect((await refusal(b, 'disk.vhd')).message).toMatch(/BAT has 2 entries but a \d+-byte disk of 2097152-byte blocks needs \d+/);
  });
});

// --- VHDX -------------------------------------------------------------------

const fixHeader = (b: Buffer, at: number) => b.writeUInt32LE(crc32cWithZeroedField(b.subarray(at, at + 4 * KiB), 4), at + 4);
const fixRegionTable = (b: Buffer, at: number) => b.writeUInt32LE(crc32cWithZeroedField(b.subarray(at, at + 64 * KiB), 4), at + 4);
const currentHeader = (b: Buffer) => (b.readBigUInt64LE(128 * KiB + 8) > b.readBigUInt64LE(64 * KiB + 8) ? 128 * KiB : 64 * KiB);

/** Where the BAT and metadata regions are, from region table 1. */
function regionsOf(b: Buffer): { bat: number; metadata: number } {
  const out = { bat: 0, metadata: 0 };
  for (let i = 0; i < b.readUInt32LE(192 * KiB + 8); i++) {
    const at = 192 * KiB + 16 + i * 32;
    const guid = guidToString(b, at);
    if (guid === '2dc27766-f623-4200-9d64-115e9bfd4a08') out.bat = Number(b.readBigUInt64LE(at + 16));
    if (guid === '8b7ca206-4790-4b9a-b8fe-575f050f886e') out.metadata = Number(b.readBigUInt64LE(at + 16));
  }
  return out;
}

/** The file offset of a metadata item's data. */
function metadataItem(b: Buffer, guid: string): { entry: number; data: number } {
  const { metadata } = regionsOf(b);
  for (let i = 0; i < b.readUInt16LE(metadata + 10); i++) {
    const entry = metadata + 32 + i * 32;
    if (guidToString(b, entry) === guid) return { entry, data: metadata + b.readUInt32LE(entry + 16) };
  }
  throw new Error(`no metadata item ${guid}`);
}
const FILE_PARAMETERS = 'caa16737-fa36-4d43-b3b6-33f0aa44e76b';
const VIRTUAL_DISK_SIZE = '2fa54224-cd1b-4876-b211-5dbed83bf4b8';
const PAGE83 = 'beca12ab-b2e6-4523-93ef-c309e000c746';
const PARENT_LOCATOR = 'a8d35f2d-b30b-454d-abf7-d3d84834ab0c';

describe.skipIf(!hasQemu)('damaged VHDX files', () => {
  let good: Buffer;
  let goodImage: Buffer;
  beforeAll(async () => {
    const f = tmp.path('d.vhdx');
    qemuImg('create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', f, '16M');
    qemuIo('vhdx', f, ['write -P 0x11 0 3M', 'write -P 0x22 10M 4k']);
    good = readFileSync(f);
    const img = await open(good, 'good.vhdx');
    goodImage = await img.read(0, img.sizeBytes);
  });

  it('opens from the other header when the current one is damaged', async () => {
    const b = copy(good);
    b[currentHeader(b) + 40]! ^= 0xff;
    const img = await open(b, 'disk.vhdx');
    expect((await img.read(0, img.sizeBytes)).equals(goodImage)).toBe(true);
  });

  it('refuses a file whose two headers both fail their CRC', async () => {
    const b = copy(good);
    b[64 * KiB + 40]! ^= 1;
    b[128 * KiB + 40]! ^= 1;
    const e = await refusal(b, 'disk.vhdx');
    expect(e.code).toBe('malformed');
    expect(e.message).toMatch(/^disk\.vhdx: no valid VHDX header \(header 1: CRC-32C mismatch \(stored 0x[0-9a-f]+, computed 0x[0-9a-f]+\); header 2: CRC-32C mismatch/);
  });

  it('opens from region table 2 when table 1 is damaged, and refuses when both are', async () => {
    const b = copy(good);
    b[192 * KiB + 20]! ^= 1;
    const img = await open(b, 'disk.vhdx');
    expect((await img.read(0, img.sizeBytes)).equals(goodImage)).toBe(true);
    b[256 * KiB + 20]! ^= 1;
    expect((await refusal(b, 'disk.vhdx')).message).toContain('no valid region table (copy 1: CRC-32C mismatch');
  });

  it('refuses a file whose log has pending updates (non-zero LogGuid)', async () => {
    const b = copy(good);
    for (const at of [64 * KiB, 128 * KiB]) {
      seededBytes(7)(16).copy(b, at + 48);
      fixHeader(b, at);
    }
    const e = await refusal(b, 'disk.vhdx');
    expect(e.code).toBe('dirty');
    expect(e.message).toContain('the VHDX log has pending updates');
    expect(e.message).toContain('not closed cleanly');
  });

  it('refuses a block size that is not a power of two', async () => {
    const b = copy(good);
    b.writeUInt32LE(3 * MiB, metadataItem(b, FILE_PARAMETERS).data);
    expect((await refusal(b, 'disk.vhdx')).message).toContain('block size 3145728 is not a power of two between 1 MiB and 256 MiB');
  });

  it('refuses a block size out of range', async () => {
    const b = copy(good);
    b.writeUInt32LE(512 * MiB, metadataItem(b, FILE_PARAMETERS).data);
    expect((await refusal(b, 'disk.vhdx')).message).toContain('block size 536870912 is not a power of two between 1 MiB and 256 MiB');
  });

  it('refuses a virtual size that is not a multiple of the logical sector size', async () => {
    const b = copy(good);
    b.writeBigUInt64LE(16n * 2n ** 20n + 100n, metadataItem(b, VIRTUAL_DISK_SIZE).data);
    expect((await refusal(b, 'disk.vhdx')).message).toContain('is not a multiple of the logical sector size 512');
  });

  it('refuses an absurd virtual size without allocating for it', async () => {
    const b = copy(good);
    b.writeBigUInt64LE(2n ** 60n, metadataItem(b, VIRTUAL_DISK_SIZE).data);
    expect((await refusal(b, 'disk.vhdx')).message).toContain('is not between 1 byte and 64 TiB');
    b.writeBigUInt64LE(60n * 2n ** 40n, metadataItem(b, VIRTUAL_DISK_SIZE).data); // legal, but the BAT cannot describe it
    expect((await refusal(b, 'disk.vhdx')).message).toMatch(/BAT region of \d+ bytes cannot hold the \d+ entries/);
  });

  it('refuses, when read, a BAT entry pointing past the end of the file', async () => {
    const b = copy(good);
    b.writeUInt32LE(4000 * MiB + 6, regionsOf(b).bat); // block 0 FULLY_PRESENT at 4000 MiB
    expect((await refusal(b, 'disk.vhdx')).message).toContain('BAT entry for block 0 points to offset 4194304000, outside the file');
  });

  it('refuses a PARTIALLY_PRESENT block in a file without a parent', async () => {
    const b = copy(good);
    const bat = regionsOf(b).bat;
    b.writeUInt32LE((b.readUInt32LE(bat) & ~7) | 7, bat);
    expect((await refusal(b, 'disk.vhdx')).message).toContain('block 0 is PARTIALLY_PRESENT in a file without a parent');
  });

  it('refuses a required metadata item it does not know', async () => {
    const b = copy(good);
    const { entry } = metadataItem(b, PAGE83);
    b[entry]! ^= 0xff;
    b.writeUInt32LE(b.readUInt32LE(entry + 24) | 4, entry + 24);
    const e = await refusal(b, 'disk.vhdx');
    expect(e.code).toBe('unsupported');
    expect(e.message).toMatch(/required metadata item [0-9a-f-]{36} is not one this reader knows/);
  });

  it('refuses a truncated file, naming the region that no longer fits', async () => {
    const e = await refusal(good.subarray(0, 2 * MiB), 'disk.vhdx');
    expect(e.message).toMatch(/no valid region table \(copy 1: region [0-9a-f-]{36} \(offset \d+, length \d+\) lies past the end of the file/);
  });
});

// --- any format -------------------------------------------------------------

describe('files and ranges', () => {
  it('refuses a raw image that is not a whole number of sectors', async () => {
    expect((await refusal(Buffer.alloc(1000), 'disk.img')).message).toBe('disk.img: raw image size 1000 is not a multiple of the 512-byte sector size');
  });

  it('refuses reads outside the virtual disk with a range error', async () => {
    const img = await open(Buffer.alloc(4096), 'disk.img');
    await expect(img.read(4000, 100)).rejects.toMatchObject({ code: 'range' });
    await expect(img.read(-1, 1)).rejects.toMatchObject({ code: 'range' });
    await expect(img.knownZero(0, 4097)).rejects.toMatchObject({ code: 'range' });
  });

  it('refuses a missing file with the system error, and an empty file list', async () => {
    await expect(openImage([tmp.path('nope.vhdx')])).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(openImage([])).rejects.toMatchObject({ code: 'chain', message: 'no image file given' });
  });

  it('refuses two raw files as a chain', async () => {
    const a = tmp.path('a.img');
    writeFileSync(a, Buffer.alloc(4096));
    await expect(openImage([a, a])).rejects.toMatchObject({ code: 'chain' });
  });

  it.skipIf(!hasQemu)('refuses a truncated VHDX on disk through openImage, naming the path', async () => {
    const f = tmp.path('cut.vhdx');
    qemuImg('create', '-q', '-f', 'vhdx', f, '64M');
    writeFileSync(f, readFileSync(f).subarray(0, 1536 * KiB));
    await expect(openImage([f])).rejects.toThrow(new RegExp(`^${f}: `));
  });
});

// --- fuzz -------------------------------------------------------------------

/**
 * Flips a few random bytes inside one structure, optionally re-sealing the
 * checksums so the damage reaches the checks behind them, then opens and
 * reads: the only acceptable failure is an ImageError, and every case ends.
 */
async function fuzz(
  base: Buffer,
  file: string,
  areas: { from: number; to: number; reseal?: (b: Buffer) => void }[],
  rounds: number,
  seed: number,
  parents: { file: string; bytes: Buffer }[] = [],
) {
  const rand = seededBytes(seed);
  const int = (n: number) => rand(4).readUInt32LE() % n;
  let refused = 0;
  for (let round = 0; round < rounds; round++) {
    const b = copy(base);
    const area = areas[round % areas.length]!;
    for (let k = 0, n = 1 + int(4); k < n; k++) b[area.from + int(area.to - area.from)] = int(256);
    if (round % 2 === 0) area.reseal?.(b);
    try {
      const img = await openImageFrom([...parents, { file, bytes: b }].map((l) => ({ file: l.file, reader: bufferReader(l.bytes, l.file) })));
      const size = img.sizeBytes;
      for (const [offset, length] of [
        [0, Math.min(4 * MiB, size)],
        [Math.max(0, size - MiB), Math.min(MiB, size)],
      ] as const) {
        const bytes = await img.read(offset, length);
        expect(bytes.length).toBe(length);
        await img.knownZero(offset, length);
      }
    } catch (e) {
      if (!(e instanceof ImageError)) throw new Error(`round ${round}: ${String(e)}`, { cause: e });
      refused++;
    }
  }
  return refused;
}

describe.skipIf(!hasQemu)('fuzzed metadata', () => {
  it('random bytes in a VHD footer, dynamic header or BAT never crash or hang', { timeout: 60_000 }, async () => {
    const f = tmp.path('fz.vhd');
    qemuImg('create', '-q', '-f', 'vpc', '-o', 'subformat=dynamic', f, '16M');
    qemuIo('vpc', f, ['write -P 0x11 0 3M', 'write -P 0x22 10M 4k']);
    const b = readFileSync(f);
    const footer = b.length - 512;
    const table = Number(b.readBigUInt64BE(512 + 16));
    const refused = await fuzz(
      b,
      'fz.vhd',
      [
        { from: footer, to: b.length, reseal: (x) => fixFooter(x, x.length - 512) },
        { from: 512, to: 1536, reseal: fixDynamicHeader },
        { from: table, to: table + 8 * 4 },
      ],
      300,
      1,
    );
    expect(refused).toBeGreaterThan(0);
  });

  it('random bytes in VHDX headers, region tables, metadata or BAT never crash or hang', { timeout: 60_000 }, async () => {
    const f = tmp.path('fz.vhdx');
    qemuImg('create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', f, '16M');
    qemuIo('vhdx', f, ['write -P 0x11 0 3M', 'write -P 0x22 10M 4k']);
    const b = readFileSync(f);
    const { bat, metadata } = regionsOf(b);
    const refused = await fuzz(
      b,
      'fz.vhdx',
      [
        { from: 64 * KiB, to: 64 * KiB + 128, reseal: (x) => fixHeader(x, 64 * KiB) },
        { from: 128 * KiB, to: 128 * KiB + 128, reseal: (x) => fixHeader(x, 128 * KiB) },
        { from: 192 * KiB, to: 192 * KiB + 80, reseal: (x) => fixRegionTable(x, 192 * KiB) },
        { from: metadata, to: metadata + 32 + 6 * 32 },
        { from: metadata + 64 * KiB, to: metadata + 64 * KiB + 64 },
        { from: bat, to: bat + 17 * 8 },
      ],
      600,
      2,
    );
    expect(refused).toBeGreaterThan(0);
  });

  it('random bytes in a differencing VHDX’s parent locator, sector bitmap entries or bitmaps never crash or hang', { timeout: 60_000 }, async () => {
    const base = tmp.path('fz-base.vhdx');
    qemuImg('create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', base, '16M');
    qemuIo('vhdx', base, ['write -P 0x11 0 3M']);
    const baseBytes = readFileSync(base);
    const layer = newLayer(Buffer.alloc(16 * MiB), 16 * MiB, MiB);
    applyWrite(layer, { offset: 1000, length: 3000, pattern: 0x42 }, { zeroBlocks: true });
    applyWrite(layer, { offset: 5 * MiB, length: 2 * MiB, zero: true }, { zeroBlocks: true });
    const child = tmp.path('fz-child.avhdx');
    writeVhdx(child, layer, { parentPath: base, seed: 9 });
    const b = readFileSync(child);
    const { bat, metadata } = regionsOf(b);
    const locator = metadataItem(b, PARENT_LOCATOR);
    const sbEntry = bat + 4096 * 8; // chunk ratio 4096 at 1 MiB blocks and 512-byte sectors
    const sb = Math.floor(b.readUInt32LE(sbEntry) / MiB) * MiB + b.readUInt32LE(sbEntry + 4) * 4096 * MiB;
    const refused = await fuzz(
      b,
      'fz-child.avhdx',
      [
        { from: metadata, to: metadata + 32 + 6 * 32 },
        { from: locator.data, to: locator.data + 200 },
        { from: bat, to: bat + 8 * 8 },
        { from: sbEntry, to: sbEntry + 8 },
        { from: sb, to: sb + 8 },
      ],
      500,
      3,
      [{ file: 'fz-base.vhdx', bytes: baseBytes }],
    );
    expect(refused).toBeGreaterThan(0);
  });
});
