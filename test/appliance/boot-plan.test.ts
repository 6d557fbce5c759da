/**
 * Boot decisions and scripts as pure functions: which appliance streams,
 * what a target waits for, what it is refused, and the iPXE text each gives.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { planBoot, type ApplianceState, type PlanInput } from '../../appliance/boot/plan.js';
import { KERNEL_CMDLINE_MAX, decodeCmdlineValue, encodeCmdlineValue, linuxCmdline } from '../../appliance/boot/linux-cmdline.js';
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

  it("sends a target with a persistent cache to the same appliance boot after boot, the least busy one otherwise", () => {
    const loads = [self('verified', 0), self('verified', 1)];
    for (const [vd, sticky] of [[{ writeCacheType: 'appliance-persistent' }, true], [{ writeCacheType: 'appliance-temporary' }, false]] as const) {
      const chosen = loads.map((_, i) =>
        planBoot(input(withType(snapshot(), { ...vd, accessMode: 'standard' }), self('verified'), { ...nbd, state: (id) => (id === A ? loads[i]! : loads[1 - i]!) })).event.streamingApplianceId,
      );
      // Alpha busier, then beta busier: a temporary cache follows the load, a persistent one stays home.
      if (sticky) expect(chosen[0]).toBe(chosen[1]);
      else expect(chosen).toEqual([A, B]);
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

describe('Linux vDisks in the boot plan (kernel and initramfs from the vDisk, root over NBD)', () => {
  const nbd = { nbdExport: (c: { mac: string; vdiskId: string; version: number; mode: string }) => `bf1.${c.mac.replace(/:/g, '')}.${c.vdiskId}.${c.version}.${c.mode}`, nbdServer: (a: { managementAddress: string }) => `${a.managementAddress}:10809` };
  const linux = {
    ...nbd,
    linux: (v: string, n: number) => (v === VD && n === 3 ? { cmdline: 'console=ttyS0,115200 panic=30 init=/sbin/init' } : null),
    bootFileUrl: (a: { managementAddress: string }, v: string, n: number, f: string) => `http://${a.managementAddress}/vdisks/${v}/${n}/${f}?mac=52-54-00-00-00-01`,
  };
  const withTarget = (patch: Record<string, unknown>, vdisk: Record<string, unknown> = {}) => {
    const s = snapshot();
    Object.assign(s.targets[0]!, patch);
    Object.assign(s.vdisks[0]!, vdisk);
    return s;
  };
  const words = (cmdline: string) => Object.fromEntries(cmdline.split(' ').map((w) => [w.slice(0, w.indexOf('=')), w.slice(w.indexOf('=') + 1)]));

  it("boots the version's kernel with the image's command line and where its root streams from, who the target is, and how writes are kept", () => {
    const s = withTarget({ personality: [{ name: 'role', value: 'kiosk' }], writeCacheSizeMb: 256 }, { writeCacheType: 'device-ram' });
    const r = planBoot(input(s, self('verified'), { ...linux, state: () => self('verified') }));
    expect(r.plan).toMatchObject({
      kind: 'vdisk',
      paths: [
        { name: 'alpha', kernelUrl: `http://192.0.2.10/vdisks/${VD}/3/kernel?mac=52-54-00-00-00-01`, initrdUrl: `http://192.0.2.10/vdisks/${VD}/3/initrd?mac=52-54-00-00-00-01` },
        { name: 'beta', kernelUrl: `http://192.0.2.11/vdisks/${VD}/3/kernel?mac=52-54-00-00-00-01` },
      ],
    });
    const cmdline = r.plan.kind === 'vdisk' ? r.plan.linux!.cmdline : '';
    expect(cmdline.startsWith('console=ttyS0,115200 panic=30 init=/sbin/init bootfarm.nbd=')).toBe(true);
    expect(words(cmdline)).toMatchObject({
      'bootfarm.nbd': '192.0.2.10:10809,192.0.2.11:10809',
      'bootfarm.export': `bf1.525400000001.${VD}.3.read-only`,
      'bootfarm.mode': 'read-only',
      'bootfarm.cache': 'device-ram',
      'bootfarm.wcsize': '256',
      'bootfarm.mac': '52-54-00-00-00-01',
      'bootfarm.hostname': 'pc-01',
      'bootfarm.p.role': 'kiosk',
      // PVS defaults: general timeout 5 s bounds a request; "restore the connection" waits for the disk as long as it takes.
      'bootfarm.timeout': '5',
      'bootfarm.dead': '86400',
      // No floating address: nothing comes back on a dead appliance's address, the next server is tried at once.
      'bootfarm.stay': '0',
    });

    const text = bootScript(r.plan, s.site.bootstrap);
    // Each appliance in turn, kernel then initramfs then boot, and the site's retry policy around them; no sanboot.
    expect(text).toContain(
      `imgfree\nkernel http://192.0.2.10/vdisks/${VD}/3/kernel?mac=52-54-00-00-00-01 ${cmdline} && initrd http://192.0.2.10/vdisks/${VD}/3/initrd?mac=52-54-00-00-00-01 && boot ||\n` +
        `imgfree\nkernel http://192.0.2.11/vdisks/${VD}/3/kernel?mac=52-54-00-00-00-01 ${cmdline} && initrd http://192.0.2.11/vdisks/${VD}/3/initrd?mac=52-54-00-00-00-01 && boot ||\n` +
        'goto bf_retry_1\n:bf_retry_1\n',
    );
    expect(text).not.toContain('sanboot');
    expect(text).not.toContain('san-retries');
  });

  it("a writable export names its one appliance, and the site's reboot delay bounds how long I/O waits for it", () => {
    const s = withTarget({}, { writeCacheType: 'appliance-persistent' });
    s.site = { ...s.site, bootstrap: { ...s.site.bootstrap, generalTimeoutMs: 12_500, networkRecovery: { action: 'reboot-local', rebootDelaySeconds: 50 } } };
    const r = planBoot(input(s, self('verified'), linux));
    const w = words(r.plan.kind === 'vdisk' ? r.plan.linux!.cmdline : '');
    expect(w).toMatchObject({ 'bootfarm.nbd': '192.0.2.10:10809', 'bootfarm.mode': 'appliance-persistent', 'bootfarm.cache': 'appliance-persistent', 'bootfarm.timeout': '13', 'bootfarm.dead': '50' });
    // Reboot to hard drive: the attempts, then the local disk.
    expect(bootScript(r.plan, s.site.bootstrap)).toMatch(/:bf_retry_11\necho bootfarm: the disk did not answer for 50 s: booting from the local disk\n/);
  });

  it('with a floating address the kernel comes from the chosen appliance alone, and the root lists every appliance (read-only)', () => {
    const s = snapshot();
    (s.appliances[0] as { floatingAddress?: string }).floatingAddress = '192.0.2.20';
    const r = planBoot(input(s, self('verified'), { ...linux, state: (id) => (id === A ? self('verified') : self('verified', 1)) }));
    expect(r.plan.kind === 'vdisk' && r.plan.paths.map((p) => p.name)).toEqual(['alpha']);
    expect(words(r.plan.kind === 'vdisk' ? r.plan.linux!.cmdline : '')).toMatchObject({
      'bootfarm.nbd': '192.0.2.10:10809,192.0.2.11:10809',
      // After a connection dies the root waits on that address while a survivor adopts it (peer timeout 2 s).
      'bootfarm.stay': '7',
    });
  });

  it('carries personality strings (admin input) percent-encoded: nothing in them becomes iPXE syntax, another word or another parameter', () => {
    const hostile = '${net0/mac} || shell ; "q" \'s\' #c\nbootfarm.nbd=6.6.6.6 é 日本 %41';
    const s = withTarget({ personality: [{ name: 'note', value: hostile }, { name: 'empty', value: '' }] });
    const r = planBoot(input(s, self('verified'), linux));
    const cmdline = r.plan.kind === 'vdisk' ? r.plan.linux!.cmdline : '';
    const w = words(cmdline);
    expect(w['bootfarm.p.note']).toMatch(/^[A-Za-z0-9._~%-]+$/);
    expect(decodeCmdlineValue(w['bootfarm.p.note']!)).toBe(hostile);
    expect(w['bootfarm.p.empty']).toBe('');
    expect(w['bootfarm.nbd']).toBe('192.0.2.10:10809,192.0.2.11:10809');
    const kernelLine = bootScript(r.plan, s.site.bootstrap).split('\n').find((l) => l.startsWith('kernel '))!;
    expect(kernelLine).not.toMatch(/\$\{|[;"'#]|\|\|.*\|\|/);
  });

  it('percent-encoding round-trips any text', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', maxLength: 200 }), (v) => {
        const e = encodeCmdlineValue(v);
        expect(e).toMatch(/^[A-Za-z0-9._~%-]*$/);
        expect(decodeCmdlineValue(e)).toBe(v);
      }),
    );
  });

  it("refuses the boot with the reason when the command line would pass the kernel's 2047 bytes", () => {
    const personality = Array.from({ length: 8 }, (_, n) => ({ name: `p${n}`, value: 'é'.repeat(100) }));
    const r = planBoot(input(withTarget({ personality }), self('verified'), linux));
    expect(r.plan).toMatchObject({ kind: 'refuse', message: expect.stringMatching(/target pc-01 \(52:54:00:00:00:01\) cannot boot vDisk win11: the kernel command line for pc-01 would be \d+ bytes, more than the kernel's 2047: its 8 personality strings take \d+ \(encoded\); shorten them/) });
    expect(r.event.outcome).toBe('refused');
    const base = { base: 'x', servers: ['192.0.2.10:10809'], exportName: 'e', mode: 'read-only' as const, writeCacheType: 'device-ram' as const, writeCacheSizeMb: 0, mac: MAC, hostname: 'h', personality: [], requestTimeoutSeconds: 5, deadConnectionSeconds: 5, staySeconds: 0 };
    const ok = linuxCmdline(base);
    if (!ok.ok) throw new Error(ok.message);
    // Exactly at the limit passes, one byte more does not.
    const pad = KERNEL_CMDLINE_MAX - ok.cmdline.length - ' bootfarm.p.x='.length;
    const at = linuxCmdline({ ...base, personality: [{ name: 'x', value: 'a'.repeat(pad) }] });
    expect(at.ok && at.cmdline.length).toBe(KERNEL_CMDLINE_MAX);
    expect(linuxCmdline({ ...base, personality: [{ name: 'x', value: 'a'.repeat(pad + 1) }] }).ok).toBe(false);
  });

  it('refuses a Linux vDisk when no NBD service is offered (its root could not stream), and sanboots any other vDisk as before', () => {
    const noNbd = planBoot(input(snapshot(), self('verified'), { linux: linux.linux, bootFileUrl: linux.bootFileUrl }));
    expect(noNbd.plan).toMatchObject({ kind: 'refuse', message: expect.stringContaining('is a Linux vDisk: its root file system streams over NBD') });
    const plain = planBoot(input(snapshot(), self('verified'), { ...linux, linux: () => null }));
    expect(plain.plan.kind === 'vdisk' && plain.plan.linux).toBeFalsy();
    expect(bootScript(plain.plan, site.bootstrap)).toContain('sanboot --no-describe --drive 0x80 http://192.0.2.10/vdisks/');
  });

  it('refuses NBD servers that are not plain words rather than write them on a command line', () => {
    const r = planBoot(input(snapshot(), self('verified'), { ...linux, nbdServer: () => 'fe80::1%eth0 :10809' }));
    expect(r.plan).toMatchObject({ kind: 'refuse', message: expect.stringContaining('cannot be carried on a kernel command line') });
  });
});
