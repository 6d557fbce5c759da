/**
 * The write-cache overlay on a real file system over an in-memory base disk:
 * what reads return after writes, zeroing and trims, the limit, reopening,
 * identity checks, bad ranges, a sparse 1 TiB disk, I/O coalescing,
 * concurrent sub-block writes and errors from the file system.
 * (Random sequences against a model: write-cache-model.test.ts; kill -9:
 * write-cache-crash.test.ts.)
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, open, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, onTestFinished, vi } from 'vitest';
import { Overlay, OverlayCorrupt, OverlayFull, OverlayMismatch, type OverlayOptions } from '../../appliance/write-cache/overlay.js';
import { OverlayModel, memoryBase, patternBase, patternByte, seededBytes } from './support/write-cache.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const BS = 4096;
const identity = { vdiskId: 'vd_aaaaaaaaaaaaaaaa', version: 3, mac: '52:54:00:12:34:56' };

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'bootfarm-wc-'));
  onTestFinished(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** An open overlay over `size` random base bytes in a fresh folder, closed at the end of the test. */
async function setup(size = 64 * BS + 1000, extra: Partial<OverlayOptions> = {}) {
  const dir = join(await tempDir(), 'overlay');
  const base = memoryBase(seededBytes(size, size));
  const opts: OverlayOptions = { dir, base, limitBytes: null, identity, ...extra };
  const overlay = await Overlay.open(opts);
  onTestFinished(() => overlay.close().catch(() => undefined));
  const model = new OverlayModel(base.bytes, overlay.blockSize, opts.limitBytes);
  return { dir, base, opts, overlay, model };
}

async function expectMatches(overlay: Overlay, model: OverlayModel): Promise<void> {
  const all = await overlay.read(0, overlay.sizeBytes);
  expect(all.equals(model.bytes)).toBe(true);
  expect(overlay.usedBytes()).toBe(model.usedBytes());
}

/** FileHandle's prototype, to watch or break the overlay's file I/O (each test file runs in its own process). */
async function fileHandleProto(): Promise<FileHandle> {
  const fh = await open(tmpdir(), 'r');
  const proto = Object.getPrototypeOf(fh) as FileHandle;
  await fh.close();
  return proto;
}

function errnoError(code: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: injected by the test`), { code, errno: code === 'EIO' ? -5 : -28, syscall: 'write' });
}

afterEach(() => {
  vi.restoreAllMocks();
});

describe('reads and writes', () => {
  it('reads the base until written; aligned writes replace whole blocks', async () => {
    const { overlay, model, base } = await setup();
    expect((await overlay.read(0, overlay.sizeBytes)).equals(base.bytes)).toBe(true);
    const data = seededBytes(1, 3 * BS);
    await overlay.write(5 * BS, data);
    model.write(5 * BS, data);
    await expectMatches(overlay, model);
    expect(overlay.usedBytes()).toBe(3 * BS);
  });

  it('merges sub-block and block-straddling writes with the current content', async () => {
    const { overlay, model } = await setup();
    const cases: [number, number][] = [
      [10, 1], // one byte inside a base block
      [BS - 3, 7], // across a block boundary
      [3 * BS + 100, 5 * BS + 17], // unaligned head, whole middle, unaligned tail
      [3 * BS + 200, 10], // again inside a block that is now data
      [0, 1], // the very first byte
    ];
    for (const [i, [offset, length]] of cases.entries()) {
      const data = seededBytes(100 + i, length);
      await overlay.write(offset, data);
      model.write(offset, data);
      await expectMatches(overlay, model);
    }
  });

  it('handles a short last block (size not a multiple of the block size) like any other', async () => {
    const size = 8 * BS + 123;
    const { overlay, model, opts } = await setup(size);
    await overlay.write(size - 50, seededBytes(2, 50));
    model.write(size - 50, seededBytes(2, 50));
    await overlay.write(8 * BS, seededBytes(3, 20));
    model.write(8 * BS, seededBytes(3, 20));
    await expectMatches(overlay, model);
    expect(overlay.usedBytes()).toBe(BS);
    // The short block is whole for a range that reaches the end of the disk: zeroed as a block (a data block keeps its space).
    await overlay.writeZeroes(8 * BS, 123);
    model.writeZeroes(8 * BS, 123);
    await expectMatches(overlay, model);
    expect(overlay.usedBytes()).toBe(BS);
    await overlay.close();
    const again = await Overlay.open(opts);
    await expectMatches(again, model);
    await again.close();
  });

  it('writeZeroes: whole base blocks cost nothing, data blocks keep their space, partial edges are written as data', async () => {
    const { overlay, model } = await setup();
    await overlay.write(0, seededBytes(4, 16 * BS));
    model.write(0, seededBytes(4, 16 * BS));
    expect(overlay.usedBytes()).toBe(16 * BS);
    await overlay.writeZeroes(2 * BS, 4 * BS); // aligned over data: written with zeroes, still counted
    model.writeZeroes(2 * BS, 4 * BS);
    await expectMatches(overlay, model);
    expect(overlay.usedBytes()).toBe(16 * BS);
    expect(overlay.stats().zeroBlocks).toBe(0);
    await overlay.writeZeroes(20 * BS + 7, 3 * BS); // base blocks: two data edges, two zero blocks
    model.writeZeroes(20 * BS + 7, 3 * BS);
    await expectMatches(overlay, model);
    expect(overlay.usedBytes()).toBe(18 * BS);
    expect(overlay.stats().zeroBlocks).toBe(2);
    // Zeroing part of a zero block changes nothing and costs nothing.
    await overlay.writeZeroes(21 * BS + 5, 10);
    model.writeZeroes(21 * BS + 5, 10);
    await expectMatches(overlay, model);
    expect(overlay.usedBytes()).toBe(18 * BS);
    // Writing into a zero block merges with zeroes.
    await overlay.write(22 * BS + 1, Buffer.from([9, 9]));
    model.write(22 * BS + 1, Buffer.from([9, 9]));
    await expectMatches(overlay, model);
    expect(overlay.usedBytes()).toBe(19 * BS);
  });

  it('trim changes nothing and gives no space back (the data file cannot be hole-punched): write-then-trim cannot get round the limit', async () => {
    const { overlay, model } = await setup(64 * BS, { limitBytes: 8 * BS });
    await overlay.write(0, seededBytes(5, 8 * BS));
    model.write(0, seededBytes(5, 8 * BS));
    await overlay.trim(0, overlay.sizeBytes, true);
    model.trim(0, overlay.sizeBytes);
    await expectMatches(overlay, model);
    expect(overlay.usedBytes()).toBe(8 * BS);
    await expect(overlay.write(20 * BS, seededBytes(6, BS))).rejects.toBeInstanceOf(OverlayFull);
  });

  it('zero-length requests are no-ops at any offset up to the end', async () => {
    const { overlay, model } = await setup();
    expect((await overlay.read(overlay.sizeBytes, 0)).length).toBe(0);
    await overlay.write(overlay.sizeBytes, Buffer.alloc(0), true);
    await overlay.writeZeroes(5, 0);
    await overlay.trim(0, 0);
    await expectMatches(overlay, model);
  });
});

describe('limit', () => {
  it('refuses a write needing new blocks past the limit and writes none of it', async () => {
    const { overlay, model } = await setup(64 * BS, { limitBytes: 4 * BS });
    await overlay.write(0, seededBytes(6, 3 * BS));
    model.write(0, seededBytes(6, 3 * BS));
    const err = await overlay.write(2 * BS, seededBytes(7, 3 * BS)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OverlayFull);
    expect((err as OverlayFull).code).toBe('ENOSPC');
    expect((err as OverlayFull).neededBytes).toBe(2 * BS);
    expect((err as Error).message).toMatch(/needs 8192 bytes .* 12288 of its 16384 bytes are used/);
    await expectMatches(overlay, model); // block 2 was not touched either
    // Rewriting blocks already held costs nothing new, at any fill level.
    await overlay.write(0, seededBytes(8, 3 * BS));
    model.write(0, seededBytes(8, 3 * BS));
    await overlay.write(3 * BS + 10, Buffer.from('fits'));
    model.write(3 * BS + 10, Buffer.from('fits'));
    await expectMatches(overlay, model);
    expect(overlay.usedBytes()).toBe(4 * BS);
    await expect(overlay.write(10 * BS, Buffer.from('x'))).rejects.toBeInstanceOf(OverlayFull);
    await expect(overlay.writeZeroes(10 * BS + 1, 5)).rejects.toBeInstanceOf(OverlayFull);
    // Whole-block zeroing of base blocks and trimming need no space (and free none).
    await overlay.writeZeroes(20 * BS, 8 * BS);
    model.writeZeroes(20 * BS, 8 * BS);
    await overlay.trim(0, BS);
    model.trim(0, BS);
    await expectMatches(overlay, model);
    await expect(overlay.write(10 * BS, Buffer.from('x'))).rejects.toBeInstanceOf(OverlayFull);
    await expectMatches(overlay, model);
  });

  it('a writeZeroes needs room for its new edge blocks, even over data it zeroes', async () => {
    const { overlay, model } = await setup(64 * BS, { limitBytes: 4 * BS });
    await overlay.write(0, seededBytes(9, 4 * BS));
    model.write(0, seededBytes(9, 4 * BS));
    // Blocks 1..3 are zeroed in place (still counted); the new edge block 4 does not fit.
    await expect(overlay.writeZeroes(BS, 3 * BS + 10)).rejects.toBeInstanceOf(OverlayFull);
    expect(model.writeZeroes(BS, 3 * BS + 10)).toBe(false);
    await expectMatches(overlay, model);
    await overlay.writeZeroes(BS, 3 * BS);
    expect(model.writeZeroes(BS, 3 * BS)).toBe(true);
    await expectMatches(overlay, model);
    expect(overlay.usedBytes()).toBe(4 * BS);
  });

  it('setLimit raises, lowers and removes the limit', async () => {
    const { overlay, model } = await setup(64 * BS, { limitBytes: 2 * BS });
    await overlay.write(0, seededBytes(10, 2 * BS));
    model.write(0, seededBytes(10, 2 * BS));
    await expect(overlay.write(5 * BS, Buffer.from('y'))).rejects.toBeInstanceOf(OverlayFull);
    overlay.setLimit((model.limit = 3 * BS));
    expect(overlay.limitBytes).toBe(3 * BS);
    await overlay.write(5 * BS, Buffer.from('y'));
    model.write(5 * BS, Buffer.from('y'));
    overlay.setLimit((model.limit = BS)); // below what is used: nothing freed, new blocks refused, rewrites fine
    await overlay.write(0, Buffer.from('rewrite'));
    model.write(0, Buffer.from('rewrite'));
    await expect(overlay.write(9 * BS, Buffer.from('z'))).rejects.toBeInstanceOf(OverlayFull);
    overlay.setLimit((model.limit = null));
    await overlay.write(9 * BS, seededBytes(11, 40 * BS));
    model.write(9 * BS, seededBytes(11, 40 * BS));
    await expectMatches(overlay, model);
    expect(() => overlay.setLimit(-1)).toThrow(RangeError);
    expect(() => overlay.setLimit(1.5)).toThrow(RangeError);
  });
});

describe('files, reopening and identity', () => {
  it('keeps content, usage and zero blocks across close and reopen', async () => {
    const { overlay, model, opts, dir } = await setup();
    await overlay.write(BS + 5, seededBytes(12, 7 * BS));
    model.write(BS + 5, seededBytes(12, 7 * BS));
    await overlay.writeZeroes(30 * BS, 5 * BS + 1);
    model.writeZeroes(30 * BS, 5 * BS + 1);
    await overlay.trim(2 * BS, BS);
    model.trim(2 * BS, BS);
    const before = overlay.stats();
    await overlay.close();
    await expect(overlay.read(0, 1)).rejects.toThrow(/closed/);
    await expect(overlay.write(0, Buffer.from('a'))).rejects.toThrow(/closed/);
    await expect(overlay.flush()).rejects.toThrow(/closed/);
    await expect(overlay.close()).rejects.toThrow(/closed/);

    const again = await Overlay.open(opts);
    onTestFinished(() => again.close().catch(() => undefined));
    await expectMatches(again, model);
    expect(again.stats()).toEqual({ ...before, dirtyMapPages: 0 });

    const meta = JSON.parse(await readFile(join(dir, 'meta.json'), 'utf8')) as Record<string, unknown>;
    expect(meta).toMatchObject({ format: 'bootfarm-write-cache/1', sizeBytes: opts.base.sizeBytes, blockSize: BS, identity });
    expect(typeof meta.createdAt).toBe('string');
    expect((await stat(dir)).mode & 0o777).toBe(0o700);
    expect((await stat(join(dir, 'data'))).size).toBe(65 * BS);
    expect((await stat(join(dir, 'map'))).size).toBe(Math.ceil(65 / 4));
  });

  it('refuses another identity or geometry with OverlayMismatch, and a broken folder with OverlayCorrupt', async () => {
    const { overlay, opts, dir, base } = await setup();
    await overlay.write(0, Buffer.from('keep me'));
    await overlay.close();
    const differs = async (o: OverlayOptions, pattern: RegExp) => {
      const err = await Overlay.open(o).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(OverlayMismatch);
      expect((err as Error).message).toMatch(pattern);
    };
    await differs({ ...opts, identity: { ...identity, version: 4 } }, /identity\.version is 3, expected 4/);
    await differs({ ...opts, identity: { ...identity, version: '3' } }, /identity\.version is 3, expected "3"/);
    await differs({ ...opts, identity: { vdiskId: identity.vdiskId, version: 3 } }, /identity\.mac is "52:54:00:12:34:56", expected absent/);
    await differs({ ...opts, blockSize: 8192 }, /blockSize is 4096, expected 8192/);
    await differs({ ...opts, base: memoryBase(Buffer.alloc(opts.base.sizeBytes + 512)) }, /sizeBytes is \d+, expected \d+/);
    // The folder is untouched by a refused open: the right caller still gets its data.
    const again = await Overlay.open(opts);
    expect((await again.read(0, 7)).toString()).toBe('keep me');
    await again.close();

    await writeFile(join(dir, 'map'), Buffer.alloc(3));
    const corrupt = await Overlay.open(opts).catch((e: unknown) => e);
    expect(corrupt).toBeInstanceOf(OverlayCorrupt);
    expect(corrupt).toBeInstanceOf(OverlayMismatch);
    expect((corrupt as Error).message).toMatch(/map is 3 bytes, expected 17/);
    await writeFile(join(dir, 'map'), Buffer.alloc(17, 0xff));
    await expect(Overlay.open(opts)).rejects.toThrow(/undefined state 3/);
    const pastEnd = Buffer.alloc(17);
    pastEnd[16] = 0b0100; // block 65 of a 65-block disk
    await writeFile(join(dir, 'map'), pastEnd);
    await expect(Overlay.open(opts)).rejects.toThrow(/entry past the last block \(65\)/);
    await writeFile(join(dir, 'meta.json'), '{"format":"something-else"}');
    await expect(Overlay.open(opts)).rejects.toBeInstanceOf(OverlayCorrupt);

    await Overlay.destroy(dir);
    await Overlay.destroy(dir); // safe when missing
    const fresh = await Overlay.open(opts);
    expect(fresh.usedBytes()).toBe(0);
    expect((await fresh.read(0, 7)).equals(base.bytes.subarray(0, 7))).toBe(true);
    await fresh.close();
  });

  it('makes a folder whose creation was cut short (no meta.json) again from scratch', async () => {
    const { opts, dir, overlay, base } = await setup();
    await overlay.write(0, Buffer.from('old'));
    await overlay.close();
    // What a crash between creating the files and renaming meta.json into place leaves.
    await rm(join(dir, 'meta.json'));
    await writeFile(join(dir, 'map'), Buffer.alloc(17, 0x55));
    await writeFile(join(dir, '.tmp-meta.json.abc123'), 'half');
    const again = await Overlay.open(opts);
    expect(again.usedBytes()).toBe(0);
    expect((await again.read(0, again.sizeBytes)).equals(base.bytes)).toBe(true);
    expect((await readdir(dir)).sort()).toEqual(['data', 'map', 'meta.json']);
    await again.close();
    expect((await readFile(join(dir, 'map'))).equals(Buffer.alloc(17))).toBe(true);
  });

  it('opens one overlay per folder per process; destroy waits for close', async () => {
    const { opts, overlay } = await setup();
    await expect(Overlay.open(opts)).rejects.toThrow(/already open/);
    await expect(Overlay.destroy(opts.dir)).rejects.toThrow(/close it/);
    await overlay.close();
    await Overlay.destroy(opts.dir);
  });

  it('checks its options', async () => {
    const dir = await tempDir();
    const base = memoryBase(Buffer.alloc(64 * KiB));
    const bad = async (o: Partial<OverlayOptions>, err: new (...a: never[]) => Error, pattern: RegExp) => {
      await expect(Overlay.open({ dir: join(dir, 'x'), base, limitBytes: null, identity, ...o })).rejects.toThrow(err);
      await expect(Overlay.open({ dir: join(dir, 'x'), base, limitBytes: null, identity, ...o })).rejects.toThrow(pattern);
    };
    await bad({ blockSize: 1000 }, RangeError, /power of two from 512 to 65536/);
    await bad({ blockSize: 256 }, RangeError, /power of two/);
    await bad({ blockSize: 131072 }, RangeError, /power of two/);
    await bad({ limitBytes: -5 }, RangeError, /limitBytes -5/);
    await bad({ base: memoryBase(Buffer.alloc(0)) }, RangeError, /base disk size 0/);
    await bad({ identity: { version: Number.NaN } }, TypeError, /identity\.version must be a string or a finite number/);
  });
});

describe('ranges', () => {
  it('refuses offsets and lengths outside the disk with a RangeError, writing nothing', async () => {
    const { overlay, model } = await setup();
    const size = overlay.sizeBytes;
    const cases: [number, number, RegExp][] = [
      [-1, 1, /offset -1 is not a byte offset/],
      [1.5, 1, /offset 1.5/],
      [Number.NaN, 1, /offset NaN/],
      [0, -1, /length -1 is not a byte count/],
      [0, 2.5, /length 2.5/],
      [size, 1, new RegExp(`1 bytes at ${size} end past the end of the ${size}-byte disk`)],
      [size - 10, 11, /end past the end/],
      [Number.MAX_SAFE_INTEGER, 1, /end past the end/],
    ];
    for (const [offset, length, pattern] of cases) {
      await expect(overlay.read(offset, length)).rejects.toThrow(RangeError);
      await expect(overlay.read(offset, length)).rejects.toThrow(pattern);
      await expect(overlay.writeZeroes(offset, length)).rejects.toThrow(pattern);
      await expect(overlay.trim(offset, length)).rejects.toThrow(pattern);
      if (length >= 0 && Number.isInteger(length)) await expect(overlay.write(offset, Buffer.alloc(length, 1))).rejects.toThrow(pattern);
    }
    await expect(overlay.write(0, 'text' as unknown as Buffer)).rejects.toThrow(TypeError);
    await expectMatches(overlay, model);
  });
});

describe('a sparse 1 TiB overlay', () => {
  it('opens and reopens without holding map pages for blocks never written', async () => {
    const dir = join(await tempDir(), 'big');
    const TiB = 1024 * 1024 * MiB;
    const opts: OverlayOptions = { dir, base: patternBase(TiB), limitBytes: null, identity };
    const overlay = await Overlay.open(opts);
    expect(overlay.stats().mapPages).toBe(0);
    expect((await stat(join(dir, 'map'))).size).toBe(64 * MiB);
    const spots = [0, 300 * 1024 * MiB + 5, TiB - BS];
    for (const at of spots) await overlay.write(at, Buffer.from('written'.slice(0, Math.min(7, TiB - at))));
    // Three far-apart blocks: three 4 KiB pages, whatever the disk size.
    expect(overlay.stats()).toMatchObject({ mapPages: 3, dirtyMapPages: 3, usedBytes: 3 * BS });
    const tail = await overlay.read(TiB - 10, 10);
    expect([...tail]).toEqual(Array.from({ length: 10 }, (_, i) => patternByte(TiB - 10 + i)));
    await overlay.close();

    const again = await Overlay.open(opts);
    expect(again.stats()).toMatchObject({ mapPages: 3, dirtyMapPages: 0, usedBytes: 3 * BS });
    for (const at of spots) expect((await again.read(at, 7)).toString()).toBe('written');
    const around = await again.read(300 * 1024 * MiB, 16);
    expect(around.subarray(5, 12).toString()).toBe('written');
    expect(around[0]).toBe(patternByte(300 * 1024 * MiB));
    // Trimming the whole disk changes nothing (space is never given back).
    await again.trim(0, TiB);
    await again.flush();
    expect(again.stats()).toMatchObject({ mapPages: 3, usedBytes: 3 * BS });
    await again.close();
    // Sparse on disk too: a few blocks allocated, not 1 TiB or 64 MiB.
    expect((await stat(join(dir, 'data'))).blocks * 512).toBeLessThan(MiB);
    expect((await stat(join(dir, 'map'))).blocks * 512).toBeLessThan(MiB);
  });
});

describe('coalesced I/O', () => {
  it('writes a large aligned request in one pwritev and reads each run with one call', async () => {
    const { overlay, model, base } = await setup(1024 * BS);
    // The first write into a map page also allocates that page in the map file: not what is counted here.
    await overlay.write(1023 * BS, Buffer.from('p'));
    model.write(1023 * BS, Buffer.from('p'));
    const proto = await fileHandleProto();
    const writev = vi.spyOn(proto, 'writev');
    const read = vi.spyOn(proto, 'read');

    await overlay.write(16 * BS, seededBytes(13, MiB));
    model.write(16 * BS, seededBytes(13, MiB));
    expect(writev).toHaveBeenCalledTimes(1);
    // Unaligned 1 MiB: still one pwritev (edge blocks read-modify-written around the caller's buffer).
    writev.mockClear();
    await overlay.write(400 * BS + 7, seededBytes(14, MiB));
    model.write(400 * BS + 7, seededBytes(14, MiB));
    expect(writev).toHaveBeenCalledTimes(1);
    await overlay.writeZeroes(300 * BS, 20 * BS);
    model.writeZeroes(300 * BS, 20 * BS);

    // A read across base | data (256 blocks) | base | zero | base | data ...
    read.mockClear();
    base.calls.length = 0;
    const got = await overlay.read(8 * BS, 600 * BS);
    expect(got.equals(model.read(8 * BS, 600 * BS))).toBe(true);
    // data runs: 16..271, 400..608 (clipped at 608)
    expect(read).toHaveBeenCalledTimes(2);
    // base runs: 8..15, 272..299, 320..399 (300..319 are zero: no read)
    expect(base.calls).toEqual([
      { offset: 8 * BS, length: 8 * BS },
      { offset: 272 * BS, length: 28 * BS },
      { offset: 320 * BS, length: 80 * BS },
    ]);
  });
});

describe('concurrency', () => {
  it('lands every one of many concurrent unaligned writes to the same blocks, in call order', async () => {
    const { overlay, model } = await setup(16 * BS);
    const writes = Array.from({ length: 200 }, (_, i) => {
      const offset = BS - 50 + ((i * 37) % 200); // around the boundary of blocks 0 and 1
      return { offset, data: seededBytes(1000 + i, 1 + ((i * 13) % 90)) };
    });
    const reads: Promise<Buffer>[] = [];
    await Promise.all(
      writes.map((w, i) => {
        if (i % 10 === 0) reads.push(overlay.read(0, 3 * BS)); // reads alongside must not disturb anything
        return overlay.write(w.offset, w.data);
      }),
    );
    for (const w of writes) model.write(w.offset, w.data);
    await expectMatches(overlay, model);
    for (const r of await Promise.all(reads)) expect(r.length).toBe(3 * BS);
  });

  it('orders writes, zeroing, trims and flushes as called', async () => {
    const { overlay, model, opts } = await setup(16 * BS);
    const ops: Promise<void>[] = [];
    for (let i = 0; i < 60; i++) {
      const offset = (i * 977) % (12 * BS);
      const length = 1 + ((i * 3571) % (3 * BS));
      if (i % 4 === 0) {
        ops.push(overlay.writeZeroes(offset, length));
        model.writeZeroes(offset, length);
      } else if (i % 7 === 0) {
        ops.push(overlay.trim(offset, length, true));
        model.trim(offset, length);
      } else {
        ops.push(overlay.write(offset, seededBytes(i, length), i % 5 === 0));
        model.write(offset, seededBytes(i, length));
      }
      if (i % 9 === 0) ops.push(overlay.flush());
    }
    ops.push(overlay.close());
    await Promise.all(ops);
    const again = await Overlay.open(opts);
    await expectMatches(again, model);
    await again.close();
  });
});

describe('durability bookkeeping', () => {
  it('writes map pages at flush and FUA only', async () => {
    const { overlay } = await setup(64 * BS);
    await overlay.write(0, Buffer.from('a'));
    expect(overlay.stats().dirtyMapPages).toBe(1);
    await overlay.flush();
    expect(overlay.stats().dirtyMapPages).toBe(0);
    await overlay.writeZeroes(4 * BS, BS);
    expect(overlay.stats().dirtyMapPages).toBe(1);
    await overlay.write(BS, Buffer.from('b'), true);
    expect(overlay.stats().dirtyMapPages).toBe(0);
    await overlay.writeZeroes(2 * BS, BS, true);
    expect(overlay.stats().dirtyMapPages).toBe(0);
  });

  it('allocates a map page in the file when a write first needs it, so the flush that writes it needs no new space', async () => {
    const { overlay, dir } = await setup(64 * BS);
    expect((await stat(join(dir, 'map'))).blocks).toBe(0);
    await overlay.write(0, Buffer.from('a'));
    expect((await stat(join(dir, 'map'))).blocks).toBeGreaterThan(0);
    // Allocated as zeroes: the entry itself reaches the file only at flush.
    expect((await readFile(join(dir, 'map'))).every((b) => b === 0)).toBe(true);
    await overlay.flush();
    expect((await readFile(join(dir, 'map')))[0]).toBe(1);
  });

  it('flush syncs the data file before writing the map', async () => {
    const { overlay } = await setup(64 * BS);
    await overlay.write(BS, Buffer.from('map page allocated'), true);
    const proto = await fileHandleProto();
    const order: string[] = [];
    const datasync = proto.datasync;
    const write = proto.writev;
    vi.spyOn(proto, 'datasync').mockImplementation(function (this: FileHandle) {
      order.push(`datasync ${this.fd}`);
      return datasync.call(this);
    });
    vi.spyOn(proto, 'writev').mockImplementation(function (this: FileHandle, ...args: Parameters<FileHandle['writev']>) {
      order.push(`writev ${this.fd}`);
      return write.apply(this, args);
    });
    await overlay.write(0, Buffer.from('a'));
    await overlay.flush();
    expect(order).toHaveLength(4);
    const [w1, s1, w2, s2] = order;
    const dataFd = w1!.split(' ')[1];
    expect(s1).toBe(`datasync ${dataFd}`);
    expect(w2).toMatch(/^writev /);
    expect(w2).not.toBe(`writev ${dataFd}`);
    expect(s2).toBe(`datasync ${w2!.split(' ')[1]}`);
    // Nothing changed since: a flush does no I/O.
    order.length = 0;
    await overlay.flush();
    expect(order).toEqual([]);
  });
});

describe('errors from the file system', () => {
  it('passes a failed data write through with its errno and leaves the map as it was', async () => {
    const { overlay, model, opts } = await setup(64 * BS);
    await overlay.write(0, seededBytes(20, 2 * BS));
    model.write(0, seededBytes(20, 2 * BS));
    const proto = await fileHandleProto();
    vi.spyOn(proto, 'writev').mockRejectedValueOnce(errnoError('ENOSPC'));
    const err = await overlay.write(10 * BS, seededBytes(21, 3 * BS)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    expect(err).not.toBeInstanceOf(OverlayFull);
    expect((err as NodeJS.ErrnoException).code).toBe('ENOSPC');
    await expectMatches(overlay, model);
    // Still usable, and the failed write left no trace after a flush and reopen.
    await overlay.write(20 * BS, Buffer.from('after'));
    model.write(20 * BS, Buffer.from('after'));
    await overlay.close();
    const again = await Overlay.open(opts);
    await expectMatches(again, model);
    await again.close();
  });

  it('on a real file system that fills up: ENOSPC with its code, nothing half-mapped, flushes and rewrites still work', async (ctx) => {
    const mnt = await tempDir();
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', mnt], { stdio: 'ignore' });
    } catch {
      ctx.skip('needs root to mount a small tmpfs');
    }
    const open: Overlay[] = [];
    try {
      const base = memoryBase(seededBytes(30, 4 * MiB));
      const opts: OverlayOptions = { dir: join(mnt, 'o'), base, limitBytes: null, identity };
      const model = new OverlayModel(base.bytes, BS);
      const overlay = await Overlay.open(opts);
      open.push(overlay);
      let err: unknown;
      for (let i = 0; i < 64 && !err; i++) {
        const data = seededBytes(31 + i, 16 * KiB + 100); // unaligned: read-modify-write at the edges
        try {
          await overlay.write(i * 64 * KiB + 10, data);
          model.write(i * 64 * KiB + 10, data);
        } catch (e) {
          err = e;
        }
      }
      expect(err).not.toBeInstanceOf(OverlayFull);
      expect((err as NodeJS.ErrnoException).code).toBe('ENOSPC');
      await expectMatches(overlay, model);
      // The map pages were allocated by the writes: the flush needs no new space.
      await overlay.flush();
      await overlay.write(10, Buffer.from('rewrite in place'));
      model.write(10, Buffer.from('rewrite in place'));
      await overlay.close();
      const again = await Overlay.open(opts);
      open.push(again);
      await expectMatches(again, model);
    } finally {
      for (const o of open) await o.close().catch(() => undefined);
      execFileSync('umount', [mnt]);
    }
  });

  it('passes a failed read through', async () => {
    const { overlay } = await setup(64 * BS);
    await overlay.write(0, Buffer.from('x'));
    const proto = await fileHandleProto();
    vi.spyOn(proto, 'read').mockRejectedValueOnce(errnoError('EIO'));
    await expect(overlay.read(0, BS)).rejects.toMatchObject({ code: 'EIO' });
    expect((await overlay.read(0, 1)).toString()).toBe('x');
  });

  it('after a failed fdatasync refuses to promise durability again: mutations and flushes reject with that error', async () => {
    const { overlay, model, opts } = await setup(64 * BS);
    await overlay.write(0, Buffer.from('before'));
    model.write(0, Buffer.from('before'));
    await overlay.flush();
    await overlay.write(BS, Buffer.from('lost?'));
    model.write(BS, Buffer.from('lost?'));
    const proto = await fileHandleProto();
    const eio = errnoError('EIO');
    vi.spyOn(proto, 'datasync').mockRejectedValueOnce(eio);
    await expect(overlay.flush()).rejects.toBe(eio);
    await expect(overlay.flush()).rejects.toBe(eio);
    await expect(overlay.write(2 * BS, Buffer.from('no'))).rejects.toBe(eio);
    await expect(overlay.trim(0, BS)).rejects.toBe(eio);
    // Reads go on from what is there.
    expect((await overlay.read(BS, 5)).toString()).toBe('lost?');
    await expect(overlay.close()).rejects.toBe(eio);
    // Closed anyway; a new open starts from the last durable map.
    const again = await Overlay.open(opts);
    expect((await again.read(0, 6)).toString()).toBe('before');
    await again.close();
  });

  it('rejects a base disk that returns the wrong number of bytes', async () => {
    const dir = join(await tempDir(), 'o');
    const base = { sizeBytes: 8 * BS, read: async (_o: number, n: number) => Buffer.alloc(n - 1) };
    const overlay = await Overlay.open({ dir, base, limitBytes: null, identity });
    await expect(overlay.read(0, 100)).rejects.toThrow(/base disk returned 99 bytes for 100 at 0/);
    await overlay.close();
  });
});
