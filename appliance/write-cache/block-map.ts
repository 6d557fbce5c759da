/**
 * The block map of a write-cache overlay: 2 bits per block saying where its
 * bytes live (the base disk, the overlay's data file, or nowhere: zeroes).
 *
 * Held in 4 KiB pages (16384 blocks each) that exist in memory only while
 * they hold a block that is not "base": a 1 TiB overlay nobody wrote to costs
 * no page at all, and memory grows with what was written, not with the disk.
 * The file layout is the same bytes, page after page: block i is bits
 * 2*(i%4)..2*(i%4)+1 of byte floor(i/4); a page never written is a hole of
 * the sparse map file and reads as "base".
 *
 * This file knows nothing of ordering or durability: the overlay decides when
 * dirty pages go to disk (overlay.ts explains why that order is safe).
 */
import type { FileHandle } from 'node:fs/promises';

export const BASE = 0;
export const DATA = 1;
export const ZERO = 2;
export type BlockState = typeof BASE | typeof DATA | typeof ZERO;

/** A map page is 4 KiB: the unit the map is written in, and what a disk writes atomically. */
export const MAP_PAGE_BYTES = 4096;
export const BLOCKS_PER_PAGE = MAP_PAGE_BYTES * 4;
/** The map file is read this many bytes at a time at open (holes read as zeroes, fast). */
const LOAD_CHUNK_BYTES = 1 << 20;
/** Zeroes for allocatePages, written up to this much at a time. */
const ZERO_CHUNK = new Uint8Array(1 << 20);

interface Page {
  bits: Uint8Array;
  /** Blocks of this page in each state: keeps the overlay's counters O(1) per change and whole-page fills O(1). */
  data: number;
  zero: number;
}

/** Consecutive blocks [first, end) in one state. */
export interface Run {
  state: BlockState;
  first: number;
  end: number;
}

/** Per byte value: how many of its four entries are data, zero, invalid (3). */
const DATA_IN_BYTE = new Uint8Array(256);
const ZERO_IN_BYTE = new Uint8Array(256);
const BAD_IN_BYTE = new Uint8Array(256);
for (let v = 0; v < 256; v++) {
  for (let k = 0; k < 4; k++) {
    const s = (v >> (2 * k)) & 3;
    if (s === DATA) DATA_IN_BYTE[v]!++;
    else if (s === ZERO) ZERO_IN_BYTE[v]!++;
    else if (s === 3) BAD_IN_BYTE[v]!++;
  }
}
/** The byte whose four entries are all `state`. */
const FILL_BYTE = [0x00, 0x55, 0xaa] as const;

export class BlockMapCorrupt extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BlockMapCorrupt';
  }
}

export class BlockMap {
  private readonly pages = new Map<number, Page>();
  private readonly dirty = new Set<number>();
  private dataCount = 0;
  private zeroCount = 0;

  constructor(readonly blocks: number) {}

  /** Bytes of the map file for `blocks` blocks. */
  static fileBytes(blocks: number): number {
    return Math.ceil(blocks / 4);
  }

  get dataBlocks(): number {
    return this.dataCount;
  }
  get zeroBlocks(): number {
    return this.zeroCount;
  }
  /** Pages held in memory (the map's whole memory cost is this times 4 KiB). */
  get pageCount(): number {
    return this.pages.size;
  }
  get dirtyPageCount(): number {
    return this.dirty.size;
  }

  get(block: number): BlockState {
    const page = this.pages.get(Math.floor(block / BLOCKS_PER_PAGE));
    if (!page) return BASE;
    const local = block % BLOCKS_PER_PAGE;
    return ((page.bits[local >> 2]! >> ((local & 3) * 2)) & 3) as BlockState;
  }

  /** How many blocks of [first, end) are in `state`. */
  count(first: number, end: number, state: BlockState): number {
    let n = 0;
    for (const run of this.runs(first, end)) if (run.state === state) n += run.end - run.first;
    return n;
  }

  /** The blocks [first, end) as maximal runs of one state, in order. Absent pages are skipped in one step. */
  *runs(first: number, end: number): Generator<Run> {
    let state: BlockState | null = null;
    let runFirst = first;
    let block = first;
    while (block < end) {
      const index = Math.floor(block / BLOCKS_PER_PAGE);
      const pageFirst = index * BLOCKS_PER_PAGE;
      const pageEnd = Math.min(end, pageFirst + BLOCKS_PER_PAGE);
      const page = this.pages.get(index);
      if (!page || (page.data === 0 && page.zero === 0)) {
        if (state !== BASE) {
          if (state !== null) yield { state, first: runFirst, end: block };
          state = BASE;
          runFirst = block;
        }
        block = pageEnd;
        continue;
      }
      for (; block < pageEnd; block++) {
        const local = block - pageFirst;
        const s = ((page.bits[local >> 2]! >> ((local & 3) * 2)) & 3) as BlockState;
        if (s === state) continue;
        if (state !== null) yield { state, first: runFirst, end: block };
        state = s;
        runFirst = block;
      }
    }
    if (state !== null) yield { state, first: runFirst, end };
  }

  /** Puts blocks [first, end) in `state`; pages that change become dirty. */
  setRange(first: number, end: number, state: BlockState): void {
    let block = first;
    while (block < end) {
      const index = Math.floor(block / BLOCKS_PER_PAGE);
      const pageFirst = index * BLOCKS_PER_PAGE;
      const pageEnd = Math.min(end, pageFirst + BLOCKS_PER_PAGE);
      let page = this.pages.get(index);
      if (!page && state === BASE) {
        block = pageEnd;
        continue;
      }
      page ??= this.addPage(index);
      if (block === pageFirst && pageEnd === pageFirst + BLOCKS_PER_PAGE) this.fillPage(index, page, state);
      else for (; block < pageEnd; block++) this.setInPage(index, page, block - pageFirst, state);
      block = pageEnd;
    }
  }

  /**
   * Writes zeroes over the file pages of [first, end) that are not in memory
   * (so all zero on disk: a hole, or zeroes written before). Same content,
   * but the file system allocates the space now: the flush that later writes
   * these pages then overwrites in place and does not hit ENOSPC when the disk
   * has filled up meanwhile (on file systems that overwrite in place).
   */
  async allocatePages(fh: FileHandle, first: number, end: number): Promise<void> {
    const fileBytes = BlockMap.fileBytes(this.blocks);
    let from = -1;
    let to = -1;
    const flushRun = async () => {
      for (let at = from * MAP_PAGE_BYTES; at < Math.min(fileBytes, to * MAP_PAGE_BYTES); at += ZERO_CHUNK.length) {
        await writeFully(fh, [ZERO_CHUNK.subarray(0, Math.min(ZERO_CHUNK.length, fileBytes - at, to * MAP_PAGE_BYTES - at))], at);
      }
    };
    if (end <= first) return;
    for (let index = Math.floor(first / BLOCKS_PER_PAGE); index * BLOCKS_PER_PAGE < end; index++) {
      if (this.pages.has(index)) continue;
      if (index !== to) {
        if (from >= 0) await flushRun();
        from = index;
      }
      to = index + 1;
    }
    if (from >= 0) await flushRun();
  }

  /** Dirty page numbers, ascending. */
  dirtyPages(): number[] {
    return [...this.dirty].sort((a, b) => a - b);
  }

  /**
   * Writes the given pages at their place in the map file, contiguous pages in
   * one write; the last page only up to the file's end. No sync: the caller orders that.
   */
  async writePages(fh: FileHandle, indexes: readonly number[]): Promise<void> {
    const fileBytes = BlockMap.fileBytes(this.blocks);
    let i = 0;
    while (i < indexes.length) {
      let j = i + 1;
      while (j < indexes.length && indexes[j] === indexes[j - 1]! + 1) j++;
      const bufs: Uint8Array[] = [];
      for (let k = i; k < j; k++) {
        const index = indexes[k]!;
        const bits = this.pages.get(index)?.bits ?? new Uint8Array(MAP_PAGE_BYTES);
        bufs.push(bits.subarray(0, Math.min(MAP_PAGE_BYTES, fileBytes - index * MAP_PAGE_BYTES)));
      }
      await writeFully(fh, bufs, indexes[i]! * MAP_PAGE_BYTES);
      i = j;
    }
  }

  /** The pages are on disk: no longer dirty, and all-base ones leave memory (the file has them as zeroes now). */
  markClean(indexes: readonly number[]): void {
    for (const index of indexes) {
      this.dirty.delete(index);
      const page = this.pages.get(index);
      if (page && page.data === 0 && page.zero === 0) this.pages.delete(index);
    }
  }

  /** Reads a map file page by page, keeping only the pages that are not all "base". */
  static async load(fh: FileHandle, blocks: number): Promise<BlockMap> {
    const map = new BlockMap(blocks);
    const fileBytes = BlockMap.fileBytes(blocks);
    const chunk = Buffer.alloc(Math.min(LOAD_CHUNK_BYTES, Math.ceil(fileBytes / MAP_PAGE_BYTES) * MAP_PAGE_BYTES));
    const zeroes = Buffer.alloc(MAP_PAGE_BYTES);
    for (let at = 0; at < fileBytes; at += chunk.length) {
      const want = Math.min(chunk.length, fileBytes - at);
      await readFully(fh, chunk, want, at);
      for (let off = 0; off < want; off += MAP_PAGE_BYTES) {
        const bytes = chunk.subarray(off, Math.min(want, off + MAP_PAGE_BYTES));
        if (bytes.equals(zeroes.subarray(0, bytes.length))) continue;
        map.adoptPage((at + off) / MAP_PAGE_BYTES, bytes);
      }
    }
    return map;
  }

  private adoptPage(index: number, bytes: Uint8Array): void {
    const page: Page = { bits: new Uint8Array(MAP_PAGE_BYTES), data: 0, zero: 0 };
    page.bits.set(bytes);
    let bad = 0;
    for (const v of page.bits) {
      page.data += DATA_IN_BYTE[v]!;
      page.zero += ZERO_IN_BYTE[v]!;
      bad += BAD_IN_BYTE[v]!;
    }
    if (bad) throw new BlockMapCorrupt(`map page ${index} has ${bad} entries with the undefined state 3`);
    // Entries past the last block (the last byte's padding) were never set by us.
    const valid = this.blocks - index * BLOCKS_PER_PAGE;
    for (let local = valid; local < Math.min(BLOCKS_PER_PAGE, bytes.length * 4); local++) {
      if ((page.bits[local >> 2]! >> ((local & 3) * 2)) & 3) throw new BlockMapCorrupt(`map page ${index} has an entry past the last block (${this.blocks})`);
    }
    this.pages.set(index, page);
    this.dataCount += page.data;
    this.zeroCount += page.zero;
  }

  private addPage(index: number): Page {
    const page: Page = { bits: new Uint8Array(MAP_PAGE_BYTES), data: 0, zero: 0 };
    this.pages.set(index, page);
    return page;
  }

  private setInPage(index: number, page: Page, local: number, state: BlockState): void {
    const byte = local >> 2;
    const shift = (local & 3) * 2;
    const old = (page.bits[byte]! >> shift) & 3;
    if (old === state) return;
    page.bits[byte] = (page.bits[byte]! & ~(3 << shift)) | (state << shift);
    this.account(page, old, -1);
    this.account(page, state, 1);
    this.dirty.add(index);
  }

  /** A whole page to one state (only for a full page: the last, short page goes block by block). */
  private fillPage(index: number, page: Page, state: BlockState): void {
    const data = state === DATA ? BLOCKS_PER_PAGE : 0;
    const zero = state === ZERO ? BLOCKS_PER_PAGE : 0;
    if (page.data === data && page.zero === zero) return;
    page.bits.fill(FILL_BYTE[state]);
    this.dataCount += data - page.data;
    this.zeroCount += zero - page.zero;
    page.data = data;
    page.zero = zero;
    this.dirty.add(index);
  }

  private account(page: Page, state: number, delta: number): void {
    if (state === DATA) {
      page.data += delta;
      this.dataCount += delta;
    } else if (state === ZERO) {
      page.zero += delta;
      this.zeroCount += delta;
    }
  }
}

/** pwritev until every byte is written (a regular file may take fewer bytes than asked). */
export async function writeFully(fh: FileHandle, parts: readonly Uint8Array[], position: number): Promise<void> {
  let bufs = parts.filter((b) => b.length > 0);
  let pos = position;
  while (bufs.length) {
    const { bytesWritten } = await fh.writev(bufs, pos);
    if (bytesWritten <= 0) throw new Error(`write at ${pos} made no progress`);
    pos += bytesWritten;
    let skip = bytesWritten;
    while (bufs.length && skip >= bufs[0]!.length) skip -= bufs.shift()!.length;
    if (skip) bufs = [bufs[0]!.subarray(skip), ...bufs.slice(1)];
  }
}

/** pread until `length` bytes are in `target` from its start; a file that ends first is an error. */
export async function readFully(fh: FileHandle, target: Uint8Array, length: number, position: number, targetOffset = 0): Promise<void> {
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(target, targetOffset + done, length - done, position + done);
    if (bytesRead === 0) throw new Error(`file ends at ${position + done}, ${length - done} bytes short of what was expected`);
    done += bytesRead;
  }
}
