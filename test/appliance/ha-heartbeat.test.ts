import { createHmac, randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decodeHeartbeat, encodeHeartbeat, HeartbeatRefused, heartbeatKey, isFresh, MAX_HEARTBEAT_BYTES, newIncarnation, type Heartbeat } from '../../appliance/ha/heartbeat.js';

const SITE = 'site_abcdefghijklmnop';
const FROM = 'app_abcdefghijklmnop';
const VD = 'vd_abcdefghijklmnop';
const key = heartbeatKey('s'.repeat(40));
const hb = (o: Partial<Heartbeat> = {}): Heartbeat => ({
  v: 1,
  site: SITE,
  from: FROM,
  inc: newIncarnation(Date.now(), randomBytes(4)),
  seq: 1,
  leaving: false,
  link: true,
  hears: [],
  held: ['192.0.2.21'],
  inventory: [[VD, 3, 'verified']],
  sessions: { [VD]: ['52:54:00:00:00:01'] },
  total: 1,
  assigned: [['52:54:00:00:00:02', '192.0.2.101', VD, FROM, 120]],
  ...o,
});

describe('heartbeat codec', () => {
  it('round-trips', () => {
    const h = hb();
    expect(decodeHeartbeat(encodeHeartbeat(h, key), key)).toEqual(h);
  });

  it('refuses another site\'s key, a changed byte, and unsigned or malformed datagrams', () => {
    const buf = encodeHeartbeat(hb(), key);
    expect(() => decodeHeartbeat(buf, heartbeatKey('t'.repeat(40)))).toThrow(/bad signature/);
    const flipped = Buffer.from(buf);
    flipped[flipped.length - 3]! ^= 1;
    expect(() => decodeHeartbeat(flipped, key)).toThrow(/bad signature/);
    expect(() => decodeHeartbeat(Buffer.from('hello'), key)).toThrow(/not a bootfarm heartbeat/);
    // Signed with the right key but not a heartbeat: refused by the schema, after the signature.
    const body = Buffer.from(JSON.stringify({ v: 1, site: SITE }));
    const forgedShape = Buffer.concat([Buffer.from('BFH1'), createHmac('sha256', key).update(body).digest(), body]);
    expect(() => decodeHeartbeat(forgedShape, key)).toThrow(/malformed/);
  });

  it('throws only HeartbeatRefused for any bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        try {
          decodeHeartbeat(Buffer.concat([Buffer.from('BFH1'), Buffer.from(bytes)]), key);
        } catch (e) {
          expect(e).toBeInstanceOf(HeartbeatRefused);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('keeps a heartbeat of a very busy appliance under the datagram limit: per-target lists become counts', () => {
    const macs = Array.from({ length: 4000 }, (_, i) => `52:54:00:00:${(i >> 8).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`);
    const h = hb({ sessions: { [VD]: macs }, total: 4000, assigned: macs.slice(0, 1500).map((m) => [m, '192.0.2.200', VD, FROM, 5] as [string, string, string, string, number]) });
    const buf = encodeHeartbeat(h, key);
    expect(buf.length).toBeLessThanOrEqual(MAX_HEARTBEAT_BYTES + 36);
    const back = decodeHeartbeat(buf, key);
    expect(back.counts).toEqual({ [VD]: 4000 });
    expect(back.total).toBe(4000);
  });

  it('refuses replays: only a later incarnation or a higher sequence number is fresh', () => {
    const inc1 = newIncarnation(1000, Buffer.from([1, 2, 3, 4]));
    const inc2 = newIncarnation(2000, Buffer.from([0, 0, 0, 0]));
    expect(isFresh(undefined, { inc: inc1, seq: 1 })).toBe(true);
    expect(isFresh({ inc: inc1, seq: 5 }, { inc: inc1, seq: 5 })).toBe(false);
    expect(isFresh({ inc: inc1, seq: 5 }, { inc: inc1, seq: 4 })).toBe(false);
    expect(isFresh({ inc: inc1, seq: 5 }, { inc: inc1, seq: 6 })).toBe(true);
    expect(isFresh({ inc: inc2, seq: 1 }, { inc: inc1, seq: 99 })).toBe(false);
    expect(isFresh({ inc: inc1, seq: 99 }, { inc: inc2, seq: 1 })).toBe(true);
  });
});
