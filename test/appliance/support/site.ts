/**
 * A site with real content for appliance tests: a farm served over HTTP, a
 * vDisk pushed from a random raw image (small chunks, some all-zero), a target
 * that boots it, and helpers to enrol appliances and run them in-process.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, readFile, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ApiClient } from '../../../cli/client.js';
import { pushImage } from '../../../cli/push.js';
import { loadConfig, loadCredential, type ApplianceConfig } from '../../../appliance/config.js';
import { startAppliance, type ApplianceHandle } from '../../../appliance/daemon.js';
import { install } from '../../../appliance/install.js';
import { testFarm, type TestFarm } from '../../support/farm.js';
import { expectStatus, fixtures, type Fixtures } from '../../support/fixtures.js';
import { serveFarm } from '../../support/serve.js';

export const CHUNK = 64 * 1024;

export interface LogLine {
  level: string;
  msg: string;
  [k: string]: unknown;
}

export interface TestSite {
  farm: TestFarm;
  fx: Fixtures;
  api: { url: string; port: number; close(): Promise<void> };
  /** Stops the API (the cloud goes away) and brings it back on the same port. */
  stopApi(): Promise<void>;
  startApi(): Promise<void>;
  dir: string;
  siteId: string;
  otherSiteId: string;
  collectionId: string;
  vdiskId: string;
  image: Buffer;
  /** Non-zero chunks of the image. */
  dataChunks: number;
  /** Enrols an appliance; its boot services (DHCP 67, TFTP 69) stay off unless `bootServices` (tests that run it in a namespace). */
  enrol(name: string, o?: { address?: string; port?: number; bootServices?: boolean }): Promise<{ dataDir: string; config: ApplianceConfig; credential: string }>;
  run(dataDir: string, o?: { logs?: LogLine[]; fast?: boolean; http?: { host: string; port: number }; bootServices?: boolean; nbd?: { host: string; port: number }; ha?: Partial<ApplianceConfig['ha']> }): Promise<ApplianceHandle>;
  /** The UDP port this site's appliances heartbeat on. */
  haPort: number;
  /** Pushes a raw image as another vDisk of the site's store (production), with vDisk settings; returns its id. */
  addVdisk(imagePath: string, o?: { name?: string; chunkSize?: number; settings?: Record<string, unknown> }): Promise<string>;
}

/** A free TCP port (for appliances several tests bind on different loopback addresses). */
export async function freePort(): Promise<number> {
  const { createServer } = await import('node:net');
  return new Promise((ok) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => ok(port));
    });
  });
}

export async function testSite(o: { imageMiB?: number; /** Push this raw image instead of random data. */ imagePath?: string } = {}): Promise<TestSite> {
  const farm = await testFarm();
  const fx = fixtures(farm);
  let api = await serveFarm(farm);
  const port = api.port;
  const dir = await mkdtemp(join(tmpdir(), 'bootfarm-appliance-'));
  const site = await fx.site();
  const other = await fx.site();
  const haPort = await freePort();
  const col = await fx.collection(site.id);
  const store = await fx.store();

  let image: Buffer;
  let dataChunks = 0;
  let path = join(dir, 'image.raw');
  if (o.imagePath) {
    path = o.imagePath;
    image = await readFile(path);
    for (let i = 0; i < image.length / CHUNK; i++) if (image.subarray(i * CHUNK, (i + 1) * CHUNK).some((b) => b !== 0)) dataChunks++;
  } else {
    // Random data with all-zero runs, so the manifest has null chunks too.
    image = Buffer.alloc((o.imageMiB ?? 4) * 2 ** 20);
    for (let i = 0; i < image.length / CHUNK; i++) {
      if (i % 5 === 3) continue;
      randomBytes(CHUNK).copy(image, i * CHUNK);
      dataChunks++;
    }
    const fh = await open(path, 'w');
    await fh.write(image, 0, image.length, 0);
    await fh.close();
  }
  const size = image.length;
  const vdisk = await fx.vdisk(store.id, { sizeBytes: size, chunkSize: CHUNK });
  await pushImage(new ApiClient(api.url, farm.adminToken), { storeId: store.id, name: vdisk.name, files: [path], state: 'production' });
  await fx.target(col.id, { assignments: [{ vdiskId: vdisk.id }] });

  const t: TestSite = {
    farm,
    fx,
    api,
    async stopApi() {
      await api.close();
    },
    async startApi() {
      api = await serveFarm(farm, { port });
      t.api = api;
    },
    dir,
    haPort,
    siteId: site.id,
    otherSiteId: other.id,
    collectionId: col.id,
    vdiskId: vdisk.id,
    image,
    dataChunks,
    async enrol(name, e = {}) {
      const tok = expectStatus(await farm.api('POST', '/v1/tokens', { body: { name: `enrol-${name}`, role: 'appliance-enrol', siteId: site.id } }), 201);
      const dataDir = join(dir, name);
      await install({
        apiUrl: api.url,
        token: tok.token,
        dataDir,
        name,
        managementAddress: e.address ?? '127.0.0.1',
        httpHost: e.address ?? '127.0.0.1',
        httpPort: e.port ?? 0,
        bootstrapDir: '/usr/lib/ipxe',
        minFreeBytes: 0,
        systemd: false,
        cliPath: '',
        prerequisites: 'warn',
      });
      if (!e.bootServices) {
        const file = join(dataDir, 'appliance.json');
        const c = JSON.parse(await readFile(file, 'utf8'));
        // NBD on an ephemeral port of the test's own address, heartbeats on the site's own port: tests run side by side, and an
        // appliance started from this file (`bootfarm appliance run`) must not take the default 7947 that `bootfarm dev` (another test) holds.
        await writeFile(
          file,
          JSON.stringify({ ...c, boot: { proxyDhcp: { enabled: false }, tftp: { enabled: false } }, nbd: { enabled: true, host: e.address ?? '127.0.0.1', port: 0 }, ha: { ...c.ha, host: e.address ?? '127.0.0.1', port: haPort } }),
        );
      }
      return { dataDir, config: await loadConfig(dataDir), credential: await loadCredential(dataDir) };
    },
    async addVdisk(imagePath, a = {}) {
      const { size } = await stat(imagePath);
      const v = await fx.vdisk(store.id, { name: a.name ?? fx.name('vdisk'), sizeBytes: size, chunkSize: a.chunkSize ?? CHUNK, ...(a.settings ?? {}) });
      await pushImage(new ApiClient(t.api.url, farm.adminToken), { storeId: store.id, name: v.name, files: [imagePath], state: 'production' });
      return v.id as string;
    },
    async run(dataDir, r = {}) {
      const config = await loadConfig(dataDir);
      // Tests do not wait for production intervals.
      if (r.fast !== false) config.intervals = { ...config.intervals, heartbeatMs: 1000, pollMs: 1000, retryMinMs: 100, retryMaxMs: 1000, requestTimeoutMs: 2000 };
      if (r.http) config.http = r.http;
      // In-process appliances on the host never take the machine's DHCP and TFTP ports.
      if (!r.bootServices) config.boot = { proxyDhcp: { ...config.boot.proxyDhcp, enabled: false }, tftp: { ...config.boot.tftp, enabled: false } };
      config.nbd = { enabled: true, ...(r.nbd ?? { host: config.http.host === '0.0.0.0' ? '127.0.0.1' : config.http.host, port: 0 }) };
      // Heartbeats on the appliance's own address and the site's port: peers of one test find each other, tests side by side do not.
      config.ha = { ...config.ha, host: config.http.host === '0.0.0.0' ? '127.0.0.1' : config.http.host, port: haPort, ...(r.ha ?? {}) };
      return startAppliance({ config, credential: await loadCredential(dataDir), dataDir, log: (level, msg, fields) => r.logs?.push({ level, msg, ...fields }) });
    },
  };
  return t;
}

export async function until<T>(what: string, probe: () => Promise<T | null | undefined | false> | T | null | undefined | false, timeoutMs = 20_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export const readJson = async (path: string) => JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>;
