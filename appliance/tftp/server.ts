/**
 * Read-only TFTP server: a thin shell of sockets and timers around the codec
 * (codec.ts), option negotiation (negotiate.ts), path checks (paths.ts),
 * block arithmetic (blocks.ts) and file sources (source.ts).
 *
 * - Every transfer has its own socket on an ephemeral port, connected to the
 *   client (RFC 1350 section 4: each end picks a TID; the kernel then drops
 *   packets from any other address or port, as in.tftpd's connected socket
 *   does, instead of answering them with error 5).
 * - Writes are refused (ERROR 2). Only octet mode: netascii would change the
 *   bytes of a boot loader, and gets an ERROR saying so.
 * - Retransmission: when the retransmit timer runs out, the whole
 *   unacknowledged window is sent again and the timer doubles, up to
 *   `maxTimeoutMs`; after `maxRetries` silent rounds the transfer is dropped.
 *   Any ACK that moves the window resets the timer.
 * - The OACK is sent again at once when the client repeats its RRQ (it did
 *   not get it), and by the timer only every `oackTimeoutMs` (6 s, or the
 *   client's `timeout` plus one of ours): the client retransmits first.
 *   When only the client's ACK 0 was lost, a second OACK is harmless to
 *   curl, iPXE and EDK2 but makes atftp abort ("unexpected OACK"), and
 *   atftp (5 s), EDK2 and iPXE resend their ACK 0 on their own; curl does
 *   not (after an OACK it waits 72 s), so the timer must still resend, late.
 * - An ACK for a block already acknowledged is ignored: it never triggers a
 *   retransmission (RFC 1123 section 4.2.3.1, the Sorcerer's Apprentice
 *   bug). An ACK for a block inside the window that was sent (RFC 7440
 *   section 4: the client saw a gap after it) moves the window there and
 *   sends from the next block.
 * - An ERROR from the client ends the transfer quietly (EDK2 asks for tsize,
 *   then aborts with error 8, then asks again; iPXE's size probe aborts with 0).
 * - A repeated RRQ from the same client port for the same request, before
 *   the transfer got its first ACK, is a retransmission: it starts nothing
 *   new; it gets the OACK again, or DATA 1 from the transfer's own timer. A
 *   different request from that port replaces the transfer.
 * - A malformed packet is logged (at most a few a minute) and dropped; no
 *   packet can throw out of a socket handler. Only binding the listening
 *   socket is fatal, and it happens before `startTftpServer` resolves.
 *
 * Limitation: on a multi-homed host listening on 0.0.0.0, replies leave from
 * the address routing picks (Node cannot read a datagram's destination
 * address); bind `host` to the boot interface's address on such hosts.
 */
import { createSocket, type RemoteInfo, type Socket, type SocketType } from 'node:dgram';
import { isIPv6 } from 'node:net';
import type { LogFn } from '../log.js';
import { ackedBlock, blockRange, lastBlock, windowAfter, wireBlock } from './blocks.js';
import { ackBlock, describeTftp, decodeTftp, encodeTftp, TFTP_ERROR_CODES, TftpDecodeError, type TftpPacket, type TftpRequest } from './codec.js';
import { negotiate, type Negotiated } from './negotiate.js';
import { resolveTftpPath } from './paths.js';
import { DEFAULT_CHUNK_BYTES, FileCache, FileChangedError, NotRegularFileError, type BlockSource, type FileCacheOptions, type FileCacheStats } from './source.js';

export interface TftpServerOptions {
  /** Address to listen on; transfer sockets bind to it too. @default '0.0.0.0' */
  host?: string;
  /** @default 69 */
  port?: number;
  /** The folder served, read at each request (the configuration may change it). Must be absolute. */
  root: () => string;
  /** Folders outside the root that symlinks inside it may lead to (see paths.ts). @default [] */
  symlinkTargets?: readonly string[];
  /** @default 65464 (RFC 2348's largest) */
  maxBlksize?: number;
  /** Largest window granted (RFC 7440). @default 64 */
  maxWindowSize?: number;
  /** Largest window in bytes (blocks x blksize): keeps a window inside a client's default socket buffer. @default 128 KiB */
  maxWindowBytes?: number;
  /**
   * Initial retransmit timeout. A client's `timeout` option (RFC 2349) is acknowledged as asked and
   * caps it: the first retransmission comes after min(timeoutMs, client's timeout), and the doubling
   * may grow up to the client's timeout (see negotiate.ts for why not exactly the client's value).
   * @default 1000
   */
  timeoutMs?: number;
  /** Cap of the doubling retransmit timeout (raised to the client's `timeout` option when larger). @default 8000 */
  maxTimeoutMs?: number;
  /** Retransmissions in a row without progress before a transfer is dropped. @default 6 */
  maxRetries?: number;
  /**
   * Interval at which the timer resends an unanswered OACK (no doubling: one small packet); longer
   * than the client's `timeout` option when it sent one. A repeated RRQ gets the OACK at once. See
   * the module comment. @default 6000 (atftp resends its ACK 0 after 5 s, EDK2 after about 3, iPXE sooner)
   */
  oackTimeoutMs?: number;
  /** Transfers at once; requests above it are dropped (the client retries) and logged. @default 4096 */
  maxTransfers?: number;
  /** In-memory cache of small files (see source.ts). */
  cache?: FileCacheOptions;
  log?: LogFn;
}

export interface TftpServerStats {
  /** Transfers in progress. */
  active: number;
  /** Read requests that got a file (OACK or DATA). */
  started: number;
  /** Transfers whose last block was acknowledged. */
  completed: number;
  /** Transfers dropped after `maxRetries`, or ended by a read error or a changed file. */
  failed: number;
  /** Transfers the client ended with an ERROR (tsize probes included). */
  aborted: number;
  /** Requests answered with an ERROR: not found, access violation, write, bad mode. */
  refused: number;
  /** Repeated RRQs ignored (see the module comment). */
  duplicateRequests: number;
  /** Packets that did not decode, or that had no business arriving on the listening port. */
  malformed: number;
  /** Requests dropped because `maxTransfers` were running. */
  overload: number;
  /** DATA packets sent for the first time, and their payload bytes. */
  dataPackets: number;
  dataBytes: number;
  /** DATA packets (and OACKs) sent again after a timeout or a gap. */
  retransmits: number;
  cache: FileCacheStats;
}

export interface TftpServer {
  /** The bound port (useful with port 0). */
  port: number;
  stats(): TftpServerStats;
  /** Stops listening and ends every transfer. */
  close(): Promise<void>;
}

const noLog: LogFn = () => undefined;

interface Peer {
  address: string;
  port: number;
}

interface Settings {
  host: string;
  type: SocketType;
  root: () => string;
  symlinkTargets: readonly string[];
  limits: { maxBlksize: number; maxWindowSize: number; maxWindowBytes: number; defaultTimeoutMs: number };
  maxTimeoutMs: number;
  maxRetries: number;
  oackTimeoutMs: number;
}

function positiveInt(v: number | undefined, fallback: number, what: string, min = 1, max = Number.MAX_SAFE_INTEGER): number {
  const n = v ?? fallback;
  if (!Number.isInteger(n) || n < min || n > max) throw new RangeError(`tftp ${what}: ${v} is not an integer in ${min}-${max}`);
  return n;
}

export async function startTftpServer(o: TftpServerOptions): Promise<TftpServer> {
  const host = o.host ?? '0.0.0.0';
  const settings: Settings = {
    host,
    type: isIPv6(host) ? 'udp6' : 'udp4',
    root: o.root,
    symlinkTargets: o.symlinkTargets ?? [],
    limits: {
      maxBlksize: positiveInt(o.maxBlksize, 65464, 'maxBlksize', 8, 65464),
      maxWindowSize: positiveInt(o.maxWindowSize, 64, 'maxWindowSize', 1, 65535),
      maxWindowBytes: positiveInt(o.maxWindowBytes, 128 * 1024, 'maxWindowBytes'),
      defaultTimeoutMs: positiveInt(o.timeoutMs, 1000, 'timeoutMs'),
    },
    maxTimeoutMs: positiveInt(o.maxTimeoutMs, 8000, 'maxTimeoutMs'),
    maxRetries: positiveInt(o.maxRetries, 6, 'maxRetries', 0),
    oackTimeoutMs: positiveInt(o.oackTimeoutMs, 6000, 'oackTimeoutMs'),
  };
  const maxTransfers = positiveInt(o.maxTransfers, 4096, 'maxTransfers');
  const log = o.log ?? noLog;
  const warnThrottled = throttle(log, 10, 60_000);
  const cache = new FileCache(o.cache);
  const counters = {
    started: 0,
    completed: 0,
    failed: 0,
    aborted: 0,
    refused: 0,
    duplicateRequests: 0,
    malformed: 0,
    overload: 0,
    dataPackets: 0,
    dataBytes: 0,
    retransmits: 0,
  };
  const transfers = new Map<string, Transfer>();
  // Refusals say why a target does not boot (a wrong file name is the usual PXE problem): logged, but a flood of bad requests cannot flood the log.
  const ctx: Context = { settings, counters, cache, log, logRefusal: throttle(log, 60, 60_000), transfers };

  const listener = createSocket({ type: settings.type });
  await new Promise<void>((resolve, reject) => {
    listener.once('error', reject);
    listener.bind({ address: host, port: o.port ?? 69, exclusive: true }, () => {
      listener.off('error', reject);
      resolve();
    });
  });
  listener.on('error', (e) => log('warn', 'tftp: listening socket error', { error: e.message }));
  listener.on('message', (msg, rinfo) => {
    try {
      onRequest(ctx, msg, rinfo, maxTransfers, warnThrottled);
    } catch (e) {
      log('error', 'tftp: request handler failed', { client: `${rinfo.address}:${rinfo.port}`, error: (e as Error).message });
    }
  });
  const port = listener.address().port;
  log('info', 'tftp: listening', { host, port });

  let closing: Promise<void> | undefined;
  return {
    port,
    stats: () => ({ active: transfers.size, ...counters, cache: cache.stats() }),
    close: () =>
      (closing ??= (async () => {
        await new Promise<void>((r) => listener.close(() => r()));
        await Promise.all([...transfers.values()].map((t) => t.end('server closing')));
      })()),
  };
}

interface Context {
  settings: Settings;
  counters: Omit<TftpServerStats, 'active' | 'cache'>;
  cache: FileCache;
  log: LogFn;
  logRefusal: LogFn;
  transfers: Map<string, Transfer>;
}

function onRequest(ctx: Context, msg: Buffer, rinfo: RemoteInfo, maxTransfers: number, warnThrottled: LogFn): void {
  const client = `${rinfo.address}:${rinfo.port}`;
  if (rinfo.port === 0) {
    // Nothing can be sent back to port 0 (and Node throws trying).
    ctx.counters.malformed++;
    warnThrottled('warn', 'tftp: packet from port 0 dropped', { client });
    return;
  }
  let packet: TftpPacket;
  try {
    packet = decodeTftp(msg);
  } catch (e) {
    if (!(e instanceof TftpDecodeError)) throw e;
    ctx.counters.malformed++;
    warnThrottled('warn', 'tftp: malformed packet dropped', { client, error: e.message, bytes: msg.length });
    return;
  }
  if (packet.op === 'WRQ') {
    ctx.counters.refused++;
    ctx.logRefusal('info', 'tftp: write refused', { client, file: packet.filename });
    sendOnce(ctx.settings, rinfo, { op: 'ERROR', code: TFTP_ERROR_CODES.ACCESS_VIOLATION, message: 'this server is read-only' }, ctx.log);
    return;
  }
  if (packet.op !== 'RRQ') {
    // DATA/ACK/ERROR/OACK belong on a transfer's port: a late packet of a finished transfer, or noise.
    ctx.counters.malformed++;
    warnThrottled('warn', 'tftp: unexpected packet on the listening port dropped', { client, packet: describeTftp(packet) });
    return;
  }
  const existing = ctx.transfers.get(client);
  if (existing) {
    if (existing.isRetransmissionOf(packet)) {
      ctx.counters.duplicateRequests++;
      existing.onRepeatedRequest();
      return;
    }
    void existing.end('replaced by a new request from the same port');
  }
  if (ctx.transfers.size >= maxTransfers) {
    ctx.counters.overload++;
    warnThrottled('warn', 'tftp: too many transfers, request dropped', { client, max: maxTransfers });
    return;
  }
  const t = new Transfer(ctx, { address: rinfo.address, port: rinfo.port }, packet);
  ctx.transfers.set(client, t);
  void t.start();
}

/** An ERROR for a request refused before a transfer exists, from its own socket (a new TID, as for any reply). */
function sendOnce(s: Settings, to: Peer, packet: TftpPacket, log: LogFn): void {
  const sock = createSocket({ type: s.type });
  sock.on('error', (e) => {
    log('debug', 'tftp: reply socket error', { error: e.message });
    void closeSocket(sock);
  });
  sock.bind({ address: s.host, port: 0 }, () => {
    try {
      sock.send(encodeTftp(packet), to.port, to.address, () => void closeSocket(sock));
    } catch (e) {
      log('debug', 'tftp: reply not sent', { error: (e as Error).message });
      void closeSocket(sock);
    }
  });
}

type State = 'starting' | 'oack' | 'data' | 'done';

class Transfer {
  private state: State = 'starting';
  private sock: Socket | undefined;
  private source: BlockSource | undefined;
  private params: Negotiated | undefined;
  private size = 0;
  private last = 0;
  /** Highest block acknowledged (0: nothing yet, or the OACK). */
  private acked = 0;
  /** Highest block sent. */
  private sent = 0;
  private loading = false;
  private timer: NodeJS.Timeout | undefined;
  private armedAt = 0;
  private lastProgress = 0;
  private timeoutMs = 0;
  private retries = 0;
  private readonly startedAt = Date.now();
  private readonly key: string;
  private readonly label: Record<string, unknown>;

  constructor(
    private readonly ctx: Context,
    private readonly peer: Peer,
    private readonly request: TftpRequest,
  ) {
    this.key = `${peer.address}:${peer.port}`;
    this.label = { client: this.key, file: request.filename };
  }

  /** A method, not a field test: TypeScript would narrow `state` across awaits. */
  private ended(): boolean {
    return this.state === 'done';
  }

  /** True when `p` is this request again and nothing has been acknowledged yet. */
  isRetransmissionOf(p: TftpRequest): boolean {
    return this.acked === 0 && this.state !== 'done' && (this.state === 'starting' || this.sent <= 1) && sameRequest(p, this.request);
  }

  async start(): Promise<void> {
    try {
      await this.open();
    } catch (e) {
      if (!this.ended()) this.ctx.log('error', 'tftp: transfer failed to start', { ...this.label, error: (e as Error).message });
      await this.end('start failed');
    }
  }

  /** The client sent its RRQ again: if it is waiting for an OACK, it did not get it. */
  onRepeatedRequest(): void {
    if (this.state !== 'oack' || !this.params) return;
    this.ctx.counters.retransmits++;
    this.send(encodeTftp({ op: 'OACK', options: this.params.oack }));
    this.arm(); // the client gets its time again before the timer resends
  }

  /** Runs a callback from a timer or a promise: nothing may throw out of it (an uncaught error would end the process). */
  private safely(what: string, fn: () => void): void {
    try {
      fn();
    } catch (e) {
      this.ctx.log('error', `tftp: ${what} failed`, { ...this.label, error: (e as Error).message });
      void this.end(`${what} failed`);
    }
  }

  private async open(): Promise<void> {
    const { settings, counters, cache, log } = this.ctx;
    await this.bindSocket();
    if (this.ended()) return;
    if (this.request.mode.toLowerCase() !== 'octet') {
      return this.refuse(TFTP_ERROR_CODES.ILLEGAL_OPERATION, `mode ${this.request.mode} is not supported: use octet (binary) mode`);
    }
    let root: string;
    try {
      root = settings.root();
    } catch (e) {
      return this.refuse(TFTP_ERROR_CODES.NOT_DEFINED, 'server root is not available', (e as Error).message);
    }
    const resolved = await resolveTftpPath(root, this.request.filename, settings.symlinkTargets);
    if (this.ended()) return;
    if (!resolved.ok) return this.refuse(resolved.code, resolved.message);
    let source: BlockSource;
    try {
      source = await cache.open(resolved.path, DEFAULT_CHUNK_BYTES);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (e instanceof NotRegularFileError) return this.refuse(TFTP_ERROR_CODES.ACCESS_VIOLATION, 'not a regular file');
      if (code === 'ENOENT' || code === 'ENOTDIR') return this.refuse(TFTP_ERROR_CODES.FILE_NOT_FOUND, 'file not found');
      if (code === 'EACCES' || code === 'EPERM' || code === 'ELOOP') return this.refuse(TFTP_ERROR_CODES.ACCESS_VIOLATION, 'permission denied');
      return this.refuse(TFTP_ERROR_CODES.NOT_DEFINED, 'cannot read the file', (e as Error).message);
    }
    if (this.ended()) {
      await source.close();
      return;
    }
    this.source = source;
    this.size = source.size;
    const params = negotiate(this.request.options, this.size, settings.limits);
    this.params = params;
    this.last = lastBlock(this.size, params.blksize);
    this.timeoutMs = params.timeoutMs;
    counters.started++;
    log('debug', 'tftp: sending', { ...this.label, path: resolved.path, size: this.size, blksize: params.blksize, windowsize: params.windowsize, oack: params.oack.length > 0, ignored: params.ignored.map((x) => x.name) });
    if (params.oack.length > 0) {
      this.state = 'oack';
      this.send(encodeTftp({ op: 'OACK', options: params.oack }));
      // Long enough for one of the client's own retransmissions (its `timeout` option) to come first.
      this.timeoutMs = Math.max(settings.oackTimeoutMs, params.timeoutMs, params.clientTimeoutMs === undefined ? 0 : params.clientTimeoutMs + params.timeoutMs);
      this.arm();
    } else {
      this.state = 'data';
      this.arm();
      this.pump();
    }
  }

  private bindSocket(): Promise<void> {
    const { settings } = this.ctx;
    const sock = createSocket({ type: settings.type });
    this.sock = sock;
    sock.on('error', (e: NodeJS.ErrnoException) => {
      // A connected socket hears ICMP port unreachable as ECONNREFUSED: the client is gone.
      if (e.code === 'ECONNREFUSED') void this.end('client port closed', 'aborted');
      else this.ctx.log('debug', 'tftp: transfer socket error', { ...this.label, error: e.message });
    });
    sock.on('message', (msg) => {
      try {
        this.onMessage(msg);
      } catch (e) {
        this.ctx.log('error', 'tftp: packet handler failed', { ...this.label, error: (e as Error).message });
        void this.end('packet handler failed');
      }
    });
    return new Promise<void>((resolve, reject) => {
      const fail = (e: Error) => reject(e);
      sock.once('error', fail);
      sock.bind({ address: settings.host, port: 0 }, () => {
        if (this.sock !== sock) return reject(new Error('transfer ended while binding'));
        try {
          sock.connect(this.peer.port, this.peer.address, () => {
            sock.off('error', fail);
            resolve();
          });
        } catch (e) {
          reject(e as Error);
        }
      });
    });
  }

  private async refuse(code: number, message: string, detail?: string): Promise<void> {
    this.ctx.counters.refused++;
    this.ctx.logRefusal('info', 'tftp: request refused', { ...this.label, code, reason: message, ...(detail ? { detail } : {}) });
    await this.sendAndWait(encodeTftp({ op: 'ERROR', code, message }));
    await this.end(message, 'none');
  }

  private onMessage(msg: Buffer): void {
    if (this.state === 'done' || this.state === 'starting') return;
    // The packet that comes once per block, without building a packet object.
    const block = ackBlock(msg);
    if (block !== null) return this.onAck(block);
    let p: TftpPacket;
    try {
      p = decodeTftp(msg);
    } catch (e) {
      if (!(e instanceof TftpDecodeError)) throw e;
      this.ctx.counters.malformed++;
      this.ctx.log('debug', 'tftp: malformed packet in a transfer dropped', { ...this.label, error: e.message });
      return;
    }
    if (p.op === 'ERROR') {
      // Quiet: EDK2's tsize probe ends this way on every boot.
      this.ctx.log('debug', 'tftp: client ended the transfer', { ...this.label, code: p.code, message: p.message });
      void this.end(`client error ${p.code}`, 'aborted');
      return;
    }
    this.ctx.log('debug', 'tftp: unexpected packet in a transfer dropped', { ...this.label, packet: describeTftp(p) });
  }

  private onAck(block: number): void {
    if (this.state === 'oack') {
      if (block !== 0) return;
      this.state = 'data';
      this.progress();
      this.pump();
      return;
    }
    const n = ackedBlock(block, this.acked, this.sent);
    if (n === null) return; // duplicate or old: never a retransmission (Sorcerer's Apprentice)
    this.acked = n;
    if (n === this.last) {
      void this.end('complete', 'completed');
      return;
    }
    this.progress();
    this.pump();
  }

  /** Sends what the window allows after `acked`, loading file data first when needed. */
  private pump(): void {
    if (this.state !== 'data' || this.loading || !this.source || !this.params) return;
    const { blksize, windowsize } = this.params;
    const { from, to } = windowAfter(this.acked, windowsize, this.last);
    const start = blockRange(from, blksize, this.size).offset;
    const end = Math.min(to * blksize, this.size);
    if (this.source.peek(start, end - start) === null) {
      this.loading = true;
      this.source.load(start, Math.max(end - start, blksize * windowsize)).then(
        () =>
          this.safely('send', () => {
            this.loading = false;
            this.pump();
          }),
        (e: Error) => void this.fail(e),
      );
      return;
    }
    const { counters } = this.ctx;
    for (let b = from; b <= to; b++) {
      const r = blockRange(b, blksize, this.size);
      const payload = this.source.peek(r.offset, r.length);
      if (payload === null) return; // cannot happen: the whole range was checked
      this.send(encodeTftp({ op: 'DATA', block: wireBlock(b), data: payload }));
      if (b > this.sent) {
        this.sent = b;
        counters.dataPackets++;
        counters.dataBytes += r.length;
      } else {
        counters.retransmits++;
      }
    }
  }

  /** Starts the retransmit timer: it fires `delay` ms from now. */
  private arm(delay = this.timeoutMs): void {
    clearTimeout(this.timer);
    this.armedAt = performance.now();
    this.timer = setTimeout(this.onTimer, delay);
  }

  /**
   * Progress does not touch the timer (one ACK per block would reset it thousands of times a
   * second): it records when it happened, and the timer, when it fires, waits for the rest of the
   * timeout counted from the last progress.
   */
  private readonly onTimer = (): void =>
    this.safely('retransmission', () => {
      const rest = this.lastProgress + this.timeoutMs - performance.now();
      if (this.lastProgress > this.armedAt && rest >= 1) this.arm(rest);
      else this.onTimeout();
    });

  /** The client moved: back to the initial timeout, retry count cleared. */
  private progress(): void {
    this.retries = 0;
    this.lastProgress = performance.now();
    const initial = this.params?.timeoutMs ?? this.timeoutMs;
    if (this.timeoutMs !== initial) {
      this.timeoutMs = initial;
      this.arm();
    }
  }

  private onTimeout(): void {
    if (this.state === 'done' || !this.params) return;
    if (this.retries >= this.ctx.settings.maxRetries) {
      this.ctx.counters.failed++;
      this.ctx.log('warn', 'tftp: client stopped answering, transfer dropped', { ...this.label, ackedBlocks: this.acked, of: this.last, retries: this.retries });
      void this.end('timeout');
      return;
    }
    this.retries++;
    this.ctx.log('debug', 'tftp: timeout, resending', { ...this.label, state: this.state, fromBlock: this.acked + 1, retry: this.retries, waitedMs: this.timeoutMs });
    // DATA backs off; the OACK keeps its pace: it is one small packet, sent every oackTimeoutMs at most.
    if (this.state === 'data') this.timeoutMs = Math.min(this.timeoutMs * 2, Math.max(this.ctx.settings.maxTimeoutMs, this.params.timeoutMs, this.params.clientTimeoutMs ?? 0));
    if (this.state === 'oack') {
      this.ctx.counters.retransmits++;
      this.send(encodeTftp({ op: 'OACK', options: this.params.oack }));
    } else {
      this.pump(); // from the first unacknowledged block: the whole window again
    }
    this.arm();
  }

  private async fail(e: Error): Promise<void> {
    if (this.state === 'done') return;
    this.ctx.counters.failed++;
    const changed = e instanceof FileChangedError;
    this.ctx.log(changed ? 'warn' : 'error', 'tftp: transfer failed', { ...this.label, error: e.message });
    await this.sendAndWait(encodeTftp({ op: 'ERROR', code: TFTP_ERROR_CODES.NOT_DEFINED, message: changed ? e.message : 'read error' }));
    await this.end('failed');
  }

  private send(buf: Buffer): void {
    this.sock?.send(buf);
  }

  private sendAndWait(buf: Buffer): Promise<void> {
    const sock = this.sock;
    if (!sock) return Promise.resolve();
    return new Promise((resolve) => sock.send(buf, () => resolve()));
  }

  /** Ends the transfer (idempotent): timer, socket and file released, counted once. */
  async end(reason: string, outcome: 'completed' | 'aborted' | 'none' = 'none'): Promise<void> {
    if (this.state === 'done') return;
    const wasSending = this.state === 'oack' || this.state === 'data';
    this.state = 'done';
    clearTimeout(this.timer);
    const { ctx } = this;
    if (ctx.transfers.get(this.key) === this) ctx.transfers.delete(this.key);
    if (outcome === 'completed') {
      ctx.counters.completed++;
      ctx.log('info', 'tftp: sent', { ...this.label, bytes: this.size, ms: Date.now() - this.startedAt, blksize: this.params?.blksize, windowsize: this.params?.windowsize });
    } else if (outcome === 'aborted') {
      ctx.counters.aborted++;
    } else if (wasSending && reason !== 'timeout' && reason !== 'failed') {
      ctx.log('debug', 'tftp: transfer ended', { ...this.label, reason });
    }
    const sock = this.sock;
    this.sock = undefined;
    const source = this.source;
    this.source = undefined;
    await Promise.all([sock ? closeSocket(sock) : undefined, source?.close().catch(() => undefined)]);
  }
}

function closeSocket(sock: Socket): Promise<void> {
  return new Promise<void>((resolve) => {
    try {
      sock.close(() => resolve());
    } catch {
      resolve(); // already closed
    }
  });
}

function sameRequest(a: TftpRequest, b: TftpRequest): boolean {
  return a.filename === b.filename && a.mode === b.mode && a.options.length === b.options.length && a.options.every((o, i) => o.name === b.options[i]?.name && o.value === b.options[i]?.value);
}

/** At most `limit` messages per `intervalMs`, then one line saying how many were left out. */
function throttle(log: LogFn, limit: number, intervalMs: number): LogFn {
  let windowStart = 0;
  let count = 0;
  let suppressed = 0;
  return (level, msg, fields) => {
    const now = Date.now();
    if (now - windowStart >= intervalMs) {
      if (suppressed > 0) log('warn', 'tftp: similar messages suppressed', { count: suppressed });
      windowStart = now;
      count = 0;
      suppressed = 0;
    }
    if (count++ < limit) log(level, msg, fields);
    else suppressed++;
  };
}
