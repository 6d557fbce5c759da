/**
 * TFTP codec and the pure parts around it (options, negotiation, block
 * arithmetic, file names).
 *
 * Golden packets are real captures, kept inline as hex:
 * - EDK2 and iPXE: OVMF (OVMF_CODE_4M.fd, virtio-net with an empty romfile)
 *   PXE-booting snponly.efi from QEMU's user-mode TFTP server, captured with
 *   `-object filter-dump` (network 192.0.2.0/24, restrict=on); iPXE is the
 *   snponly.efi it loaded, fetching itself again.
 * - curl 7.88.1, atftp 0.8.0, tftp-hpa 5.2 and in.tftpd 5.2 on loopback,
 *   captured with `tcpdump -i lo`; "bootfarm" lines are this server's answers.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ackedBlock, blockRange, lastBlock, windowAfter, wireBlock } from '../../appliance/tftp/blocks.js';
import { ackBlock, decodeTftp, describeTftp, encodeTftp, parseOptions, TftpDecodeError, type TftpOption, type TftpPacket } from '../../appliance/tftp/codec.js';
import { negotiate } from '../../appliance/tftp/negotiate.js';
import { checkTftpName } from '../../appliance/tftp/paths.js';

const GOLDEN: { from: string; hex: string; text: string }[] = [
  {
    from: 'EDK2 (OVMF) size probe',
    hex: '0001736e706f6e6c792e656669006f63746574007473697a65003000626c6b73697a6500313436380077696e646f7773697a65003400',
    text: 'RRQ "snponly.efi" mode="octet" "tsize"="0" "blksize"="1468" "windowsize"="4"',
  },
  { from: 'EDK2 (OVMF) aborting the probe', hex: '00050008557365722061626f7274656420746865207472616e7366657200', text: 'ERROR code=8 (option negotiation failed) message="User aborted the transfer"' },
  {
    from: 'EDK2 (OVMF) real request',
    hex: '0001736e706f6e6c792e656669006f6374657400626c6b73697a6500313436380077696e646f7773697a65003400',
    text: 'RRQ "snponly.efi" mode="octet" "blksize"="1468" "windowsize"="4"',
  },
  { from: 'QEMU user-mode TFTP answering EDK2', hex: '00067473697a650031373337393200626c6b73697a65003134323800', text: 'OACK "tsize"="173792" "blksize"="1428"' },
  {
    from: 'iPXE (snponly.efi 1.0.0+git-20190125)',
    hex: '0001736e706f6e6c792e656669006f6374657400626c6b73697a650031343332007473697a65003000',
    text: 'RRQ "snponly.efi" mode="octet" "blksize"="1432" "tsize"="0"',
  },
  {
    from: 'curl --tftp-blksize 1428',
    hex: '0001756e64696f6e6c792e6b707865006f63746574007473697a65003000626c6b73697a6500313432380074696d656f7574003600',
    text: 'RRQ "undionly.kpxe" mode="octet" "tsize"="0" "blksize"="1428" "timeout"="6"',
  },
  { from: 'bootfarm OACK to curl', hex: '00067473697a6500373432313300626c6b73697a6500313432380074696d656f7574003600', text: 'OACK "tsize"="74213" "blksize"="1428" "timeout"="6"' },
  {
    from: 'atftp --option "blksize 1428" --option "windowsize 16" --option tsize',
    hex: '0001756e64696f6e6c792e6b707865006f63746574007473697a65003000626c6b73697a6500313432380077696e646f7773697a6500313600',
    text: 'RRQ "undionly.kpxe" mode="octet" "tsize"="0" "blksize"="1428" "windowsize"="16"',
  },
  { from: 'bootfarm OACK to atftp', hex: '00067473697a6500373432313300626c6b73697a6500313432380077696e646f7773697a6500313600', text: 'OACK "tsize"="74213" "blksize"="1428" "windowsize"="16"' },
  { from: 'in.tftpd 5.2 OACK to atftp (no windowsize)', hex: '00067473697a6500373432313300626c6b73697a65003134323800', text: 'OACK "tsize"="74213" "blksize"="1428"' },
  { from: 'tftp-hpa -m binary (no options)', hex: '0001756e64696f6e6c792e6b707865006f6374657400', text: 'RRQ "undionly.kpxe" mode="octet"' },
  { from: 'tftp-hpa -m netascii', hex: '000168656c6c6f2e747874006e6574617363696900', text: 'RRQ "hello.txt" mode="netascii"' },
  { from: 'tftp-hpa put', hex: '0002782e6a736f6e006f6374657400', text: 'WRQ "x.json" mode="octet"' },
  { from: 'in.tftpd 5.2 file not found', hex: '0005000146696c65206e6f7420666f756e6400', text: 'ERROR code=1 (file not found) message="File not found"' },
  { from: 'bootfarm refusing a write', hex: '00050002746869732073657276657220697320726561642d6f6e6c7900', text: 'ERROR code=2 (access violation) message="this server is read-only"' },
  { from: 'in.tftpd 5.2 DATA 1 of a 10-byte file', hex: '0003000168656c6c6f2c20707865', text: 'DATA block=1 bytes=10' },
  { from: 'curl ACK 1', hex: '00040001', text: 'ACK block=1' },
  { from: 'curl ACK 0 (of an OACK)', hex: '00040000', text: 'ACK block=0' },
];

describe('golden packets from real clients and servers', () => {
  it.each(GOLDEN)('$from', ({ hex, text }) => {
    const bytes = Buffer.from(hex, 'hex');
    const p = decodeTftp(bytes);
    expect(describeTftp(p)).toBe(text);
    expect(encodeTftp(p).toString('hex')).toBe(hex);
  });

  it('reads the options a server acts on from the EDK2 and iPXE requests', () => {
    const edk2 = decodeTftp(Buffer.from(GOLDEN[0]!.hex, 'hex'));
    if (edk2.op !== 'RRQ') throw new Error('not an RRQ');
    expect(parseOptions(edk2.options)).toEqual({ tsize: { name: 'tsize', value: 0 }, blksize: { name: 'blksize', value: 1468 }, windowsize: { name: 'windowsize', value: 4 }, ignored: [] });
    const ipxe = decodeTftp(Buffer.from(GOLDEN[4]!.hex, 'hex'));
    if (ipxe.op !== 'RRQ') throw new Error('not an RRQ');
    expect(parseOptions(ipxe.options)).toEqual({ blksize: { name: 'blksize', value: 1432 }, tsize: { name: 'tsize', value: 0 }, ignored: [] });
  });
});

describe('decode edge cases', () => {
  const bad = (hex: string) => () => decodeTftp(Buffer.from(hex, 'hex'));

  it('refuses what is not a packet, with TftpDecodeError only', () => {
    for (const hex of ['', '00', '0000', '0007', 'ffff', '0001', '000161', '00016100', '0001610000', '0003', '000300', '0004', '000400', '0005', '000500']) {
      expect(bad(hex), hex).toThrow(TftpDecodeError);
    }
  });

  it('is lenient where real clients are sloppy, like tftp-hpa', () => {
    // NUL padding after the options (some ROMs pad requests).
    expect(decodeTftp(Buffer.concat([Buffer.from('000161006f6374657400', 'hex'), Buffer.alloc(8)]))).toEqual({ op: 'RRQ', filename: 'a', mode: 'octet', options: [] });
    expect(decodeTftp(Buffer.from('000161006f637465740074696d656f757400310000000000', 'hex'))).toEqual({ op: 'RRQ', filename: 'a', mode: 'octet', options: [{ name: 'timeout', value: '1' }] });
    // A last option name without a value is dropped.
    expect(decodeTftp(Buffer.from('000161006f63746574007473697a6500', 'hex'))).toEqual({ op: 'RRQ', filename: 'a', mode: 'octet', options: [] });
    // ACK padded; ERROR without its final NUL.
    expect(decodeTftp(Buffer.from('0004000700000000', 'hex'))).toEqual({ op: 'ACK', block: 7 });
    expect(decodeTftp(Buffer.from('000500016e6f', 'hex'))).toEqual({ op: 'ERROR', code: 1, message: 'no' });
    // An option value cut before its NUL is not lenience: the packet was truncated.
    expect(bad('000161006f63746574007473697a650030')).toThrow(TftpDecodeError);
  });

  it('keeps every byte of a name (latin1), so decode -> encode is exact', () => {
    const raw = Buffer.from([0, 1, 0xc3, 0xa9, 0xff, 0x01, 0, 0x6f, 0x63, 0x74, 0x65, 0x74, 0]);
    const p = decodeTftp(raw);
    expect(encodeTftp(p)).toEqual(raw);
  });

  it('does not let the DATA payload alias the input buffer', () => {
    const raw = Buffer.from('00030001616263', 'hex');
    const p = decodeTftp(raw) as Extract<TftpPacket, { op: 'DATA' }>;
    raw[4] = 0x7a;
    expect(p.data.toString()).toBe('abc');
  });
});

describe('encode', () => {
  it('refuses packets that cannot be put on the wire', () => {
    expect(() => encodeTftp({ op: 'RRQ', filename: 'a\0b', mode: 'octet', options: [] })).toThrow(RangeError);
    expect(() => encodeTftp({ op: 'RRQ', filename: 'a', mode: '', options: [] })).toThrow(RangeError);
    expect(() => encodeTftp({ op: 'OACK', options: [{ name: '', value: '1' }] })).toThrow(RangeError);
    expect(() => encodeTftp({ op: 'ACK', block: 65536 })).toThrow(RangeError);
    expect(() => encodeTftp({ op: 'DATA', block: -1, data: Buffer.alloc(0) })).toThrow(RangeError);
    expect(() => encodeTftp({ op: 'ERROR', code: 1, message: 'caf\u00e9 \u2603' })).toThrow(RangeError);
  });
});

// ------------------------------------------------------------ properties

const byteString = (o: { minLength?: number; maxLength?: number } = {}) => fc.uint8Array({ minLength: o.minLength ?? 0, maxLength: o.maxLength ?? 40 }).map((a) => Buffer.from(a.filter((b) => b !== 0)).toString('latin1'));
const option: fc.Arbitrary<TftpOption> = fc.record({
  name: fc.oneof(fc.constantFrom('blksize', 'tsize', 'timeout', 'windowsize', 'BlkSize', 'multicast'), byteString({ minLength: 1 })).filter((s) => s.length > 0),
  value: fc.oneof(fc.integer({ min: 0, max: 70000 }).map(String), byteString()),
});
const packet: fc.Arbitrary<TftpPacket> = fc.oneof(
  fc.record({ op: fc.constantFrom('RRQ' as const, 'WRQ' as const), filename: byteString(), mode: byteString({ minLength: 1 }).filter((s) => s.length > 0), options: fc.array(option, { maxLength: 6 }) }),
  fc.record({ op: fc.constant('DATA' as const), block: fc.integer({ min: 0, max: 65535 }), data: fc.uint8Array({ maxLength: 1500 }).map((a) => Buffer.from(a)) }),
  fc.record({ op: fc.constant('ACK' as const), block: fc.integer({ min: 0, max: 65535 }) }),
  fc.record({ op: fc.constant('ERROR' as const), code: fc.integer({ min: 0, max: 65535 }), message: byteString() }),
  fc.record({ op: fc.constant('OACK' as const), options: fc.array(option, { maxLength: 6 }) }),
);

/** Only TftpDecodeError may come out of decodeTftp. */
function decodesOrRefuses(buf: Buffer): TftpPacket | null {
  try {
    return decodeTftp(buf);
  } catch (e) {
    if (e instanceof TftpDecodeError) return null;
    throw e;
  }
}

describe('properties', () => {
  it('decode(encode(p)) is p for every packet', () => {
    fc.assert(
      fc.property(packet, (p) => {
        expect(decodeTftp(encodeTftp(p))).toEqual(p);
      }),
      { numRuns: 2000 },
    );
  });

  it('decode -> encode -> decode is identity for whatever decodes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (a) => {
        const p = decodesOrRefuses(Buffer.from(a));
        if (p) expect(decodeTftp(encodeTftp(p))).toEqual(p);
      }),
      { numRuns: 5000 },
    );
  });

  it('ackBlock (the server\'s fast path) says exactly what decodeTftp says about ACKs', () => {
    const bytes = fc.oneof(
      fc.uint8Array({ maxLength: 12 }),
      fc.tuple(fc.integer({ min: 0, max: 65535 }), fc.uint8Array({ maxLength: 6 })).map(([block, pad]) => Uint8Array.from([0, 4, block >> 8, block & 0xff, ...pad])),
    );
    fc.assert(
      fc.property(bytes, (a) => {
        const p = decodesOrRefuses(Buffer.from(a));
        expect(ackBlock(Buffer.from(a))).toBe(p?.op === 'ACK' ? p.block : null);
      }),
      { numRuns: 5000 },
    );
  });

  it('random bytes never throw anything but TftpDecodeError', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), (a) => {
        decodesOrRefuses(Buffer.from(a));
      }),
      { numRuns: 10000 },
    );
  });

  it('mutated real packets (bit flips, cuts, insertions) never throw anything but TftpDecodeError', () => {
    const reals = GOLDEN.map((g) => Buffer.from(g.hex, 'hex'));
    fc.assert(
      fc.property(fc.constantFrom(...reals), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 }), fc.constantFrom('flip', 'cut', 'insert', 'set')), { minLength: 1, maxLength: 5 }), (real, edits) => {
        let b = Buffer.from(real);
        for (const [at, v, kind] of edits) {
          const i = b.length ? at % b.length : 0;
          if (kind === 'flip' && b.length) b[i] = b[i]! ^ (1 << (v % 8));
          else if (kind === 'set' && b.length) b[i] = v;
          else if (kind === 'cut') b = b.subarray(0, i);
          else b = Buffer.concat([b.subarray(0, i), Buffer.from([v]), b.subarray(i)]);
        }
        const p = decodesOrRefuses(b);
        if (p) describeTftp(p);
      }),
      { numRuns: 10000 },
    );
  });
});

// ------------------------------------------------------------ options and negotiation

describe('option parsing (RFC 2347, 2348, 2349, 7440)', () => {
  it('takes names case-insensitively, clamps blksize above 65464, ignores invalid values and repeats', () => {
    const got = parseOptions([
      { name: 'BLKSIZE', value: '70000' },
      { name: 'blksize', value: '1024' },
      { name: 'tsize', value: '0' },
      { name: 'timeout', value: '0' },
      { name: 'timeout', value: '256' },
      { name: 'Timeout', value: '3' },
      { name: 'windowsize', value: '65536' },
      { name: 'windowsize', value: '-1' },
      { name: 'windowsize', value: '8' },
      { name: 'multicast', value: '' },
      { name: '__proto__', value: '1' },
    ]);
    expect(got.blksize).toEqual({ name: 'BLKSIZE', value: 65464 });
    expect(got.tsize).toEqual({ name: 'tsize', value: 0 });
    expect(got.timeout).toEqual({ name: 'Timeout', value: 3 });
    expect(got.windowsize).toEqual({ name: 'windowsize', value: 8 });
    expect(got.ignored.map((o) => `${o.name}=${o.value}`)).toEqual(['blksize=1024', 'timeout=0', 'timeout=256', 'windowsize=65536', 'windowsize=-1', 'multicast=', '__proto__=1']);
  });

  it('ignores a blksize below 8 and values that are not plain decimals', () => {
    for (const value of ['7', '0', '', '1e3', ' 512', '512 ', '0x200', '+512', '99999999999999999999']) {
      expect(parseOptions([{ name: 'blksize', value }]).blksize, value).toBeUndefined();
    }
    expect(parseOptions([{ name: 'blksize', value: '8' }]).blksize?.value).toBe(8);
  });
});

describe('negotiation', () => {
  const limits = { maxBlksize: 65464, maxWindowSize: 64, maxWindowBytes: 128 * 1024, defaultTimeoutMs: 1000 };

  it('answers EDK2: blksize and windowsize granted, tsize is the file size, in the order asked', () => {
    const n = negotiate(
      [
        { name: 'tsize', value: '0' },
        { name: 'blksize', value: '1468' },
        { name: 'windowsize', value: '4' },
      ],
      173792,
      limits,
    );
    expect(n).toMatchObject({ blksize: 1468, windowsize: 4, timeoutMs: 1000 });
    expect(n.oack).toEqual([
      { name: 'tsize', value: '173792' },
      { name: 'blksize', value: '1468' },
      { name: 'windowsize', value: '4' },
    ]);
  });

  it('sends no OACK when nothing it understands was asked (RFC 2347: plain RFC 1350 transfer)', () => {
    expect(negotiate([{ name: 'multicast', value: '' }], 10, limits)).toMatchObject({ blksize: 512, windowsize: 1, oack: [], ignored: [{ name: 'multicast', value: '' }] });
  });

  it('echoes tsize only when asked, and keeps the client spelling', () => {
    expect(negotiate([{ name: 'BlkSize', value: '1432' }], 10, limits).oack).toEqual([{ name: 'BlkSize', value: '1432' }]);
  });

  it('grants smaller blksize and windowsize than asked when its limits say so', () => {
    const n = negotiate(
      [
        { name: 'windowsize', value: '1000' },
        { name: 'blksize', value: '65464' },
      ],
      1,
      { ...limits, maxBlksize: 8192 },
    );
    // 128 KiB / 8192 = 16 blocks, below maxWindowSize 64.
    expect(n.oack).toEqual([
      { name: 'windowsize', value: '16' },
      { name: 'blksize', value: '8192' },
    ]);
    expect(negotiate([{ name: 'windowsize', value: '1000' }], 1, limits).windowsize).toBe(64);
  });

  it('acknowledges the client timeout as asked and never waits longer than it before the first retransmission', () => {
    const curl = negotiate([{ name: 'timeout', value: '6' }], 1, limits);
    expect(curl.oack).toEqual([{ name: 'timeout', value: '6' }]);
    expect(curl).toMatchObject({ timeoutMs: 1000, clientTimeoutMs: 6000 });
    expect(negotiate([{ name: 'timeout', value: '1' }], 1, { ...limits, defaultTimeoutMs: 3000 }).timeoutMs).toBe(1000);
  });
});

describe('block arithmetic', () => {
  it('rolls over from 65535 to 0 on the wire, as tftp-hpa, curl and iPXE expect', () => {
    expect([65534, 65535, 65536, 65537, 131072].map(wireBlock)).toEqual([65534, 65535, 0, 1, 0]);
  });

  it('ends a file that is a multiple of blksize with an empty block', () => {
    expect(lastBlock(0, 512)).toBe(1);
    expect(lastBlock(511, 512)).toBe(1);
    expect(lastBlock(512, 512)).toBe(2);
    expect(blockRange(2, 512, 512)).toEqual({ offset: 512, length: 0 });
    expect(blockRange(3, 512, 1100)).toEqual({ offset: 1024, length: 76 });
  });

  it('maps an ACK to the sent block it acknowledges, across rollover; duplicates and old ACKs map to nothing', () => {
    expect(ackedBlock(0, 65530, 65540)).toBe(65536);
    expect(ackedBlock(65535, 65530, 65540)).toBe(65535);
    expect(ackedBlock(65530, 65530, 65540)).toBeNull(); // duplicate
    expect(ackedBlock(65529, 65530, 65540)).toBeNull(); // old
    expect(ackedBlock(5, 65530, 65540)).toBeNull(); // block 65541 was not sent
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 40 }), fc.integer({ min: 0, max: 65535 }), fc.integer({ min: 0, max: 65535 }), (acked, inFlight, pick) => {
        const sent = acked + inFlight;
        // Every sent, unacknowledged block is found from its wire number...
        if (inFlight > 0) {
          const n = acked + 1 + (pick % inFlight);
          expect(ackedBlock(wireBlock(n), acked, sent)).toBe(n);
        }
        // ...and an acknowledged one never is, while it is not 65536 blocks older than the newest sent
        // (16-bit numbers cannot tell them apart; windows here are at most 65535 blocks).
        expect(ackedBlock(wireBlock(acked - (pick % (65536 - inFlight))), acked, sent)).toBeNull();
      }),
      { numRuns: 3000 },
    );
  });

  it('resends the window after the last ACK, clipped at the last block', () => {
    expect(windowAfter(0, 4, 100)).toEqual({ from: 1, to: 4 });
    expect(windowAfter(98, 4, 100)).toEqual({ from: 99, to: 100 });
  });
});

describe('file names', () => {
  it.each([
    ['../etc/passwd', '".." in file name'],
    ['a/../../b', '".." in file name'],
    ['a/../b', '".." in file name'],
    ['..', '".." in file name'],
    ['a\\..\\b', 'backslash in file name'],
    ['boot\\pxeboot.n12', 'backslash in file name'],
    ['a\nb', 'control character in file name'],
    ['\u0001', 'control character in file name'],
    ['', 'empty file name'],
    ['/', 'empty file name'],
    ['./', 'empty file name'],
    [Buffer.from([0xff, 0xfe]).toString('latin1'), 'file name is not UTF-8'],
  ])('refuses %j', (name, message) => {
    expect(checkTftpName(name)).toEqual({ ok: false, message });
  });

  it.each([
    ['snponly.efi', 'snponly.efi'],
    ['/snponly.efi', 'snponly.efi'],
    ['//pxe//./x86/undionly.kpxe', 'pxe/x86/undionly.kpxe'],
    ['/etc/passwd', 'etc/passwd'],
    ['..x/y..', '..x/y..'],
    [Buffer.from('caf\u00e9.efi', 'utf8').toString('latin1'), 'caf\u00e9.efi'],
  ])('maps %j under the root as %j', (name, relative) => {
    expect(checkTftpName(name)).toEqual({ ok: true, relative });
  });
});
