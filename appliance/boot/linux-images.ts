/**
 * Which held versions are Linux vDisks (kernel and initramfs in a boot area,
 * model/linux-boot.ts), read from the verified cache through the same reader
 * the HTTP disk uses. Parsed once per version content and kept: a boot script
 * asks on every boot, the kernel route on every download.
 *
 * A version whose boot area is malformed (bad checksum, files past the disk,
 * kernel bytes that do not match their SHA-256) is not a Linux vDisk: logged
 * once with the reason, never thrown at a caller.
 */
import { createHash } from 'node:crypto';
import { BOOT_HEADER_SIZE, LinuxBootError, bootAreaOffset, decodeBootHeader, type BootHeader } from '../../model/linux-boot.js';
import type { VdiskCache, VdiskReader } from '../cache/vdisk-cache.js';
import type { LogFn } from '../log.js';

export type LinuxImage = BootHeader;

export interface LinuxImages {
  /** The version's boot header when it is a Linux vDisk held verified here; null otherwise (not held, not Linux, malformed). */
  image(vdiskId: string, version: number): Promise<LinuxImage | null>;
  /** What `image` found last for a version of this content, without reading: undefined when not parsed yet. */
  cached(vdiskId: string, version: number): LinuxImage | null | undefined;
}

/** Parses kept (a version's content never changes; versions are few). */
const MAX_ENTRIES = 512;
const PIECE = 4 * 1024 * 1024;

export function linuxImages(deps: { cache: VdiskCache; log: LogFn }): LinuxImages {
  // By content hash: two versions with the same bytes share a parse; a version re-pushed with other bytes does not.
  const byContent = new Map<string, Promise<LinuxImage | null>>();
  const settled = new Map<string, LinuxImage | null>();
  const contentOf = new Map<string, string>();

  async function parse(reader: VdiskReader): Promise<LinuxImage | null> {
    const what = { vdiskId: reader.vdiskId, version: reader.number };
    try {
      if (reader.sizeBytes < 512) return null;
      const at = bootAreaOffset(await reader.read(0, 512), reader.sectorSize, reader.sizeBytes);
      if (at === null) return null;
      if (at + BOOT_HEADER_SIZE > reader.sizeBytes) throw new LinuxBootError('the boot header would end past the end of the disk');
      const header = decodeBootHeader(await reader.read(at, BOOT_HEADER_SIZE), { headerOffset: at, diskSize: reader.sizeBytes });
      if (!header) return null;
      // The bytes are verified chunks already; this checks that the header describes them (a builder bug, a hand-edited disk).
      for (const [name, f] of [['kernel', header.kernel], ['initrd', header.initrd]] as const) {
        const h = createHash('sha256');
        for (let off = 0; off < f.size; off += PIECE) h.update(await reader.read(f.offset + off, Math.min(PIECE, f.size - off)));
        if (h.digest('hex') !== f.sha256) throw new LinuxBootError(`the ${name}'s bytes do not match the SHA-256 in the boot header`);
      }
      deps.log('info', 'Linux vDisk: kernel and initrd in its boot area', { ...what, kernelBytes: header.kernel.size, initrdBytes: header.initrd.size });
      return header;
    } catch (e) {
      if (!(e instanceof LinuxBootError)) throw e;
      deps.log('warn', 'vDisk version has a malformed Linux boot area: it boots as a plain disk', { ...what, reason: e.message });
      return null;
    }
  }

  return {
    async image(vdiskId, version) {
      let reader: VdiskReader;
      try {
        reader = deps.cache.open(vdiskId, version);
      } catch {
        return null; // not held verified (yet): nothing to say about it
      }
      const key = reader.contentHash;
      contentOf.set(`${vdiskId}/${version}`, key);
      let p = byContent.get(key);
      if (!p) {
        p = parse(reader)
          .catch((e: Error) => {
            // A read that failed (a chunk gone under us): not remembered, the next boot asks again.
            deps.log('warn', 'Linux boot area could not be read', { vdiskId, version, reason: e.message });
            byContent.delete(key);
            return null;
          })
          .then((r) => {
            if (byContent.get(key) === p) settled.set(key, r);
            return r;
          });
        byContent.set(key, p);
        if (byContent.size > MAX_ENTRIES) {
          const oldest = byContent.keys().next().value as string;
          byContent.delete(oldest);
          settled.delete(oldest);
        }
        p.finally(() => reader.close());
      } else reader.close();
      return p;
    },
    cached(vdiskId, version) {
      const key = contentOf.get(`${vdiskId}/${version}`);
      return key === undefined ? undefined : settled.get(key);
    },
  };
}
