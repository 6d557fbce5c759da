/**
 * vDisk push end to end: the CLI's pushImage against the real API on
 * DynamoDB Local and s3rver, the disk read back from S3 through its signed
 * manifest and compared byte for byte with the source (or with qemu-img's
 * conversion of VHD/VHDX files).
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiClient } from '../../cli/client.js';
import { pushImage, type PushResult } from '../../cli/push.js';
import { chunkKey, verifyChunk, verifyManifest, type Manifest } from '../../model/index.js';
import { testFarm, type TestFarm } from '../support/farm.js';
import { expectError, expectStatus, fixtures, type Fixtures } from '../support/fixtures.js';
import { serveFarm } from '../support/serve.js';
import { applyWrite, newLayer } from '../images/support/content.js';
import { qemuRaw } from '../images/support/tools.js';
import { writeVhdDifferencing } from '../images/support/writers.js';

const MiB = 2 ** 20;
let farm: TestFarm;
let fx: Fixtures;
let server: { url: string; close(): Promise<void> };
let client: ApiClient;
let dir: string;
let storeId: string;

beforeAll(async () => {
  farm = await testFarm();
  fx = fixtures(farm);
  server = await serveFarm(farm);
  client = new ApiClient(server.url, farm.adminToken);
  dir = await mkdtemp(join(tmpdir(), 'bootfarm-push-'));
  storeId = (await fx.store()).id;
});

afterAll(async () => {
  await server?.close();
  await rm(dir, { recursive: true, force: true });
});

/** A raw image: zeros with random data at the given MiB offsets (each run `len` MiB). */
async function rawImage(name: string, sizeMiB: number, runs: [offsetMiB: number, lenMiB: number][]): Promise<string> {
  const path = join(dir, name);
  const fh = await open(path, 'w');
  await fh.truncate(sizeMiB * MiB);
  for (const [off, len] of runs) await fh.write(randomBytes(len * MiB), 0, len * MiB, off * MiB);
  await fh.close();
  return path;
}

async function overwrite(path: string, offset: number, length: number) {
  const fh = await open(path, 'r+');
  await fh.write(randomBytes(length), 0, length, offset);
  await fh.close();
}

const push = (name: string, files: string[], extra: Partial<Parameters<typeof pushImage>[1]> = {}) => pushImage(client, { storeId, name, files, ...extra });

/** The disk a version describes, rebuilt from its signed manifest and the chunks in S3, every chunk verified. */
async function readBack(vdiskId: string, number: number): Promise<{ data: Buffer; manifest: Manifest }> {
  const raw = expectStatus(await farm.api('GET', `/v1/vdisks/${vdiskId}/versions/${number}/manifest`), 200);
  const keys = expectStatus(await farm.api('GET', '/v1/signing-keys'), 200).keys;
  const manifest = verifyManifest(raw, keys);
  const data = Buffer.alloc(manifest.sizeBytes);
  for (let i = 0; i < manifest.chunks.length; i++) {
    const h = manifest.chunks[i]!;
    if (h === null) continue;
    const obj = await farm.s3.send(new GetObjectCommand({ Bucket: farm.bucket, Key: chunkKey(h) }));
    const bytes = Buffer.from(await obj.Body!.transformToByteArray());
    verifyChunk(bytes, h, i);
    bytes.copy(data, i * manifest.chunkSize);
  }
  return { data, manifest };
}

function qemu(...args: string[]) {
  execFileSync(args[0]!, args.slice(1), { stdio: 'pipe' });
}

describe('vdisk push', () => {
  let first: PushResult;
  let img: string;

  it('creates the vDisk from a raw image and stores it byte-identical, all-zero chunks without data', async () => {
    img = await rawImage('base.raw', 128, [[0, 1], [10, 20], [100, 3]]);
    first = await push('base', [img]);
    expect(first).toMatchObject({ vdiskCreated: true, versionCreated: true, sizeBytes: 128 * MiB, chunkSize: 4 * MiB, chunks: 32 });
    expect(first.version).toMatchObject({ number: 0, state: 'production', parent: null });
    // 1 MiB at 0, 20 MiB from 10 (chunks 2..7), 3 MiB at 100 (chunk 25): 8 chunks with data.
    expect(first.uploadedChunks).toBe(8);
    expect(first.zeroChunks).toBe(24);
    const { data, manifest } = await readBack(first.vdiskId, 0);
    expect(manifest.chunks.filter((h) => h === null)).toHaveLength(24);
    expect(data.equals(await readFile(img))).toBe(true);
  });

  it('sends no chunk data and creates no version when the same image is pushed again', async () => {
    const again = await push('base', [img]);
    expect(again).toMatchObject({ vdiskCreated: false, versionCreated: false, uploadedChunks: 0, uploadedBytes: 0, reusedChunks: 8 });
    expect(again.version).toMatchObject({ number: 0 });
  });

  it('sends at most 4 % of the image for a new version with 3 % of its chunk-aligned blocks changed', async () => {
    const path = await rawImage('delta.raw', 400, [[0, 400]]);
    const base = await push('delta', [path]);
    expect(base.uploadedBytes).toBe(400 * MiB);
    for (const chunk of [3, 50, 97]) await overwrite(path, chunk * 4 * MiB, 4 * MiB); // 12 MiB of 400 = 3 %
    const next = await push('delta', [path]);
    expect(next.version).toMatchObject({ number: 1, parent: 0, state: 'maintenance' });
    expect(next.uploadedBytes / next.sizeBytes).toBeLessThanOrEqual(0.04);
    expect(next.uploadedBytes).toBe(12 * MiB);
    expect((await readBack(next.vdiskId, 1)).data.equals(await readFile(path))).toBe(true);
  }, 60_000);

  it('resumes an interrupted push: chunks that arrived are not sent again, and no version exists until the commit', async () => {
    const path = await rawImage('resume.raw', 64, [[0, 64]]);
    let uploads = 0;
    const stop = new Error('simulated kill');
    await expect(
      push('resume', [path], {
        concurrency: 1,
        onProgress: (p) => {
          if (p.phase === 'upload' && p.doneBytes > 0 && ++uploads === 5) throw stop;
        },
      }),
    ).rejects.toBe(stop);
    const vdisk = (await client.all(`/v1/vdisks?storeId=${storeId}`)).find((v) => v.name === 'resume')!;
    expect(expectStatus(await farm.api('GET', `/v1/vdisks/${vdisk.id}/versions`), 200).items).toEqual([]);
    const resumed = await push('resume', [path]);
    expect(resumed.versionCreated).toBe(true);
    expect(resumed.uploadedChunks).toBe(16 - 5);
    expect(resumed.reusedChunks).toBe(5);
    expect((await readBack(resumed.vdiskId, 0)).data.equals(await readFile(path))).toBe(true);
  });

  it('refuses to commit an upload whose chunk in S3 does not match its hash, deletes it, and takes it again', async () => {
    const path = await rawImage('corrupt.raw', 16, [[0, 16]]);
    const content = { sizeBytes: 16 * MiB, chunkSize: 4 * MiB, chunks: [] as string[] };
    const { createHash } = await import('node:crypto');
    const bytes = await readFile(path);
    for (let i = 0; i < 4; i++) content.chunks.push(createHash('sha256').update(bytes.subarray(i * 4 * MiB, (i + 1) * 4 * MiB)).digest('hex'));
    const vdisk = await fx.vdisk(storeId, { name: 'corrupt', sizeBytes: 16 * MiB });
    const status = expectStatus(await farm.api('POST', `/v1/vdisks/${vdisk.id}/uploads`, { body: content }), 200);
    expect(status.missing).toHaveLength(4);
    for (const [i, h] of content.chunks.entries()) {
      const body = i === 2 ? randomBytes(4 * MiB) : bytes.subarray(i * 4 * MiB, (i + 1) * 4 * MiB);
      await farm.s3.send(new PutObjectCommand({ Bucket: farm.bucket, Key: chunkKey(h), Body: body }));
    }
    const commit = await farm.api('POST', `/v1/vdisks/${vdisk.id}/uploads/${status.uploadId}/commit`, { body: {} });
    expectError(commit, 409, 'upload_incomplete');
    expect(commit.body.error.message).toContain('1 corrupt');
    expect(expectStatus(await farm.api('GET', `/v1/vdisks/${vdisk.id}/versions`), 200).items).toEqual([]);
    const healed = await push('corrupt', [path]);
    expect(healed).toMatchObject({ versionCreated: true, uploadedChunks: 1 });
    expect((await readBack(vdisk.id, 0)).data.equals(bytes)).toBe(true);
  });

  it('detects a tampered manifest and a tampered chunk', async () => {
    const v = expectStatus(await farm.api('GET', `/v1/vdisks/${first.vdiskId}/versions/0`), 200);
    const signed = JSON.parse((await readFile(join(dir, 'base.raw'))).length ? JSON.stringify(expectStatus(await farm.api('GET', `/v1/vdisks/${first.vdiskId}/versions/0/manifest`), 200)) : '');
    const keys = expectStatus(await farm.api('GET', '/v1/signing-keys'), 200).keys;
    const payload = JSON.parse(Buffer.from(signed.payload, 'base64').toString());
    payload.chunks[0] = payload.chunks[2];
    const forged = { ...signed, payload: Buffer.from(JSON.stringify(payload)).toString('base64') };
    expect(() => verifyManifest(forged, keys)).toThrow(/signature does not match/);
    await farm.s3.send(new PutObjectCommand({ Bucket: farm.bucket, Key: v.manifest, Body: JSON.stringify(forged) }));
    // Every server-side use of the manifest checks it first: merge refuses a forged one.
    expectError(await farm.api('POST', `/v1/vdisks/${first.vdiskId}/merge`, { body: {} }), 403, 'forbidden');
    await farm.s3.send(new PutObjectCommand({ Bucket: farm.bucket, Key: v.manifest, Body: JSON.stringify(signed) }));
    const h = verifyManifest(signed, keys).chunks[0]!;
    expect(() => verifyChunk(randomBytes(1024), h, 0)).toThrow(/does not match the manifest/);
  });
});

describe('vdisk push of VHD and VHDX files', () => {
  const build = async (fmt: 'vpc' | 'vhdx', sub: string) => {
    const path = join(dir, `img-${fmt}-${sub}.${fmt === 'vpc' ? 'vhd' : 'vhdx'}`);
    qemu('qemu-img', 'create', '-q', '-f', fmt, '-o', `subformat=${sub}`, path, '64M');
    for (const [pattern, off, len] of [[0x11, '0', '1M'], [0x22, '5M', '3M'], [0x33, '33M', '700k']] as const) qemu('qemu-io', '-f', fmt, '-c', `write -P ${pattern} ${off} ${len}`, path);
    const raw = `${path}.raw`;
    qemu('qemu-img', 'convert', '-f', fmt, '-O', 'raw', path, raw);
    return { path, raw };
  };

  for (const [fmt, sub] of [['vpc', 'dynamic'], ['vpc', 'fixed'], ['vhdx', 'dynamic'], ['vhdx', 'fixed']] as const) {
    it(`stores a ${fmt === 'vpc' ? 'VHD' : 'VHDX'} ${sub} image byte-identical to qemu-img's raw conversion`, async () => {
      const { path, raw } = await build(fmt, sub);
      const r = await push(`${fmt}-${sub}`, [path]);
      const expected = await readFile(raw);
      expect(r.sizeBytes).toBe(expected.length);
      expect((await readBack(r.vdiskId, 0)).data.equals(expected)).toBe(true);
    }, 60_000);
  }
});

describe('vdisk push of a differencing chain (a PVS vDisk with its versions, base first)', () => {
  it('stores what the chain reads as: the base with each child applied in order', async () => {
    // qemu cannot create differencing disks: the base is qemu's, the child comes from the spec-following test writer.
    const base = join(dir, 'chain-base.vhd');
    qemu('qemu-img', 'create', '-q', '-f', 'vpc', '-o', 'subformat=dynamic', base, '32M');
    qemu('qemu-io', '-f', 'vpc', '-c', 'write -P 0x11 0 6M', '-c', 'write -P 0x22 20M 1M', base);
    const baseRaw = qemuRaw('vpc', base);
    const child = newLayer(baseRaw, baseRaw.length, 2 * MiB);
    applyWrite(child, { offset: 1000, length: 3 * MiB, pattern: 0x42 }, { zeroBlocks: false });
    applyWrite(child, { offset: 25 * MiB, length: 4096, pattern: 0x43 }, { zeroBlocks: false });
    const childPath = join(dir, 'chain-child.avhd');
    writeVhdDifferencing(childPath, base, child, 1);
    const r = await push('chain', [base, childPath]);
    expect((await readBack(r.vdiskId, 0)).data.equals(child.content)).toBe(true);
    await expect(push('chain', [childPath, base])).rejects.toThrow(/no parent was given before it/);
  });
});

describe('version rules with content', () => {
  it('merges without moving chunks: the new base has the content of the newest production version, older versions are merged', async () => {
    const path = await rawImage('merge.raw', 32, [[0, 32]]);
    const v0 = await push('merge', [path]);
    await overwrite(path, 0, 4 * MiB);
    const v1 = await push('merge', [path], { state: 'production' });
    const merged = expectStatus(await farm.api('POST', `/v1/vdisks/${v0.vdiskId}/merge`, { body: {} }), 201);
    expect(merged).toMatchObject({ number: 2, parent: null, state: 'production', contentHash: (v1.version as { contentHash: string }).contentHash });
    const states = expectStatus(await farm.api('GET', `/v1/vdisks/${v0.vdiskId}/versions`), 200).items.map((v: { state: string }) => v.state);
    expect(states).toEqual(['merged', 'merged', 'production']);
    expect((await readBack(v0.vdiskId, 2)).data.equals(await readFile(path))).toBe(true);
  });

  it('enforces the farm maximum of versions until a merge', async () => {
    const farmNow = expectStatus(await farm.api('GET', '/v1/farm'), 200);
    expectStatus(await farm.api('PATCH', '/v1/farm', { body: { maxVersions: 3 }, headers: { 'if-match': `"${farmNow.version}"` } }), 200);
    try {
      const path = await rawImage('max.raw', 8, [[0, 8]]);
      const base = await push('max', [path]);
      for (let i = 1; i < 3; i++) {
        await overwrite(path, 0, 4096);
        await push('max', [path], { state: 'production' });
      }
      await overwrite(path, 0, 4096);
      await expect(push('max', [path], { state: 'production' })).rejects.toThrow(/maxVersions 3/);
      expectStatus(await farm.api('POST', `/v1/vdisks/${base.vdiskId}/merge`, { body: {} }), 201);
      expect((await push('max', [path], { state: 'production' })).versionCreated).toBe(true);
    } finally {
      const f = expectStatus(await farm.api('GET', '/v1/farm'), 200);
      await farm.api('PATCH', '/v1/farm', { body: { maxVersions: 5 }, headers: { 'if-match': `"${f.version}"` } });
    }
  });

  it('refuses to delete the version that assigned targets boot, and allows it once nothing boots it', async () => {
    const path = await rawImage('booted.raw', 8, [[0, 8]]);
    const v0 = await push('booted', [path]);
    await overwrite(path, 0, 4096);
    await push('booted', [path], { state: 'test' });
    const site = await fx.site();
    const col = await fx.collection(site.id);
    const t = await fx.target(col.id, { assignments: [{ vdiskId: v0.vdiskId }], type: 'test' });
    const res = await farm.api('DELETE', `/v1/vdisks/${v0.vdiskId}/versions/1`);
    expectError(res, 409, 'in_use');
    expect(res.body.error.message).toMatch(/version 1 is the version test targets of this vDisk boot/);
    await fx.patch(`/v1/targets/${t.mac}`, { type: 'production' });
    expect((await farm.api('DELETE', `/v1/vdisks/${v0.vdiskId}/versions/1`)).status).toBe(204);
    expectError(await farm.api('DELETE', `/v1/vdisks/${v0.vdiskId}`), 409, 'in_use');
  });

  it('collects chunks no version uses, keeps the ones in use, and waits while a commit holds its lock', async () => {
    expectStatus(await farm.api('POST', '/v1/gc', { body: { graceSeconds: 0 } }), 200); // what earlier tests left behind
    const path = await rawImage('gc.raw', 8, [[0, 8]]);
    const r = await push('gc', [path]);
    const before = expectStatus(await farm.api('POST', '/v1/gc', { body: { graceSeconds: 0 } }), 200);
    expect(before.deleted).toBe(0);
    expect(await farm.repo.tryLock('commit:someupload', 'x', 60_000)).toBe(true);
    expectError(await farm.api('POST', '/v1/gc', { body: { graceSeconds: 0 } }), 409, 'in_use');
    await farm.repo.unlock('commit:someupload', 'x');
    expect((await farm.api('DELETE', `/v1/vdisks/${r.vdiskId}`)).status).toBe(204);
    const after = expectStatus(await farm.api('POST', '/v1/gc', { body: { graceSeconds: 0 } }), 200);
    expect(after.deleted).toBe(2);
    expect(after.deletedBytes).toBe(8 * MiB);
    // Chunks of other vDisks are intact: the first vDisk still reads back.
    const base = (await client.all(`/v1/vdisks?storeId=${storeId}`)).find((v) => v.name === 'base')!;
    expect((await readBack(base.id, 0)).data.equals(await readFile(join(dir, 'base.raw')))).toBe(true);
  });
});
