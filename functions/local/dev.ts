/**
 * `bootfarm dev`: a whole farm on one machine. DynamoDB Local and s3rver keep
 * their data under the data dir, the API listens on loopback, and a demo farm
 * is seeded on first start. Ctrl-C stops everything; the next start finds the
 * same farm and the same admin token.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { serve } from '@hono/node-server';
import type { AddressInfo } from 'node:net';
import { createApp } from '../app.js';
import type { Principal } from '../../model/index.js';
import { dynamoRepo } from '../storage/clients.js';
import type { FarmRepo } from '../storage/repo.js';
import { S3Client } from '@aws-sdk/client-s3';
import { fileSigner } from '../signing.js';
import { s3BlobStore } from '../storage/blobs.js';
import { dynamoClientConfig, ensureTableAndBucket, s3ClientConfig, startLocalAws } from './local-aws.js';
import { seedDemoDisk, seedDemoFarm } from './seed.js';

export interface DevOptions {
  port: number;
  host: string;
  dataDir: string;
  seed: boolean;
  /** Called once the API listens (the CLI points its config at the farm here). */
  onReady?: (farm: { api: string; token: string }) => Promise<void>;
  log: (line: string) => void;
  /** Resolves when the farm should stop (default: SIGINT or SIGTERM). */
  until?: Promise<void>;
  /** Also run one local appliance of the first site (port; null = none). */
  appliancePort?: number | null;
}

export const DEV_PRINCIPAL: Principal = { tokenId: 'local', name: 'bootfarm dev', role: 'farm-admin', siteId: null };

export async function runDev(o: DevOptions): Promise<void> {
  if (!Number.isInteger(o.port) || o.port < 0 || o.port > 65535) throw new Error(`--port ${o.port}: must be 0-65535`);
  const dataDir = resolve(o.dataDir);
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  // The API line must be the first URL printed: local-aws lines wait until it is out.
  let held: string[] | null = [];
  const awsLog = (l: string) => (held ? held.push(`[local-aws] ${l}`) : o.log(`[local-aws] ${l}`));
  const aws = await startLocalAws({ dataDir, log: awsLog });
  let server: ReturnType<typeof serve> | undefined;
  let appliance: { stop(): Promise<void> } | null = null;
  try {
    await ensureTableAndBucket(aws);
    const repo = dynamoRepo(dynamoClientConfig(aws), aws.tableName);
    const seeded = o.seed ? await seedDemoFarm(repo, DEV_PRINCIPAL) : false;
    const token = await adminToken(repo, dataDir);
    const blobs = s3BlobStore(new S3Client(s3ClientConfig(aws)), aws.bucketName);
    const signer = await fileSigner(resolve(dataDir, 'signing-key.pem'));
    const app = createApp({ repo, blobs, signer, log: (l) => o.log(`[api] ${l}`) });
    const address = await new Promise<AddressInfo>((ok, fail) => {
      server = serve({ fetch: app.fetch, port: o.port, hostname: o.host }, (info) => ok(info));
      server.once('error', (e: NodeJS.ErrnoException) =>
        fail(e.code === 'EADDRINUSE' ? new Error(`port ${o.port} on ${o.host} is in use: pass --port <free port> (or 0 for any)`) : e),
      );
    });
    const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
    const api = `http://${host}:${address.port}`;
    o.log(`API: ${api}`);
    o.log(`Admin token: ${token}`);
    o.log(`Data: ${dataDir}${seeded ? ' (new farm: seeded a demo site, store and collection)' : ''}`);
    o.log(`OpenAPI: ${api}/v1/openapi.json`);
    o.log(`Console: ${api}/console (sign in with the admin token)`);
    held.forEach((l) => o.log(l));
    held = null;
    if (seeded) {
      // The demo disk and target, through the API like an admin's push (the appliance then syncs it).
      await seedDemoDisk(api, token, dataDir).then(
        () => o.log('Demo: vDisk "demo" and target demo-vm (52:54:00:12:34:56); boot it with npm run demo:boot'),
        (e) => o.log(`Demo: not seeded (${(e as Error).message})`),
      );
    }
    await o.onReady?.({ api, token });
    if (o.appliancePort !== null && o.appliancePort !== undefined) appliance = await startLocalAppliance(repo, api, resolve(dataDir, 'appliance'), o.appliancePort, o.log);
    o.log('Ctrl-C stops the farm.');
    await (o.until ?? untilSignal());
    o.log('stopping');
  } finally {
    await appliance?.stop();
    if (server) await new Promise<void>((ok) => server!.close(() => ok()));
    await aws.stop();
  }
}

/**
 * One appliance on loopback, enrolled into the first site the way an admin
 * would (enrolment token, install without systemd), then run in-process.
 * Its JSON log lines are prefixed with [appliance].
 */
async function startLocalAppliance(repo: FarmRepo, api: string, dir: string, port: number, log: (line: string) => void): Promise<{ stop(): Promise<void> } | null> {
  const { install } = await import('../../appliance/install.js');
  const { loadConfig, loadCredential } = await import('../../appliance/config.js');
  const { startAppliance } = await import('../../appliance/daemon.js');
  const { createLogger, logFn } = await import('../../appliance/log.js');
  const { Writable } = await import('node:stream');
  try {
    if (!existsSync(resolve(dir, 'credential'))) {
      const site = (await repo.list('site', { limit: 1 })).items[0];
      if (!site) {
        log('Appliance: none (the farm has no site yet; create one and restart)');
        return null;
      }
      const { secret } = await repo.createToken({ name: 'local-appliance-enrol', role: 'appliance-enrol', siteId: site.id, expiresAt: new Date(Date.now() + 600_000).toISOString() }, DEV_PRINCIPAL);
      await install({ apiUrl: api, token: secret, dataDir: dir, name: `local-appliance-${randomBytes(2).toString('hex')}`, managementAddress: '127.0.0.1', httpHost: '127.0.0.1', httpPort: port, bootstrapDir: '/usr/lib/ipxe', minFreeBytes: 0, systemd: false, cliPath: '', prerequisites: 'warn' });
    }
    // The port is the dev command's choice on every start (0 = any free port), not the one enrolled with.
    // No ProxyDHCP or TFTP on the developer's machine: targets reach the local appliance over HTTP (npm run demo:boot).
    const loaded = await loadConfig(dir);
    const config = { ...loaded, http: { host: '127.0.0.1', port }, boot: { proxyDhcp: { ...loaded.boot.proxyDhcp, enabled: false }, tftp: { ...loaded.boot.tftp, enabled: false } }, nbd: { enabled: true, host: '127.0.0.1', port: 10809 }, ha: { ...loaded.ha, host: '127.0.0.1' } };
    const lines = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const l of chunk.toString('utf8').split('\n')) if (l) log(`[appliance] ${l}`);
        done();
      },
    });
    const handle = await startAppliance({ config, credential: await loadCredential(dir), dataDir: dir, log: logFn(createLogger(config.logLevel, { appliance: config.name }, lines)) });
    log(`Appliance: ${config.name} (${config.applianceId}) ${handle.url}/healthz`);
    if (handle.nbd) log(`NBD: nbd://127.0.0.1:${handle.nbd.port}/<export name from the target's boot script>`);
    return handle;
  } catch (e) {
    log(`Appliance: not started (${(e as Error).message})`);
    return null;
  }
}

function untilSignal(): Promise<void> {
  return new Promise((ok) => {
    const stop = () => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      ok();
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
}

/** The local farm's admin token: kept (0600) in the data dir and reused while it is valid. */
async function adminToken(repo: FarmRepo, dataDir: string): Promise<string> {
  const file = resolve(dataDir, 'admin-token');
  const saved = await readFile(file, 'utf8').then((s) => s.trim(), () => '');
  if (saved && (await repo.authenticate(saved, new Date()))) return saved;
  const { secret } = await repo.createToken({ name: 'local-admin', role: 'farm-admin', siteId: null, expiresAt: null }, DEV_PRINCIPAL);
  await writeFile(file, `${secret}\n`, { mode: 0o600 });
  await chmod(file, 0o600);
  return secret;
}
