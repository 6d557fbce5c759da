/**
 * A small NBD client on the codec, for tests that need what real clients
 * will not do: pipelined requests answered out of order, never reading
 * replies, malformed bytes at any step.
 */
import { connect, type Socket } from 'node:net';
import {
  CLIENT_FLAGS,
  CMD,
  GREETING_SIZE,
  INFO,
  OPT,
  REP,
  SIMPLE_REPLY_SIZE,
  decodeGreeting,
  decodeInfo,
  decodeOptionReply,
  decodeSimpleReply,
  encodeClientFlags,
  encodeInfoRequest,
  encodeOption,
  encodeRequest,
  type Info,
} from '../../../appliance/nbd/codec.js';

export class RawConnection {
  private chunks: Buffer[] = [];
  private have = 0;
  private waiters: (() => void)[] = [];
  closed = false;

  private constructor(readonly socket: Socket) {
    socket.on('data', (d: Buffer) => {
      this.chunks.push(d);
      this.have += d.length;
      this.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => undefined);
  }

  static open(port: number, host = '127.0.0.1', localAddress?: string): Promise<RawConnection> {
    return new Promise((resolve, reject) => {
      const s = connect({ port, host, ...(localAddress ? { localAddress } : {}) }, () => resolve(new RawConnection(s)));
      s.once('error', reject);
    });
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Exactly n bytes, or null if the server closed first. */
  async read(n: number, timeoutMs = 5000): Promise<Buffer | null> {
    const until = Date.now() + timeoutMs;
    while (this.have < n) {
      if (this.closed) return null;
      if (Date.now() > until) throw new Error(`timed out waiting for ${n} bytes (have ${this.have})`);
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 50);
      });
    }
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    const out = all.subarray(0, n);
    this.chunks = all.length > n ? [all.subarray(n)] : [];
    this.have -= n;
    return out;
  }

  /** Resolves true when the server has closed the connection within the time. */
  async closedWithin(ms: number): Promise<boolean> {
    const until = Date.now() + ms;
    while (!this.closed && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    return this.closed;
  }

  write(b: Buffer): void {
    this.socket.write(b);
  }

  async greeting(): Promise<number> {
    return decodeGreeting((await this.read(GREETING_SIZE))!).flags;
  }

  /** Option replies to one option, up to its ACK or error. */
  async optionReplies(): Promise<{ type: number; data: Buffer; info?: Info }[]> {
    const out: { type: number; data: Buffer; info?: Info }[] = [];
    for (;;) {
      const head = await this.read(20);
      if (!head) throw new Error('server closed during option replies');
      const data = (await this.read(head.readUInt32BE(16)))!;
      const r = decodeOptionReply(Buffer.concat([head, data]));
      out.push({ type: r.type, data: r.data, ...(r.type === REP.INFO ? { info: decodeInfo(r.data) } : {}) });
      if (r.type !== REP.INFO && r.type !== REP.SERVER) return out;
    }
  }

  /** Fixed newstyle handshake and OPT_GO; resolves with the export's size and flags. */
  static async go(port: number, name: string, host = '127.0.0.1', localAddress?: string): Promise<{ c: RawConnection; sizeBytes: number; flags: number }> {
    const c = await RawConnection.open(port, host, localAddress);
    await c.greeting();
    c.write(encodeClientFlags(CLIENT_FLAGS.FIXED_NEWSTYLE | CLIENT_FLAGS.NO_ZEROES));
    c.write(encodeOption(OPT.GO, encodeInfoRequest({ name, requests: [INFO.BLOCK_SIZE] })));
    const replies = await c.optionReplies();
    const last = replies.at(-1)!;
    if (last.type !== REP.ACK) throw new Error(`GO refused: 0x${last.type.toString(16)} ${last.data.toString('utf8')}`);
    const exp = replies.find((r) => r.info?.type === 'export')!.info as Extract<Info, { type: 'export' }>;
    return { c, sizeBytes: Number(exp.sizeBytes), flags: exp.flags };
  }

  request(type: number, cookie: bigint, offset: number | bigint, length: number, payload?: Buffer, flags = 0): void {
    const h = encodeRequest({ flags, type, cookie, offset: BigInt(offset), length });
    this.write(payload ? Buffer.concat([h, payload]) : h);
  }

  /** The next simple reply; `dataLength(cookie)` says how many data bytes follow a successful one. */
  async reply(dataLength: (cookie: bigint) => number = () => 0): Promise<{ cookie: bigint; error: number; data: Buffer }> {
    const h = await this.read(SIMPLE_REPLY_SIZE);
    if (!h) throw new Error('server closed instead of replying');
    const r = decodeSimpleReply(h);
    const n = r.error ? 0 : dataLength(r.cookie);
    return { ...r, data: n ? (await this.read(n))! : Buffer.alloc(0) };
  }

  async readAt(offset: number, length: number, cookie = 1n): Promise<{ error: number; data: Buffer }> {
    this.request(CMD.READ, cookie, offset, length);
    const r = await this.reply(() => length);
    return { error: r.error, data: r.data };
  }

  close(): void {
    this.socket.destroy();
  }
}
