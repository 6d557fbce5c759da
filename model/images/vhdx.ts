/**
 * VHDX ([MS-VHDX] "Virtual Hard Disk v2 (VHDX) File Format"): fixed, dynamic
 * and differencing files. All fields are little-endian; GUIDs in Microsoft's
 * mixed-endian layout. Section numbers below are [MS-VHDX]'s.
 *
 * Read-only: the log is never replayed. A file whose current header has a
 * non-zero LogGuid may hold updates that only the log has (2.3.3), so it is
 * refused rather than read stale.
 */
import { crc32cWithZeroedField } from './crc32c.js';
import { ImageError } from './errors.js';
import { guidToString, isZeroGuid, normalizeGuid } from './guid.js';
import { PageCache, isPowerOfTwo, pushExtent, type Extent, type Layer } from './layer.js';
import { readStruct, type ReadAt } from './read-at.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const HEADER_OFFSETS = [64 * KiB, 128 * KiB] as const; // 2.2.2
const HEADER_SIZE = 4 * KiB;
const REGION_TABLE_OFFSETS = [192 * KiB, 256 * KiB] as const; // 2.2.3
const REGION_TABLE_SIZE = 64 * KiB;
const METADATA_TABLE_SIZE = 64 * KiB; // 2.6
const MAX_TABLE_ENTRIES = 2047;
const MAX_VIRTUAL_SIZE = 64 * 2 ** 40; // 2.6.2.2
const SECTORS_PER_BITMAP_BLOCK = 2 ** 23; // 2.4
const BAT_PAGE_ENTRIES = 4096;

export const VHDX_GUIDS = {
  batRegion: '2dc27766-f623-4200-9d64-115e9bfd4a08',
  metadataRegion: '8b7ca206-4790-4b9a-b8fe-575f050f886e',
  fileParameters: 'caa16737-fa36-4d43-b3b6-33f0aa44e76b',
  virtualDiskSize: '2fa54224-cd1b-4876-b211-5dbed83bf4b8',
  virtualDiskId: 'beca12ab-b2e6-4523-93ef-c309e000c746',
  logicalSectorSize: '8141bf1d-a96f-4709-ba47-f233a8faab5f',
  physicalSectorSize: 'cda348c7-445d-4471-9cc9-e9885251c556',
  parentLocator: 'a8d35f2d-b30b-454d-abf7-d3d84834ab0c',
  vhdxParentLocatorType: 'b04aefb7-d19e-4a81-b789-25b8e9445913',
} as const;
const KNOWN_METADATA = new Set<string>([
  VHDX_GUIDS.fileParameters,
  VHDX_GUIDS.virtualDiskSize,
  VHDX_GUIDS.virtualDiskId,
  VHDX_GUIDS.logicalSectorSize,
  VHDX_GUIDS.physicalSectorSize,
  VHDX_GUIDS.parentLocator,
]);

/** Payload block states (2.5.1.1) and sector bitmap block states (2.5.1.2). */
export const PAYLOAD = { notPresent: 0, undefined: 1, zero: 2, unmapped: 3, fullyPresent: 6, partiallyPresent: 7 } as const;
export const SB_PRESENT = 6;

export interface VhdxHeader {
  sequenceNumber: bigint;
  fileWriteGuid: string;
  dataWriteGuid: string;
  logGuid: string;
  logVersion: number;
  version: number;
  logLength: number;
  logOffset: bigint;
}

export interface VhdxLayer extends Layer {
  readonly format: 'vhdx';
  readonly subformat: 'fixed' | 'dynamic' | 'differencing';
  readonly header: VhdxHeader;
  /** The current header's DataWriteGuid: what a child's parent_linkage names. */
  readonly dataWriteGuid: string;
  readonly blockSize: number;
  readonly physicalSectorSize: 512 | 4096;
  readonly virtualDiskId?: string;
  /** Parent locator key/value pairs, differencing files only (2.6.2.6.3). */
  readonly parentLocator?: Readonly<Record<string, string>>;
  /** parent_linkage and, when present, parent_linkage2, normalized. */
  readonly parentLinkage: readonly string[];
}

export function parseVhdxHeader(buf: Buffer): VhdxHeader | string {
  if (buf.toString('latin1', 0, 4) !== 'head') return "no 'head' signature";
  const stored = buf.readUInt32LE(4);
  const computed = crc32cWithZeroedField(buf, 4);
  if (stored !== computed) return `CRC-32C mismatch (stored 0x${stored.toString(16)}, computed 0x${computed.toString(16)})`;
  return {
    sequenceNumber: buf.readBigUInt64LE(8),
    fileWriteGuid: guidToString(buf, 16),
    dataWriteGuid: guidToString(buf, 32),
    logGuid: isZeroGuid(buf, 48) ? '' : guidToString(buf, 48),
    logVersion: buf.readUInt16LE(64),
    version: buf.readUInt16LE(66),
    logLength: buf.readUInt32LE(68),
    logOffset: buf.readBigUInt64LE(72),
  };
}

interface Region {
  offset: number;
  length: number;
}

export async function openVhdx(reader: ReadAt, file: string): Promise<VhdxLayer> {
  const bad = (problem: string) => new ImageError('malformed', file, problem);
  const unsupported = (problem: string) => new ImageError('unsupported', file, problem);
  if (reader.size < 1 * MiB) throw bad(`file of ${reader.size} bytes is too small to be a VHDX (the header section alone is 1 MiB)`);

  // 2.2.1 File type identifier.
  const ident = await readStruct(reader, file, 0, 8, 'file type identifier');
  if (ident.toString('latin1') !== 'vhdxfile') throw bad("no 'vhdxfile' signature at offset 0");

  // 2.2.2 Headers: the valid one with the highest SequenceNumber is current.
  const parsed = await Promise.all(
    HEADER_OFFSETS.map(async (at) => parseVhdxHeader(await readStruct(reader, file, at, HEADER_SIZE, 'VHDX header'))),
  );
  const valid = parsed.filter((h): h is VhdxHeader => typeof h !== 'string');
  if (valid.length === 0) throw bad(`no valid VHDX header (header 1: ${parsed[0] as string}; header 2: ${parsed[1] as string})`);
  const header = valid.reduce((a, b) => (b.sequenceNumber > a.sequenceNumber ? b : a));
  if (header.version !== 1) throw unsupported(`unsupported VHDX version ${header.version}`);
  if (header.logGuid) {
    throw new ImageError(
      'dirty',
      file,
      `the VHDX log has pending updates (LogGuid ${header.logGuid}): the file was not closed cleanly or is open for writing elsewhere. ` +
        'Attach and detach it once in Hyper-V (or Mount-VHD/Dismount-VHD) so the log is replayed, then retry; this reader does not replay logs.',
    );
  }

  // 2.2.3 Region table: the first copy, or the second when the first is damaged.
  let regions: Map<string, Region> | undefined;
  const tableProblems: string[] = [];
  for (const at of REGION_TABLE_OFFSETS) {
    const result = parseRegionTable(await readStruct(reader, file, at, REGION_TABLE_SIZE, 'region table'), reader.size);
    if (typeof result === 'string') tableProblems.push(result);
    else {
      regions = result;
      break;
    }
  }
  if (!regions) throw bad(`no valid region table (copy 1: ${tableProblems[0]}; copy 2: ${tableProblems[1]})`);
  const batRegion = regions.get(VHDX_GUIDS.batRegion);
  const metadataRegion = regions.get(VHDX_GUIDS.metadataRegion);
  if (!batRegion) throw bad('the region table has no BAT region');
  if (!metadataRegion) throw bad('the region table has no metadata region');

  // 2.6 Metadata.
  const meta = await readMetadata(reader, file, metadataRegion);
  const item = (guid: string, name: string, minLength: number) => {
    const found = meta.get(guid);
    if (!found) throw bad(`required metadata item ${name} is missing`);
    if (found.length < minLength) throw bad(`metadata item ${name} is ${found.length} bytes, expected at least ${minLength}`);
    return found;
  };
  const fileParameters = item(VHDX_GUIDS.fileParameters, 'File Parameters', 8);
  const blockSize = fileParameters.readUInt32LE(0);
  const leaveBlocksAllocated = (fileParameters.readUInt32LE(4) & 1) !== 0;
  const hasParent = (fileParameters.readUInt32LE(4) & 2) !== 0;
  if (!isPowerOfTwo(blockSize) || blockSize < 1 * MiB || blockSize > 256 * MiB) {
    throw bad(`block size ${blockSize} is not a power of two between 1 MiB and 256 MiB`);
  }
  const logicalSectorSize = item(VHDX_GUIDS.logicalSectorSize, 'Logical Sector Size', 4).readUInt32LE(0);
  if (logicalSectorSize !== 512 && logicalSectorSize !== 4096) throw bad(`logical sector size ${logicalSectorSize} is neither 512 nor 4096`);
  const physicalSectorSize = item(VHDX_GUIDS.physicalSectorSize, 'Physical Sector Size', 4).readUInt32LE(0);
  if (physicalSectorSize !== 512 && physicalSectorSize !== 4096) throw bad(`physical sector size ${physicalSectorSize} is neither 512 nor 4096`);
  const size64 = item(VHDX_GUIDS.virtualDiskSize, 'Virtual Disk Size', 8).readBigUInt64LE(0);
  if (size64 === 0n || size64 > BigInt(MAX_VIRTUAL_SIZE)) throw bad(`virtual disk size ${size64} is not between 1 byte and 64 TiB`);
  const sizeBytes = Number(size64);
  if (sizeBytes % logicalSectorSize !== 0) throw bad(`virtual disk size ${sizeBytes} is not a multiple of the logical sector size ${logicalSectorSize}`);
  const idItem = meta.get(VHDX_GUIDS.virtualDiskId);
  const virtualDiskId = idItem && idItem.length >= 16 ? guidToString(idItem) : undefined;

  let parentLocator: Record<string, string> | undefined;
  const parentLinkage: string[] = [];
  if (hasParent) {
    parentLocator = parseParentLocator(item(VHDX_GUIDS.parentLocator, 'Parent Locator', 20), bad);
    for (const key of ['parent_linkage', 'parent_linkage2']) {
      const value = parentLocator[key];
      if (value === undefined) continue;
      const guid = normalizeGuid(value);
      if (!guid) throw bad(`parent locator ${key} '${value}' is not a GUID`);
      parentLinkage.push(guid);
    }
    if (!parentLocator['parent_linkage']) throw bad('the parent locator has no parent_linkage entry');
  }

  // 2.5 BAT: payload entries interleaved with one sector bitmap entry per chunk.
  const chunkRatio = (SECTORS_PER_BITMAP_BLOCK * logicalSectorSize) / blockSize;
  const dataBlocks = Math.ceil(sizeBytes / blockSize);
  const bitmapBlocks = Math.ceil(dataBlocks / chunkRatio);
  const totalEntries = hasParent ? bitmapBlocks * (chunkRatio + 1) : dataBlocks + Math.floor((dataBlocks - 1) / chunkRatio);
  if (batRegion.length < totalEntries * 8) {
    throw bad(`BAT region of ${batRegion.length} bytes cannot hold the ${totalEntries} entries a ${sizeBytes}-byte disk of ${blockSize}-byte blocks needs`);
  }
  const bat = new PageCache(async (page) => {
    const first = page * BAT_PAGE_ENTRIES;
    const count = Math.min(BAT_PAGE_ENTRIES, totalEntries - first);
    return readStruct(reader, file, batRegion.offset + first * 8, count * 8, 'BAT page');
  });
  /** State and file offset of BAT entry `index` (2.5.1): bits 0-2 state, 20-63 FileOffsetMB. */
  const batEntry = async (index: number) => {
    const page = await bat.get(Math.floor(index / BAT_PAGE_ENTRIES));
    const at = (index % BAT_PAGE_ENTRIES) * 8;
    const lo = page.readUInt32LE(at);
    const hi = page.readUInt32LE(at + 4);
    return { state: lo & 7, fileOffset: ((lo >>> 20) + hi * 4096) * MiB };
  };
  const checkBlockOffset = (fileOffset: number, length: number, what: string) => {
    if (fileOffset < 1 * MiB || fileOffset + length > reader.size) {
      throw bad(`BAT entry for ${what} points to offset ${fileOffset}, outside the file (size ${reader.size})`);
    }
  };

  const absent = hasParent ? ('parent' as const) : ('zero' as const);
  return {
    file,
    format: 'vhdx',
    reader,
    sizeBytes,
    logicalSectorSize,
    hasParent,
    subformat: hasParent ? 'differencing' : leaveBlocksAllocated ? 'fixed' : 'dynamic',
    header,
    dataWriteGuid: header.dataWriteGuid,
    blockSize,
    physicalSectorSize,
    ...(virtualDiskId ? { virtualDiskId } : {}),
    ...(parentLocator ? { parentLocator } : {}),
    parentLinkage,
    async map(offset, length) {
      const out: Extent[] = [];
      const end = offset + length;
      let pos = offset;
      while (pos < end) {
        const block = Math.floor(pos / blockSize);
        const blockStart = block * blockSize;
        const segEnd = Math.min(end, blockStart + blockSize);
        const chunk = Math.floor(block / chunkRatio);
        const { state, fileOffset } = await batEntry(block + chunk);
        const needed = Math.min(blockSize, sizeBytes - blockStart);
        switch (state) {
          case PAYLOAD.notPresent:
            pushExtent(out, { kind: absent, offset: pos, length: segEnd - pos });
            break;
          case PAYLOAD.undefined: // contents undefined: zeros are one of the allowed reads (2.5.1.1)
          case PAYLOAD.zero:
          case PAYLOAD.unmapped: // zeros, or the pre-unmap data: zeros leak nothing
            pushExtent(out, { kind: 'zero', offset: pos, length: segEnd - pos });
            break;
          case PAYLOAD.fullyPresent:
            checkBlockOffset(fileOffset, needed, `block ${block}`);
            pushExtent(out, { kind: 'data', offset: pos, length: segEnd - pos, fileOffset: fileOffset + (pos - blockStart) });
            break;
          case PAYLOAD.partiallyPresent: {
            if (!hasParent) throw bad(`block ${block} is PARTIALLY_PRESENT in a file without a parent`);
            checkBlockOffset(fileOffset, needed, `block ${block}`);
            const sb = await batEntry(chunk * (chunkRatio + 1) + chunkRatio);
            if (sb.state !== SB_PRESENT) throw bad(`block ${block} is PARTIALLY_PRESENT but the sector bitmap block of chunk ${chunk} is not present`);
            checkBlockOffset(sb.fileOffset, 1 * MiB, `the sector bitmap of chunk ${chunk}`);
            // 2.4: bit n (LSB first) of the chunk's bitmap is the chunk's sector n; 1 = in this file.
            const chunkFirstSector = chunk * SECTORS_PER_BITMAP_BLOCK;
            const s0 = Math.floor(pos / logicalSectorSize) - chunkFirstSector;
            const s1 = Math.ceil(segEnd / logicalSectorSize) - chunkFirstSector;
            const firstByte = s0 >> 3;
            const bitmap = await readStruct(reader, file, sb.fileOffset + firstByte, ((s1 - 1) >> 3) - firstByte + 1, `sector bitmap of block ${block}`);
            const bit = (s: number) => (bitmap[(s >> 3) - firstByte]! >> (s & 7)) & 1;
            for (let s = s0; s < s1; ) {
              const present = bit(s);
              let t = s + 1;
              while (t < s1 && bit(t) === present) t++;
              const a = Math.max(pos, (chunkFirstSector + s) * logicalSectorSize);
              const b = Math.min(segEnd, (chunkFirstSector + t) * logicalSectorSize);
              pushExtent(
                out,
                present ? { kind: 'data', offset: a, length: b - a, fileOffset: fileOffset + (a - blockStart) } : { kind: 'parent', offset: a, length: b - a },
              );
              s = t;
            }
            break;
          }
          default:
            throw bad(`BAT entry for block ${block} has reserved state ${state}`);
        }
        pos = segEnd;
      }
      return out;
    },
  };
}

function parseRegionTable(buf: Buffer, fileSize: number): Map<string, Region> | string {
  if (buf.toString('latin1', 0, 4) !== 'regi') return "no 'regi' signature";
  const stored = buf.readUInt32LE(4);
  const computed = crc32cWithZeroedField(buf, 4);
  if (stored !== computed) return `CRC-32C mismatch (stored 0x${stored.toString(16)}, computed 0x${computed.toString(16)})`;
  const count = buf.readUInt32LE(8);
  if (count > MAX_TABLE_ENTRIES) return `${count} entries, more than the ${MAX_TABLE_ENTRIES} allowed`;
  const regions = new Map<string, Region>();
  for (let i = 0; i < count; i++) {
    const at = 16 + i * 32;
    const guid = guidToString(buf, at);
    const offset = buf.readBigUInt64LE(at + 16);
    const length = buf.readUInt32LE(at + 24);
    const required = (buf.readUInt32LE(at + 28) & 1) !== 0;
    if (guid !== VHDX_GUIDS.batRegion && guid !== VHDX_GUIDS.metadataRegion) {
      if (required) return `required region ${guid} is not one this reader knows`;
      continue;
    }
    if (regions.has(guid)) return `region ${guid} appears twice`;
    if (offset < BigInt(MiB) || offset % BigInt(MiB) !== 0n || length % MiB !== 0 || length === 0) {
      return `region ${guid} at offset ${offset} of length ${length} is not 1 MiB-aligned`;
    }
    if (offset + BigInt(length) > BigInt(fileSize)) return `region ${guid} (offset ${offset}, length ${length}) lies past the end of the file (size ${fileSize})`;
    regions.set(guid, { offset: Number(offset), length });
  }
  return regions;
}

/** The system metadata items (2.6.1) by GUID, each read (at most 1 MiB) and bounds-checked. */
async function readMetadata(reader: ReadAt, file: string, region: Region): Promise<Map<string, Buffer>> {
  const bad = (problem: string) => new ImageError('malformed', file, problem);
  if (region.length < METADATA_TABLE_SIZE) throw bad(`metadata region of ${region.length} bytes is smaller than its 64 KiB table`);
  const table = await readStruct(reader, file, region.offset, METADATA_TABLE_SIZE, 'metadata table');
  if (table.toString('latin1', 0, 8) !== 'metadata') throw bad(`no 'metadata' signature at the start of the metadata region (offset ${region.offset})`);
  const count = table.readUInt16LE(10);
  if (count > MAX_TABLE_ENTRIES) throw bad(`metadata table has ${count} entries, more than the ${MAX_TABLE_ENTRIES} allowed`);
  const items = new Map<string, Buffer>();
  for (let i = 0; i < count; i++) {
    const at = 32 + i * 32;
    const guid = guidToString(table, at);
    const offset = table.readUInt32LE(at + 16);
    const length = table.readUInt32LE(at + 20);
    const flags = table.readUInt32LE(at + 24);
    const isUser = (flags & 1) !== 0;
    const isRequired = (flags & 4) !== 0;
    if (isUser || !KNOWN_METADATA.has(guid)) {
      if (isRequired) throw new ImageError('unsupported', file, `required metadata item ${guid} is not one this reader knows`);
      continue;
    }
    if (items.has(guid)) throw bad(`metadata item ${guid} appears twice`);
    if (length > 1 * MiB) throw bad(`metadata item ${guid} is ${length} bytes, more than 1 MiB`);
    if (length === 0) {
      items.set(guid, Buffer.alloc(0));
      continue;
    }
    if (offset < METADATA_TABLE_SIZE || offset + length > region.length) {
      throw bad(`metadata item ${guid} (offset ${offset}, length ${length}) lies outside the metadata region (${region.length} bytes)`);
    }
    items.set(guid, await readStruct(reader, file, region.offset + offset, length, `metadata item ${guid}`));
  }
  return items;
}

/** 2.6.2.6: a 20-byte header, then 12-byte entries pointing at UTF-16LE keys and values inside the item. */
function parseParentLocator(buf: Buffer, bad: (problem: string) => ImageError): Record<string, string> {
  const type = guidToString(buf, 0);
  if (type !== VHDX_GUIDS.vhdxParentLocatorType) throw bad(`parent locator type ${type} is not the VHDX locator type`);
  const count = buf.readUInt16LE(18);
  if (20 + count * 12 > buf.length) throw bad(`parent locator claims ${count} entries but is only ${buf.length} bytes`);
  const out: Record<string, string> = Object.create(null);
  const text = (offset: number, length: number, what: string) => {
    if (offset === 0 || length === 0 || offset + length > buf.length) throw bad(`parent locator ${what} (offset ${offset}, length ${length}) lies outside the item`);
    return buf.toString('utf16le', offset, offset + length);
  };
  for (let i = 0; i < count; i++) {
    const at = 20 + i * 12;
    const key = text(buf.readUInt32LE(at), buf.readUInt16LE(at + 8), `key ${i}`);
    out[key] = text(buf.readUInt32LE(at + 4), buf.readUInt16LE(at + 10), `value of '${key}'`);
  }
  return out;
}
