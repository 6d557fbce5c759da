import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { addressOwners, hasQuorum, planAddresses, planRebalance, type HaMember, type RebalanceAppliance, type RebalanceTarget } from '../../model/index.js';

const member = (i: number): HaMember => ({ id: `app_${String.fromCharCode(97 + i).repeat(16)}`, name: `a${i}`, floatingAddress: `192.0.2.${20 + i}` });
const members = (n: number) => Array.from({ length: n }, (_, i) => member(i));

describe('address ownership', () => {
  it('gives every floating address exactly one live owner, for any set of live peers; a live appliance owns its own', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 8 }), fc.array(fc.boolean(), { minLength: 8, maxLength: 8 }), fc.array(fc.boolean(), { minLength: 64, maxLength: 64 }), (n, liveBits, claimBits) => {
        const ms = members(n);
        const live = new Set(ms.filter((_, i) => liveBits[i]).map((m) => m.id));
        // Any claims at all (stale or conflicting): ownership still has one answer per address.
        const claims = new Map(ms.map((m, i) => [m.id, ms.filter((_, j) => claimBits[i * 8 + j]).map((x) => x.floatingAddress!)]));
        const owners = addressOwners(ms, live, claims);
        expect(owners.size).toBe(n);
        for (const m of ms) {
          const owner = owners.get(m.floatingAddress!);
          if (!live.size) expect(owner).toBeNull();
          else {
            expect(owner !== null && live.has(owner!)).toBe(true);
            if (live.has(m.id)) expect(owner).toBe(m.id);
          }
        }
        // The same answer whatever order the appliances are listed in.
        const again = addressOwners([...ms].reverse(), new Set([...live].reverse()), new Map([...claims].reverse()));
        expect([...again].sort()).toEqual([...owners].sort());
      }),
      { numRuns: 500 },
    );
  });

  it('keeps an adopted address where it is while its holder lives (no churn when others come and go)', () => {
    const ms = members(4);
    const [a, b, c, d] = ms.map((m) => m.id) as [string, string, string, string];
    const owners = addressOwners(ms, new Set([b, c, d]), new Map([[c, [ms[0]!.floatingAddress!]]]));
    expect(owners.get(ms[0]!.floatingAddress!)).toBe(c);
    const afterDeath = addressOwners(ms, new Set([b, c]), new Map([[c, [ms[0]!.floatingAddress!]]]));
    expect(afterDeath.get(ms[0]!.floatingAddress!)).toBe(c);
    expect(addressOwners(ms, new Set([a, b, c]), new Map([[c, [ms[0]!.floatingAddress!]]])).get(ms[0]!.floatingAddress!)).toBe(a);
  });

  it('spreads the addresses of dead appliances over the survivors', () => {
    const ms = members(8);
    const live = new Set(ms.slice(0, 2).map((m) => m.id));
    const adopters = new Set([...addressOwners(ms, live)].filter(([addr]) => !ms.slice(0, 2).some((m) => m.floatingAddress === addr)).map(([, o]) => o));
    expect(adopters.size).toBe(2);
  });

  it('needs a majority to adopt in a site of three or more', () => {
    expect(hasQuorum(2, 1)).toBe(true);
    expect(hasQuorum(3, 1)).toBe(false);
    expect(hasQuorum(3, 2)).toBe(true);
    expect(hasQuorum(4, 2)).toBe(false);
  });

  it('explains what it waits for', () => {
    const ms = members(3);
    const [a, b] = ms.map((m) => m.id) as [string, string];
    const base = { self: a, members: ms, claims: new Map<string, string[]>(), held: new Set<string>(), linkUp: true, settled: true };
    expect(planAddresses({ ...base, live: new Set([a, b]) }).add).toEqual(['192.0.2.20', ...(addressOwners(ms, new Set([a, b])).get('192.0.2.22') === a ? ['192.0.2.22'] : [])]);
    expect(planAddresses({ ...base, live: new Set([a]) }).waiting.map((w) => w.reason)).toEqual(expect.arrayContaining([expect.stringContaining('needs a majority')]));
    expect(planAddresses({ ...base, live: new Set([a, b]), claims: new Map([[b, ['192.0.2.20']]]) }).waiting[0]?.reason).toContain('a1 still holds it');
    expect(planAddresses({ ...base, live: new Set([a, b]), settled: false }).waiting[0]?.reason).toContain('listening');
    expect(planAddresses({ ...base, live: new Set([a, b]), held: new Set(['192.0.2.20', '192.0.2.99']), linkUp: false }).remove).toEqual(['192.0.2.20', '192.0.2.99']);
    // Two holders, whatever the cause (heartbeats lost one way): the one that sees the other's claim lets go, even of its own.
    expect(planAddresses({ ...base, live: new Set([a, b]), held: new Set(['192.0.2.20']), claims: new Map([[b, ['192.0.2.20']]]) }).remove).toEqual(['192.0.2.20']);
    // An address no appliance floats any more (an old configuration) is let go.
    expect(planAddresses({ ...base, live: new Set([a, b]), held: new Set(['192.0.2.20', '192.0.2.99']) }).remove).toEqual(['192.0.2.99']);
  });
});

/**
 * The protocol, simulated: appliances that heartbeat each tick (delivered to
 * every live peer on the LAN), plan from what they heard within the timeout,
 * and apply at once; random crashes, restarts, link cuts and repairs. After
 * every tick no address is held by two appliances that are up with their link
 * up (two that answer ARP on the LAN); after a quiet spell every address is
 * held by exactly one, whenever the site can (a linked appliance and, from
 * three appliances on, a majority linked).
 */
describe('address protocol (simulated)', () => {
  type Event = { kind: 'crash' | 'restart' | 'cut' | 'heal'; node: number } | { kind: 'ticks'; n: number };
  const TIMEOUT = 4;

  /** `delay`: ticks a heartbeat takes to arrive (below the timeout, as on a LAN). */
  function simulate(n: number, events: Event[], delay = 0) {
    const ms = members(n);
    const nodes = ms.map((m) => ({ id: m.id, alive: true, link: true, inc: 0, held: new Set<string>(), since: 0, heard: new Map<string, { at: number; held: string[]; inc: number; hears: Map<string, number> }>() }));
    let t = 0;
    const violations: string[] = [];
    let inFlight: { at: number; from: string; to: (typeof nodes)[number]; held: string[]; sent: number; inc: number; hears: Map<string, number> }[] = [];
    const tick = () => {
      t++;
      for (const m of inFlight.filter((m) => m.at <= t)) if (m.to.alive && m.to.link) m.to.heard.set(m.from, { at: m.sent, held: m.held, inc: m.inc, hears: m.hears });
      inFlight = inFlight.filter((m) => m.at > t);
      for (const x of nodes) {
        if (!x.alive) continue;
        const live = new Set([x.id, ...[...x.heard].filter(([, h]) => t - h.at <= TIMEOUT).map(([id]) => id)]);
        const claims = new Map([...x.heard].filter(([id]) => live.has(id)).map(([id, h]) => [id, h.held]));
        // Settled (as appliance/ha does): every live peer heard this incarnation, and every appliance was heard or a whole timeout passed.
        const acked = [...live].every((id) => id === x.id || x.heard.get(id)?.hears.get(x.id) === x.inc);
        const heardAll = nodes.every((y) => y === x || (x.heard.get(y.id)?.at ?? -1) > x.since);
        const plan = planAddresses({ self: x.id, members: ms, live, claims, held: x.held, linkUp: x.link, settled: acked && (heardAll || t - x.since >= TIMEOUT) });
        for (const a of plan.remove) x.held.delete(a);
        for (const a of plan.add) x.held.add(a);
        // Appliances act one after another, not at one instant: check after each.
        check();
      }
      // Heartbeats: from every appliance that is up with its link, to every other such one.
      const linked = nodes.filter((x) => x.alive && x.link);
      for (const from of linked) {
        // Whom it hears now, with the incarnation it heard.
        const hears = new Map([...from.heard].filter(([, h]) => t - h.at <= TIMEOUT).map(([id, h]) => [id, h.inc]));
        for (const to of linked) if (to !== from) inFlight.push({ at: t + delay, from: from.id, to, held: [...from.held], sent: t, inc: from.inc, hears });
      }
      if (delay === 0) {
        for (const m of inFlight) m.to.heard.set(m.from, { at: m.sent, held: m.held, inc: m.inc, hears: m.hears });
        inFlight = [];
      }
      check();
    };
    const check = () => {
      const linked = nodes.filter((x) => x.alive && x.link);
      for (const m of ms) {
        const holders = linked.filter((x) => x.held.has(m.floatingAddress!));
        if (holders.length > 1) violations.push(`t=${t}: ${m.floatingAddress} held by ${holders.map((h) => h.id).join(', ')}`);
      }
    };
    for (const e of events) {
      if (e.kind === 'ticks') for (let i = 0; i < e.n; i++) tick();
      else {
        const x = nodes[e.node % n]!;
        if (e.kind === 'crash' && x.alive) {
          // A dead process's addresses go with it (its guard removes them; a dead machine has none).
          Object.assign(x, { alive: false, held: new Set(), heard: new Map() });
        } else if (e.kind === 'restart' && !x.alive) Object.assign(x, { alive: true, since: t, inc: x.inc + 1 });
        else if (e.kind === 'cut' && x.link) x.link = false;
        else if (e.kind === 'heal' && !x.link) Object.assign(x, { link: true, since: t, inc: x.inc + 1 });
      }
    }
    for (let i = 0; i < TIMEOUT * 4; i++) tick();
    return { ms, nodes, violations };
  }

  const event = fc.oneof(
    fc.record({ kind: fc.constantFrom('crash' as const, 'restart' as const, 'cut' as const, 'heal' as const), node: fc.nat(7) }),
    fc.record({ kind: fc.constant('ticks' as const), n: fc.integer({ min: 1, max: 12 }) }),
  );

  it('never lets two linked appliances hold one address, and settles on exactly one holder', () => {
    fc.assert(
      fc.property(fc.integer({ min: 2, max: 5 }), fc.array(event, { maxLength: 40 }), fc.integer({ min: 0, max: TIMEOUT - 1 }), (n, events, delay) => {
        const { ms, nodes, violations } = simulate(n, events, delay);
        expect(violations).toEqual([]);
        const linked = nodes.filter((x) => x.alive && x.link);
        if (linked.length && hasQuorum(n, linked.length)) {
          for (const m of ms) expect(linked.filter((x) => x.held.has(m.floatingAddress!)).map((x) => x.id)).toHaveLength(1);
          // And everyone up holds its own.
          for (const x of linked) expect(x.held.has(ms.find((m) => m.id === x.id)!.floatingAddress!)).toBe(true);
        }
      }),
      { numRuns: 1500 },
    );
  });

  it('keeps one holder in the cases review found: a restart or a heal seen late (heartbeats 2 ticks on the way)', () => {
    for (const events of [
      [{ kind: 'ticks', n: 10 }, { kind: 'crash', node: 0 }, { kind: 'ticks', n: 3 }, { kind: 'restart', node: 0 }, { kind: 'ticks', n: 0 }],
      [{ kind: 'ticks', n: 10 }, { kind: 'cut', node: 0 }, { kind: 'ticks', n: 3 }, { kind: 'heal', node: 0 }, { kind: 'ticks', n: 0 }],
    ] as Event[][])
      for (const delay of [1, 2, 3]) expect(simulate(2, events, delay).violations).toEqual([]);
  });

  it('hands an address back: the owner returns, the adopter lets go, then the owner takes it', () => {
    const { nodes, violations } = simulate(2, [{ kind: 'ticks', n: 6 }, { kind: 'crash', node: 0 }, { kind: 'ticks', n: 8 }, { kind: 'restart', node: 0 }, { kind: 'ticks', n: 10 }]);
    expect(violations).toEqual([]);
    expect([...nodes[0]!.held]).toEqual(['192.0.2.20']);
    expect([...nodes[1]!.held]).toEqual(['192.0.2.21']);
  });
});

describe('rebalance', () => {
  const t = (key: string, o: Partial<RebalanceTarget> = {}): RebalanceTarget => ({ key, booting: false, movable: true, ...o });
  const app = (id: string, n: number, o: Partial<RebalanceAppliance> & { booting?: number } = {}): RebalanceAppliance => {
    const list = Array.from({ length: n }, (_, i) => t(`${id}-${String(i).padStart(3, '0')}`, { booting: i < (o.booting ?? 0) }));
    return { id, powerRating: 1, maxTargets: 500, total: n, targets: new Map([['vd', list]]), ...o };
  };
  const settings = { enabled: true, triggerPercent: 25, maxMovesPerCheck: 10 };
  const base = { self: 'a', settings, vdiskIds: ['vd'], canServe: () => true };

  it('moves targets from an appliance above its share by more than the trigger, to the least loaded', () => {
    const r = planRebalance({ ...base, appliances: [app('a', 12), app('b', 0), app('c', 3)] });
    // Share 5 each: a keeps 5, b gets 5 first, then c 2.
    expect(r.moves).toHaveLength(7);
    expect(r.moves.filter((m) => m.to === 'b')).toHaveLength(5);
    expect(r.moves.filter((m) => m.to === 'c')).toHaveLength(2);
  });

  it('does nothing within the trigger, when off, or for fixed vDisks', () => {
    expect(planRebalance({ ...base, appliances: [app('a', 6), app('b', 5)] }).moves).toEqual([]);
    expect(planRebalance({ ...base, settings: { ...settings, enabled: false }, appliances: [app('a', 12), app('b', 0)] }).moves).toEqual([]);
    expect(planRebalance({ ...base, vdiskIds: [], appliances: [app('a', 12), app('b', 0)] }).moves).toEqual([]);
  });

  it("keeps PVS's exceptions: fewer than 5 targets, more than 20 % booting", () => {
    expect(planRebalance({ ...base, appliances: [app('a', 4), app('b', 0)] }).skipped[0]?.reason).toContain('fewer than 5');
    const r = planRebalance({ ...base, appliances: [app('a', 10, { booting: 3 }), app('b', 0)] });
    expect(r.moves).toEqual([]);
    expect(r.skipped[0]?.reason).toContain('3 of 10 targets still booting');
  });

  it('never moves more than maxMovesPerCheck, nor unmovable targets, nor to an appliance that cannot serve or is full', () => {
    expect(planRebalance({ ...base, settings: { ...settings, maxMovesPerCheck: 2 }, appliances: [app('a', 20), app('b', 0)] }).moves).toHaveLength(2);
    const pinned = app('a', 10);
    pinned.targets = new Map([['vd', pinned.targets.get('vd')!.map((x) => ({ ...x, movable: false }))]]);
    expect(planRebalance({ ...base, appliances: [pinned, app('b', 0)] }).moves).toEqual([]);
    expect(planRebalance({ ...base, canServe: () => false, appliances: [app('a', 10), app('b', 0)] }).moves).toEqual([]);
    expect(planRebalance({ ...base, appliances: [app('a', 10), app('b', 0, { maxTargets: 2, total: 0 })] }).moves).toHaveLength(2);
  });

  it('weighs by power rating', () => {
    const r = planRebalance({ ...base, appliances: [app('a', 12), app('b', 0, { powerRating: 2 })] });
    expect(r.moves).toHaveLength(8); // shares 4 and 8
  });

  it('for any loads, moves only its own movable targets, at most the cap, and never below its share', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 40 }), { minLength: 2, maxLength: 5 }), fc.integer({ min: 1, max: 20 }), fc.integer({ min: 5, max: 200 }), (loads, cap, trigger) => {
        const apps = loads.map((n, i) => app(String.fromCharCode(97 + i), n));
        const r = planRebalance({ ...base, settings: { enabled: true, triggerPercent: trigger, maxMovesPerCheck: cap }, appliances: apps });
        expect(r.moves.length).toBeLessThanOrEqual(cap);
        const mine = new Set(apps[0]!.targets.get('vd')!.map((x) => x.key));
        for (const m of r.moves) expect(mine.has(m.key) && m.to !== 'a').toBe(true);
        const share = loads.reduce((x, y) => x + y, 0) / loads.length;
        if (r.moves.length) expect(loads[0]! - r.moves.length).toBeGreaterThanOrEqual(Math.ceil(share) - 0);
      }),
      { numRuns: 300 },
    );
  });
});
