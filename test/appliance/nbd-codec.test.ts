/**
 * NBD codec: golden streams from real clients and a reference server, round
 * trips and fuzzing.
 *
 * Golden streams (test/appliance/fixtures/nbd/*.json, hex, at most 4 KiB per
 * direction) were recorded by a byte-copying TCP proxy on loopback between:
 * - libnbd 1.14 `nbdinfo` (export, `--list`, an unknown name) and this server;
 * - QEMU 7.2 `qemu-img info` and `qemu-io -c 'write -P 0x5a 0 4096'` and this server;
 * - `nbdinfo` and nbdkit 1.32 `memory 1M` (the reference server: its replies
 *   must decode with this codec as well as ours do).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  CMD,
  INFO,
  NbdDecodeError,
  OPT,
  REP,
  TX_FLAGS,
  decodeClientFlags,
  decodeInfo,
  decodeInfoRequest,
  decodeOptionHeader,
  decodeOptionReply,
  decodeRequest,
  decodeServerEntry,
  decodeSimpleReply,
  encodeExportNameReply,
  encodeGreeting,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeInfoRequest,
  encodeOption,
  encodeOptionReply,
  encodeRequest,
  encodeServerEntry,
  encodeSimpleReply,
  decodeGreeting,
  errorMessage,
  MAX_STRING,
} from '../../appliance/nbd/codec.js';
import { walkClient, walkServer } from './support/nbd-walk.js';

const fixture = (name: string) => {
  const d = JSON.parse(readFileSync(join(import.meta.dirname, 'fixtures', 'nbd', `${name}.json`), 'utf8')) as { client: string; server: string };
  return { client: Buffer.from(d.client, 'hex'), server: Buffer.from(d.server, 'hex') };
};

describe('golden streams', () => {
  it('nbdinfo (libnbd): structured replies refused, INFO then GO with block size, name and description, one read, DISC', () => {
    const f = fixture('nbdinfo-go');
    expect(walkClient(f.client)).toEqual([
      'client flags FIXED_NEWSTYLE|NO_ZEROES',
      'STRUCTURED_REPLY',
      'INFO "ro" asks BLOCK_SIZE,NAME,DESCRIPTION',
      'GO "ro" asks BLOCK_SIZE,NAME,DESCRIPTION',
      'READ cookie=1 offset=0 length=8192',
      'DISC cookie=2 offset=0 length=0',
    ]);
    expect(walkServer(f.server, [8192])).toEqual([
      'greeting flags 0x3',
      'STRUCTURED_REPLY -> ERR_UNSUP "STRUCTURED_REPLY is not supported by this server"',
      'INFO -> INFO export size=67108864 flags=HAS_FLAGS|READ_ONLY|SEND_FLUSH|CAN_MULTI_CONN',
      'INFO -> INFO block-size 1/4096/33554432',
      'INFO -> INFO name "ro"',
      'INFO -> INFO description "test disk"',
      'INFO -> ACK',
      'GO -> INFO export size=67108864 flags=HAS_FLAGS|READ_ONLY|SEND_FLUSH|CAN_MULTI_CONN',
      'GO -> INFO block-size 1/4096/33554432',
      'GO -> INFO name "ro"',
      'GO -> INFO description "test disk"',
      'GO -> ACK',
      'reply cookie=1 error=0',
    ]);
  });

  it('nbdinfo --list: LIST, then INFO per export, then ABORT', () => {
    const f = fixture('nbdinfo-list');
    expect(walkClient(f.client)).toEqual([
      'client flags FIXED_NEWSTYLE|NO_ZEROES',
      'STRUCTURED_REPLY',
      'LIST',
      'INFO "rw" asks BLOCK_SIZE,NAME,DESCRIPTION',
      'INFO "ro" asks BLOCK_SIZE,NAME,DESCRIPTION',
      'ABORT',
    ]);
    const s = walkServer(f.server);
    expect(s.slice(2, 5)).toEqual(['LIST -> SERVER "rw" "writable"', 'LIST -> SERVER "ro" "read-only"', 'LIST -> ACK']);
    expect(s).toContain('INFO -> INFO export size=67108864 flags=HAS_FLAGS|SEND_FLUSH|SEND_FUA|SEND_TRIM|SEND_WRITE_ZEROES|CAN_MULTI_CONN');
  });

  it('an unknown export is refused with ERR_UNKNOWN and a message', () => {
    const f = fixture('nbdinfo-unknown-export');
    expect(walkClient(f.client)).toEqual(['client flags FIXED_NEWSTYLE|NO_ZEROES', 'STRUCTURED_REPLY', 'GO "nope" asks BLOCK_SIZE']);
    expect(walkServer(f.server)).toEqual(['greeting flags 0x3', 'STRUCTURED_REPLY -> ERR_UNSUP "STRUCTURED_REPLY is not supported by this server"', 'GO -> ERR_UNKNOWN "no such export nope"']);
  });

  it('qemu-img and qemu-io (QEMU): GO asking block size only; writes carry FUA', () => {
    expect(walkClient(fixture('qemu-img-info').client)).toEqual([
      'client flags FIXED_NEWSTYLE|NO_ZEROES',
      'STRUCTURED_REPLY',
      'GO "ro" asks BLOCK_SIZE',
      'READ cookie=94587451416176 offset=0 length=512',
      'DISC cookie=0 offset=0 length=0',
    ]);
    expect(walkClient(fixture('qemu-io-write-fua').client)).toEqual([
      'client flags FIXED_NEWSTYLE|NO_ZEROES',
      'STRUCTURED_REPLY',
      'GO "rw" asks BLOCK_SIZE',
      'WRITE cookie=94860887126192 offset=0 length=4096 flags=FUA',
    ]);
  });

  it('nbdkit (the reference server): its greeting and option replies decode with this codec', () => {
    const f = fixture('nbdkit-memory-nbdinfo');
    expect(walkClient(f.client)).toContain('LIST_META_CONTEXT (8 bytes: 0000000000000000)');
    expect(walkServer(f.server)).toEqual([
      'greeting flags 0x3',
      'STRUCTURED_REPLY -> ACK',
      'INFO -> INFO export size=1048576 flags=HAS_FLAGS|SEND_FLUSH|SEND_FUA|SEND_TRIM|SEND_WRITE_ZEROES|SEND_DF|CAN_MULTI_CONN|SEND_CACHE|SEND_FAST_ZERO',
      'INFO -> INFO name ""',
      'INFO -> ACK',
      'LIST_META_CONTEXT -> META_CONTEXT (19 bytes)',
      'LIST_META_CONTEXT -> ACK',
      'GO -> INFO export size=1048576 flags=HAS_FLAGS|SEND_FLUSH|SEND_FUA|SEND_TRIM|SEND_WRITE_ZEROES|SEND_DF|CAN_MULTI_CONN|SEND_CACHE|SEND_FAST_ZERO',
      'GO -> INFO name ""',
      'GO -> ACK',
    ]);
  });

  it('our greeting is byte for byte what nbdkit sends', () => {
    expect(encodeGreeting(3)).toEqual(fixture('nbdkit-memory-nbdinfo').server.subarray(0, 18));
  });
});

describe('round trips', () => {
  const u64 = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n });
  it('requests', () => {
    fc.assert(
      fc.property(fc.record({ flags: fc.integer({ min: 0, max: 0xffff }), type: fc.integer({ min: 0, max: 0xffff }), cookie: u64, offset: u64, length: fc.nat({ max: 0xffffffff }) }), (r) => {
        expect(decodeRequest(encodeRequest(r))).toEqual(r);
      }),
    );
  });
  it('simple replies', () => {
    fc.assert(fc.property(u64, fc.nat({ max: 0xffffffff }), (cookie, error) => {
        expect(decodeSimpleReply(encodeSimpleReply(cookie, error))).toEqual({ cookie, error });
      }),
    );
  });
  it('options, info requests, option replies and export entries', () => {
    const name = fc.string({ maxLength: 300 }).filter((s) => !s.includes('\0') && Buffer.byteLength(s) <= MAX_STRING);
    fc.assert(
      fc.property(name, fc.array(fc.integer({ min: 0, max: 0xffff }), { maxLength: 8 }), fc.integer({ min: 0, max: 0xffffffff }), (n, requests, option) => {
        expect(decodeInfoRequest(encodeInfoRequest({ name: n, requests }))).toEqual({ name: n, requests });
        const o = encodeOption(option, Buffer.from(n));
        expect(decodeOptionHeader(o.subarray(0, 16))).toEqual({ option, length: Buffer.byteLength(n) });
        expect(decodeOptionReply(encodeOptionReply(option, REP.SERVER, encodeServerEntry(n, 'desc')))).toEqual({ option, type: REP.SERVER, data: encodeServerEntry(n, 'desc') });
        expect(decodeServerEntry(encodeServerEntry(n, n))).toEqual({ name: n, description: n });
      }),
    );
  });
  it('export and block size information', () => {
    fc.assert(
      fc.property(fc.nat({ max: Number.MAX_SAFE_INTEGER }), fc.integer({ min: 0, max: 0xffff }), (size, flags) => {
        expect(decodeInfo(encodeInfoExport(size, flags))).toEqual({ type: 'export', sizeBytes: BigInt(size), flags });
      }),
    );
    expect(decodeInfo(encodeInfoBlockSize({ minimum: 1, preferred: 4096, maximum: 32 << 20 }))).toEqual({ type: 'block-size', sizes: { minimum: 1, preferred: 4096, maximum: 32 << 20 } });
  });
  it('the EXPORT_NAME answer has 124 zero bytes unless the client asked for none', () => {
    expect(encodeExportNameReply(1 << 20, TX_FLAGS.HAS_FLAGS, false)).toHaveLength(134);
    const short = encodeExportNameReply(1 << 20, TX_FLAGS.HAS_FLAGS | TX_FLAGS.READ_ONLY, true);
    expect(short).toHaveLength(10);
    expect(short.readBigUInt64BE(0)).toBe(1n << 20n);
    expect(short.readUInt16BE(8)).toBe(3);
  });
  it('greeting', () => expect(decodeGreeting(encodeGreeting(3))).toEqual({ flags: 3 }));
});

describe('malformed input', () => {
  it('decoders throw only NbdDecodeError, whatever the bytes', () => {
    const decoders = [decodeRequest, decodeOptionHeader, decodeInfoRequest, decodeOptionReply, decodeServerEntry, decodeInfo, decodeSimpleReply, decodeGreeting, decodeClientFlags];
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), fc.nat({ max: decoders.length - 1 }), (bytes, i) => {
        try {
          decoders[i]!(Buffer.from(bytes));
        } catch (e) {
          expect(e).toBeInstanceOf(NbdDecodeError);
        }
      }),
      { numRuns: 5000 },
    );
  });
  it('names: NUL bytes, invalid UTF-8, lengths that do not add up and names over 4096 bytes are refused', () => {
    const info = (name: Buffer, count = 0, extra = 0) => {
      const b = Buffer.alloc(6 + name.length + 2 * count + extra);
      b.writeUInt32BE(name.length, 0);
      name.copy(b, 4);
      b.writeUInt16BE(count, 4 + name.length);
      return b;
    };
    expect(() => decodeInfoRequest(info(Buffer.from('a\0b')))).toThrow(/NUL/);
    expect(() => decodeInfoRequest(info(Buffer.from([0xc3, 0x28])))).toThrow(/UTF-8/);
    expect(() => decodeInfoRequest(info(Buffer.from('ok'), 2, -2))).toThrow(/need 12 bytes of data, got 10/);
    expect(() => decodeInfoRequest(info(Buffer.from('ok'), 0, 1))).toThrow(/need 8 bytes of data, got 9/);
    expect(() => decodeInfoRequest(info(Buffer.alloc(MAX_STRING + 1, 0x61)))).toThrow(/at most 4096/);
    const lying = Buffer.alloc(10);
    lying.writeUInt32BE(0xffffffff, 0);
    expect(() => decodeInfoRequest(lying)).toThrow(/does not fit/);
  });
  it('bad magics are named', () => {
    const r = encodeRequest({ flags: 0, type: CMD.READ, cookie: 1n, offset: 0n, length: 1 });
    r[0] = 0;
    expect(() => decodeRequest(r)).toThrow(/request magic 0x00609513/);
    const o = encodeOption(OPT.GO);
    o[3] = o[3]! ^ 1;
    expect(() => decodeOptionHeader(o.subarray(0, 16))).toThrow(/IHAVEOPT/);
  });
  it('an error message never exceeds the string limit nor carries NUL', () => {
    const m = errorMessage(`x\0${'y'.repeat(10_000)}`);
    expect(m.length).toBe(MAX_STRING);
    expect(m.includes(0)).toBe(false);
  });
  it('unknown information types are kept, not refused (clients ignore what they do not know)', () => {
    const b = Buffer.from([0, 9, 1, 2, 3]);
    expect(decodeInfo(b)).toEqual({ type: 'unknown', code: 9, data: Buffer.from([1, 2, 3]) });
    expect(INFO.BLOCK_SIZE).toBe(3);
  });
});
