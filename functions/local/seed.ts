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
