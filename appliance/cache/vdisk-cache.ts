/**
 * The appliance's verified vDisk cache: holds the versions its site needs as
 * chunk files named by their hash (shared between versions), fetches missing
 * chunks from peers or S3, and serves reads of verified versions only.
 *
 * On disk, under `dir`:
 *   chunks/<2 hex>/<sha256>          a chunk's bytes (exists => verified)
 *   manifests/<vdiskId>/<n>.json     the signed manifest envelope of a held version
 *   usage.json                       store and last use of each held version
 *
 * Invariants that make kill -9 safe at any point: a chunk file appears only
 * after its hash matched, whole (temp, fsync, rename, fsync dir); a version's
 * manifest is written before any of its chunks is fetched and deleted before
 * any of its chunks is, so every chunk file a crash can leave is either
 * referenced by a manifest or an orphan collected at the next open; the
 * manifest's signature is checked at every open.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import type { InventoryEntry } from '../../model/appliance.js';
import { IdSchema } from '../../model/common.js';
import { FarmError } from '../../model/errors.js';
import {
  ChunkHashSchema,
  SignedManifestSchema,
  chunkRange,
  contentHash,
  verifyManifest,
  type Manifest,
  type SignedManifest,
  type SigningKey,
} from '../../model/manifest.js';
import { sweepTemp } from '../fs-atomic.js';
import { errorMessage, silentLog, type CacheLog, type ChunkSource, type ChunkWant } from './chunk-source.js';
import { openChunkStore } from './chunk-store.js';
import { openManifestStore, type VersionRef } from './manifest-store.js';
import { planStore, type PlannedVersion, type RefusedForQuota } from './quota-plan.js';
import { openUsageState } from './usage-state.js';

/** One version the site's snapshot says this appliance must hold. */
export interface NeededVersionInput {
  vdiskId: string;
  number: number;
  /** The store whose quota the version counts against. */
  storeId: string;
  /** The version's content hash from the snapshot: a manifest with any other content is refused. */
  contentHash: string;
  /** The signed manifest envelope, when the caller already has it (else `getManifest` or the disk). */
  signedManifest?: unknown;
}

const NeededVersionSchema = z.object({
  vdiskId: IdSchema,
  number: z.number().int().min(0),
  storeId: IdSchema,
  contentHash: ChunkHashSchema,
  signedManifest: z.unknown().optional(),
});

export interface OpenVdiskCacheOptions {
  dir: string;
  /** The farm's manifest signing keys (called at every verification: keys may rotate). */
  keys: () => readonly SigningKey[];
  /** Sources in order of preference (peers first, S3 last); called once per sync pass. */
  sources: () => readonly ChunkSource[];
  /** Fetches a signed manifest envelope from the control plane, for needed versions not on disk yet. */
  getManifest?: (vdiskId: string, number: number, signal?: AbortSignal) => Promise<unknown>;
  /** Bytes a store may take here; null = unlimited. @default unlimited */
  quotaBytes?: (storeId: string) => number | null;
  /** Chunks fetched at once. @default 4 */
  concurrency?: number;
  /** Last-use times are written at most this often. @default 5000 */
  usageFlushMs?: number;
  log?: CacheLog;
  /** @default Date.now */
  clock?: () => number;
}

/** A verified version opened for reading; it is never evicted while open. */
export interface VdiskReader {
  readonly vdiskId: string;
  readonly number: number;
  readonly contentHash: string;
  readonly sizeBytes: number;
  readonly sectorSize: 512 | 4096;
  /** Exactly `length` bytes at `offset` (within the disk), all verified; into `into` (its first `length` bytes) when given. */
  read(offset: number, length: number, into?: Buffer): Promise<Buffer>;
  close(): void;
}

export interface CacheStatus {
  /** Unique chunk bytes on disk of the versions held. */
  bytesHeld: number;
  /** Unique chunk bytes per store (a chunk shared by two stores counts in both). */
  bytesHeldByStore: Record<string, number>;
  versionsHeld: number;
  chunksHeld: number;
  fetchedBySource: Record<string, { chunks: number; bytes: number }>;
  /** Chunks that did not match their hash: from a source, or found bad on disk by verifyAll. */
  verifyFailures: number;
  syncInProgress: boolean;
  openReaders: number;
  /** True when a needed version cannot fit its store's quota (listed in quotaExceededVersions, not fetched). */
  quotaExceeded: boolean;
  quotaExceededVersions: { vdiskId: string; number: number; storeId: string; needBytes: number; quotaBytes: number }[];
  /** Needed versions whose manifest was refused (bad signature, other content than the snapshot says). */
  refusedVersions: { vdiskId: string; number: number; reason: string }[];
}

export interface VdiskCache {
  /** Replaces the set of needed versions. Manifests given are verified now; refusals are returned (and logged). */
  setNeeded(versions: readonly NeededVersionInput[]): Promise<{ refused: { vdiskId: string; number: number; reason: string }[] }>;
  /**
   * Fetches what the needed versions miss, within quotas. Resolves when done or
   * aborted; rejects only on local failures (disk). A call during a sync joins
   * it and makes it go round once more (it runs with the first caller's signal).
   */
  sync(signal?: AbortSignal): Promise<void>;
  inventory(): InventoryEntry[];
  status(): CacheStatus;
  /** Opens a verified version; throws FarmError not_found for anything else. */
  open(vdiskId: string, number: number): VdiskReader;
  /** A held chunk's bytes (for peers), or null. */
  readChunk(hash: string): Promise<Buffer | null>;
  /** Re-hashes every chunk file, deletes the bad ones (their versions go back to syncing). */
  verifyAll(): Promise<{ checked: number; bad: string[] }>;
  /** Stops a running sync and writes the usage file. */
  close(): Promise<void>;
}

interface Version {
  vdiskId: string;
  number: number;
  manifest: Manifest;
  contentHash: string;
  /** Non-null chunks: hash -> bytes. */
  chunks: Map<string, number>;
}

/** A verified manifest not on disk yet. */
interface PendingVersion extends Version {
  signed: SignedManifest;
}

const versionKey = (vdiskId: string, number: number) => `${vdiskId}.${number}`;
const refOf = (v: { vdiskId: string; number: number }): VersionRef => ({ vdiskId: v.vdiskId, number: v.number });

function describe(manifest: Manifest): Version {
  const chunks = new Map<string, number>();
  manifest.chunks.forEach((h, i) => {
    if (!h) return;
    const { start, end } = chunkRange(i, manifest.sizeBytes, manifest.chunkSize);
    chunks.set(h, end - start);
  });
  return { vdiskId: manifest.vdiskId, number: manifest.version, manifest, contentHash: contentHash(manifest), chunks };
}

/** Bytes of the version's non-zero chunks held, and in all (as listed: a chunk listed twice counts twice). */
function progress(v: Version, has: (hash: string) => boolean): { held: number; total: number } {
  let held = 0;
  let total = 0;
  for (const [i, h] of v.manifest.chunks.entries()) {
    if (!h) continue;
    const { start, end } = chunkRange(i, v.manifest.sizeBytes, v.manifest.chunkSize);
    total += end - start;
    if (has(h)) held += end - start;
  }
  return { held, total };
}

export async function openVdiskCache(opts: OpenVdiskCacheOptions): Promise<VdiskCache> {
  const log = opts.log ?? silentLog;
  const clock = opts.clock ?? Date.now;
  const concurrency = opts.concurrency ?? 4;
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 256)
    throw new FarmError('validation_failed', `concurrency must be an integer from 1 to 256, not ${concurrency}`, 'concurrency');

  await mkdir(opts.dir, { recursive: true });
  // usage.json's temp files live here.
  const rootTemps = await sweepTemp(opts.dir);
  const { store: chunks, tempSwept: chunkTemps } = await openChunkStore(join(opts.dir, 'chunks'), log);
  const { store: manifests, tempSwept: manifestTemps } = await openManifestStore(join(opts.dir, 'manifests'), log);
  const usage = await openUsageState(join(opts.dir, 'usage.json'), { flushAfterMs: opts.usageFlushMs ?? 5000, log });
  const has = (hash: string) => chunks.has(hash);

  const held = new Map<string, Version>();
  let keptUnknownKey = 0;
  let refusedAtOpen = 0;
  for (const ref of await manifests.list()) {
    const r = await manifests.load(ref, opts.keys());
    if (r.ok) held.set(versionKey(ref.vdiskId, ref.number), describe(r.manifest));
    else if (r.reason === 'unknown_key') keptUnknownKey++;
    else if (r.reason === 'refused') refusedAtOpen++;
  }
  // Chunks no manifest references: left by a crash during eviction, or by a refused manifest.
  // Not while a manifest waits for its key: its chunks would look like orphans.
  let orphans = 0;
  if (keptUnknownKey === 0) {
    const referenced = new Set([...held.values()].flatMap((v) => [...v.chunks.keys()]));
    for (const hash of [...chunks.hashes()]) {
      if (referenced.has(hash)) continue;
      await chunks.remove(hash);
      orphans++;
    }
  }
  for (const k of usage.keys()) if (!held.has(k)) usage.forget(k);
  log('info', 'vdisk cache opened', {
    dir: opts.dir,
    versions: held.size,
    chunks: [...chunks.hashes()].length,
    tempFilesSwept: rootTemps + chunkTemps + manifestTemps,
    manifestsRefused: refusedAtOpen,
    manifestsWithUnknownKey: keptUnknownKey,
    orphanChunksRemoved: orphans,
  });

  let needed = new Map<string, Omit<NeededVersionInput, 'signedManifest'>>();
  const pending = new Map<string, PendingVersion>();
  let refused = new Map<string, string>();
  let quotaExceeded = new Map<string, RefusedForQuota & { storeId: string }>();
  /** Chunks every source failed to give and at least one gave wrong bytes for: their versions are corrupt. */
  const badChunks = new Set<string>();
  const readers = new Map<string, number>();
  const fetched = new Map<string, { chunks: number; bytes: number }>();
  let verifyFailures = 0;
  let running: Promise<void> | null = null;
  let again = false;
  let lock: Promise<unknown> = Promise.resolve();
  const closing = new AbortController();

  /** Sync passes and verifyAll run one at a time: both add and delete chunk files. */
  const exclusive = <T>(fn: () => Promise<T>): Promise<T> => {
    const run = lock.then(fn);
    lock = run.catch(() => undefined);
    return run;
  };
  const storeOf = (key: string) => needed.get(key)?.storeId ?? usage.get(key)?.storeId;
  const inUse = (key: string) => (readers.get(key) ?? 0) > 0;

  function refuse(key: string, ref: VersionRef, reason: string) {
    refused.set(key, reason);
    log('error', 'manifest refused', { ...ref, reason });
  }

  /** Verifies a manifest envelope for a needed version; the reason when it is refused. */
  function accept(n: Omit<NeededVersionInput, 'signedManifest'>, raw: unknown): PendingVersion | string {
    let manifest: Manifest;
    try {
      manifest = verifyManifest(raw, [...opts.keys()]);
    } catch (e) {
      return errorMessage(e);
    }
    if (manifest.vdiskId !== n.vdiskId || manifest.version !== n.number)
      return `manifest is for ${manifest.vdiskId} version ${manifest.version}, not ${n.vdiskId} version ${n.number}`;
    const v = describe(manifest);
    if (v.contentHash !== n.contentHash) return `manifest content hash ${v.contentHash} is not the snapshot's ${n.contentHash}`;
    return { ...v, signed: SignedManifestSchema.parse(raw) };
  }

  /**
   * Drops versions (never one in use): manifest first, then the chunk files no
   * held or pending version references. Returns the keys dropped.
   */
  async function drop(keys: readonly string[], why: string): Promise<string[]> {
    // Taken out of `held` before any await, so no reader can open them meanwhile.
    const gone = keys.flatMap((k) => {
      const v = held.get(k);
      if (!v || inUse(k)) return [];
      held.delete(k);
      return [[k, v] as const];
    });
    const referenced = new Set([...held.values(), ...pending.values()].flatMap((v) => [...v.chunks.keys()]));
    for (const [k, v] of gone) {
      await manifests.remove(refOf(v));
      usage.forget(k);
      let freed = 0;
      for (const [hash, n] of v.chunks) {
        if (referenced.has(hash) || !chunks.has(hash)) continue;
        await chunks.remove(hash);
        referenced.add(hash);
        freed += n;
      }
      log('info', 'version evicted', { vdiskId: v.vdiskId, number: v.number, reason: why, freedBytes: freed });
    }
    return gone.map(([k]) => k);
  }

  /** The manifest of a needed version: held, given to setNeeded, on disk, or from the control plane. */
  async function resolve(n: Omit<NeededVersionInput, 'signedManifest'>, signal: AbortSignal): Promise<Version | null> {
    const key = versionKey(n.vdiskId, n.number);
    const ref = refOf(n);
    const h = held.get(key);
    if (h?.contentHash === n.contentHash) return h;
    if (h) {
      if (inUse(key)) {
        log('warn', 'held version has other content than the snapshot says; in use, replaced once closed', { ...ref, held: h.contentHash, wanted: n.contentHash });
        return null;
      }
      await drop([key], 'content differs from the snapshot');
    }
    const p = pending.get(key);
    if (p) return p;
    // On disk but not held: signed with a key that was unknown at open.
    const disk = await manifests.load(ref, opts.keys());
    if (disk.ok) {
      const v = describe(disk.manifest);
      if (v.contentHash === n.contentHash) {
        held.set(key, v);
        return v;
      }
      await manifests.remove(ref);
    }
    // A refused manifest is asked for again with the next setNeeded (a new snapshot), not at every pass.
    if (!opts.getManifest || refused.has(key)) return null;
    let raw: unknown;
    try {
      raw = await opts.getManifest(n.vdiskId, n.number, signal);
    } catch (e) {
      if (!signal.aborted) log('warn', 'manifest not available', { ...ref, error: errorMessage(e) });
      return null;
    }
    const r = accept(n, raw);
    if (typeof r === 'string') {
      refuse(key, ref, r);
      return null;
    }
    pending.set(key, r);
    return r;
  }

  async function fetchChunk(want: ChunkWant, sources: readonly ChunkSource[], signal: AbortSignal): Promise<void> {
    const { hash } = want;
    let badBytes = false;
    for (const source of sources) {
      if (signal.aborted) return;
      let data: Uint8Array | null;
      try {
        data = await source.fetch(hash, signal, { vdiskId: want.vdiskId, number: want.number });
      } catch (e) {
        if (signal.aborted) return;
        log('warn', 'chunk source failed', { hash, source: source.name, error: errorMessage(e) });
        continue;
      }
      if (!data) continue;
      if (!(await chunks.put(hash, data))) {
        verifyFailures++;
        badBytes = true;
        log('warn', 'chunk from source does not match its hash: discarded', { hash, source: source.name, bytes: data.byteLength });
        continue;
      }
      const c = fetched.get(source.name) ?? { chunks: 0, bytes: 0 };
      fetched.set(source.name, { chunks: c.chunks + 1, bytes: c.bytes + data.byteLength });
      badChunks.delete(hash);
      log('info', 'chunk fetched', { hash, source: source.name, bytes: data.byteLength });
      return;
    }
    if (signal.aborted) return;
    if (badBytes) badChunks.add(hash);
    else badChunks.delete(hash);
    log(badBytes ? 'error' : 'warn', 'chunk not available from any source', { hash, sources: sources.map((s) => s.name), wrongBytesServed: badBytes });
  }

  async function syncPass(signal: AbortSignal): Promise<void> {
    // The needed set as this pass started: setNeeded may replace it meanwhile (a joined sync() runs another pass).
    const order = [...needed.values()];
    const wanted = new Map(order.map((n) => [versionKey(n.vdiskId, n.number), n]));
    const resolved = new Map<string, Version>();
    for (const n of order) {
      if (signal.aborted) return;
      const v = await resolve(n, signal);
      if (v) resolved.set(versionKey(n.vdiskId, n.number), v);
    }
    if (signal.aborted) return;

    // Plan with no await in between, so the in-use flags are those of one moment.
    const byStore = new Map<string, PlannedVersion[]>();
    const plan = (storeId: string, p: PlannedVersion) => byStore.set(storeId, [...(byStore.get(storeId) ?? []), p]);
    const unknownStore: string[] = [];
    for (const [key, v] of held) {
      const storeId = wanted.get(key)?.storeId ?? usage.get(key)?.storeId;
      if (!storeId) unknownStore.push(key);
      else plan(storeId, { key, needed: resolved.has(key), inUse: inUse(key), lastUsedAt: usage.get(key)?.lastUsedAt ?? 0, chunks: v.chunks });
    }
    for (const [key, v] of resolved) if (!held.has(key)) plan(wanted.get(key)!.storeId, { key, needed: true, inUse: false, lastUsedAt: clock(), chunks: v.chunks });
    const toFetch = new Set<string>();
    const evict: string[] = [];
    const exceeded = new Map<string, RefusedForQuota & { storeId: string }>();
    for (const [storeId, versions] of byStore) {
      const p = planStore(versions, opts.quotaBytes?.(storeId) ?? null, has);
      for (const k of p.fetch) toFetch.add(k);
      evict.push(...p.evict);
      for (const r of p.refused) exceeded.set(r.key, { ...r, storeId });
    }
    for (const [key, r] of exceeded)
      if (!quotaExceeded.has(key)) log('error', 'needed version does not fit its store quota: not fetched', { version: key, storeId: r.storeId, needBytes: r.needBytes, quotaBytes: r.quotaBytes });
    quotaExceeded = exceeded;
    // Manifests of the versions to fetch go to disk before anything is evicted, and before any chunk:
    // every chunk file has a manifest that references it, or is an orphan. Saved first, a new version
    // keeps the chunks it shares with an evicted one (a kill -9 in between must not make them orphans).
    const fetchOrder = order.map((n) => versionKey(n.vdiskId, n.number)).filter((k) => toFetch.has(k));
    for (const key of resolved.keys()) if (held.has(key) || toFetch.has(key)) await usage.assign(key, wanted.get(key)!.storeId, clock());
    for (const key of fetchOrder) {
      const p = pending.get(key);
      if (held.has(key) || !p) continue;
      await manifests.save(refOf(p), p.signed);
      held.set(key, { vdiskId: p.vdiskId, number: p.number, manifest: p.manifest, contentHash: p.contentHash, chunks: p.chunks });
      pending.delete(key);
    }
    // drop() skips a version opened since the plan was made.
    // A version whose store the usage file lost (it was damaged) cannot be counted against a quota: let it go.
    await drop(unknownStore, 'store unknown (usage file lost)');
    await drop(evict, 'quota: least recently used, not needed');

    const queue: ChunkWant[] = [];
    const queued = new Set<string>();
    for (const key of fetchOrder) {
      const v = held.get(key);
      for (const hash of v?.manifest.chunks ?? [])
        if (v && hash && !queued.has(hash) && !chunks.has(hash)) {
          queued.add(hash);
          queue.push({ hash, vdiskId: v.vdiskId, number: v.number });
        }
    }
    if (!queue.length) return;

    const sources = opts.sources();
    for (const s of sources) s.prefetch?.(queue);
    log('info', 'sync started', { versions: fetchOrder.length, chunksMissing: queue.length, sources: sources.map((s) => s.name) });
    // A local failure (disk full) stops the whole pass; the other workers finish their chunk first.
    const stop = new AbortController();
    const passSignal = AbortSignal.any([signal, stop.signal]);
    let next = 0;
    const worker = async () => {
      while (next < queue.length && !passSignal.aborted) await fetchChunk(queue[next++]!, sources, passSignal);
    };
    const results = await Promise.allSettled(
      Array.from({ length: Math.min(concurrency, queue.length) }, () =>
        worker().catch((e) => {
          stop.abort();
          throw e;
        }),
      ),
    );
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) {
      log('error', 'sync stopped by a local failure', { error: errorMessage(failed.reason) });
      throw failed.reason;
    }
    // setNeeded may have dropped a planned version during the pass.
    const done = fetchOrder.filter((k) => {
      const v = held.get(k);
      if (!v) return false;
      const p = progress(v, has);
      return p.held === p.total;
    });
    log('info', signal.aborted ? 'sync aborted' : 'sync finished', { versionsVerified: done.length, versions: fetchOrder.length, chunksLeft: queue.filter((w) => !chunks.has(w.hash)).length });
  }

  function stateOf(v: Version): Pick<InventoryEntry, 'state' | 'percent'> {
    const p = progress(v, has);
    if (p.held === p.total) return { state: 'verified' };
    if (v.manifest.chunks.some((h) => h !== null && badChunks.has(h))) return { state: 'corrupt' };
    return { state: 'syncing', percent: Math.floor((p.held / p.total) * 1000) / 10 };
  }

  const cache: VdiskCache = {
    async setNeeded(list) {
      const next = new Map<string, Omit<NeededVersionInput, 'signedManifest'>>();
      refused = new Map();
      const out: { vdiskId: string; number: number; reason: string }[] = [];
      for (const item of list) {
        const parsed = NeededVersionSchema.safeParse(item);
        const ref = { vdiskId: String(item.vdiskId), number: Number(item.number) };
        if (!parsed.success) {
          out.push({ ...ref, reason: `${parsed.error.issues[0]?.path.join('.')}: ${parsed.error.issues[0]?.message}` });
          continue;
        }
        const { signedManifest, ...n } = parsed.data;
        const key = versionKey(n.vdiskId, n.number);
        const dup = next.get(key);
        if (dup && dup.contentHash !== n.contentHash) {
          out.push({ ...ref, reason: 'listed twice with different content hashes' });
          continue;
        }
        next.set(key, n);
        if (signedManifest === undefined || held.get(key)?.contentHash === n.contentHash) continue;
        const r = accept(n, signedManifest);
        if (typeof r === 'string') {
          refuse(key, ref, r);
          out.push({ ...ref, reason: r });
        } else pending.set(key, r);
      }
      for (const k of pending.keys()) if (next.get(k)?.contentHash !== pending.get(k)!.contentHash) pending.delete(k);
      needed = next;
      for (const r of out) if (!refused.has(versionKey(r.vdiskId, r.number))) log('error', 'needed version refused', r);
      return { refused: out };
    },

    sync(signal) {
      if (closing.signal.aborted) return Promise.reject(new FarmError('internal', 'vdisk cache is closed'));
      if (running) {
        again = true;
        return running;
      }
      const passSignal = signal ? AbortSignal.any([signal, closing.signal]) : closing.signal;
      const run = exclusive(async () => {
        do {
          again = false;
          await syncPass(passSignal);
        } while (again && !passSignal.aborted);
      });
      running = run.finally(() => {
        running = null;
      });
      return running;
    },

    inventory() {
      const keys = [...new Set([...needed.keys(), ...held.keys()])].sort();
      return keys.map((key): InventoryEntry => {
        const n = needed.get(key);
        const h = held.get(key);
        const v = h && (!n || h.contentHash === n.contentHash) ? h : pending.get(key);
        if (v) return { vdiskId: v.vdiskId, number: v.number, contentHash: v.contentHash, ...stateOf(v) };
        if (h) return { vdiskId: h.vdiskId, number: h.number, contentHash: h.contentHash, ...stateOf(h) };
        return { vdiskId: n!.vdiskId, number: n!.number, contentHash: n!.contentHash, state: 'syncing', percent: 0 };
      });
    },

    status() {
      const all = new Map<string, number>();
      const byStore = new Map<string, Map<string, number>>();
      for (const [key, v] of held) {
        const storeId = storeOf(key) ?? 'unknown';
        const mine = byStore.get(storeId) ?? new Map<string, number>();
        byStore.set(storeId, mine);
        for (const [hash, n] of v.chunks) {
          if (!chunks.has(hash)) continue;
          all.set(hash, n);
          mine.set(hash, n);
        }
      }
      const sum = (m: Map<string, number>) => [...m.values()].reduce((a, b) => a + b, 0);
      const split = (key: string) => {
        const v = held.get(key) ?? pending.get(key);
        const n = needed.get(key);
        return { vdiskId: v?.vdiskId ?? n!.vdiskId, number: v?.number ?? n!.number };
      };
      return {
        bytesHeld: sum(all),
        bytesHeldByStore: Object.fromEntries([...byStore].map(([s, m]) => [s, sum(m)])),
        versionsHeld: held.size,
        chunksHeld: all.size,
        fetchedBySource: Object.fromEntries([...fetched].map(([k, c]) => [k, { ...c }])),
        verifyFailures,
        syncInProgress: running !== null,
        openReaders: [...readers.values()].reduce((a, b) => a + b, 0),
        quotaExceeded: quotaExceeded.size > 0,
        quotaExceededVersions: [...quotaExceeded].map(([k, r]) => ({ ...split(k), storeId: r.storeId, needBytes: r.needBytes, quotaBytes: r.quotaBytes })),
        refusedVersions: [...refused].map(([k, reason]) => ({ ...split(k), reason })),
      };
    },

    open(vdiskId, number) {
      if (closing.signal.aborted) throw new FarmError('internal', 'vdisk cache is closed');
      const key = versionKey(vdiskId, number);
      const v = held.get(key);
      if (!v) throw new FarmError('not_found', `vDisk ${vdiskId} version ${number} is not held by this appliance`);
      const s = stateOf(v);
      if (s.state !== 'verified')
        throw new FarmError('not_found', `vDisk ${vdiskId} version ${number} is ${s.state}${s.percent !== undefined ? ` (${s.percent} %)` : ''}: only verified versions are served`);
      readers.set(key, (readers.get(key) ?? 0) + 1);
      usage.touch(key, clock());
      const m = v.manifest;
      let closed = false;
      return {
        vdiskId,
        number,
        contentHash: v.contentHash,
        sizeBytes: m.sizeBytes,
        sectorSize: m.sectorSize,
        async read(offset, length, into) {
          if (closed) throw new FarmError('bad_request', 'reader is closed');
          if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > m.sizeBytes)
            throw new FarmError('bad_request', `read of ${length} bytes at ${offset} is outside the disk (${m.sizeBytes} bytes)`);
          // Every byte is written below (read from a chunk, or zeroed for a null chunk): no zero-fill up front.
          if (into && into.length < length) throw new FarmError('bad_request', `a ${into.length}-byte buffer cannot take ${length} bytes`);
          const out = into ? into.subarray(0, length) : Buffer.allocUnsafe(length);
          const end = offset + length;
          for (let pos = offset; pos < end; ) {
            const i = Math.floor(pos / m.chunkSize);
            const range = chunkRange(i, m.sizeBytes, m.chunkSize);
            const n = Math.min(range.end, end) - pos;
            const hash = m.chunks[i];
            if (hash) await chunks.readInto(hash, pos - range.start, out, pos - offset, n);
            else out.fill(0, pos - offset, pos - offset + n);
            pos += n;
          }
          usage.touch(key, clock());
          return out;
        },
        close() {
          if (closed) return;
          closed = true;
          const left = (readers.get(key) ?? 1) - 1;
          if (left > 0) readers.set(key, left);
          else readers.delete(key);
          usage.touch(key, clock());
        },
      };
    },

    readChunk: (hash) => chunks.readAll(hash),

    verifyAll() {
      return exclusive(async () => {
        const r = await chunks.verifyAll();
        verifyFailures += r.bad.length;
        for (const hash of r.bad) log('error', 'chunk file on disk does not match its hash: deleted', { hash });
        log('info', 'chunk files verified', { checked: r.checked, bad: r.bad.length });
        return r;
      });
    },

    async close() {
      if (closing.signal.aborted) return;
      closing.abort();
      await running?.catch(() => undefined);
      await lock;
      await usage.close();
    },
  };
  return cache;
}
