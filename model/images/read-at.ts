import { open } from 'node:fs/promises';
import { ImageError } from './errors.js';

/** Positional, bounded reads over one file (or any byte source of known size). */
export interface ReadAt {
  size: number;
  read(offset: number, length: number): Promise<Buffer>;
  close?(): Promise<void>;
}

/** A ReadAt over a regular file: node:fs/promises FileHandle, positional reads, nothing buffered. */
export async function fileReader(path: string): Promise<ReadAt> {
  const fh = await open(path, 'r');
  let size: number;
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new ImageError('unsupported', path, 'not a regular file');
    size = st.size;
  } catch (e) {
    await fh.close();
    throw e;
  }
  let closed = false;
  return {
    size,
    async read(offset, length) {
      checkRange(path, size, offset, length);
      const buf = Buffer.allocUnsafe(length);
      let done = 0;
      while (done < length) {
        const { bytesRead } = await fh.read(buf, done, length - done, offset + done);
        if (bytesRead === 0) {
          throw new ImageError('malformed', path, `unexpected end of file at offset ${offset + done} (the file shrank while being read?)`);
        }
        done += bytesRead;
      }
      return buf;
    },
    async close() {
      if (closed) return;
      closed = true;
      await fh.close();
    },
  };
}

/** A ReadAt over bytes already in memory (tests, small images). Reads return copies. */
export function bufferReader(bytes: Buffer, name = '<buffer>'): ReadAt {
  return {
    size: bytes.length,
    async read(offset, length) {
      checkRange(name, bytes.length, offset, length);
      return Buffer.from(bytes.subarray(offset, offset + length));
    },
  };
}

function checkRange(name: string, size: number, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > size) {
    throw new ImageError('malformed', name, `read of ${length} bytes at offset ${offset} lies outside the file (size ${size})`);
  }
}

/**
 * Reads `length` bytes of a structure at `offset`, failing with a message that
 * names the structure when it does not lie inside the file.
 */
export async function readStruct(r: ReadAt, file: string, offset: number, length: number, what: string): Promise<Buffer> {
  if (!Number.isSafeInteger(offset) || offset < 0 || offset + length > r.size) {
    throw new ImageError('malformed', file, `${what} at offset ${offset} (${length} bytes) lies past the end of the file (size ${r.size})`);
  }
  const buf = await r.read(offset, length);
  if (buf.length !== length) {
    throw new ImageError('malformed', file, `short read of ${what}: wanted ${length} bytes at offset ${offset}, got ${buf.length}`);
  }
  return buf;
}
