import { describe, expect, it } from 'vitest';
import { FarmError, VERSION_STATES, VdiskInputSchema, checkVdisk, checkVersionTransition, type VersionState } from '../../model/index.js';

const allowed = (from: VersionState, to: VersionState, isNewest: boolean) => {
  try {
    checkVersionTransition(from, to, isNewest);
    return true;
  } catch (e) {
    expect(e).toBeInstanceOf(FarmError);
    expect((e as FarmError).field).toBe('state');
    return false;
  }
};

describe('checkVersionTransition', () => {
  it('allows exactly promote towards production, and revert one step back', () => {
    const ok: string[] = [];
    for (const from of VERSION_STATES) for (const to of VERSION_STATES) if (from !== to && allowed(from, to, true)) ok.push(`${from}->${to}`);
    expect(ok.sort()).toEqual(['maintenance->production', 'maintenance->test', 'production->test', 'test->maintenance', 'test->production']);
  });

  it('allows a test version back to maintenance only when it is the newest', () => {
    expect(allowed('test', 'maintenance', true)).toBe(true);
    expect(allowed('test', 'maintenance', false)).toBe(false);
    expect(() => checkVersionTransition('test', 'maintenance', false)).toThrow(/only the newest version/);
  });

  it('treats staying in the same state as no transition', () => {
    for (const s of VERSION_STATES) expect(allowed(s, s, false)).toBe(true);
  });

  it('never moves a version out of or into merged', () => {
    for (const s of VERSION_STATES) if (s !== 'merged') {
      expect(allowed('merged', s, true)).toBe(false);
      expect(allowed(s, 'merged', true)).toBe(false);
    }
  });
});

describe('checkVdisk', () => {
  const vdisk = (o: Record<string, unknown>) => VdiskInputSchema.parse({ storeId: 'st_aaaaaaaaaaaaaaaa', name: 'win11', sizeBytes: 1 << 30, ...o });

  it('requires sizeBytes to be a multiple of the sector size', () => {
    expect(() => checkVdisk(vdisk({ sizeBytes: (1 << 30) + 512, sectorSize: 4096 }))).toThrow(/sizeBytes: must be a multiple of the sector size \(4096\)/);
    expect(() => checkVdisk(vdisk({ sizeBytes: (1 << 30) + 512, sectorSize: 512 }))).not.toThrow();
  });

  it('requires a fixed appliance exactly when load balancing is fixed', () => {
    expect(() => checkVdisk(vdisk({ loadBalancing: { mode: 'fixed' } }))).toThrow(/loadBalancing.applianceId: required/);
    expect(() => checkVdisk(vdisk({ loadBalancing: { mode: 'algorithm', applianceId: 'app_aaaaaaaaaaaaaaaa' } }))).toThrow(/only allowed when mode is fixed/);
    expect(() => checkVdisk(vdisk({ loadBalancing: { mode: 'fixed', applianceId: 'app_aaaaaaaaaaaaaaaa' } }))).not.toThrow();
  });
});
