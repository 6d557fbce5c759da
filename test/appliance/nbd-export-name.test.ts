/** Signed NBD export names: what they carry, and that they cannot be made or edited without the site's secret. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { bootTime, newBootId, newerBoot, sameAddress, signExportName, verifyExportName, type ExportClaim } from '../../appliance/nbd/export-name.js';
import { STREAM_MODES } from '../../model/index.js';

const SECRET = 'a site peer secret that is long enough';
const claim: ExportClaim = { mac: '52:54:00:12:34:56', vdiskId: 'vd_abcdefghijklmnop', version: 3, mode: 'appliance-temporary', bootId: newBootId(1_764_000_000_000, Buffer.from('01020304', 'hex')), address: '192.0.2.10' };

describe('export names', () => {
  it('round-trips every mode, and reads as the target, vDisk, version, mode and boot', () => {
    for (const mode of STREAM_MODES) {
      const name = signExportName({ ...claim, mode }, SECRET);
      expect(name).toMatch(/^bf1\.525400123456\.vd_abcdefghijklmnop\.3\.[rtpx]\.[0-9a-f]{20}\.c000020a\.[A-Za-z0-9_-]{22}$/);
      expect(verifyExportName(name, SECRET)).toEqual({ ...claim, mode });
    }
  });

  it('carries the address that asked for the script: IPv4, IPv6 (also IPv4-mapped), or none', () => {
    for (const [address, back] of [
      ['192.0.2.10', '192.0.2.10'],
      ['::ffff:192.0.2.10', '192.0.2.10'],
      ['2001:db8::1', '2001:db8:0:0:0:0:0:1'],
      [null, null],
    ] as const) {
      const c = verifyExportName(signExportName({ ...claim, address }, SECRET), SECRET)!;
      expect(c.address).toBe(back);
      if (address) expect(sameAddress(c.address!, address)).toBe(true);
    }
    expect(sameAddress('192.0.2.10', '192.0.2.11')).toBe(false);
  });

  it("refuses any edit, another site's secret and anything that is not a name", () => {
    const name = signExportName(claim, SECRET);
    fc.assert(
      fc.property(fc.nat({ max: name.length - 1 }), fc.constantFrom(...'0123456789abcdefxyz._-ABC'), (i, ch) => {
        const edited = name.slice(0, i) + ch + name.slice(i + 1);
        if (edited !== name) expect(verifyExportName(edited, SECRET)).toBeNull();
      }),
    );
    expect(verifyExportName(name, `${SECRET}!`)).toBeNull();
    for (const junk of ['', 'bench', `${name}.`, name.toUpperCase(), '../../etc/passwd']) expect(verifyExportName(junk, SECRET)).toBeNull();
  });

  it('orders boots by their time, then by id', () => {
    const a = newBootId(1000, Buffer.from('ffffffff', 'hex'));
    const b = newBootId(2000, Buffer.from('00000000', 'hex'));
    expect(bootTime(a)).toBe(1000);
    expect(newerBoot(b, a)).toBe(true);
    expect(newerBoot(a, b)).toBe(false);
    const c = newBootId(2000, Buffer.from('00000001', 'hex'));
    expect(newerBoot(c, b)).toBe(true);
    expect(newerBoot(b, b)).toBe(false);
  });
});
