/**
 * Crash-safe file replacement: a reader sees the old file or the whole new
 * one, never a torn write, even after kill -9 or power loss.
 * (write temp -> fsync temp -> rename over -> fsync directory)
 */
import { randomBytes } from 'node:crypto';
import { open, rename, rm, readdir } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/** Temp files carry this prefix; `sweepTemp` removes leftovers of a crash. */
export const TEMP_PREFIX = '.tmp-';

export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export async function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o644): Promise<void> {
  const dir = dirname(path);
  const tmp = join(dir, `${TEMP_PREFIX}${basename(path)}.${randomBytes(6).toString('hex')}`);
  const fh = await open(tmp, 'wx', mode);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } catch (e) {
    await fh.close().catch(() => undefined);
    await rm(tmp, { force: true });
    throw e;
  }
  await fh.close();
  try {
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
  await fsyncDir(dir);
}

/** Removes temp files a crash left in `dir`; returns how many. */
export async function sweepTemp(dir: string): Promise<number> {
  let n = 0;
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    if (!name.startsWith(TEMP_PREFIX)) continue;
    await rm(join(dir, name), { force: true });
    n++;
  }
  return n;
}
