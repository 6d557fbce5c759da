/**
 * The demo farm a fresh `bootfarm dev` starts with: one site, one store, one
 * collection (the site's default, for auto-add), like a new PVS farm.
 */
import type { Principal } from '../../model/index.js';
import { CollectionInputSchema, SiteInputSchema, StoreInputSchema, defaultS3Prefix } from '../../model/index.js';
import { newId } from '../storage/ids.js';
import type { FarmRepo } from '../storage/repo.js';

/** Seeds an empty farm; returns false (and changes nothing) when the farm has sites already. */
export async function seedDemoFarm(repo: FarmRepo, actor: Principal): Promise<boolean> {
  if ((await repo.list('site', { limit: 1 })).items.length > 0) return false;
  const site = (await repo.create('site', { ...SiteInputSchema.parse({ name: 'Default', description: 'Demo site created by bootfarm dev' }), id: newId('site') }, actor)).object;
  const store = StoreInputSchema.parse({ name: 'Default', description: 'Demo store created by bootfarm dev' });
  await repo.create('store', { ...store, s3Prefix: defaultS3Prefix(store.name), id: newId('st') }, actor);
  const col = (await repo.create('collection', { ...CollectionInputSchema.parse({ siteId: site.id, name: 'Default', description: 'Auto-added targets join here' }), id: newId('col') }, actor)).object;
  await repo.update('site', site.id, null, (cur) => ({ ...cur, defaultCollectionId: col.id }), actor);
  await repo.updateFarm(null, (f) => ({ ...f, autoAdd: { enabled: false, siteId: site.id } }), actor);
  return true;
}

/** The MAC QEMU gives a VM by default: `npm run demo:boot` boots as the demo target. */
export const DEMO_TARGET_MAC = '52:54:00:12:34:56';
export const DEMO_VDISK = 'demo';

/**
 * The demo vDisk (the 64 MiB test disk: its boot sector reads sectors through
 * int 13h and prints their checksum and a message) pushed like any vDisk, and
 * the demo target that boots it. Runs through the API, once, on a fresh farm.
 */
export async function seedDemoDisk(api: string, token: string, dataDir: string): Promise<{ message: string }> {
  const { ApiClient } = await import('../../cli/client.js');
  const { pushImage } = await import('../../cli/push.js');
  const { buildTestDisk } = await import('./boot-disk.js');
  const { join } = await import('node:path');
  const c = new ApiClient(api, token);
  const disk = await buildTestDisk(join(dataDir, 'demo-disk.raw'), { message: 'Hello from the bootfarm demo vDisk: streamed from your local appliance' });
  const stores = (await c.all<{ id: string; name: string }>('/v1/stores')).filter((x) => x.name === 'Default');
  const cols = (await c.all<{ id: string; name: string }>('/v1/collections')).filter((x) => x.name === 'Default');
  if (!stores[0] || !cols[0]) throw new Error('the demo store and collection are missing');
  const pushed = await pushImage(c, { storeId: stores[0].id, name: DEMO_VDISK, files: [disk.path], state: 'production', description: 'bootfarm demo disk (npm run demo:boot)' });
  await c.request('POST', '/v1/targets', { mac: DEMO_TARGET_MAC, name: 'demo-vm', collectionId: cols[0].id, assignments: [{ vdiskId: pushed.vdiskId }], description: 'QEMU from npm run demo:boot' });
  return { message: disk.message };
}
