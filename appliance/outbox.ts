/**
 * The durable outbox: events wait here, one file each (written atomically),
 * until the control plane has acknowledged them. Delivery is at least once;
 * the event id is the idempotency key, so a redelivery after a crash between
 * "acknowledged" and "file removed" does nothing twice.
 */
import { mkdir, readdir, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { ApplianceEventSchema, type ApplianceEvent, type EventResult } from '../model/index.js';
import { fsyncDir, sweepTemp, writeFileAtomic } from './fs-atomic.js';
import type { Log } from './snapshot-store.js';

const FILE = /^([0-9a-z]{9}-[0-9a-z]{8,32})\.json$/;

export class Outbox {
  private constructor(
    readonly dir: string,
    private readonly log: Log,
  ) {}

  static async open(dir: string, log: Log): Promise<Outbox> {
    await mkdir(dir, { recursive: true });
    await sweepTemp(dir);
    return new Outbox(dir, log);
  }

  /** Returns once the event is on disk (fsynced): from then on it survives kill -9 and power loss. */
  async add(event: ApplianceEvent): Promise<void> {
    const e = ApplianceEventSchema.parse(event);
    await writeFileAtomic(join(this.dir, `${e.id}.json`), JSON.stringify(e), 0o600);
  }

  /** Pending events, oldest first. Unreadable files are moved aside, not retried forever. */
  async pending(limit = Infinity): Promise<ApplianceEvent[]> {
    const names = (await readdir(this.dir)).filter((n) => FILE.test(n)).sort();
    const out: ApplianceEvent[] = [];
    for (const name of names) {
      if (out.length >= limit) break;
      const path = join(this.dir, name);
      try {
        out.push(ApplianceEventSchema.parse(JSON.parse(await readFile(path, 'utf8'))));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue;
        await rm(`${path}.bad`, { force: true });
        await rename(path, `${path}.bad`);
        this.log('error', 'outbox: unreadable event moved aside', { path, reason: (e as Error).message });
      }
    }
    return out;
  }

  async count(): Promise<number> {
    return (await readdir(this.dir)).filter((n) => FILE.test(n)).length;
  }

  /**
   * Sends the oldest batch (up to 100 events) with `send` and removes each
   * event the control plane answered for. Returns how many left the outbox.
   * A batch refused for good (`isPermanent`, e.g. HTTP 400 from a newer
   * control plane) is retried event by event, and an event refused on its own
   * is moved aside as `<id>.json.bad` with an error log: one bad event never
   * blocks the ones behind it. Other errors are thrown; the batch stays.
   */
  async deliverOne(send: (events: ApplianceEvent[]) => Promise<EventResult[]>, isPermanent: (e: unknown) => boolean): Promise<number> {
    const batch = await this.pending(100);
    if (!batch.length) return 0;
    try {
      return await this.acknowledge(batch, await send(batch));
    } catch (e) {
      if (!isPermanent(e)) throw e;
    }
    let moved = 0;
    for (const event of batch) {
      try {
        moved += await this.acknowledge([event], await send([event]));
      } catch (e) {
        if (!isPermanent(e)) throw e;
        const path = join(this.dir, `${event.id}.json`);
        await rename(path, `${path}.bad`);
        this.log('error', 'outbox: the control plane refuses this event: moved aside, not retried', { id: event.id, type: event.type, path: `${path}.bad`, reason: (e as Error).message });
        moved++;
      }
    }
    await fsyncDir(this.dir);
    return moved;
  }

  private async acknowledge(batch: ApplianceEvent[], results: EventResult[]): Promise<number> {
    const done = new Set(results.map((r) => r.id));
    for (const r of results) if (r.outcome === 'rejected') this.log('warn', 'outbox: the control plane rejected an event', { id: r.id, message: r.message });
    for (const e of batch) if (done.has(e.id)) await rm(join(this.dir, `${e.id}.json`), { force: true });
    await fsyncDir(this.dir);
    if (done.size === 0) throw new Error('outbox: the control plane acknowledged none of the events sent');
    return batch.filter((e) => done.has(e.id)).length;
  }
}
