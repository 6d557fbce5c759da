import type { ReadAt } from './read-at.js';

export type ImageFormat = 'raw' | 'vhd' | 'vhdx';

/**
 * Where one stretch of a layer's virtual disk lives: in this file (`data`, at
 * `fileOffset`), nowhere because it reads as zeros (`zero`), or in the parent
 * layer (`parent`). Offsets are virtual-disk byte offsets.
 */
export type Extent =
  | { kind: 'data'; offset: number; length: number; fileOffset: number }
  | { kind: 'zero'; offset: number; length: number }
  | { kind: 'parent'; offset: number; length: number };

/** One file of an image: a format reader reduced to "where does each byte come from". */
export interface Layer {
  /** The file, as the caller named it; every error message starts with it. */
  readonly file: string;
  readonly format: ImageFormat;
  readonly reader: ReadAt;
  readonly sizeBytes: number;
  readonly logicalSectorSize: 512 | 4096;
  /** True for a differencing file: `map` may answer `parent`. */
  readonly hasParent: boolean;
  /**
   * The extents covering [offset, offset+length) exactly, in order, adjacent
   * ones of one kind merged. The range lies inside `sizeBytes`. Reads only
   * allocation metadata (BAT pages, sector bitmaps), never payload.
   */
  map(offset: number, length: number): Promise<Extent[]>;
}

/** Appends an extent, merging it into the previous one when they continue each other. */
export function pushExtent(out: Extent[], e: Extent): void {
  if (e.length === 0) return;
  const last = out[out.length - 1];
  if (last && last.kind === e.kind && last.offset + last.length === e.offset) {
    if (last.kind !== 'data' || (e.kind === 'data' && last.fileOffset + last.length === e.fileOffset)) {
      last.length += e.length;
      return;
    }
  }
  out.push({ ...e });
}

/**
 * A small least-recently-used cache of fixed-size pages of a table (a BAT),
 * so that a table of any size is read piecewise and memory stays bounded.
 */
export class PageCache {
  private readonly pages = new Map<number, Buffer>();
  constructor(
    private readonly load: (page: number) => Promise<Buffer>,
    private readonly maxPages = 64,
  ) {}

  async get(page: number): Promise<Buffer> {
    const hit = this.pages.get(page);
    if (hit) {
      this.pages.delete(page);
      this.pages.set(page, hit);
      return hit;
    }
    const buf = await this.load(page);
    this.pages.set(page, buf);
    if (this.pages.size > this.maxPages) {
      const oldest = this.pages.keys().next().value as number;
      this.pages.delete(oldest);
    }
    return buf;
  }
}

export const isPowerOfTwo = (n: number): boolean => Number.isSafeInteger(n) && n > 0 && 2 ** Math.round(Math.log2(n)) === n;
