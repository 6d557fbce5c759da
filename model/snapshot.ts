/**
 * A site's config snapshot: everything an appliance needs to boot its site's
 * targets with the cloud gone (PVS "offline database support", always on).
 * The control plane signs it with the farm key that signs manifests; an
 * appliance verifies it before using it and keeps the last good one on disk.
 */
import { createHash, createPublicKey, verify as verifySignature } from 'node:crypto';
import { z } from 'zod';
import { ApplianceInputSchema } from './appliance.js';
import { CollectionSchema } from './collection.js';
import { IdSchema, systemFields } from './common.js';
import { FarmError } from './errors.js';
import { FarmSettingsFields } from './farm.js';
import { SIGNATURE_ALG, type SigningKey } from './manifest.js';
import { SiteSchema } from './site.js';
import { StoreSchema } from './store.js';
import { TargetSchema } from './target.js';
import { VdiskSchema, VersionSchema, selectVersion } from './vdisk.js';

export const SNAPSHOT_FORMAT = 'bootfarm.snapshot/1';

/** An appliance as its peers see it: configuration only (heartbeats and inventory travel on the LAN, issue 7). */
export const SnapshotApplianceSchema = ApplianceInputSchema.extend(systemFields);

export const SnapshotSchema = z
  .object({
    format: z.literal(SNAPSHOT_FORMAT),
    /** The farm revision the snapshot was read at (or after): it only grows. */
    revision: z.number().int().min(0),
    generatedAt: z.string(),
    siteId: IdSchema,
    farm: FarmSettingsFields,
    site: SiteSchema,
    appliances: z.array(SnapshotApplianceSchema),
    collections: z.array(CollectionSchema),
    targets: z.array(TargetSchema),
    /** vDisks assigned to at least one target of the site, with their stores and versions (merged ones left out). */
    vdisks: z.array(VdiskSchema),
    stores: z.array(StoreSchema),
    versions: z.array(VersionSchema),
    /** Shared by the site's appliances to authenticate each other on the LAN (peer chunk fetch). */
    peerSecret: z.string().min(32),
  })
  .strict();
export type Snapshot = z.infer<typeof SnapshotSchema>;

export const SignedSnapshotSchema = z
  .object({
    format: z.literal(SNAPSHOT_FORMAT),
    payload: z.string().meta({ description: 'base64 of the snapshot JSON bytes that were signed' }),
    alg: z.literal(SIGNATURE_ALG),
    keyId: z.string().regex(/^[0-9a-f]{16}$/),
    signature: z.string().meta({ description: 'base64 DER ECDSA P-256 signature over the payload bytes' }),
  })
  .strict()
  .meta({ id: 'SignedSnapshot' });
export type SignedSnapshot = z.infer<typeof SignedSnapshotSchema>;

export async function signSnapshot(snapshot: Snapshot, key: { keyId: string; sign(data: Buffer): Promise<Buffer> }): Promise<SignedSnapshot> {
  const payload = Buffer.from(JSON.stringify(snapshot));
  return { format: SNAPSHOT_FORMAT, payload: payload.toString('base64'), alg: SIGNATURE_ALG, keyId: key.keyId, signature: (await key.sign(payload)).toString('base64') };
}

/**
 * Signature first, then parse: bytes that were not signed by a farm key never
 * reach the schema, let alone the boot path. Every refusal says why.
 */
export function verifySnapshot(raw: unknown, keys: readonly SigningKey[]): Snapshot {
  const env = SignedSnapshotSchema.safeParse(raw);
  if (!env.success) throw new FarmError('bad_request', `snapshot: not a signed bootfarm snapshot (${env.error.issues[0]?.path.join('.') || 'envelope'}: ${env.error.issues[0]?.message})`);
  const key = keys.find((k) => k.keyId === env.data.keyId);
  if (!key) throw new FarmError('forbidden', `snapshot: signed with unknown key ${env.data.keyId} (known: ${keys.map((k) => k.keyId).join(', ') || 'none'})`);
  const payload = Buffer.from(env.data.payload, 'base64');
  const ok = verifySignature('sha256', payload, { key: createPublicKey(key.publicKeyPem), dsaEncoding: 'der' }, Buffer.from(env.data.signature, 'base64'));
  if (!ok) throw new FarmError('forbidden', 'snapshot: signature does not match its content (tampered or corrupt)');
  let json: unknown;
  try {
    json = JSON.parse(payload.toString('utf8'));
  } catch {
    throw new FarmError('bad_request', 'snapshot: signed payload is not JSON');
  }
  const s = SnapshotSchema.safeParse(json);
  if (!s.success) throw new FarmError('bad_request', `snapshot: ${s.error.issues[0]?.path.join('.')}: ${s.error.issues[0]?.message}`);
  return s.data;
}

/** The ETag of a site's snapshot: it changes exactly when the farm revision does. */
export const snapshotEtag = (siteId: string, revision: number) => `"${siteId}.r${revision}"`;

export interface NeededVersion {
  vdiskId: string;
  number: number;
  storeId: string;
  contentHash: string;
  /** Targets of the site that boot this version now. */
  targets: number;
}

/**
 * The versions a site's appliances must hold: for every target of the site
 * and every vDisk assigned to it, the version its type selects (production,
 * test, maintenance). Versions without content are skipped. Sorted by vDisk
 * then number, so every appliance of a site syncs in the same order.
 */
export function neededVersions(s: Pick<Snapshot, 'targets' | 'vdisks' | 'versions'>): NeededVersion[] {
  const vdisks = new Map(s.vdisks.map((v) => [v.id, v]));
  const byVdisk = new Map<string, Snapshot['versions']>();
  for (const v of s.versions) {
    if (v.state === 'merged' || !v.contentHash || !v.manifest) continue;
    byVdisk.set(v.vdiskId, [...(byVdisk.get(v.vdiskId) ?? []), v]);
  }
  const out = new Map<string, NeededVersion>();
  for (const t of s.targets) {
    for (const a of t.assignments) {
      const vd = vdisks.get(a.vdiskId);
      const chosen = vd ? selectVersion(byVdisk.get(a.vdiskId) ?? [], t.type) : null;
      if (!vd || !chosen) continue;
      const key = `${chosen.vdiskId}.${chosen.number}`;
      const cur = out.get(key);
      if (cur) cur.targets++;
      else out.set(key, { vdiskId: chosen.vdiskId, number: chosen.number, storeId: vd.storeId, contentHash: chosen.contentHash!, targets: 1 });
    }
  }
  return [...out.values()].sort((a, b) => (a.vdiskId < b.vdiskId ? -1 : a.vdiskId > b.vdiskId ? 1 : a.number - b.number));
}

/** A short digest of an inventory for heartbeats: peers and the cloud compare it instead of the whole list. */
export function inventoryDigest(entries: readonly { vdiskId: string; number: number; contentHash: string; state: string }[]): string {
  const lines = entries.map((e) => `${e.vdiskId}.${e.number}.${e.contentHash}.${e.state}`).sort();
  return createHash('sha256').update(lines.join('\n')).digest('hex').slice(0, 16);
}
