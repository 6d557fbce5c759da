/**
 * Site HA between in-process appliances on loopback (no floating addresses
 * here; ha-failover.test.ts has real machines): peers hear each other, boot
 * decisions weigh each other's load and recent decisions, a peer that leaves
 * is down at once, and a rebalance moves NBD clients one at a time.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ApplianceHandle } from '../../appliance/daemon.js';
import { macOf } from '../support/fixtures.js';
import { RawConnection } from './support/nbd-client.js';
import { testSite, until, type TestSite } from './support/site.js';

const ADDR = { a: '127.0.0.2', b: '127.0.0.3' };
const MACS = Array.from({ length: 12 }, (_, i) => macOf(0xb100 + i));

describe('site HA on loopback', () => {
  let t: TestSite;
  let a: ApplianceHandle;
  let b: ApplianceHandle;
  const dirs: Record<string, string> = {};

  beforeAll(async () => {
    t = await testSite();
    for (const mac of MACS) await t.fx.target(t.collectionId, { mac, assignments: [{ vdiskId: t.vdiskId }] });
    await t.fx.patch(`/v1/sites/${t.siteId}`, { rebalance: { enabled: true, triggerPercent: 25, intervalSeconds: 3600, maxMovesPerCheck: 3, spacingSeconds: 0.3 } });
    for (const [k, addr] of Object.entries(ADDR)) dirs[k] = (await t.enrol(`peer-${k}`, { address: addr, port: 0 })).dataDir;
    a = await t.run(dirs.a!);
    b = await t.run(dirs.b!);
    await Promise.all([a.synced(), b.synced()]);
    await until('peers hear each other', () => a.ha!.status().peers[0]?.live && b.ha!.status().peers[0]?.live, 15_000);
  }, 120_000);

  afterAll(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
    await t?.api.close();
  });

  const script = async (h: ApplianceHandle, mac: string) => (await fetch(`${h.url}/boot/${mac.replace(/:/g, '-')}.ipxe`)).text();
  const chosen = (text: string) => /sanboot [^\n]*?http:\/\/([\d.]+):/.exec(text)?.[1];

  it('knows what its peer holds and serves, and spreads targets that ask either appliance', async () => {
    const bId = () => b.snapshot()!.appliances.find((x) => x.managementAddress === ADDR.b)!.id;
    const st = a.ha!.state(bId());
    expect(st.up).toBe(true);
    const number = a.snapshot()!.versions.find((v) => v.vdiskId === t.vdiskId)!.number;
    await until('a hears that b holds the version', () => a.ha!.state(st === null ? '' : bId()).holds?.(t.vdiskId, number) === 'verified', 5_000);
    const picks: string[] = [];
    for (const [i, mac] of MACS.slice(0, 8).entries()) picks.push(chosen(await script(i % 2 ? b : a, mac))!);
    // Four each: every decision counts the ones made a moment ago on either appliance.
    expect(picks.filter((p) => p === ADDR.a)).toHaveLength(4);
    expect(picks.filter((p) => p === ADDR.b)).toHaveLength(4);
    // Asked again, through the other appliance, a target gets the same answer.
    for (const [i, mac] of MACS.slice(0, 8).entries()) expect(chosen(await script(i % 2 ? a : b, mac))).toBe(picks[i]);
  });

  it('moves NBD clients off an overloaded appliance one at a time, never more than the cap per check', async () => {
    // Ten targets read from a over NBD (read-only exports, as device-RAM write caches give).
    const names = [];
    for (const mac of MACS.slice(0, 10)) names.push(/set bootfarm-nbd-export (\S+)/.exec(await script(a, mac))![1]!);
    const conns = (await Promise.all(names.map((n) => RawConnection.go(a.nbd!.port, n, ADDR.a)))).map((g) => g.c);
    await until('a reports ten sessions', () => a.sessions.total() >= 10, 10_000);
    const closedAt: number[] = [];
    conns.forEach((c) => c.socket.on('close', () => closedAt.push(Date.now())));
    await until('b hears a\'s load', () => b.ha!.status().peers[0]!.sessions >= 10, 10_000);
    const moved = await a.ha!.rebalance();
    // Share 5 each, trigger 25 %: 10 is over 6.25, but at most 3 move per check, one every 0.3 s.
    expect(moved).toBe(3);
    await until('three connections closed', () => closedAt.length === 3, 5_000);
    closedAt.sort();
    for (let i = 1; i < closedAt.length; i++) expect(closedAt[i]! - closedAt[i - 1]!).toBeGreaterThanOrEqual(250);
    const gone = conns.map((c, i) => (c.closed ? i : -1)).filter((i) => i >= 0);
    expect(gone).toHaveLength(3);
    // A moved target is refused here with the reason, and served by b.
    const refused = await RawConnection.go(a.nbd!.port, names[gone[0]!]!, ADDR.a).then(
      () => null,
      (e: Error) => e.message,
    );
    expect(refused).toContain('moved to peer-b by rebalance');
    const there = await RawConnection.go(b.nbd!.port, names[gone[0]!]!, ADDR.b);
    const r = await there.c.readAt(0, 4096);
    expect(r.error).toBe(0);
    expect(r.data.equals(t.image.subarray(0, 4096))).toBe(true);
    there.c.close();
    for (const c of conns) c.close();
  });

  it('sees a peer that stops as down at once, and weighs only live appliances', async () => {
    const bId = b.snapshot()!.appliances.find((x) => x.managementAddress === ADDR.b)!.id;
    await b.stop();
    await until('a sees b gone', () => a.ha!.status().peers[0]!.live === false, 1_000);
    expect(a.ha!.state(bId).up).toBe(false);
    expect(chosen(await script(a, MACS[11]!))).toBe(ADDR.a);
    b = await t.run(dirs.b!);
    await until('b back', () => a.ha!.status().peers[0]!.live, 15_000);
  });

  it("refuses a writable export reached on a peer's adopted floating address: that write cache was on the peer", async () => {
    // b floats 127.0.0.9; c stands for the appliance that adopted it (its NBD answers on .9).
    const bId = b.snapshot()!.appliances.find((x) => x.managementAddress === ADDR.b)!.id;
    await t.fx.patch(`/v1/appliances/${bId}`, { floatingAddress: '127.0.0.9' });
    await t.fx.patch(`/v1/vdisks/${t.vdiskId}`, { writeCacheType: 'appliance-temporary' });
    const c = await t.run((await t.enrol('peer-c', { address: '127.0.0.4', port: 0 })).dataDir, { nbd: { host: '127.0.0.9', port: 0 } });
    try {
      await until('snapshots carry the change', () => [a, c].every((h) => h.snapshot()?.vdisks.find((v) => v.id === t.vdiskId)?.writeCacheType === 'appliance-temporary' && h.snapshot()?.appliances.some((x) => x.floatingAddress === '127.0.0.9')), 15_000);
      const text = await script(a, MACS[11]!);
      expect(text).toContain('bootfarm-write-cache appliance-temporary');
      const name = /set bootfarm-nbd-export (\S+)/.exec(text)![1]!;
      const refused = await RawConnection.go(c.nbd!.port, name, '127.0.0.9').then(
        () => 'opened',
        (e: Error) => e.message,
      );
      expect(refused).toContain('was on appliance peer-b, which is down');
      // On its own address the same appliance is not refused for that reason.
      expect(await RawConnection.go(a.nbd!.port, name, ADDR.a).then((g) => (g.c.close(), 'opened'), (e: Error) => e.message)).not.toContain('which is down');
    } finally {
      await c.stop();
    }
  });
});
