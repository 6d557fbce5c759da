/**
 * Block arithmetic for a sender, pure. Blocks are numbered from 1 without
 * limit inside the server; on the wire a block number is 16 bits and rolls
 * over from 65535 to 0, which is what readers of large files expect:
 * tftp-hpa's server sends `if (!++block) block = rollover_val;` (default 0),
 * curl's client expects `NEXT_BLOCKNUM(x) (((x) + 1) & 0xffff)`, and iPXE's
 * tftp_rx_data() extends the 16-bit number above the last full 65536 (so
 * DATA 0 follows DATA 65535). Block 0 inside the server is the OACK.
 */

/** 16-bit block number of block `n` (RFC 1350 section 5: block numbers are two bytes). */
export function wireBlock(n: number): number {
  return n & 0xffff;
}

/** Number of DATA packets for a file: a file that is a multiple of blksize ends with an empty block (RFC 1350 section 6). */
export function lastBlock(size: number, blksize: number): number {
  return Math.floor(size / blksize) + 1;
}

/** Byte range of block `n` (1-based). */
export function blockRange(n: number, blksize: number, size: number): { offset: number; length: number } {
  const offset = (n - 1) * blksize;
  return { offset, length: Math.max(0, Math.min(blksize, size - offset)) };
}

/**
 * Which block an ACK with 16-bit number `wire` acknowledges: the one in
 * (acked, sent] whose low 16 bits match, or null for a duplicate or old ACK
 * (or one for a block not yet sent). A window is at most 65535 blocks, so at
 * most one block in that range matches.
 */
export function ackedBlock(wire: number, acked: number, sent: number): number | null {
  const n = acked + ((wire - acked) & 0xffff);
  return n > acked && n <= sent ? n : null;
}

/** The blocks to (re)send after `acked` is acknowledged: the next window, clipped at the last block (RFC 7440 section 4). */
export function windowAfter(acked: number, windowsize: number, last: number): { from: number; to: number } {
  return { from: acked + 1, to: Math.min(acked + windowsize, last) };
}
