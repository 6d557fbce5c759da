/**
 * A target's write cache: a copy-on-write overlay over a read-only base disk
 * (PVS "cache on server" and "cache on server persistent"). The target sees
 * one disk; its writes land here, block by block, and the vDisk under it is
 * never touched.
 *
 * Files in the overlay's folder:
 *   meta.json  identity and geometry (meta.ts); written last at creation
 *   data       sparse; block i at byte i * blockSize, written in place
 *   map        sparse; 2 bits per block: 0 base, 1 data, 2 zero (block-map.ts)
 *
 * Crash safety. Ordering inside the one writer (mutations and flushes run one
 * at a time, in call order):
 *   - a write pwrites the data file first, and only then sets the blocks to
 *     "data" in the in-memory map;
 *   - the map reaches its file only in flush (or a FUA request): fdatasync
 *     the data file, then pwrite the dirty map pages, then fdatasync the map.
 * So a map entry on disk that says "data" always points at bytes that were
 * on stable storage before the entry was written, and block i's bytes only
 * ever live at i * blockSize. What that buys after kill -9 (or power loss,
 * provided a 4 KiB-aligned map page write is atomic, or at least tears only
 * at sector boundaries):
 *   - every write, zeroing and trim that resolved before a flush or FUA
 *     request that resolved reads back exactly, unless a later request
 *     changed the same bytes;
 *   - a block changed after the last completed flush reads as its content
 *     after some prefix of those changes (old or new per block, never
 *     another block's bytes, never stale bytes of an earlier trimmed era),
 *     with one exception: a block that was already "data" on disk and was
 *     rewritten in place may, after power loss (not kill -9), read as a mix
 *     of its old and new bytes at sector granularity, like any disk's
 *     unflushed write; and after kill -9 in the middle of a pwrite, a block
 *     larger than a memory page (4 KiB) may be partly new;
 *   - a failed request (errno from the file system, OverlayFull) changes no
 *     map entry; a failed pwrite may leave part of its new bytes in blocks
 *     that were already "data" (the range's content is then undefined, as
 *     for a disk that failed a write).
 * The first write into a map page (16384 blocks) also writes that page of
 * the map file as zeroes (content unchanged, space allocated), before its
 * data: when the disk fills up, a write needing new space fails with ENOSPC
 * and the flushes that follow still succeed.
 *
 * A failed fdatasync is sticky: Linux may have dropped the dirty pages it
 * could not write, so a later fsync would succeed without them. From then
 * on mutations and flushes reject with that same error; reads go on.
 *
 * Concurrency: reads run alongside everything. A read takes one snapshot of
 * the map when it starts (before any I/O) and reads the runs it found, so a
 * read overlapping a concurrent mutation gets old or new bytes per block (NBD
 * leaves overlapping requests undefined anyway). Mutations are serialized,
 * which keeps a sub-block read-modify-write from losing a concurrent update
 * to the same block and keeps every flush after the writes it must cover.
 *
 * One Overlay object per folder: a second open in this process is refused;
 * across processes nothing stops it (the daemon is the only user).
 */
import { mkdir, open, rm, type FileHandle } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fsyncDir, sweepTemp } from '../fs-atomic.js';
import { BlockMap, BlockMapCorrupt, DATA, ZERO, readFully, writeFully } from './block-map.js';
import { OverlayCorrupt, OverlayFull, OverlayMismatch } from './errors.js';
import { META_FORMAT, metaDifferences, readMeta, writeMeta, type Identity } from './meta.js';

export { OverlayCorrupt, OverlayFull, OverlayMismatch } from './errors.js';

/** The read-only disk under the overlay (a verified vDisk version reader). */
export interface BaseDisk {
  readonly sizeBytes: number;
  read(offset: number, length: number): Promise<Buffer>;
}

export interface OverlayOptions {
  /** Folder owned by this overlay; created (mode 0700) if missing. */
  dir: string;
  base: BaseDisk;
  /** Overlay block size, a power of two 512..65536. @default 4096 */
  blockSize?: number;
  /** Max bytes of written (non-zero) blocks this overlay may hold; null = only bounded by the disk size. Can be changed later with setLimit. */
  limitBytes: number | null;
  /**
   * Identity stored in meta.json at creation, e.g. {vdiskId, version, contentHash, mac};
   * open() of an existing folder whose identity or geometry (sizeBytes, blockSize) differs
   * throws OverlayMismatch (the caller then discards and recreates).
   */
  identity: Identity;
}

export interface OverlayStats {
  sizeBytes: number;
  blockSize: number;
  limitBytes: number | null;
  /** Bytes of blocks in "data" state (what the limit counts). */
  usedBytes: number;
  dataBlocks: number;
  /** Blocks in "zero" state: they read as zeroes and cost no space. */
  zeroBlocks: number;
  /** Map pages (4 KiB each) held in memory: the map's whole memory cost. */
  mapPages: number;
  /** Map pages changed since the last flush. */
  dirtyMapPages: number;
}

export const DEFAULT_BLOCK_SIZE = 4096;
const MIN_BLOCK_SIZE = 512;
const MAX_BLOCK_SIZE = 65536;
const FILE_MODE = 0o600;
const META_FILE = 'meta.json';
const DATA_FILE = 'data';
const MAP_FILE = 'map';

/** Folders open in this process: two objects over one folder would each trust their own map and undo each other's writes. */
const openDirs = new Set<string>();

const noop = () => undefined;

export class Overlay {
  readonly sizeBytes: number;
  readonly blockSize: number;
  /** Blocks of the disk; the last may be short when sizeBytes is not a multiple of blockSize (the data file pads it). */
  private readonly blocks: number;
  private limit: number | null;
  /** Tail of the mutation queue. */
  private queue: Promise<unknown> = Promise.resolve();
  /** Reads in flight (settled-only promises): close waits for them before closing the files under them. */
  private readonly reads = new Set<Promise<void>>();
  private closed = false;
  /** A failed fdatasync: durability can no longer be promised (see the header). */
  private failed: Error | null = null;
  /** The data file got writes since its last fdatasync. */
  private dataUnsynced = false;

  private constructor(
    readonly dir: string,
    private readonly base: BaseDisk,
    blockSize: number,
    limitBytes: number | null,
    private readonly dataFile: FileHandle,
    private readonly mapFile: FileHandle,
    private readonly map: BlockMap,
  ) {
    this.sizeBytes = base.sizeBytes;
    this.blockSize = blockSize;
    this.blocks = map.blocks;
    this.limit = limitBytes;
  }

  /** Creates the overlay in `opts.dir`, or loads the one there (its map page by page). */
  static async open(opts: OverlayOptions): Promise<Overlay> {
    const blockSize = opts.blockSize ?? DEFAULT_BLOCK_SIZE;
    checkOptions(opts, blockSize);
    const dir = resolve(opts.dir);
    if (openDirs.has(dir)) throw new Error(`write cache ${dir} is already open in this process`);
    openDirs.add(dir);
    try {
      const { dataFile, mapFile, map } = await openFiles(dir, opts.base.sizeBytes, blockSize, opts.identity);
      return new Overlay(dir, opts.base, blockSize, opts.limitBytes, dataFile, mapFile, map);
    } catch (e) {
      openDirs.delete(dir);
      throw e;
    }
  }

  /** Deletes an overlay folder and everything in it; nothing to do when it does not exist. Refused while it is open here. */
  static async destroy(dir: string): Promise<void> {
    const abs = resolve(dir);
    if (openDirs.has(abs)) throw new Error(`write cache ${abs} is open: close it before destroying it`);
    await rm(abs, { recursive: true, force: true });
  }

  get limitBytes(): number | null {
    return this.limit;
  }

  /** Exactly `length` bytes at `offset`: overlay blocks where written, zeroes where zeroed, the base elsewhere. */
  async read(offset: number, length: number): Promise<Buffer> {
    this.assertOpen('read');
    this.assertRange('read', offset, length);
    const result = this.readSpan(offset, length);
    const settled = result.then(noop, noop);
    this.reads.add(settled);
    void settled.then(() => this.reads.delete(settled));
    return result;
  }

  /**
   * Writes `data` at any byte offset; partial blocks are merged with their
   * current content. `data` must not change until the promise settles.
   * fua: durable (as after flush) when it resolves.
   */
  async write(offset: number, data: Uint8Array, fua = false): Promise<void> {
    this.assertOpen('write');
    if (!(data instanceof Uint8Array)) throw new TypeError('write: data must be a Buffer or Uint8Array');
    this.assertRange('write', offset, data.length);
    return this.mutate(async () => {
      if (data.length) await this.writeData(offset, data);
      if (fua) await this.persist();
    });
  }

  /** The range reads as zeroes afterwards: whole blocks become "zero" (no space), partial edge blocks are written as data. */
  async writeZeroes(offset: number, length: number, fua = false): Promise<void> {
    this.assertOpen('writeZeroes');
    this.assertRange('writeZeroes', offset, length);
    return this.mutate(async () => {
      if (length) await this.zeroRange(offset, length);
      if (fua) await this.persist();
    });
  }

  /**
   * Changes nothing (NBD lets a server ignore TRIM). Giving blocks back would
   * need holes punched in the data file, which Node cannot do: the limit would
   * forget space the file still takes, and a target could fill the appliance's
   * disk by writing and trimming in turn.
   */
  async trim(offset: number, length: number, fua = false): Promise<void> {
    this.assertOpen('trim');
    this.assertRange('trim', offset, length);
    return this.mutate(async () => {
      if (fua) await this.persist();
    });
  }

  /** Everything that resolved before this call is durable when it resolves. */
  async flush(): Promise<void> {
    this.assertOpen('flush');
    return this.mutate(() => this.persist());
  }

  /** Bytes of blocks in "data" state (what limitBytes counts). */
  usedBytes(): number {
    return this.map.dataBlocks * this.blockSize;
  }

  /** A new limit for writes from now on; lowering it below usedBytes frees nothing, it only refuses new blocks. */
  setLimit(limitBytes: number | null): void {
    this.assertOpen('setLimit');
    checkLimit(limitBytes);
    this.limit = limitBytes;
  }

  stats(): OverlayStats {
    return {
      sizeBytes: this.sizeBytes,
      blockSize: this.blockSize,
      limitBytes: this.limit,
      usedBytes: this.usedBytes(),
      dataBlocks: this.map.dataBlocks,
      zeroBlocks: this.map.zeroBlocks,
      mapPages: this.map.pageCount,
      dirtyMapPages: this.map.dirtyPageCount,
    };
  }

  /** Flushes and closes the files; every later call rejects. The files are closed even when the flush fails. */
  async close(): Promise<void> {
    this.assertOpen('close');
    this.closed = true;
    try {
      await this.mutate(() => this.persist());
    } finally {
      await Promise.all(this.reads);
      await Promise.allSettled([this.dataFile.close(), this.mapFile.close()]);
      openDirs.delete(this.dir);
    }
  }

  private mutate(fn: () => Promise<void>): Promise<void> {
    const run = this.queue.then(async () => {
      if (this.failed) throw this.failed;
      await fn();
    });
    this.queue = run.then(noop, noop);
    return run;
  }

  private async writeData(offset: number, data: Uint8Array): Promise<void> {
    const bs = this.blockSize;
    const first = Math.floor(offset / bs);
    const end = Math.ceil((offset + data.length) / bs);
    this.reserve('write', end - first - this.map.count(first, end, DATA), 0);
    await this.map.allocatePages(this.mapFile, first, end);
    const parts = await this.wholeBlocksOf(first, end, offset, data);
    this.dataUnsynced = true;
    await writeFully(this.dataFile, parts, first * bs);
    this.map.setRange(first, end, DATA);
  }

  /**
   * The bytes of blocks [first, end) once `data` is in them at `offset`, as
   * parts for one pwritev: `data` itself for the aligned middle (no copy),
   * read-modify-written edge blocks around it.
   */
  private async wholeBlocksOf(first: number, end: number, offset: number, data: Uint8Array): Promise<Uint8Array[]> {
    const bs = this.blockSize;
    const head = offset - first * bs;
    const tail = end * bs - (offset + data.length);
    if (head === 0 && tail === 0) return [data];
    if (end - first === 1) {
      const block = await this.readSpan(first * bs, bs);
      block.set(data, head);
      return [block];
    }
    const parts: Uint8Array[] = [];
    let body = data;
    if (head) {
      const block = await this.readSpan(first * bs, bs);
      block.set(data.subarray(0, bs - head), head);
      parts.push(block);
      body = body.subarray(bs - head);
    }
    let last: Buffer | null = null;
    if (tail) {
      last = await this.readSpan((end - 1) * bs, bs);
      last.set(data.subarray(data.length - (bs - tail)), 0);
      body = body.subarray(0, body.length - (bs - tail));
    }
    parts.push(body);
    if (last) parts.push(last);
    return parts;
  }

  private async zeroRange(offset: number, length: number): Promise<void> {
    const bs = this.blockSize;
    const stop = offset + length;
    const first = Math.floor(offset / bs);
    const end = Math.ceil(stop / bs);
    const whole = this.wholeBlocks(offset, stop);
    const edges: number[] = [];
    if (first < whole.first) edges.push(first);
    if (whole.end < end) edges.push(end - 1);
    // A block already all zeroes stays so: zeroing part of it changes nothing.
    const toWrite = edges.filter((b) => this.map.get(b) !== ZERO);
    const fresh = toWrite.filter((b) => this.map.get(b) !== DATA).length;
    // Whole data blocks are written with zeroes and stay data: their space in the file is taken for good (see trim).
    this.reserve('writeZeroes', fresh, 0);
    await this.map.allocatePages(this.mapFile, first, end);
    for (const b of toWrite) {
      const block = await this.readSpan(b * bs, bs);
      block.fill(0, Math.max(offset, b * bs) - b * bs, Math.min(stop, (b + 1) * bs) - b * bs);
      this.dataUnsynced = true;
      await writeFully(this.dataFile, [block], b * bs);
    }
    for (const b of toWrite) this.map.setRange(b, b + 1, DATA);
    const zeroes = Buffer.alloc(Math.min(1024 * 1024, (whole.end - whole.first) * bs));
    for (let b = whole.first; b < whole.end; b++) {
      if (this.map.get(b) !== DATA) {
        this.map.setRange(b, b + 1, ZERO);
        continue;
      }
      let e = b + 1;
      while (e < whole.end && this.map.get(e) === DATA && (e - b) * bs < zeroes.length) e++;
      this.dataUnsynced = true;
      await writeFully(this.dataFile, [zeroes.subarray(0, (e - b) * bs)], b * bs);
      b = e - 1;
    }
  }

  /** Blocks wholly inside [offset, stop); the short last block counts as whole when the range reaches the disk's end. */
  private wholeBlocks(offset: number, stop: number): { first: number; end: number } {
    const first = Math.ceil(offset / this.blockSize);
    const end = stop === this.sizeBytes ? this.blocks : Math.floor(stop / this.blockSize);
    return { first, end: Math.max(first, end) };
  }

  /** Throws OverlayFull when `fresh` new data blocks (with `freed` given back by the same request) would pass the limit. */
  private reserve(op: string, fresh: number, freed: number): void {
    if (fresh <= 0 || this.limit === null) return;
    const bs = this.blockSize;
    const after = (this.map.dataBlocks + fresh - freed) * bs;
    if (after <= this.limit) return;
    throw new OverlayFull(
      `${op} needs ${fresh * bs} bytes of new blocks in write cache ${this.dir}: ${this.usedBytes()} of its ${this.limit} bytes are used`,
      fresh * bs,
      this.usedBytes(),
      this.limit,
    );
  }

  /** fdatasync data, then the dirty map pages, then fdatasync map (the header says why in that order). */
  private async persist(): Promise<void> {
    if (this.dataUnsynced) {
      await this.sync(this.dataFile);
      this.dataUnsynced = false;
    }
    const pages = this.map.dirtyPages();
    if (!pages.length) return;
    await this.map.writePages(this.mapFile, pages);
    await this.sync(this.mapFile);
    this.map.markClean(pages);
  }

  private async sync(fh: FileHandle): Promise<void> {
    try {
      await fh.datasync();
    } catch (e) {
      this.failed ??= e as Error;
      throw e;
    }
  }

  /**
   * `length` bytes at `offset`, which may reach into the short last block's
   * padding (zeroes). The map is walked once, before any I/O; then one pread
   * per run of data blocks and one base read per run of base blocks, all at once.
   */
  private async readSpan(offset: number, length: number): Promise<Buffer> {
    const out = Buffer.alloc(length);
    if (!length) return out;
    const bs = this.blockSize;
    const stop = offset + length;
    const jobs: Promise<void>[] = [];
    for (const run of this.map.runs(Math.floor(offset / bs), Math.ceil(stop / bs))) {
      if (run.state === ZERO) continue;
      const from = Math.max(offset, run.first * bs);
      const to = Math.min(stop, run.end * bs);
      jobs.push(run.state === DATA ? readFully(this.dataFile, out, to - from, from, from - offset) : this.readBase(out, from - offset, from, to));
    }
    // allSettled: no pread may still be writing into `out` (or using a file close is about to shut) when this settles.
    const results = await Promise.allSettled(jobs);
    for (const r of results) if (r.status === 'rejected') throw r.reason;
    return out;
  }

  private async readBase(out: Buffer, at: number, from: number, to: number): Promise<void> {
    const stop = Math.min(to, this.sizeBytes);
    if (stop <= from) return;
    const bytes = await this.base.read(from, stop - from);
    if (bytes.length !== stop - from) throw new Error(`base disk returned ${bytes.length} bytes for ${stop - from} at ${from}`);
    out.set(bytes, at);
  }

  private assertOpen(op: string): void {
    if (this.closed) throw new Error(`${op}: write cache ${this.dir} is closed`);
  }

  private assertRange(op: string, offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || offset < 0) throw new RangeError(`${op}: offset ${offset} is not a byte offset (a non-negative integer)`);
    if (!Number.isSafeInteger(length) || length < 0) throw new RangeError(`${op}: length ${length} is not a byte count (a non-negative integer)`);
    if (offset + length > this.sizeBytes) throw new RangeError(`${op}: ${length} bytes at ${offset} end past the end of the ${this.sizeBytes}-byte disk`);
  }
}

function checkOptions(opts: OverlayOptions, blockSize: number): void {
  if (!Number.isInteger(blockSize) || blockSize < MIN_BLOCK_SIZE || blockSize > MAX_BLOCK_SIZE || (blockSize & (blockSize - 1)) !== 0) {
    throw new RangeError(`blockSize ${blockSize} is not a power of two from ${MIN_BLOCK_SIZE} to ${MAX_BLOCK_SIZE}`);
  }
  const size = opts.base.sizeBytes;
  if (!Number.isSafeInteger(size) || size <= 0 || !Number.isSafeInteger(Math.ceil(size / blockSize) * blockSize)) {
    throw new RangeError(`base disk size ${size} is not a positive byte count`);
  }
  checkLimit(opts.limitBytes);
  if (typeof opts.identity !== 'object' || opts.identity === null || Array.isArray(opts.identity)) throw new TypeError('identity must be an object');
  for (const [key, value] of Object.entries(opts.identity)) {
    // It goes through JSON and is compared with ===: NaN or Infinity would never match again.
    if (typeof value !== 'string' && !(typeof value === 'number' && Number.isFinite(value))) throw new TypeError(`identity.${key} must be a string or a finite number`);
  }
}

function checkLimit(limitBytes: number | null): void {
  if (limitBytes !== null && (!Number.isSafeInteger(limitBytes) || limitBytes < 0)) throw new RangeError(`limitBytes ${limitBytes} is not null or a non-negative byte count`);
}

interface OpenedFiles {
  dataFile: FileHandle;
  mapFile: FileHandle;
  map: BlockMap;
}

async function openFiles(dir: string, sizeBytes: number, blockSize: number, identity: Identity): Promise<OpenedFiles> {
  const blocks = Math.ceil(sizeBytes / blockSize);
  await makeDir(dir);
  await sweepTemp(dir);
  const meta = await readMeta(join(dir, META_FILE));
  if (!meta) return createFiles(dir, sizeBytes, blockSize, identity);
  const differences = metaDifferences(meta, { sizeBytes, blockSize, identity });
  if (differences.length) throw new OverlayMismatch(`write cache ${dir} was made for another disk: ${differences.join('; ')}`);
  const dataFile = await openSized(join(dir, DATA_FILE), blocks * blockSize);
  try {
    const mapFile = await openSized(join(dir, MAP_FILE), BlockMap.fileBytes(blocks));
    try {
      return { dataFile, mapFile, map: await BlockMap.load(mapFile, blocks) };
    } catch (e) {
      await mapFile.close();
      throw e instanceof BlockMapCorrupt ? new OverlayCorrupt(`${join(dir, MAP_FILE)}: ${e.message}`) : e;
    }
  } catch (e) {
    await dataFile.close();
    throw e;
  }
}

/**
 * A new overlay: empty sparse files of their final size, made durable, and
 * only then meta.json. A crash before meta.json leaves a folder open() makes
 * again from scratch ('w+' truncates what a crash left).
 */
async function createFiles(dir: string, sizeBytes: number, blockSize: number, identity: Identity): Promise<OpenedFiles> {
  const blocks = Math.ceil(sizeBytes / blockSize);
  const dataFile = await createSized(join(dir, DATA_FILE), blocks * blockSize);
  try {
    const mapFile = await createSized(join(dir, MAP_FILE), BlockMap.fileBytes(blocks));
    try {
      await fsyncDir(dir);
      await writeMeta(join(dir, META_FILE), { format: META_FORMAT, sizeBytes, blockSize, identity: { ...identity }, createdAt: new Date().toISOString() });
      return { dataFile, mapFile, map: new BlockMap(blocks) };
    } catch (e) {
      await mapFile.close();
      throw e;
    }
  } catch (e) {
    await dataFile.close();
    throw e;
  }
}

async function createSized(path: string, size: number): Promise<FileHandle> {
  const fh = await open(path, 'w+', FILE_MODE);
  try {
    await fh.truncate(size);
    await fh.sync();
    return fh;
  } catch (e) {
    await fh.close();
    throw e;
  }
}

async function openSized(path: string, size: number): Promise<FileHandle> {
  let fh: FileHandle;
  try {
    fh = await open(path, 'r+');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new OverlayCorrupt(`${path} is missing`);
    throw e;
  }
  const actual = (await fh.stat()).size;
  if (actual !== size) {
    await fh.close();
    throw new OverlayCorrupt(`${path} is ${actual} bytes, expected ${size}`);
  }
  return fh;
}

/** mkdir -p with mode 0700; each new directory's entry is made durable, or a crash could lose the whole overlay after a flush. */
async function makeDir(dir: string): Promise<void> {
  const made = await mkdir(dir, { recursive: true, mode: 0o700 });
  if (!made) return;
  const parents: string[] = [];
  for (let p = dir; ; p = dirname(p)) {
    parents.push(dirname(p));
    if (p === made || dirname(p) === p) break;
  }
  for (const parent of parents.reverse()) await fsyncDir(parent);
}
