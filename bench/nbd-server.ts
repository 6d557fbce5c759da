/**
 * The bootfarm side of `npm run bench -- nbd`, in its own process (as nbdkit
 * is): the image file becomes a signed version in a real verified cache,
 * served read-only by the appliance's NBD server through a session and
 * `sessionExport`, the path a device-RAM target's reads take. Prints `port <n>` when ready.
 *
 *   node --import tsx bench/nbd-server.ts <image> <work dir>
 */
import { createHash, generateKeyPairSync, sign } from 'node:crypto';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import type { ChunkSource } from '../appliance/cache/chunk-source.js';
import { openVdiskCache } from '../appliance/cache/vdisk-cache.js';
import { BufferPool } from '../appliance/nbd/buffer-pool.js';
import { sessionExport } from '../appliance/nbd/exports.js';
import { startNbdServer } from '../appliance/nbd/server.js';
import { Sessions } from '../appliance/sessions.js';
import { contentHash, keyIdOf, signManifest, type Manifest } from '../model/index.js';

const [image, dir] = process.argv.slice(2);
if (!image || !dir) throw new Error('usage: nbd-server.ts <image> <work dir>');
const chunkSize = 4 * 2 ** 20;
const fh = await open(image, 'r');
const size = (await fh.stat()).size;
const readChunk = async (i: number) => {
  const b = Buffer.alloc(Math.min(chunkSize, size - i * chunkSize));
  await fh.read(b, 0, b.length, i * chunkSize);
  return b;
};
const chunks: string[] = [];
for (let i = 0; i * chunkSize < size; i++) chunks.push(createHash('sha256').update(await readChunk(i)).digest('hex'));
const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
const publicKeyPem = publicKey.export({ type: 'spki', format: 'pem' }).toString();
const key = { keyId: keyIdOf(publicKeyPem), publicKeyPem, sign: async (d: Buffer) => sign('sha256', d, { key: privateKey, dsaEncoding: 'der' }) };
const vdiskId = 'vd_benchbenchbenchb';
const manifest: Manifest = { format: 'bootfarm.manifest/1', vdiskId, version: 0, parent: null, sectorSize: 512, sizeBytes: size, chunkSize, chunks, createdAt: new Date().toISOString() };
const source: ChunkSource = { name: 'file', fetch: async (h) => (chunks.includes(h) ? readChunk(chunks.indexOf(h)) : null) };
const cache = await openVdiskCache({ dir: join(dir, 'cache'), keys: () => [key], sources: () => [source], log: () => undefined });
await cache.setNeeded([{ vdiskId, number: 0, storeId: 'st_benchbenchbenchb', contentHash: contentHash(manifest), signedManifest: await signManifest(manifest, key) }]);
await cache.sync();
await fh.close();

const sessions = new Sessions(60_000);
const pool = new BufferPool(64 * 2 ** 20);
const info = { sizeBytes: size, readOnly: true, canTrim: false, canZero: false, multiConn: true, description: 'bench image' };
const server = await startNbdServer({
  host: '127.0.0.1',
  port: 0,
  // The bench opens its idle connections from one address.
  maxConnectionsPerClient: 1024,
  log: () => undefined,
  exports: {
    list: () => [{ name: 'bench', description: 'bench image' }],
    describe: async () => info,
    open: async (_name, client) => {
      const s = sessions.touch(client.address, vdiskId, 0, 'nbd', () => cache.open(vdiskId, 0));
      sessions.hold(s);
      return sessionExport(info, s, sessions, pool);
    },
  },
});
console.log(`port ${server.port}`);
process.on('SIGTERM', () => {
  void server.close().then(() => process.exit(0));
});
