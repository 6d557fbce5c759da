import { describe, expect, it } from 'vitest';
import { FarmError, VERSION_STATES, VdiskInputSchema, checkVdisk, checkVersionTransition, selectVersion, type VersionState } from '../../model/index.js';

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

describe('selectVersion (which version a target boots)', () => {
  const v = (number: number, state: VersionState) => ({ number, state });
  const chain = [v(0, 'merged'), v(1, 'production'), v(2, 'production'), v(3, 'test'), v(4, 'maintenance')];

  it('gives production targets the newest production version only', () => {
    expect(selectVersion(chain, 'production')?.number).toBe(2);
    expect(selectVersion([v(0, 'test'), v(1, 'maintenance')], 'production')).toBeNull();
  });

  it('gives test targets the newest test version, else the newest production one', () => {
    expect(selectVersion(chain, 'test')?.number).toBe(3);
    expect(selectVersion([v(0, 'production'), v(1, 'maintenance')], 'test')?.number).toBe(0);
  });

  it('gives maintenance targets the maintenance version, else what test targets get', () => {
    expect(selectVersion(chain, 'maintenance')?.number).toBe(4);
    expect(selectVersion(chain.slice(0, 4), 'maintenance')?.number).toBe(3);
  });

  it('never boots a merged version, whatever the order of the list', () => {
    expect(selectVersion([v(5, 'merged'), v(1, 'production')].reverse(), 'production')?.number).toBe(1);
    expect(selectVersion([v(0, 'merged')], 'maintenance')).toBeNull();
  });
});
