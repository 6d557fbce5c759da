/**
 * TFTP wire format: pure decode/encode of the six packet types, no sockets.
 *
 *   RFC 1350  The TFTP Protocol (Revision 2): RRQ, WRQ, DATA, ACK, ERROR
 *   RFC 2347  Option Extension: options in RRQ/WRQ, OACK (opcode 6), error 8
 *   RFC 2348  Blocksize Option
 *   RFC 2349  Timeout Interval and Transfer Size Options
 *   RFC 7440  Windowsize Option
 *
 * Strings (filename, mode, option names and values, error messages) are
 * decoded byte for byte (latin1), so decode -> encode gives back the same
 * bytes whatever a client sends; the server decides what a name means.
 */

/** RFC 1350 section 5 (1-5) and RFC 2347 (6). */
export const TFTP_OPCODES = { RRQ: 1, WRQ: 2, DATA: 3, ACK: 4, ERROR: 5, OACK: 6 } as const;
export type TftpOp = keyof typeof TFTP_OPCODES;

/** RFC 1350 appendix "Error Codes", plus 8 from RFC 2347. */
export const TFTP_ERROR_CODES = {
  NOT_DEFINED: 0,
  FILE_NOT_FOUND: 1,
  ACCESS_VIOLATION: 2,
  DISK_FULL: 3,
  ILLEGAL_OPERATION: 4,
  UNKNOWN_TID: 5,
  FILE_EXISTS: 6,
  NO_SUCH_USER: 7,
  OPTION_NEGOTIATION: 8,
} as const;
export type TftpErrorCode = (typeof TFTP_ERROR_CODES)[keyof typeof TFTP_ERROR_CODES];

const ERROR_NAMES: Record<number, string> = {
  0: 'not defined',
  1: 'file not found',
  2: 'access violation',
  3: 'disk full',
  4: 'illegal operation',
  5: 'unknown transfer ID',
  6: 'file already exists',
  7: 'no such user',
  8: 'option negotiation failed',
};

/** One RFC 2347 option as sent: the name keeps the sender's spelling (names are case-insensitive). */
export interface TftpOption {
  name: string;
  value: string;
}

/** RRQ / WRQ (RFC 1350 section 5, options from RFC 2347 section "Packet Formats"). */
export interface TftpRequest {
  op: 'RRQ' | 'WRQ';
  filename: string;
  mode: string;
  options: TftpOption[];
}
export interface TftpData {
  op: 'DATA';
  /** 0-65535 on the wire; the sender rolls over past 65535. */
  block: number;
  data: Buffer;
}
export interface TftpAck {
  op: 'ACK';
  block: number;
}
export interface TftpError {
  op: 'ERROR';
  code: number;
  message: string;
}
export interface TftpOack {
  op: 'OACK';
  options: TftpOption[];
}
export type TftpPacket = TftpRequest | TftpData | TftpAck | TftpError | TftpOack;

/** The only error `decodeTftp` throws: the bytes are not a TFTP packet. */
export class TftpDecodeError extends Error {
  override readonly name = 'TftpDecodeError';
}

/** RFC 2348: "Valid values range between 8 and 65464 octets, inclusive." */
export const BLKSIZE_MIN = 8;
export const BLKSIZE_MAX = 65464;
/** RFC 1350: data is sent in blocks of 512 bytes unless blksize says otherwise. */
export const BLKSIZE_DEFAULT = 512;
/** RFC 2349 section "Timeout Interval Option": 1-255 seconds. */
export const TIMEOUT_MIN_S = 1;
export const TIMEOUT_MAX_S = 255;
/** RFC 7440 section 3: "Valid values range between 1 and 65535 blocks, inclusive." */
export const WINDOWSIZE_MIN = 1;
export const WINDOWSIZE_MAX = 65535;

// ---------------------------------------------------------------- decode

/** Reads a NUL-terminated string at `at`; null when there is no NUL before the end. */
function cstring(buf: Buffer, at: number): { value: string; next: number } | null {
  const nul = buf.indexOf(0, at);
  if (nul < 0) return null;
  return { value: buf.toString('latin1', at, nul), next: nul + 1 };
}

/**
 * Option pairs from `at` to the end (RFC 2347 "Packet Formats").
 * Lenient where real clients are sloppy, as tftp-hpa is: an empty name ends
 * the list (some ROMs pad requests with NULs) and a last name with no value
 * is dropped. A string without its NUL is an error: the packet was cut.
 */
function decodeOptions(buf: Buffer, at: number, what: string): TftpOption[] {
  const options: TftpOption[] = [];
  while (at < buf.length) {
    const name = cstring(buf, at);
    if (!name) throw new TftpDecodeError(`${what}: option name without NUL at byte ${at}`);
    if (name.value === '') break;
    if (name.next >= buf.length) break;
    const value = cstring(buf, name.next);
    if (!value) throw new TftpDecodeError(`${what}: value of option "${name.value}" without NUL`);
    options.push({ name: name.value, value: value.value });
    at = value.next;
  }
  return options;
}

export function decodeTftp(buf: Buffer): TftpPacket {
  if (buf.length < 2) throw new TftpDecodeError(`packet of ${buf.length} bytes: shorter than an opcode`);
  const opcode = buf.readUInt16BE(0);
  switch (opcode) {
    case TFTP_OPCODES.RRQ:
    case TFTP_OPCODES.WRQ: {
      // RFC 1350 section 5: | opcode | filename | 0 | mode | 0 |
      const op = opcode === TFTP_OPCODES.RRQ ? 'RRQ' : 'WRQ';
      const filename = cstring(buf, 2);
      if (!filename) throw new TftpDecodeError(`${op}: filename without NUL`);
      const mode = cstring(buf, filename.next);
      if (!mode) throw new TftpDecodeError(`${op}: mode missing or without NUL`);
      if (mode.value === '') throw new TftpDecodeError(`${op}: empty mode`);
      return { op, filename: filename.value, mode: mode.value, options: decodeOptions(buf, mode.next, op) };
    }
    case TFTP_OPCODES.DATA: {
      // RFC 1350 section 5: | 03 | block # | data (0-blksize bytes) |
      if (buf.length < 4) throw new TftpDecodeError(`DATA of ${buf.length} bytes: no block number`);
      return { op: 'DATA', block: buf.readUInt16BE(2), data: Buffer.from(buf.subarray(4)) };
    }
    case TFTP_OPCODES.ACK: {
      // RFC 1350 section 5: | 04 | block # |. Bytes after it are ignored (some ROMs pad).
      if (buf.length < 4) throw new TftpDecodeError(`ACK of ${buf.length} bytes: no block number`);
      return { op: 'ACK', block: buf.readUInt16BE(2) };
    }
    case TFTP_OPCODES.ERROR: {
      // RFC 1350 section 5: | 05 | ErrorCode | ErrMsg | 0 |. A message missing its NUL is taken whole.
      if (buf.length < 4) throw new TftpDecodeError(`ERROR of ${buf.length} bytes: no error code`);
      const msg = cstring(buf, 4);
      return { op: 'ERROR', code: buf.readUInt16BE(2), message: msg ? msg.value : buf.toString('latin1', 4) };
    }
    case TFTP_OPCODES.OACK:
      // RFC 2347: | 06 | opt1 | 0 | value1 | 0 | ...
      return { op: 'OACK', options: decodeOptions(buf, 2, 'OACK') };
    default:
      throw new TftpDecodeError(`unknown opcode ${opcode}`);
  }
}

// ---------------------------------------------------------------- encode

function checkString(s: string, what: string): void {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0) throw new RangeError(`${what} contains NUL`);
    if (c > 0xff) throw new RangeError(`${what} has a character outside latin1 (use byte strings)`);
  }
}

function checkU16(n: number, what: string): void {
  if (!Number.isInteger(n) || n < 0 || n > 0xffff) throw new RangeError(`${what} ${n}: not 0-65535`);
}

function strings(parts: string[], op: number): Buffer {
  const out = Buffer.allocUnsafe(2 + parts.reduce((n, p) => n + p.length + 1, 0));
  out.writeUInt16BE(op, 0);
  let at = 2;
  for (const p of parts) {
    at += out.write(p, at, 'latin1');
    out[at++] = 0;
  }
  return out;
}

function optionStrings(options: TftpOption[]): string[] {
  return options.flatMap((o) => {
    checkString(o.name, 'option name');
    checkString(o.value, `option ${o.name} value`);
    if (o.name === '') throw new RangeError('empty option name');
    return [o.name, o.value];
  });
}

/** Encodes a packet; throws RangeError for a packet that cannot be put on the wire (a bug in the caller). */
export function encodeTftp(p: TftpPacket): Buffer {
  switch (p.op) {
    case 'RRQ':
    case 'WRQ':
      checkString(p.filename, 'filename');
      checkString(p.mode, 'mode');
      if (p.mode === '') throw new RangeError('empty mode');
      return strings([p.filename, p.mode, ...optionStrings(p.options)], TFTP_OPCODES[p.op]);
    case 'DATA': {
      checkU16(p.block, 'block');
      const out = Buffer.allocUnsafe(4 + p.data.length);
      out.writeUInt16BE(TFTP_OPCODES.DATA, 0);
      out.writeUInt16BE(p.block, 2);
      p.data.copy(out, 4);
      return out;
    }
    case 'ACK': {
      checkU16(p.block, 'block');
      const out = Buffer.allocUnsafe(4);
      out.writeUInt16BE(TFTP_OPCODES.ACK, 0);
      out.writeUInt16BE(p.block, 2);
      return out;
    }
    case 'ERROR': {
      checkU16(p.code, 'error code');
      checkString(p.message, 'error message');
      const out = Buffer.allocUnsafe(4 + p.message.length + 1);
      out.writeUInt16BE(TFTP_OPCODES.ERROR, 0);
      out.writeUInt16BE(p.code, 2);
      out.write(p.message, 4, 'latin1');
      out[out.length - 1] = 0;
      return out;
    }
    case 'OACK':
      return strings(optionStrings(p.options), TFTP_OPCODES.OACK);
  }
}

/**
 * The block number of an ACK, or null for any other packet: what decodeTftp would say about an
 * ACK, without building a packet object. For the sender's hot path (one ACK per block).
 */
export function ackBlock(buf: Buffer): number | null {
  return buf.length >= 4 && buf[0] === 0 && buf[1] === TFTP_OPCODES.ACK ? (buf[2]! << 8) | buf[3]! : null;
}

// ---------------------------------------------------------------- options

/** The options this server understands, parsed and range-checked. */
export interface TftpRequestOptions {
  /** RFC 2348, clamped to 8-65464; absent when not asked for or not a valid number below 8. */
  blksize?: { name: string; value: number };
  /** RFC 2349: the client asks with 0 in an RRQ; the size of the file in a WRQ or an OACK. */
  tsize?: { name: string; value: number };
  /** RFC 2349: retransmission timeout in seconds, 1-255. */
  timeout?: { name: string; value: number };
  /** RFC 7440: blocks per window, 1-65535. */
  windowsize?: { name: string; value: number };
  /** Options left out: unknown names, values that are not numbers or out of range, repeats. */
  ignored: TftpOption[];
}

const DECIMAL = /^[0-9]{1,15}$/;

/**
 * Picks the options a server acts on. RFC 2347: names are case-insensitive,
 * and a server ignores what it does not understand (it leaves it out of the
 * OACK). The first of a repeated option counts. A value the RFC does not
 * allow is ignored, except a blksize above 65464, which is clamped: RFC 2348
 * lets the server answer with a smaller size, and tftp-hpa does the same.
 */
export function parseOptions(options: TftpOption[]): TftpRequestOptions {
  const out: TftpRequestOptions = { ignored: [] };
  for (const o of options) {
    const key = o.name.toLowerCase();
    const n = DECIMAL.test(o.value) ? Number(o.value) : NaN;
    const take = (field: 'blksize' | 'tsize' | 'timeout' | 'windowsize', ok: boolean, value = n) => {
      if (ok && out[field] === undefined) out[field] = { name: o.name, value };
      else out.ignored.push(o);
    };
    switch (key) {
      case 'blksize':
        take('blksize', n >= BLKSIZE_MIN, Math.min(n, BLKSIZE_MAX));
        break;
      case 'tsize':
        take('tsize', Number.isSafeInteger(n));
        break;
      case 'timeout':
        take('timeout', n >= TIMEOUT_MIN_S && n <= TIMEOUT_MAX_S);
        break;
      case 'windowsize':
        take('windowsize', n >= WINDOWSIZE_MIN && n <= WINDOWSIZE_MAX);
        break;
      default:
        out.ignored.push(o);
    }
  }
  return out;
}

// ---------------------------------------------------------------- debug

const quote = (s: string) => JSON.stringify(s);
const describeOptions = (options: TftpOption[]) => options.map((o) => ` ${quote(o.name)}=${quote(o.value)}`).join('');

/** One line for logs and golden tests, e.g. `RRQ "snponly.efi" mode="octet" "blksize"="1468"`. */
export function describeTftp(p: TftpPacket): string {
  switch (p.op) {
    case 'RRQ':
    case 'WRQ':
      return `${p.op} ${quote(p.filename)} mode=${quote(p.mode)}${describeOptions(p.options)}`;
    case 'DATA':
      return `DATA block=${p.block} bytes=${p.data.length}`;
    case 'ACK':
      return `ACK block=${p.block}`;
    case 'ERROR':
      return `ERROR code=${p.code} (${ERROR_NAMES[p.code] ?? 'unknown code'}) message=${quote(p.message)}`;
    case 'OACK':
      return `OACK${describeOptions(p.options)}`;
  }
}
