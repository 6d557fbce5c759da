import { ImageError } from './errors.js';
import type { Extent, ImageFormat, Layer } from './layer.js';
import type { VhdLayer } from './vhd.js';
import type { VhdxLayer } from './vhdx.js';

export interface DiskImage {
  format: ImageFormat;
  /** Virtual disk size (of the newest file in the chain). */
  sizeBytes: number;
  logicalSectorSize: 512 | 4096;
  /** Reads virtual disk bytes [offset, offset+length), resolving the whole chain; unallocated ranges read as zeros. */
  read(offset: number, length: number): Promise<Buffer>;
  /**
   * True when [offset, offset+length) is known to be all zeros without reading
   * data (unallocated / ZERO state in every layer), so a chunker can skip it.
   * Conservative: false as soon as any byte comes from payload data.
   */
  knownZero(offset: number, length: number): Promise<boolean>;
  close(): Promise<void>;
}

/** One read() may ask for at most this much: a guard against an accidental multi-GiB allocation. */
export const MAX_READ_LENGTH = 2 ** 30;

/**
 * Checks that `layers` (base first) form one differencing chain, each file's
 * recorded parent identity naming the file before it, and fails with a
 * message that says which order would be right when it can tell.
 */
export function checkChain(layers: Layer[]): void {
  const [base, ...children] = layers;
  if (!base) throw new ImageError('chain', '', 'no image file given');
  const order = suggestOrder(layers);
  const hint = order ? ` The order that fits, base first, is: ${order.join(', ')}.` : '';
  if (base.hasParent) {
    throw new ImageError('chain', base.file, `is a differencing disk, but no parent was given before it: list the chain base first.${hint}`);
  }
  children.forEach((child, i) => {
    const prev = layers[i]!;
    if (!child.hasParent) {
      throw new ImageError('chain', child.file, `is not a differencing disk, so it cannot follow ${prev.file} in a chain.${hint}`);
    }
    if (child.logicalSectorSize !== prev.logicalSectorSize) {
      throw new ImageError('chain', child.file, `has ${child.logicalSectorSize}-byte sectors but its parent ${prev.file} has ${prev.logicalSectorSize}-byte sectors`);
    }
    if (!isParentOf(prev, child)) {
      throw new ImageError('chain', child.file, `chain out of order: ${describeParent(child)}, which does not match the file before it, ${prev.file} (${describeSelf(prev)}).${hint}`);
    }
  });
}

function isParentOf(parent: Layer, child: Layer): boolean {
  if (parent.format === 'vhd' && child.format === 'vhd') {
    return (child as VhdLayer).parentUniqueId === (parent as VhdLayer).uniqueId;
  }
  if (parent.format === 'vhdx' && child.format === 'vhdx') {
    // [MS-VHDX] 2.6.2.6.3: the parent's DataWriteGuid must match parent_linkage or parent_linkage2.
    return (child as VhdxLayer).parentLinkage.includes((parent as VhdxLayer).dataWriteGuid);
  }
  return false;
}

function describeParent(child: Layer): string {
  if (child.format === 'vhd') {
    const c = child as VhdLayer;
    return `its dynamic header names parent unique id ${c.parentUniqueId}${c.parentName ? ` ('${c.parentName}')` : ''}`;
  }
  const c = child as VhdxLayer;
  const path = c.parentLocator?.['relative_path'] ?? c.parentLocator?.['absolute_win32_path'];
  return `its parent_linkage is {${c.parentLinkage.join('} / {')}}${path ? ` ('${path}')` : ''}`;
}

function describeSelf(layer: Layer): string {
  return layer.format === 'vhd' ? `unique id ${(layer as VhdLayer).uniqueId}` : `DataWriteGuid {${(layer as VhdxLayer).dataWriteGuid}}`;
}

/** The files in base-first order, when their identities link them into exactly one chain. */
function suggestOrder(layers: Layer[]): string[] | undefined {
  const bases = layers.filter((l) => !l.hasParent);
  if (bases.length !== 1) return undefined;
  const order = [bases[0]!];
  const rest = layers.filter((l) => l.hasParent);
  while (rest.length) {
    const i = rest.findIndex((l) => isParentOf(order[order.length - 1]!, l));
    if (i < 0) return undefined;
    order.push(...rest.splice(i, 1));
  }
  return order.map((l) => l.file);
}

/** A DiskImage over a checked, base-first chain of layers. */
export function chainImage(layers: Layer[]): DiskImage {
  const top = layers[layers.length - 1];
  if (!top) throw new ImageError('chain', '', 'no image file given');

  const checkRange = (offset: number, length: number) => {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > top.sizeBytes) {
      throw new ImageError('range', top.file, `range of ${length} bytes at offset ${offset} lies outside the ${top.sizeBytes}-byte virtual disk`);
    }
  };

  /** Fills out[at..] with layer `level`'s view of [offset, offset+length); `out` starts zeroed. */
  const fill = async (level: number, offset: number, length: number, out: Buffer, at: number, mapped?: Extent[]): Promise<void> => {
    const layer = layers[level]!;
    const end = Math.min(offset + length, layer.sizeBytes); // a parent smaller than its child reads as zeros past its end
    if (offset >= end) return;
    for (const e of mapped ?? (await layer.map(offset, end - offset))) {
      const dest = at + (e.offset - offset);
      if (e.kind === 'data') {
        const bytes = await layer.reader.read(e.fileOffset, e.length);
        if (bytes.length !== e.length) throw new ImageError('malformed', layer.file, `short read at offset ${e.fileOffset}`);
        bytes.copy(out, dest);
      } else if (e.kind === 'parent' && level > 0) {
        await fill(level - 1, e.offset, e.length, out, dest);
      }
    }
  };

  const zero = async (level: number, offset: number, length: number): Promise<boolean> => {
    const layer = layers[level]!;
    const end = Math.min(offset + length, layer.sizeBytes);
    if (offset >= end) return true;
    for (const e of await layer.map(offset, end - offset)) {
      if (e.kind === 'data') return false;
      if (e.kind === 'parent' && level > 0 && !(await zero(level - 1, e.offset, e.length))) return false;
    }
    return true;
  };

  return {
    format: top.format,
    sizeBytes: top.sizeBytes,
    logicalSectorSize: top.logicalSectorSize,
    async read(offset, length) {
      checkRange(offset, length);
      if (length > MAX_READ_LENGTH) throw new ImageError('range', top.file, `read of ${length} bytes is larger than the ${MAX_READ_LENGTH}-byte limit; read in chunks`);
      const extents = await top.map(offset, length);
      const only = extents[0];
      if (extents.length === 1 && only?.kind === 'data') {
        // The common case (raw, fixed, a fully present block): hand back the file read itself, no copy.
        const bytes = await top.reader.read(only.fileOffset, length);
        if (bytes.length !== length) throw new ImageError('malformed', top.file, `short read at offset ${only.fileOffset}`);
        return bytes;
      }
      const out = Buffer.alloc(length);
      await fill(layers.length - 1, offset, length, out, 0, extents);
      return out;
    },
    async knownZero(offset, length) {
      checkRange(offset, length);
      return zero(layers.length - 1, offset, length);
    },
    async close() {
      await Promise.allSettled(layers.map((l) => l.reader.close?.()));
    },
  };
}
