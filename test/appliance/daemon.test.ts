/**
 * The appliance against the real local control plane (DynamoDB Local, s3rver,
 * the API over HTTP): enrol, pull the signed snapshot, cache the site's
 * vDisk, keep serving with the cloud gone, refuse tampered caches, deliver
 * the outbox after an outage, fetch chunks from a peer first.
 */
import { createHash } from 'node:crypto';
import { readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ControlClient, Refused } from '../../appliance/control-client.js';
import { install, systemdUnit } from '../../appliance/install.js';
import type { ApplianceHandle } from '../../appliance/daemon.js';
import { verifySnapshot } from '../../model/index.js';
import { expectStatus } from '../support/fixtures.js';
import { freePort, testSite, until, type LogLine, type TestSite } from './support/site.js';

let t: TestSite;
let first: { dataDir: string; config: Awaited<ReturnType<TestSite['enrol']>>['config']; credential: string };
const running: ApplianceHandle[] = [];

beforeAll(async () => {
  t = await testSite();
  first = await t.enrol('app-one');
});

afterAll(async () => {
  await Promise.all(running.map((h) => h.stop().catch(() => undefined)));
  await t?.api.close();
});

async function run(dataDir: string, logs?: LogLine[]) {
  const h = await t.run(dataDir, { logs });
  running.push(h);
  return h;
}

async function stop(h: ApplianceHandle) {
  await h.stop();
  running.splice(running.indexOf(h), 1);
}

async function readAll(h: ApplianceHandle): Promise<Buffer> {
  const v = h.cache.inventory()[0]!;
  const r = h.cache.open(v.vdiskId, v.number);
  try {
    return await r.read(0, r.sizeBytes);
  } finally {
    r.close();
  }
}

describe('enrolment', () => {
  it('stores the credential 0600 and a config that names the site, the appliance and the farm key', async () => {
    expect((await stat(join(first.dataDir, 'credential'))).mode & 0o777).toBe(0o600);
    expect(first.config.siteId).toBe(t.siteId);
    const keys = expectStatus(await t.farm.api('GET', '/v1/signing-keys'), 200);
    expect(first.config.signingKeys.map((k) => k.keyId)).toEqual((keys.items ?? keys.keys ?? keys).map((k: { keyId: string }) => k.keyId));
    const app = expectStatus(await t.farm.api('GET', `/v1/appliances/${first.config.applianceId}`), 200);
    expect(app).toMatchObject({ name: 'app-one', siteId: t.siteId, managementAddress: '127.0.0.1' });
  });

  it('writes a systemd unit that restarts on failure and runs the daemon on the data dir', async () => {
    const tok = expectStatus(await t.farm.api('POST', '/v1/tokens', { body: { name: 'enrol-unit', role: 'appliance-enrol', siteId: t.siteId } }), 201);
    const unitDir = join(t.dir, 'systemd');
    const r = await install({ apiUrl: t.api.url, token: tok.token, dataDir: join(t.dir, 'unit-app'), name: 'unit-app', managementAddress: '127.0.0.30', bootstrapDir: '/usr/lib/ipxe', minFreeBytes: 0, systemd: true, systemdDir: unitDir, startService: false, cliPath: '/opt/bootfarm/bin/bootfarm.js', nodePath: '/usr/bin/node', prerequisites: 'warn' });
    const unit = await readFile(r.unitPath!, 'utf8');
    expect(unit).toBe(systemdUnit({ nodePath: '/usr/bin/node', cliPath: '/opt/bootfarm/bin/bootfarm.js', dataDir: join(t.dir, 'unit-app') }));
    expect(unit).toMatch(/^Restart=on-failure$/m);
    expect(unit).toContain(`ExecStart=/usr/bin/node /opt/bootfarm/bin/bootfarm.js appliance run --data-dir ${join(t.dir, 'unit-app')}`);
  });

  it('refuses to enrol twice into one data dir, and refuses a spent token', async () => {
    const tok = expectStatus(await t.farm.api('POST', '/v1/tokens', { body: { name: 'enrol-twice', role: 'appliance-enrol', siteId: t.siteId } }), 201);
    const base = { apiUrl: t.api.url, token: tok.token, managementAddress: '127.0.0.31', bootstrapDir: '/usr/lib/ipxe', minFreeBytes: 0, systemd: false, cliPath: '', prerequisites: 'warn' as const };
    await expect(install({ ...base, dataDir: first.dataDir, name: 'again' })).rejects.toThrow(/already holds an enrolled appliance \(app-one/);
    await install({ ...base, dataDir: join(t.dir, 'once'), name: 'once' });
    await expect(install({ ...base, dataDir: join(t.dir, 'twice'), name: 'twice' })).rejects.toThrow(/enrolment refused.*(unknown, revoked or expired|already used)/);
  });

  it('reports missing prerequisites by name', async () => {
    await expect(install({ apiUrl: t.api.url, token: 'x', dataDir: join(t.dir, 'pre'), bootstrapDir: join(t.dir, 'no-ipxe'), minFreeBytes: 2 ** 60, systemd: false, cliPath: '' })).rejects.toThrow(
      /install the Debian package ipxe[\s\S]*--min-free/,
    );
  });
});

describe('snapshot and cache', () => {
  it('pulls the signed snapshot, syncs the vDisk and reads it back byte for byte', async () => {
    const logs: LogLine[] = [];
    const h = await run(first.dataDir, logs);
    await until('first snapshot', () => h.snapshot());
    await until('sync', () => h.cache.inventory().length === 1 && h.cache.inventory()[0]!.state === 'verified');
    expect((await readAll(h)).equals(t.image)).toBe(true);
    expect(logs.filter((l) => l.msg === 'chunk fetched')).toHaveLength(t.dataChunks);

    // The cache on disk is the signed snapshot, 0600.
    const file = join(first.dataDir, 'snapshot.json');
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    expect(verifySnapshot(JSON.parse(await readFile(file, 'utf8')).signed, first.config.signingKeys).siteId).toBe(t.siteId);

    // Heartbeats carry the inventory to the control plane: the replication matrix sees it.
    const rep = await until('inventory reported', async () => {
      const r = expectStatus(await t.farm.api('GET', `/v1/vdisks/${t.vdiskId}/replication`), 200);
      return r.versions[0].cells[first.config.applianceId]?.state === 'up-to-date' ? r : null;
    });
    expect(rep.versions[0].waitingFor).not.toContain(first.config.applianceId);
    const app = expectStatus(await t.farm.api('GET', `/v1/appliances/${first.config.applianceId}`), 200);
    expect(app.status).toMatchObject({ snapshotRevision: h.snapshot()!.revision, cacheBytes: expect.any(Number), offlineSince: null });
    await stop(h);
  });

  it('costs one 304 per poll while nothing changes, and picks up a change', async () => {
    const logs: LogLine[] = [];
    const h = await run(first.dataDir, logs);
    const rev = h.snapshot()!.revision;
    await new Promise((r) => setTimeout(r, 2500));
    expect(logs.filter((l) => l.msg === 'snapshot updated')).toHaveLength(0);
    expect(logs.filter((l) => l.msg === 'chunk fetched')).toHaveLength(0);
    await t.fx.patch(`/v1/sites/${t.siteId}`, { description: 'changed' });
    await until('new snapshot', () => (h.snapshot()!.revision > rev ? true : null));
    expect(h.snapshot()!.site.description).toBe('changed');
    await stop(h);
  });

  it('keeps serving from the cache when restarted with the control plane gone, and says since when it is offline', async () => {
    await t.stopApi();
    try {
      const logs: LogLine[] = [];
      const h = await run(first.dataDir, logs);
      // At once: the cached snapshot and the verified cache, no cloud needed.
      expect(h.snapshot()?.siteId).toBe(t.siteId);
      expect(h.cache.inventory()[0]?.state).toBe('verified');
      expect((await readAll(h)).equals(t.image)).toBe(true);
      const health = await until('offline noticed', async () => {
        const r = await fetch(`${h.url}/healthz`);
        const body = (await r.json()) as { status: string; controlPlane: { offlineSince: string | null }; snapshot: { source: string } };
        return r.status === 200 && body.controlPlane.offlineSince ? body : null;
      });
      expect(health).toMatchObject({ status: 'degraded', snapshot: { source: 'cache' } });
      await new Promise((r) => setTimeout(r, 1100));
      const metrics = await (await fetch(`${h.url}/metrics`)).text();
      expect(metrics).toMatch(/^bootfarm_control_plane_reachable 0$/m);
      expect(Number(/^bootfarm_offline_seconds (\d+)$/m.exec(metrics)![1])).toBeGreaterThanOrEqual(1);
      expect(logs.some((l) => l.level === 'warn' && l.msg === 'control plane unreachable: serving from the cached snapshot')).toBe(true);
      await stop(h);
    } finally {
      await t.startApi();
    }
  });

  it('refuses a tampered or truncated cached snapshot with a clear log line and never uses it', async () => {
    const file = join(first.dataDir, 'snapshot.json');
    const good = await readFile(file, 'utf8');
    const parsed = JSON.parse(good);
    const payload = Buffer.from(parsed.signed.payload, 'base64').toString('utf8').replace(`"siteId":"${t.siteId}"`, `"siteId":"${t.otherSiteId}"`);
    const tampered = JSON.stringify({ ...parsed, signed: { ...parsed.signed, payload: Buffer.from(payload).toString('base64') } });
    await t.stopApi();
    try {
      for (const bad of [tampered, good.slice(0, good.length - 40)]) {
        await writeFile(file, bad);
        const logs: LogLine[] = [];
        const h = await run(first.dataDir, logs);
        expect(h.snapshot()).toBeNull();
        const refused = logs.find((l) => l.msg.startsWith('cached snapshot refused'));
        expect(refused?.level).toBe('error');
        const r = await fetch(`${h.url}/healthz`);
        expect(r.status).toBe(503);
        await stop(h);
      }
    } finally {
      await t.startApi();
    }
    // With the control plane back, a good snapshot replaces it.
    const h = await run(first.dataDir);
    await until('snapshot from the control plane', () => h.snapshot());
    expect(h.snapshot()!.siteId).toBe(t.siteId);
    await stop(h);
  });

  it('refuses a tampered manifest in the cache and fetches the version again', async () => {
    const dir = join(first.dataDir, 'cache', 'manifests', t.vdiskId);
    const [name] = await readdir(dir);
    const path = join(dir, name!);
    const m = JSON.parse(await readFile(path, 'utf8'));
    m.signature = Buffer.from(Buffer.from(m.signature, 'base64').map((b, i) => (i === 10 ? b ^ 1 : b))).toString('base64');
    await writeFile(path, JSON.stringify(m));
    const logs: LogLine[] = [];
    const h = await run(first.dataDir, logs);
    expect(logs.find((l) => l.msg.startsWith('manifest on disk failed verification'))?.level).toBe('error');
    await until('verified again', () => h.cache.inventory()[0]?.state === 'verified');
    expect((await readAll(h)).equals(t.image)).toBe(true);
    await stop(h);
  });
});

describe('outbox', () => {
  it('keeps events across restarts while the cloud is down and delivers each once when it returns', async () => {
    // Auto-add on for this site (what lets the offline-added target in).
    await t.fx.patch(`/v1/sites/${t.siteId}`, { defaultCollectionId: t.collectionId });
    await t.fx.patch('/v1/farm', { autoAdd: { enabled: true, siteId: t.siteId } });
    await t.stopApi();
    let ids: string[] = [];
    try {
      const h = await run(first.dataDir);
      const boot = await h.emit({ type: 'boot', data: { mac: '52:54:00:00:00:99', targetId: null, outcome: 'refused', vdiskId: null, version: null, streamingApplianceId: null, message: 'unknown target' } });
      const mac = '52:54:00:00:01:99';
      const add = await h.emit({ type: 'target-auto-added', data: { target: { mac, name: 'offline-0001', collectionId: t.collectionId, description: '', assignments: [], type: 'production', bootFrom: 'vdisk', writeCacheSizeMb: 0, personality: [], disabled: false } } });
      ids = [boot.id, add.id];
      await stop(h);
      // Restarted, still offline: the events are still there.
      const h2 = await run(first.dataDir);
      expect((await h2.health()).outbox.pending).toBeGreaterThanOrEqual(2);
      await stop(h2);
    } finally {
      await t.startApi();
    }
    const h = await run(first.dataDir);
    await until('outbox empty', async () => (await h.health()).outbox.pending === 0);
    const events = expectStatus(await t.farm.api('GET', `/v1/sites/${t.siteId}/events?limit=100`), 200).items as { id: string; type: string; result: { outcome: string } }[];
    for (const id of ids) expect(events.filter((e) => e.id === id)).toHaveLength(1);
    expect(events.find((e) => e.id === ids[1])!.result.outcome).toBe('created');
    expect(events.some((e) => e.type === 'notice')).toBe(true);
    expect(expectStatus(await t.farm.api('GET', '/v1/targets/52:54:00:00:01:99'), 200)).toMatchObject({ name: 'offline-0001', collectionId: t.collectionId });
    await stop(h);
  });
});

describe('scope of the appliance credential', () => {
  it("cannot read another site's snapshot or chunks, nor report as another appliance", async () => {
    const other = new ControlClient({ apiUrl: t.api.url, credential: first.credential, applianceId: first.config.applianceId, siteId: t.otherSiteId, timeoutMs: 5000 });
    await expect(other.snapshot(null)).rejects.toThrow(Refused);
    await expect(other.snapshot(null)).rejects.toMatchObject({ status: 403 });
    await expect(other.chunkUrls(t.vdiskId, 0, ['a'.repeat(64)])).rejects.toMatchObject({ status: 403 });
    const impostor = new ControlClient({ apiUrl: t.api.url, credential: first.credential, applianceId: 'app_aaaaaaaaaaaaaaaa', siteId: t.siteId, timeoutMs: 5000 });
    await expect(impostor.deliverEvents([{ id: '000000000-abcdefgh', at: new Date().toISOString(), type: 'notice', data: { level: 'info', message: 'x' } }])).rejects.toMatchObject({ status: 403 });
    const r = await fetch(`${t.api.url}/v1/targets`, { headers: { authorization: `Bearer ${first.credential}` } });
    expect(r.status).toBe(403);
  });
});

describe('peers', () => {
  it('fetches chunks from a peer appliance of the site before S3', async () => {
    const port = await freePort();
    const a = await t.enrol('peer-a', { address: '127.0.0.2', port });
    const b = await t.enrol('peer-b', { address: '127.0.0.3', port });
    const ha = await run(a.dataDir);
    await until('peer-a synced', () => ha.cache.inventory()[0]?.state === 'verified');
    expect(ha.cache.status().fetchedBySource).toMatchObject({ s3: { chunks: t.dataChunks } });
    const logs: LogLine[] = [];
    const hb = await run(b.dataDir, logs);
    await until('peer-b synced', () => hb.cache.inventory()[0]?.state === 'verified');
    const by = hb.cache.status().fetchedBySource;
    expect(by['peer:peer-a']?.chunks).toBe(t.dataChunks);
    expect(by.s3?.chunks ?? 0).toBe(0);
    expect((await readAll(hb)).equals(t.image)).toBe(true);
    // The peer endpoint wants the site's secret.
    const someHash = createHash('sha256').update(t.image.subarray(0, 64 * 1024)).digest('hex');
    expect((await fetch(`${ha.url}/peer/chunks/${someHash}`)).status).toBe(401);
    expect((await fetch(`${ha.url}/peer/chunks/${someHash}`, { headers: { authorization: `Bearer ${ha.snapshot()!.peerSecret}` } })).status).toBe(200);
    await stop(ha);
    await stop(hb);
  });
});
