export { isChunkHash, silentLog, type CacheLog, type CacheLogLevel, type ChunkOwner, type ChunkSource, type ChunkWant } from './chunk-source.js';
export { bearerMatches, peerRoutes, peerSource, type ChunkReader, type PeerSecret, type PeerSourceOptions } from './peer-source.js';
export { presignedSource, type PresignedSourceOptions } from './presigned-source.js';
export { planStore, type PlannedVersion, type RefusedForQuota, type StorePlan } from './quota-plan.js';
export {
  openVdiskCache,
  type CacheStatus,
  type NeededVersionInput,
  type OpenVdiskCacheOptions,
  type VdiskCache,
  type VdiskReader,
} from './vdisk-cache.js';
