/**
 * From an untrusted TFTP filename to a file inside the served root, or a
 * TFTP error. Nothing outside the root is ever opened:
 *
 * - The name must be UTF-8 without NUL, control characters or backslashes.
 *   (Backslashes are refused, not mapped: `a\..\b` would mean something else
 *   to a Windows-minded client than to this server.)
 * - Leading slashes are dropped: PXE clients send `/snponly.efi` when DHCP
 *   option 67 (or `filename`) has one. The name is then relative to the root,
 *   as with `in.tftpd -s`, so `/etc/passwd` means `<root>/etc/passwd`, never
 *   the host's file.
 * - Any `..` segment is refused, even one that would stay inside the root.
 * - The joined path is resolved with realpath (every symlink followed) and
 *   must still be inside the real root, or inside one of `symlinkTargets`:
 *   directories an admin lets symlinks in the root point to. Debian's
 *   /usr/lib/ipxe/ipxe.efi is a symlink to /boot/ipxe.efi, so serving that
 *   folder as is needs `symlinkTargets: ['/boot']`.
 * - Only regular files are served.
 */
import { realpath } from 'node:fs/promises';
import { isAbsolute, join, sep } from 'node:path';
import { TFTP_ERROR_CODES } from './codec.js';

export type ResolvedPath = { ok: true; path: string; name: string } | { ok: false; code: number; message: string };

const utf8 = new TextDecoder('utf-8', { fatal: true });

function refuse(message: string): ResolvedPath {
  return { ok: false, code: TFTP_ERROR_CODES.ACCESS_VIOLATION, message };
}

/**
 * Checks the name alone (no file system): the relative path to look up, or a refusal.
 * `wire` is the filename as the codec decoded it (one character per byte).
 */
export function checkTftpName(wire: string): { ok: true; relative: string } | { ok: false; message: string } {
  let name: string;
  try {
    name = utf8.decode(Buffer.from(wire, 'latin1'));
  } catch {
    return { ok: false, message: 'file name is not UTF-8' };
  }
  if (/[\u0000-\u001f\u007f]/.test(name)) return { ok: false, message: 'control character in file name' };
  if (name.includes('\\')) return { ok: false, message: 'backslash in file name' };
  const segments = name.replace(/^\/+/, '').split('/');
  if (segments.includes('..')) return { ok: false, message: '".." in file name' };
  const relative = segments.filter((s) => s !== '' && s !== '.').join('/');
  if (relative === '') return { ok: false, message: 'empty file name' };
  return { ok: true, relative };
}

function inside(path: string, dir: string): boolean {
  return path === dir || path.startsWith(dir.endsWith(sep) ? dir : dir + sep);
}

/** `root` and `symlinkTargets` must be absolute; they are resolved here too (the root itself may be a symlink). */
export async function resolveTftpPath(root: string, wire: string, symlinkTargets: readonly string[] = []): Promise<ResolvedPath> {
  const checked = checkTftpName(wire);
  if (!checked.ok) return refuse(checked.message);
  if (!isAbsolute(root)) return { ok: false, code: TFTP_ERROR_CODES.NOT_DEFINED, message: 'server root is not an absolute path' };
  let realRoot: string;
  try {
    realRoot = await realpath(root);
  } catch {
    return { ok: false, code: TFTP_ERROR_CODES.FILE_NOT_FOUND, message: 'server root is missing' };
  }
  let real: string;
  try {
    real = await realpath(join(realRoot, checked.relative));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EACCES' || code === 'EPERM') return refuse('permission denied');
    // ENOENT, ENOTDIR, ELOOP (a symlink loop), ENAMETOOLONG: nothing to serve.
    return { ok: false, code: TFTP_ERROR_CODES.FILE_NOT_FOUND, message: 'file not found' };
  }
  if (inside(real, realRoot)) return { ok: true, path: real, name: checked.relative };
  for (const t of symlinkTargets) {
    if (!isAbsolute(t)) continue;
    const realTarget = await realpath(t).catch(() => null);
    if (realTarget && inside(real, realTarget)) return { ok: true, path: real, name: checked.relative };
  }
  return refuse('file is outside the served folder');
}
