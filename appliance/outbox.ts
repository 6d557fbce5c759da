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
   * Sends pending events in batches of up to 100 with `send`; removes each one
   * the control plane answered for. Throws what `send` throws (the rest stay).
   */
  async deliver(send: (events: ApplianceEvent[]) => Promise<EventResult[]>): Promise<number> {
    let delivered = 0;
    for (;;) {
      const batch = await this.pending(100);
      if (!batch.length) return delivered;
      const results = await send(batch);
      const done = new Set(results.map((r) => r.id));
      for (const r of results) if (r.outcome === 'rejected') this.log('warn', 'outbox: control plane rejected an event', { id: r.id, message: r.message });
      for (const e of batch) if (done.has(e.id)) await rm(join(this.dir, `${e.id}.json`), { force: true });
      await fsyncDir(this.dir);
      delivered += done.size;
      if (done.size === 0) throw new Error('outbox: control plane acknowledged none of the events sent');
    }
  }
}
