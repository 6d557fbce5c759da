/**
 * Native readers for the disk image formats a PVS store holds (raw, VHD, VHDX,
 * and their differencing chains), so `bootfarm vdisk push` can read a vDisk's
 * virtual disk without qemu or Windows. Pure over `ReadAt`; `fileReader` is
 * the file adapter.
 */
import { chainImage, checkChain, type DiskImage } from './chain.js';
import { ImageError } from './errors.js';
import type { ImageFormat, Layer } from './layer.js';
import { openRaw } from './raw.js';
import { fileReader, type ReadAt } from './read-at.js';
import { openVhd } from './vhd.js';
import { openVhdx } from './vhdx.js';

export { bufferReader, fileReader, type ReadAt } from './read-at.js';
export { ImageError, isImageError, type ImageErrorCode } from './errors.js';
export { MAX_READ_LENGTH, type DiskImage } from './chain.js';
export type { Extent, ImageFormat, Layer } from './layer.js';
export { openVhd, type VhdLayer } from './vhd.js';
export { openVhdx, type VhdxLayer } from './vhdx.js';
export { openRaw } from './raw.js';

/**
 * The format of one file, from its signatures: 'vhdxfile' at offset 0 (VHDX),
 * 'conectix' in the last 512 bytes or, for a truncated dynamic VHD, the first
 * (VHD); anything else is raw.
 */
export async function detectFormat(r: ReadAt): Promise<ImageFormat> {
  if (r.size >= 8 && (await r.read(0, 8)).toString('latin1') === 'vhdxfile') return 'vhdx';
  if (r.size >= 512) {
    if ((await r.read(r.size - 512, 8)).toString('latin1') === 'conectix') return 'vhd';
    if ((await r.read(0, 8)).toString('latin1') === 'conectix') return 'vhd';
  }
  return 'raw';
}

export interface ImageSource {
  /** Name used in error messages (normally the path). */
  file: string;
  reader: ReadAt;
}

/** Opens one layer of a known format. */
export async function openLayer(format: ImageFormat, reader: ReadAt, file: string): Promise<Layer> {
  switch (format) {
    case 'raw':
      return openRaw(reader, file);
    case 'vhd':
      return openVhd(reader, file);
    case 'vhdx':
      return openVhdx(reader, file);
  }
}

/**
 * Opens a base-first chain over readers the caller owns (closing the image
 * closes them). All files must be of one format; raw only as a single file.
 */
export async function openImageFrom(sources: ImageSource[]): Promise<DiskImage> {
  const [first] = sources;
  if (!first) throw new ImageError('chain', '', 'no image file given');
  const formats = await Promise.all(sources.map((s) => detectFormat(s.reader)));
  const format = formats[0]!;
  sources.forEach((s, i) => {
    if (formats[i] !== format) {
      throw new ImageError('chain', s.file, `is ${formats[i]} but ${first.file} is ${format}: a chain must be all one format`);
    }
  });
  if (format === 'raw' && sources.length > 1) {
    throw new ImageError('chain', sources[1]!.file, 'a raw image has no differencing disks: give a raw image alone');
  }
  const layers: Layer[] = [];
  for (const s of sources) layers.push(await openLayer(format, s.reader, s.file));
  checkChain(layers);
  return chainImage(layers);
}

/** Opens one file or a base-first chain of files (all of one format; raw only as a single file). */
export async function openImage(paths: string[]): Promise<DiskImage> {
  const sources: ImageSource[] = [];
  try {
    for (const file of paths) sources.push({ file, reader: await fileReader(file) });
    return await openImageFrom(sources);
  } catch (e) {
    await Promise.allSettled(sources.map((s) => s.reader.close?.()));
    throw e;
  }
}
