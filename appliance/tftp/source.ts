/**
 * Where a transfer's bytes come from, with bounded memory.
 *
 * - Small files (bootstraps: undionly.kpxe 74 KB, snponly.efi 170 KB,
 *   ipxe.efi 850 KB) are held in an LRU cache shared by all transfers, keyed
 *   by file identity (device, inode, size, mtime, ctime): 500 targets booting
 *   at once read the file once, and a file replaced on disk is read again at
 *   the next request. The cache holds at most `maxBytes`; a file above
 *   `maxFileBytes` is never cached. An entry evicted while transfers still
 *   send it stays alive until they end, so the bound is the cache plus the
 *   cached files that are being sent.
 * - Larger files are read from an open descriptor one chunk at a time
 *   (256 KiB, or a whole window if larger): one chunk per transfer in memory.
 *   A file that shrinks or changes under a transfer ends it with an error
 *   rather than sending a mix of two versions; a file that is unlinked or
 *   renamed over keeps being sent from the descriptor (the old version, whole).
 */
import { constants } from 'node:fs';
import { open, stat, type FileHandle } from 'node:fs/promises';

export interface BlockSource {
  readonly size: number;
  /** `length` bytes at `offset` when they are in memory now, else null (then `load` them). */
  peek(offset: number, length: number): Buffer | null;
  /** Brings [offset, offset + length) into memory; rejects with FileChangedError when the file changed. */
  load(offset: number, length: number): Promise<void>;
  close(): Promise<void>;
}

/** The file is not what it was when the transfer started. */
export class FileChangedError extends Error {
  override readonly name = 'FileChangedError';
}

/** The path is not a regular file (directory, device, FIFO, socket). */
export class NotRegularFileError extends Error {
  override readonly name = 'NotRegularFileError';
}

const EMPTY = Buffer.alloc(0);

class MemorySource implements BlockSource {
  constructor(private readonly data: Buffer) {}
  get size(): number {
    return this.data.length;
  }
  peek(offset: number, length: number): Buffer {
    return this.data.subarray(offset, offset + length);
  }
  async load(): Promise<void> {}
  async close(): Promise<void> {}
}

export const DEFAULT_CHUNK_BYTES = 256 * 1024;

class FileSource implements BlockSource {
  private chunk: Buffer = EMPTY;
  private chunkAt = 0;
  constructor(
    private readonly fh: FileHandle,
    readonly size: number,
    private readonly mtimeMs: number,
    private readonly chunkBytes: number,
  ) {}

  peek(offset: number, length: number): Buffer | null {
    if (length === 0) return EMPTY;
    if (offset >= this.chunkAt && offset + length <= this.chunkAt + this.chunk.length) return this.chunk.subarray(offset - this.chunkAt, offset - this.chunkAt + length);
    return null;
  }

  async load(offset: number, length: number): Promise<void> {
    const want = Math.min(Math.max(this.chunkBytes, length), this.size - offset);
    // A new buffer each time: DATA packets still queued in the socket may point into the old one.
    const buf = Buffer.allocUnsafe(want);
    let got = 0;
    while (got < want) {
      const { bytesRead } = await this.fh.read(buf, got, want - got, offset + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    if (got < want) throw new FileChangedError('the file shrank during the transfer');
    const st = await this.fh.stat();
    if (st.size !== this.size || st.mtimeMs !== this.mtimeMs) throw new FileChangedError('the file changed during the transfer');
    this.chunk = buf;
    this.chunkAt = offset;
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}

export interface FileCacheOptions {
  /** Total bytes of cached files. @default 64 MiB */
  maxBytes?: number;
  /** Files larger than this are streamed from disk, never cached. @default 16 MiB */
  maxFileBytes?: number;
}

export interface FileCacheStats {
  hits: number;
  misses: number;
  bytes: number;
  files: number;
}

interface Entry {
  path: string;
  data: Buffer;
}

/** Opens files for transfers: cached in memory when small, streamed when large. No module state: one per server. */
export class FileCache {
  private readonly entries = new Map<string, Entry>();
  private readonly loading = new Map<string, Promise<Buffer>>();
  private bytes = 0;
  private hits = 0;
  private misses = 0;
  private readonly maxBytes: number;
  private readonly maxFileBytes: number;

  constructor(o: FileCacheOptions = {}) {
    this.maxBytes = o.maxBytes ?? 64 * 2 ** 20;
    this.maxFileBytes = Math.min(o.maxFileBytes ?? 16 * 2 ** 20, this.maxBytes);
  }

  stats(): FileCacheStats {
    return { hits: this.hits, misses: this.misses, bytes: this.bytes, files: this.entries.size };
  }

  /**
   * A source for the regular file at `path` (a realpath: no symlink in it).
   * Rejects with NotRegularFileError, or the fs error (ENOENT, EACCES...).
   */
  async open(path: string, chunkBytes = DEFAULT_CHUNK_BYTES): Promise<BlockSource> {
    const st = await stat(path);
    if (!st.isFile()) throw new NotRegularFileError('not a regular file');
    if (st.size <= this.maxFileBytes) {
      const id = `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
      const hit = this.entries.get(id);
      if (hit) {
        this.hits++;
        this.entries.delete(id);
        this.entries.set(id, hit); // most recently used last
        return new MemorySource(hit.data);
      }
      this.misses++;
      let pending = this.loading.get(id);
      if (!pending) {
        pending = this.read(path, st.size, st.mtimeMs).finally(() => this.loading.delete(id));
        this.loading.set(id, pending);
        pending.then((data) => this.insert(id, path, data)).catch(() => undefined);
      }
      return new MemorySource(await pending);
    }
    const fh = await openRegular(path);
    try {
      const now = await fh.stat();
      if (!now.isFile()) throw new NotRegularFileError('not a regular file');
      return new FileSource(fh, now.size, now.mtimeMs, chunkBytes);
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  private async read(path: string, size: number, mtimeMs: number): Promise<Buffer> {
    const fh = await openRegular(path);
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw new NotRegularFileError('not a regular file');
      if (st.size !== size || st.mtimeMs !== mtimeMs) throw new FileChangedError('the file changed while it was opened');
      const data = Buffer.allocUnsafe(size);
      let got = 0;
      while (got < size) {
        const { bytesRead } = await fh.read(data, got, size - got, got);
        if (bytesRead === 0) throw new FileChangedError('the file shrank while it was read');
        got += bytesRead;
      }
      return data;
    } finally {
      await fh.close();
    }
  }

  private insert(id: string, path: string, data: Buffer): void {
    // An older version of the same file is dead weight.
    for (const [k, e] of this.entries) {
      if (e.path === path) {
        this.entries.delete(k);
        this.bytes -= e.data.length;
      }
    }
    this.entries.set(id, { path, data });
    this.bytes += data.length;
    for (const [k, e] of this.entries) {
      if (this.bytes <= this.maxBytes) break;
      this.entries.delete(k);
      this.bytes -= e.data.length;
    }
  }
}

/** O_NOFOLLOW: the path was resolved already, a symlink now means it changed. O_NONBLOCK: a FIFO put there cannot hang a reader thread. */
function openRegular(path: string): Promise<FileHandle> {
  return open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
}
