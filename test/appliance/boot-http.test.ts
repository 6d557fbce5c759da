/**
 * The boot service over real HTTP with the control plane stopped: boot
 * scripts from the cached snapshot (known, unknown, disabled, local-disk
 * targets, auto-add offline), and the disk itself with exact byte ranges
 * (checked with curl too), sessions counted per target and vDisk.
 */
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { request, Agent } from 'node:http';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ApplianceHandle } from '../../appliance/daemon.js';
import { expectStatus, macOf } from '../support/fixtures.js';
import { testSite, until, type LogLine, type TestSite } from './support/site.js';

const run = promisify(execFile);
let t: TestSite;
let h: ApplianceHandle;
let app: Awaited<ReturnType<TestSite['enrol']>>;
const logs: LogLine[] = [];
const MAC = { known: '', disabled: macOf(0xb001), local: macOf(0xb002), unknown: macOf(0xb003), stranger: macOf(0xb004) };

beforeAll(async () => {
  t = await testSite({ imageMiB: 2 });
  const targets = (await t.fx.listAll(`/v1/targets?siteId=${t.siteId}`)).items;
  MAC.known = targets[0].mac;
  await t.fx.target(t.collectionId, { mac: MAC.disabled, disabled: true, assignments: [{ vdiskId: t.vdiskId }] });
  await t.fx.target(t.collectionId, { mac: MAC.local, bootFrom: 'local-disk', assignments: [{ vdiskId: t.vdiskId }] });
  await t.fx.patch(`/v1/sites/${t.siteId}`, { defaultCollectionId: t.collectionId, bootstrap: { verbose: true } });
  await t.fx.patch(`/v1/collections/${t.collectionId}`, { templateTargetMac: MAC.known, autoAdd: { prefix: 'lab-', numberLength: 3, suffix: '', startNumber: 1 } });
  await t.fx.patch('/v1/farm', { autoAdd: { enabled: true, siteId: t.siteId } });
  app = await t.enrol('boot-app');
  h = await t.run(app.dataDir, { logs });
  await until('synced', () => h.cache.inventory()[0]?.state === 'verified');
  // Everything below runs with the cloud gone.
  await t.stopApi();
});

afterAll(async () => {
  await h?.stop();
});

const get = async (path: string, headers: Record<string, string> = {}) => {
  const r = await fetch(`${h.url}${path}`, { headers });
  return { status: r.status, headers: r.headers, text: await r.text() };
};
const getBytes = async (path: string, headers: Record<string, string> = {}) => {
  const r = await fetch(`${h.url}${path}`, { headers });
  return { status: r.status, headers: r.headers, body: Buffer.from(await r.arrayBuffer()) };
};
const disk = () => `/vdisks/${t.vdiskId}/0`;

describe('boot scripts', () => {
  it('sanboots a known target from this appliance, saying why in verbose mode', async () => {
    const r = await get(`/boot/${MAC.known.replace(/:/g, '-')}.ipxe?arch=i386`);
    expect(r.status).toBe(200);
    expect(r.text.startsWith('#!ipxe\n')).toBe(true);
    expect(r.text).toContain(`sanboot --no-describe --drive 0x80 ${h.url}${disk()}?mac=${MAC.known.replace(/:/g, '-')} || goto bf_retry_1`);
    expect(r.text).toMatch(/echo bootfarm: boot-app is the least busy for this vDisk/);
    // restore-connection (the default): retries every polling timeout, forever.
    expect(r.text).toContain(':bf_retry_1\necho bootfarm: cannot reach the disk: trying again in 5 s\nsleep 5\n');
  });

  it('gives the generic entry that asks again with MAC and architecture', async () => {
    const r = await get('/boot.ipxe');
    expect(r.text).toBe('#!ipxe\nchain --replace --autofree boot/${mac:hexhyp}.ipxe?arch=${buildarch}&platform=${platform} || goto bf_none\n:bf_none\necho bootfarm: no appliance of this site answered: restarting in 30 s\nsleep 30\nreboot\n');
  });

  it('refuses a disabled target with a message and a reboot, and boots a local-disk target locally', async () => {
    const dis = await get(`/boot/${MAC.disabled}.ipxe`);
    expect(dis.text).toMatch(/is disabled in the farm: ask an administrator to enable it\necho bootfarm: restarting in 60 s\nsleep 60\nreboot\n$/);
    const loc = await get(`/boot/${MAC.local}.ipxe`);
    expect(loc.text).toContain('iseq ${platform} efi && exit ||\nsanboot --no-describe --drive 0x80 || exit');
  });

  it('adds an unknown machine offline with the template settings, remembers it across a restart, and queues the events', async () => {
    const r = await get(`/boot/${MAC.unknown}.ipxe`);
    expect(r.text).toContain(`lab-001 (${MAC.unknown}): vDisk`);
    expect(r.text).toContain('sanboot');
    // A restart (still offline) keeps it: the same machine gets the same name, the next one the next name.
    await h.stop();
    h = await t.run(app.dataDir, { logs });
    const again = await get(`/boot/${MAC.unknown}.ipxe`);
    expect(again.text).toContain('lab-001');
    const second = await get(`/boot/${MAC.stranger}.ipxe`);
    expect(second.text).toContain('lab-002');
    const saved = JSON.parse(await readFile(join(app.dataDir, 'auto-added.json'), 'utf8'));
    expect(saved.targets.map((x: { name: string }) => x.name)).toEqual(['lab-001', 'lab-002']);
    const box = (await import('node:fs/promises')).readdir(join(app.dataDir, 'outbox'));
    const events = await Promise.all((await box).filter((n) => n.endsWith('.json')).map(async (n) => JSON.parse(await readFile(join(app.dataDir, 'outbox', n), 'utf8'))));
    expect(events.filter((e) => e.type === 'target-auto-added').map((e) => e.data.target.name).sort()).toEqual(['lab-001', 'lab-002']);
    expect(events.filter((e) => e.type === 'boot').length).toBeGreaterThanOrEqual(5);
  });

  it('refuses an unknown machine when auto-add does not apply, naming the command that adds it', async () => {
    // Turn auto-add off in the snapshot the appliance uses: bring the API back for a moment.
    await t.startApi();
    // The auto-added targets reach the farm through the outbox, and leave the local list once the snapshot has them.
    await until('auto-added delivered', async () => (await t.farm.api('GET', `/v1/targets/${MAC.stranger}`)).status === 200);
    expect(expectStatus(await t.farm.api('GET', `/v1/targets/${MAC.unknown}`), 200)).toMatchObject({ name: 'lab-001', assignments: [{ vdiskId: t.vdiskId }] });
    await until('local list pruned', async () => JSON.parse(await readFile(join(app.dataDir, 'auto-added.json'), 'utf8')).targets.length === 0);
    await t.fx.patch('/v1/farm', { autoAdd: { enabled: false, siteId: t.siteId } });
    const rev = h.snapshot()!.revision;
    await until('new snapshot', () => (h.snapshot()!.revision > rev ? true : null));
    await t.stopApi();
    const r = await get(`/boot/${macOf(0xb0ff)}.ipxe`);
    expect(r.text).toContain(`is not a target of site`);
    expect(r.text).toContain('auto-add is off for the farm. An administrator can add it: bootfarm target create');
    expect(r.text).toMatch(/reboot\n$/);
  }, 30_000);

  it('serves bootstrap files by name only', async () => {
    const ok = await getBytes('/bootstrap/snponly.efi');
    expect(ok.status).toBe(200);
    expect(ok.body.equals(await readFile('/usr/lib/ipxe/snponly.efi'))).toBe(true);
    for (const bad of ['/bootstrap/..%2F..%2Fetc%2Fpasswd', '/bootstrap/%2Fetc%2Fpasswd', '/bootstrap/nothing.efi']) expect((await get(bad)).status).toBe(404);
  });
});

describe('disk over HTTP', () => {
  it('answers HEAD with the capacity and GET with exactly the range asked for', async () => {
    const head = await fetch(`${h.url}${disk()}`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(Number(head.headers.get('content-length'))).toBe(t.image.length);
    expect(head.headers.get('accept-ranges')).toBe('bytes');
    for (const [a, b] of [[0, 511], [65_000, 140_000], [t.image.length - 512, t.image.length - 1]] as const) {
      const r = await getBytes(disk(), { range: `bytes=${a}-${b}` });
      expect(r.status).toBe(206);
      expect(r.headers.get('content-range')).toBe(`bytes ${a}-${b}/${t.image.length}`);
      expect(r.body.equals(t.image.subarray(a, b + 1))).toBe(true);
    }
    const suffix = await getBytes(disk(), { range: 'bytes=-100' });
    expect(suffix.body.equals(t.image.subarray(t.image.length - 100))).toBe(true);
    const whole = await getBytes(disk());
    expect(whole.status).toBe(200);
    expect(whole.body.equals(t.image)).toBe(true);
  });

  it('answers 416 for ranges outside the disk or several ranges, 404 with a reason for a version it does not hold, 405 for writes', async () => {
    for (const range of [`bytes=${t.image.length}-`, 'bytes=5-1', 'bytes=0-1,5-6', 'items=0-1']) {
      const r = await get(disk(), { range });
      expect(r.status, range).toBe(416);
      expect(r.headers.get('content-range')).toBe(`bytes */${t.image.length}`);
    }
    const missing = await get(`/vdisks/${t.vdiskId}/7`);
    expect(missing.status).toBe(404);
    expect(missing.text).toMatch(/version 7 of vDisk .* cannot be served from this appliance/);
    expect((await fetch(`${h.url}${disk()}`, { method: 'PUT', body: 'x' })).status).toBe(405);
    expect((await get('/vdisks/../../etc/passwd')).status).toBe(404);
  });

  it('serves curl byte-identical ranges on one kept-alive connection, and counts one session per target', async () => {
    const out = join(app.dataDir, 'curl.bin');
    await run('curl', ['-sf', '-r', '1000-300000', '-o', out, `${h.url}${disk()}?mac=${MAC.known.replace(/:/g, '-')}`]);
    expect((await readFile(out)).equals(t.image.subarray(1000, 300001))).toBe(true);
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const sockets = new Set<unknown>();
    for (let i = 0; i < 5; i++)
      await new Promise<void>((ok, bad) => {
        const req = request(`${h.url}${disk()}?mac=52-54-00-00-99-01`, { agent, headers: { range: `bytes=${i * 4096}-${i * 4096 + 4095}` } }, (res) => {
          sockets.add(res.socket);
          res.resume();
          res.on('end', ok);
        });
        req.on('error', bad);
        req.end();
      });
    agent.destroy();
    expect(sockets.size).toBe(1);
    expect(h.sessions.countFor(t.vdiskId)).toBeGreaterThanOrEqual(2);
    expect(h.sessions.list().some((s) => s.client === '52:54:00:00:99:01' && s.bytes === 5 * 4096)).toBe(true);
    const metrics = await (await fetch(`${h.url}/metrics`)).text();
    expect(Number(/^bootfarm_sessions.* (\d+)$/m.exec(metrics)![1])).toBeGreaterThanOrEqual(2);
  });
});
