import { describe, expect, it } from 'vitest';
import { MacSchema, isMulticastMac, normalizeMac, pvsMac } from '../../model/index.js';

describe('normalizeMac', () => {
  it.each([
    ['00:15:5d:01:02:03'],
    ['00:15:5D:01:02:03'],
    ['00-15-5D-01-02-03'],
    ['0015.5d01.0203'],
    ['00155D010203'],
    ['  00155d010203  '],
  ])('maps %j to the canonical lower-case colon form', (input) => {
    expect(normalizeMac(input)).toBe('00:15:5d:01:02:03');
  });

  it.each([
    ['00:15:5d:01:02', 'too short'],
    ['00:15:5d:01:02:03:04', 'too long'],
    ['00:15-5d:01:02:03', 'mixed separators'],
    ['00:15:5d:01:02:0g', 'not hex'],
    ['0015.5d01.02030', 'bad dotted groups'],
    ['', 'empty'],
    ['00 15 5d 01 02 03', 'space separators'],
  ])('rejects %j (%s)', (input) => {
    expect(normalizeMac(input)).toBeNull();
  });

  it('pvsMac gives the PVS display form', () => {
    expect(pvsMac('00:15:5d:01:02:03')).toBe('00-15-5D-01-02-03');
  });

  it('isMulticastMac looks at the group bit of the first octet', () => {
    expect(isMulticastMac('01:00:5e:00:00:01')).toBe(true);
    expect(isMulticastMac('00:15:5d:01:02:03')).toBe(false);
  });

  it('MacSchema normalises and refuses multicast and all-zero addresses', () => {
    expect(MacSchema.parse('52-54-00-AB-CD-EF')).toBe('52:54:00:ab:cd:ef');
    expect(MacSchema.safeParse('01:00:5e:00:00:01').error?.issues[0]?.message).toBe('must be a unicast MAC address');
    expect(MacSchema.safeParse('ff:ff:ff:ff:ff:ff').success).toBe(false);
    expect(MacSchema.safeParse('00:00:00:00:00:00').success).toBe(false);
    expect(MacSchema.safeParse('nonsense').error?.issues[0]?.message).toMatch(/must be a MAC address/);
  });
});
