/**
 * vDisk push benchmark (issue 3): push throughput of a large image next to a
 * plain presigned PUT of the same bytes to the same S3 (the peer), and the
 * bytes a 3 % change sends, chunk-aligned and scattered.
 *
 * Everything runs in this process on loopback: DynamoDB Local (in memory),
 * s3rver (temp dir) and the API (createApp on @hono/node-server). s3rver
 * shares the event loop and the CPUs with the client, for the peer and for
 * bootfarm alike, so the ratio is fair and both absolute rates are lower than
 * against real S3.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { mkdtemp, open, rm, type FileHandle } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { S3Client } from '@aws-sdk/client-s3';
import { serve } from '@hono/node-server';
import { ApiClient } from '../cli/client.js';
import { pushImage, type Progress, type PushResult } from '../cli/push.js';
import { createApp } from '../functions/app.js';
import { dynamoClientConfig, ensureTableAndBucket, s3ClientConfig, startLocalAws, type LocalAws } from '../functions/local/local-aws.js';
import { pemSigner } from '../functions/signing.js';
import { s3BlobStore, type BlobStore } from '../functions/storage/blobs.js';
import { dynamoRepo } from '../functions/storage/clients.js';
import type { Principal } from '../model/index.js';
import { chunkCount, chunkRange } from '../model/manifest.js';

export interface VdiskBenchOptions {
  sizeBytes: number;
  /** Chunks sent at once, by bootfarm and by the peer. */
  concurrency: number;
  /** The result table. */
  out: (line: string) => void;
  /** Progress notes. */
  log: (line: string) => void;
}

const MiB = 2 ** 20;
const KiB = 1024;
/** The image repeats one random block; a counter stamped into every 64 KiB makes every chunk (and every 64 KiB) distinct. */
const BLOCK = 64 * MiB;
const STAMP_EVERY = 64 * KiB;
const DELTA = 0.03;
const SCATTER_WRITE = 64 * KiB;
const BENCH: Principal = { tokenId: 'bench', name: 'bench', role: 'farm-admin', siteId: null };

interface Row {
  case: string;
  seconds: number | null;
  sentBytes: number;
  chunksSent: number | null;
  note: string;
}

export async function benchVdisk(o: VdiskBenchOptions): Promise<void> {
  if (o.sizeBytes < BLOCK || o.sizeBytes % BLOCK !== 0) throw new Error(`--size: must be a multiple of ${BLOCK / MiB} MiB`);
  const started = Date.now();
  const cleanups: (() => Promise<void>)[] = [];
  const workDir = await mkdtemp(join(tmpdir(), 'bootfarm-bench-'));
  // Ctrl-C or a crash must not leave a 2 GiB file behind (local-aws removes its own temp dir and Java child on exit).
  const onExit = () => rmSync(workDir, { recursive: true, force: true });
  process.once('exit', onExit);
  const onSignal = () => process.exit(130);
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  cleanups.push(async () => {
    await rm(workDir, { recursive: true, force: true });
    process.off('exit', onExit);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  });
  try {
    o.log('starting DynamoDB Local (in memory), s3rver and the API on loopback...');
    const aws = await startLocalAws();
    cleanups.unshift(() => aws.stop());
    const farm = await startFarm(aws);
    cleanups.unshift(farm.close);

    const image = join(workDir, 'bench.raw');
    o.log(`writing a ${o.sizeBytes / MiB} MiB image of random-ish content...`);
    const genSeconds = await timed(() => writeImage(image, o.sizeBytes));

    const store = (await farm.client.request('POST', '/v1/stores', { name: 'bench' })).body as { id: string };
    const push = async (label: string, state?: 'test'): Promise<{ r: PushResult; phases: Record<string, number> }> => {
      o.log(`${label}...`);
      const phases = phaseTimer();
      const r = await pushImage(farm.client, { storeId: store.id, name: 'bench', files: [image], concurrency: o.concurrency, state, onProgress: phases.onProgress });
      return { r, phases: phases.done() };
    };

    // (a) bootfarm push of the whole image into a new vDisk.
    const full = await push('(a) bootfarm push');
    const chunkSize = full.r.chunkSize;
    const chunks = chunkCount(o.sizeBytes, chunkSize);

    // (b) the peer: the same bytes, chunk size and concurrency, plain presigned PUTs, nothing else.
    o.log('(b) peer: plain presigned PUTs...');
    const peer = await peerUpload(farm.blobs, image, o.sizeBytes, chunkSize, o.concurrency);
    await farm.blobs.delete(peer.keys);

    // A second push of the unchanged image: what a push costs when nothing moves (hashing, API calls).
    const again = await push('re-push of the unchanged image');

    // (c) 3 % of the image rewritten in whole chunks.
    const aligned = await rewrite(image, pickDistinct(Math.round(chunks * DELTA), chunks, 0xc0ffee).map((i) => ({ offset: i * chunkSize, length: chunkRange(i, o.sizeBytes, chunkSize).end - i * chunkSize })));
    const deltaA = await push('(c) 3 % changed, chunk-aligned', 'test');

    // (d) 3 % of the image rewritten in scattered 64 KiB writes.
    const slots = o.sizeBytes / SCATTER_WRITE;
    const scattered = await rewrite(image, pickDistinct(Math.round(slots * DELTA), slots, 0x5ca77e).map((i) => ({ offset: i * SCATTER_WRITE, length: SCATTER_WRITE })));
    const touched = new Set(scattered.writes.map((w) => Math.floor(w.offset / chunkSize))).size;
    const deltaB = await push('(d) 3 % changed, scattered 64 KiB writes', 'test');

    const rows: Row[] = [
      { case: '(a) bootfarm push, new vDisk', seconds: full.r.seconds, sentBytes: full.r.uploadedBytes, chunksSent: full.r.uploadedChunks, note: phaseNote(full.phases) },
      { case: '(b) peer: presigned PUT only', seconds: peer.seconds, sentBytes: peer.bytes, chunksSent: peer.keys.length, note: 'same chunks, same concurrency, no hashing or API' },
      { case: '    re-push, unchanged', seconds: again.r.seconds, sentBytes: again.r.uploadedBytes, chunksSent: again.r.uploadedChunks, note: phaseNote(again.phases) },
      {
        case: '(c) 3 % changed, whole chunks',
        seconds: deltaA.r.seconds,
        sentBytes: deltaA.r.uploadedBytes,
        chunksSent: deltaA.r.uploadedChunks,
        note: `${aligned.writes.length} chunks rewritten (${pct(aligned.bytes, o.sizeBytes)} of the image changed)`,
      },
      {
        case: '(d) 3 % changed, 64 KiB writes',
        seconds: deltaB.r.seconds,
        sentBytes: deltaB.r.uploadedBytes,
        chunksSent: deltaB.r.uploadedChunks,
        note: `${scattered.writes.length} writes (${pct(scattered.bytes, o.sizeBytes)} changed) touch ${touched} of ${chunks} chunks`,
      },
    ];
    const ratio = full.r.seconds / peer.seconds;
    const aligned4 = deltaA.r.uploadedBytes <= 0.04 * o.sizeBytes;

    o.out('');
    o.out(`bootfarm vdisk benchmark: ${o.sizeBytes / MiB} MiB raw image, ${chunkSize / MiB} MiB chunks, concurrency ${o.concurrency}, ${cpus().length} CPUs, Node ${process.version}`);
    o.out('S3 = s3rver on loopback in this process (temp dir); DynamoDB Local in memory; API = createApp on @hono/node-server');
    o.out('');
    o.out(renderTable(rows, o.sizeBytes));
    o.out('');
    o.out(`push / peer wall time: ${ratio.toFixed(2)}x (bootfarm ${mibps(full.r.uploadedBytes, full.r.seconds)} MiB/s, peer ${mibps(peer.bytes, peer.seconds)} MiB/s)`);
    o.out(`3 % chunk-aligned change sent ${pct(deltaA.r.uploadedBytes, o.sizeBytes)} of the image (issue 3 target: <= 4 %: ${aligned4 ? 'met' : 'NOT met'})`);
    o.out(`3 % in scattered 64 KiB writes sent ${pct(deltaB.r.uploadedBytes, o.sizeBytes)}: a chunk moves whole when any byte of it changes (${chunkSize / MiB} MiB granularity)`);
    o.out(`image written in ${genSeconds.toFixed(1)} s; whole run ${((Date.now() - started) / 1000).toFixed(0)} s`);
  } finally {
    for (const c of cleanups) await c().catch((e: Error) => o.log(`cleanup: ${e.message}`));
  }
}

// ------------------------------------------------------------------ farm

async function startFarm(aws: LocalAws): Promise<{ client: ApiClient; blobs: BlobStore; close: () => Promise<void> }> {
  await ensureTableAndBucket(aws);
  const repo = dynamoRepo(dynamoClientConfig(aws), aws.tableName);
  const s3 = new S3Client(s3ClientConfig(aws));
  const blobs = s3BlobStore(s3, aws.bucketName);
  const signer = pemSigner(generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString());
  const app = createApp({ repo, blobs, signer, log: (l) => console.error(`[api] ${l}`) });
  let server: ReturnType<typeof serve> | undefined;
  const port = await new Promise<number>((ok, fail) => {
    server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, (info: AddressInfo) => ok(info.port));
    server.once('error', fail);
  });
  const { secret } = await repo.createToken({ name: 'bench', role: 'farm-admin', siteId: null, expiresAt: null }, BENCH);
  return {
    client: new ApiClient(`http://127.0.0.1:${port}`, secret),
    blobs,
    close: async () => {
      await new Promise<void>((ok) => (server ? server.close(() => ok()) : ok()));
      s3.destroy();
    },
  };
}

// ----------------------------------------------------------------- image

/** A file of `size` bytes: one random 64 MiB block repeated, each 64 KiB stamped with its offset so no two chunks are equal. */
async function writeImage(path: string, size: number): Promise<void> {
  const base = randomBytes(BLOCK);
  const buf = Buffer.allocUnsafe(BLOCK);
  const f = await open(path, 'w');
  try {
    await f.truncate(size); // sparse until written
    for (let at = 0; at < size; at += BLOCK) {
      base.copy(buf);
      for (let s = 0; s < BLOCK; s += STAMP_EVERY) buf.writeDoubleLE(at + s, s);
      await writeAll(f, buf, at);
    }
    // On disk before anything is timed: write-back of 2 GiB of dirty pages would slow whichever case runs first.
    await f.sync();
  } finally {
    await f.close();
  }
}

async function rewrite(path: string, writes: { offset: number; length: number }[]): Promise<{ writes: typeof writes; bytes: number }> {
  const f = await open(path, 'r+');
  try {
    for (const w of writes) await writeAll(f, randomBytes(w.length), w.offset);
    await f.sync();
  } finally {
    await f.close();
  }
  return { writes, bytes: writes.reduce((a, w) => a + w.length, 0) };
}

async function writeAll(f: FileHandle, buf: Buffer, at: number): Promise<void> {
  for (let done = 0; done < buf.length; ) done += (await f.write(buf, done, buf.length - done, at + done)).bytesWritten;
}

/** `n` distinct integers in [0, max), spread by a seeded generator (the same positions every run). */
function pickDistinct(n: number, max: number, seed: number): number[] {
  const rand = mulberry32(seed);
  const out = new Set<number>();
  while (out.size < n) out.add(Math.floor(rand() * max));
  return [...out].sort((a, b) => a - b);
}

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

// ------------------------------------------------------------------ peer

/** What a plain uploader does: read each chunk, PUT it to a presigned URL, `concurrency` at a time. */
async function peerUpload(blobs: BlobStore, path: string, size: number, chunkSize: number, concurrency: number): Promise<{ seconds: number; bytes: number; keys: string[] }> {
  const n = chunkCount(size, chunkSize);
  const keys = Array.from({ length: n }, (_, i) => `bench-peer/${String(i).padStart(6, '0')}`);
  const f = await open(path, 'r');
  let bytes = 0;
  try {
    const seconds = await timed(async () => {
      let next = 0;
      const worker = async () => {
        while (next < n) {
          const i = next++;
          const { start, end } = chunkRange(i, size, chunkSize);
          const data = Buffer.allocUnsafe(end - start);
          const { bytesRead } = await f.read(data, 0, data.length, start);
          if (bytesRead !== data.length) throw new Error(`short read at ${start}`);
          const url = await blobs.presignPut(keys[i]!, 3600);
          const res = await fetch(url, { method: 'PUT', body: data, headers: { 'content-type': 'application/octet-stream' } });
          await res.arrayBuffer();
          if (!res.ok) throw new Error(`peer PUT ${keys[i]}: HTTP ${res.status}`);
          bytes += data.length;
        }
      };
      await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
    });
    return { seconds, bytes, keys };
  } finally {
    await f.close();
  }
}

// ---------------------------------------------------------------- output

function phaseTimer() {
  const at: [Progress['phase'], number][] = [];
  const t0 = performance.now();
  return {
    onProgress: (p: Progress) => {
      if (at.at(-1)?.[0] !== p.phase) at.push([p.phase, performance.now()]);
    },
    /** Seconds per phase; "setup" is before the scan (finding or creating the vDisk). */
    done: (): Record<string, number> => {
      const end = performance.now();
      const out: Record<string, number> = { setup: ((at[0]?.[1] ?? end) - t0) / 1000 };
      at.forEach(([phase, start], i) => (out[phase] = ((at[i + 1]?.[1] ?? end) - start) / 1000));
      return out;
    },
  };
}

const phaseNote = (p: Record<string, number>) => `hash ${fmt(p.scan)} s, upload ${fmt(p.upload)} s, verify+commit ${fmt(p.commit)} s`;
const fmt = (s: number | undefined) => (s ?? 0).toFixed(1);
const mibps = (bytes: number, seconds: number) => (seconds > 0 ? bytes / MiB / seconds : 0).toFixed(1);
const pct = (part: number, whole: number) => `${((100 * part) / whole).toFixed(2)} %`;

function renderTable(rows: Row[], size: number): string {
  // Throughput of the whole image (what the user waits for), so delta rows compare with the full push.
  const head = ['case', 'wall s', 'image MiB/s', 'sent MiB', '% of image', 'chunks sent', 'notes'];
  const cells = rows.map((r) => [
    r.case,
    r.seconds === null ? '-' : r.seconds.toFixed(1),
    r.seconds === null ? '-' : mibps(size, r.seconds),
    (r.sentBytes / MiB).toFixed(1),
    pct(r.sentBytes, size),
    r.chunksSent === null ? '-' : String(r.chunksSent),
    r.note,
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const right = new Set([1, 2, 3, 4, 5]);
  const line = (vals: string[]) => vals.map((v, i) => (i === vals.length - 1 ? v : right.has(i) ? v.padStart(widths[i]!) : v.padEnd(widths[i]!))).join('  ');
  return [line(head), line(widths.map((w) => '-'.repeat(w))), ...cells.map(line)].join('\n');
}

async function timed(fn: () => Promise<void>): Promise<number> {
  const t = performance.now();
  await fn();
  return (performance.now() - t) / 1000;
}
