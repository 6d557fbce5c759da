/**
 * A small TFTP reader on the codec: what the appliance's self-check, the
 * tests and the benchmark use to fetch a file the way boot ROMs do (iPXE:
 * blksize + tsize, lockstep; EDK2: a tsize probe aborted with error 8, then
 * blksize + tsize + windowsize). Read-only, IPv4 or IPv6, one socket per fetch.
 *
 * Receiver rules: a DATA block is taken only in order; each window is
 * acknowledged when full or at the last block (RFC 7440 section 4); a gap
 * is acknowledged once at once with the last block in order, so the sender
 * can go back; a block seen before is acknowledged again (RFC 1350 section 6)
 * in lockstep only. A silent timeout resends the last RRQ or ACK.
 */
import { createSocket, type RemoteInfo } from 'node:dgram';
import { isIPv6 } from 'node:net';
import { decodeTftp, encodeTftp, parseOptions, TFTP_ERROR_CODES, TftpDecodeError, type TftpOption, type TftpPacket } from './codec.js';

export interface TftpGetOptions {
  host: string;
  port: number;
  filename: string;
  /** Asked for with the blksize option; absent: RFC 1350's 512 without asking. */
  blksize?: number;
  /** Asked for with the windowsize option (RFC 7440). */
  windowsize?: number;
  /** Ask for tsize (RFC 2349). */
  tsize?: boolean;
  /** Sent as the `timeout` option (seconds). */
  timeoutOption?: number;
  /** EDK2's first request: ask tsize only, then abort with ERROR 8 once the OACK came. The result has no data. */
  sizeOnly?: boolean;
  /** @default 'octet' */
  mode?: string;
  /** Retransmit timeout of the client. @default 1000 */
  timeoutMs?: number;
  /** Timeouts in a row before giving up. @default 5 */
  retries?: number;
}

export interface TftpGetResult {
  data: Buffer;
  /** The options the server acknowledged (empty without an OACK). */
  oack: TftpOption[];
  /** tsize from the OACK, when the server sent it. */
  tsize: number | undefined;
  blksize: number;
  windowsize: number;
  /** Timeouts that made the client resend. */
  timeouts: number;
}

/** The server answered with an ERROR packet. */
export class TftpRemoteError extends Error {
  override readonly name = 'TftpRemoteError';
  constructor(
    readonly code: number,
    readonly remoteMessage: string,
  ) {
    super(`TFTP error ${code}: ${remoteMessage}`);
  }
}

export function tftpGet(o: TftpGetOptions): Promise<TftpGetResult> {
  const timeoutMs = o.timeoutMs ?? 1000;
  const retries = o.retries ?? 5;
  const options: TftpOption[] = [];
  if (o.blksize !== undefined && !o.sizeOnly) options.push({ name: 'blksize', value: String(o.blksize) });
  if (o.tsize || o.sizeOnly) options.push({ name: 'tsize', value: '0' });
  if (o.timeoutOption !== undefined) options.push({ name: 'timeout', value: String(o.timeoutOption) });
  if (o.windowsize !== undefined && !o.sizeOnly) options.push({ name: 'windowsize', value: String(o.windowsize) });
  const rrq = encodeTftp({ op: 'RRQ', filename: o.filename, mode: o.mode ?? 'octet', options });

  return new Promise<TftpGetResult>((resolve, reject) => {
    const sock = createSocket({ type: isIPv6(o.host) ? 'udp6' : 'udp4' });
    const chunks: Buffer[] = [];
    let serverPort: number | undefined;
    let blksize = 512;
    let windowsize = 1;
    let tsize: number | undefined;
    let oack: TftpOption[] = [];
    /** Next block wanted (1-based, unbounded: wire numbers roll over). */
    let expected = 1;
    let inWindow = 0;
    let gapAckedFor = 0;
    let last: Buffer = rrq;
    let lastPort = o.port;
    let timeouts = 0;
    let silent = 0;
    let settled = false;
    let timer: NodeJS.Timeout | undefined;

    const finish = (err: Error | null, result?: TftpGetResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.close();
      if (err) reject(err);
      else resolve(result as TftpGetResult);
    };
    const send = (buf: Buffer, port: number, sent?: () => void) => {
      last = buf;
      lastPort = port;
      sock.send(buf, port, o.host, sent);
    };
    const ack = (block: number, port: number, sent?: () => void) => send(encodeTftp({ op: 'ACK', block: block & 0xffff }), port, sent);
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(onTimeout, timeoutMs);
    };
    const onTimeout = () => {
      if (++silent > retries) return finish(new Error(`TFTP ${o.filename}: no answer after ${retries} retries (block ${expected})`));
      timeouts++;
      inWindow = 0;
      // RFC 7440 section 4: on a timeout the receiver acknowledges the last block it has in order.
      if (expected > 1 && serverPort !== undefined) ack(expected - 1, serverPort);
      else sock.send(last, lastPort, o.host);
      arm();
    };
    const result = (): TftpGetResult => ({ data: Buffer.concat(chunks), oack, tsize, blksize, windowsize, timeouts });

    const onPacket = (p: TftpPacket, from: RemoteInfo) => {
      switch (p.op) {
        case 'ERROR':
          return finish(new TftpRemoteError(p.code, p.message));
        case 'OACK': {
          if (expected !== 1 || chunks.length > 0) return;
          silent = 0;
          oack = p.options;
          const got = parseOptions(p.options);
          if (got.blksize) blksize = got.blksize.value;
          if (got.windowsize) windowsize = got.windowsize.value;
          if (got.tsize) tsize = got.tsize.value;
          if (o.sizeOnly) {
            sock.send(encodeTftp({ op: 'ERROR', code: TFTP_ERROR_CODES.OPTION_NEGOTIATION, message: 'tsize probe' }), from.port, o.host, () => finish(null, result()));
            return;
          }
          ack(0, from.port);
          return arm();
        }
        case 'DATA': {
          if (p.block === (expected & 0xffff)) {
            silent = 0;
            chunks.push(p.data);
            const final = p.data.length < blksize;
            expected++;
            inWindow++;
            if (final) {
              // Close only once the last ACK is out: a send still queued dies with its socket.
              clearTimeout(timer);
              ack(expected - 1, from.port, () => finish(null, result()));
              return;
            }
            if (inWindow >= windowsize) {
              inWindow = 0;
              ack(expected - 1, from.port);
            }
            return arm();
          }
          if (windowsize === 1) {
            // A block seen before: our ACK was lost, say it again (RFC 1350 section 6).
            if (((expected - 1 - p.block) & 0xffff) < 0x8000 && expected > 1) ack(expected - 1, from.port);
            return;
          }
          // A gap in a window: tell the sender once where we are, so it resends from there.
          if (gapAckedFor !== expected) {
            gapAckedFor = expected;
            inWindow = 0;
            ack(expected - 1, from.port);
          }
          return;
        }
        default:
          return;
      }
    };

    sock.on('error', (e) => finish(e));
    sock.on('message', (msg, from) => {
      if (from.address !== o.host && !(isLoopback(o.host) && isLoopback(from.address))) return;
      if (serverPort === undefined) serverPort = from.port;
      else if (from.port !== serverPort) {
        // RFC 1350 section 4: a packet from another TID gets error 5 and does not disturb the transfer.
        sock.send(encodeTftp({ op: 'ERROR', code: TFTP_ERROR_CODES.UNKNOWN_TID, message: 'unknown transfer ID' }), from.port, from.address);
        return;
      }
      let p: TftpPacket;
      try {
        p = decodeTftp(msg);
      } catch (e) {
        if (e instanceof TftpDecodeError) return;
        throw e;
      }
      onPacket(p, from);
    });
    sock.bind(0, () => {
      send(rrq, o.port);
      arm();
    });
  });
}

function isLoopback(a: string): boolean {
  return a.startsWith('127.') || a === '::1';
}
