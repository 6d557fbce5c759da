/**
 * Turns a captured NBD byte stream into one line per message, with the codec:
 * what the golden tests compare, and a readable record of what real clients send.
 */
import {
  CLIENT_FLAGS,
  CMD,
  GREETING_SIZE,
  INFO,
  OPT,
  OPTION_HEADER_SIZE,
  REP,
  REQUEST_SIZE,
  SIMPLE_REPLY_SIZE,
  decodeClientFlags,
  decodeExportName,
  decodeGreeting,
  decodeInfo,
  decodeInfoRequest,
  decodeOptionHeader,
  decodeOptionReply,
  decodeRequest,
  decodeServerEntry,
  decodeSimpleReply,
  describeRequest,
  describeTxFlags,
  optionName,
  replyName,
} from '../../../appliance/nbd/codec.js';

const infoName = (t: number) => Object.keys(INFO).find((k) => INFO[k as keyof typeof INFO] === t) ?? `info ${t}`;

/** Client -> server: flags, options until the export is chosen, then requests (and WRITE payloads). */
export function walkClient(b: Buffer): string[] {
  const out: string[] = [];
  const flags = decodeClientFlags(b.subarray(0, 4));
  out.push(`client flags ${Object.entries(CLIENT_FLAGS).filter(([, v]) => flags & v).map(([k]) => k).join('|')}`);
  let at = 4;
  let transmission = false;
  while (!transmission && at + OPTION_HEADER_SIZE <= b.length) {
    const h = decodeOptionHeader(b.subarray(at, at + OPTION_HEADER_SIZE));
    const data = b.subarray(at + OPTION_HEADER_SIZE, at + OPTION_HEADER_SIZE + h.length);
    at += OPTION_HEADER_SIZE + h.length;
    if (h.option === OPT.INFO || h.option === OPT.GO) {
      const r = decodeInfoRequest(data);
      out.push(`${optionName(h.option)} "${r.name}" asks ${r.requests.map(infoName).join(',') || 'nothing'}`);
    } else if (h.option === OPT.EXPORT_NAME) out.push(`EXPORT_NAME "${decodeExportName(data)}"`);
    else out.push(`${optionName(h.option)}${h.length ? ` (${h.length} bytes: ${data.toString('hex')})` : ''}`);
    if (h.option === OPT.GO || h.option === OPT.EXPORT_NAME) transmission = true;
    if (h.option === OPT.ABORT) return out;
  }
  while (at + REQUEST_SIZE <= b.length) {
    const r = decodeRequest(b.subarray(at, at + REQUEST_SIZE));
    at += REQUEST_SIZE;
    out.push(describeRequest(r));
    if (r.type === CMD.WRITE) at += r.length;
  }
  return out;
}

/** Server -> client: greeting, option replies; the first transmission replies when the client's reads are known. */
export function walkServer(b: Buffer, readLengths: number[] = []): string[] {
  const out: string[] = [];
  out.push(`greeting flags 0x${decodeGreeting(b.subarray(0, GREETING_SIZE)).flags.toString(16)}`);
  let at = GREETING_SIZE;
  for (;;) {
    if (at + 20 > b.length) return out;
    const len = b.readUInt32BE(at + 16);
    const r = decodeOptionReply(b.subarray(at, at + 20 + len));
    at += 20 + len;
    let line = `${optionName(r.option)} -> ${replyName(r.type)}`;
    if (r.type === REP.INFO) {
      const i = decodeInfo(r.data);
      if (i.type === 'export') line += ` export size=${i.sizeBytes} flags=${describeTxFlags(i.flags)}`;
      else if (i.type === 'block-size') line += ` block-size ${i.sizes.minimum}/${i.sizes.preferred}/${i.sizes.maximum}`;
      else if (i.type === 'name') line += ` name "${i.name}"`;
      else if (i.type === 'description') line += ` description "${i.description}"`;
      else line += ` info ${i.code}`;
    } else if (r.type === REP.SERVER) {
      const e = decodeServerEntry(r.data);
      line += ` "${e.name}" "${e.description}"`;
    } else if (r.type >= 0x80000000 && r.data.length) line += ` "${r.data.toString('utf8')}"`;
    else if (r.data.length) line += ` (${r.data.length} bytes)`;
    out.push(line);
    if ((r.option === OPT.GO && r.type === REP.ACK) || r.option === OPT.ABORT) break;
  }
  for (const n of readLengths) {
    if (at + SIMPLE_REPLY_SIZE > b.length) break;
    const r = decodeSimpleReply(b.subarray(at, at + SIMPLE_REPLY_SIZE));
    at += SIMPLE_REPLY_SIZE + (r.error ? 0 : n);
    out.push(`reply cookie=${r.cookie} error=${r.error}`);
  }
  return out;
}
