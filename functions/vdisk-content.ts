/**
 * vDisk content: versions as signed manifests of content-addressed chunks.
 * Creating a version (push, new maintenance version, merge), verifying an
 * upload before its version may exist, and collecting unreferenced chunks.
 */
import {
  ContentSchema,
  FarmError,
  MANIFEST_FORMAT,
  chunkKey,
  sha256Hex,
  contentHash,
  signManifest,
  verifyManifest,
  type Content,
  type Manifest,
  type Principal,
  type Target,
  type Version,
  type VersionState,
  type Vdisk,
} from '../model/index.js';
import type { Signer } from './signing.js';
import type { BlobStore } from './storage/blobs.js';
import { createHash } from 'node:crypto';
import { listAll } from './storage/list-all.js';
import type { FarmRepo } from './storage/repo.js';

export interface ContentDeps {
  repo: FarmRepo;
  blobs: BlobStore;
  signer: Signer;
  clock: () => Date;
}

export const versionId = (vdiskId: string, n: number) => `${vdiskId}.${n}`;
const uploadKey = (vdiskId: string, uploadId: string) => `uploads/${vdiskId}/${uploadId}.json`;

export async function versionsOf(repo: FarmRepo, vdiskId: string): Promise<Version[]> {
  return ((await listAll(repo, 'version', { parent: { kind: 'vdisk', id: vdiskId } })) as unknown as Version[]).sort((x, y) => x.number - y.number);
}

/**
 * Targets assigned a vDisk. Targets are not indexed by vDisk (a target holds up
 * to 16 assignments), so this pages through all targets: fine at farm
 * configuration sizes (thousands), and only admin operations call it.
 */
export async function targetsUsing(repo: FarmRepo, vdiskId: string): Promise<Target[]> {
  return ((await listAll(repo, 'target')) as unknown as Target[]).filter((t) => t.assignments.some((a) => a.vdiskId === vdiskId));
}

async function loadVdisk(repo: FarmRepo, id: string): Promise<Vdisk> {
  const v = await repo.get('vdisk', id);
  if (!v) throw new FarmError('not_found', `vDisk ${id} does not exist`);
  return v as unknown as Vdisk;
}

/** Reads and verifies a version's manifest: signature first, then that it describes this version. */
export async function loadManifest(deps: Pick<ContentDeps, 'blobs' | 'signer'>, v: Version): Promise<Manifest> {
  if (!v.manifest) throw new FarmError('not_found', `version ${v.number} of ${v.vdiskId} has no content`);
  const raw = await deps.blobs.get(v.manifest);
  if (!raw) throw new FarmError('internal', `manifest ${v.manifest} is missing from the bucket`);
  const m = verifyManifest(JSON.parse(raw.toString('utf8')), [deps.signer]);
  if (m.vdiskId !== v.vdiskId || m.version !== v.number) throw new FarmError('forbidden', `manifest ${v.manifest} describes ${m.vdiskId} version ${m.version}, not version ${v.number}`);
  return m;
}

export interface NewVersion {
  content: Content;
  state: Exclude<VersionState, 'merged'>;
  description: string;
  /** null: a new base (merge); undefined: on top of the newest version. */
  parent?: number | null;
}

/**
 * Creates the next version of a vDisk with the given content: writes its
 * signed manifest, then the version item. PVS rules: one maintenance version
 * at a time, at most maxVersions versions in the chain (merged ones excluded).
 */
export async function createVersion(deps: ContentDeps, vdiskId: string, nv: NewVersion, actor: Principal): Promise<{ version: Version; revision: number }> {
  const farm = await deps.repo.farm();
  for (let attempt = 0; ; attempt++) {
    const vdisk = await loadVdisk(deps.repo, vdiskId);
    if (nv.content.sizeBytes !== vdisk.sizeBytes || nv.content.chunkSize !== vdisk.chunkSize)
      throw new FarmError('validation_failed', `content: ${nv.content.sizeBytes} bytes in ${nv.content.chunkSize}-byte chunks does not fit vDisk ${vdiskId} (${vdisk.sizeBytes} bytes, ${vdisk.chunkSize}-byte chunks)`, 'sizeBytes');
    const store = await deps.repo.get('store', vdisk.storeId);
    if (!store) throw new FarmError('internal', `store ${vdisk.storeId} of vDisk ${vdiskId} is missing`);
    const versions = await versionsOf(deps.repo, vdiskId);
    const newest = versions.at(-1);
    const maintenance = versions.find((v) => v.state === 'maintenance');
    // PVS: while a version is in maintenance, no other version is made on top of the chain (a merge starts a new one).
    if (maintenance && nv.parent !== null) throw new FarmError('in_use', `version ${maintenance.number} is in maintenance: promote or delete it before making another version`);
    const live = versions.filter((v) => v.state !== 'merged');
    if (nv.parent !== null && live.length >= farm.settings.maxVersions)
      throw new FarmError('in_use', `vDisk ${vdisk.name} has ${live.length} versions, the farm maximum (maxVersions ${farm.settings.maxVersions}): merge versions first`);
    const number = newest ? newest.number + 1 : 0;
    const now = deps.clock().toISOString();
    const manifest: Manifest = {
      format: MANIFEST_FORMAT,
      vdiskId,
      version: number,
      parent: nv.parent === undefined ? (newest?.number ?? null) : nv.parent,
      sectorSize: vdisk.sectorSize,
      sizeBytes: nv.content.sizeBytes,
      chunkSize: nv.content.chunkSize,
      chunks: nv.content.chunks,
      createdAt: now,
    };
    const signed = await signManifest(manifest, deps.signer);
    // The content hash in the key: two requests racing for one number never overwrite each other's manifest.
    const key = `${store.s3Prefix as string}${vdiskId}/${number}.${contentHash(nv.content).slice(0, 16)}.manifest.json`;
    await deps.blobs.put(key, JSON.stringify(signed), 'application/json');
    try {
      const { object, revision } = await deps.repo.create(
        'version',
        {
          id: versionId(vdiskId, number),
          vdiskId,
          number,
          parent: manifest.parent,
          state: nv.state,
          description: nv.description,
          manifest: key,
          contentHash: contentHash(nv.content),
          promotedAt: nv.state === 'maintenance' ? null : now,
        },
        actor,
      );
      return { version: object as unknown as Version, revision };
    } catch (e) {
      // Another version took this number at the same moment: take the next one.
      if (!(e instanceof FarmError && e.code === 'already_exists') || attempt >= 3) throw e;
    }
  }
}

/** Identity of a disk's content, independent of version numbers. */

// ------------------------------------------------------------------ uploads

export interface UploadSession extends Content {
  vdiskId: string;
  uploadId: string;
  createdAt: string;
}

export interface UploadStatus {
  uploadId: string;
  chunks: number;
  /** Distinct non-zero chunks. */
  distinct: number;
  /** Already stored and verified in the farm. */
  stored: number;
  /** Uploaded but not yet verified (an interrupted push): verified at commit. */
  arrived: number;
  /** Hashes the client must upload. */
  missing: string[];
}

/**
 * Opens (or reopens: the id is derived from the content, so re-running the same
 * push resumes) an upload and says which chunks the farm still needs.
 */
export async function openUpload(deps: ContentDeps, vdiskId: string, content: Content): Promise<UploadStatus> {
  const vdisk = await loadVdisk(deps.repo, vdiskId);
  const parsed = ContentSchema.safeParse(content);
  if (!parsed.success) throw new FarmError('validation_failed', `${parsed.error.issues[0]?.path.join('.')}: ${parsed.error.issues[0]?.message}`, parsed.error.issues[0]?.path.join('.'));
  if (content.sizeBytes !== vdisk.sizeBytes) throw new FarmError('validation_failed', `sizeBytes: the image is ${content.sizeBytes} bytes, vDisk ${vdisk.name} is ${vdisk.sizeBytes}`, 'sizeBytes');
  if (content.chunkSize !== vdisk.chunkSize) throw new FarmError('validation_failed', `chunkSize: vDisk ${vdisk.name} uses ${vdisk.chunkSize}-byte chunks`, 'chunkSize');
  const uploadId = contentHash(content).slice(0, 32);
  const key = uploadKey(vdiskId, uploadId);
  if (!(await deps.blobs.head(key))) {
    const session: UploadSession = { vdiskId, uploadId, createdAt: deps.clock().toISOString(), ...parsed.data };
    await deps.blobs.put(key, JSON.stringify(session), 'application/json');
  }
  const distinct = [...new Set(content.chunks.filter((h): h is string => h !== null))];
  const stored = await deps.repo.chunksStored(distinct);
  const unindexed = distinct.filter((h) => !stored.has(h));
  const present = await mapLimit(unindexed, 16, async (h) => (await deps.blobs.head(chunkKey(h))) !== null);
  const missing = unindexed.filter((_, i) => !present[i]);
  return { uploadId, chunks: content.chunks.length, distinct: distinct.length, stored: stored.size, arrived: unindexed.length - missing.length, missing };
}

async function loadSession(deps: ContentDeps, vdiskId: string, uploadId: string): Promise<UploadSession> {
  if (!/^[0-9a-f]{32}$/.test(uploadId)) throw new FarmError('bad_request', 'uploadId: not an upload id', 'uploadId');
  const raw = await deps.blobs.get(uploadKey(vdiskId, uploadId));
  if (!raw) throw new FarmError('not_found', `upload ${uploadId} of vDisk ${vdiskId} does not exist (start it again with the same content)`);
  return JSON.parse(raw.toString('utf8')) as UploadSession;
}

/** Presigned PUT URLs for chunks of an open upload (only hashes the upload lists). */
export async function uploadUrls(deps: ContentDeps, vdiskId: string, uploadId: string, hashes: string[], expiresSeconds = 3600): Promise<Record<string, string>> {
  const session = await loadSession(deps, vdiskId, uploadId);
  const listed = new Set(session.chunks);
  const foreign = hashes.find((h) => !listed.has(h));
  if (foreign) throw new FarmError('validation_failed', `hashes: ${foreign} is not a chunk of upload ${uploadId}`, 'hashes');
  const out: Record<string, string> = {};
  for (const h of hashes) out[h] = await deps.blobs.presignPut(chunkKey(h), expiresSeconds);
  return out;
}

/**
 * Verifies every chunk of an upload (stored ones are in the index; the others
 * are read back from S3 and hashed; a corrupt one is deleted) and only then
 * creates the version. An identical re-push creates nothing and returns the
 * version that already has this content.
 */
export async function commitUpload(
  deps: ContentDeps,
  vdiskId: string,
  uploadId: string,
  opts: { state: Exclude<VersionState, 'merged'>; description: string },
  actor: Principal,
): Promise<{ version: Version; revision: number; created: boolean }> {
  const session = await loadSession(deps, vdiskId, uploadId);
  // Commits and garbage collection exclude each other: each takes its lock, then looks for the other's.
  const lease = `commit:${uploadId}`;
  if (!(await deps.repo.tryLock(lease, uploadId, COMMIT_LEASE_MS))) throw new FarmError('in_use', `upload ${uploadId} is being committed by another request`);
  try {
    if ((await deps.repo.activeLocks('gc')).length) throw new FarmError('in_use', 'chunk garbage collection is running; commit again in a minute');
    return await commitLocked(deps, session, opts, actor);
  } finally {
    await deps.repo.unlock(lease, uploadId);
  }
}

/** Longest a commit may take (reading back unverified chunks included). */
const COMMIT_LEASE_MS = 15 * 60 * 1000;

async function commitLocked(
  deps: ContentDeps,
  session: UploadSession,
  opts: { state: Exclude<VersionState, 'merged'>; description: string },
  actor: Principal,
): Promise<{ version: Version; revision: number; created: boolean }> {
  const { vdiskId, uploadId } = session;
  const content: Content = { sizeBytes: session.sizeBytes, chunkSize: session.chunkSize, chunks: session.chunks };
  const newest = (await versionsOf(deps.repo, vdiskId)).at(-1);
  if (newest && newest.contentHash === contentHash(content)) {
    await deps.blobs.delete([uploadKey(vdiskId, uploadId)]);
    return { version: newest, revision: await deps.repo.revision(), created: false };
  }
  const distinct = [...new Set(content.chunks.filter((h): h is string => h !== null))];
  const stored = await deps.repo.chunksStored(distinct);
  const toVerify = distinct.filter((h) => !stored.has(h));
  const results = await mapLimit(toVerify, 4, async (h) => {
    const stream = await deps.blobs.stream(chunkKey(h));
    if (!stream) return { h, state: 'missing' as const, size: 0 };
    const { hash, size } = await hashStream(stream);
    if (hash !== h) {
      await deps.blobs.delete([chunkKey(h)]);
      return { h, state: 'corrupt' as const, size };
    }
    return { h, state: 'ok' as const, size };
  });
  const missing = results.filter((r) => r.state === 'missing').length;
  const corrupt = results.filter((r) => r.state === 'corrupt').length;
  if (missing || corrupt)
    throw new FarmError('upload_incomplete', `upload ${uploadId}: ${missing} chunk(s) missing, ${corrupt} corrupt (deleted); run the same push again to send them`);
  await deps.repo.recordChunks(results.map((r) => ({ hash: r.h, size: r.size })));
  const result = await createVersion(deps, vdiskId, { content, state: opts.state, description: opts.description }, actor);
  await deps.blobs.delete([uploadKey(vdiskId, uploadId)]);
  return { ...result, created: true };
}

// ---------------------------------------------------------------- garbage

export interface GcResult {
  manifests: number;
  orphanManifests: number;
  liveChunks: number;
  scanned: number;
  deleted: number;
  deletedBytes: number;
  keptYoung: number;
}

/**
 * Deletes chunks that no manifest and no open upload references. Safe against
 * a concurrent upload: GC and commits exclude each other by locks; chunks
 * younger than `graceSeconds` are kept (a push may be uploading them before
 * its session lists them), and a commit re-verifies every chunk not in the
 * index, which GC empties before it deletes objects.
 */
export async function collectGarbage(deps: ContentDeps, graceSeconds = 3600): Promise<GcResult> {
  const owner = sha256Hex(Buffer.from(`${deps.clock().toISOString()}${Math.random()}`)).slice(0, 16);
  if (!(await deps.repo.tryLock('gc', owner, COMMIT_LEASE_MS))) throw new FarmError('in_use', 'garbage collection is already running');
  try {
    const committing = await deps.repo.activeLocks('commit:');
    if (committing.length) throw new FarmError('in_use', `${committing.length} upload(s) are being committed; run garbage collection again in a minute`);
    return await sweep(deps, graceSeconds);
  } finally {
    await deps.repo.unlock('gc', owner);
  }
}

async function sweep(deps: ContentDeps, graceSeconds: number): Promise<GcResult> {
  const cutoff = deps.clock().getTime() - graceSeconds * 1000;
  // Live: the manifests of existing versions (the version items say which), and open uploads.
  const live = new Set<string>();
  const liveManifests = new Set<string>();
  for (const v of (await listAll(deps.repo, 'version')) as unknown as Version[]) {
    if (!v.manifest) continue;
    liveManifests.add(v.manifest);
    for (const h of (await loadManifest(deps, v)).chunks) if (h) live.add(h);
  }
  for await (const u of deps.blobs.list('uploads/')) {
    const raw = await deps.blobs.get(u.key);
    if (raw) for (const h of (JSON.parse(raw.toString('utf8')) as UploadSession).chunks) if (h) live.add(h);
  }
  // Manifests of deleted versions and vDisks go too (young ones may belong to a version being created).
  const orphans: string[] = [];
  for await (const o of deps.blobs.list('')) {
    if (o.key.endsWith('.manifest.json') && !liveManifests.has(o.key) && o.lastModified.getTime() <= cutoff) orphans.push(o.key);
  }
  const doomed: { key: string; hash: string; size: number }[] = [];
  let scanned = 0;
  let keptYoung = 0;
  for await (const o of deps.blobs.list('chunks/')) {
    scanned++;
    const hash = o.key.slice(o.key.lastIndexOf('/') + 1);
    if (live.has(hash)) continue;
    if (o.lastModified.getTime() > cutoff) {
      keptYoung++;
      continue;
    }
    doomed.push({ key: o.key, hash, size: o.size });
  }
  // Index first: a commit that no longer finds a chunk in the index reads it back, and sees it gone.
  await deps.repo.forgetChunks(doomed.map((d) => d.hash));
  await deps.blobs.delete([...doomed.map((d) => d.key), ...orphans]);
  return { manifests: liveManifests.size, orphanManifests: orphans.length, liveChunks: live.size, scanned, deleted: doomed.length, deletedBytes: doomed.reduce((a, d) => a + d.size, 0), keptYoung };
}

// ---------------------------------------------------------------- helpers

async function hashStream(stream: AsyncIterable<Uint8Array>): Promise<{ hash: string; size: number }> {
  const h = createHash('sha256');
  let size = 0;
  for await (const part of stream) {
    h.update(part);
    size += part.byteLength;
  }
  return { hash: h.digest('hex'), size };
}

export async function mapLimit<T, R>(items: T[], limit: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}
