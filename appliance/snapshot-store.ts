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
    /** The site this appliance belongs to: another site's snapshot is refused, however well signed. */
    private readonly siteId: string,
    private readonly keys: () => readonly SigningKey[],
    private readonly log: Log,
  ) {
    this.path = join(dir, SNAPSHOT_FILE);
  }

  private verify(signed: unknown): Snapshot {
    const snapshot = verifySnapshot(signed, this.keys());
    if (snapshot.siteId !== this.siteId) throw new Error(`it is the snapshot of site ${snapshot.siteId}, and this appliance belongs to site ${this.siteId}`);
    return snapshot;
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
      const snapshot = this.verify(raw.signed);
      return { snapshot, signed: raw.signed as SignedSnapshot, etag: typeof raw.etag === 'string' ? raw.etag : '' };
    } catch (e) {
      const aside = `${this.path}.refused-${Date.now()}`;
      await rename(this.path, aside).catch(() => undefined);
      this.log('error', 'cached snapshot refused: it is not a snapshot signed by this farm; it will not be used', { path: this.path, movedTo: aside, reason: (e as Error).message });
      return null;
    }
  }

  /**
   * Checks a snapshot from the control plane: signed by the farm, of this site,
   * and not older than the one in use (a replayed old snapshot would undo changes).
   * Throws SnapshotRefused with the reason.
   */
  check(signed: unknown, revisionInUse: number | null): Snapshot {
    let snapshot: Snapshot;
    try {
      snapshot = this.verify(signed);
    } catch (e) {
      throw new SnapshotRefused((e as Error).message);
    }
    if (revisionInUse !== null && snapshot.revision < revisionInUse)
      throw new SnapshotRefused(`its farm revision ${snapshot.revision} is older than the one in use (${revisionInUse}); if the farm was restored from a backup, remove ${this.path} on the appliance`);
    return snapshot;
  }

  /** Stores a checked snapshot (temp file, fsync, rename). Throws what the disk throws. */
  async save(snapshot: Snapshot, signed: unknown, etag: string): Promise<CachedSnapshot> {
    await writeFileAtomic(this.path, JSON.stringify({ etag, signed }), 0o600);
    return { snapshot, signed: signed as SignedSnapshot, etag };
  }
}

export class SnapshotRefused extends Error {
  override name = 'SnapshotRefused';
}
