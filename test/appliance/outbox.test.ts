/**
 * The outbox on a real disk: durable, oldest first, and one event the control
 * plane refuses for good never blocks the others. The refusing control plane
 * is a function (a permanent 400 is not something the real one produces for
 * valid events).
 */
import { mkdtemp, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { Outbox } from '../../appliance/outbox.js';
import { newEventId, type ApplianceEvent } from '../../model/index.js';

class Permanent extends Error {}
const notice = (n: number): ApplianceEvent => ({ id: newEventId(new Date(1_700_000_000_000 + n), Buffer.from([n, 1, 2, 3, 4, 5, 6, 7])), at: new Date(1_700_000_000_000 + n).toISOString(), type: 'notice', data: { level: 'info', message: `n${n}` } });

it('delivers oldest first, survives a reopen, and moves aside only the event that is refused for good', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'outbox-'));
  const logs: string[] = [];
  const box1 = await Outbox.open(dir, (_l, msg) => logs.push(msg));
  for (let i = 0; i < 5; i++) await box1.add(notice(i));
  const box = await Outbox.open(dir, (_l, msg) => logs.push(msg));
  expect((await box.pending()).map((e) => (e.data as { message: string }).message)).toEqual(['n0', 'n1', 'n2', 'n3', 'n4']);
  const seen: string[][] = [];
  const send = async (events: ApplianceEvent[]) => {
    seen.push(events.map((e) => (e.data as { message: string }).message));
    if (events.some((e) => (e.data as { message: string }).message === 'n2')) throw new Permanent('HTTP 400');
    return events.map((e) => ({ id: e.id, outcome: 'recorded' as const }));
  };
  expect(await box.deliverOne(send, (e) => e instanceof Permanent)).toBe(5);
  expect(seen).toEqual([['n0', 'n1', 'n2', 'n3', 'n4'], ['n0'], ['n1'], ['n2'], ['n3'], ['n4']]);
  expect(await box.count()).toBe(0);
  expect((await readdir(dir)).filter((n) => n.endsWith('.bad'))).toHaveLength(1);
  expect(logs).toContain('outbox: the control plane refuses this event: moved aside, not retried');
});

it('keeps the batch when the control plane is unreachable', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'outbox-'));
  const box = await Outbox.open(dir, () => undefined);
  await box.add(notice(1));
  await expect(box.deliverOne(async () => Promise.reject(new Error('ECONNREFUSED')), (e) => e instanceof Permanent)).rejects.toThrow('ECONNREFUSED');
  expect(await box.count()).toBe(1);
});
