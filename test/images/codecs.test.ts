/** The checksums and GUID layout the formats are built on, against published vectors. */
import { describe, expect, it } from 'vitest';
import { crc32c, crc32cWithZeroedField } from '../../model/images/crc32c.js';
import { guidToBytes, guidToString, normalizeGuid } from '../../model/images/guid.js';
import { vhdChecksum } from '../../model/images/vhd.js';

describe('crc32c', () => {
  it('matches the CRC-32C check value and the RFC 3720 B.4 vectors', () => {
    expect(crc32c(Buffer.from('123456789'))).toBe(0xe3069283);
    expect(crc32c(Buffer.alloc(32))).toBe(0x8a9136aa);
    expect(crc32c(Buffer.alloc(32, 0xff))).toBe(0x62a8ab43);
    expect(crc32c(Buffer.from(Array.from({ length: 32 }, (_, i) => i)))).toBe(0x46dd794e);
  });

  it('continues across buffers', () => {
    const whole = Buffer.from('bootfarm vdisk push');
    expect(crc32c(whole.subarray(7), crc32c(whole.subarray(0, 7)))).toBe(crc32c(whole));
  });

  it('treats the stored checksum field as zero, as MS-VHDX specifies', () => {
    const b = Buffer.from('head____0123456789abcdef');
    const zeroed = Buffer.from(b);
    zeroed.fill(0, 4, 8);
    expect(crc32cWithZeroedField(b, 4)).toBe(crc32c(zeroed));
  });
});

describe('VHD checksum', () => {
  it('is the one’s complement of the byte sum, skipping the field itself', () => {
    const b = Buffer.alloc(16);
    b.set([1, 2, 3], 0);
    b.writeUInt32BE(0xdeadbeef, 8);
    expect(vhdChecksum(b, 8)).toBe(~6 >>> 0);
  });
});

describe('GUIDs', () => {
  it('use the mixed-endian on-disk layout (the VHDX BAT region GUID)', () => {
    const bytes = guidToBytes('2DC27766-F623-4200-9D64-115E9BFD4A08');
    expect(bytes.toString('hex')).toBe('6677c22d23f600429d64115e9bfd4a08');
    expect(guidToString(bytes)).toBe('2dc27766-f623-4200-9d64-115e9bfd4a08');
  });

  it('normalize braces and case, and reject what is not a GUID', () => {
    expect(normalizeGuid('{83ED0EC3-24C8-49A6-A959-5E4BF1288BFB}')).toBe('83ed0ec3-24c8-49a6-a959-5e4bf1288bfb');
    expect(normalizeGuid('83ed0ec3-24c8-49a6-a959')).toBeUndefined();
  });
});
