/**
 * NBD server: a thin shell of sockets around the codec (codec.ts). What an
 * export name means, and what is behind it, is the `NbdExports` provider's
 * business (exports.ts for bootfarm); this file only speaks the protocol.
 *
 * - Fixed newstyle handshake, NOTLS. OPT_GO and OPT_INFO answer with
 *   NBD_INFO_EXPORT, the block sizes (always: the spec allows it unasked),
 *   and the name and description when asked. OPT_EXPORT_NAME for old clients
 *   (a refused name closes the connection: that option cannot carry an
 *   error). OPT_LIST, OPT_ABORT; NBD_REP_ERR_UNSUP for every other option
 *   (STARTTLS, STRUCTURED_REPLY, meta contexts, extended headers).
 * - Transmission: simple replies; READ, WRITE, FLUSH, TRIM, WRITE_ZEROES
 *   and DISC, FUA where the export can persist. Requests are pipelined: up
 *   to `maxInflight` run at once and are answered as they finish (the spec
 *   lets replies come in any order; the client matches them by cookie).
 * - Memory per connection is bounded whatever the client does: a READ is
 *   answered from one buffer of its length, at most `maxPayload` bytes; new
 *   requests are not read while `maxInflightBytes` are being served or while
 *   more than `outputHighWater` bytes wait in the socket for a slow reader;
 *   TCP then pushes back on the client. A WRITE longer than `maxPayload`, a
 *   bad magic or an option longer than `maxOptionBytes` closes that
 *   connection (the spec allows a hard disconnect on a protocol violation),
 *   never the server or another client.
 * - Errors from an export map to errno once, in `errnoOf`.
 */
import { createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import type { LogFn } from '../log.js';
import {
  CLIENT_FLAGS,
  CLIENT_FLAGS_SIZE,
  CMD,
  CMD_FLAGS,
  HANDSHAKE_FLAGS,
  INFO,
  NBD_ERRNO,
  NbdDecodeError,
  OPT,
  OPTION_HEADER_SIZE,
  REP,
  REQUEST_SIZE,
  TX_FLAGS,
  commandName,
  decodeClientFlags,
  decodeExportName,
  decodeInfoRequest,
  decodeOptionHeader,
  decodeRequest,
  describeRequest,
  encodeExportNameReply,
  encodeGreeting,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeInfoString,
  encodeOptionReply,
  encodeServerEntry,
  encodeSimpleReply,
  errorMessage,
  optionName,
  type BlockSizes,
  type NbdRequest,
} from './codec.js';

/** Who is asking: exports may depend on it (OPT_LIST shows a target its own exports). */
export interface NbdClient {
  address: string;
  port: number;
  /** The address of this appliance the client connected to (a floating address it may have adopted). */
  localAddress?: string;
  /** Connection number, for logs. */
  id: number;
}

/** What an export is, as OPT_INFO tells it. */
export interface ExportInfo {
  sizeBytes: number;
  readOnly: boolean;
  /** TRIM and WRITE_ZEROES are offered (writable exports whose store can do them). */
  canTrim: boolean;
  canZero: boolean;
  /** Every connection to this export sees the others' writes and flushes at once (NBD_FLAG_CAN_MULTI_CONN). */
  multiConn: boolean;
  /** Preferred request alignment (read-modify-write below it). @default 4096 */
  preferredBlockSize?: number;
  /** For people: NBD_INFO_DESCRIPTION and OPT_LIST. */
  description: string;
}

/** An export opened by one connection. */
export interface NbdExport extends ExportInfo {
  read(offset: number, length: number): Promise<Buffer>;
  /** A buffer `read` returned has been sent and may be used again. */
  recycle?(data: Buffer): void;
  write?(offset: number, data: Buffer, fua: boolean): Promise<void>;
  writeZeroes?(offset: number, length: number, fua: boolean): Promise<void>;
  trim?(offset: number, length: number, fua: boolean): Promise<void>;
  flush?(): Promise<void>;
  /** The connection is gone: release what `open` took. */
  close(): void;
}

/** Why a name is refused: `unknown` (no such export), `policy` (exists, not for you now), `shutdown`. */
export interface ExportRefusal {
  refused: 'unknown' | 'policy' | 'shutdown';
  message: string;
}

export interface NbdExports {
  list(client: NbdClient): { name: string; description: string }[];
  describe(name: string, client: NbdClient): Promise<ExportInfo | ExportRefusal>;
  open(name: string, client: NbdClient): Promise<NbdExport | ExportRefusal>;
}

/** An error an export throws with the errno the client should get (else EIO). */
export class NbdIoError extends Error {
  constructor(
    readonly errno: number,
    message: string,
  ) {
    super(message);
    this.name = 'NbdIoError';
  }
}

export interface NbdServerOptions {
  /** @default '0.0.0.0' */
  host?: string;
  /** @default 10809 (IANA) */
  port?: number;
  exports: NbdExports;
  log: LogFn;
  /** Largest READ or WRITE payload; advertised as the maximum block size. @default 32 MiB (what the spec says clients may assume) */
  maxPayload?: number;
  /** Requests of one connection served at once. @default 64 */
  maxInflight?: number;
  /** Bytes of READ/WRITE payload of one connection in memory at once (one larger request may run alone). @default 16 MiB */
  maxInflightBytes?: number;
  /** Reply bytes that may wait in a connection's socket before its next requests wait. @default 4 MiB */
  outputHighWater?: number;
  /** Option data longer than this closes the connection. @default 64 KiB */
  maxOptionBytes?: number;
  /** Options one connection may send before choosing an export. @default 256 */
  maxOptions?: number;
  /** A client that has not finished the handshake by then is dropped. @default 30 s */
  handshakeTimeoutMs?: number;
  /** Connections at once, in all. @default 4096 */
  maxConnections?: number;
  /** Connections at once from one address (a target opens a few; a flood from one machine must not starve the others). @default 64 */
  maxConnectionsPerClient?: number;
}

export interface NbdStats {
  connections: number;
  connectionsTotal: number;
  /** Connections that reached the transmission phase. */
  exportsOpened: number;
  /** Names refused at OPT_INFO / OPT_GO / OPT_EXPORT_NAME. */
  refused: number;
  /** Connections dropped for breaking the protocol. */
  protocolErrors: number;
  /** Connections refused at accept: too many in all, or from one address. */
  overload: number;
  requests: Record<string, number>;
  /** Error replies by errno. */
  errors: Record<string, number>;
  bytesRead: number;
  bytesWritten: number;
}

export interface NbdServer {
  port: number;
  stats(): NbdStats;
  /** Bytes held for replies and in-flight requests, over all connections (memory bound checks). */
  bufferedBytes(): number;
  /** Closes the connections whose export name matches (a target booted again: its old connections are dead). */
  disconnect(match: (exportName: string, client: NbdClient) => boolean, why: string): number;
  close(): Promise<void>;
}

export const NBD_PORT = 10809;
const MiB = 1024 * 1024;

export async function startNbdServer(opts: NbdServerOptions): Promise<NbdServer> {
  const limits = {
    maxPayload: opts.maxPayload ?? 32 * MiB,
    maxInflight: opts.maxInflight ?? 64,
    maxInflightBytes: opts.maxInflightBytes ?? 16 * MiB,
    outputHighWater: opts.outputHighWater ?? 4 * MiB,
    maxOptionBytes: opts.maxOptionBytes ?? 64 * 1024,
    maxOptions: opts.maxOptions ?? 256,
    handshakeTimeoutMs: opts.handshakeTimeoutMs ?? 30_000,
    maxConnections: opts.maxConnections ?? 4096,
    maxConnectionsPerClient: opts.maxConnectionsPerClient ?? 64,
  };
  const perClient = new Map<string, number>();
  const { log, exports } = opts;
  const stats: NbdStats = { connections: 0, connectionsTotal: 0, exportsOpened: 0, refused: 0, protocolErrors: 0, overload: 0, requests: {}, errors: {}, bytesRead: 0, bytesWritten: 0 };
  const live = new Map<Socket, Connection>();
  let nextId = 1;
  let closing = false;

  const server: Server = createServer({ noDelay: true }, (socket) => {
    if (closing) return socket.destroy();
    const client: NbdClient = { address: (socket.remoteAddress ?? '').replace(/^::ffff:/, ''), port: socket.remotePort ?? 0, localAddress: (socket.localAddress ?? '').replace(/^::ffff:/, ''), id: nextId++ };
    const mine = perClient.get(client.address) ?? 0;
    if (live.size >= limits.maxConnections || mine >= limits.maxConnectionsPerClient) {
      stats.overload++;
      socket.destroy();
      return;
    }
    perClient.set(client.address, mine + 1);
    const conn = new Connection(socket, client, limits, exports, log, stats);
    live.set(socket, conn);
    stats.connections++;
    stats.connectionsTotal++;
    socket.once('close', () => {
      live.delete(socket);
      stats.connections--;
      const left = (perClient.get(client.address) ?? 1) - 1;
      if (left > 0) perClient.set(client.address, left);
      else perClient.delete(client.address);
    });
    void conn.run();
  });
  server.on('error', (e) => log('error', 'NBD server error', { reason: e.message }));
  const port = await new Promise<number>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => reject(e.code === 'EADDRINUSE' ? new Error(`nbd.port ${opts.port ?? NBD_PORT} on ${opts.host ?? '0.0.0.0'} is in use`) : e));
    server.listen(opts.port ?? NBD_PORT, opts.host ?? '0.0.0.0', () => resolve((server.address() as AddressInfo).port));
  });
  log('info', 'NBD server listening', { host: opts.host ?? '0.0.0.0', port });

  return {
    port,
    stats: () => ({ ...stats, requests: { ...stats.requests }, errors: { ...stats.errors } }),
    bufferedBytes: () => [...live.values()].reduce((n, c) => n + c.bufferedBytes(), 0),
    disconnect(match, why) {
      let n = 0;
      for (const c of live.values())
        if (c.exportName !== null && match(c.exportName, c.client)) {
          log('info', 'NBD connection closed by the appliance', { client: c.client.address, connection: c.client.id, why });
          c.socket.destroy();
          n++;
        }
      return n;
    },
    async close() {
      closing = true;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // In-flight requests get a moment to finish (spec: a server shutting down SHOULD wait for them).
      await Promise.all([...live.values()].map((c) => c.shutdown(2000)));
      await closed;
    },
  };
}

type Limits = Required<Omit<NbdServerOptions, 'host' | 'port' | 'exports' | 'log' | 'maxConnections' | 'maxConnectionsPerClient'>>;

/** Thrown inside a connection to end it with a log line (the client broke the protocol). */
class Violation extends Error {}

class Connection {
  exportName: string | null = null;
  private readonly input: ExactReader;
  private inflightBytes = 0;
  private inflight = 0;
  private readonly waiters = new Set<() => void>();
  private open: NbdExport | null = null;

  constructor(
    readonly socket: Socket,
    readonly client: NbdClient,
    private readonly limits: Limits,
    private readonly exports: NbdExports,
    private readonly log: LogFn,
    private readonly stats: NbdStats,
  ) {
    this.input = new ExactReader(socket, 256 * 1024);
    socket.setKeepAlive(true, 30_000);
    socket.on('error', () => undefined);
    socket.on('drain', () => this.poke());
    socket.on('close', () => this.poke());
  }

  bufferedBytes(): number {
    return this.socket.writableLength + this.inflightBytes + this.input.buffered;
  }

  async run(): Promise<void> {
    const timer = setTimeout(() => {
      this.log('info', 'NBD client did not finish the handshake in time: closed', { client: this.client.address, connection: this.client.id, timeoutMs: this.limits.handshakeTimeoutMs });
      this.socket.destroy();
    }, this.limits.handshakeTimeoutMs);
    try {
      const chosen = await this.handshake();
      clearTimeout(timer);
      if (!chosen) return this.end();
      await this.transmission(chosen);
    } catch (e) {
      if (e instanceof Violation || e instanceof NbdDecodeError) {
        this.stats.protocolErrors++;
        this.log('warn', 'NBD client broke the protocol: connection closed', { client: this.client.address, connection: this.client.id, export: this.exportName, reason: e.message });
      } else if (!this.socket.destroyed) this.log('error', 'NBD connection failed', { client: this.client.address, connection: this.client.id, reason: (e as Error).message });
      this.socket.destroy();
    } finally {
      clearTimeout(timer);
      // Requests still running finish before the export is let go (their replies go nowhere).
      while (this.inflight > 0) await this.changed(1000);
      this.open?.close();
      this.open = null;
    }
  }

  /** Waits until all in-flight requests are answered (or `ms`), then closes. */
  async shutdown(ms: number): Promise<void> {
    const until = Date.now() + ms;
    while (this.inflight > 0 && Date.now() < until && !this.socket.destroyed) await this.changed(100);
    this.socket.destroy();
  }

  private end(): void {
    this.socket.end();
  }

  private batching = false;

  /**
   * Replies that finish in the same turn of the event loop leave in one
   * writev: under load many reads complete together, and a system call per
   * reply would cost more than the copy.
   */
  private send(parts: Buffer[], sent?: () => void): void {
    if (this.socket.destroyed) return;
    if (!this.batching) {
      this.batching = true;
      this.socket.cork();
      setImmediate(() => {
        this.batching = false;
        this.socket.uncork();
      });
    }
    parts.forEach((p, i) => this.socket.write(p, i === parts.length - 1 ? sent : undefined));
  }

  private async need(n: number): Promise<Buffer | null> {
    return this.input.read(n);
  }

  // ------------------------------------------------------------ handshake

  /** Option haggling; resolves with the opened export, or null when the client aborted or left. */
  private async handshake(): Promise<NbdExport | null> {
    this.send([encodeGreeting(HANDSHAKE_FLAGS.FIXED_NEWSTYLE | HANDSHAKE_FLAGS.NO_ZEROES)]);
    const cf = await this.need(CLIENT_FLAGS_SIZE);
    if (!cf) return null;
    const flags = decodeClientFlags(cf);
    if (flags & ~(CLIENT_FLAGS.FIXED_NEWSTYLE | CLIENT_FLAGS.NO_ZEROES)) throw new Violation(`unknown client flags 0x${flags.toString(16)}`);
    const fixed = (flags & CLIENT_FLAGS.FIXED_NEWSTYLE) !== 0;
    const noZeroes = (flags & CLIENT_FLAGS.NO_ZEROES) !== 0;

    for (let n = 0; ; n++) {
      if (n >= this.limits.maxOptions) throw new Violation(`more than ${this.limits.maxOptions} options without choosing an export`);
      const head = await this.need(OPTION_HEADER_SIZE);
      if (!head) return null;
      const { option, length } = decodeOptionHeader(head);
      if (length > this.limits.maxOptionBytes) throw new Violation(`${optionName(option)} with ${length} bytes of data (at most ${this.limits.maxOptionBytes})`);
      const data = length ? await this.need(length) : Buffer.alloc(0);
      if (!data) return null;
      const reply = (type: number, body?: Buffer) => this.send([encodeOptionReply(option, type, body)]);
      const fail = (type: number, message: string) => reply(type, errorMessage(message));

      if (option === OPT.EXPORT_NAME) {
        const name = decodeExportName(data);
        const exp = await this.exports.open(name, this.client);
        if ('refused' in exp) {
          // This option cannot carry an error: the spec says close the connection.
          this.stats.refused++;
          this.log('info', 'NBD export refused', { client: this.client.address, connection: this.client.id, export: name, reason: exp.message, option: 'EXPORT_NAME' });
          return null;
        }
        this.opened(name, exp);
        this.send([encodeExportNameReply(exp.sizeBytes, txFlags(exp), noZeroes)]);
        return exp;
      }
      // Without fixed newstyle, an unknown option cannot be answered: only EXPORT_NAME is valid there.
      if (!fixed) throw new Violation(`${optionName(option)} from a client that did not ask for fixed newstyle`);

      switch (option) {
        case OPT.ABORT:
          reply(REP.ACK);
          return null;
        case OPT.LIST:
          if (length !== 0) {
            fail(REP.ERR_INVALID, 'NBD_OPT_LIST takes no data');
            break;
          }
          for (const e of this.exports.list(this.client)) reply(REP.SERVER, encodeServerEntry(e.name, e.description));
          reply(REP.ACK);
          break;
        case OPT.INFO:
        case OPT.GO: {
          let req;
          try {
            req = decodeInfoRequest(data);
          } catch (e) {
            fail(REP.ERR_INVALID, (e as Error).message);
            break;
          }
          const found = option === OPT.GO ? await this.exports.open(req.name, this.client) : await this.exports.describe(req.name, this.client);
          if ('refused' in found) {
            this.stats.refused++;
            this.log('info', 'NBD export refused', { client: this.client.address, connection: this.client.id, export: req.name, reason: found.message, option: optionName(option) });
            fail(found.refused === 'policy' ? REP.ERR_POLICY : found.refused === 'shutdown' ? REP.ERR_SHUTDOWN : REP.ERR_UNKNOWN, found.message);
            break;
          }
          reply(REP.INFO, encodeInfoExport(found.sizeBytes, txFlags(found)));
          reply(REP.INFO, encodeInfoBlockSize(this.blockSizes(found)));
          if (req.requests.includes(INFO.NAME)) reply(REP.INFO, encodeInfoString(INFO.NAME, req.name));
          if (req.requests.includes(INFO.DESCRIPTION)) reply(REP.INFO, encodeInfoString(INFO.DESCRIPTION, found.description));
          reply(REP.ACK);
          if (option === OPT.GO) {
            this.opened(req.name, found as NbdExport);
            return found as NbdExport;
          }
          break;
        }
        default:
          fail(REP.ERR_UNSUP, `${optionName(option)} is not supported by this server`);
      }
    }
  }

  private opened(name: string, exp: NbdExport): void {
    this.exportName = name;
    this.open = exp;
    this.stats.exportsOpened++;
    this.log('info', 'NBD export opened', { client: this.client.address, connection: this.client.id, export: name, sizeBytes: exp.sizeBytes, readOnly: exp.readOnly });
  }

  private blockSizes(e: ExportInfo): BlockSizes {
    return { minimum: 1, preferred: e.preferredBlockSize ?? 4096, maximum: this.limits.maxPayload };
  }

  // --------------------------------------------------------- transmission

  private poke(): void {
    const ws = [...this.waiters];
    this.waiters.clear();
    for (const w of ws) w();
  }

  /** Resolves at the next completion, drain or close (or after `ms`). */
  private changed(ms?: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = () => {
        if (t) clearTimeout(t);
        this.waiters.delete(done);
        resolve();
      };
      const t = ms === undefined ? null : setTimeout(done, ms);
      this.waiters.add(done);
    });
  }

  private async transmission(exp: NbdExport): Promise<void> {
    const { maxInflight, maxInflightBytes, outputHighWater, maxPayload } = this.limits;
    for (;;) {
      // Back-pressure: the next request is read only when this one's reply can be held.
      while (!this.socket.destroyed && (this.inflight >= maxInflight || this.inflightBytes >= maxInflightBytes || this.socket.writableLength > outputHighWater)) await this.changed();
      if (this.socket.destroyed) return;
      const head = await this.need(REQUEST_SIZE);
      if (!head) break;
      const req = decodeRequest(head);
      let payload: Buffer | null = null;
      if (req.type === CMD.WRITE) {
        if (req.length > maxPayload) throw new Violation(`WRITE of ${req.length} bytes (at most ${maxPayload})`);
        payload = await this.need(req.length);
        if (!payload) break;
      }
      this.stats.requests[commandName(req.type)] = (this.stats.requests[commandName(req.type)] ?? 0) + 1;
      if (req.type === CMD.DISC) {
        while (this.inflight > 0 && !this.socket.destroyed) await this.changed();
        break;
      }
      const cost = req.type === CMD.READ || req.type === CMD.WRITE ? Math.min(req.length, maxPayload) : 0;
      this.inflight++;
      this.inflightBytes += cost;
      void this.serve(exp, req, payload)
        .then(({ error, data }) => {
          if (error) this.stats.errors[String(error)] = (this.stats.errors[String(error)] ?? 0) + 1;
          if (data) this.stats.bytesRead += data.length;
          if (payload && !error) this.stats.bytesWritten += payload.length;
          if (data && !error) this.send([encodeSimpleReply(req.cookie, 0), data], exp.recycle ? () => exp.recycle!(data) : undefined);
          else this.send([encodeSimpleReply(req.cookie, error)]);
        })
        .finally(() => {
          this.inflight--;
          this.inflightBytes -= cost;
          this.poke();
        });
    }
    this.end();
  }

  /** One request: the errno to answer with, and the data of a READ. Never throws. */
  private async serve(exp: NbdExport, req: NbdRequest, payload: Buffer | null): Promise<{ error: number; data?: Buffer }> {
    const fua = (req.flags & CMD_FLAGS.FUA) !== 0;
    const inRange = (): { offset: number; length: number } | null => {
      const end = req.offset + BigInt(req.length);
      if (end > BigInt(exp.sizeBytes)) return null;
      return { offset: Number(req.offset), length: req.length };
    };
    try {
      switch (req.type) {
        case CMD.READ: {
          if (req.length > this.limits.maxPayload) return { error: NBD_ERRNO.EINVAL };
          const r = inRange();
          if (!r) return { error: NBD_ERRNO.EINVAL };
          if (r.length === 0) return { error: 0 };
          return { error: 0, data: await exp.read(r.offset, r.length) };
        }
        case CMD.WRITE: {
          if (exp.readOnly || !exp.write) return { error: NBD_ERRNO.EPERM };
          const r = inRange();
          if (!r) return { error: NBD_ERRNO.ENOSPC };
          if (r.length) await exp.write(r.offset, payload!, fua);
          return { error: 0 };
        }
        case CMD.FLUSH:
          await exp.flush?.();
          return { error: 0 };
        case CMD.TRIM:
        case CMD.WRITE_ZEROES: {
          const op = req.type === CMD.TRIM ? exp.trim : exp.writeZeroes;
          if (exp.readOnly) return { error: NBD_ERRNO.EPERM };
          if (!op) return { error: NBD_ERRNO.EINVAL };
          const r = inRange();
          if (!r) return { error: req.type === CMD.TRIM ? NBD_ERRNO.EINVAL : NBD_ERRNO.ENOSPC };
          if (r.length) await op.call(exp, r.offset, r.length, fua);
          return { error: 0 };
        }
        default:
          // CACHE, BLOCK_STATUS, RESIZE and unknown types were not offered.
          return { error: NBD_ERRNO.EINVAL };
      }
    } catch (e) {
      const errno = errnoOf(e);
      this.log(errno === NBD_ERRNO.ENOSPC ? 'info' : 'warn', 'NBD request failed', { client: this.client.address, connection: this.client.id, export: this.exportName, request: describeRequest(req), errno, reason: (e as Error).message });
      return { error: errno };
    }
  }
}

/** The one place an export's failure becomes an NBD errno. */
export function errnoOf(e: unknown): number {
  if (e instanceof NbdIoError) return e.errno;
  const code = (e as NodeJS.ErrnoException | null)?.code;
  if (code === 'ENOSPC' || code === 'EDQUOT') return NBD_ERRNO.ENOSPC;
  if (code === 'EROFS' || code === 'EPERM' || code === 'EACCES') return NBD_ERRNO.EPERM;
  if (code === 'ENOMEM') return NBD_ERRNO.ENOMEM;
  if (e instanceof RangeError) return NBD_ERRNO.EINVAL;
  return NBD_ERRNO.EIO;
}

/** Transmission flags of an export: what this server offers for it. */
export function txFlags(e: ExportInfo): number {
  let f = TX_FLAGS.HAS_FLAGS | TX_FLAGS.SEND_FLUSH;
  if (e.readOnly) f |= TX_FLAGS.READ_ONLY;
  else {
    f |= TX_FLAGS.SEND_FUA;
    if (e.canTrim) f |= TX_FLAGS.SEND_TRIM;
    if (e.canZero) f |= TX_FLAGS.SEND_WRITE_ZEROES;
  }
  if (e.multiConn) f |= TX_FLAGS.CAN_MULTI_CONN;
  return f;
}

/**
 * Exact-length reads from a socket. Data beyond what is asked for is held up
 * to `highWater` bytes, then the socket is paused: a client that sends faster
 * than the server works is held back by TCP, not by memory.
 */
class ExactReader {
  private chunks: Buffer[] = [];
  buffered = 0;
  private want = 0;
  private ended = false;
  private waiter: (() => void) | null = null;

  constructor(
    private readonly socket: Socket,
    private readonly highWater: number,
  ) {
    socket.on('data', (c: Buffer) => {
      this.chunks.push(c);
      this.buffered += c.length;
      if (this.buffered >= Math.max(this.highWater, this.want)) socket.pause();
      this.notify();
    });
    const end = () => {
      this.ended = true;
      this.notify();
    };
    socket.once('end', end);
    socket.once('close', end);
  }

  private notify(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  /** Exactly `n` bytes, or null when the connection ended first. */
  async read(n: number): Promise<Buffer | null> {
    if (n === 0) return Buffer.alloc(0);
    while (this.buffered < n) {
      if (this.ended) return null;
      this.want = n;
      if (this.socket.isPaused()) this.socket.resume();
      await new Promise<void>((resolve) => (this.waiter = resolve));
    }
    this.want = 0;
    const out = this.take(n);
    if (this.buffered < this.highWater && this.socket.isPaused() && !this.ended) this.socket.resume();
    return out;
  }

  private take(n: number): Buffer {
    const first = this.chunks[0]!;
    if (first.length === n) {
      this.chunks.shift();
      this.buffered -= n;
      return first;
    }
    if (first.length > n) {
      this.chunks[0] = first.subarray(n);
      this.buffered -= n;
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let at = 0;
    while (at < n) {
      const c = this.chunks[0]!;
      const k = Math.min(c.length, n - at);
      c.copy(out, at, 0, k);
      at += k;
      if (k === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
    }
    this.buffered -= n;
    return out;
  }
}
