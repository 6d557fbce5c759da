/**
 * Device status the console shows, as pure rules: an appliance's last hour
 * (minute samples to sessions and throughput) and a target's last boot from
 * events that arrive at least once and in any order.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { historySeries, lastBootAfter, sampleMinute, type ApplianceEvent, type ApplianceSample, type LastBoot } from '../../model/index.js';

const NOW = new Date('2026-03-01T12:30:20.000Z');
const minute = (ago: number) => new Date(Date.parse('2026-03-01T12:30:00.000Z') - ago * 60_000).toISOString();
const RUN = '2026-03-01T11:00:00.000Z';
const sample = (ago: number, sessions: number, bytesServed: number | null, startedAt = RUN): ApplianceSample => ({ at: minute(ago), startedAt, sessions, bytesServed });

describe('sampleMinute', () => {
  it('is the start of the minute and its minute of the hour', () => {
    expect(sampleMinute(NOW)).toEqual({ at: '2026-03-01T12:30:00.000Z', slot: 30 });
    expect(sampleMinute(new Date('2026-03-01T12:59:59.999Z'))).toEqual({ at: '2026-03-01T12:59:00.000Z', slot: 59 });
  });
});

describe('historySeries', () => {
  it('orders the last hour, drops older slots, and derives bytes per second from the counter', () => {
    const points = historySeries([sample(0, 6, 181_000), sample(61, 9, 0), sample(2, 5, 61_000), sample(1, 5, 121_000)], NOW);
    expect(points).toEqual([
      { at: minute(2), sessions: 5, bytesPerSecond: null },
      { at: minute(1), sessions: 5, bytesPerSecond: 1000 },
      { at: minute(0), sessions: 6, bytesPerSecond: 1000 },
    ]);
  });

  it('spreads growth over a gap, and knows no rate across a restart or without a counter', () => {
    const points = historySeries([sample(10, 1, 0), sample(5, 1, 600_000), sample(4, 2, 10, '2026-03-01T12:26:00.000Z'), sample(3, 2, null, '2026-03-01T12:26:00.000Z')], NOW);
    expect(points.map((p) => p.bytesPerSecond)).toEqual([null, 2000, null, null]);
  });

  it('never gives a negative rate or a point outside the hour', () => {
    const arb = fc.array(fc.record({ ago: fc.integer({ min: -5, max: 90 }), sessions: fc.nat(500), bytes: fc.option(fc.nat(1e12), { nil: null }), run: fc.constantFrom(RUN, '2026-03-01T12:00:00.000Z') }), { maxLength: 80 });
    fc.assert(
      fc.property(arb, (xs) => {
        const pts = historySeries(
          xs.map((x) => sample(x.ago, x.sessions, x.bytes, x.run)),
          NOW,
        );
        for (const p of pts) {
          expect(p.bytesPerSecond === null || p.bytesPerSecond >= 0).toBe(true);
          expect(Date.parse(p.at)).toBeGreaterThan(NOW.getTime() - 3_600_000);
          expect(Date.parse(p.at)).toBeLessThanOrEqual(NOW.getTime());
        }
      }),
    );
  });
});

describe('lastBootAfter', () => {
  const MAC = '52:54:00:00:00:01';
  const VD = 'vd_aaaaaaaaaaaaaaaa';
  let n = 0;
  const id = () => `${(Date.parse('2026-03-01T12:00:00.000Z') + n++).toString(36).padStart(9, '0')}-abcdefgh`;
  /** A boot id as export names carry it: the script's time, then 32 random bits. */
  const bootIdAt = (at: string, r = 'cafe0001') => Date.parse(at).toString(16).padStart(12, '0') + r;
  const boot = (at: string, bootId: string | null = bootIdAt(at)): Extract<ApplianceEvent, { type: 'boot' }> => ({
    id: id(),
    at,
    type: 'boot',
    data: { mac: MAC, targetId: MAC, outcome: 'vdisk', vdiskId: VD, version: 3, streamingApplianceId: 'app_bbbbbbbbbbbbbbbb', message: '', ...(bootId ? { bootId } : {}) },
  });
  const done = (bootStartedAt: string, durationMs: number, bootId = bootIdAt(bootStartedAt)): Extract<ApplianceEvent, { type: 'boot-completed' }> => ({
    id: id(),
    at: new Date(Date.parse(bootStartedAt) + durationMs).toISOString(),
    type: 'boot-completed',
    data: { mac: MAC, vdiskId: VD, version: 3, bootId, bootStartedAt, durationMs },
  });
  type E = Parameters<typeof lastBootAfter>[2];
  const apply = (events: { on: string; e: E }[]) => events.reduce<LastBoot | null>((cur, { on, e }) => lastBootAfter(cur, on, e) ?? cur, null);

  it('merges the script and the completion of one boot (one boot id) in either order', () => {
    const b = boot('2026-03-01T12:00:00.000Z');
    // The completion's boot time comes from the boot id: the same ms, or a few ms off the event's time.
    const c = done('2026-03-01T12:00:00.000Z', 9000, b.data.bootId);
    const want = { at: b.at, bootId: b.data.bootId, applianceId: 'app_a', streamingApplianceId: 'app_bbbbbbbbbbbbbbbb', completedOn: 'app_b', durationMs: 9000, completedAt: c.at };
    expect(apply([{ on: 'app_a', e: b }, { on: 'app_b', e: c }])).toMatchObject(want);
    expect(apply([{ on: 'app_b', e: c }, { on: 'app_a', e: b }])).toMatchObject(want);
  });

  it('keeps reboots seconds apart apart: a new boot is not the old one completed', () => {
    const first = [boot('2026-03-01T12:00:00.000Z'), done('2026-03-01T12:00:00.000Z', 9000)];
    const again = boot('2026-03-01T12:00:40.000Z');
    const r = apply([...first, again].map((e) => ({ on: 'app_a', e })))!;
    expect(r).toMatchObject({ at: again.at, bootId: again.data.bootId, completedAt: null, durationMs: null });
    // An older boot delivered late, even seconds older, changes nothing.
    expect(lastBootAfter(r, 'app_a', boot('2026-03-01T12:00:30.000Z'))).toBeNull();
    expect(lastBootAfter(r, 'app_a', done('2026-03-01T12:00:00.000Z', 9000))).toBeNull();
    // A boot without NBD (no boot id) is recorded on its own and never completes.
    const plain = lastBootAfter(r, 'app_a', boot('2026-03-01T12:01:00.000Z', null))!;
    expect(plain).toMatchObject({ bootId: null, completedAt: null });
  });

  it('keeps the newest boot whatever the delivery order, and the first completion of a boot', () => {
    const events = [
      { on: 'app_a', e: boot('2026-03-01T12:00:00.000Z') },
      { on: 'app_b', e: done('2026-03-01T12:00:00.000Z', 9000) },
      { on: 'app_a', e: boot('2026-03-01T12:00:20.000Z') },
      { on: 'app_b', e: done('2026-03-01T12:00:20.000Z', 7000) },
      { on: 'app_a', e: done('2026-03-01T12:00:20.000Z', 30_000) },
    ];
    fc.assert(
      fc.property(fc.shuffledSubarray(events, { minLength: events.length, maxLength: events.length }), (order) => {
        const r = apply(order)!;
        expect(r.at).toBe('2026-03-01T12:00:20.000Z');
        // Which completion of the newest boot counts depends on which came first; never the older boot's.
        const firstDone = order.find((x) => x.e.type === 'boot-completed' && x.e.data.bootStartedAt === r.at)!;
        expect(r.durationMs).toBe((firstDone.e as Extract<ApplianceEvent, { type: 'boot-completed' }>).data.durationMs);
        expect(r.applianceId).toBe('app_a');
      }),
    );
  });

  it('says nothing changes for a redelivered completion', () => {
    const cur = apply([{ on: 'app_a', e: boot('2026-03-01T12:10:00.000Z') }, { on: 'app_a', e: done('2026-03-01T12:10:00.000Z', 5000) }]);
    expect(lastBootAfter(cur, 'app_a', done('2026-03-01T12:10:00.000Z', 5000))).toBeNull();
  });
});
