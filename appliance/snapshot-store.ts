/**
 * The last good snapshot on disk: written atomically (temp, fsync, rename),
 * re-verified against the farm keys every time it is read. A tampered or
 * truncated file is refused, moved aside for inspection, and never used.
 */
import { readFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { verifySnapshot, type SignedSnapshot, type SigningKey, type Snapshot } from '../model/index.js';
import { writeFileAtomic } from './fs-atomic.js';

export const SNAPSHOT_FILE = 'snapshot.json';

export interface CachedSnapshot {
  snapshot: Snapshot;
  signed: SignedSnapshot;
  etag: string;
}

export type Log = (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;

export class SnapshotStore {
  readonly path: string;

  constructor(
    dir: string,
    private readonly keys: () => readonly SigningKey[],
    private readonly log: Log,
  ) {
    this.path = join(dir, SNAPSHOT_FILE);
  }

  /** The cached snapshot, verified; null when there is none or it is refused. */
  async load(): Promise<CachedSnapshot | null> {
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
    try {
      const raw = JSON.parse(text) as { etag?: unknown; signed?: unknown };
      const snapshot = verifySnapshot(raw.signed, this.keys());
      return { snapshot, signed: raw.signed as SignedSnapshot, etag: typeof raw.etag === 'string' ? raw.etag : '' };
    } catch (e) {
      const aside = `${this.path}.refused-${Date.now()}`;
      await rename(this.path, aside).catch(() => undefined);
      this.log('error', 'cached snapshot refused: it is not a snapshot signed by this farm; it will not be used', { path: this.path, movedTo: aside, reason: (e as Error).message });
      return null;
    }
  }

  /** Verifies, then stores. Returns the parsed snapshot. */
  async save(signed: unknown, etag: string): Promise<CachedSnapshot> {
    const snapshot = verifySnapshot(signed, this.keys());
    await writeFileAtomic(this.path, JSON.stringify({ etag, signed }), 0o600);
    return { snapshot, signed: signed as SignedSnapshot, etag };
  }
}
