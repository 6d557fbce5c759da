/**
 * The ProxyDHCP decision: what each captured real client gets (golden), the
 * architecture table, the iPXE loop breaker, which messages are answered on
 * which port, and properties (never an address, never a throw).
 */
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DhcpDecodeError, decodeDhcp, describeDhcp, encodeDhcp, type DhcpOption, type DhcpPacket } from '../../appliance/dhcp/codec.js';
import { OPT, decodePxeVendorOptions, getOption, messageType, serverId, vendorClass } from '../../appliance/dhcp/options.js';
import { DEFAULT_BOOT_FILES, proxyReply, type ProxyConfig, type ProxyDecision } from '../../appliance/dhcp/proxy.js';
import { arbitraryPacket, fixtureNames, fixtures, loadFixture, mutatedRealPacket } from './fixtures/dhcp/support.js';

const cfg: ProxyConfig = {
  serverIp: '192.0.2.2',
  scriptUrl: 'http://192.0.2.2:8080/boot.ipxe',
  httpBootUrl: 'http://192.0.2.2:8080/bootstrap/ipxe.efi',
  files: { ...DEFAULT_BOOT_FILES },
};

function replyOf(d: ProxyDecision): DhcpPacket {
  if (!d.reply) throw new Error(`expected a reply, got: ${d.reason}`);
  return d.reply;
}

function reasonOf(d: ProxyDecision): string {
  if (d.reply) throw new Error(`expected no reply, got one with file ${d.reply.file}`);
  return d.reason;
}

const has = (p: DhcpPacket, code: number) => p.options.some((o) => o.code === code);
const str = (p: DhcpPacket, code: number) => getOption(p, code)?.toString('latin1');

/** A request built from a real one with its options replaced (so the fixed fields stay real). */
function request(options: DhcpOption[], patch: Partial<DhcpPacket> = {}): DhcpPacket {
  return { ...decodeDhcp(loadFixture('edk2-x64-discover')), options, ...patch };
}
const o = (code: number, data: number[] | string): DhcpOption => ({ code, data: typeof data === 'string' ? Buffer.from(data, 'latin1') : Buffer.from(data) });
const discover = o(53, [1]);
const req = o(53, [3]);
const arch = (...a: number[]) => o(93, a.flatMap((x) => [x >> 8, x & 0xff]));
const pxeClass = (a: number) => o(60, `PXEClient:Arch:${String(a).padStart(5, '0')}:UNDI:003000`);
const askFor67 = o(55, [1, 3, 43, 60, 66, 67]);

describe('golden: what the captured clients get', () => {
  /** The port each capture was received on. */
  const portOf = (name: string): 67 | 4011 => (name.endsWith('-4011') ? 4011 : 67);

  for (const name of fixtureNames) {
    it(`${name} (port ${portOf(name)})`, async () => {
      const d = proxyReply(decodeDhcp(loadFixture(name)), cfg, portOf(name));
      const text = d.reply ? describeDhcp(d.reply) : `ignored: ${d.reason}`;
      await expect(`${text}\n`).toMatchFileSnapshot(join(fixtures, `${name}.reply.txt`));
      if (d.reply) expect(decodeDhcp(encodeDhcp(d.reply))).toEqual(d.reply);
    });
  }

  it('EDK2 PXE (arch 7) DISCOVER: an offer of snponly.efi, no address, no option 43, its GUID echoed', () => {
    const r = replyOf(proxyReply(decodeDhcp(loadFixture('edk2-x64-discover')), cfg, 67));
    expect(messageType(r)).toBe(2);
    expect(r.yiaddr).toBe('0.0.0.0');
    expect(r.siaddr).toBe('192.0.2.2');
    expect(serverId(r)).toBe('192.0.2.2');
    expect(vendorClass(r)).toBe('PXEClient');
    expect(r.file).toBe('snponly.efi');
    expect(str(r, OPT.BOOTFILE_NAME)).toBe('snponly.efi'); // EDK2 lists 67 in option 55
    expect(has(r, OPT.VENDOR_SPECIFIC)).toBe(false);
    expect(has(r, OPT.TFTP_SERVER_NAME)).toBe(false);
    expect(getOption(r, OPT.CLIENT_MACHINE_ID)).toEqual(getOption(decodeDhcp(loadFixture('edk2-x64-discover')), OPT.CLIENT_MACHINE_ID));
    expect(r.flags).toBe(0x8000);
  });

  it('EDK2 REQUEST on 4011 (after our offer): an ACK with the file, its ciaddr kept', () => {
    const q = decodeDhcp(loadFixture('edk2-x64-request-4011'));
    const r = replyOf(proxyReply(q, cfg, 4011));
    expect(messageType(r)).toBe(5);
    expect(r.ciaddr).toBe(q.ciaddr);
    expect(r.xid).toBe(q.xid);
    expect(r.yiaddr).toBe('0.0.0.0');
    expect(r.file).toBe('snponly.efi');
    expect(vendorClass(r)).toBe('PXEClient');
    expect(has(r, OPT.CLIENT_MACHINE_ID)).toBe(true);
  });

  it('EDK2 and iPXE REQUESTs on 67 to the site DHCP server are left to it', () => {
    expect(reasonOf(proxyReply(decodeDhcp(loadFixture('edk2-x64-request')), cfg, 67))).toMatch(/server 192\.0\.2\.1, not us/);
    expect(reasonOf(proxyReply(decodeDhcp(loadFixture('ipxe-bios-request')), cfg, 67))).toMatch(/not us/);
  });

  it('iPXE (user class iPXE) gets the boot script URL, BIOS ROM and snponly.efi alike: no chainload loop', () => {
    for (const name of ['ipxe-bios-discover', 'ipxe-x64-discover']) {
      const d = proxyReply(decodeDhcp(loadFixture(name)), cfg, 67);
      expect(replyOf(d).file).toBe(cfg.scriptUrl);
      expect(d.client).toMatchObject({ ipxe: true });
    }
  });

  it('the iPXE BIOS ROM (arch 0) gets option 43 with discovery control 8', () => {
    const r = replyOf(proxyReply(decodeDhcp(loadFixture('ipxe-bios-discover')), cfg, 67));
    expect(decodePxeVendorOptions(getOption(r, OPT.VENDOR_SPECIFIC)!)).toEqual([{ code: 6, data: Buffer.from([8]) }]);
  });

  it('EDK2 HTTP Boot (arch 16, HTTPClient) gets the full URL and HTTPClient', () => {
    const d = proxyReply(decodeDhcp(loadFixture('edk2-x64-http-discover')), cfg, 67);
    const r = replyOf(d);
    expect(vendorClass(r)).toBe('HTTPClient');
    expect(r.file).toBe(cfg.httpBootUrl);
    expect(str(r, OPT.BOOTFILE_NAME)).toBe(cfg.httpBootUrl);
    expect(d.client).toMatchObject({ arch: 16, firmware: 'uefi-http' });
    expect(has(r, OPT.VENDOR_SPECIFIC)).toBe(false);
  });
});

describe('boot file by architecture (option 93)', () => {
  const fileFor = (archs: number[], c: ProxyConfig = cfg) => proxyReply(request([discover, pxeClass(archs[0]!), arch(...archs)]), c, 67);

  it('BIOS 0 -> bios, EFI x64 7 and 9 -> uefiX64', () => {
    expect(replyOf(fileFor([0])).file).toBe('undionly.kpxe');
    expect(replyOf(fileFor([7])).file).toBe('snponly.efi');
    expect(replyOf(fileFor([9])).file).toBe('snponly.efi');
    expect(replyOf(fileFor([0], { ...cfg, files: { bios: 'ipxe.pxe', uefiX64: 'ipxe.efi' } })).file).toBe('ipxe.pxe');
  });

  it('IA32 6 and ARM64 11 only when a file is configured; otherwise ignored with the reason', () => {
    expect(reasonOf(fileFor([6]))).toMatch(/no uefiIa32 boot file/);
    expect(reasonOf(fileFor([11]))).toMatch(/no arm64 boot file/);
    const more = { ...cfg, files: { ...cfg.files, uefiIa32: 'ipxe-ia32.efi', arm64: 'snponly-arm64.efi' } };
    expect(replyOf(fileFor([6], more)).file).toBe('ipxe-ia32.efi');
    expect(replyOf(fileFor([11], more)).file).toBe('snponly-arm64.efi');
  });

  it('unknown architectures are ignored, and the reason names them', () => {
    expect(reasonOf(fileFor([10]))).toMatch(/unsupported architecture 10 \(EFI ARM32\)/);
    expect(reasonOf(fileFor([2]))).toMatch(/unsupported architecture 2/);
  });

  it('takes the first architecture of a list that it can serve', () => {
    const d = fileFor([11, 7]);
    expect(replyOf(d).file).toBe('snponly.efi');
    expect(d.client?.arch).toBe(7);
  });

  it('without option 93 reads the arch from the vendor class; a bare PXEClient is a BIOS ROM', () => {
    expect(replyOf(proxyReply(request([discover, pxeClass(7)]), cfg, 67)).file).toBe('snponly.efi');
    expect(replyOf(proxyReply(request([discover, o(60, 'PXEClient')]), cfg, 67)).file).toBe('undionly.kpxe');
  });

  it('HTTP Boot without httpBootUrl is ignored', () => {
    const q = request([discover, o(60, 'HTTPClient:Arch:00016:UNDI:003000'), arch(16)]);
    expect(reasonOf(proxyReply(q, { ...cfg, httpBootUrl: null }, 67))).toMatch(/no httpBootUrl/);
  });

  it('any iPXE client gets the script, whatever the arch, even with no arm64 file configured', () => {
    const d = proxyReply(request([discover, pxeClass(11), arch(11), o(77, 'iPXE')]), cfg, 67);
    expect(replyOf(d).file).toBe(cfg.scriptUrl);
    // RFC 3004 encoded user classes count too.
    expect(replyOf(proxyReply(request([discover, pxeClass(0), arch(0), o(77, '\x04iPXE')]), cfg, 67)).file).toBe(cfg.scriptUrl);
  });

  it('a client that renamed its user class (set user-class bootfarm) is not treated as iPXE', () => {
    expect(replyOf(proxyReply(request([discover, pxeClass(7), arch(7), o(77, 'bootfarm')]), cfg, 67)).file).toBe('snponly.efi');
  });
});

describe('who gets an answer', () => {
  it('ignores clients that are not PXE: no option 60 PXEClient/HTTPClient and no option 93', () => {
    expect(reasonOf(proxyReply(request([discover]), cfg, 67))).toMatch(/not a PXE client/);
    expect(reasonOf(proxyReply(request([discover, o(60, 'MSFT 5.0')]), cfg, 67))).toMatch(/MSFT 5\.0/);
  });

  it('answers a client that sends option 93 without a vendor class', () => {
    expect(replyOf(proxyReply(request([discover, arch(7)]), cfg, 67)).file).toBe('snponly.efi');
  });

  it('on 67: DISCOVER -> OFFER; other message types ignored', () => {
    expect(messageType(replyOf(proxyReply(request([discover, arch(7)]), cfg, 67)))).toBe(2);
    for (const t of [2, 4, 5, 6, 7, 8]) expect(proxyReply(request([o(53, [t]), arch(7)]), cfg, 67).reply).toBeNull();
    expect(reasonOf(proxyReply(request([arch(7)]), cfg, 67))).toMatch(/BOOTP/);
  });

  it('on 67: a REQUEST naming us, without asking for an address, gets an ACK', () => {
    const r = replyOf(proxyReply(request([req, o(54, [192, 0, 2, 2]), arch(7)]), cfg, 67));
    expect(messageType(r)).toBe(5);
    expect(r.yiaddr).toBe('0.0.0.0');
    expect(replyOf(proxyReply(request([req, o(54, [192, 0, 2, 2]), o(50, [0, 0, 0, 0]), arch(7)]), cfg, 67)).file).toBe('snponly.efi');
  });

  it('on 67: a REQUEST naming us but asking for an address belongs to a DHCP server sharing our address', () => {
    expect(reasonOf(proxyReply(request([req, o(54, [192, 0, 2, 2]), o(50, [192, 0, 2, 106]), arch(7)]), cfg, 67))).toMatch(/address 192\.0\.2\.106/);
  });

  it('on 67: a REQUEST without server id (renewal) is ignored', () => {
    expect(reasonOf(proxyReply(request([req, arch(7)]), cfg, 67))).toMatch(/without server id/);
  });

  it('on 4011: REQUEST and INFORM get an ACK; DISCOVER does not', () => {
    expect(messageType(replyOf(proxyReply(request([req, arch(7)], { ciaddr: '192.0.2.106' }), cfg, 4011)))).toBe(5);
    const inform = replyOf(proxyReply(request([o(53, [8]), arch(0)], { ciaddr: '192.0.2.107' }), cfg, 4011));
    expect(messageType(inform)).toBe(5);
    expect(inform.ciaddr).toBe('192.0.2.107');
    expect(reasonOf(proxyReply(request([discover, arch(7)]), cfg, 4011))).toMatch(/port 4011/);
  });

  it('ignores replies (op 2) and refuses a config whose serverIp is not an address', () => {
    expect(reasonOf(proxyReply(request([discover, arch(7)], { op: 2 }), cfg, 67))).toMatch(/BOOTREQUEST/);
    expect(reasonOf(proxyReply(request([discover, arch(7)]), { ...cfg, serverIp: 'appliance.local' }, 67))).toMatch(/serverIp/);
  });
});

describe('reply contents', () => {
  it('copies xid, flags, giaddr and chaddr; OFFER has ciaddr 0', () => {
    const q = request([discover, arch(7)], { giaddr: '192.0.2.254', flags: 0, ciaddr: '192.0.2.50', xid: 0xdeadbeef });
    const r = replyOf(proxyReply(q, cfg, 67));
    expect(r).toMatchObject({ op: 2, xid: 0xdeadbeef, flags: 0, giaddr: '192.0.2.254', ciaddr: '0.0.0.0', yiaddr: '0.0.0.0', hops: 0 });
    expect(r.chaddr).toEqual(q.chaddr);
  });

  it('echoes option 97 only when the client sent it', () => {
    expect(has(replyOf(proxyReply(request([discover, arch(7)]), cfg, 67)), 97)).toBe(false);
    const id = o(97, [0, ...Array.from({ length: 16 }, (_, i) => i)]);
    expect(getOption(replyOf(proxyReply(request([discover, arch(7), id]), cfg, 67)), 97)).toEqual(id.data);
  });

  it('sends option 67 only when asked, and always when the name does not fit the file field', () => {
    expect(has(replyOf(proxyReply(request([discover, arch(7)]), cfg, 67)), 67)).toBe(false);
    expect(str(replyOf(proxyReply(request([discover, arch(7), askFor67]), cfg, 67)), 67)).toBe('snponly.efi');
    const longUrl = `http://192.0.2.2:8080/${'s'.repeat(120)}/boot.ipxe`;
    const r = replyOf(proxyReply(request([discover, arch(7), o(77, 'iPXE')]), { ...cfg, scriptUrl: longUrl }, 67));
    expect(r.file).toBe('');
    expect(str(r, 67)).toBe(longUrl);
    expect(reasonOf(proxyReply(request([discover, arch(7), o(77, 'iPXE')]), { ...cfg, scriptUrl: `http://x/${'s'.repeat(300)}` }, 67))).toMatch(/255/);
  });

  it('never sends option 66, address options or lease times', () => {
    const r = replyOf(proxyReply(request([discover, arch(0), askFor67]), cfg, 67));
    expect(r.options.map((x) => x.code).sort((a, b) => a - b)).toEqual([43, 53, 54, 60, 67]);
  });
});

describe('properties', () => {
  function checkDecision(p: DhcpPacket, port: 67 | 4011): void {
    const d = proxyReply(p, cfg, port);
    if (!d.reply) {
      expect(d.reason.length).toBeGreaterThan(0);
      return;
    }
    expect(d.reply.op).toBe(2);
    expect(d.reply.yiaddr).toBe('0.0.0.0');
    expect(d.reply.siaddr).toBe(cfg.serverIp);
    expect(serverId(d.reply)).toBe(cfg.serverIp);
    expect(['PXEClient', 'HTTPClient']).toContain(vendorClass(d.reply));
    expect([2, 5]).toContain(messageType(d.reply));
    expect(decodeDhcp(encodeDhcp(d.reply))).toEqual(d.reply);
  }

  it('any decodable packet: never throws, never an address, always an encodable reply', () => {
    fc.assert(fc.property(arbitraryPacket, fc.constantFrom<67 | 4011>(67, 4011), checkDecision), { numRuns: 1000 });
  });

  it('mutated real packets: same', () => {
    fc.assert(
      fc.property(mutatedRealPacket, fc.constantFrom<67 | 4011>(67, 4011), (bytes, port) => {
        let p: DhcpPacket;
        try {
          p = decodeDhcp(bytes);
        } catch (err) {
          if (err instanceof DhcpDecodeError) return;
          throw err;
        }
        checkDecision(p, port);
      }),
      { numRuns: 2000 },
    );
  });

  it('PXE-shaped random requests: answered exactly when the arch is served', () => {
    const served = new Set([0, 7, 9]);
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 40 }), fc.constantFrom(1, 3), fc.boolean(), (a, type, ipxe) => {
        const options = [o(53, [type]), pxeClass(a), arch(a), ...(ipxe ? [o(77, 'iPXE')] : []), ...(type === 3 ? [o(54, [192, 0, 2, 2])] : [])];
        const d = proxyReply(request(options), { ...cfg, httpBootUrl: null }, type === 1 ? 67 : 4011);
        const expected = served.has(a) || (ipxe && [6, 11, 16].includes(a));
        expect(d.reply !== null).toBe(expected);
      }),
      { numRuns: 300 },
    );
  });
});
