/**
 * CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum MS-VHDX
 * uses for headers, region tables and log entries (MS-VHDX 2.2.2, 2.2.3.1, 2.3.1.1).
 */
const TABLE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[i] = c >>> 0;
  }
  return t;
})();

/** CRC-32C of `buf`; pass the previous result as `crc` to continue over several buffers. */
export function crc32c(buf: Uint8Array, crc = 0): number {
  let c = ~crc >>> 0;
  for (let i = 0; i < buf.length; i++) c = TABLE[(c ^ buf[i]!) & 0xff]! ^ (c >>> 8);
  return ~c >>> 0;
}

/**
 * CRC-32C of a structure whose own 4-byte checksum field (at `checksumOffset`)
 * counts as zero, as MS-VHDX defines every checksum it stores.
 */
export function crc32cWithZeroedField(buf: Uint8Array, checksumOffset: number): number {
  let c = crc32c(buf.subarray(0, checksumOffset));
  c = crc32c(new Uint8Array(4), c);
  return crc32c(buf.subarray(checksumOffset + 4), c);
}
