/**
 * Targets this appliance added at their first boot, kept on disk until the
 * snapshot has them: a restart (or the cloud staying away) never forgets a
 * target that already booted, and its name is never given to another one.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { TargetInputSchema, type Snapshot, type TargetInput } from '../../model/index.js';
import { writeFileAtomic } from '../fs-atomic.js';
import type { LogFn } from '../log.js';

const FileSchema = z.object({ targets: z.array(TargetInputSchema) });

export class AutoAdded {
  private list: TargetInput[] = [];
  private constructor(
    private readonly path: string,
    private readonly log: LogFn,
  ) {}

  static async open(dir: string, log: LogFn): Promise<AutoAdded> {
    const a = new AutoAdded(join(dir, 'auto-added.json'), log);
    try {
      a.list = FileSchema.parse(JSON.parse(await readFile(a.path, 'utf8'))).targets;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') log('error', 'auto-added targets file unreadable: starting empty', { path: a.path, reason: (e as Error).message });
    }
    return a;
  }

  targets(): readonly TargetInput[] {
    return this.list;
  }

  async add(t: TargetInput): Promise<void> {
    this.list = [...this.list.filter((x) => x.mac !== t.mac), t];
    await writeFileAtomic(this.path, JSON.stringify({ targets: this.list }), 0o600);
  }

  /** Forgets the targets the snapshot now has (the control plane applied the event). */
  async prune(snapshot: Snapshot): Promise<void> {
    const known = new Set(snapshot.targets.map((t) => t.mac));
    const left = this.list.filter((t) => !known.has(t.mac));
    if (left.length === this.list.length) return;
    this.list = left;
    await writeFileAtomic(this.path, JSON.stringify({ targets: this.list }), 0o600);
  }
}
