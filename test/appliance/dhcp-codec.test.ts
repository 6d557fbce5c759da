/**
 * DHCP codec: golden packets captured from real clients (QEMU's iPXE ROM, OVMF's
 * EDK2 PXE and HTTP Boot, iPXE's snponly.efi; see fixtures/dhcp/README.md),
 * decode/encode round trips, and fuzzing: nothing but DhcpDecodeError ever
 * comes out of decodeDhcp.
 */
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DhcpDecodeError, MAGIC_COOKIE, decodeDhcp, describeDhcp, encodeDhcp, type DhcpOption, type DhcpPacket } from '../../appliance/dhcp/codec.js';
import {
  OPT,
  clientArchs,
  clientMachineId,
  clientNdi,
  decodePxeVendorOptions,
  encodePxeVendorOptions,
  getOption,
  messageType,
  serverId,
  userClasses,
  vendorClass,
} from '../../appliance/dhcp/options.js';
import { arbitraryPacket, fixtureNames, fixtures, loadFixture, mutatedRealPacket } from './fixtures/dhcp/support.js';

/** A minimal valid request: 240 octets of header + cookie, then the options. */
function rawPacket(options: number[], patch?: (b: Buffer) => void): Buffer {
  const b = Buffer.alloc(240 + options.length);
  b[0] = 1;
  b[1] = 1;
  b[2] = 6;
  b.writeUInt32BE(0x01020304, 4);
  Buffer.from([0x52, 0x54, 0x00, 0x00, 0x02, 0x99]).copy(b, 28);
  b.writeUInt32BE(MAGIC_COOKIE, 236);
  Buffer.from(options).copy(b, 240);
  patch?.(b);
  return b;
}

function decodeError(buf: Buffer): DhcpDecodeError {
  try {
    decodeDhcp(buf);
  } catch (err) {
    expect(err).toBeInstanceOf(DhcpDecodeError);
    return err as DhcpDecodeError;
  }
  throw new Error('decodeDhcp accepted the packet');
}

describe('golden packets from real clients', () => {
  it('has the captured fixtures', () => {
    expect(fixtureNames).toEqual([
      'edk2-x64-discover',
      'edk2-x64-http-discover',
      'edk2-x64-request',
      'edk2-x64-request-4011',
      'ipxe-bios-discover',
      'ipxe-bios-request',
      'ipxe-x64-discover',
      'ipxe-x64-request',
    ]);
  });

  for (const name of fixtureNames) {
    describe(name, () => {
      it('decodes to the checked-in description', async () => {
        await expect(`${describeDhcp(decodeDhcp(loadFixture(name)))}\n`).toMatchFileSnapshot(join(fixtures, `${name}.txt`));
      });

      it('survives decode -> encode -> decode unchanged', () => {
        const once = decodeDhcp(loadFixture(name));
        const bytes = encodeDhcp(once);
        expect(decodeDhcp(bytes)).toEqual(once);
        expect(bytes.length).toBeGreaterThanOrEqual(300);
      });
    });
  }

  it('reads what EDK2 says about itself: arch 7, UNDI 3.0, its SMBIOS UUID, PXEClient', () => {
    const p = decodeDhcp(loadFixture('edk2-x64-discover'));
    expect(messageType(p)).toBe(1);
    expect(clientArchs(p)).toEqual([7]);
    expect(clientNdi(p)).toEqual({ type: 1, major: 3, minor: 0 });
    // QEMU ran with -uuid 5b6f2a20-0000-4000-8000-000000000220: the GUID reads back the same.
    expect(clientMachineId(p)).toEqual({ type: 0, guid: '5b6f2a20-0000-4000-8000-000000000220' });
    expect(vendorClass(p)).toBe('PXEClient:Arch:00007:UNDI:003000');
    expect(p.flags).toBe(0x8000);
  });

  it('reads the iPXE user class, sent as a plain string rather than RFC 3004 instances', () => {
    const p = decodeDhcp(loadFixture('ipxe-bios-discover'));
    expect(getOption(p, OPT.USER_CLASS)?.toString()).toBe('iPXE');
    expect(userClasses(p)).toEqual(['iPXE']);
    expect(clientArchs(p)).toEqual([0]);
  });

  it('reads the server a REQUEST selects', () => {
    expect(serverId(decodeDhcp(loadFixture('edk2-x64-request')))).toBe('192.0.2.1');
    expect(serverId(decodeDhcp(loadFixture('edk2-x64-request-4011')))).toBeUndefined();
  });
});

describe('decode errors', () => {
  it('refuses a packet shorter than header + cookie', () => {
    expect(decodeError(Buffer.alloc(239)).code).toBe('too-short');
    expect(decodeError(Buffer.alloc(0)).code).toBe('too-short');
  });

  it('refuses a bad magic cookie', () => {
    const e = decodeError(rawPacket([255], (b) => b.writeUInt32BE(0x63825364, 236)));
    expect(e.code).toBe('bad-magic-cookie');
    expect(e.offset).toBe(236);
  });

  it('refuses an op that is neither request nor reply, and an hlen over 16', () => {
    expect(decodeError(rawPacket([255], (b) => (b[0] = 3))).code).toBe('bad-op');
    expect(decodeError(rawPacket([255], (b) => (b[2] = 17))).code).toBe('bad-hlen');
  });

  it('refuses an option that runs past the end of the packet', () => {
    expect(decodeError(rawPacket([53, 1, 1, 60, 9, 0x50, 0x58])).code).toBe('option-overrun');
    // A code with no length octet at all.
    const e = decodeError(rawPacket([53, 1, 1, 60]));
    expect(e.code).toBe('option-overrun');
    expect(e.offset).toBe(243);
  });

  it('tolerates a missing end option and trailing padding', () => {
    expect(decodeDhcp(rawPacket([53, 1, 1])).options).toEqual([{ code: 53, data: Buffer.from([1]) }]);
    expect(decodeDhcp(rawPacket([0, 0, 53, 1, 1, 255, 7, 7, 7])).options).toEqual([{ code: 53, data: Buffer.from([1]) }]);
  });
});

describe('option overload (RFC 2132 §9.3)', () => {
  it('reads options from file, then sname, after the options field, and drops option 52', () => {
    const b = rawPacket([53, 1, 3, 52, 1, 3, 255], (buf) => {
      Buffer.from([60, 3, 0x50, 0x58, 0x45, 255]).copy(buf, 108); // file
      Buffer.from([93, 2, 0, 7, 255]).copy(buf, 44); // sname
    });
    const p = decodeDhcp(b);
    expect(p.options.map((o) => o.code)).toEqual([53, 60, 93]);
    expect(p.file).toBe('');
    expect(p.sname).toBe('');
    expect(clientArchs(p)).toEqual([7]);
    // Re-encoded without overload, the same packet comes back.
    expect(decodeDhcp(encodeDhcp(p))).toEqual(p);
  });

  it('keeps sname as a string when only file is overloaded', () => {
    const p = decodeDhcp(
      rawPacket([52, 1, 1, 255], (buf) => {
        Buffer.from('boot-server').copy(buf, 44);
        Buffer.from([67, 4, 0x61, 0x2e, 0x65, 0x66]).copy(buf, 108);
      }),
    );
    expect(p.sname).toBe('boot-server');
    expect(getOption(p, 67)?.toString()).toBe('a.ef');
  });

  it('rejects a bad overload value, a repeated 52, and 52 inside an overloaded field', () => {
    expect(decodeError(rawPacket([52, 1, 4])).code).toBe('bad-overload');
    expect(decodeError(rawPacket([52, 2, 1, 1])).code).toBe('bad-overload');
    expect(decodeError(rawPacket([52, 1, 1, 52, 1, 1])).code).toBe('bad-overload');
    expect(decodeError(rawPacket([52, 1, 1], (buf) => Buffer.from([52, 1, 2]).copy(buf, 108))).code).toBe('bad-overload');
  });

  it('refuses an option that overruns an overloaded field', () => {
    expect(decodeError(rawPacket([52, 1, 2], (buf) => Buffer.from([60, 70]).copy(buf, 44))).code).toBe('option-overrun');
  });
});

describe('option helpers', () => {
  const withOptions = (options: DhcpOption[]): DhcpPacket => ({ ...decodeDhcp(rawPacket([])), options });

  it('concatenates a split long option (RFC 3396 §6)', () => {
    const p = withOptions([
      { code: 60, data: Buffer.from('PXECli') },
      { code: 53, data: Buffer.from([1]) },
      { code: 60, data: Buffer.from('ent') },
    ]);
    expect(vendorClass(p)).toBe('PXEClient');
  });

  it('reads RFC 3004 user classes, and anything else as one string', () => {
    expect(userClasses(withOptions([{ code: 77, data: Buffer.from('\x04iPXE\x08bootfarm', 'latin1') }]))).toEqual(['iPXE', 'bootfarm']);
    expect(userClasses(withOptions([{ code: 77, data: Buffer.from('iPXE') }]))).toEqual(['iPXE']);
    expect(userClasses(withOptions([{ code: 77, data: Buffer.from('\x00ab', 'latin1') }]))).toEqual(['\x00ab']);
    expect(userClasses(withOptions([]))).toEqual([]);
  });

  it('reads malformed typed options as absent rather than throwing', () => {
    const p = withOptions([
      { code: 53, data: Buffer.alloc(0) },
      { code: 54, data: Buffer.from([1, 2, 3]) },
      { code: 93, data: Buffer.from([0, 7, 1]) },
      { code: 94, data: Buffer.from([1]) },
      { code: 97, data: Buffer.alloc(16) },
    ]);
    expect(messageType(p)).toBeUndefined();
    expect(serverId(p)).toBeUndefined();
    expect(clientArchs(p)).toEqual([]);
    expect(clientNdi(p)).toBeUndefined();
    expect(clientMachineId(p)).toBeUndefined();
    expect(() => describeDhcp(p)).not.toThrow();
  });

  it('reads a list of architectures in the client order (RFC 4578 §2.1)', () => {
    expect(clientArchs(withOptions([{ code: 93, data: Buffer.from([0, 11, 0, 7]) }]))).toEqual([11, 7]);
  });

  it('encodes PXE vendor sub-options ended by 255 and reads them back', () => {
    const data = encodePxeVendorOptions([{ code: 6, data: Buffer.from([8]) }]);
    expect(data).toEqual(Buffer.from([6, 1, 8, 255]));
    expect(decodePxeVendorOptions(data)).toEqual([{ code: 6, data: Buffer.from([8]) }]);
    expect(() => decodePxeVendorOptions(Buffer.from([6, 5, 8]))).toThrow(DhcpDecodeError);
  });
});

describe('encode', () => {
  const base = (): DhcpPacket => decodeDhcp(rawPacket([53, 1, 1]));

  it('pads to the 300-octet BOOTP minimum and ends the options with 255', () => {
    const b = encodeDhcp(base());
    expect(b.length).toBe(300);
    expect([...b.subarray(240, 244)]).toEqual([53, 1, 1, 255]);
  });

  it('refuses packets no decoder could produce', () => {
    expect(() => encodeDhcp({ ...base(), ciaddr: '192.0.2.256' })).toThrow(RangeError);
    expect(() => encodeDhcp({ ...base(), xid: 2 ** 32 })).toThrow(RangeError);
    expect(() => encodeDhcp({ ...base(), file: 'x'.repeat(129) })).toThrow(RangeError);
    expect(() => encodeDhcp({ ...base(), sname: 'a\0b' })).toThrow(RangeError);
    expect(() => encodeDhcp({ ...base(), options: [{ code: 67, data: Buffer.alloc(256) }] })).toThrow(RangeError);
    expect(() => encodeDhcp({ ...base(), options: [{ code: 52, data: Buffer.from([1]) }] })).toThrow(RangeError);
  });

  it('writes a 128-octet file name without a terminator and reads it back', () => {
    const p = { ...base(), file: 'f'.repeat(128) };
    expect(decodeDhcp(encodeDhcp(p)).file).toBe(p.file);
  });
});

// ---------------------------------------------------------------- properties

/** Only DhcpDecodeError may escape; when the packet decodes, it must re-encode and describe. */
function decodesOrRefusesCleanly(bytes: Uint8Array): void {
  let p: DhcpPacket;
  try {
    p = decodeDhcp(bytes);
  } catch (err) {
    if (!(err instanceof DhcpDecodeError)) throw err;
    return;
  }
  describeDhcp(p);
  // Decoded options can exceed nothing encode refuses, so the round trip must hold too.
  expect(decodeDhcp(encodeDhcp(p))).toEqual(p);
}

describe('properties', () => {
  it('any packet survives encode -> decode unchanged', () => {
    fc.assert(
      fc.property(arbitraryPacket, (p) => {
        expect(decodeDhcp(encodeDhcp(p))).toEqual(p);
      }),
      { numRuns: 500 },
    );
  });

  it('random bytes make decodeDhcp throw DhcpDecodeError or nothing', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 600 }), decodesOrRefusesCleanly), { numRuns: 2000 });
  });

  it('random bytes behind a valid header and cookie exercise the option parser', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 400 }), fc.constantFrom(0, 1, 2, 3), (tail, overload) => {
        const b = rawPacket([...(overload ? [52, 1, overload] : []), ...tail]);
        decodesOrRefusesCleanly(b);
      }),
      { numRuns: 2000 },
    );
  });

  it('mutated real packets make decodeDhcp throw DhcpDecodeError or nothing', () => {
    fc.assert(fc.property(mutatedRealPacket, decodesOrRefusesCleanly), { numRuns: 2000 });
  });
});
