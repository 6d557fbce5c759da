/**
 * meta.json of a write-cache overlay: which disk the overlay belongs to and
 * its geometry. Written once, atomically, as the last step of creating the
 * folder, so a folder with a meta.json has complete data and map files; one
 * without it is an unfinished creation and is made again from scratch.
 */
import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { writeFileAtomic } from '../fs-atomic.js';
import { OverlayCorrupt } from './errors.js';

export const META_FORMAT = 'bootfarm-write-cache/1';

export type Identity = Record<string, string | number>;

const MetaSchema = z.object({
  format: z.literal(META_FORMAT),
  sizeBytes: z.number().int().positive(),
  blockSize: z.number().int().positive(),
  identity: z.record(z.string(), z.union([z.string(), z.number()])),
  createdAt: z.string(),
});
export type OverlayMeta = z.infer<typeof MetaSchema>;

/** The folder's meta, or null when it has none (never finished creating). */
export async function readMeta(path: string): Promise<OverlayMeta | null> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new OverlayCorrupt(`${path} is not JSON`);
  }
  const parsed = MetaSchema.safeParse(json);
  if (!parsed.success) throw new OverlayCorrupt(`${path} is not a ${META_FORMAT} meta file: ${parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`);
  return parsed.data;
}

export async function writeMeta(path: string, meta: OverlayMeta): Promise<void> {
  await writeFileAtomic(path, `${JSON.stringify(meta, null, 2)}\n`, 0o600);
}

/** What differs between the stored meta and what the caller expects, one phrase each; empty when it matches. */
export function metaDifferences(meta: OverlayMeta, want: { sizeBytes: number; blockSize: number; identity: Identity }): string[] {
  const out: string[] = [];
  if (meta.sizeBytes !== want.sizeBytes) out.push(`sizeBytes is ${meta.sizeBytes}, expected ${want.sizeBytes}`);
  if (meta.blockSize !== want.blockSize) out.push(`blockSize is ${meta.blockSize}, expected ${want.blockSize}`);
  const keys = new Set([...Object.keys(meta.identity), ...Object.keys(want.identity)]);
  for (const key of [...keys].sort()) {
    const had = meta.identity[key];
    const wanted = want.identity[key];
    // Type matters: version 3 and version "3" are different identities.
    if (had !== wanted) out.push(`identity.${key} is ${JSON.stringify(had) ?? 'absent'}, expected ${JSON.stringify(wanted) ?? 'absent'}`);
  }
  return out;
}
