/**
 * `bootfarm vdisk push`: reads a raw, VHD or VHDX image (or a base-first
 * differencing chain), cuts the virtual disk into the vDisk's chunks, and
 * sends only the chunks the farm lacks, straight to S3 through presigned
 * URLs. Re-running an interrupted push resumes it: the upload is keyed by
 * content, and chunks that arrived are not sent again.
 */
import { basename } from 'node:path';
import { chunkCount, chunkRange, isAllZero, sha256Hex } from '../model/manifest.js';
import { openImage, type DiskImage } from '../model/images/index.js';
import type { ApiClient } from './client.js';
import { UsageError } from './output.js';

export interface PushOptions {
  storeId: string;
  name: string;
  files: string[];
  state?: 'maintenance' | 'test' | 'production';
  description?: string;
  /** Chunks uploaded at once. */
  concurrency?: number;
  onProgress?: (p: Progress) => void;
}

export interface Progress {
  phase: 'scan' | 'upload' | 'commit';
  doneBytes: number;
  totalBytes: number;
}

export interface PushResult {
  vdiskId: string;
  vdiskCreated: boolean;
  version: Record<string, unknown>;
  versionCreated: boolean;
  sizeBytes: number;
  chunkSize: number;
  chunks: number;
  zeroChunks: number;
  uploadedChunks: number;
  uploadedBytes: number;
  /** Chunks the farm already had (other versions, other vDisks, or an interrupted push). */
  reusedChunks: number;
  seconds: number;
}

export async function pushImage(c: ApiClient, o: PushOptions): Promise<PushResult> {
  const started = Date.now();
  const image = await openImage(o.files);
  try {
    const { vdisk, created } = await findOrCreateVdisk(c, o, image);
    const chunkSize = vdisk.chunkSize as number;
    if (image.sizeBytes !== vdisk.sizeBytes)
      throw new UsageError(`the image is ${image.sizeBytes} bytes, vDisk ${o.name} is ${vdisk.sizeBytes}: push an image of the same size (or a new vDisk name)`);

    // 1. Hash every chunk (all-zero chunks are not stored).
    const n = chunkCount(image.sizeBytes, chunkSize);
    const chunks: (string | null)[] = new Array(n);
    const firstIndex = new Map<string, number>();
    let scanned = 0;
    for (let i = 0; i < n; i++) {
      const { start, end } = chunkRange(i, image.sizeBytes, chunkSize);
      chunks[i] = await hashChunk(image, start, end - start);
      if (chunks[i] && !firstIndex.has(chunks[i]!)) firstIndex.set(chunks[i]!, i);
      scanned += end - start;
      o.onProgress?.({ phase: 'scan', doneBytes: scanned, totalBytes: image.sizeBytes });
    }

    // 2. Ask what the farm lacks.
    const status = (await c.request('POST', `/v1/vdisks/${vdisk.id}/uploads`, { sizeBytes: image.sizeBytes, chunkSize, chunks })).body as { uploadId: string; missing: string[]; stored: number; arrived: number };
    const sizeOf = (h: string) => {
      const { start, end } = chunkRange(firstIndex.get(h)!, image.sizeBytes, chunkSize);
      return end - start;
    };
    const totalUpload = status.missing.reduce((a, h) => a + sizeOf(h), 0);

    // 3. Send the missing chunks straight to S3.
    let sent = 0;
    o.onProgress?.({ phase: 'upload', doneBytes: 0, totalBytes: totalUpload });
    for (let b = 0; b < status.missing.length; b += 500) {
      const batch = status.missing.slice(b, b + 500);
      const { urls } = (await c.request('POST', `/v1/vdisks/${vdisk.id}/uploads/${status.uploadId}/urls`, { hashes: batch })).body as { urls: Record<string, string> };
      await forEachLimit(batch, o.concurrency ?? 4, async (h) => {
        const { start, end } = chunkRange(firstIndex.get(h)!, image.sizeBytes, chunkSize);
        const data = await image.read(start, end - start);
        if (sha256Hex(data) !== h) throw new Error(`${o.files.at(-1)} changed while it was being pushed (chunk at byte ${start}); push it again when nothing writes to it`);
        await putChunk(urls[h]!, data);
        sent += data.length;
        o.onProgress?.({ phase: 'upload', doneBytes: sent, totalBytes: totalUpload });
      });
    }

    // 4. The control plane verifies every chunk, then creates the version.
    o.onProgress?.({ phase: 'commit', doneBytes: 0, totalBytes: 0 });
    const commit = await c.request('POST', `/v1/vdisks/${vdisk.id}/uploads/${status.uploadId}/commit`, {
      ...(o.state ? { state: o.state } : {}),
      description: o.description ?? `pushed from ${basename(o.files.at(-1)!)}`,
    });
    const distinct = new Set(chunks.filter((h): h is string => h !== null)).size;
    return {
      vdiskId: vdisk.id as string,
      vdiskCreated: created,
      version: commit.body,
      versionCreated: commit.status === 201,
      sizeBytes: image.sizeBytes,
      chunkSize,
      chunks: n,
      zeroChunks: chunks.filter((h) => h === null).length,
      uploadedChunks: status.missing.length,
      uploadedBytes: sent,
      reusedChunks: distinct - status.missing.length,
      seconds: (Date.now() - started) / 1000,
    };
  } finally {
    await image.close();
  }
}

async function hashChunk(image: DiskImage, start: number, length: number): Promise<string | null> {
  if (await image.knownZero(start, length)) return null;
  const data = await image.read(start, length);
  return isAllZero(data) ? null : sha256Hex(data);
}

async function findOrCreateVdisk(c: ApiClient, o: PushOptions, image: DiskImage): Promise<{ vdisk: Record<string, any>; created: boolean }> {
  const existing = (await c.all<Record<string, any>>(`/v1/vdisks?storeId=${o.storeId}`)).find((v) => String(v.name).toLowerCase() === o.name.toLowerCase());
  if (existing) return { vdisk: existing, created: false };
  const body = { storeId: o.storeId, name: o.name, sizeBytes: image.sizeBytes, sectorSize: image.logicalSectorSize };
  return { vdisk: (await c.request('POST', '/v1/vdisks', body)).body, created: true };
}

async function putChunk(url: string, data: Buffer): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    let res: Response | undefined;
    try {
      res = await fetch(url, { method: 'PUT', body: data, headers: { 'content-type': 'application/octet-stream' } });
      if (res.ok) {
        await res.arrayBuffer();
        return;
      }
    } catch (e) {
      if (attempt >= 5) throw new Error(`chunk upload failed: ${(e as Error).message}`);
    }
    if (res && res.status < 500 && res.status !== 429) throw new Error(`chunk upload refused by S3: HTTP ${res.status} ${(await res.text()).slice(0, 200)}`);
    if (attempt >= 5) throw new Error(`chunk upload failed: HTTP ${res?.status}`);
    await new Promise((r) => setTimeout(r, 200 * 2 ** attempt * Math.random()));
  }
}

async function forEachLimit<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/** A one-line progress bar for a terminal: bytes, rate, ETA. */
export function progressBar(write: (s: string) => void, now: () => number = Date.now): (p: Progress) => void {
  let phase = '';
  let since = now();
  let last = 0;
  const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
  return (p) => {
    if (p.phase !== phase) {
      if (phase) write('\n');
      phase = p.phase;
      since = now();
      if (p.phase === 'commit') return write('verifying and committing...\n');
    }
    const t = now();
    if (t - last < 100 && p.doneBytes < p.totalBytes) return;
    last = t;
    const frac = p.totalBytes ? p.doneBytes / p.totalBytes : 1;
    const secs = Math.max((t - since) / 1000, 0.001);
    const rate = p.doneBytes / secs;
    const eta = rate > 0 ? Math.round((p.totalBytes - p.doneBytes) / rate) : 0;
    const width = 30;
    const bar = '#'.repeat(Math.round(frac * width)).padEnd(width, '.');
    write(`\r${p.phase === 'scan' ? 'scanning ' : 'uploading'} [${bar}] ${(frac * 100).toFixed(0).padStart(3)}% ${mib(p.doneBytes)}/${mib(p.totalBytes)} ${mib(rate)}/s ETA ${eta}s `);
  };
}
