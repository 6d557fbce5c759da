/**
 * VHD (Microsoft "Virtual Hard Disk Image Format Specification" 1.0):
 * fixed, dynamic and differencing disks. All fields are big-endian.
 *
 * Layout: a 512-byte footer at the end of the file (and, for dynamic and
 * differencing disks, a copy at offset 0); for those, a 1024-byte dynamic
 * header at footer.DataOffset, a BAT of 32-bit sector offsets, and blocks made
 * of a sector bitmap (padded to 512 bytes) followed by BlockSize bytes of data.
 */
import { ImageError } from './errors.js';
import { PageCache, isPowerOfTwo, pushExtent, type Extent, type Layer } from './layer.js';
import { readStruct, type ReadAt } from './read-at.js';

const SECTOR = 512;
const FOOTER_SIZE = 512;
const DYNAMIC_HEADER_SIZE = 1024;
const UNALLOCATED = 0xffffffff;
/** Windows caps VHDs at 2040 GiB; anything above 2 TiB is not a VHD we should trust. */
const MAX_VHD_SIZE = 2 ** 41;
const MAX_BLOCK_SIZE = 256 * 2 ** 20;
const BAT_PAGE_ENTRIES = 4096;

export type VhdDiskType = 'fixed' | 'dynamic' | 'differencing';
const DISK_TYPES: Record<number, VhdDiskType> = { 2: 'fixed', 3: 'dynamic', 4: 'differencing' };

export interface VhdLayer extends Layer {
  readonly format: 'vhd';
  readonly diskType: VhdDiskType;
  /** Footer UniqueId, hex: what a child's dynamic header names as its parent. */
  readonly uniqueId: string;
  /** Dynamic header ParentUniqueId, hex (differencing disks only). */
  readonly parentUniqueId?: string;
  /** Dynamic header ParentUnicodeName (differencing disks only), for messages. */
  readonly parentName?: string;
  /** Dynamic and differencing disks only. */
  readonly blockSize?: number;
}

/** Footer and dynamic header checksum: one's complement of the byte sum, the field itself excluded (spec, "Checksum"). */
export function vhdChecksum(buf: Buffer, checksumOffset: number): number {
  let sum = 0;
  for (let i = 0; i < buf.length; i++) if (i < checksumOffset || i >= checksumOffset + 4) sum += buf[i]!;
  return ~sum >>> 0;
}

const hex32 = (n: number) => `0x${n.toString(16).padStart(8, '0')}`;

export async function openVhd(reader: ReadAt, file: string): Promise<VhdLayer> {
  const bad = (problem: string) => new ImageError('malformed', file, problem);
  if (reader.size < FOOTER_SIZE) throw bad(`file of ${reader.size} bytes is too small to be a VHD`);

  const footer = await readStruct(reader, file, reader.size - FOOTER_SIZE, FOOTER_SIZE, 'VHD footer');
  if (footer.toString('latin1', 0, 8) !== 'conectix') {
    const head = await readStruct(reader, file, 0, FOOTER_SIZE, 'VHD footer copy');
    if (head.toString('latin1', 0, 8) === 'conectix') {
      throw bad('the VHD footer at the end of the file is missing, though its copy at offset 0 is there: the file looks truncated');
    }
    throw bad("no VHD footer (cookie 'conectix') in the last 512 bytes");
  }
  const stored = footer.readUInt32BE(64);
  const computed = vhdChecksum(footer, 64);
  if (stored !== computed) throw bad(`VHD footer checksum mismatch (stored ${hex32(stored)}, computed ${hex32(computed)})`);
  const version = footer.readUInt32BE(12);
  if (version >>> 16 !== 1) throw new ImageError('unsupported', file, `unsupported VHD format version ${hex32(version)}`);
  const typeCode = footer.readUInt32BE(60);
  const diskType = DISK_TYPES[typeCode];
  if (!diskType) throw new ImageError('unsupported', file, `unsupported VHD disk type ${typeCode} (2 fixed, 3 dynamic, 4 differencing)`);
  const size64 = footer.readBigUInt64BE(48);
  if (size64 > BigInt(MAX_VHD_SIZE)) throw bad(`VHD current size ${size64} is larger than the 2 TiB a VHD can hold`);
  const sizeBytes = Number(size64);
  if (sizeBytes % SECTOR !== 0) throw bad(`VHD current size ${sizeBytes} is not a multiple of the 512-byte sector size`);
  const uniqueId = footer.subarray(68, 84).toString('hex');
  const base = { file, format: 'vhd' as const, reader, sizeBytes, logicalSectorSize: 512 as const, diskType, uniqueId };

  if (diskType === 'fixed') {
    if (reader.size - FOOTER_SIZE < sizeBytes) {
      throw bad(`fixed VHD of ${sizeBytes} bytes needs ${sizeBytes + FOOTER_SIZE} bytes of file, but the file has ${reader.size}: truncated?`);
    }
    return {
      ...base,
      hasParent: false,
      async map(offset, length) {
        return [{ kind: 'data', offset, length, fileOffset: offset }];
      },
    };
  }

  const dataOffset64 = footer.readBigUInt64BE(16);
  if (dataOffset64 > BigInt(reader.size - FOOTER_SIZE - DYNAMIC_HEADER_SIZE)) {
    throw bad(`dynamic header offset ${dataOffset64} lies past the end of the file (size ${reader.size})`);
  }
  const header = await readStruct(reader, file, Number(dataOffset64), DYNAMIC_HEADER_SIZE, 'VHD dynamic header');
  if (header.toString('latin1', 0, 8) !== 'cxsparse') throw bad(`no dynamic header (cookie 'cxsparse') at offset ${dataOffset64}`);
  const hStored = header.readUInt32BE(36);
  const hComputed = vhdChecksum(header, 36);
  if (hStored !== hComputed) throw bad(`VHD dynamic header checksum mismatch (stored ${hex32(hStored)}, computed ${hex32(hComputed)})`);
  const headerVersion = header.readUInt32BE(24);
  if (headerVersion !== 0x00010000) throw new ImageError('unsupported', file, `unsupported VHD dynamic header version ${hex32(headerVersion)}`);
  const tableOffset64 = header.readBigUInt64BE(16);
  const maxTableEntries = header.readUInt32BE(28);
  const blockSize = header.readUInt32BE(32);
  if (!isPowerOfTwo(blockSize) || blockSize < SECTOR || blockSize > MAX_BLOCK_SIZE) {
    throw bad(`VHD block size ${blockSize} is not a power of two between 512 bytes and 256 MiB`);
  }
  const blocks = Math.ceil(sizeBytes / blockSize);
  if (maxTableEntries < blocks) {
    throw bad(`BAT has ${maxTableEntries} entries but a ${sizeBytes}-byte disk of ${blockSize}-byte blocks needs ${blocks}`);
  }
  const dataEnd = reader.size - FOOTER_SIZE;
  if (tableOffset64 + BigInt(blocks * 4) > BigInt(dataEnd)) {
    throw bad(`BAT at offset ${tableOffset64} (${blocks} entries) lies past the end of the file (size ${reader.size})`);
  }
  const tableOffset = Number(tableOffset64);
  const sectorsPerBlock = blockSize / SECTOR;
  const bitmapBytes = Math.ceil(sectorsPerBlock / 8 / SECTOR) * SECTOR;
  const differencing = diskType === 'differencing';
  const absent = differencing ? ('parent' as const) : ('zero' as const);

  const bat = new PageCache(async (page) => {
    const first = page * BAT_PAGE_ENTRIES;
    const count = Math.min(BAT_PAGE_ENTRIES, blocks - first);
    return readStruct(reader, file, tableOffset + first * 4, count * 4, 'BAT page');
  });
  const batEntry = async (block: number) =>
    (await bat.get(Math.floor(block / BAT_PAGE_ENTRIES))).readUInt32BE((block % BAT_PAGE_ENTRIES) * 4);

  return {
    ...base,
    hasParent: differencing,
    blockSize,
    ...(differencing
      ? { parentUniqueId: header.subarray(40, 56).toString('hex'), parentName: decodeUtf16be(header.subarray(64, 576)) }
      : {}),
    async map(offset, length) {
      const out: Extent[] = [];
      const end = offset + length;
      let pos = offset;
      while (pos < end) {
        const block = Math.floor(pos / blockSize);
        const blockStart = block * blockSize;
        const segEnd = Math.min(end, blockStart + blockSize);
        const entry = await batEntry(block);
        if (entry === UNALLOCATED) {
          pushExtent(out, { kind: absent, offset: pos, length: segEnd - pos });
          pos = segEnd;
          continue;
        }
        const blockFile = entry * SECTOR;
        const needed = Math.min(blockSize, sizeBytes - blockStart);
        if (blockFile < SECTOR || blockFile + bitmapBytes + needed > dataEnd) {
          throw bad(`BAT entry for block ${block} points to sector ${entry}, outside the file's data area (file size ${reader.size})`);
        }
        const dataFile = blockFile + bitmapBytes;
        // Sector bitmap: bit 7 of byte 0 is the block's first sector; 1 = in this file.
        const s0 = Math.floor((pos - blockStart) / SECTOR);
        const s1 = Math.ceil((segEnd - blockStart) / SECTOR);
        const firstByte = s0 >> 3;
        const bitmap = await readStruct(reader, file, blockFile + firstByte, ((s1 - 1) >> 3) - firstByte + 1, `sector bitmap of block ${block}`);
        const bit = (s: number) => (bitmap[(s >> 3) - firstByte]! >> (7 - (s & 7))) & 1;
        for (let s = s0; s < s1; ) {
          const present = bit(s);
          let t = s + 1;
          while (t < s1 && bit(t) === present) t++;
          const a = Math.max(pos, blockStart + s * SECTOR);
          const b = Math.min(segEnd, blockStart + t * SECTOR);
          pushExtent(out, present ? { kind: 'data', offset: a, length: b - a, fileOffset: dataFile + (a - blockStart) } : { kind: absent, offset: a, length: b - a });
          s = t;
        }
        pos = segEnd;
      }
      return out;
    },
  };
}

function decodeUtf16be(buf: Buffer): string {
  const le = Buffer.from(buf);
  le.swap16();
  const text = le.toString('utf16le');
  const nul = text.indexOf('\0');
  return nul < 0 ? text : text.slice(0, nul);
}
