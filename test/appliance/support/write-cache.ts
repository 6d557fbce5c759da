/**
 * Fixtures for the write-cache tests: deterministic bytes (the crash test's
 * child and parent must make the same ones from a seed), an in-memory base
 * disk that counts its reads, and a plain-Buffer model of the overlay.
 */
import type { BaseDisk } from '../../../appliance/write-cache/overlay.js';

/** `length` pseudo-random bytes from `seed` (mulberry32): the same on every run and in every process. */
export function seededBytes(seed: number, length: number): Buffer {
  const out = Buffer.allocUnsafe(length);
  let a = seed >>> 0;
  let i = 0;
  for (; i + 4 <= length; i += 4) {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out.writeUInt32LE((t ^ (t >>> 14)) >>> 0, i);
  }
  for (; i < length; i++) out[i] = (seed + i * 131) & 0xff;
  return out;
}

export interface CountingBase extends BaseDisk {
  readonly bytes: Buffer;
  /** Every read asked of the base, in order. */
  readonly calls: { offset: number; length: number }[];
}

/** A base disk over `bytes`; reads are copies (the overlay must not be able to change the base). */
export function memoryBase(bytes: Buffer): CountingBase {
  const calls: { offset: number; length: number }[] = [];
  return {
    bytes,
    calls,
    sizeBytes: bytes.length,
    async read(offset, length) {
      calls.push({ offset, length });
      if (offset < 0 || length < 0 || offset + length > bytes.length) throw new RangeError(`base read ${length} at ${offset} is outside ${bytes.length}`);
      return Buffer.from(bytes.subarray(offset, offset + length));
    },
  };
}

/** A base disk of any size whose bytes are a function of the offset (for huge sparse disks). */
export function patternBase(sizeBytes: number): BaseDisk {
  return {
    sizeBytes,
    async read(offset, length) {
      const out = Buffer.allocUnsafe(length);
      for (let i = 0; i < length; i++) out[i] = patternByte(offset + i);
      return out;
    },
  };
}

export function patternByte(offset: number): number {
  return (offset % 251) ^ (Math.floor(offset / 4096) & 0xff);
}


const DATA = 1;
const ZERO = 2;

/**
 * What an overlay should read back, and which blocks it should count as
 * data: the semantics of overlay.ts, written as plainly as possible.
 */
export class OverlayModel {
  readonly bytes: Buffer;
  readonly state: Uint8Array;
  readonly blocks: number;

  constructor(
    readonly base: Buffer,
    readonly blockSize: number,
    public limit: number | null = null,
  ) {
    this.bytes = Buffer.from(base);
    this.blocks = Math.ceil(base.length / blockSize);
    this.state = new Uint8Array(this.blocks);
  }

  clone(): OverlayModel {
    const m = new OverlayModel(this.base, this.blockSize, this.limit);
    this.bytes.copy(m.bytes);
    m.state.set(this.state);
    return m;
  }

  usedBytes(): number {
    return this.state.reduce((n, s) => n + (s === DATA ? 1 : 0), 0) * this.blockSize;
  }

  /** Returns false (and changes nothing) when the overlay must throw OverlayFull. */
  write(offset: number, data: Buffer): boolean {
    if (!data.length) return true;
    const touched = this.touched(offset, data.length);
    const fresh = touched.filter((b) => this.state[b] !== DATA).length;
    if (!this.fits(fresh, 0)) return false;
    data.copy(this.bytes, offset);
    for (const b of touched) this.state[b] = DATA;
    return true;
  }

  writeZeroes(offset: number, length: number): boolean {
    if (!length) return true;
    const whole = this.whole(offset, length);
    const edges = this.touched(offset, length).filter((b) => !whole.includes(b) && this.state[b] !== ZERO);
    const fresh = edges.filter((b) => this.state[b] !== DATA).length;
    if (!this.fits(fresh, 0)) return false;
    this.bytes.fill(0, offset, offset + length);
    for (const b of edges) this.state[b] = DATA;
    // Data blocks keep their space (written with zeroes); others cost nothing.
    for (const b of whole) if (this.state[b] !== DATA) this.state[b] = ZERO;
    return true;
  }

  /** Changes nothing: space in the data file is never given back. */
  trim(_offset: number, _length: number): void {}

  read(offset: number, length: number): Buffer {
    return Buffer.from(this.bytes.subarray(offset, offset + length));
  }

  private fits(fresh: number, freed: number): boolean {
    if (fresh === 0 || this.limit === null) return true;
    return (this.usedBytes() / this.blockSize + fresh - freed) * this.blockSize <= this.limit;
  }

  private touched(offset: number, length: number): number[] {
    const out: number[] = [];
    for (let b = Math.floor(offset / this.blockSize); b * this.blockSize < offset + length; b++) out.push(b);
    return out;
  }

  /** Blocks wholly inside the range; the short last block is whole when the range reaches the end of the disk. */
  private whole(offset: number, length: number): number[] {
    return this.touched(offset, length).filter((b) => b * this.blockSize >= offset && Math.min((b + 1) * this.blockSize, this.base.length) <= offset + length);
  }
}

/**
 * The crash test's disk and requests, shared by its child (which runs them
 * until killed) and its parent (which replays them to know what to expect).
 * 512-byte blocks over two full map pages and a short third one, with a short
 * last block; requests crowd around the map page boundaries and the end.
 */
export const CRASH_BLOCK_SIZE = 512;
export const CRASH_DISK_SIZE = 2 * 16384 * 512 + 300 * 512 + 100;
export const CRASH_BASE_SEED = 0xc0ffee;
export const CRASH_IDENTITY = { test: 'write-cache-crash' };

export type CrashOp = { kind: 'write' | 'writeZeroes' | 'trim'; offset: number; length: number; seed: number };

/** Request `index` of round `round`: a pure function, so both processes agree. */
export function crashOp(round: number, index: number): CrashOp {
  const r = seededBytes((round * 1_000_003 + index * 7919 + 1) >>> 0, 16);
  const u = (i: number) => r.readUInt32LE(i);
  const hot = [0, 16384 * 512, 2 * 16384 * 512, CRASH_DISK_SIZE];
  const center = u(0) % 5 === 4 ? u(4) % CRASH_DISK_SIZE : hot[u(4) % hot.length]!;
  const aligned = u(8) % 2 === 0;
  let length = aligned ? (1 + (u(12) % 64)) * CRASH_BLOCK_SIZE : 1 + (u(12) % 40_000);
  let offset = Math.max(0, center - 96 * 1024 + (u(0) % (192 * 1024)));
  if (aligned) offset -= offset % CRASH_BLOCK_SIZE;
  offset = Math.min(offset, CRASH_DISK_SIZE - 1);
  length = Math.min(length, CRASH_DISK_SIZE - offset);
  const pick = u(8) % 10;
  const kind = pick < 7 ? 'write' : pick < 9 ? 'writeZeroes' : 'trim';
  return { kind, offset, length, seed: u(12) };
}

/** How many requests the child issues between flushes in a batch (1..6). */
export function crashBatch(round: number, batch: number): number {
  return 1 + (seededBytes((round * 31 + batch * 17 + 5) >>> 0, 4).readUInt32LE(0) % 6);
}

export function applyCrashOp(model: OverlayModel, op: CrashOp): void {
  if (op.kind === 'write') model.write(op.offset, seededBytes(op.seed, op.length));
  else if (op.kind === 'writeZeroes') model.writeZeroes(op.offset, op.length);
  else model.trim(op.offset, op.length);
}
