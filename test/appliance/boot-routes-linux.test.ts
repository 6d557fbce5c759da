/**
 * The boot route's part in Linux boots, driven in-process (`app.request`)
 * with plain-function deps: whether a version is a Linux vDisk is read from
 * this appliance's cache once, before the first script for it; an appliance
 * that does not hold the version yet sends the target to the one that
 * streams it rather than guess (a Linux vDisk sanbooted cannot boot).
 */
import { describe, expect, it } from 'vitest';
import type { ApplianceState } from '../../appliance/boot/plan.js';
import { bootRoutes, type BootRouteDeps } from '../../appliance/boot/routes.js';
import type { LinuxImage, LinuxImages } from '../../appliance/boot/linux-images.js';
import { SiteInputSchema, type Snapshot } from '../../model/index.js';

const A = 'app_aaaaaaaaaaaaaaaa';
const B = 'app_bbbbbbbbbbbbbbbb';
const VD = 'vd_vvvvvvvvvvvvvvvv';
const MAC = '52:54:00:00:00:01';
const site = { ...SiteInputSchema.parse({ name: 'Branch', defaultCollectionId: 'col_cccccccccccccccc' }), id: 'site_ssssssssssssssss' };
const app = (id: string, name: string, ip: string) => ({ id, name, siteId: site.id, managementAddress: ip, streamingAddresses: [ip], floatingAddress: null, powerRating: 1, maxTargets: 100, description: '', version: 1, createdAt: '', updatedAt: '' });
const snapshot = {
  siteId: site.id,
  site,
  farm: { autoAdd: { enabled: false, siteId: null } },
  appliances: [app(A, 'alpha', '192.0.2.10'), app(B, 'beta', '192.0.2.11')],
  collections: [],
  targets: [{ mac: MAC, name: 'kiosk-01', collectionId: 'col_cccccccccccccccc', assignments: [{ vdiskId: VD }], type: 'production', bootFrom: 'vdisk', disabled: false, personality: [], writeCacheSizeMb: 0, description: '' }],
  vdisks: [{ id: VD, name: 'debian', storeId: 'st_ssssssssssssssss', accessMode: 'standard', writeCacheType: 'device-ram', loadBalancing: { mode: 'algorithm', applianceId: null }, subnetAffinity: 'none' }],
  versions: [{ vdiskId: VD, number: 3, state: 'production', manifest: 'm', contentHash: 'h' }],
  peerSecret: 'secret',
} as unknown as Snapshot;
const image: LinuxImage = { version: 1, kernel: { offset: 2 ** 20 + 4096, size: 100, sha256: 'a'.repeat(64) }, initrd: { offset: 2 ** 21, size: 100, sha256: 'b'.repeat(64) }, cmdline: 'console=ttyS0' };

/** A cache of boot areas that says what `found` says, and counts the reads; like the real one, a version not held is not remembered. */
function images(found: LinuxImage | null, held = true): LinuxImages & { reads: number } {
  const parsed = new Map<string, LinuxImage | null>();
  const x = {
    reads: 0,
    async image(v: string, n: number) {
      x.reads++;
      if (held) parsed.set(`${v}/${n}`, found);
      return found;
    },
    cached: (v: string, n: number) => parsed.get(`${v}/${n}`),
  };
  return x;
}

function routes(o: { self: string; holds: Record<string, 'verified' | 'syncing'>; linux: LinuxImages }) {
  const state = (id: string): ApplianceState => ({ up: true, holds: () => o.holds[id] ?? null, sessionsFor: () => (id === A ? 0 : 1), sessionsTotal: () => 0 });
  const deps: BootRouteDeps = {
    snapshot: () => snapshot,
    autoAdded: () => [],
    recordAutoAdd: async () => undefined,
    recordBoot: async () => undefined,
    self: o.self,
    state,
    baseUrl: (a) => `http://${a.managementAddress}`,
    bootstrapDir: '/nonexistent',
    log: () => undefined,
    nbd: { port: 10809, exportName: (c) => `bf1.${c.mac.replace(/:/g, '')}.${c.vdiskId}.${c.version}.r`, issued: () => undefined },
    linux: o.linux,
  };
  return bootRoutes(deps);
}
const script = async (app: ReturnType<typeof routes>) => (await app.request(`http://192.0.2.10/boot/${MAC.replace(/:/g, '-')}.ipxe`)).text();

describe('boot route and Linux vDisks', () => {
  it("reads the version's boot area once, before the first script for it, and boots its kernel from then on", async () => {
    const linux = images(image);
    const app = routes({ self: A, holds: { [A]: 'verified', [B]: 'verified' }, linux });
    for (let n = 0; n < 3; n++) {
      const text = await script(app);
      expect(text).toContain(`kernel http://192.0.2.10/vdisks/${VD}/3/kernel?mac=52-54-00-00-00-01 console=ttyS0 bootfarm.nbd=192.0.2.10:10809,192.0.2.11:10809 `);
      expect(text).not.toContain('sanboot');
    }
    expect(linux.reads).toBe(1);
  });

  it('sanboots a version that is not a Linux vDisk, reading it once', async () => {
    const linux = images(null);
    const app = routes({ self: A, holds: { [A]: 'verified', [B]: 'verified' }, linux });
    expect(await script(app)).toContain(`sanboot --no-describe --drive 0x80 http://192.0.2.10/vdisks/${VD}/3?mac=52-54-00-00-00-01`);
    expect(await script(app)).toContain('sanboot');
    expect(linux.reads).toBe(1);
  });

  it('sends the target to the appliance that streams the version when this one does not hold it yet', async () => {
    const linux = images(null, false); // nothing to read here: the version is still syncing
    const app = routes({ self: A, holds: { [A]: 'syncing', [B]: 'verified' }, linux });
    const text = await script(app);
    expect(text).toContain('echo bootfarm: this appliance does not hold vDisk version 3 yet: asking beta, which streams it\n');
    expect(text).toContain('chain --replace --autofree http://192.0.2.11/boot/52-54-00-00-00-01.ipxe || reboot');
    expect(text).not.toContain('sanboot');
  });
});
