import { ImageError } from './errors.js';
import type { Layer } from './layer.js';
import type { ReadAt } from './read-at.js';

/** A raw image: the file is the disk, byte for byte, in 512-byte sectors. */
export function openRaw(reader: ReadAt, file: string): Layer {
  if (reader.size % 512 !== 0) {
    throw new ImageError('malformed', file, `raw image size ${reader.size} is not a multiple of the 512-byte sector size`);
  }
  const sizeBytes = reader.size;
  return {
    file,
    format: 'raw',
    reader,
    sizeBytes,
    logicalSectorSize: 512,
    hasParent: false,
    async map(offset, length) {
      return [{ kind: 'data', offset, length, fileOffset: offset }];
    },
  };
}
