/**
 * Streaming sessions: one per target and vDisk version, alive while the
 * target keeps reading (PVS counts connected devices per server). The count
 * per vDisk is the load the balancer weighs. A session holds its version open
 * in the cache, so it is never evicted under a reading target.
 */
import type { VdiskReader } from './cache/vdisk-cache.js';

export interface Session {
  client: string;
  vdiskId: string;
  number: number;
  protocol: 'http' | 'nbd';
  reader: VdiskReader;
  openedAt: number;
  lastSeen: number;
  bytes: number;
  /** Responses being sent: a session is never closed under one. */
  inFlight: number;
  /** Open NBD connections: a session is never closed while one is open, however idle. */
  connections: number;
  /** A read-only NBD export: a rebalance may move it to another appliance (writable ones stay with their write cache). */
  movable?: boolean;
}

export class Sessions {
  private readonly byKey = new Map<string, Session>();
  private readonly timer: NodeJS.Timeout;

  constructor(
    /** A session with no request for this long is closed. */
    private readonly idleMs: number,
    private readonly clock: () => number = Date.now,
    /** Told of each new session (logs). */
    private readonly onOpen: (s: Session) => void = () => undefined,
  ) {
    this.timer = setInterval(() => this.sweep(), Math.max(1000, Math.floor(idleMs / 4)));
    this.timer.unref();
  }

  /** The session of this client for this version, opened with `open` if it has none. */
  touch(client: string, vdiskId: string, number: number, protocol: Session['protocol'], open: () => VdiskReader): Session {
    const key = `${client}|${vdiskId}.${number}|${protocol}`;
    const now = this.clock();
    let s = this.byKey.get(key);
    if (!s) {
      s = { client, vdiskId, number, protocol, reader: open(), openedAt: now, lastSeen: now, bytes: 0, inFlight: 0, connections: 0 };
      this.byKey.set(key, s);
      this.onOpen(s);
    }
    s.lastSeen = now;
    return s;
  }

  /** Distinct clients reading any version of this vDisk. */
  countFor(vdiskId: string): number {
    return new Set([...this.byKey.values()].filter((s) => s.vdiskId === vdiskId).map((s) => s.client)).size;
  }

  /** Distinct clients per vDisk, for the vDisks read now. */
  countsByVdisk(): Record<string, number> {
    const clients = new Map<string, Set<string>>();
    for (const s of this.byKey.values()) {
      let set = clients.get(s.vdiskId);
      if (!set) clients.set(s.vdiskId, (set = new Set()));
      set.add(s.client);
    }
    return Object.fromEntries([...clients].map(([id, set]) => [id, set.size]));
  }

  /** Bytes sent since start, every vDisk. */
  bytesTotal(): number {
    let n = 0;
    for (const b of this.bytesByVdisk.values()) n += b;
    return n;
  }

  /** Distinct clients reading anything. */
  total(): number {
    return new Set([...this.byKey.values()].map((s) => s.client)).size;
  }

  /** Bytes served per vDisk since start (also for sessions already closed). */
  readonly bytesByVdisk = new Map<string, number>();

  /** Counts bytes sent for a session; keeps it alive while it streams. */
  sent(s: Session, n: number): void {
    s.bytes += n;
    s.lastSeen = this.clock();
    this.bytesByVdisk.set(s.vdiskId, (this.bytesByVdisk.get(s.vdiskId) ?? 0) + n);
  }

  /** A connection holds the session open (NBD: an OS may not read its disk for hours). */
  hold(s: Session): void {
    s.connections++;
  }

  /** The connection is gone; the session closes when it has been idle long enough. */
  release(s: Session): void {
    s.connections = Math.max(0, s.connections - 1);
    s.lastSeen = this.clock();
  }

  list(): Session[] {
    return [...this.byKey.values()];
  }

  sweep(): void {
    const now = this.clock();
    for (const [key, s] of this.byKey)
      if (s.inFlight === 0 && s.connections === 0 && now - s.lastSeen > this.idleMs) {
        this.byKey.delete(key);
        s.reader.close();
      }
  }

  close(): void {
    clearInterval(this.timer);
    for (const s of this.byKey.values()) s.reader.close();
    this.byKey.clear();
  }
}
