/**
 * RFC 2347 option negotiation for a read request: which of the client's
 * options the server takes, with what values, and the OACK that says so.
 * Pure: the request, the server's limits and the file size in, the
 * transfer's parameters out.
 */
import { BLKSIZE_DEFAULT, parseOptions, type TftpOption } from './codec.js';

export interface NegotiationLimits {
  /** Largest block the server sends (RFC 2348 allows the server to answer a smaller blksize). */
  maxBlksize: number;
  /** Largest window (RFC 7440 section 4: the server may answer a smaller windowsize). */
  maxWindowSize: number;
  /** Cap on windowsize x blksize: a burst larger than a client's socket receive buffer is a burst of losses. */
  maxWindowBytes: number;
  /** Retransmit timeout when the client sends no `timeout` option. */
  defaultTimeoutMs: number;
}

export interface Negotiated {
  blksize: number;
  windowsize: number;
  /** Initial retransmit timeout of this transfer. */
  timeoutMs: number;
  /** The client's `timeout` option in ms, when it sent one: the retransmit timeout may grow to it. */
  clientTimeoutMs: number | undefined;
  /** Options to acknowledge; empty: no OACK, the transfer starts with DATA 1 (RFC 2347: a server that takes no option answers as RFC 1350). */
  oack: TftpOption[];
  /** Options left out of the OACK (unknown or invalid), for the log. */
  ignored: TftpOption[];
}

export function negotiate(options: TftpOption[], fileSize: number, limits: NegotiationLimits): Negotiated {
  const asked = parseOptions(options);
  const oack: TftpOption[] = [];
  let blksize = BLKSIZE_DEFAULT;
  let windowsize = 1;
  let timeoutMs = limits.defaultTimeoutMs;
  // blksize first: windowsize depends on it whatever order the client sent them in.
  if (asked.blksize) blksize = Math.min(asked.blksize.value, limits.maxBlksize);
  if (asked.windowsize) windowsize = Math.max(1, Math.min(asked.windowsize.value, limits.maxWindowSize, Math.floor(limits.maxWindowBytes / blksize)));
  // RFC 2349 timeout: acknowledged as asked, and an upper bound for the first retransmission, not a
  // floor. curl asks 6 s by default; waiting 6 s per lost block on a LAN is what makes a boot slow,
  // while retransmitting sooner costs one duplicate that the client acknowledges again and the
  // server ignores (duplicate ACKs never trigger a retransmission).
  const clientTimeoutMs = asked.timeout ? asked.timeout.value * 1000 : undefined;
  if (clientTimeoutMs !== undefined) timeoutMs = Math.min(timeoutMs, clientTimeoutMs);
  // A Map, not an object literal: option names are client input ("__proto__", "constructor").
  const answers = new Map<string, TftpOption>();
  if (asked.blksize) answers.set('blksize', { name: asked.blksize.name, value: String(blksize) });
  // RFC 2349: the server answers tsize with the size of the file (only when asked).
  if (asked.tsize) answers.set('tsize', { name: asked.tsize.name, value: String(fileSize) });
  // RFC 2349: the timeout is acknowledged with the value asked for; a server cannot change it.
  if (asked.timeout) answers.set('timeout', { name: asked.timeout.name, value: String(asked.timeout.value) });
  if (asked.windowsize) answers.set('windowsize', { name: asked.windowsize.name, value: String(windowsize) });
  // The OACK keeps the client's spelling of each name and its order of asking.
  for (const o of options) {
    const key = o.name.toLowerCase();
    const answer = answers.get(key);
    if (answer) {
      oack.push(answer);
      answers.delete(key);
    }
  }
  return { blksize, windowsize, timeoutMs, clientTimeoutMs, oack, ignored: asked.ignored };
}
