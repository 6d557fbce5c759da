/**
 * The chunk files: `<root>/<first 2 hex>/<sha256>`, the bytes of one chunk
 * each. A file appears only after its bytes matched its name, and only whole
 * (temp -> fsync -> rename -> fsync dir), so after any crash a chunk file that
 * exists is a verified chunk and a temp file is garbage.
 */
import { close as fsClose, open as fsOpen, read as fsRead } from 'node:fs';
import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { FarmError } from '../../model/errors.js';
import { sha256Hex } from '../../model/manifest.js';
import { fsyncDir, sweepTemp, writeFileAtomic } from '../fs-atomic.js';
import { isChunkHash, type CacheLog } from './chunk-source.js';

export interface ChunkStore {
  has(hash: string): boolean;
  /** Hashes of the chunk files present. */
  hashes(): IterableIterator<string>;
  /** Keeps `data` as chunk `hash` if it hashes to it; false (nothing written) if not. */
  put(hash: string, data: Uint8Array): Promise<boolean>;
  /** Copies `length` bytes from `offset` in chunk `hash` into `target` at `targetOffset`. */
  readInto(hash: string, offset: number, target: Uint8Array, targetOffset: number, length: number): Promise<void>;
  /** The whole chunk, or null when it is not held. */
  readAll(hash: string): Promise<Buffer | null>;
  remove(hash: string): Promise<void>;
  /** Re-hashes every chunk file and deletes those that no longer match; returns their hashes. */
  verifyAll(): Promise<{ checked: number; bad: string[] }>;
}

export interface OpenedChunkStore {
  store: ChunkStore;
  /** Temp files a crash left behind, removed at open. */
  tempSwept: number;
}

const FANOUT = /^[0-9a-f]{2}$/;

export async function openChunkStore(root: string, log: CacheLog): Promise<OpenedChunkStore> {
  await mkdir(root, { recursive: true });
  const present = new Set<string>();
  const dirs = new Set<string>();
  let tempSwept = await sweepTemp(root);
  for (const sub of await readdir(root)) {
    if (!FANOUT.test(sub)) continue;
    const dir = join(root, sub);
    dirs.add(sub);
    tempSwept += await sweepTemp(dir);
    for (const name of await readdir(dir)) {
      if (isChunkHash(name) && name.startsWith(sub)) present.add(name);
      else log('warn', 'stray file in chunk directory ignored', { path: join(dir, name) });
    }
  }

  const pathOf = (hash: string) => join(root, hash.slice(0, 2), hash);
  const checked = (hash: string) => {
    // Hashes reach file paths: only the 64-hex shape may (no traversal, no aliasing).
    if (!isChunkHash(hash)) throw new FarmError('bad_request', `not a chunk hash: ${JSON.stringify(hash)}`);
    return hash;
  };

  const handles = new HandleCache(MAX_OPEN_CHUNKS);
  const store: ChunkStore = {
    has: (hash) => present.has(hash),
    hashes: () => present.values(),
    async put(hash, data) {
      checked(hash);
      if (sha256Hex(data) !== hash) return false;
      const sub = hash.slice(0, 2);
      if (!dirs.has(sub)) {
        await mkdir(join(root, sub), { recursive: true });
        // The new directory's own entry must survive a crash too, or the chunk inside it would not.
        await fsyncDir(root);
        dirs.add(sub);
      }
      await writeFileAtomic(pathOf(hash), data);
      present.add(hash);
      return true;
    },
    async readInto(hash, offset, target, targetOffset, length) {
      if (!present.has(hash)) throw new FarmError('internal', `chunk ${hash} is not held`);
      const h = handles.acquire(hash, pathOf(hash));
      try {
        const fd = await h.fd;
        const bytesRead = await new Promise<number>((ok, bad) => fsRead(fd, target, targetOffset, length, offset, (e, n) => (e ? bad(e) : ok(n))));
        if (bytesRead !== length) throw new FarmError('internal', `chunk ${hash}: file is shorter than expected (${offset + bytesRead} bytes)`);
      } finally {
        handles.release(h);
      }
    },
    async readAll(hash) {
      if (!isChunkHash(hash) || !present.has(hash)) return null;
      try {
        return await readFile(pathOf(hash));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
        throw e;
      }
    },
    async remove(hash) {
      present.delete(checked(hash));
      handles.forget(hash);
      // No fsync: if a crash brings the file back, it is still a verified chunk (collected as an orphan at the next open).
      await rm(pathOf(hash), { force: true });
    },
    async verifyAll() {
      const bad: string[] = [];
      let n = 0;
      for (const hash of [...present]) {
        n++;
        const data = await readFile(pathOf(hash)).catch(() => null);
        if (data && sha256Hex(data) === hash) continue;
        bad.push(hash);
        await store.remove(hash);
      }
      return { checked: n, bad };
    },
  };
  return { store, tempSwept };
}

/** Chunk files kept open for reads: a boot storm reads the same few chunks over and over. */
const MAX_OPEN_CHUNKS = 256;

interface Handle {
  hash: string;
  fd: Promise<number>;
  users: number;
  /** Out of the cache (evicted or its chunk removed): closed when its last user is done. */
  retired: boolean;
}

/**
 * Open file descriptors by chunk, least recently used first out. A descriptor
 * is closed only when no read uses it: closing under a read could let the
 * number be reused by another file and that read return its bytes.
 */
class HandleCache {
  private readonly open = new Map<string, Handle>();
  constructor(private readonly max: number) {}

  acquire(hash: string, path: string): Handle {
    let h = this.open.get(hash);
    if (h) this.open.delete(hash);
    else {
      h = { hash, fd: new Promise<number>((ok, bad) => fsOpen(path, 'r', (e, fd) => (e ? bad(e) : ok(fd)))), users: 0, retired: false };
      // A failed open is not kept.
      h.fd.catch(() => this.forget(hash));
    }
    this.open.set(hash, h);
    h.users++;
    while (this.open.size > this.max) this.retire(this.open.keys().next().value as string);
    return h;
  }

  release(h: Handle): void {
    h.users--;
    if (h.retired && h.users === 0) this.close(h);
  }

  forget(hash: string): void {
    this.retire(hash);
  }

  private retire(hash: string): void {
    const h = this.open.get(hash);
    if (!h) return;
    this.open.delete(hash);
    h.retired = true;
    if (h.users === 0) this.close(h);
  }

  private close(h: Handle): void {
    h.fd.then((fd) => fsClose(fd, () => undefined)).catch(() => undefined);
  }
}
