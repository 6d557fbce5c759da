/**
 * Auto-add (PVS: farm > Options > Auto-Add): an unknown MAC that PXE boots is
 * added to its site's default collection, with the settings of the
 * collection's template target. Pure, so the appliance (deciding offline, at
 * boot) and the control plane (applying the appliance's event) agree.
 */
import type { Collection } from './collection.js';
import type { FarmSettings } from './farm.js';
import type { Site } from './site.js';
import type { Target, TargetInput } from './target.js';

/** Why auto-add may not add a target in this site, or null when it may. */
export function autoAddRefusal(farm: Pick<FarmSettings, 'autoAdd'>, site: Pick<Site, 'id' | 'name' | 'defaultCollectionId'>): string | null {
  if (!farm.autoAdd.enabled) return 'auto-add is off for the farm';
  if (farm.autoAdd.siteId !== null && farm.autoAdd.siteId !== site.id) return `auto-add adds targets to site ${farm.autoAdd.siteId}, not to site ${site.name}`;
  if (!site.defaultCollectionId) return `site ${site.name} has no default collection for auto-added targets`;
  return null;
}

/** The new target: its MAC and name, everything else from the template target (or the defaults). */
export function autoAddTarget(mac: string, name: string, collection: Pick<Collection, 'id'>, template: Pick<Target, 'assignments' | 'type' | 'bootFrom' | 'writeCacheSizeMb' | 'personality'> | null): TargetInput {
  return {
    mac,
    name,
    collectionId: collection.id,
    description: 'added automatically at its first boot',
    assignments: template ? template.assignments.map((a) => ({ ...a })) : [],
    type: template?.type ?? 'production',
    bootFrom: template?.bootFrom ?? 'vdisk',
    writeCacheSizeMb: template?.writeCacheSizeMb ?? 0,
    personality: template ? template.personality.map((p) => ({ ...p })) : [],
    disabled: false,
  };
}
