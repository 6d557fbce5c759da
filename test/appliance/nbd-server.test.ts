/**
 * The NBD server shell on in-memory exports: handshake rules, malformed
 * input at every step, pipelining, back-pressure and error mapping. The
 * bootfarm exports (signed names, write caches) are tested in nbd-exports
 * and with real clients in nbd-interop.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { CLIENT_FLAGS, CMD, CMD_FLAGS, INFO, NBD_ERRNO, OPT, REP, TX_FLAGS, encodeClientFlags, encodeInfoRequest, encodeOption, encodeRequest } from '../../appliance/nbd/codec.js';
import { NbdIoError, startNbdServer, type NbdExport, type NbdExports, type NbdServer, type NbdServerOptions } from '../../appliance/nbd/server.js';
import { RawConnection } from './support/nbd-client.js';

const SIZE = 1 << 20;

interface Disk {
  data: Buffer;
  reads: number;
  closed: number;
  /** Delay of each read, by offset (pipelining tests). */
  delay?: (offset: number) => number;
  fail?: (offset: number) => Error | null;
}

function memoryExports(disks: Record<string, Disk & { readOnly?: boolean }>): NbdExports {
  const open = (name: string): NbdExport | null => {
    const d = disks[name];
    if (!d) return null;
    const ro = d.readOnly ?? false;
    return {
      sizeBytes: d.data.length,
      readOnly: ro,
      canTrim: !ro,
      canZero: !ro,
      multiConn: true,
      description: `disk ${name}`,
      async read(o, l) {
        d.reads++;
        const ms = d.delay?.(o) ?? 0;
        if (ms) await new Promise((r) => setTimeout(r, ms));
        const err = d.fail?.(o);
        if (err) throw err;
        return Buffer.from(d.data.subarray(o, o + l));
      },
      async write(o, data) {
        const err = d.fail?.(o);
        if (err) throw err;
        data.copy(d.data, o);
      },
      async writeZeroes(o, l) {
        d.data.fill(0, o, o + l);
      },
      async trim() {},
      async flush() {},
      close() {
        d.closed++;
      },
    };
  };
  return {
    list: () => Object.keys(disks).map((name) => ({ name, description: `disk ${name}` })),
    describe: async (name) => (name === 'secret' ? { refused: 'policy', message: 'not for you' } : (open(name) ?? { refused: 'unknown', message: `no export ${name}` })),
    open: async (name) => (name === 'secret' ? { refused: 'policy', message: 'not for you' } : (open(name) ?? { refused: 'unknown', message: `no export ${name}` })),
  };
}

const disk = (fill = 0x11): Disk => ({ data: Buffer.alloc(SIZE, fill), reads: 0, closed: 0 });
const logs: { level: string; msg: string }[] = [];
let servers: NbdServer[] = [];
let conns: RawConnection[] = [];

async function serve(disks: Record<string, Disk & { readOnly?: boolean }>, o: Partial<NbdServerOptions> = {}): Promise<NbdServer> {
  const s = await startNbdServer({ host: '127.0.0.1', port: 0, exports: memoryExports(disks), log: (level, msg) => logs.push({ level, msg }), ...o });
  servers.push(s);
  return s;
}
async function open(port: number) {
  const c = await RawConnection.open(port);
  conns.push(c);
  return c;
}
async function go(port: number, name: string) {
  const r = await RawConnection.go(port, name);
  conns.push(r.c);
  return r;
}
/** Greeting read and fixed newstyle flags sent. */
async function haggling(port: number, flags = CLIENT_FLAGS.FIXED_NEWSTYLE | CLIENT_FLAGS.NO_ZEROES) {
  const c = await open(port);
  expect(await c.greeting()).toBe(3);
  c.write(encodeClientFlags(flags));
  return c;
}

afterEach(async () => {
  for (const c of conns) c.close();
  conns = [];
  await Promise.all(servers.map((s) => s.close()));
  servers = [];
  logs.length = 0;
});

describe('handshake', () => {
  it('INFO and GO answer with export info, block sizes, name and description; haggling goes on after INFO', async () => {
    const s = await serve({ a: disk(), b: { ...disk(), readOnly: true } });
    const c = await haggling(s.port);
    c.write(encodeOption(OPT.INFO, encodeInfoRequest({ name: 'b', requests: [INFO.NAME, INFO.DESCRIPTION] })));
    const info = await c.optionReplies();
    expect(info.map((r) => r.info?.type ?? r.type)).toEqual(['export', 'block-size', 'name', 'description', REP.ACK]);
    expect(info[0]!.info).toEqual({ type: 'export', sizeBytes: BigInt(SIZE), flags: TX_FLAGS.HAS_FLAGS | TX_FLAGS.READ_ONLY | TX_FLAGS.SEND_FLUSH | TX_FLAGS.CAN_MULTI_CONN });
    expect(info[1]!.info).toEqual({ type: 'block-size', sizes: { minimum: 1, preferred: 4096, maximum: 32 << 20 } });
    expect(info[3]!.info).toEqual({ type: 'description', description: 'disk b' });
    c.write(encodeOption(OPT.GO, encodeInfoRequest({ name: 'a', requests: [] })));
    const goReplies = await c.optionReplies();
    expect(goReplies.at(-1)!.type).toBe(REP.ACK);
    expect((goReplies[0]!.info as { flags: number }).flags & TX_FLAGS.SEND_FUA).toBeTruthy();
    expect((await c.readAt(0, 16)).data).toEqual(Buffer.alloc(16, 0x11));
  });

  it('refusals carry their reason: unknown name, policy; haggling goes on after them', async () => {
    const s = await serve({ a: disk() });
    const c = await haggling(s.port);
    c.write(encodeOption(OPT.GO, encodeInfoRequest({ name: 'nope', requests: [] })));
    expect(await c.optionReplies()).toEqual([{ type: REP.ERR_UNKNOWN, data: Buffer.from('no export nope') }]);
    c.write(encodeOption(OPT.INFO, encodeInfoRequest({ name: 'secret', requests: [] })));
    expect(await c.optionReplies()).toEqual([{ type: REP.ERR_POLICY, data: Buffer.from('not for you') }]);
    c.write(encodeOption(OPT.GO, encodeInfoRequest({ name: 'a', requests: [] })));
    expect((await c.optionReplies()).at(-1)!.type).toBe(REP.ACK);
    expect(s.stats().refused).toBe(2);
  });

  it('unsupported options get ERR_UNSUP (TLS, structured replies, unknown numbers); a LIST with data gets ERR_INVALID; ABORT gets ACK and the end', async () => {
    const s = await serve({ a: disk() });
    const c = await haggling(s.port);
    for (const o of [OPT.STARTTLS, OPT.STRUCTURED_REPLY, OPT.SET_META_CONTEXT, 0x7fff]) {
      c.write(encodeOption(o));
      expect((await c.optionReplies())[0]!.type).toBe(REP.ERR_UNSUP);
    }
    c.write(encodeOption(OPT.LIST, Buffer.from('x')));
    expect((await c.optionReplies())[0]!.type).toBe(REP.ERR_INVALID);
    c.write(encodeOption(OPT.GO, Buffer.from([0, 0, 0, 9, 1])));
    expect((await c.optionReplies())[0]!.type).toBe(REP.ERR_INVALID);
    c.write(encodeOption(OPT.LIST));
    const list = await c.optionReplies();
    expect(list.map((r) => r.type)).toEqual([REP.SERVER, REP.ACK]);
    c.write(encodeOption(OPT.ABORT));
    expect((await c.optionReplies())[0]!.type).toBe(REP.ACK);
    expect(await c.closedWithin(2000)).toBe(true);
  });

  it('EXPORT_NAME: 10 bytes with NO_ZEROES, 134 without; an unknown name closes the connection (it cannot carry an error)', async () => {
    const s = await serve({ a: disk() });
    const c1 = await haggling(s.port);
    c1.write(encodeOption(OPT.EXPORT_NAME, Buffer.from('a')));
    const r1 = (await c1.read(10))!;
    expect(r1.readBigUInt64BE(0)).toBe(BigInt(SIZE));
    expect((await c1.readAt(0, 4)).data).toEqual(Buffer.alloc(4, 0x11));
    const c2 = await haggling(s.port, CLIENT_FLAGS.FIXED_NEWSTYLE);
    c2.write(encodeOption(OPT.EXPORT_NAME, Buffer.from('a')));
    expect((await c2.read(134))!.subarray(10)).toEqual(Buffer.alloc(124));
    const c3 = await haggling(s.port);
    c3.write(encodeOption(OPT.EXPORT_NAME, Buffer.from('zz')));
    expect(await c3.closedWithin(2000)).toBe(true);
  });

  it('a client without fixed newstyle may only send EXPORT_NAME', async () => {
    const s = await serve({ a: disk() });
    const c = await haggling(s.port, 0);
    c.write(encodeOption(OPT.LIST));
    expect(await c.closedWithin(2000)).toBe(true);
    expect(s.stats().protocolErrors).toBe(1);
  });

  it('breaking the protocol closes that connection only: unknown client flags, bad magic, huge option, endless options, silence', async () => {
    const s = await serve({ a: disk() }, { maxOptions: 20, handshakeTimeoutMs: 500 });
    const bystander = await go(s.port, 'a');

    const flags = await open(s.port);
    await flags.greeting();
    flags.write(encodeClientFlags(0x80));
    const magic = await haggling(s.port);
    magic.write(Buffer.from('IHAVEOPX\0\0\0\x03\0\0\0\0', 'latin1'));
    const huge = await haggling(s.port);
    huge.write(encodeOption(OPT.GO).subarray(0, 12));
    huge.write(Buffer.from([0xff, 0xff, 0xff, 0xf0]));
    const endless = await haggling(s.port);
    for (let i = 0; i < 25; i++) endless.write(encodeOption(0x7fff));
    const silent = await open(s.port);
    for (const c of [flags, magic, huge, endless, silent]) expect(await c.closedWithin(3000)).toBe(true);
    expect(s.stats().protocolErrors).toBe(4);
    // The client that behaved never noticed.
    expect((await bystander.c.readAt(100, 10)).data).toEqual(Buffer.alloc(10, 0x11));
  });
});

describe('transmission', () => {
  it('bad requests get the NBD errno and the connection goes on', async () => {
    const d = disk();
    const s = await serve({ rw: d, ro: { ...disk(), readOnly: true } }, { maxPayload: 1 << 16 });
    const { c } = await go(s.port, 'rw');
    expect((await c.readAt(SIZE - 1, 2)).error).toBe(NBD_ERRNO.EINVAL);
    expect((await c.readAt(0, 1 << 17)).error).toBe(NBD_ERRNO.EINVAL);
    c.request(CMD.READ, 5n, 2n ** 63n, 1);
    expect((await c.reply()).error).toBe(NBD_ERRNO.EINVAL);
    c.request(CMD.WRITE, 6n, SIZE - 2, 4, Buffer.alloc(4));
    expect((await c.reply()).error).toBe(NBD_ERRNO.ENOSPC);
    for (const t of [CMD.CACHE, CMD.BLOCK_STATUS, 99]) {
      c.request(t, 7n, 0, 1);
      expect((await c.reply()).error).toBe(NBD_ERRNO.EINVAL);
    }
    c.request(CMD.WRITE, 8n, 10, 3, Buffer.from('abc'), CMD_FLAGS.FUA);
    expect((await c.reply()).error).toBe(0);
    expect((await c.readAt(10, 3)).data.toString()).toBe('abc');
    const ro = (await go(s.port, 'ro')).c;
    ro.request(CMD.WRITE, 9n, 0, 3, Buffer.from('xyz'));
    expect((await ro.reply()).error).toBe(NBD_ERRNO.EPERM);
    ro.request(CMD.TRIM, 10n, 0, 4096);
    expect((await ro.reply()).error).toBe(NBD_ERRNO.EPERM);
    expect((await ro.readAt(0, 3)).data).toEqual(Buffer.alloc(3, 0x11));
  });

  it('a WRITE longer than the maximum payload or a bad request magic closes the connection', async () => {
    const s = await serve({ rw: disk() }, { maxPayload: 1 << 16 });
    const a = (await go(s.port, 'rw')).c;
    a.write(encodeRequest({ flags: 0, type: CMD.WRITE, cookie: 1n, offset: 0n, length: 1 << 20 }));
    expect(await a.closedWithin(2000)).toBe(true);
    const b = (await go(s.port, 'rw')).c;
    const bad = encodeRequest({ flags: 0, type: CMD.READ, cookie: 1n, offset: 0n, length: 1 });
    bad.writeUInt32BE(0xdeadbeef, 0);
    b.write(bad);
    expect(await b.closedWithin(2000)).toBe(true);
    expect(s.stats().protocolErrors).toBe(2);
  });

  it('export failures map to errno: ENOSPC from the store, NbdIoError as given, anything else EIO', async () => {
    const d = disk();
    d.fail = (o) => (o === 0 ? Object.assign(new Error('disk full'), { code: 'ENOSPC' }) : o === 4096 ? new NbdIoError(NBD_ERRNO.EPERM, 'locked') : o === 8192 ? new Error('boom') : null);
    const s = await serve({ rw: d });
    const { c } = await go(s.port, 'rw');
    c.request(CMD.WRITE, 1n, 0, 1, Buffer.from('x'));
    expect((await c.reply()).error).toBe(NBD_ERRNO.ENOSPC);
    c.request(CMD.WRITE, 2n, 4096, 1, Buffer.from('x'));
    expect((await c.reply()).error).toBe(NBD_ERRNO.EPERM);
    expect((await c.readAt(8192, 1)).error).toBe(NBD_ERRNO.EIO);
    expect(s.stats().errors).toEqual({ '28': 1, '1': 1, '5': 1 });
  });

  it('pipelined requests are answered as they finish, each with its own cookie and data', async () => {
    const d = disk();
    for (let i = 0; i < 8; i++) d.data.fill(i, i * 4096, (i + 1) * 4096);
    d.delay = (o) => (8 - o / 4096) * 100;
    const s = await serve({ rw: d });
    const { c } = await go(s.port, 'rw');
    for (let i = 0; i < 8; i++) c.request(CMD.READ, BigInt(i), i * 4096, 4096);
    const got: bigint[] = [];
    for (let i = 0; i < 8; i++) {
      const r = await c.reply(() => 4096);
      expect(r.data).toEqual(Buffer.alloc(4096, Number(r.cookie)));
      got.push(r.cookie);
    }
    // They ran at once: the quickest (asked last) was answered first, the slowest (asked first) late.
    expect(got[0]).toBe(7n);
    expect(got.indexOf(0n)).toBeGreaterThan(4);
    expect([...got].sort()).toEqual([0n, 1n, 2n, 3n, 4n, 5n, 6n, 7n]);
  });

  it('a client that never reads its replies is held back: memory stays bounded and other clients are served', async () => {
    const d = disk();
    const s = await serve({ rw: d }, { maxInflightBytes: 4 << 20, outputHighWater: 4 << 20 });
    const { c } = await go(s.port, 'rw');
    c.socket.pause();
    // 400 MiB asked for in 1 MiB reads, none of it read.
    const head = Buffer.concat(Array.from({ length: 400 }, (_, i) => encodeRequest({ flags: 0, type: CMD.READ, cookie: BigInt(i), offset: 0n, length: 1 << 20 })));
    c.write(head);
    await new Promise((r) => setTimeout(r, 1500));
    const served = d.reads;
    expect(served).toBeLessThan(64);
    expect(s.bufferedBytes()).toBeLessThan(16 << 20);
    const other = (await go(s.port, 'rw')).c;
    expect((await other.readAt(0, 4096)).error).toBe(0);
    // Reading again lets it go on, and every reply arrives.
    c.socket.resume();
    for (let i = 0; i < 400; i++) await c.reply(() => 1 << 20);
    expect(d.reads).toBe(400 + 1);
  });

  it('DISC is answered only after the requests before it; the export is let go when the connection ends', async () => {
    const d = disk();
    d.delay = () => 200;
    const s = await serve({ rw: d });
    const { c } = await go(s.port, 'rw');
    c.request(CMD.READ, 1n, 0, 4096);
    c.request(CMD.DISC, 2n, 0, 0);
    const r = await c.reply(() => 4096);
    expect(r.cookie).toBe(1n);
    expect(await c.closedWithin(2000)).toBe(true);
    await new Promise((r2) => setTimeout(r2, 100));
    expect(d.closed).toBe(1);
    expect(s.stats().requests).toMatchObject({ READ: 1, DISC: 1 });
  });

  it('a zero-length WRITE or READ is answered and the connection goes on', async () => {
    const s = await serve({ rw: disk() });
    const { c } = await go(s.port, 'rw');
    c.request(CMD.WRITE, 1n, 0, 0, Buffer.alloc(0));
    expect((await c.reply()).error).toBe(0);
    expect((await c.readAt(0, 0)).error).toBe(0);
    expect((await c.readAt(0, 2)).data).toEqual(Buffer.alloc(2, 0x11));
  });

  it('caps connections per client address; the others are still served', async () => {
    const s = await serve({ rw: disk() }, { maxConnectionsPerClient: 3 });
    const held = [await open(s.port), await open(s.port), await open(s.port)];
    for (const c of held) await c.greeting();
    const fourth = await open(s.port);
    expect(await fourth.closedWithin(2000)).toBe(true);
    expect(s.stats().overload).toBe(1);
    held[0]!.close();
    await new Promise((r) => setTimeout(r, 100));
    const { c } = await go(s.port, 'rw');
    expect((await c.readAt(0, 1)).error).toBe(0);
  });

  it('disconnect() closes the connections of the matching exports only', async () => {
    const s = await serve({ a: disk(), b: disk() });
    const a = (await go(s.port, 'a')).c;
    const b = (await go(s.port, 'b')).c;
    expect(s.disconnect((name) => name === 'a', 'test')).toBe(1);
    expect(await a.closedWithin(2000)).toBe(true);
    expect((await b.readAt(0, 1)).error).toBe(0);
  });
});
