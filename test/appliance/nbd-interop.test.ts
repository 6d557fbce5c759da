/**
 * The appliance's NBD service with real clients (libnbd's nbdinfo and
 * nbdcopy, QEMU's qemu-img and qemu-io) against an in-process appliance and
 * the real control plane: export names from the boot script, every write
 * cache mode, the size limit, one writer for a private image, refusals.
 */
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ApplianceHandle } from '../../appliance/daemon.js';
import { newBootId, signExportName, verifyExportName } from '../../appliance/nbd/export-name.js';
import { macOf } from '../support/fixtures.js';
import { RawConnection } from './support/nbd-client.js';
import { testSite, until, type LogLine, type TestSite } from './support/site.js';

const run = promisify(execFile);
const MiB = 2 ** 20;
const tools = ['nbdinfo', 'nbdcopy', 'qemu-img', 'qemu-io'];
const missing = (await Promise.all(tools.map((t) => run('sh', ['-c', `command -v ${t}`]).then(() => null, () => t)))).filter(Boolean);

let t: TestSite;
let h: ApplianceHandle;
const logs: LogLine[] = [];
let MAC = '';
const OTHER = macOf(0xd001);

beforeAll(async () => {
  if (missing.length) return;
  t = await testSite({ imageMiB: 8 });
  MAC = (await t.fx.listAll(`/v1/targets?siteId=${t.siteId}`)).items[0].mac;
  await t.fx.target(t.collectionId, { mac: OTHER, assignments: [{ vdiskId: t.vdiskId }] });
  const app = await t.enrol('nbd-app');
  h = await t.run(app.dataDir, { logs });
  await until('synced', () => h.cache.inventory()[0]?.state === 'verified', 30_000);
}, 120_000);

afterAll(async () => {
  await h?.stop();
});

/** What a target's boot script hands its OS: the export name and where to reach it. */
async function boot(mac: string): Promise<{ exportName: string; server: string; mode: string; uri: string }> {
  const text = await (await fetch(`${h.url}/boot/${mac.replace(/:/g, '-')}.ipxe`)).text();
  const v = (k: string) => new RegExp(`^set ${k} (\\S+)$`, 'm').exec(text)?.[1];
  const exportName = v('bootfarm-nbd-export');
  const server = v('bootfarm-nbd-server');
  if (!exportName || !server) throw new Error(`no NBD export in the boot script:\n${text}`);
  return { exportName, server, mode: v('bootfarm-write-cache')!, uri: `nbd://${server}/${exportName}` };
}

async function setMode(patch: Record<string, unknown>, check: (v: { writeCacheType: string; accessMode: string }) => boolean) {
  await t.fx.patch(`/v1/vdisks/${t.vdiskId}`, patch);
  await until('snapshot with the new vDisk settings', () => check(h.snapshot()!.vdisks.find((v) => v.id === t.vdiskId)!), 20_000);
}

const io = async (uri: string, ...cmds: string[]) => {
  const r = await run('qemu-io', ['-f', 'raw', ...cmds.flatMap((c) => ['-c', c]), uri]).catch((e: { stdout: string; stderr: string }) => ({ stdout: e.stdout, stderr: e.stderr }));
  return `${r.stdout}${r.stderr}`;
};

describe.skipIf(missing.length > 0)('NBD with real clients', () => {
  it('device RAM (read-only): nbdinfo sees the export, nbdcopy and qemu-img read the version byte for byte, writes are refused', async () => {
    const b = await boot(MAC);
    expect(b.mode).toBe('read-only');
    expect(b.server).toBe(`127.0.0.1:${h.nbd!.port}`);
    const info = (await run('nbdinfo', ['--json', b.uri])).stdout;
    const e = JSON.parse(info).exports[0];
    expect(e['export-size']).toBe(t.image.length);
    expect(e.is_read_only).toBe(true);
    expect(e.can_multi_conn).toBe(true);
    expect(e.block_size_preferred).toBe(4096);
    // The target (this address) sees the export its boot script named, and nothing else.
    const list = (await run('nbdinfo', ['--list', '--json', `nbd://${b.server}`])).stdout;
    expect(JSON.parse(list).exports.map((x: { 'export-name': string }) => x['export-name'])).toEqual([b.exportName]);
    await run('nbdcopy', [b.uri, join(t.dir, 'copy.raw')]);
    expect((await readFile(join(t.dir, 'copy.raw'))).equals(t.image)).toBe(true);
    await run('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', b.uri, join(t.dir, 'convert.raw')]);
    expect((await readFile(join(t.dir, 'convert.raw'))).equals(t.image)).toBe(true);
    expect(await io(b.uri, 'write -P 0x5a 0 4k')).toMatch(/read-only|Permission denied|not permitted/i);
    // The session counts as this appliance's load for the vDisk.
    expect(h.sessions.list().some((s) => s.protocol === 'nbd' && s.client === MAC)).toBe(true);

    // The control plane learns it from the appliance: the OS attached its disk (the boot is over, and how long it took), the
    // sessions per vDisk and the bytes sent in the status, and a sample for the console's chart of the last hour.
    const target = await until('the last boot reaches the cloud', async () => {
      const r = await t.farm.api('GET', `/v1/targets/${MAC}`);
      return r.body.lastBoot?.completedAt ? r.body : null;
    }, 20_000);
    const app = h.snapshot()!.appliances.find((a) => a.name === 'nbd-app')!;
    expect(target.lastBoot).toMatchObject({ outcome: 'vdisk', vdiskId: t.vdiskId, applianceId: app.id, streamingApplianceId: app.id, completedOn: app.id });
    expect(target.lastBoot.durationMs).toBeGreaterThanOrEqual(0);
    expect(target.lastBoot.durationMs).toBeLessThan(30_000);
    expect(Date.parse(target.lastBoot.completedAt)).toBeGreaterThanOrEqual(Date.parse(target.lastBoot.at));
    const status = await until('a status with the NBD session', async () => {
      const r = await t.farm.api('GET', `/v1/appliances/${app.id}`);
      return (r.body.status?.sessionsByVdisk?.[t.vdiskId] ?? 0) >= 1 && r.body.status.bytesServed >= 2 * t.image.length ? r.body.status : null;
    }, 20_000);
    expect(status.sessions).toBeGreaterThanOrEqual(1);
    const history = (await t.farm.api('GET', `/v1/appliances/${app.id}/history`)).body.samples;
    expect(history.at(-1)).toMatchObject({ startedAt: status.startedAt });
    expect(history.at(-1).sessions).toBeGreaterThanOrEqual(1);
  });

  it('refuses names it did not sign, names edited to another target, and names of another site', async () => {
    const b = await boot(MAC);
    const claim = verifyExportName(b.exportName, h.snapshot()!.peerSecret)!;
    const forged = b.exportName.replace(MAC.replace(/:/g, ''), OTHER.replace(/:/g, ''));
    const foreign = signExportName({ ...claim, bootId: newBootId(Date.now(), Buffer.alloc(4)) }, 'another site secret of at least 32 characters');
    for (const name of [forged, foreign, 'bench', '', `${b.exportName}x`]) {
      const r = await run('nbdinfo', [`nbd://${b.server}/${name}`]).catch((e: { stderr: string }) => ({ stdout: '', stderr: e.stderr }));
      expect(r.stderr, name).toMatch(/server has no export|No such file|error/i);
    }
    expect(logs.filter((l) => l.msg === 'NBD export refused').length).toBeGreaterThanOrEqual(5);
  });

  it('appliance temporary: writes land in an overlay a second connection sees; a new boot starts from the version again', async () => {
    await setMode({ writeCacheType: 'appliance-temporary' }, (v) => v.writeCacheType === 'appliance-temporary');
    const b1 = await boot(MAC);
    expect(b1.mode).toBe('appliance-temporary');
    expect(await io(b1.uri, 'write -P 0xa5 1M 256k', 'write -P 0x3c 3000 100', 'flush')).toMatch(/wrote 262144\/262144[\s\S]*wrote 100\/100/);
    // Another connection (another qemu-io process) reads what the first wrote, and the base around it.
    const r = await io(b1.uri, 'read -P 0xa5 1M 256k', 'read -P 0x3c 3000 100');
    expect(r).not.toMatch(/Pattern verification failed/);
    const copy = join(t.dir, 'temp.raw');
    await run('nbdcopy', [b1.uri, copy]);
    const got = await readFile(copy);
    const want = Buffer.from(t.image);
    want.fill(0xa5, MiB, MiB + 256 * 1024);
    want.fill(0x3c, 3000, 3100);
    expect(got.equals(want)).toBe(true);
    expect(h.writeCaches.usage().find((u) => u.mac === MAC)).toBeUndefined(); // closed with its last connection

    // The name alone does not let another machine write into this target's disk.
    await expect(RawConnection.go(h.nbd!.port, b1.exportName, '127.0.0.1', '127.0.0.2')).rejects.toThrow(/writable from 127\.0\.0\.1 only/);

    const b2 = await boot(MAC);
    expect(b2.exportName).not.toBe(b1.exportName);
    await run('nbdcopy', [b2.uri, copy]);
    expect((await readFile(copy)).equals(t.image)).toBe(true);
    // The old boot's name is refused now.
    const old = await run('nbdinfo', [b1.uri]).catch((e: { stderr: string }) => e);
    expect((old as { stderr?: string }).stderr ?? '').toMatch(/error|refused|policy|not permitted/i);
  });

  it('appliance persistent: kept across boots until an administrator resets it; a full cache gives ENOSPC to that target only', async () => {
    await setMode({ writeCacheType: 'appliance-persistent' }, (v) => v.writeCacheType === 'appliance-persistent');
    const b1 = await boot(MAC);
    expect(b1.mode).toBe('appliance-persistent');
    await io(b1.uri, 'write -P 0x77 2M 64k', 'flush');
    const b2 = await boot(MAC);
    expect(await io(b2.uri, 'read -P 0x77 2M 64k')).not.toMatch(/verification failed|failed/);
    const reset = await t.farm.api('POST', `/v1/targets/${MAC}/write-cache/reset`);
    expect(reset.status).toBe(200);
    await until('snapshot with the reset', () => h.snapshot()!.targets.find((x) => x.mac === MAC)!.writeCacheResetAt, 20_000);
    // A reconnect of the running boot keeps its writes; the next boot starts empty.
    expect(await io(b2.uri, 'read -P 0x77 2M 64k')).not.toMatch(/failed/);
    const b3 = await boot(MAC);
    expect(await io(b3.uri, 'read -P 0 2M 64k')).toMatch(/verification failed/); // the image's own bytes are back (random, not 0x77 or 0)
    const copy = join(t.dir, 'persist.raw');
    await run('nbdcopy', [b3.uri, copy]);
    expect((await readFile(copy)).equals(t.image)).toBe(true);

    // Size limit: 1 MiB for the other target; a 2 MiB write fails with ENOSPC, this target still writes.
    await t.fx.patch(`/v1/targets/${OTHER}`, { writeCacheSizeMb: 1 });
    await until('snapshot with the limit', () => h.snapshot()!.targets.find((x) => x.mac === OTHER)!.writeCacheSizeMb === 1, 20_000);
    const o = await boot(OTHER);
    expect(await io(o.uri, 'write -P 0x11 0 512k')).toMatch(/wrote 524288/);
    expect(await io(o.uri, 'write -P 0x11 1M 2M')).toMatch(/No space left on device/);
    expect(await io(b3.uri, 'write -P 0x22 0 2M')).toMatch(/wrote 2097152/);
  });

  it('private image: one target writes at a time; the next one sees its writes', async () => {
    await setMode({ accessMode: 'private' }, (v) => v.accessMode === 'private');
    const a = await boot(MAC);
    const b = await boot(OTHER);
    expect(a.mode).toBe('image');
    const held = await RawConnection.go(h.nbd!.port, a.exportName);
    const refused = await run('nbdinfo', [b.uri]).catch((e: { stderr: string }) => e);
    expect((refused as { stderr?: string }).stderr ?? '').toMatch(/error/i);
    expect(logs.some((l) => l.msg === 'NBD export refused' && String(l.reason).includes('one writer at a time'))).toBe(true);
    held.c.request(1, 1n, 5 * MiB, 4096, Buffer.alloc(4096, 0xee));
    expect((await held.c.reply()).error).toBe(0);
    held.c.request(3, 2n, 0, 0);
    expect((await held.c.reply()).error).toBe(0);
    held.c.close();
    await until('writer gone', () => !h.writeCaches.usage().some((u) => u.mode === 'image'), 5000);
    expect(await io(b.uri, 'read -P 0xee 5M 4k')).not.toMatch(/failed/);
  });

  it('drops the write caches of a target the farm deletes (not while it is connected)', async () => {
    const dir = join(t.dir, 'nbd-app', 'write-cache', 'persistent', `${OTHER.replace(/:/g, '')}.${t.vdiskId}`);
    const { existsSync } = await import('node:fs');
    expect(existsSync(dir)).toBe(true);
    const etag = (await t.farm.api('GET', `/v1/targets/${OTHER}`)).headers.get('etag')!;
    expect((await t.farm.api('DELETE', `/v1/targets/${OTHER}`, { headers: { 'if-match': etag } })).status).toBe(204);
    await until('cache dropped', () => !existsSync(dir), 20_000);
    expect(logs.some((l) => l.msg.startsWith('write cache dropped'))).toBe(true);
    // The other target's caches stay.
    expect(existsSync(join(t.dir, 'nbd-app', 'write-cache', 'persistent', `${MAC.replace(/:/g, '')}.${t.vdiskId}`))).toBe(true);
  });
});
