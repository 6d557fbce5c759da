import { randomBytes } from 'node:crypto';

const ALPHABET = 'abcdefghijklmnopqrstuvwxyz234567';

/** 80 random bits in lower-case base32 (RFC 4648 alphabet): URL- and DNS-safe, case-insensitive. */
export function randomBase32(chars = 16, random: (n: number) => Buffer = randomBytes): string {
  const bytes = random(Math.ceil((chars * 5) / 8));
  let bits = 0;
  let value = 0;
  let out = '';
  for (const b of bytes) {
    value = (value << 8) | b;
    bits += 8;
    while (bits >= 5 && out.length < chars) {
      out += ALPHABET[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  return out;
}

export const newId = (prefix: string) => `${prefix}_${randomBase32()}`;
