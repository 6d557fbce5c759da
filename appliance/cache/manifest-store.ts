/**
 * Signed manifests on disk: `<root>/<vdiskId>/<number>.json`, the signed
 * envelope exactly as the control plane served it. The signature is checked
 * again at every load, so a file changed on disk is refused, not believed.
 */
import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { IdSchema } from '../../model/common.js';
import { FarmError } from '../../model/errors.js';
import { SignedManifestSchema, verifyManifest, type Manifest, type SignedManifest, type SigningKey } from '../../model/manifest.js';
import { fsyncDir, sweepTemp, writeFileAtomic } from '../fs-atomic.js';
import { errorMessage, type CacheLog } from './chunk-source.js';

export interface VersionRef {
  vdiskId: string;
  number: number;
}

export type ManifestLoad =
  | { ok: true; manifest: Manifest }
  | { ok: false; reason: 'absent' }
  /** Signed by a key this appliance does not know (yet): kept on disk, not used. */
  | { ok: false; reason: 'unknown_key'; keyId: string }
  /** Failed verification: deleted. */
  | { ok: false; reason: 'refused'; message: string };

export interface ManifestStore {
  /** Versions with a manifest file (not yet verified). */
  list(): Promise<VersionRef[]>;
  load(ref: VersionRef, keys: readonly SigningKey[]): Promise<ManifestLoad>;
  save(ref: VersionRef, signed: SignedManifest): Promise<void>;
  remove(ref: VersionRef): Promise<void>;
}

const FILE = /^(0|[1-9][0-9]{0,9})\.json$/;

export async function openManifestStore(root: string, log: CacheLog): Promise<{ store: ManifestStore; tempSwept: number }> {
  await mkdir(root, { recursive: true });
  let tempSwept = await sweepTemp(root);
  for (const sub of await readdir(root)) if (IdSchema.safeParse(sub).success) tempSwept += await sweepTemp(join(root, sub));

  const dirOf = (vdiskId: string) => {
    // vDisk ids name directories: only the id shape may (no traversal).
    if (!IdSchema.safeParse(vdiskId).success) throw new FarmError('bad_request', `not a vDisk id: ${JSON.stringify(vdiskId)}`);
    return join(root, vdiskId);
  };
  const pathOf = (ref: VersionRef) => {
    if (!Number.isSafeInteger(ref.number) || ref.number < 0) throw new FarmError('bad_request', `not a version number: ${ref.number}`);
    return join(dirOf(ref.vdiskId), `${ref.number}.json`);
  };

  const store: ManifestStore = {
    async list() {
      const out: VersionRef[] = [];
      for (const vdiskId of await readdir(root)) {
        if (!IdSchema.safeParse(vdiskId).success) continue;
        for (const name of await readdir(join(root, vdiskId)).catch(() => [] as string[])) {
          const m = FILE.exec(name);
          if (m) out.push({ vdiskId, number: Number(m[1]) });
        }
      }
      return out;
    },
    async load(ref, keys) {
      const path = pathOf(ref);
      let text: string;
      try {
        text = await readFile(path, 'utf8');
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { ok: false, reason: 'absent' };
        throw e;
      }
      const refuse = async (message: string): Promise<ManifestLoad> => {
        log('error', 'manifest on disk failed verification: deleted', { ...ref, path, error: message });
        await rm(path, { force: true });
        return { ok: false, reason: 'refused', message };
      };
      let raw: unknown;
      try {
        raw = JSON.parse(text);
      } catch {
        return refuse('not JSON');
      }
      // A key the appliance does not know yet (key rotation, keys not loaded) says nothing
      // about the file: keep it for when the key arrives rather than throw a good cache away.
      const env = SignedManifestSchema.safeParse(raw);
      if (env.success && !keys.some((k) => k.keyId === env.data.keyId)) {
        log('warn', 'manifest on disk signed with an unknown key: kept, not used', { ...ref, keyId: env.data.keyId });
        return { ok: false, reason: 'unknown_key', keyId: env.data.keyId };
      }
      try {
        const manifest = verifyManifest(raw, [...keys]);
        if (manifest.vdiskId !== ref.vdiskId || manifest.version !== ref.number)
          return refuse(`signed for ${manifest.vdiskId} version ${manifest.version}, stored as ${ref.vdiskId} version ${ref.number}`);
        return { ok: true, manifest };
      } catch (e) {
        return refuse(errorMessage(e));
      }
    },
    async save(ref, signed) {
      const dir = dirOf(ref.vdiskId);
      const path = pathOf(ref);
      // A new vDisk directory's entry must survive a crash too, or the manifest inside it would not.
      if (await mkdir(dir, { recursive: true })) await fsyncDir(root);
      await writeFileAtomic(path, JSON.stringify(SignedManifestSchema.parse(signed)));
    },
    async remove(ref) {
      await rm(pathOf(ref), { force: true });
      // The manifest goes first and must stay gone: a crash after this leaves only orphan chunks, collected at open.
      await fsyncDir(dirOf(ref.vdiskId));
    },
  };
  return { store, tempSwept };
}
