/**
 * DHCP/BOOTP packet codec: bytes in, packet out, and back. Pure: no sockets,
 * no clock, no booting knowledge (that lives in ./proxy.ts).
 *
 * Wire format: RFC 2131 §2 (figure 1) for the fixed BOOTP fields, RFC 2131 §3
 * and RFC 2132 §2 for the magic cookie and the options, RFC 2132 §9.3 and
 * RFC 3396 §5 for option overload (options continued in `file` and `sname`).
 */
import { describeOption } from './options.js';

/** Why a packet was refused. A closed set, so callers can count them. */
export type DhcpDecodeErrorCode =
  | 'too-short'
  | 'bad-op'
  | 'bad-hlen'
  | 'bad-magic-cookie'
  | 'option-overrun'
  | 'bad-overload';

/** The only error `decodeDhcp` throws: the input is not a DHCP packet we can read. */
export class DhcpDecodeError extends Error {
  override readonly name = 'DhcpDecodeError';
  constructor(
    readonly code: DhcpDecodeErrorCode,
    message: string,
    /** Byte offset in the input where the problem was found, when there is one. */
    readonly offset?: number,
  ) {
    super(message);
  }
}

/** One option as it was on the wire (RFC 2132 §2): code 1-254, at most 255 octets. */
export interface DhcpOption {
  code: number;
  data: Buffer;
}

/**
 * A decoded DHCP message. Addresses are dotted quads; `sname` and `file` are the
 * NUL-terminated strings of those fields (latin1, so every byte survives).
 *
 * `options` holds every option in wire order, without the framing ones: pad (0),
 * end (255) and overload (52). When a packet overloads `file`/`sname` with
 * options, those options follow the ones of the options field (file first, then
 * sname: RFC 3396 §5) and the overloaded field reads as "". A repeated code is
 * kept as separate entries; readers concatenate them (RFC 3396 §6, see
 * `getOption` in ./options.ts).
 */
export interface DhcpPacket {
  /** 1 BOOTREQUEST, 2 BOOTREPLY (RFC 2131 §2). */
  op: number;
  /** Hardware address type (1 = Ethernet) and length (6 for Ethernet). */
  htype: number;
  hlen: number;
  hops: number;
  /** Transaction id, unsigned 32-bit. */
  xid: number;
  secs: number;
  /** Bit 15 (0x8000) is the broadcast flag (RFC 2131 §2, figure 2). */
  flags: number;
  ciaddr: string;
  yiaddr: string;
  siaddr: string;
  giaddr: string;
  /** All 16 octets of the field; the hardware address is the first `hlen`. */
  chaddr: Buffer;
  sname: string;
  file: string;
  options: DhcpOption[];
}

export const BOOTREQUEST = 1;
export const BOOTREPLY = 2;
export const BROADCAST_FLAG = 0x8000;
/** RFC 2131 §3: the first four octets of the options field. */
export const MAGIC_COOKIE = 0x63825363;
/** Fixed BOOTP header: op .. file (RFC 2131 §2, figure 1). */
const HEADER_LENGTH = 236;
const OPTIONS_OFFSET = HEADER_LENGTH + 4;
const SNAME_OFFSET = 44;
const SNAME_LENGTH = 64;
const FILE_OFFSET = 108;
const FILE_LENGTH = 128;
/**
 * RFC 1542 §3.1 / RFC 951: a BOOTP message is at least 300 octets. Old PXE ROMs
 * drop shorter replies, so `encodeDhcp` pads to this (dnsmasq does the same).
 */
export const MIN_BOOTP_LENGTH = 300;

const OPT_PAD = 0;
const OPT_END = 255;
const OPT_OVERLOAD = 52;

/** Parse a DHCP message. Throws `DhcpDecodeError` (and nothing else) on malformed input. */
export function decodeDhcp(buf: Uint8Array): DhcpPacket {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (b.length < OPTIONS_OFFSET) {
    throw new DhcpDecodeError('too-short', `DHCP packet too short: ${b.length} bytes, need at least ${OPTIONS_OFFSET} (RFC 2131 §2 header + magic cookie)`);
  }
  const op = b[0]!;
  if (op !== BOOTREQUEST && op !== BOOTREPLY) {
    throw new DhcpDecodeError('bad-op', `op ${op} is neither BOOTREQUEST (1) nor BOOTREPLY (2) (RFC 2131 §2)`, 0);
  }
  const hlen = b[2]!;
  if (hlen > 16) {
    throw new DhcpDecodeError('bad-hlen', `hlen ${hlen} exceeds the 16-octet chaddr field (RFC 2131 §2)`, 2);
  }
  const cookie = b.readUInt32BE(HEADER_LENGTH);
  if (cookie !== MAGIC_COOKIE) {
    throw new DhcpDecodeError('bad-magic-cookie', `magic cookie 0x${cookie.toString(16).padStart(8, '0')} is not 0x63825363 (RFC 2131 §3)`, HEADER_LENGTH);
  }

  const options: DhcpOption[] = [];
  const main = readOptions(b, OPTIONS_OFFSET, b.length, 'options', options);
  let sname = readString(b, SNAME_OFFSET, SNAME_LENGTH);
  let file = readString(b, FILE_OFFSET, FILE_LENGTH);
  if (main.overload !== undefined) {
    // RFC 2132 §9.3: 1 = file holds options, 2 = sname, 3 = both; file is read
    // before sname (RFC 3396 §5).
    if (main.overload & 1) {
      readOptions(b, FILE_OFFSET, FILE_OFFSET + FILE_LENGTH, 'file', options);
      file = '';
    }
    if (main.overload & 2) {
      readOptions(b, SNAME_OFFSET, SNAME_OFFSET + SNAME_LENGTH, 'sname', options);
      sname = '';
    }
  }

  return {
    op,
    htype: b[1]!,
    hlen,
    hops: b[3]!,
    xid: b.readUInt32BE(4),
    secs: b.readUInt16BE(8),
    flags: b.readUInt16BE(10),
    ciaddr: readIp(b, 12),
    yiaddr: readIp(b, 16),
    siaddr: readIp(b, 20),
    giaddr: readIp(b, 24),
    chaddr: Buffer.from(b.subarray(28, 44)),
    sname,
    file,
    options,
  };
}

/**
 * Walk one option area (RFC 2132 §2: code, length, data; 0 pads; 255 ends).
 * A missing end option is tolerated (the area simply ends); an option whose
 * length runs past the area is not.
 */
function readOptions(b: Buffer, start: number, end: number, area: 'options' | 'file' | 'sname', out: DhcpOption[]): { overload?: number } {
  let overload: number | undefined;
  let i = start;
  while (i < end) {
    const code = b[i]!;
    if (code === OPT_PAD) {
      i += 1;
      continue;
    }
    if (code === OPT_END) break;
    if (i + 1 >= end) {
      throw new DhcpDecodeError('option-overrun', `option ${code} at offset ${i} has no length octet before the end of the ${area} field`, i);
    }
    const len = b[i + 1]!;
    if (i + 2 + len > end) {
      throw new DhcpDecodeError('option-overrun', `option ${code} at offset ${i} claims ${len} octets, only ${end - i - 2} left in the ${area} field`, i);
    }
    const data = b.subarray(i + 2, i + 2 + len);
    if (code === OPT_OVERLOAD) {
      // RFC 2131 §4.1 / RFC 2132 §9.3: only in the options field, once, one octet 1..3.
      if (area !== 'options') {
        throw new DhcpDecodeError('bad-overload', `option 52 (overload) inside the ${area} field (RFC 2132 §9.3 allows it only in the options field)`, i);
      }
      if (overload !== undefined) {
        throw new DhcpDecodeError('bad-overload', `option 52 (overload) repeated at offset ${i}`, i);
      }
      if (len !== 1 || data[0]! < 1 || data[0]! > 3) {
        throw new DhcpDecodeError('bad-overload', `option 52 (overload) must be one octet 1, 2 or 3 (RFC 2132 §9.3), got ${len} octet(s) ${data.toString('hex')}`, i);
      }
      overload = data[0]!;
    } else {
      out.push({ code, data: Buffer.from(data) });
    }
    i += 2 + len;
  }
  return overload === undefined ? {} : { overload };
}

function readIp(b: Buffer, at: number): string {
  return `${b[at]}.${b[at + 1]}.${b[at + 2]}.${b[at + 3]}`;
}

function readString(b: Buffer, at: number, len: number): string {
  const field = b.subarray(at, at + len);
  const nul = field.indexOf(0);
  return field.subarray(0, nul === -1 ? len : nul).toString('latin1');
}

/**
 * Serialise a packet. Never overloads `file`/`sname`: every option goes into the
 * options field, followed by end (255) and zero padding up to 300 octets.
 * Throws `RangeError` for a packet no decoder could have produced (a bad
 * address, a field out of range, an option over 255 octets): a programming
 * error, not a network one.
 */
export function encodeDhcp(p: DhcpPacket): Buffer {
  checkUint('op', p.op, 0xff);
  checkUint('htype', p.htype, 0xff);
  checkUint('hlen', p.hlen, 16);
  checkUint('hops', p.hops, 0xff);
  checkUint('xid', p.xid, 0xffffffff);
  checkUint('secs', p.secs, 0xffff);
  checkUint('flags', p.flags, 0xffff);
  if (p.chaddr.length > 16) throw new RangeError(`chaddr is ${p.chaddr.length} octets, the field holds 16`);
  let optionsLength = 0;
  for (const o of p.options) {
    checkUint('option code', o.code, 0xff);
    if (o.code === OPT_PAD || o.code === OPT_END || o.code === OPT_OVERLOAD) {
      throw new RangeError(`option ${o.code} is framing, not content: the encoder writes pad/end itself and never overloads`);
    }
    if (o.data.length > 255) {
      throw new RangeError(`option ${o.code} carries ${o.data.length} octets, at most 255 fit (split it as RFC 3396 describes)`);
    }
    optionsLength += 2 + o.data.length;
  }

  const length = Math.max(MIN_BOOTP_LENGTH, OPTIONS_OFFSET + optionsLength + 1);
  const b = Buffer.alloc(length);
  b[0] = p.op;
  b[1] = p.htype;
  b[2] = p.hlen;
  b[3] = p.hops;
  b.writeUInt32BE(p.xid, 4);
  b.writeUInt16BE(p.secs, 8);
  b.writeUInt16BE(p.flags, 10);
  writeIp(b, 12, p.ciaddr, 'ciaddr');
  writeIp(b, 16, p.yiaddr, 'yiaddr');
  writeIp(b, 20, p.siaddr, 'siaddr');
  writeIp(b, 24, p.giaddr, 'giaddr');
  p.chaddr.copy(b, 28);
  writeString(b, SNAME_OFFSET, SNAME_LENGTH, p.sname, 'sname');
  writeString(b, FILE_OFFSET, FILE_LENGTH, p.file, 'file');
  b.writeUInt32BE(MAGIC_COOKIE, HEADER_LENGTH);
  let i = OPTIONS_OFFSET;
  for (const o of p.options) {
    b[i] = o.code;
    b[i + 1] = o.data.length;
    o.data.copy(b, i + 2);
    i += 2 + o.data.length;
  }
  b[i] = OPT_END;
  return b;
}

function checkUint(name: string, v: number, max: number): void {
  if (!Number.isInteger(v) || v < 0 || v > max) throw new RangeError(`${name} ${v} is not an integer in 0..${max}`);
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/** The four octets of a dotted quad; `RangeError` for anything else. */
export function ipv4Bytes(ip: string, what = 'address'): Buffer {
  if (!IPV4.test(ip)) throw new RangeError(`${what} ${JSON.stringify(ip)} is not a dotted-quad IPv4 address`);
  return Buffer.from(ip.split('.').map(Number));
}

export function isIpv4(ip: string): boolean {
  return IPV4.test(ip);
}

function writeIp(b: Buffer, at: number, ip: string, what: string): void {
  ipv4Bytes(ip, what).copy(b, at);
}

function writeString(b: Buffer, at: number, len: number, s: string, what: string): void {
  const bytes = Buffer.from(s, 'latin1');
  if (bytes.toString('latin1') !== s) throw new RangeError(`${what} has characters outside latin1`);
  if (bytes.includes(0)) throw new RangeError(`${what} contains NUL`);
  // A full-length field needs no terminator (RFC 2131 §2 only says "null terminated string").
  if (bytes.length > len) throw new RangeError(`${what} is ${bytes.length} octets, the field holds ${len}`);
  bytes.copy(b, at);
}

const MESSAGE_TYPE_NAMES: Record<number, string> = {
  1: 'DHCPDISCOVER',
  2: 'DHCPOFFER',
  3: 'DHCPREQUEST',
  4: 'DHCPDECLINE',
  5: 'DHCPACK',
  6: 'DHCPNAK',
  7: 'DHCPRELEASE',
  8: 'DHCPINFORM',
};

/** `DHCPDISCOVER` etc. (RFC 2132 §9.6), `BOOTP` without option 53, `DHCP(n)` for unknown ones. */
export function messageTypeName(type: number | undefined): string {
  if (type === undefined) return 'BOOTP';
  return MESSAGE_TYPE_NAMES[type] ?? `DHCP(${type})`;
}

/** Hardware address as text: `52:54:00:12:34:56` (the first `hlen` octets of chaddr). */
export function hardwareAddress(p: Pick<DhcpPacket, 'chaddr' | 'hlen'>): string {
  return [...p.chaddr.subarray(0, p.hlen)].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

/**
 * A readable, stable, multi-line rendering for debug logs and golden tests: the
 * fixed fields, then each option with its name and a decoded value.
 */
export function describeDhcp(p: DhcpPacket): string {
  const typeOption = p.options.find((o) => o.code === 53);
  const type = typeOption?.data.length === 1 ? typeOption.data[0] : undefined;
  const flags = `0x${p.flags.toString(16).padStart(4, '0')}${p.flags & BROADCAST_FLAG ? ' (broadcast)' : ''}`;
  const lines = [
    `${messageTypeName(type)} ${p.op === BOOTREQUEST ? 'BOOTREQUEST' : p.op === BOOTREPLY ? 'BOOTREPLY' : `op ${p.op}`} xid 0x${p.xid.toString(16).padStart(8, '0')} secs ${p.secs} flags ${flags}`,
    `chaddr ${hardwareAddress(p) || '(none)'} htype ${p.htype} hlen ${p.hlen} hops ${p.hops}`,
    `ciaddr ${p.ciaddr} yiaddr ${p.yiaddr} siaddr ${p.siaddr} giaddr ${p.giaddr}`,
    `sname ${JSON.stringify(p.sname)} file ${JSON.stringify(p.file)}`,
  ];
  const vendorClassOption = p.options.find((o) => o.code === 60);
  const context = { vendorClass: vendorClassOption?.data.toString('latin1') };
  for (const o of p.options) lines.push(`  ${describeOption(o, context)}`);
  return lines.join('\n');
}
