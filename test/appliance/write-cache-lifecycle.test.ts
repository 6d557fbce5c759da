/**
 * Which overlay a connection gets (lifecycle.ts): boots, supersede, the
 * first-use window, one writer per image, sweeping; on real overlays in a
 * temporary folder, with an injected clock.
 */
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { newBootId } from '../../appliance/nbd/export-name.js';
import { FIRST_USE_MS, WriteCaches, type LeaseRequest } from '../../appliance/write-cache/lifecycle.js';

const SIZE = 1 << 20;
const base = Buffer.alloc(SIZE, 0x42);
const T0 = 1_800_000_000_000;
const MAC = '52:54:00:00:00:01';
const VD = 'vd_abcdefghijklmnop';

async function caches(o: { now?: () => number; supersede?: () => void; waitMs?: number } = {}) {
  const dir = await mkdtemp(join(tmpdir(), 'bootfarm-wcl-'));
  const logs: string[] = [];
  let opened = 0;
  let closed = 0;
  const wc = await WriteCaches.open({ dir, log: (_l, m) => logs.push(m), supersede: o.supersede ?? (() => undefined), supersedeWaitMs: o.waitMs ?? 200, clock: o.now ?? (() => T0 + 1000) });
  const req = (bootAt: number, over: Partial<LeaseRequest> = {}): LeaseRequest => ({
    mode: 'appliance-temporary',
    mac: MAC,
    vdiskId: VD,
    version: 1,
    contentHash: 'c'.repeat(64),
    bootId: newBootId(bootAt, Buffer.from([0, 0, 0, bootAt % 256])),
    resetMark: null,
    limitBytes: null,
    openBase: () => {
      opened++;
      return { sizeBytes: SIZE, read: async (o2: number, l: number) => Buffer.from(base.subarray(o2, o2 + l)), close: () => void closed++ };
    },
    ...over,
  });
  return { wc, req, logs, dir, readers: () => ({ opened, closed }) };
}

const lease = async (p: Promise<unknown>) => {
  const l = await p;
  if (!l || typeof l !== 'object' || 'refused' in l) throw new Error(`refused: ${JSON.stringify(l)}`);
  return l as { overlay: { read(o: number, l: number): Promise<Buffer>; write(o: number, d: Buffer, fua?: boolean): Promise<void> }; release(): void };
};

describe('write cache lifecycle', () => {
  it('a boot\'s connections share one overlay; a newer boot starts empty (temporary) and the older one is refused', async () => {
    const { wc, req, readers } = await caches();
    const b1 = req(T0);
    const a = await lease(wc.acquire(b1));
    const b = await lease(wc.acquire(b1));
    expect(a.overlay).toBe(b.overlay);
    await a.overlay.write(0, Buffer.from('hello'), true);
    a.release();
    b.release();
    await new Promise((r) => setTimeout(r, 50));
    expect(readers()).toEqual({ opened: 1, closed: 1 });
    const again = await lease(wc.acquire(b1));
    expect((await again.overlay.read(0, 5)).toString()).toBe('hello');
    again.release();
    const b2 = await lease(wc.acquire(req(T0 + 10)));
    expect((await b2.overlay.read(0, 5)).equals(base.subarray(0, 5))).toBe(true);
    expect(await wc.acquire(b1)).toMatchObject({ refused: 'policy', message: expect.stringMatching(/booted again/) });
    b2.release();
    await wc.close();
  });

  it('a newer boot closes the older boot\'s connections, and waits a bounded time when they do not let go', async () => {
    let asked = 0;
    const { wc, req } = await caches({ supersede: () => void asked++, waitMs: 150 });
    const old = await lease(wc.acquire(req(T0)));
    // Nothing releases: the newer boot is refused after the wait, not left hanging.
    expect(await wc.acquire(req(T0 + 5))).toMatchObject({ refused: 'policy', message: expect.stringMatching(/still holds/) });
    expect(asked).toBe(1);
    old.release();
    await new Promise((r) => setTimeout(r, 50));
    const fresh = await lease(wc.acquire(req(T0 + 5)));
    fresh.release();
    await wc.close();
  });

  it('a boot it has not served starts a cache only within the first-use window (a late reconnect is never handed an empty disk)', async () => {
    let now = T0 + 1000;
    const { wc, req } = await caches({ now: () => now });
    const b = req(T0);
    const first = await lease(wc.acquire(b));
    first.release();
    now = T0 + FIRST_USE_MS + 60_000;
    // The same boot reconnecting later is fine: its cache is here.
    (await lease(wc.acquire(b))).release();
    // A boot first seen that late is refused.
    expect(await wc.acquire(req(T0 + 10, { mac: '52:54:00:00:00:02' }))).toMatchObject({ refused: 'policy', message: expect.stringMatching(/restart the target/) });
    await wc.close();
  });

  it('persistent: kept across boots; emptied at the next boot after a reset mark changes or the content changes', async () => {
    const { wc, req } = await caches();
    const p = (bootAt: number, over: Partial<LeaseRequest> = {}) => req(bootAt, { mode: 'appliance-persistent', ...over });
    const a = await lease(wc.acquire(p(T0)));
    await a.overlay.write(0, Buffer.from('keep'), true);
    a.release();
    const b = await lease(wc.acquire(p(T0 + 1)));
    expect((await b.overlay.read(0, 4)).toString()).toBe('keep');
    b.release();
    // The same boot reconnecting after a reset keeps its writes; the next boot starts empty.
    const c = await lease(wc.acquire(p(T0 + 1, { resetMark: 'r1' })));
    expect((await c.overlay.read(0, 4)).toString()).toBe('keep');
    c.release();
    const d = await lease(wc.acquire(p(T0 + 2, { resetMark: 'r1' })));
    expect((await d.overlay.read(0, 4)).equals(base.subarray(0, 4))).toBe(true);
    await d.overlay.write(0, Buffer.from('more'), true);
    d.release();
    const e = await lease(wc.acquire(p(T0 + 3, { resetMark: 'r1', contentHash: 'd'.repeat(64) })));
    expect((await e.overlay.read(0, 4)).equals(base.subarray(0, 4))).toBe(true);
    e.release();
    await wc.close();
  });

  it('image: one writer at a time; the next target sees its writes', async () => {
    const { wc, req } = await caches();
    const img = (mac: string, bootAt: number) => req(bootAt, { mode: 'image', mac });
    const a = await lease(wc.acquire(img(MAC, T0)));
    await a.overlay.write(100, Buffer.from('private'));
    expect(await wc.acquire(img('52:54:00:00:00:02', T0 + 1))).toMatchObject({ refused: 'policy', message: expect.stringMatching(/one writer at a time/) });
    a.release();
    await new Promise((r) => setTimeout(r, 50));
    const b = await lease(wc.acquire(img('52:54:00:00:00:02', T0 + 1)));
    expect((await b.overlay.read(100, 7)).toString()).toBe('private');
    b.release();
    await wc.close();
  });

  it('sweep drops idle caches of targets that are gone, never one in use', async () => {
    const { wc, req } = await caches();
    const gone = req(T0, { mac: '52:54:00:00:00:09' });
    (await lease(wc.acquire(gone))).release();
    const busy = await lease(wc.acquire(req(T0)));
    await new Promise((r) => setTimeout(r, 50));
    expect(await wc.sweep(() => false)).toBe(1);
    expect(wc.usage().map((u) => u.mac)).toEqual([MAC]);
    busy.release();
    await wc.close();
  });
});
