/**
 * The DHCP options PXE needs: codes, typed readers and builders, and the PXE
 * vendor sub-options carried in option 43. Readers never throw: an absent or
 * malformed option reads as `undefined` (or an empty list), so a decision made
 * on a quirky packet is "ignore", never a crash.
 */
import { DhcpDecodeError, hardwareAddress, ipv4Bytes, type DhcpOption, type DhcpPacket } from './codec.js';

/** Option codes used here (RFC 2132 unless noted). */
export const OPT = {
  SUBNET_MASK: 1,
  ROUTER: 3,
  HOSTNAME: 12,
  /** §8.4 vendor-specific information; PXE sub-options when option 60 is PXEClient. */
  VENDOR_SPECIFIC: 43,
  REQUESTED_IP: 50,
  LEASE_TIME: 51,
  /** §9.3, framing: consumed by the codec, never in `DhcpPacket.options`. */
  OVERLOAD: 52,
  /** §9.6 */
  MESSAGE_TYPE: 53,
  /** §9.7 */
  SERVER_ID: 54,
  /** §9.8 */
  PARAMETER_REQUEST_LIST: 55,
  /** §9.10 */
  MAX_MESSAGE_SIZE: 57,
  /** §9.13 */
  VENDOR_CLASS: 60,
  /** §9.14 */
  CLIENT_ID: 61,
  /** §9.4: a server *name*; PXE clients take the TFTP server from siaddr instead. */
  TFTP_SERVER_NAME: 66,
  /** §9.5 */
  BOOTFILE_NAME: 67,
  /** RFC 3004 */
  USER_CLASS: 77,
  /** RFC 4578 §2.1 */
  CLIENT_ARCH: 93,
  /** RFC 4578 §2.2 */
  CLIENT_NDI: 94,
  /** RFC 4578 §2.3 */
  CLIENT_MACHINE_ID: 97,
  /** iPXE's encapsulated options (its feature flags); not standardised. */
  IPXE_ENCAP: 175,
} as const;

/** RFC 2132 §9.6 */
export const MSG = {
  DISCOVER: 1,
  OFFER: 2,
  REQUEST: 3,
  DECLINE: 4,
  ACK: 5,
  NAK: 6,
  RELEASE: 7,
  INFORM: 8,
} as const;

/** PXE 2.1 spec §2.4.5 (table 2-1): sub-options of option 43 for PXE clients. */
export const PXE_SUBOPT = {
  MTFTP_IP: 1,
  MTFTP_CPORT: 2,
  MTFTP_SPORT: 3,
  MTFTP_TMOUT: 4,
  MTFTP_DELAY: 5,
  DISCOVERY_CONTROL: 6,
  DISCOVERY_MCAST_ADDR: 7,
  BOOT_SERVERS: 8,
  BOOT_MENU: 9,
  MENU_PROMPT: 10,
  MCAST_ADDRS_ALLOC: 11,
  CREDENTIAL_TYPES: 12,
  BOOT_ITEM: 71,
} as const;

/**
 * PXE discovery control bits (PXE 2.1 §2.4.5.2): bit 3 (8) = "if a boot file
 * name is given, download it without prompting or boot server discovery".
 */
export const DISCOVERY_CONTROL_USE_BOOTFILE = 8;

/**
 * Client system architecture types: RFC 4578 §2.1 and the IANA "Processor
 * Architecture Types" registry (which corrected 7 and 9: both are x86-64 UEFI).
 */
export const ARCH = {
  BIOS: 0,
  EFI_IA32: 6,
  EFI_X64: 7,
  EFI_BC: 9,
  EFI_ARM32: 10,
  EFI_ARM64: 11,
  EFI_IA32_HTTP: 15,
  EFI_X64_HTTP: 16,
  EFI_ARM32_HTTP: 18,
  EFI_ARM64_HTTP: 19,
} as const;

const ARCH_NAMES: Record<number, string> = {
  0: 'x86 BIOS',
  1: 'NEC/PC98',
  2: 'Itanium',
  3: 'DEC Alpha',
  4: 'Arc x86',
  5: 'Intel Lean Client',
  6: 'EFI IA32',
  7: 'EFI x86-64',
  8: 'EFI Xscale',
  9: 'EFI x86-64 (EFI BC)',
  10: 'EFI ARM32',
  11: 'EFI ARM64',
  15: 'EFI IA32 HTTP',
  16: 'EFI x86-64 HTTP',
  18: 'EFI ARM32 HTTP',
  19: 'EFI ARM64 HTTP',
};

export function archName(arch: number): string {
  return ARCH_NAMES[arch] ?? `arch ${arch}`;
}

// ---------------------------------------------------------------- readers

/**
 * The data of an option, all instances concatenated in order (RFC 3396 §6:
 * a code that appears more than once is one long option split in pieces).
 */
export function getOption(p: DhcpPacket, code: number): Buffer | undefined {
  const parts = p.options.filter((o) => o.code === code);
  if (parts.length === 0) return undefined;
  return parts.length === 1 ? parts[0]!.data : Buffer.concat(parts.map((o) => o.data));
}

export function hasOption(p: DhcpPacket, code: number): boolean {
  return p.options.some((o) => o.code === code);
}

/** Option 53 (RFC 2132 §9.6): one octet. */
export function messageType(p: DhcpPacket): number | undefined {
  const d = getOption(p, OPT.MESSAGE_TYPE);
  return d?.length === 1 ? d[0] : undefined;
}

/** Option 54 (RFC 2132 §9.7): one IPv4 address. */
export function serverId(p: DhcpPacket): string | undefined {
  const d = getOption(p, OPT.SERVER_ID);
  return d?.length === 4 ? `${d[0]}.${d[1]}.${d[2]}.${d[3]}` : undefined;
}

/** Option 60 (RFC 2132 §9.13): opaque, in practice ASCII such as `PXEClient:Arch:00007:UNDI:003000`. */
export function vendorClass(p: DhcpPacket): string | undefined {
  return getOption(p, OPT.VENDOR_CLASS)?.toString('latin1');
}

/** Option 55 (RFC 2132 §9.8): the codes the client asks for, in its order. */
export function parameterRequestList(p: DhcpPacket): number[] {
  const d = getOption(p, OPT.PARAMETER_REQUEST_LIST);
  return d ? [...d] : [];
}

/** Option 57 (RFC 2132 §9.10): two octets, at least 576. */
export function maxMessageSize(p: DhcpPacket): number | undefined {
  const d = getOption(p, OPT.MAX_MESSAGE_SIZE);
  return d?.length === 2 ? d.readUInt16BE(0) : undefined;
}

/**
 * Option 77 user classes. RFC 3004 §4 encodes a list of (length, data)
 * instances; iPXE (and some others) send one plain string ("iPXE") instead.
 * Data that does not parse exactly as RFC 3004 instances is read as one string.
 */
export function userClasses(p: DhcpPacket): string[] {
  const d = getOption(p, OPT.USER_CLASS);
  if (!d || d.length === 0) return [];
  return parseUserClass(d) ?? [d.toString('latin1')];
}

/** RFC 3004 instances, or undefined when `d` is not in that format. */
function parseUserClass(d: Buffer): string[] | undefined {
  const out: string[] = [];
  let i = 0;
  while (i < d.length) {
    const len = d[i]!;
    // RFC 3004 §4: each UC_Len is at least 1 and the instances fill the option exactly.
    if (len === 0 || i + 1 + len > d.length) return undefined;
    out.push(d.subarray(i + 1, i + 1 + len).toString('latin1'));
    i += 1 + len;
  }
  return out;
}

/** True when the user class is the plain "iPXE" string rather than RFC 3004 instances. */
function userClassIsPlain(d: Buffer): boolean {
  return parseUserClass(d) === undefined;
}

/** Option 93 (RFC 4578 §2.1): a list of 16-bit architecture types, in the client's order. */
export function clientArchs(p: DhcpPacket): number[] {
  const d = getOption(p, OPT.CLIENT_ARCH);
  if (!d || d.length === 0 || d.length % 2 !== 0) return [];
  const out: number[] = [];
  for (let i = 0; i < d.length; i += 2) out.push(d.readUInt16BE(i));
  return out;
}

/** Option 94 (RFC 4578 §2.2): interface type (1 = UNDI) and its version. */
export interface ClientNdi {
  type: number;
  major: number;
  minor: number;
}

export function clientNdi(p: DhcpPacket): ClientNdi | undefined {
  const d = getOption(p, OPT.CLIENT_NDI);
  return d?.length === 3 ? { type: d[0]!, major: d[1]!, minor: d[2]! } : undefined;
}

/**
 * Option 97 (RFC 4578 §2.3): type 0 followed by a 16-octet GUID. The GUID is
 * rendered as EFI and SMBIOS do (first three fields little-endian), so it reads
 * like `dmidecode -s system-uuid` and QEMU's `-uuid`.
 */
export interface ClientMachineId {
  type: number;
  guid: string;
}

export function clientMachineId(p: DhcpPacket): ClientMachineId | undefined {
  const d = getOption(p, OPT.CLIENT_MACHINE_ID);
  if (!d || d.length !== 17) return undefined;
  return { type: d[0]!, guid: formatGuid(d.subarray(1)) };
}

export function formatGuid(g: Buffer): string {
  const hex = (b: Buffer) => b.toString('hex');
  const le = (b: Buffer) => hex(Buffer.from(b).reverse());
  return `${le(g.subarray(0, 4))}-${le(g.subarray(4, 6))}-${le(g.subarray(6, 8))}-${hex(g.subarray(8, 10))}-${hex(g.subarray(10, 16))}`;
}

/**
 * The architecture named in a PXE vendor class, `PXEClient:Arch:00007:...`
 * (PXE 2.1 §2.2.1.1), for clients that send option 60 but not option 93.
 */
export function vendorClassArch(vc: string | undefined): number | undefined {
  const m = vc && /^(?:PXEClient|HTTPClient):Arch:(\d{5})/.exec(vc);
  return m ? Number(m[1]) : undefined;
}

// ---------------------------------------------------------------- PXE vendor options (43)

/**
 * Sub-options of option 43 (PXE 2.1 §2.4.5: same code/length/data layout as
 * DHCP options, 0 pads, 255 ends; iPXE's option 175 uses it too). Throws
 * `DhcpDecodeError` when a sub-option overruns the option.
 */
export function decodePxeVendorOptions(data: Buffer): DhcpOption[] {
  const out: DhcpOption[] = [];
  let i = 0;
  while (i < data.length) {
    const code = data[i]!;
    if (code === 0) {
      i += 1;
      continue;
    }
    if (code === 255) break;
    const len = data[i + 1];
    if (len === undefined || i + 2 + len > data.length) {
      throw new DhcpDecodeError('option-overrun', `PXE sub-option ${code} at offset ${i} of option 43 overruns it`, i);
    }
    out.push({ code, data: Buffer.from(data.subarray(i + 2, i + 2 + len)) });
    i += 2 + len;
  }
  return out;
}

/** Option 43 data from PXE sub-options, ended by 255 as PXE 2.1 §2.4.5 requires. */
export function encodePxeVendorOptions(subs: DhcpOption[]): Buffer {
  const parts: Buffer[] = [];
  for (const s of subs) {
    if (s.data.length > 255) throw new RangeError(`PXE sub-option ${s.code} carries ${s.data.length} octets, at most 255 fit`);
    parts.push(Buffer.from([s.code, s.data.length]), s.data);
  }
  parts.push(Buffer.from([255]));
  const out = Buffer.concat(parts);
  if (out.length > 255) throw new RangeError(`PXE vendor options need ${out.length} octets, option 43 holds 255`);
  return out;
}

// ---------------------------------------------------------------- builders

export function byteOption(code: number, value: number): DhcpOption {
  return { code, data: Buffer.from([value]) };
}

export function ipOption(code: number, ip: string): DhcpOption {
  return { code, data: ipv4Bytes(ip, `option ${code}`) };
}

export function stringOption(code: number, s: string): DhcpOption {
  return { code, data: Buffer.from(s, 'latin1') };
}

// ---------------------------------------------------------------- description

const OPTION_NAMES: Record<number, string> = {
  1: 'subnet mask',
  3: 'router',
  6: 'DNS servers',
  12: 'hostname',
  15: 'domain name',
  17: 'root path',
  28: 'broadcast address',
  43: 'vendor specific',
  50: 'requested address',
  51: 'lease time',
  53: 'message type',
  54: 'server id',
  55: 'parameter request list',
  57: 'max message size',
  58: 'renewal time',
  59: 'rebinding time',
  60: 'vendor class',
  61: 'client id',
  66: 'TFTP server name',
  67: 'bootfile name',
  77: 'user class',
  93: 'client arch',
  94: 'client NDI',
  97: 'client machine id',
  175: 'iPXE encapsulated',
};

const PXE_SUBOPT_NAMES: Record<number, string> = {
  1: 'MTFTP address',
  2: 'MTFTP client port',
  3: 'MTFTP server port',
  4: 'MTFTP timeout',
  5: 'MTFTP delay',
  6: 'discovery control',
  7: 'discovery multicast address',
  8: 'boot servers',
  9: 'boot menu',
  10: 'menu prompt',
  11: 'multicast address allocation',
  12: 'credential types',
  71: 'boot item',
};

const hex = (d: Buffer) => (d.length === 0 ? '(empty)' : d.toString('hex').replace(/(..)(?!$)/g, '$1 '));
const quote = (d: Buffer) => JSON.stringify(d.toString('latin1'));
const ips = (d: Buffer) => (d.length > 0 && d.length % 4 === 0 ? [...Array(d.length / 4).keys()].map((k) => [...d.subarray(k * 4, k * 4 + 4)].join('.')).join(', ') : undefined);

/** One line for one option: `93 client arch: 7 (EFI x86-64)`; undecodable data shows as hex. */
export function describeOption(o: DhcpOption, context: { vendorClass?: string | undefined }): string {
  const name = OPTION_NAMES[o.code] ?? 'unknown';
  return `${o.code} ${name}: ${describeValue(o, context) ?? `${o.data.length} octet(s) ${hex(o.data)}`}`;
}

function describeValue(o: DhcpOption, context: { vendorClass?: string | undefined }): string | undefined {
  const d = o.data;
  const probe = { options: [o] } as DhcpPacket;
  switch (o.code) {
    case 1:
    case 3:
    case 6:
    case 28:
    case 50:
    case 54:
      return ips(d);
    case 51:
    case 58:
    case 59:
      return d.length === 4 ? `${d.readUInt32BE(0)} s` : undefined;
    case 12:
    case 15:
    case 17:
    case 60:
    case 66:
    case 67:
      return quote(d);
    case 53: {
      const t = messageType(probe);
      const names = ['', 'DISCOVER', 'OFFER', 'REQUEST', 'DECLINE', 'ACK', 'NAK', 'RELEASE', 'INFORM'];
      return t === undefined ? undefined : `${names[t] ?? 'unknown'} (${t})`;
    }
    case 55:
      return [...d].join(' ');
    case 57:
      return d.length === 2 ? String(d.readUInt16BE(0)) : undefined;
    case 61:
      return d.length >= 1 ? `type ${d[0]} ${d[0] === 1 && d.length === 7 ? hardwareAddress({ chaddr: d.subarray(1), hlen: 6 }) : hex(d.subarray(1))}` : undefined;
    case 77: {
      if (d.length === 0) return undefined;
      const classes = userClasses(probe).map((c) => JSON.stringify(c)).join(', ');
      return userClassIsPlain(d) ? `${classes} (plain string, not RFC 3004 instances)` : classes;
    }
    case 93: {
      const archs = clientArchs(probe);
      return archs.length ? archs.map((a) => `${a} (${archName(a)})`).join(', ') : undefined;
    }
    case 94: {
      const n = clientNdi(probe);
      return n ? `type ${n.type}${n.type === 1 ? ' (UNDI)' : ''} version ${n.major}.${n.minor}` : undefined;
    }
    case 97: {
      const id = clientMachineId(probe);
      return id ? `type ${id.type} GUID ${id.guid}` : undefined;
    }
    case 43:
      // RFC 2132 §8.4: the layout of 43 depends on the vendor class.
      return context.vendorClass?.startsWith('PXEClient') ? describeEncapsulated('PXE', d, PXE_SUBOPT_NAMES) : undefined;
    case 175:
      return describeEncapsulated('iPXE', d, {});
    default:
      return undefined;
  }
}

function describeEncapsulated(label: string, d: Buffer, names: Record<number, string>): string | undefined {
  try {
    const subs = decodePxeVendorOptions(d);
    return `${label} { ${subs.map((s) => `${s.code}${names[s.code] ? ` ${names[s.code]}` : ''}: ${hex(s.data)}`).join('; ')} }`;
  } catch {
    return undefined;
  }
}
