import { describe, expect, it } from 'vitest';
import { FarmError, authorize, type Action, type ObjectKind, type Principal, type Role } from '../../model/index.js';

const SITE = 'site_aaaaaaaaaaaaaaaa';
const OTHER = 'site_bbbbbbbbbbbbbbbb';
const who = (role: Role, siteId: string | null = null): Principal => ({ tokenId: 't', name: `${role}-token`, role, siteId });

/** 'ok' or the FarmError code authorize throws. */
function outcome(p: Principal, action: Action, kind: ObjectKind, siteId: string | null, fields?: string[]): string {
  try {
    authorize(p, action, kind, siteId, fields);
    return 'ok';
  } catch (e) {
    expect(e).toBeInstanceOf(FarmError);
    return (e as FarmError).code;
  }
}

const ACTIONS: Action[] = ['read', 'create', 'update', 'delete'];
const SITE_KINDS: ObjectKind[] = ['site', 'appliance', 'collection', 'target'];
const FARM_KINDS: ObjectKind[] = ['farm', 'store', 'vdisk', 'version'];

describe('authorize', () => {
  it('lets a farm admin do everything, tokens included', () => {
    for (const kind of [...SITE_KINDS, ...FARM_KINDS, 'token', 'audit'] as ObjectKind[])
      for (const action of ACTIONS) {
        expect(outcome(who('farm-admin'), action, kind, SITE)).toBe('ok');
        expect(outcome(who('farm-admin'), action, kind, null)).toBe('ok');
      }
  });

  it('lets nobody but a farm admin read or manage tokens', () => {
    for (const role of ['site-admin', 'device-operator', 'read-only'] as Role[])
      for (const action of ACTIONS) expect(outcome(who(role, role === 'site-admin' ? SITE : null), action, 'token', null)).toBe('forbidden');
  });

  it('lets a read-only token read everything in its scope and write nothing', () => {
    const farmWide = who('read-only');
    const scoped = who('read-only', SITE);
    for (const kind of [...SITE_KINDS, ...FARM_KINDS]) {
      expect(outcome(farmWide, 'read', kind, SITE)).toBe('ok');
      expect(outcome(scoped, 'read', kind, SITE)).toBe('ok');
      for (const action of ['create', 'update', 'delete'] as Action[]) {
        expect(outcome(farmWide, action, kind, SITE)).toBe('forbidden');
        expect(outcome(scoped, action, kind, SITE)).toBe('forbidden');
      }
    }
    for (const kind of FARM_KINDS) expect(outcome(scoped, 'read', kind, null)).toBe('ok');
    for (const kind of SITE_KINDS) expect(outcome(scoped, 'read', kind, OTHER)).toBe('forbidden');
  });

  it('lets a site admin manage appliances, collections and targets of its own site only', () => {
    const p = who('site-admin', SITE);
    for (const kind of ['appliance', 'collection', 'target'] as ObjectKind[])
      for (const action of ACTIONS) {
        expect(outcome(p, action, kind, SITE)).toBe('ok');
        expect(outcome(p, action, kind, OTHER)).toBe('forbidden');
      }
  });

  it('lets a site admin read and update its own site but not create or delete sites', () => {
    const p = who('site-admin', SITE);
    expect(outcome(p, 'read', 'site', SITE)).toBe('ok');
    expect(outcome(p, 'update', 'site', SITE)).toBe('ok');
    expect(outcome(p, 'delete', 'site', SITE)).toBe('forbidden');
    expect(outcome(p, 'create', 'site', null)).toBe('forbidden');
    expect(outcome(p, 'update', 'site', OTHER)).toBe('forbidden');
    expect(outcome(p, 'read', 'site', OTHER)).toBe('forbidden');
  });

  it('lets a site admin read but not write farm-wide objects', () => {
    const p = who('site-admin', SITE);
    for (const kind of FARM_KINDS) {
      expect(outcome(p, 'read', kind, null)).toBe('ok');
      for (const action of ['create', 'update', 'delete'] as Action[]) expect(outcome(p, action, kind, null)).toBe('forbidden');
    }
  });

  it('lets a device operator change only disabled and bootFrom of targets in its scope', () => {
    const scoped = who('device-operator', SITE);
    const farmWide = who('device-operator');
    for (const p of [scoped, farmWide]) {
      expect(outcome(p, 'update', 'target', SITE, ['disabled'])).toBe('ok');
      expect(outcome(p, 'update', 'target', SITE, ['bootFrom'])).toBe('ok');
      expect(outcome(p, 'update', 'target', SITE, ['disabled', 'bootFrom'])).toBe('ok');
      expect(outcome(p, 'update', 'target', SITE, ['disabled', 'assignments'])).toBe('forbidden');
      expect(outcome(p, 'update', 'target', SITE, ['name'])).toBe('forbidden');
      expect(outcome(p, 'create', 'target', SITE)).toBe('forbidden');
      expect(outcome(p, 'delete', 'target', SITE)).toBe('forbidden');
      for (const kind of ['site', 'appliance', 'collection'] as ObjectKind[])
        for (const action of ['create', 'update', 'delete'] as Action[]) expect(outcome(p, action, kind, SITE)).toBe('forbidden');
    }
    expect(outcome(scoped, 'update', 'target', OTHER, ['disabled'])).toBe('forbidden');
  });

  it('names the token, the action and the reason in the refusal', () => {
    expect(() => authorize(who('device-operator', SITE), 'update', 'target', SITE, ['assignments'])).toThrow(
      /device-operator token "device-operator-token" may not update target: .*assignments/,
    );
  });
});
