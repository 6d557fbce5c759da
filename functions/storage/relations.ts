/**
 * How farm objects point at each other. The storage layer turns this into
 * database-enforced integrity: every reference is a conditional counter update
 * on the referenced item inside the same transaction as the change, and a
 * delete is conditional on those counters being zero. No read-then-write race
 * can assign a deleted vDisk or delete an assigned one.
 */
import type { ObjectKind } from '../../model/index.js';

export type StoredKind = Exclude<ObjectKind, 'token' | 'audit'>;
type Obj = Record<string, unknown>;

export interface Ref {
  kind: StoredKind;
  id: string;
  /** Request field that holds the reference, for error messages. */
  field: string;
}

export interface Unique {
  /** Uniqueness scope, e.g. "vdisk-name:<storeId>". */
  scope: string;
  value: string;
  field: string;
  /** Human phrase for the error: 'a site named "x"'. */
  what: string;
}

export interface Relations {
  kind: StoredKind;
  /** Short id prefix: site_…, app_…. */
  idPrefix: string;
  uniques(o: Obj): Unique[];
  refs(o: Obj): Ref[];
  /** Kinds whose references block deleting an object of this kind (tokens: a site-scoped token blocks its site). */
  referencedBy: (StoredKind | 'token')[];
  /** Children deleted together with the object. */
  cascade?: StoredKind;
  /** List scope (GSI1): the parent whose children this object is listed under. */
  parent(o: Obj): { kind: StoredKind; id: string } | null;
  /** Site scope (GSI2), for kinds whose parent is not the site itself. */
  site?(o: Obj): string;
  sortKey(o: Obj): string;
}

const s = (o: Obj, k: string) => o[k] as string;
const lower = (v: unknown) => String(v).toLowerCase();

export const RELATIONS: Record<StoredKind, Relations> = {
  farm: {
    kind: 'farm',
    idPrefix: 'farm',
    uniques: () => [],
    refs: (o) => {
      const siteId = (o.autoAdd as { siteId: string | null } | undefined)?.siteId;
      return siteId ? [{ kind: 'site', id: siteId, field: 'autoAdd.siteId' }] : [];
    },
    referencedBy: [],
    parent: () => null,
    sortKey: () => 'farm',
  },
  site: {
    kind: 'site',
    idPrefix: 'site',
    uniques: (o) => [{ scope: 'site-name', value: lower(o.name), field: 'name', what: `a site named "${s(o, 'name')}"` }],
    refs: (o) => (o.defaultCollectionId ? [{ kind: 'collection', id: s(o, 'defaultCollectionId'), field: 'defaultCollectionId' }] : []),
    referencedBy: ['appliance', 'collection', 'farm', 'token'],
    parent: () => null,
    sortKey: (o) => lower(o.name),
  },
  appliance: {
    kind: 'appliance',
    idPrefix: 'app',
    uniques: (o) => [{ scope: 'appliance-name', value: lower(o.name), field: 'name', what: `an appliance named "${s(o, 'name')}"` }],
    refs: (o) => [{ kind: 'site', id: s(o, 'siteId'), field: 'siteId' }],
    // An enrolled appliance's credential: revoke it (bootfarm token revoke) before deleting the appliance.
    referencedBy: ['vdisk', 'token'],
    parent: (o) => ({ kind: 'site', id: s(o, 'siteId') }),
    sortKey: (o) => lower(o.name),
  },
  store: {
    kind: 'store',
    idPrefix: 'st',
    uniques: (o) => [
      { scope: 'store-name', value: lower(o.name), field: 'name', what: `a store named "${s(o, 'name')}"` },
      { scope: 'store-prefix', value: s(o, 's3Prefix'), field: 's3Prefix', what: `a store with S3 prefix "${s(o, 's3Prefix')}"` },
    ],
    refs: () => [],
    referencedBy: ['vdisk'],
    parent: () => null,
    sortKey: (o) => lower(o.name),
  },
  vdisk: {
    kind: 'vdisk',
    idPrefix: 'vd',
    uniques: (o) => [{ scope: `vdisk-name:${s(o, 'storeId')}`, value: lower(o.name), field: 'name', what: `a vDisk named "${s(o, 'name')}" in this store` }],
    refs: (o) => {
      const refs: Ref[] = [{ kind: 'store', id: s(o, 'storeId'), field: 'storeId' }];
      const fixed = (o.loadBalancing as { applianceId: string | null } | undefined)?.applianceId;
      if (fixed) refs.push({ kind: 'appliance', id: fixed, field: 'loadBalancing.applianceId' });
      return refs;
    },
    referencedBy: ['target', 'version'],
    cascade: 'version',
    parent: (o) => ({ kind: 'store', id: s(o, 'storeId') }),
    sortKey: (o) => lower(o.name),
  },
  version: {
    kind: 'version',
    idPrefix: 'ver',
    uniques: () => [],
    refs: (o) => [{ kind: 'vdisk', id: s(o, 'vdiskId'), field: 'vdiskId' }],
    referencedBy: [],
    parent: (o) => ({ kind: 'vdisk', id: s(o, 'vdiskId') }),
    sortKey: (o) => String(o.number).padStart(6, '0'),
  },
  collection: {
    kind: 'collection',
    idPrefix: 'col',
    uniques: (o) => [{ scope: `collection-name:${s(o, 'siteId')}`, value: lower(o.name), field: 'name', what: `a collection named "${s(o, 'name')}" in this site` }],
    refs: (o) => {
      const refs: Ref[] = [{ kind: 'site', id: s(o, 'siteId'), field: 'siteId' }];
      if (o.templateTargetMac) refs.push({ kind: 'target', id: s(o, 'templateTargetMac'), field: 'templateTargetMac' });
      return refs;
    },
    referencedBy: ['target', 'site'],
    parent: (o) => ({ kind: 'site', id: s(o, 'siteId') }),
    sortKey: (o) => lower(o.name),
  },
  target: {
    kind: 'target',
    idPrefix: 'tgt',
    uniques: (o) => [{ scope: 'target-name', value: lower(o.name), field: 'name', what: `a target named "${s(o, 'name')}"` }],
    refs: (o) => [
      { kind: 'collection', id: s(o, 'collectionId'), field: 'collectionId' },
      ...((o.assignments as { vdiskId: string }[] | undefined) ?? []).map((a, i) => ({ kind: 'vdisk' as const, id: a.vdiskId, field: `assignments.${i}.vdiskId` })),
    ],
    referencedBy: ['collection'],
    parent: (o) => ({ kind: 'collection', id: s(o, 'collectionId') }),
    site: (o) => s(o, 'siteId'),
    sortKey: (o) => lower(o.name),
  },
};

/** Human names for error messages. */
export const KIND_LABEL: Record<StoredKind | 'token', [singular: string, plural: string]> = {
  token: ['token', 'tokens'],
  farm: ['farm', 'farm settings'],
  site: ['site', 'sites'],
  appliance: ['appliance', 'appliances'],
  store: ['store', 'stores'],
  vdisk: ['vDisk', 'vDisks'],
  version: ['version', 'versions'],
  collection: ['collection', 'collections'],
  target: ['target', 'targets'],
};

/** The site an object belongs to; null for farm-wide objects (the permission scope of site tokens). */
export function siteOf(kind: StoredKind, o: Record<string, unknown>): string | null {
  if (kind === 'site') return o.id as string;
  if (kind === 'appliance' || kind === 'collection' || kind === 'target') return o.siteId as string;
  return null;
}
