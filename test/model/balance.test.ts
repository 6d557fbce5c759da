import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { chooseAppliance, sameSubnet, type Candidate } from '../../model/index.js';

const app = (id: string, o: Partial<Candidate> = {}): Candidate => ({ id, name: id, addresses: ['192.0.2.10'], powerRating: 1, maxTargets: 500, up: true, holdsVersion: true, sessionsForVdisk: 0, sessionsTotal: 0, ...o });
const algo = { loadBalancing: { mode: 'algorithm' as const, applianceId: null }, subnetAffinity: 'none' as const };

describe('chooseAppliance', () => {
  it('picks the least busy for the vDisk, weighted by power rating', () => {
    const d = chooseAppliance([app('a', { sessionsForVdisk: 10 }), app('b', { sessionsForVdisk: 12, powerRating: 2 }), app('c', { sessionsForVdisk: 7 })], { vdisk: algo, targetIp: null });
    expect(d.primary?.id).toBe('b'); // 12 / 2 = 6 < 7 < 10
    expect(d.failover.map((c) => c.id)).toEqual(['c', 'a']);
    expect(d.reason).toContain('least busy');
  });

  it('leaves out appliances that are down, do not hold the version, or are at their maximum', () => {
    const d = chooseAppliance([app('a', { up: false }), app('b', { holdsVersion: false }), app('c', { sessionsTotal: 5, maxTargets: 5 }), app('d', { sessionsForVdisk: 99 })], { vdisk: algo, targetIp: null });
    expect(d.primary?.id).toBe('d');
    expect(d.failover).toEqual([]);
    const none = chooseAppliance([app('a', { up: false }), app('b', { holdsVersion: false })], { vdisk: algo, targetIp: null });
    expect(none.primary).toBeNull();
    expect(none.reason).toBe('no appliance can stream it: a down; b does not hold the version yet');
  });

  it('breaks ties by total load, then by id, so every appliance decides alike', () => {
    expect(chooseAppliance([app('b'), app('a')], { vdisk: algo, targetIp: null }).primary?.id).toBe('a');
    expect(chooseAppliance([app('a', { sessionsTotal: 3 }), app('b', { sessionsTotal: 1 })], { vdisk: algo, targetIp: null }).primary?.id).toBe('b');
  });

  it('follows subnet affinity: best effort prefers the subnet, fixed requires it', () => {
    const near = app('near', { addresses: ['192.0.2.10'], sessionsForVdisk: 50 });
    const far = app('far', { addresses: ['198.51.100.10'] });
    const be = { ...algo, subnetAffinity: 'best-effort' as const };
    const fx = { ...algo, subnetAffinity: 'fixed' as const };
    expect(chooseAppliance([near, far], { vdisk: be, targetIp: '192.0.2.77' }).primary?.id).toBe('near');
    expect(chooseAppliance([far], { vdisk: be, targetIp: '192.0.2.77' }).primary?.id).toBe('far');
    expect(chooseAppliance([far], { vdisk: fx, targetIp: '192.0.2.77' }).primary).toBeNull();
    expect(chooseAppliance([near, far], { vdisk: algo, targetIp: '192.0.2.77' }).primary?.id).toBe('far');
  });

  it('uses a fixed appliance or none', () => {
    const fixed = { loadBalancing: { mode: 'fixed' as const, applianceId: 'b' }, subnetAffinity: 'none' as const };
    expect(chooseAppliance([app('a'), app('b', { sessionsForVdisk: 100 })], { vdisk: fixed, targetIp: null })).toMatchObject({ primary: { id: 'b' }, failover: [] });
    expect(chooseAppliance([app('a'), app('b', { up: false })], { vdisk: fixed, targetIp: null })).toMatchObject({ primary: null, reason: 'the vDisk is fixed to b, which down' });
  });

  it("sends a target whose writes stay on its appliance (persistent cache) to the same one boot after boot, whatever the load, and spreads such targets", () => {
    const apps = ['a', 'b', 'c'].map((id) => app(id));
    const home = (key: string, cs = apps) => chooseAppliance(cs, { vdisk: algo, targetIp: null, home: key });
    const first = home('52:54:00:00:00:01|vd_x');
    expect(first.reason).toContain('home');
    // Load changes nothing; the order candidates come in changes nothing.
    const loaded = apps.map((c) => (c.id === first.primary!.id ? { ...c, sessionsForVdisk: 400, sessionsTotal: 400 } : c));
    expect(home('52:54:00:00:00:01|vd_x', [...loaded].reverse()).primary!.id).toBe(first.primary!.id);
    // Down (or at its maximum): the next by weight, which is the first of the failover paths it had.
    const down = apps.map((c) => (c.id === first.primary!.id ? { ...c, up: false } : c));
    expect(home('52:54:00:00:00:01|vd_x', down).primary!.id).toBe(first.failover[0]!.id);
    // 300 targets land on all three, roughly a third each.
    const counts = new Map<string, number>();
    for (let n = 0; n < 300; n++) {
      const id = home(`52:54:00:00:01:${n.toString(16).padStart(2, '0')}|vd_x`).primary!.id;
      counts.set(id, (counts.get(id) ?? 0) + 1);
    }
    expect([...counts.values()].every((c) => c > 60)).toBe(true);
  });

  it('property: the same inputs in any order give the same choice, and the choice is eligible and least busy', () => {
    const cand = fc.record({ id: fc.stringMatching(/^[a-z]{1,4}$/), up: fc.boolean(), holdsVersion: fc.boolean(), sessionsForVdisk: fc.nat(50), sessionsTotal: fc.nat(60), powerRating: fc.constantFrom(0.5, 1, 2, 4), maxTargets: fc.integer({ min: 1, max: 60 }) });
    fc.assert(
      fc.property(fc.uniqueArray(cand, { selector: (c) => c.id, maxLength: 6 }), fc.nat(), (list, seed) => {
        const cs = list.map((c) => app(c.id, c));
        const shuffled = [...cs].sort((x, y) => ((x.id.charCodeAt(0) * 31 + seed) % 7) - ((y.id.charCodeAt(0) * 31 + seed) % 7));
        const d1 = chooseAppliance(cs, { vdisk: algo, targetIp: null });
        const d2 = chooseAppliance(shuffled, { vdisk: algo, targetIp: null });
        expect(d1.primary?.id).toBe(d2.primary?.id);
        const eligible = cs.filter((c) => c.up && c.holdsVersion && c.sessionsTotal < c.maxTargets);
        if (!eligible.length) {
          expect(d1.primary).toBeNull();
          return;
        }
        const best = Math.min(...eligible.map((c) => c.sessionsForVdisk / c.powerRating));
        expect(d1.primary!.sessionsForVdisk / d1.primary!.powerRating).toBe(best);
      }),
    );
  });
});

describe('sameSubnet', () => {
  it('compares IPv4 prefixes', () => {
    expect(sameSubnet('192.0.2.10', '192.0.2.200', 24)).toBe(true);
    expect(sameSubnet('192.0.2.10', '192.0.3.10', 24)).toBe(false);
    expect(sameSubnet('192.0.2.10', '192.0.3.10', 16)).toBe(true);
    expect(sameSubnet('192.0.2.10', 'fe80::1', 24)).toBe(false);
  });
});
