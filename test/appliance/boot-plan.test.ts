/**
 * Boot decisions and scripts as pure functions: which appliance streams,
 * what a target waits for, what it is refused, and the iPXE text each gives.
 */
import { describe, expect, it } from 'vitest';
import { planBoot, type ApplianceState, type PlanInput } from '../../appliance/boot/plan.js';
import { hostOf } from '../../appliance/boot/routes.js';
import { bootScript, genericScript } from '../../appliance/boot/script.js';
import { SiteInputSchema, type Snapshot } from '../../model/index.js';

const A = 'app_aaaaaaaaaaaaaaaa';
const B = 'app_bbbbbbbbbbbbbbbb';
const VD = 'vd_vvvvvvvvvvvvvvvv';
const MAC = '52:54:00:00:00:01';
const site = { ...SiteInputSchema.parse({ name: 'Branch', defaultCollectionId: 'col_cccccccccccccccc' }), id: 'site_ssssssssssssssss' };

function snapshot(o: { fixedTo?: string; autoAdd?: boolean; vdiskName?: string } = {}): Snapshot {
  const app = (id: string, name: string, ip: string) => ({ id, name, siteId: site.id, managementAddress: ip, streamingAddresses: [ip], powerRating: 1, maxTargets: 2, description: '', version: 1, createdAt: '', updatedAt: '' });
  return {
    siteId: site.id,
    site,
    farm: { autoAdd: { enabled: o.autoAdd ?? false, siteId: null } },
    appliances: [app(A, 'alpha', '192.0.2.10'), app(B, 'beta', '192.0.2.11')],
    collections: [{ id: 'col_cccccccccccccccc', siteId: site.id, name: 'Lab', templateTargetMac: MAC, autoAdd: { prefix: 'lab-', numberLength: 3, suffix: '', startNumber: 1 } }],
    targets: [{ mac: MAC, name: 'pc-01', collectionId: 'col_cccccccccccccccc', assignments: [{ vdiskId: VD }], type: 'production', bootFrom: 'vdisk', disabled: false, personality: [], writeCacheSizeMb: 0, description: '' }],
    vdisks: [{ id: VD, name: o.vdiskName ?? 'win11', storeId: 'st_ssssssssssssssss', accessMode: 'standard', writeCacheType: 'device-ram-overflow', loadBalancing: o.fixedTo ? { mode: 'fixed', applianceId: o.fixedTo } : { mode: 'algorithm', applianceId: null }, subnetAffinity: 'none' }],
    versions: [{ vdiskId: VD, number: 3, state: 'production', manifest: 'm', contentHash: 'h' }],
  } as unknown as Snapshot;
}

const self = (holds: 'verified' | 'syncing' | null, sessions = 0): ApplianceState => ({ up: true, holds: () => holds, sessionsFor: () => sessions, sessionsTotal: () => sessions });
const unknown: ApplianceState = { up: null, holds: null, sessionsFor: () => 0, sessionsTotal: () => 0 };

function input(s: Snapshot, me: ApplianceState, o: Partial<PlanInput> = {}): PlanInput {
  return {
    snapshot: s,
    autoAdded: [],
    mac: MAC,
    clientIp: '192.0.2.100',
    self: A,
    state: (id) => (id === A ? me : unknown),
    diskUrl: (a, v, n) => `http://${a.managementAddress}/vdisks/${v}/${n}`,
    selfUrl: 'http://192.0.2.10/boot/52-54-00-00-00-01.ipxe',
    ...o,
  };
}

describe('planBoot', () => {
  it('streams from this appliance when it holds the version, with the peers as failover paths', () => {
    const r = planBoot(input(snapshot(), self('verified')));
    expect(r.plan).toMatchObject({ kind: 'vdisk', version: 3, paths: [{ name: 'alpha' }, { name: 'beta' }] });
    expect(r.event).toMatchObject({ outcome: 'vdisk', streamingApplianceId: A });
  });

  it('sends the target to its peers when this appliance cannot stream (still syncing, or at its maximum)', () => {
    for (const me of [self('syncing'), self('verified', 2)]) {
      const r = planBoot(input(snapshot(), me));
      expect(r.plan).toMatchObject({ kind: 'vdisk', paths: [{ name: 'beta', url: `http://192.0.2.11/vdisks/${VD}/3` }] });
      expect(r.event.streamingApplianceId).toBe(B);
    }
  });

  it('sanboots the chosen appliance alone when its floating address fails over (iPXE uses whichever path answers first)', () => {
    const s = snapshot();
    (s.appliances[0] as { floatingAddress?: string }).floatingAddress = '192.0.2.20';
    const r = planBoot(input(s, self('verified'), { state: (id) => (id === A ? self('verified') : self('verified', 1)) }));
    expect(r.plan).toMatchObject({ kind: 'vdisk', paths: [{ name: 'alpha' }] });
    expect(r.plan.kind === 'vdisk' && r.plan.paths).toHaveLength(1);
    // Without one, the peers stay failover paths.
    expect(planBoot(input(snapshot(), self('verified'), { state: () => self('verified') })).plan).toMatchObject({ paths: [{ name: 'alpha' }, { name: 'beta' }] });
  });

  it('keeps the answer a target got moments ago (preferred) while that appliance can still stream', () => {
    const both = { state: () => self('verified') };
    expect(planBoot(input(snapshot(), self('verified'), { ...both, preferred: B })).event.streamingApplianceId).toBe(B);
    expect(planBoot(input(snapshot(), self('verified'), { state: (id: string) => (id === B ? self('syncing') : self('verified')), preferred: B })).event.streamingApplianceId).toBe(A);
  });

  it('uses the appliance a vDisk is fixed to, also when it is a peer', () => {
    const r = planBoot(input(snapshot({ fixedTo: B }), self('verified')));
    expect(r.plan).toMatchObject({ kind: 'vdisk', paths: [{ name: 'beta' }], reason: 'the vDisk is fixed to beta' });
  });

  it('makes the target wait and ask again while the only appliance is still copying the version', () => {
    const s = snapshot();
    s.appliances = s.appliances.slice(0, 1);
    const r = planBoot(input(s, self('syncing')));
    expect(r.plan).toMatchObject({ kind: 'wait', seconds: 10 });
    const text = bootScript(r.plan, s.site.bootstrap);
    expect(text).toContain('chain --replace --autofree http://192.0.2.10/boot/52-54-00-00-00-01.ipxe || reboot');
  });

  it('adds an unknown machine with the template settings only while the farm allows it and within the local limits', () => {
    const stranger = '52:54:00:00:00:99';
    const on = planBoot(input(snapshot({ autoAdd: true }), self('verified'), { mac: stranger }));
    expect(on.added).toMatchObject({ mac: stranger, name: 'lab-001', assignments: [{ vdiskId: VD }] });
    const capped = planBoot(input(snapshot({ autoAdd: true }), self('verified'), { mac: stranger, mayAutoAdd: false }));
    expect(capped.plan).toMatchObject({ kind: 'refuse' });
    expect(capped.added).toBeNull();
    // Added offline, then auto-add turned off (the farm refused it): the machine is not booted as that target any more.
    const off = planBoot(input(snapshot({ autoAdd: false }), self('verified'), { mac: stranger, autoAdded: [on.added!] }));
    expect(off.plan).toMatchObject({ kind: 'refuse', message: expect.stringContaining('auto-add is off for the farm') });
  });
});

describe('NBD in the boot plan', () => {
  const nbd = { nbdExport: (c: { mac: string; vdiskId: string; version: number; mode: string }) => `bf1.${c.mac.replace(/:/g, '')}.${c.vdiskId}.${c.version}.${c.mode}`, nbdServer: (a: { managementAddress: string }) => `${a.managementAddress}:10809` };
  const withType = (s: Snapshot, patch: Record<string, unknown>, targetType = 'production', versionState = 'production') => {
    Object.assign(s.vdisks[0]!, patch);
    s.targets[0]!.type = targetType as 'production';
    (s.versions[0] as { state: string }).state = versionState;
    return s;
  };

  it('names the export for the version booted, with the write cache mode the vDisk and target type give, on the same appliances in the same order', () => {
    const cases: [Record<string, unknown>, string, string, string][] = [
      [{ writeCacheType: 'device-ram-overflow', accessMode: 'standard' }, 'production', 'production', 'read-only'],
      [{ writeCacheType: 'device-ram', accessMode: 'standard' }, 'production', 'production', 'read-only'],
      [{ writeCacheType: 'appliance-temporary', accessMode: 'standard' }, 'production', 'production', 'appliance-temporary'],
      [{ writeCacheType: 'appliance-persistent', accessMode: 'standard' }, 'test', 'production', 'appliance-persistent'],
      [{ writeCacheType: 'device-ram', accessMode: 'private' }, 'production', 'production', 'image'],
      [{ writeCacheType: 'device-ram', accessMode: 'standard' }, 'maintenance', 'maintenance', 'image'],
    ];
    for (const [vd, type, state, mode] of cases) {
      const r = planBoot(input(withType(snapshot(), vd, type, state), self('verified'), nbd));
      expect(r.plan, JSON.stringify(vd)).toMatchObject({ kind: 'vdisk', nbd: { exportName: `bf1.525400000001.${VD}.3.${mode}`, mode, servers: mode === 'read-only' ? ['192.0.2.10:10809', '192.0.2.11:10809'] : ['192.0.2.10:10809'] } });
    }
  });

  it('sets the export for the OS in the script, and offers none without an NBD service', () => {
    const r = planBoot(input(snapshot(), self('verified'), nbd));
    const text = bootScript(r.plan, site.bootstrap);
    expect(text).toContain(`set bootfarm-nbd-export bf1.525400000001.${VD}.3.read-only\n`);
    expect(text).toContain('set bootfarm-nbd-server 192.0.2.10:10809\nset bootfarm-nbd-servers 192.0.2.10:10809,192.0.2.11:10809\nset bootfarm-write-cache read-only\n');
    expect(text.indexOf('bootfarm-nbd-export')).toBeLessThan(text.indexOf('sanboot'));
    const none = planBoot(input(snapshot(), self('verified')));
    expect(bootScript(none.plan, site.bootstrap)).not.toContain('bootfarm-nbd');
  });

  it('leaves the NBD lines out rather than put a value that could end the command into the script (the HTTP boot goes on)', () => {
    for (const o of [{ nbdExport: () => 'x ${y}' }, { nbdServer: () => 'fe80::1%eth0 :10809' }]) {
      const bad = planBoot(input(snapshot(), self('verified'), { ...nbd, ...o }));
      const text = bootScript(bad.plan, site.bootstrap);
      expect(text).not.toContain('bootfarm-nbd');
      expect(text).toContain('sanboot');
    }
  });

  it('names one appliance only for a writable export: its write cache lives there', () => {
    const r = planBoot(input(withType(snapshot(), { writeCacheType: 'appliance-temporary', accessMode: 'standard' }), self('verified'), nbd));
    expect(r.plan).toMatchObject({ kind: 'vdisk', paths: [{ name: 'alpha' }, { name: 'beta' }], nbd: { servers: ['192.0.2.10:10809'] } });
  });
});

describe('bootScript', () => {
  it('gives up after the site reboot delay and boots the local disk (PVS: reboot to hard drive after 50 s)', () => {
    const s = snapshot();
    const bootstrap = { ...s.site.bootstrap, networkRecovery: { action: 'reboot-local' as const, rebootDelaySeconds: 50 } };
    const text = bootScript({ kind: 'vdisk', target: { name: 'pc-01', mac: MAC }, vdisk: { name: 'win11' }, version: 3, paths: [{ name: 'alpha', url: 'http://192.0.2.10/vdisks/x/3' }], reason: 'r' }, bootstrap);
    expect(text.match(/^:bf_retry_\d+$/gm)).toHaveLength(11);
    expect(text).toMatch(/:bf_retry_11\necho bootfarm: the disk did not answer for 50 s: booting from the local disk\niseq \$\{platform\} efi && exit \|\|\nsanboot --no-describe --drive 0x80 \|\| exit\n$/);
    // iPXE's own retries stay at their default here; "restore the connection" raises them to the most the setting takes.
    expect(text).not.toContain('san-retries');
    const restore = bootScript({ kind: 'vdisk', target: { name: 'pc-01', mac: MAC }, vdisk: { name: 'win11' }, version: 3, paths: [{ name: 'alpha', url: 'http://192.0.2.10/vdisks/x/3' }], reason: 'r' }, s.site.bootstrap);
    expect(restore).toMatch(/\nset san-retries 127\nsanboot --no-describe --drive 0x80 http:\/\/192\.0\.2\.10\/vdisks\/x\/3 \|\| goto bf_retry_1\n/);
  });

  it('cannot be made to run farm data as commands', () => {
    const text = bootScript({ kind: 'refuse', message: 'vDisk ${net0/mac} || shell ; echo hi', seconds: 60 }, snapshot().site.bootstrap);
    expect(text).not.toContain('${net0');
    expect(text).not.toContain('||');
    expect(text.split('\n').filter((l) => l.startsWith('echo')).every((l) => !/[;$|&#]/.test(l))).toBe(true);
  });

  it('tries the site\'s other appliances from the generic entry, then says so and reboots', () => {
    expect(genericScript(['http://192.0.2.11:80'])).toBe(
      '#!ipxe\nchain --replace --autofree boot/${mac:hexhyp}.ipxe?arch=${buildarch}&platform=${platform} || chain --replace --autofree http://192.0.2.11:80/boot/${mac:hexhyp}.ipxe?arch=${buildarch}&platform=${platform} || goto bf_none\n:bf_none\necho bootfarm: no appliance of this site answered: restarting in 30 s\nsleep 30\nreboot\n',
    );
  });
});

describe('hostOf (NBD server names in boot scripts)', () => {
  it('takes the host of a base URL with or without a port (a Host header without :80 lost the last digit)', () => {
    expect(hostOf('http://192.0.2.21')).toBe('192.0.2.21');
    expect(hostOf('http://192.0.2.21:80')).toBe('192.0.2.21');
    expect(hostOf('http://[fe80::1%eth0]:8080')).toBe('[fe80::1%eth0]');
    expect(hostOf('http://[2001:db8::1]')).toBe('[2001:db8::1]');
    expect(hostOf('http://appliance.example:81')).toBe('appliance.example');
  });
});
