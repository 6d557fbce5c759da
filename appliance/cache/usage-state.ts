/**
 * What the cache must remember about each held version beyond its manifest:
 * the store it counts against (for quotas) and when it was last used (for LRU
 * eviction). One small JSON file, replaced atomically; use times are written
 * at most every `flushAfterMs`, store assignments at once.
 */
import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { IdSchema } from '../../model/common.js';
import { writeFileAtomic } from '../fs-atomic.js';
import { errorMessage, type CacheLog } from './chunk-source.js';

export const USAGE_FORMAT = 'bootfarm.cache-usage/1';

const VersionUsageSchema = z.object({ storeId: IdSchema, lastUsedAt: z.number().int().min(0) }).strict();
export type VersionUsage = z.infer<typeof VersionUsageSchema>;

const UsageFileSchema = z
  .object({
    format: z.literal(USAGE_FORMAT),
    /** Keyed `<vdiskId>.<number>`. */
    versions: z.record(z.string(), VersionUsageSchema),
  })
  .strict();

export interface UsageState {
  get(key: string): VersionUsage | undefined;
  /** Assigns a version to a store and writes the file before returning (a held version must never lose its store). */
  assign(key: string, storeId: string, at: number): Promise<void>;
  /** Records a use; written within `flushAfterMs`. */
  touch(key: string, at: number): void;
  /** Forgets a version; written within `flushAfterMs` (a stale entry without a manifest is harmless). */
  forget(key: string): void;
  keys(): string[];
  /** Writes pending changes and stops the timer. */
  close(): Promise<void>;
}

export async function openUsageState(path: string, opts: { flushAfterMs: number; log: CacheLog }): Promise<UsageState> {
  const versions = new Map<string, VersionUsage>();
  try {
    const parsed = UsageFileSchema.safeParse(JSON.parse(await readFile(path, 'utf8')));
    if (parsed.success) for (const [k, v] of Object.entries(parsed.data.versions)) versions.set(k, v);
    else opts.log('warn', 'cache usage file unreadable: last-use times start over', { path, error: parsed.error.issues[0]?.message });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') opts.log('warn', 'cache usage file unreadable: last-use times start over', { path, error: errorMessage(e) });
  }

  let timer: NodeJS.Timeout | undefined;
  // Writes run one after another and each serialises the map when it runs, so the last write holds the latest state.
  let writing: Promise<void> = Promise.resolve();
  const write = () => {
    const next = writing.then(() =>
      writeFileAtomic(path, JSON.stringify({ format: USAGE_FORMAT, versions: Object.fromEntries([...versions].sort(([a], [b]) => (a < b ? -1 : 1))) })),
    );
    writing = next.catch((e) => opts.log('error', 'cache usage file not written', { path, error: errorMessage(e) }));
    return next;
  };
  const later = () => {
    timer ??= setTimeout(() => {
      timer = undefined;
      void write().catch(() => undefined);
    }, opts.flushAfterMs).unref();
  };

  return {
    get: (key) => versions.get(key),
    async assign(key, storeId, at) {
      const cur = versions.get(key);
      if (cur?.storeId === storeId) return;
      versions.set(key, { storeId, lastUsedAt: cur?.lastUsedAt ?? at });
      await write();
    },
    touch(key, at) {
      const cur = versions.get(key);
      if (!cur || cur.lastUsedAt >= at) return;
      cur.lastUsedAt = at;
      later();
    },
    forget(key) {
      if (versions.delete(key)) later();
    },
    keys: () => [...versions.keys()],
    async close() {
      clearTimeout(timer);
      timer = undefined;
      await write();
    },
  };
}
