/**
 * How a running target's writes are kept (PVS write cache types), decided at
 * boot and fixed for the life of that boot: a target whose vDisk properties
 * change keeps what it booted with until it boots again (PVS refuses such a
 * change while the vDisk is in use; bootfarm pins it in the export name).
 */
import type { TargetType, Vdisk, VersionState } from './vdisk.js';

/**
 * - `read-only`: device RAM / device RAM with overflow (PVS 3 and 9): the
 *   target keeps its own writes (an overlay in its initramfs); the appliance
 *   serves the version read-only.
 * - `appliance-temporary`: PVS 1, cache on server: a copy-on-write overlay per
 *   target on the appliance, thrown away when the target boots again.
 * - `appliance-persistent`: PVS 7: the same overlay kept across boots, until
 *   an administrator resets it or the target boots other content.
 * - `image`: the target writes the version itself (PVS 0, private image; and a
 *   maintenance target on the maintenance version): one target at a time.
 */
export const STREAM_MODES = ['read-only', 'appliance-temporary', 'appliance-persistent', 'image'] as const;
export type StreamMode = (typeof STREAM_MODES)[number];

export function streamMode(vdisk: Pick<Vdisk, 'accessMode' | 'writeCacheType'>, targetType: TargetType, versionState: VersionState): StreamMode {
  if (vdisk.accessMode === 'private') return 'image';
  if (targetType === 'maintenance' && versionState === 'maintenance') return 'image';
  switch (vdisk.writeCacheType) {
    case 'appliance-temporary':
      return 'appliance-temporary';
    case 'appliance-persistent':
      return 'appliance-persistent';
    case 'device-ram':
    case 'device-ram-overflow':
      return 'read-only';
  }
}

/** Bytes a target's appliance-side overlay may hold: its own limit, else none but the disk's size (null). */
export function writeCacheLimitBytes(target: { writeCacheSizeMb: number }): number | null {
  return target.writeCacheSizeMb > 0 ? target.writeCacheSizeMb * 1024 * 1024 : null;
}
