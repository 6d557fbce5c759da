/**
 * The model the differencing tests check against: what a layer's virtual disk
 * must read as after a list of writes, and which sectors the layer stores.
 */
import type { LayerContent } from './writers.js';

export type Write =
  | { offset: number; length: number; pattern: number }
  | { offset: number; length: number; zero: true }
  | { unmapBlock: number };

/** A new layer over `parent` (its content copied), or over nothing (zeros). */
export function newLayer(parent: Buffer | undefined, sizeBytes: number, blockSize: number, logicalSectorSize: 512 | 4096 = 512): LayerContent {
  const content = Buffer.alloc(sizeBytes);
  parent?.copy(content, 0, 0, Math.min(parent.length, sizeBytes));
  return {
    sizeBytes,
    blockSize,
    logicalSectorSize,
    content,
    present: new Uint8Array(sizeBytes / logicalSectorSize),
    zeroBlocks: new Set(),
    unmappedBlocks: new Set(),
  };
}

/**
 * Applies one guest write the way a VHD/VHDX implementation stores it: every
 * sector it touches becomes present in this layer (unaligned edges keep the
 * bytes they had), a zero write over whole blocks becomes a ZERO block when
 * `zeroBlocks` is allowed (VHDX), and a block unmap becomes UNMAPPED.
 */
export function applyWrite(layer: LayerContent, w: Write, opts: { zeroBlocks: boolean }): void {
  const ss = layer.logicalSectorSize;
  const per = layer.blockSize / ss;
  const materialize = (block: number) => {
    // Writing into a ZERO/UNMAPPED block allocates it whole: its other sectors stay zero.
    if (!layer.zeroBlocks.delete(block) && !layer.unmappedBlocks.delete(block)) return;
    const last = Math.min((block + 1) * per, layer.present.length);
    for (let s = block * per; s < last; s++) layer.present[s] = 1;
  };
  if ('unmapBlock' in w) {
    const b = w.unmapBlock;
    layer.content.fill(0, b * layer.blockSize, Math.min((b + 1) * layer.blockSize, layer.sizeBytes));
    layer.zeroBlocks.delete(b);
    layer.unmappedBlocks.add(b);
    layer.present.fill(0, b * per, Math.min((b + 1) * per, layer.present.length));
    return;
  }
  const end = w.offset + w.length;
  if ('zero' in w) layer.content.fill(0, w.offset, end);
  else layer.content.fill(w.pattern, w.offset, end);
  const firstBlock = Math.floor(w.offset / layer.blockSize);
  const lastBlock = Math.floor((end - 1) / layer.blockSize);
  for (let b = firstBlock; b <= lastBlock; b++) {
    const bStart = b * layer.blockSize;
    const bEnd = Math.min(bStart + layer.blockSize, layer.sizeBytes);
    if ('zero' in w && opts.zeroBlocks && w.offset <= bStart && end >= bEnd) {
      layer.unmappedBlocks.delete(b);
      layer.zeroBlocks.add(b);
      layer.present.fill(0, b * per, Math.ceil(bEnd / ss));
      continue;
    }
    materialize(b);
    const s0 = Math.floor(Math.max(w.offset, bStart) / ss);
    const s1 = Math.ceil(Math.min(end, bEnd) / ss);
    layer.present.fill(1, s0, s1);
  }
}
