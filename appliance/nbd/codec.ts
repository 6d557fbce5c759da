/**
 * NBD wire format: pure decode/encode of the fixed newstyle handshake and of
 * the transmission phase's requests and simple replies. No sockets: the
 * server (server.ts) reads exact byte counts and hands them here.
 *
 * Spec: NetworkBlockDevice/nbd doc/proto.md ("the spec" below). Every number
 * on the wire is big-endian. Offsets and cookies are 64-bit: they are kept as
 * bigint here so that decode -> encode gives back the same bytes whatever a
 * client sends; the server decides what an offset past 2^53 means.
 */

/** "NBDMAGIC": first 8 bytes of the server greeting. */
export const NBD_MAGIC = 0x4e42444d41474943n;
/** "IHAVEOPT": newstyle magic, and the magic of every client option. */
export const IHAVEOPT = 0x49484156454f5054n;
/** Magic of every option reply (spec: "Option reply"). */
export const OPTION_REPLY_MAGIC = 0x3e889045565a9n;
export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;

/** Handshake flags, server -> client (spec: "Handshake flags"). */
export const HANDSHAKE_FLAGS = { FIXED_NEWSTYLE: 1 << 0, NO_ZEROES: 1 << 1 } as const;
/** Client flags, client -> server; any other bit set means the server must drop the connection. */
export const CLIENT_FLAGS = { FIXED_NEWSTYLE: 1 << 0, NO_ZEROES: 1 << 1 } as const;

/** Option types (spec: "Option types"). */
export const OPT = {
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  PEEK_EXPORT: 4,
  STARTTLS: 5,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
  EXTENDED_HEADERS: 11,
} as const;

const ERR = 0x80000000;
/** Option reply types (spec: "Option reply types"); errors have bit 31 set and may carry a message. */
export const REP = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: ERR + 1,
  ERR_POLICY: ERR + 2,
  ERR_INVALID: ERR + 3,
  ERR_PLATFORM: ERR + 4,
  ERR_TLS_REQD: ERR + 5,
  ERR_UNKNOWN: ERR + 6,
  ERR_SHUTDOWN: ERR + 7,
  ERR_BLOCK_SIZE_REQD: ERR + 8,
  ERR_TOO_BIG: ERR + 9,
} as const;

/** Information types in NBD_REP_INFO and in OPT_INFO / OPT_GO requests. */
export const INFO = { EXPORT: 0, NAME: 1, DESCRIPTION: 2, BLOCK_SIZE: 3 } as const;

/** Transmission flags (spec: "Transmission flags"); HAS_FLAGS must always be set. */
export const TX_FLAGS = {
  HAS_FLAGS: 1 << 0,
  READ_ONLY: 1 << 1,
  SEND_FLUSH: 1 << 2,
  SEND_FUA: 1 << 3,
  ROTATIONAL: 1 << 4,
  SEND_TRIM: 1 << 5,
  SEND_WRITE_ZEROES: 1 << 6,
  SEND_DF: 1 << 7,
  CAN_MULTI_CONN: 1 << 8,
  SEND_RESIZE: 1 << 9,
  SEND_CACHE: 1 << 10,
  SEND_FAST_ZERO: 1 << 11,
} as const;

/** Request types (spec: "Request types"). */
export const CMD = { READ: 0, WRITE: 1, DISC: 2, FLUSH: 3, TRIM: 4, CACHE: 5, WRITE_ZEROES: 6, BLOCK_STATUS: 7, RESIZE: 8 } as const;
/** Command flags (spec: "Command flags"). */
export const CMD_FLAGS = { FUA: 1 << 0, NO_HOLE: 1 << 1, DF: 1 << 2, REQ_ONE: 1 << 3, FAST_ZERO: 1 << 4, PAYLOAD_LEN: 1 << 5 } as const;

/** Error values of replies (spec: "Error values"): Linux errno numbers, whatever the server's platform. */
export const NBD_ERRNO = { EPERM: 1, EIO: 5, ENOMEM: 12, EINVAL: 22, ENOSPC: 28, EOVERFLOW: 75, ENOTSUP: 95, ESHUTDOWN: 108 } as const;
export type NbdErrno = (typeof NBD_ERRNO)[keyof typeof NBD_ERRNO];

export const GREETING_SIZE = 18;
export const CLIENT_FLAGS_SIZE = 4;
export const OPTION_HEADER_SIZE = 16;
export const REQUEST_SIZE = 28;
export const SIMPLE_REPLY_SIZE = 16;
/** Spec: strings (export names, messages) MUST be no longer than 4096 bytes. */
export const MAX_STRING = 4096;

/** The only error the decoders throw: the bytes are not what the protocol allows here. */
export class NbdDecodeError extends Error {
  override name = 'NbdDecodeError';
}

const nameOf = (table: Record<string, number>, value: number) => Object.keys(table).find((k) => table[k] === value);
export const optionName = (o: number) => nameOf(OPT, o) ?? `option ${o}`;
export const commandName = (c: number) => nameOf(CMD, c) ?? `command ${c}`;
export const replyName = (r: number) => nameOf(REP, r) ?? `reply 0x${r.toString(16)}`;

// ---------------------------------------------------------------- handshake

/** Server greeting of the newstyle handshake: NBDMAGIC, IHAVEOPT, handshake flags. */
export function encodeGreeting(flags: number): Buffer {
  const b = Buffer.alloc(GREETING_SIZE);
  b.writeBigUInt64BE(NBD_MAGIC, 0);
  b.writeBigUInt64BE(IHAVEOPT, 8);
  b.writeUInt16BE(flags & 0xffff, 16);
  return b;
}

export function decodeGreeting(b: Buffer): { flags: number } {
  if (b.length !== GREETING_SIZE) throw new NbdDecodeError(`greeting is ${GREETING_SIZE} bytes, got ${b.length}`);
  if (b.readBigUInt64BE(0) !== NBD_MAGIC) throw new NbdDecodeError('greeting does not start with NBDMAGIC');
  if (b.readBigUInt64BE(8) !== IHAVEOPT) throw new NbdDecodeError('not a newstyle greeting (IHAVEOPT missing)');
  return { flags: b.readUInt16BE(16) };
}

/** The client's 32-bit flags; unknown bits are the caller's to refuse (the spec says drop the connection). */
export function decodeClientFlags(b: Buffer): number {
  if (b.length !== CLIENT_FLAGS_SIZE) throw new NbdDecodeError(`client flags are ${CLIENT_FLAGS_SIZE} bytes, got ${b.length}`);
  return b.readUInt32BE(0);
}

export function encodeClientFlags(flags: number): Buffer {
  const b = Buffer.alloc(CLIENT_FLAGS_SIZE);
  b.writeUInt32BE(flags >>> 0, 0);
  return b;
}

export interface OptionHeader {
  option: number;
  /** Bytes of option data that follow. */
  length: number;
}

/** Header of a client option: IHAVEOPT, option, data length. */
export function decodeOptionHeader(b: Buffer): OptionHeader {
  if (b.length !== OPTION_HEADER_SIZE) throw new NbdDecodeError(`option header is ${OPTION_HEADER_SIZE} bytes, got ${b.length}`);
  if (b.readBigUInt64BE(0) !== IHAVEOPT) throw new NbdDecodeError('option does not start with IHAVEOPT');
  return { option: b.readUInt32BE(8), length: b.readUInt32BE(12) };
}

export function encodeOption(option: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(OPTION_HEADER_SIZE + data.length);
  b.writeBigUInt64BE(IHAVEOPT, 0);
  b.writeUInt32BE(option >>> 0, 8);
  b.writeUInt32BE(data.length, 12);
  data.copy(b, OPTION_HEADER_SIZE);
  return b;
}

/** A string as the spec defines them: UTF-8, no NUL, at most 4096 bytes. */
function decodeString(b: Buffer, what: string): string {
  if (b.length > MAX_STRING) throw new NbdDecodeError(`${what} is ${b.length} bytes; at most ${MAX_STRING} are allowed`);
  if (b.includes(0)) throw new NbdDecodeError(`${what} contains a NUL byte`);
  const s = b.toString('utf8');
  if (!Buffer.from(s, 'utf8').equals(b)) throw new NbdDecodeError(`${what} is not valid UTF-8`);
  return s;
}

export interface InfoRequest {
  name: string;
  /** Information types the client asked for (INFO.*), in its order. */
  requests: number[];
}

/** Data of OPT_INFO / OPT_GO: u32 name length, name, u16 count, count x u16 info type. */
export function decodeInfoRequest(data: Buffer): InfoRequest {
  if (data.length < 6) throw new NbdDecodeError(`${data.length} bytes of data: too short for a name length and a request count`);
  const nameLength = data.readUInt32BE(0);
  if (nameLength > data.length - 6) throw new NbdDecodeError(`name length ${nameLength} does not fit in ${data.length} bytes of data`);
  const name = decodeString(data.subarray(4, 4 + nameLength), 'export name');
  const count = data.readUInt16BE(4 + nameLength);
  if (data.length !== 6 + nameLength + 2 * count) throw new NbdDecodeError(`${count} information requests need ${6 + nameLength + 2 * count} bytes of data, got ${data.length}`);
  const requests: number[] = [];
  for (let i = 0; i < count; i++) requests.push(data.readUInt16BE(6 + nameLength + 2 * i));
  return { name, requests };
}

export function encodeInfoRequest(r: InfoRequest): Buffer {
  const name = Buffer.from(r.name, 'utf8');
  const b = Buffer.alloc(6 + name.length + 2 * r.requests.length);
  b.writeUInt32BE(name.length, 0);
  name.copy(b, 4);
  b.writeUInt16BE(r.requests.length, 4 + name.length);
  r.requests.forEach((t, i) => b.writeUInt16BE(t, 6 + name.length + 2 * i));
  return b;
}

/** Data of OPT_EXPORT_NAME: the whole option data is the name. */
export function decodeExportName(data: Buffer): string {
  return decodeString(data, 'export name');
}

export interface OptionReply {
  option: number;
  type: number;
  data: Buffer;
}

export function encodeOptionReply(option: number, type: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(20 + data.length);
  b.writeBigUInt64BE(OPTION_REPLY_MAGIC, 0);
  b.writeUInt32BE(option >>> 0, 8);
  b.writeUInt32BE(type >>> 0, 12);
  b.writeUInt32BE(data.length, 16);
  data.copy(b, 20);
  return b;
}

/** An option reply; `b` holds at least the 20-byte header and exactly its data. */
export function decodeOptionReply(b: Buffer): OptionReply {
  if (b.length < 20) throw new NbdDecodeError(`option reply header is 20 bytes, got ${b.length}`);
  if (b.readBigUInt64BE(0) !== OPTION_REPLY_MAGIC) throw new NbdDecodeError('option reply magic is wrong');
  const length = b.readUInt32BE(16);
  if (b.length !== 20 + length) throw new NbdDecodeError(`option reply says ${length} bytes of data, has ${b.length - 20}`);
  return { option: b.readUInt32BE(8), type: b.readUInt32BE(12), data: Buffer.from(b.subarray(20)) };
}

/** An error reply's data: a message for a person (trimmed to the spec's string limit). */
export function errorMessage(message: string): Buffer {
  const b = Buffer.from(message.replace(/\0/g, ' '), 'utf8');
  return b.length <= MAX_STRING ? b : b.subarray(0, MAX_STRING);
}

/** NBD_REP_SERVER data: u32 name length, name, then a description for people. */
export function encodeServerEntry(name: string, description = ''): Buffer {
  const n = Buffer.from(name, 'utf8');
  const d = Buffer.from(description, 'utf8');
  const b = Buffer.alloc(4 + n.length + d.length);
  b.writeUInt32BE(n.length, 0);
  n.copy(b, 4);
  d.copy(b, 4 + n.length);
  return b;
}

export function decodeServerEntry(data: Buffer): { name: string; description: string } {
  if (data.length < 4) throw new NbdDecodeError('export entry too short');
  const n = data.readUInt32BE(0);
  if (n > data.length - 4) throw new NbdDecodeError(`export entry name length ${n} does not fit`);
  return { name: decodeString(data.subarray(4, 4 + n), 'export name'), description: data.subarray(4 + n).toString('utf8') };
}

/** NBD_INFO_EXPORT: u16 type, u64 size, u16 transmission flags. */
export function encodeInfoExport(sizeBytes: number, flags: number): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt16BE(INFO.EXPORT, 0);
  b.writeBigUInt64BE(BigInt(sizeBytes), 2);
  b.writeUInt16BE(flags & 0xffff, 10);
  return b;
}

/** NBD_INFO_NAME or NBD_INFO_DESCRIPTION: u16 type, string. */
export function encodeInfoString(type: typeof INFO.NAME | typeof INFO.DESCRIPTION, s: string): Buffer {
  const t = Buffer.alloc(2);
  t.writeUInt16BE(type, 0);
  return Buffer.concat([t, errorMessage(s)]);
}

export interface BlockSizes {
  /** Smallest alignment the server accepts (1 = any byte). */
  minimum: number;
  /** Size below which requests cost read-modify-write. */
  preferred: number;
  /** Largest payload of one request. */
  maximum: number;
}

/** NBD_INFO_BLOCK_SIZE: u16 type, u32 minimum, u32 preferred, u32 maximum payload. */
export function encodeInfoBlockSize(s: BlockSizes): Buffer {
  const b = Buffer.alloc(14);
  b.writeUInt16BE(INFO.BLOCK_SIZE, 0);
  b.writeUInt32BE(s.minimum, 2);
  b.writeUInt32BE(s.preferred, 6);
  b.writeUInt32BE(s.maximum, 10);
  return b;
}

export type Info =
  | { type: 'export'; sizeBytes: bigint; flags: number }
  | { type: 'name'; name: string }
  | { type: 'description'; description: string }
  | { type: 'block-size'; sizes: BlockSizes }
  | { type: 'unknown'; code: number; data: Buffer };

/** Data of an NBD_REP_INFO reply. */
export function decodeInfo(data: Buffer): Info {
  if (data.length < 2) throw new NbdDecodeError('information reply without a type');
  const type = data.readUInt16BE(0);
  const rest = data.subarray(2);
  switch (type) {
    case INFO.EXPORT:
      if (rest.length !== 10) throw new NbdDecodeError(`NBD_INFO_EXPORT is 12 bytes, got ${data.length}`);
      return { type: 'export', sizeBytes: rest.readBigUInt64BE(0), flags: rest.readUInt16BE(8) };
    case INFO.NAME:
      return { type: 'name', name: decodeString(rest, 'name') };
    case INFO.DESCRIPTION:
      return { type: 'description', description: decodeString(rest, 'description') };
    case INFO.BLOCK_SIZE:
      if (rest.length !== 12) throw new NbdDecodeError(`NBD_INFO_BLOCK_SIZE is 14 bytes, got ${data.length}`);
      return { type: 'block-size', sizes: { minimum: rest.readUInt32BE(0), preferred: rest.readUInt32BE(4), maximum: rest.readUInt32BE(8) } };
    default:
      return { type: 'unknown', code: type, data: Buffer.from(rest) };
  }
}

/** The answer to NBD_OPT_EXPORT_NAME: size, transmission flags, and 124 zeroes unless the client asked for none. */
export function encodeExportNameReply(sizeBytes: number, flags: number, noZeroes: boolean): Buffer {
  const b = Buffer.alloc(noZeroes ? 10 : 134);
  b.writeBigUInt64BE(BigInt(sizeBytes), 0);
  b.writeUInt16BE(flags & 0xffff, 8);
  return b;
}

// ------------------------------------------------------------- transmission

export interface NbdRequest {
  /** Command flags (CMD_FLAGS). */
  flags: number;
  /** Request type (CMD). */
  type: number;
  /** Opaque to the server: echoed in the reply (the spec's "handle", renamed "cookie"). */
  cookie: bigint;
  offset: bigint;
  /** Bytes to read, or bytes of payload that follow a WRITE. */
  length: number;
}

/** A request header: magic, flags, type, cookie, offset, length (28 bytes). */
export function decodeRequest(b: Buffer): NbdRequest {
  if (b.length !== REQUEST_SIZE) throw new NbdDecodeError(`request header is ${REQUEST_SIZE} bytes, got ${b.length}`);
  const magic = b.readUInt32BE(0);
  if (magic !== REQUEST_MAGIC) throw new NbdDecodeError(`request magic 0x${magic.toString(16).padStart(8, '0')} is not 0x${REQUEST_MAGIC.toString(16)}`);
  return { flags: b.readUInt16BE(4), type: b.readUInt16BE(6), cookie: b.readBigUInt64BE(8), offset: b.readBigUInt64BE(16), length: b.readUInt32BE(24) };
}

export function encodeRequest(r: NbdRequest): Buffer {
  const b = Buffer.alloc(REQUEST_SIZE);
  b.writeUInt32BE(REQUEST_MAGIC, 0);
  b.writeUInt16BE(r.flags, 4);
  b.writeUInt16BE(r.type, 6);
  b.writeBigUInt64BE(r.cookie, 8);
  b.writeBigUInt64BE(r.offset, 16);
  b.writeUInt32BE(r.length >>> 0, 24);
  return b;
}

/** A simple reply header; a successful READ's data follows it. */
export function encodeSimpleReply(cookie: bigint, error: number): Buffer {
  const b = Buffer.allocUnsafe(SIMPLE_REPLY_SIZE);
  b.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0);
  b.writeUInt32BE(error >>> 0, 4);
  b.writeBigUInt64BE(cookie, 8);
  return b;
}

export function decodeSimpleReply(b: Buffer): { error: number; cookie: bigint } {
  if (b.length !== SIMPLE_REPLY_SIZE) throw new NbdDecodeError(`simple reply is ${SIMPLE_REPLY_SIZE} bytes, got ${b.length}`);
  const magic = b.readUInt32BE(0);
  if (magic !== SIMPLE_REPLY_MAGIC) throw new NbdDecodeError(`reply magic 0x${magic.toString(16)} is not a simple reply`);
  return { error: b.readUInt32BE(4), cookie: b.readBigUInt64BE(8) };
}

/** One line for logs and golden tests. */
export function describeRequest(r: NbdRequest): string {
  const flags = Object.entries(CMD_FLAGS)
    .filter(([, bit]) => r.flags & bit)
    .map(([k]) => k);
  return `${commandName(r.type)} cookie=${r.cookie} offset=${r.offset} length=${r.length}${flags.length ? ` flags=${flags.join('|')}` : ''}`;
}

export function describeTxFlags(flags: number): string {
  return Object.entries(TX_FLAGS)
    .filter(([, bit]) => flags & bit)
    .map(([k]) => k)
    .join('|');
}
