/**
 * Test-only writers for the images qemu cannot create: VHD and VHDX
 * differencing disks (and VHDX with 4096-byte logical sectors). They follow
 * the specs field by field and are checked against independent readers
 * (qemu-img where it reads them, libvhdi's pyvhdi otherwise) in the tests.
 *
 * Input is the final content the layer should present plus which sectors are
 * stored in this file; sectors that are allocated but not present are filled
 * with a poison byte, so a reader that ignores the sector bitmap is caught.
 */
import { closeSync, ftruncateSync, openSync, readSync, fstatSync, writeSync } from 'node:fs';
import { crc32cWithZeroedField } from '../../../model/images/crc32c.js';
import { guidToBytes, guidToString } from '../../../model/images/guid.js';
import { vhdChecksum } from '../../../model/images/vhd.js';

const MiB = 2 ** 20;
export const POISON = 0xee;

export interface LayerContent {
  sizeBytes: number;
  blockSize: number;
  logicalSectorSize: 512 | 4096;
  /** The virtual disk as this layer (with its parents) presents it. */
  content: Buffer;
  /** Per logical sector: 1 when this file stores it. */
  present: Uint8Array;
  /** VHDX only: payload blocks written in the ZERO / UNMAPPED state (content is zero there). */
  zeroBlocks: Set<number>;
  unmappedBlocks: Set<number>;
}

/** A deterministic byte source (mulberry32) for GUIDs and ids. */
export function seededBytes(seed: number): (n: number) => Buffer {
  let a = seed >>> 0;
  return (n) => {
    const out = Buffer.alloc(n);
    for (let i = 0; i < n; i++) {
      a = (a + 0x6d2b79f5) >>> 0;
      let t = a;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      out[i] = ((t ^ (t >>> 14)) >>> 0) & 0xff;
    }
    return out;
  };
}

function readAt(fd: number, offset: number, length: number): Buffer {
  const buf = Buffer.alloc(length);
  readSync(fd, buf, 0, length, offset);
  return buf;
}

function withFile<T>(path: string, flags: string, fn: (fd: number) => T): T {
  const fd = openSync(path, flags);
  try {
    return fn(fd);
  } finally {
    closeSync(fd);
  }
}

const sectorsOf = (layer: LayerContent, block: number) => {
  const per = layer.blockSize / layer.logicalSectorSize;
  const first = block * per;
  const count = Math.min(per, layer.sizeBytes / layer.logicalSectorSize - first);
  return { first, count, per };
};

// ---------------------------------------------------------------- VHD

/** The identity fields of a VHD's footer (what a child records about its parent). */
export function vhdIdentity(path: string): { uniqueId: Buffer; timestamp: number; geometry: Buffer; currentSize: bigint } {
  return withFile(path, 'r', (fd) => {
    const footer = readAt(fd, fstatSync(fd).size - 512, 512);
    return { uniqueId: footer.subarray(68, 84), timestamp: footer.readUInt32BE(24), geometry: footer.subarray(56, 60), currentSize: footer.readBigUInt64BE(48) };
  });
}

/** Writes a VHD differencing disk (disk type 4) over the VHD at `parentPath`. */
export function writeVhdDifferencing(path: string, parentPath: string, layer: LayerContent, seed: number): void {
  if (layer.logicalSectorSize !== 512) throw new Error('VHD sectors are 512 bytes');
  const rand = seededBytes(seed);
  const parent = vhdIdentity(parentPath);
  const blocks = Math.ceil(layer.sizeBytes / layer.blockSize);
  const bitmapBytes = Math.ceil(layer.blockSize / 512 / 8 / 512) * 512;

  const footer = Buffer.alloc(512);
  footer.write('conectix', 0, 'latin1');
  footer.writeUInt32BE(2, 8); // features: reserved bit set
  footer.writeUInt32BE(0x00010000, 12);
  footer.writeBigUInt64BE(512n, 16); // dynamic header right after the footer copy
  footer.writeUInt32BE(parent.timestamp + 1, 24);
  footer.write('bftw', 28, 'latin1');
  footer.writeUInt32BE(0x00010000, 32);
  footer.write('Wi2k', 36, 'latin1');
  footer.writeBigUInt64BE(BigInt(layer.sizeBytes), 40);
  footer.writeBigUInt64BE(BigInt(layer.sizeBytes), 48);
  parent.geometry.copy(footer, 56);
  footer.writeUInt32BE(4, 60);
  rand(16).copy(footer, 68);
  footer.writeUInt32BE(vhdChecksum(footer, 64), 64);

  const tableOffset = 512 + 1024;
  const batBytes = Math.ceil((blocks * 4) / 512) * 512;
  const locatorOffset = tableOffset + batBytes;
  const parentName = parentPath.split('/').pop()!;
  const locatorData = Buffer.from(`.\\${parentName}`, 'utf16le'); // W2ru: UTF-16LE relative path
  const header = Buffer.alloc(1024);
  header.write('cxsparse', 0, 'latin1');
  header.writeBigUInt64BE(0xffffffffffffffffn, 8);
  header.writeBigUInt64BE(BigInt(tableOffset), 16);
  header.writeUInt32BE(0x00010000, 24);
  header.writeUInt32BE(blocks, 28);
  header.writeUInt32BE(layer.blockSize, 32);
  parent.uniqueId.copy(header, 40);
  header.writeUInt32BE(parent.timestamp, 56);
  const nameBe = Buffer.from(parentName, 'utf16le');
  nameBe.swap16();
  nameBe.copy(header, 64, 0, Math.min(nameBe.length, 512));
  header.write('W2ru', 576, 'latin1');
  header.writeUInt32BE(1, 580); // one sector of space
  header.writeUInt32BE(locatorData.length, 584);
  header.writeBigUInt64BE(BigInt(locatorOffset), 592);
  header.writeUInt32BE(vhdChecksum(header, 36), 36);

  const bat = Buffer.alloc(batBytes, 0xff);
  withFile(path, 'w', (fd) => {
    writeSync(fd, footer, 0, 512, 0);
    writeSync(fd, header, 0, 1024, 512);
    writeSync(fd, locatorData, 0, locatorData.length, locatorOffset);
    let next = locatorOffset + 512;
    for (let b = 0; b < blocks; b++) {
      const { first, count } = sectorsOf(layer, b);
      let any = false;
      for (let s = first; s < first + count && !any; s++) any = layer.present[s] === 1;
      if (!any) continue;
      const bitmap = Buffer.alloc(bitmapBytes);
      const data = Buffer.alloc(layer.blockSize, POISON);
      for (let i = 0; i < count; i++) {
        if (layer.present[first + i] !== 1) continue;
        bitmap[i >> 3]! |= 0x80 >> (i & 7); // spec: bit 7 of byte 0 is the first sector
        layer.content.copy(data, i * 512, (first + i) * 512, (first + i + 1) * 512);
      }
      bat.writeUInt32BE(next / 512, b * 4);
      writeSync(fd, bitmap, 0, bitmapBytes, next);
      writeSync(fd, data, 0, data.length, next + bitmapBytes);
      next += bitmapBytes + layer.blockSize;
    }
    writeSync(fd, bat, 0, batBytes, tableOffset);
    writeSync(fd, footer, 0, 512, next);
    ftruncateSync(fd, next + 512);
  });
}

// ---------------------------------------------------------------- VHDX

const GUID = {
  bat: '2dc27766-f623-4200-9d64-115e9bfd4a08',
  metadata: '8b7ca206-4790-4b9a-b8fe-575f050f886e',
  fileParameters: 'caa16737-fa36-4d43-b3b6-33f0aa44e76b',
  virtualDiskSize: '2fa54224-cd1b-4876-b211-5dbed83bf4b8',
  virtualDiskId: 'beca12ab-b2e6-4523-93ef-c309e000c746',
  logicalSectorSize: '8141bf1d-a96f-4709-ba47-f233a8faab5f',
  physicalSectorSize: 'cda348c7-445d-4471-9cc9-e9885251c556',
  parentLocator: 'a8d35f2d-b30b-454d-abf7-d3d84834ab0c',
  vhdxLocator: 'b04aefb7-d19e-4a81-b789-25b8e9445913',
};

/** The DataWriteGuid of a VHDX's current header (highest SequenceNumber of the two). */
export function vhdxDataWriteGuid(path: string): string {
  return withFile(path, 'r', (fd) => {
    const [h1, h2] = [readAt(fd, 64 * 1024, 4096), readAt(fd, 128 * 1024, 4096)];
    const current = h2.readBigUInt64LE(8) > h1.readBigUInt64LE(8) ? h2 : h1;
    return guidToString(current, 32);
  });
}

export interface VhdxWriteOptions {
  /** A parent VHDX: makes a differencing disk whose parent_linkage is the parent's DataWriteGuid. */
  parentPath?: string;
  seed: number;
  /** Overrides what the parent locator's parent_linkage (and parent_linkage2) say. */
  linkage?: { parentLinkage: string; parentLinkage2?: string };
}

/** Writes a VHDX: differencing over `parentPath`, or a dynamic disk without one. */
export function writeVhdx(path: string, layer: LayerContent, opts: VhdxWriteOptions): void {
  const rand = seededBytes(opts.seed);
  const { blockSize, logicalSectorSize: lss, sizeBytes } = layer;
  const hasParent = opts.parentPath !== undefined;
  const chunkRatio = (2 ** 23 * lss) / blockSize;
  const dataBlocks = Math.ceil(sizeBytes / blockSize);
  const bitmapBlocks = Math.ceil(dataBlocks / chunkRatio);
  const totalEntries = hasParent ? bitmapBlocks * (chunkRatio + 1) : dataBlocks + Math.floor((dataBlocks - 1) / chunkRatio);
  const batLength = Math.ceil((totalEntries * 8) / MiB) * MiB;
  const logOffset = 1 * MiB;
  const metadataOffset = 2 * MiB;
  const batOffset = 3 * MiB;
  let next = batOffset + batLength;

  const headerFor = (seq: bigint, fileWrite: Buffer, dataWrite: Buffer) => {
    const h = Buffer.alloc(4096);
    h.write('head', 0, 'latin1');
    h.writeBigUInt64LE(seq, 8);
    fileWrite.copy(h, 16);
    dataWrite.copy(h, 32);
    h.writeUInt16LE(0, 64);
    h.writeUInt16LE(1, 66);
    h.writeUInt32LE(1 * MiB, 68);
    h.writeBigUInt64LE(BigInt(logOffset), 72);
    h.writeUInt32LE(crc32cWithZeroedField(h, 4), 4);
    return h;
  };
  const fileWrite = rand(16);
  const dataWrite = rand(16);

  const regions = Buffer.alloc(64 * 1024);
  regions.write('regi', 0, 'latin1');
  regions.writeUInt32LE(2, 8);
  [
    [GUID.bat, batOffset, batLength],
    [GUID.metadata, metadataOffset, 1 * MiB],
  ].forEach(([guid, offset, length], i) => {
    const at = 16 + i * 32;
    guidToBytes(guid as string).copy(regions, at);
    regions.writeBigUInt64LE(BigInt(offset as number), at + 16);
    regions.writeUInt32LE(length as number, at + 24);
    regions.writeUInt32LE(1, at + 28);
  });
  regions.writeUInt32LE(crc32cWithZeroedField(regions, 4), 4);

  // Metadata region: table, then items from 64 KiB on.
  const items: { guid: string; flags: number; data: Buffer }[] = [];
  const u32 = (...v: number[]) => {
    const b = Buffer.alloc(v.length * 4);
    v.forEach((x, i) => b.writeUInt32LE(x, i * 4));
    return b;
  };
  const size8 = Buffer.alloc(8);
  size8.writeBigUInt64LE(BigInt(sizeBytes));
  items.push({ guid: GUID.fileParameters, flags: 4, data: u32(blockSize, hasParent ? 2 : 0) });
  items.push({ guid: GUID.virtualDiskSize, flags: 6, data: size8 });
  items.push({ guid: GUID.virtualDiskId, flags: 6, data: rand(16) });
  items.push({ guid: GUID.logicalSectorSize, flags: 6, data: u32(lss) });
  items.push({ guid: GUID.physicalSectorSize, flags: 6, data: u32(4096) });
  if (hasParent) {
    const parentName = opts.parentPath!.split('/').pop()!;
    const linkage = opts.linkage ?? { parentLinkage: vhdxDataWriteGuid(opts.parentPath!) };
    const pairs: [string, string][] = [
      ['parent_linkage', `{${linkage.parentLinkage}}`],
      ...(linkage.parentLinkage2 ? [['parent_linkage2', `{${linkage.parentLinkage2}}`] as [string, string]] : []),
      ['relative_path', `.\\${parentName}`],
      ['absolute_win32_path', `\\\\?\\D:\\store\\${parentName}`],
    ];
    const head = Buffer.alloc(20 + pairs.length * 12);
    guidToBytes(GUID.vhdxLocator).copy(head, 0);
    head.writeUInt16LE(pairs.length, 18);
    const strings: Buffer[] = [];
    let at = head.length;
    pairs.forEach(([k, v], i) => {
      const kb = Buffer.from(k, 'utf16le');
      const vb = Buffer.from(v, 'utf16le');
      head.writeUInt32LE(at, 20 + i * 12);
      head.writeUInt32LE(at + kb.length, 20 + i * 12 + 4);
      head.writeUInt16LE(kb.length, 20 + i * 12 + 8);
      head.writeUInt16LE(vb.length, 20 + i * 12 + 10);
      strings.push(kb, vb);
      at += kb.length + vb.length;
    });
    items.push({ guid: GUID.parentLocator, flags: 4, data: Buffer.concat([head, ...strings]) });
  }
  const metadata = Buffer.alloc(1 * MiB);
  metadata.write('metadata', 0, 'latin1');
  metadata.writeUInt16LE(items.length, 10);
  let itemAt = 64 * 1024;
  items.forEach((item, i) => {
    const at = 32 + i * 32;
    guidToBytes(item.guid).copy(metadata, at);
    metadata.writeUInt32LE(itemAt, at + 16);
    metadata.writeUInt32LE(item.data.length, at + 20);
    metadata.writeUInt32LE(item.flags, at + 24);
    item.data.copy(metadata, itemAt);
    itemAt += Math.ceil(item.data.length / 8) * 8;
  });

  const bat = Buffer.alloc(batLength);
  const setEntry = (index: number, state: number, fileOffset: number) => {
    const mb = fileOffset / MiB;
    bat.writeUInt32LE(((mb % 4096) * 2 ** 20 + state) >>> 0, index * 8);
    bat.writeUInt32LE(Math.floor(mb / 4096), index * 8 + 4);
  };

  withFile(path, 'w', (fd) => {
    const ident = Buffer.alloc(8 + 512);
    ident.write('vhdxfile', 0, 'latin1');
    ident.write('bootfarm test writer', 8, 'utf16le');
    writeSync(fd, ident, 0, ident.length, 0);
    writeSync(fd, headerFor(1n, fileWrite, dataWrite), 0, 4096, 64 * 1024);
    writeSync(fd, headerFor(2n, fileWrite, dataWrite), 0, 4096, 128 * 1024);
    writeSync(fd, regions, 0, regions.length, 192 * 1024);
    writeSync(fd, regions, 0, regions.length, 256 * 1024);
    writeSync(fd, metadata, 0, metadata.length, metadataOffset);

    const chunkBitmaps = new Map<number, Buffer>();
    for (let b = 0; b < dataBlocks; b++) {
      const index = b + Math.floor(b / chunkRatio);
      if (layer.zeroBlocks.has(b)) {
        setEntry(index, 2, 0);
        continue;
      }
      if (layer.unmappedBlocks.has(b)) {
        setEntry(index, 3, 0);
        continue;
      }
      const { first, count } = sectorsOf(layer, b);
      let present = 0;
      for (let s = first; s < first + count; s++) present += layer.present[s] === 1 ? 1 : 0;
      if (present === 0) continue; // NOT_PRESENT
      const full = present === count || !hasParent;
      const data = Buffer.alloc(blockSize, full ? 0 : POISON);
      for (let i = 0; i < count; i++) {
        const s = first + i;
        if (full || layer.present[s] === 1) layer.content.copy(data, i * lss, s * lss, (s + 1) * lss);
      }
      writeSync(fd, data, 0, blockSize, next);
      setEntry(index, full ? 6 : 7, next);
      next += blockSize;
      if (!full) {
        const chunk = Math.floor(b / chunkRatio);
        let bitmap = chunkBitmaps.get(chunk);
        if (!bitmap) chunkBitmaps.set(chunk, (bitmap = Buffer.alloc(1 * MiB)));
        for (let i = 0; i < count; i++) {
          const s = first + i;
          const bit = s - chunk * 2 ** 23;
          if (layer.present[s] === 1) bitmap[bit >> 3]! |= 1 << (bit & 7); // LSB first ([MS-VHDX] 2.4)
        }
      }
    }
    for (const [chunk, bitmap] of chunkBitmaps) {
      writeSync(fd, bitmap, 0, bitmap.length, next);
      setEntry(chunk * (chunkRatio + 1) + chunkRatio, 6, next);
      next += 1 * MiB;
    }
    writeSync(fd, bat, 0, batLength, batOffset);
    ftruncateSync(fd, next);
  });
}
