/**
 * The farm's object kinds as REST resources: schemas, derived fields, filters.
 */
import {
  ApplianceInputSchema,
  ApplianceSchema,
  CollectionInputSchema,
  CollectionSchema,
  FarmError,
  IdSchema,
  MacSchema,
  SiteInputSchema,
  SiteSchema,
  StoreInputSchema,
  StoreSchema,
  TargetInputSchema,
  TargetSchema,
  VdiskInputSchema,
  VdiskSchema,
  checkCollection,
  checkVdisk,
  defaultS3Prefix,
  type ApplianceInput,
  type CollectionInput,
  type VdiskInput,
} from '../model/index.js';
import type { ListFilter, ResourceSpec } from './routes/resource.js';
import { newId } from './storage/ids.js';
import { listAll } from './storage/list-all.js';
import { RELATIONS, type StoredKind } from './storage/relations.js';
import type { FarmRepo } from './storage/repo.js';

const idFor = (kind: StoredKind) => () => newId(RELATIONS[kind].idPrefix);

const siteFilter = (of: string): ListFilter => ({
  schema: IdSchema,
  description: `Only ${of} of this site`,
  scope: async (siteId) => ({ query: { parent: { kind: 'site', id: siteId } }, siteId }),
});

export const siteResource: ResourceSpec = {
  kind: 'site',
  path: '/sites',
  tag: 'Sites',
  schema: SiteSchema,
  input: SiteInputSchema,
  newId: idFor('site'),
  complete: async (f, repo) => {
    // The default collection must belong to this site (a site being created has no collections yet).
    if (f.defaultCollectionId) {
      const col = await repo.get('collection', f.defaultCollectionId as string);
      if (col && col.siteId !== f.id)
        throw new FarmError('validation_failed', `defaultCollectionId: collection ${col.id} belongs to another site`, 'defaultCollectionId');
    }
    return f;
  },
};

export const applianceResource: ResourceSpec = {
  kind: 'appliance',
  path: '/appliances',
  tag: 'Appliances',
  schema: ApplianceSchema,
  input: ApplianceInputSchema,
  newId: idFor('appliance'),
  immutable: ['siteId'],
  readOnly: { lastHeartbeat: null, inventory: null, status: null },
  check: (f) => checkApplianceAddresses(f as ApplianceInput),
  complete: async (f, repo) => {
    await checkFloatingAddressFree(repo, f as ApplianceInput & { id: string });
    return f;
  },
  filters: { siteId: siteFilter('appliances') },
  siteScope: (siteId) => ({ parent: { kind: 'site', id: siteId } }),
};

/** An appliance's floating address is not one of its own fixed addresses (a peer must be able to take it over). */
export function checkApplianceAddresses(a: ApplianceInput): void {
  if (a.floatingAddress && (a.floatingAddress === a.managementAddress || a.streamingAddresses.includes(a.floatingAddress)))
    throw new FarmError('validation_failed', `floatingAddress: ${a.floatingAddress} is this appliance's own address; a floating address must be one no machine has (a peer adopts it when this appliance goes silent)`, 'floatingAddress');
}

/** No two appliances of a site float the same address, nor one another's fixed address. */
export async function checkFloatingAddressFree(repo: FarmRepo, a: ApplianceInput & { id: string }): Promise<void> {
  const others = ((await listAll(repo, 'appliance', { parent: { kind: 'site', id: a.siteId } })) as unknown as (ApplianceInput & { id: string; name: string })[]).filter((o) => o.id !== a.id);
  for (const o of others) {
    if (a.floatingAddress && o.floatingAddress === a.floatingAddress)
      throw new FarmError('already_exists', `floatingAddress: ${a.floatingAddress} is already the floating address of appliance ${o.name} (${o.id})`, 'floatingAddress');
    const fixed = [o.managementAddress, ...o.streamingAddresses];
    if (a.floatingAddress && fixed.includes(a.floatingAddress))
      throw new FarmError('validation_failed', `floatingAddress: ${a.floatingAddress} is a fixed address of appliance ${o.name} (${o.id})`, 'floatingAddress');
    if (o.floatingAddress && [a.managementAddress, ...a.streamingAddresses].includes(o.floatingAddress))
      throw new FarmError('validation_failed', `managementAddress: ${o.floatingAddress} is the floating address of appliance ${o.name} (${o.id})`, 'managementAddress');
  }
}

export const storeResource: ResourceSpec = {
  kind: 'store',
  path: '/stores',
  tag: 'Stores',
  schema: StoreSchema,
  input: StoreInputSchema,
  newId: idFor('store'),
  immutable: ['s3Prefix'],
  complete: (f) => ({ ...f, s3Prefix: f.s3Prefix ?? defaultS3Prefix(f.name as string) }),
};

export const vdiskResource: ResourceSpec = {
  kind: 'vdisk',
  path: '/vdisks',
  tag: 'vDisks',
  schema: VdiskSchema,
  input: VdiskInputSchema,
  newId: idFor('vdisk'),
  // Size and layout are fixed: every version's content is cut to them (resizing a vDisk is not supported yet).
  immutable: ['storeId', 'sectorSize', 'chunkSize', 'sizeBytes'],
  check: (f) => checkVdisk(f as VdiskInput),
  filters: {
    storeId: {
      schema: IdSchema,
      description: 'Only vDisks of this store',
      scope: async (storeId) => ({ query: { parent: { kind: 'store', id: storeId } }, siteId: null }),
    },
  },
};

export const collectionResource: ResourceSpec = {
  kind: 'collection',
  path: '/collections',
  tag: 'Collections',
  schema: CollectionSchema,
  input: CollectionInputSchema,
  newId: idFor('collection'),
  immutable: ['siteId'],
  check: (f) => checkCollection(f as CollectionInput),
  complete: async (f, repo) => {
    if (f.templateTargetMac) {
      const t = await repo.get('target', f.templateTargetMac as string);
      if (t && t.siteId !== f.siteId) throw new FarmError('validation_failed', `templateTargetMac: target ${t.id} belongs to another site`, 'templateTargetMac');
    }
    return f;
  },
  filters: { siteId: siteFilter('collections') },
  siteScope: (siteId) => ({ parent: { kind: 'site', id: siteId } }),
};

async function collectionSite(collectionId: string, repo: FarmRepo, field: string): Promise<string> {
  const col = await repo.get('collection', collectionId);
  if (!col) throw new FarmError('validation_failed', `${field}: collection ${collectionId} does not exist`, field);
  return col.siteId as string;
}

export const targetResource: ResourceSpec = {
  kind: 'target',
  path: '/targets',
  tag: 'Targets',
  schema: TargetSchema,
  input: TargetInputSchema,
  idParam: { name: 'mac', schema: MacSchema, example: '52:54:00:12:34:56' },
  newId: (f) => f.mac as string,
  immutable: ['mac'],
  // lastBoot is the appliances'; writeCacheResetAt is set only by POST /v1/targets/{mac}/write-cache/reset (routes/targets.ts).
  readOnly: { lastBoot: null, writeCacheResetAt: null },
  // A target's site is its collection's; moving it to another collection moves it with it.
  complete: async (f, repo) => ({ ...f, siteId: await collectionSite(f.collectionId as string, repo, 'collectionId') }),
  filters: {
    collectionId: {
      schema: IdSchema,
      description: 'Only targets of this collection',
      scope: async (collectionId, repo) => ({ query: { parent: { kind: 'collection', id: collectionId } }, siteId: await collectionSite(collectionId, repo, 'collectionId') }),
    },
    siteId: {
      schema: IdSchema,
      description: 'Only targets of this site',
      scope: async (siteId) => ({ query: { siteId }, siteId }),
    },
  },
  siteScope: (siteId) => ({ siteId }),
};

export const RESOURCES = [siteResource, applianceResource, storeResource, vdiskResource, collectionResource, targetResource];
