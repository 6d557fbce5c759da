/**
 * Which overlay a connection writes to, and when an overlay is thrown away
 * (PVS write cache types on the appliance; the overlay itself is overlay.ts).
 *
 *   <root>/temporary/<mac>.<vdiskId>/    PVS "cache on server": one per target
 *                                        and vDisk, new at every boot
 *   <root>/persistent/<mac>.<vdiskId>/   PVS "cache on server persistent": kept
 *                                        across boots; new when the target boots
 *                                        other content, or after an admin reset
 *   <root>/image/<vdiskId>.<version>/    private image and maintenance version:
 *                                        the version's own writes, one target at
 *                                        a time
 *
 * Each folder has `owner.json` beside the overlay's files: the boot that
 * last used it (and, for persistent ones, the content and reset mark it was
 * made for). A boot id carries its time, so "the target booted again" is
 * decided the same way by any appliance: a connection from a newer boot
 * supersedes the older boot's connections (they are closed) and, for
 * temporary caches, starts from an empty overlay; a connection from an older
 * boot is refused. Connections of one boot share one Overlay object, so a
 * write or flush on one is seen by the others at once (NBD CAN_MULTI_CONN).
 */
import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { LogFn } from '../log.js';
import { writeFileAtomic } from '../fs-atomic.js';
import { bootTime, newerBoot } from '../nbd/export-name.js';
import { Overlay, OverlayMismatch, type BaseDisk } from './overlay.js';

export type WriteMode = 'appliance-temporary' | 'appliance-persistent' | 'image';

export interface LeaseRequest {
  mode: WriteMode;
  /** aa:bb:cc:dd:ee:ff */
  mac: string;
  vdiskId: string;
  version: number;
  /** The base version's content: an overlay made over other content is never used. */
  contentHash: string;
  bootId: string;
  /** The target's write cache reset mark (persistent mode): a new mark empties the cache at the next boot. */
  resetMark: string | null;
  limitBytes: number | null;
  /** Opens the base version (held open while the overlay is). */
  openBase: () => BaseDisk & { close(): void };
}

export interface Lease {
  overlay: Overlay;
  release(): void;
}

export interface Refusal {
  refused: 'policy' | 'unknown';
  message: string;
}

interface Owner {
  bootId: string;
  mac: string;
  contentHash: string;
  resetMark: string | null;
}

interface Slot {
  dir: string;
  mode: WriteMode;
  overlay: Overlay | null;
  base: (BaseDisk & { close(): void }) | null;
  refs: number;
  /** Acquires under way (counted before they open anything: a sweep must not remove the folder under them). */
  pending: number;
  /** Who holds it now (in memory) and who last did (owner.json). */
  owner: Owner | null;
  /** Serialises opens, closes and discards of this slot. */
  lock: Promise<void>;
}

export interface WriteCachesOptions {
  dir: string;
  log: LogFn;
  /** Closes the connections of a boot that a newer one replaces; they release their leases as they go. */
  supersede: (mode: WriteMode, mac: string, vdiskId: string, olderThan: string) => void;
  /** How long a newer boot waits for the older one's connections to let go. @default 5000 */
  supersedeWaitMs?: number;
  /** @default Date.now */
  clock?: () => number;
}

/** How long after a boot began its first connection may create its write cache (clock skew between appliances included). */
export const FIRST_USE_MS = 15 * 60_000;

const DIRS: Record<WriteMode, string> = { 'appliance-temporary': 'temporary', 'appliance-persistent': 'persistent', image: 'image' };

export class WriteCaches {
  private readonly slots = new Map<string, Slot>();
  private released: (() => void)[] = [];

  private constructor(private readonly opts: WriteCachesOptions) {}

  private now(): number {
    return (this.opts.clock ?? Date.now)();
  }

  static async open(opts: WriteCachesOptions): Promise<WriteCaches> {
    for (const d of Object.values(DIRS)) await mkdir(join(opts.dir, d), { recursive: true, mode: 0o700 });
    return new WriteCaches(opts);
  }

  private slotDir(r: Pick<LeaseRequest, 'mode' | 'mac' | 'vdiskId' | 'version'>): string {
    // Only checked shapes reach the path: a MAC's hex digits, an object id, a number.
    const mac = r.mac.replace(/:/g, '');
    if (!/^[0-9a-f]{12}$/.test(mac) || !/^[a-z]{2,4}_[a-z2-7]{16}$/.test(r.vdiskId) || !Number.isSafeInteger(r.version)) throw new Error('bad write cache key');
    const name = r.mode === 'image' ? `${r.vdiskId}.${r.version}` : `${mac}.${r.vdiskId}`;
    return join(this.opts.dir, DIRS[r.mode], name);
  }

  private slot(r: LeaseRequest): Slot {
    const dir = this.slotDir(r);
    let s = this.slots.get(dir);
    if (!s) {
      s = { dir, mode: r.mode, overlay: null, base: null, refs: 0, pending: 0, owner: null, lock: Promise.resolve() };
      this.slots.set(dir, s);
    }
    return s;
  }

  private async withLock<T>(s: Slot, f: () => Promise<T>): Promise<T> {
    const run = s.lock.then(f, f);
    s.lock = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  private async readOwner(dir: string): Promise<Owner | null> {
    try {
      return JSON.parse(await readFile(join(dir, 'owner.json'), 'utf8')) as Owner;
    } catch {
      return null;
    }
  }

  /** Whether a lease would be granted now (OPT_INFO); takes nothing. */
  async check(r: LeaseRequest): Promise<Refusal | null> {
    const s = this.slot(r);
    const owner = s.owner ?? (await this.readOwner(s.dir));
    return this.refusal(s, owner, r);
  }

  private refusal(s: Slot, owner: Owner | null, r: LeaseRequest): Refusal | null {
    if (r.mode === 'image' && s.refs > 0 && owner && owner.mac !== r.mac)
      return { refused: 'policy', message: `version ${r.version} of vDisk ${r.vdiskId} is being written by target ${owner.mac}: a private image or maintenance version has one writer at a time` };
    if (owner && owner.mac === r.mac && owner.bootId !== r.bootId && newerBoot(owner.bootId, r.bootId))
      return { refused: 'policy', message: `target ${r.mac} has booted again since this export name was made: use the name from its newest boot script` };
    // A boot this appliance has not served yet starts a cache here only soon after it began: a running OS that
    // comes back late (after a failover, after its cache was swept) is refused, never handed an empty disk.
    const age = this.now() - bootTime(r.bootId);
    if ((!owner || owner.bootId !== r.bootId) && age > FIRST_USE_MS)
      return { refused: 'policy', message: `this boot of target ${r.mac} began ${Math.round(age / 60_000)} min ago and its write cache is not on this appliance: restart the target` };
    return null;
  }

  async acquire(r: LeaseRequest): Promise<Lease | Refusal> {
    const s = this.slot(r);
    s.pending++;
    try {
      return await this.acquireSlot(s, r);
    } finally {
      s.pending--;
    }
  }

  private async acquireSlot(s: Slot, r: LeaseRequest): Promise<Lease | Refusal> {
    // A newer boot first closes the older boot's connections and waits for them to let go.
    const pre = s.owner ?? (await this.readOwner(s.dir));
    if (s.refs > 0 && pre && pre.mac === r.mac && pre.bootId !== r.bootId && !this.refusal(s, pre, r)) {
      this.opts.log('info', 'target booted again: closing the previous boot\'s disk connections', { mac: r.mac, vdiskId: r.vdiskId, previousBoot: pre.bootId, boot: r.bootId });
      this.opts.supersede(r.mode, r.mac, r.vdiskId, r.bootId);
      const until = Date.now() + (this.opts.supersedeWaitMs ?? 5000);
      while (s.refs > 0 && Date.now() < until)
        await new Promise<void>((ok) => {
          const t = setTimeout(ok, Math.max(1, until - Date.now()));
          this.released.push(() => {
            clearTimeout(t);
            ok();
          });
        });
      if (s.refs > 0) return { refused: 'policy', message: `the previous boot of target ${r.mac} still holds its write cache; try again` };
    }
    return this.withLock(s, async () => {
      const owner = s.owner ?? (await this.readOwner(s.dir));
      const no = this.refusal(s, owner, r);
      if (no) return no;
      if (!s.overlay) await this.openSlot(s, owner, r);
      else s.overlay.setLimit(r.limitBytes);
      s.refs++;
      let released = false;
      return {
        overlay: s.overlay!,
        release: () => {
          if (released) return;
          released = true;
          void this.release(s);
        },
      };
    });
  }

  /** Opens (or empties and opens) the slot's overlay for this boot. Runs under the slot's lock. */
  private async openSlot(s: Slot, owner: Owner | null, r: LeaseRequest): Promise<void> {
    const log = this.opts.log;
    const fields = { mac: r.mac, vdiskId: r.vdiskId, version: r.version, mode: r.mode, dir: s.dir };
    let why: string | null = null;
    if (owner) {
      if (r.mode === 'appliance-temporary' && owner.bootId !== r.bootId) why = 'the target booted again';
      else if (owner.contentHash !== r.contentHash) why = 'the target now boots other content';
      else if (r.mode === 'appliance-persistent' && owner.bootId !== r.bootId && owner.resetMark !== r.resetMark) why = 'an administrator reset it';
    }
    if (why) {
      await Overlay.destroy(s.dir);
      log('info', `write cache emptied: ${why}`, fields);
    }
    const base = r.openBase();
    const identity = { vdiskId: r.vdiskId, contentHash: r.contentHash, ...(r.mode === 'image' ? { version: r.version } : { mac: r.mac }) };
    let overlay: Overlay;
    try {
      overlay = await Overlay.open({ dir: s.dir, base, limitBytes: r.limitBytes, identity });
    } catch (e) {
      if (!(e instanceof OverlayMismatch)) {
        base.close();
        throw e;
      }
      log('warn', 'write cache was made for other content or geometry: emptied', { ...fields, reason: e.message });
      await Overlay.destroy(s.dir);
      overlay = await Overlay.open({ dir: s.dir, base, limitBytes: r.limitBytes, identity }).catch((e2: unknown) => {
        base.close();
        throw e2;
      });
    }
    // The reset mark an overlay answers to changes only when it is emptied: a reset seen by a reconnect of the
    // running boot must still empty it at the next boot.
    const next: Owner = owner && !why ? { ...owner, bootId: r.bootId, mac: r.mac } : { bootId: r.bootId, mac: r.mac, contentHash: r.contentHash, resetMark: r.resetMark };
    try {
      await writeFileAtomic(join(s.dir, 'owner.json'), JSON.stringify(next), 0o600);
    } catch (e) {
      // Without its owner record the overlay must not be used (a later boot could not tell it apart): let it go.
      await overlay.close().catch(() => undefined);
      base.close();
      throw e;
    }
    s.owner = next;
    s.overlay = overlay;
    s.base = base;
    if (!owner || why) log('info', 'write cache created', fields);
  }

  private async release(s: Slot): Promise<void> {
    s.refs--;
    const waiters = this.released;
    this.released = [];
    if (s.refs > 0) {
      for (const w of waiters) w();
      return;
    }
    await this.withLock(s, async () => {
      if (s.refs > 0 || !s.overlay) return;
      const o = s.overlay;
      const b = s.base;
      s.overlay = null;
      s.base = null;
      // Flushed on close: the writes of a target that went away are kept as far as they got.
      await o.close().catch((e: Error) => this.opts.log('error', 'write cache did not close cleanly', { dir: s.dir, reason: e.message }));
      b?.close();
    });
    for (const w of waiters) w();
  }

  /**
   * Drops the temporary and persistent caches of targets the farm no longer
   * has (or whose vDisk is no longer assigned to them), when no connection
   * uses them: a deleted target's writes are not kept for ever. Images are
   * never dropped here.
   */
  async sweep(keep: (mac: string, vdiskId: string) => boolean): Promise<number> {
    let n = 0;
    for (const mode of ['appliance-temporary', 'appliance-persistent'] as const) {
      const root = join(this.opts.dir, DIRS[mode]);
      for (const name of await readdir(root).catch(() => [] as string[])) {
        const m = /^([0-9a-f]{12})\.([a-z]{2,4}_[a-z2-7]{16})$/.exec(name);
        if (!m) continue;
        const mac = m[1]!.match(/../g)!.join(':');
        if (keep(mac, m[2]!)) continue;
        const dir = join(root, name);
        const slot = this.slots.get(dir);
        if (slot && (slot.refs > 0 || slot.pending > 0)) continue;
        const drop = async () => {
          const now = this.slots.get(dir);
          if (now && (now.refs > 0 || now.pending > 0 || now.overlay)) return;
          await rm(dir, { recursive: true, force: true });
          if (now) now.owner = null;
          n++;
          this.opts.log('info', 'write cache dropped: its target is gone or no longer has the vDisk', { mac, vdiskId: m[2], mode, dir });
        };
        await (slot ? this.withLock(slot, drop) : drop());
      }
    }
    return n;
  }

  /** Overlays open now, for health and metrics. */
  usage(): { mode: WriteMode; mac: string; dir: string; usedBytes: number; connections: number }[] {
    return [...this.slots.values()].filter((s) => s.overlay).map((s) => ({ mode: s.mode, mac: s.owner?.mac ?? '', dir: s.dir, usedBytes: s.overlay!.usedBytes(), connections: s.refs }));
  }

  /** Closes every open overlay (flushing it). */
  async close(): Promise<void> {
    await Promise.all(
      [...this.slots.values()].map((s) =>
        this.withLock(s, async () => {
          const o = s.overlay;
          s.overlay = null;
          await o?.close().catch(() => undefined);
          s.base?.close();
          s.base = null;
        }),
      ),
    );
  }
}
