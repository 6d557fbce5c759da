/**
 * The kernel command line a Linux target boots with: the image's default
 * (console, init) and what its initramfs needs from the boot decision: where
 * the root vDisk streams from, the signed export name, how writes are kept,
 * and who the target is (PVS personality data). Pure.
 *
 * Every bootfarm parameter has a dot in its name: the kernel ignores unknown
 * `module.param` words, whereas an unknown plain `name=value` is handed to init
 * as an environment variable (32 at most, then the boot panics).
 * Personality values are admin input: they are percent-encoded (UTF-8, every
 * byte outside A-Z a-z 0-9 . _ ~ -), so nothing in them can end a word, start
 * an iPXE setting (`${`) or read as another parameter. The initramfs decodes them.
 */
import type { StreamMode, Vdisk } from '../../model/index.js';

/** x86's COMMAND_LINE_SIZE is 2048 bytes with the terminating NUL (arch/x86/include/asm/setup.h); iPXE truncates silently past it. */
export const KERNEL_CMDLINE_MAX = 2047;

export interface LinuxCmdlineInput {
  /** The image's default command line (boot header). */
  base: string;
  /** NBD servers as host:port, the one to use first first. */
  servers: readonly string[];
  exportName: string;
  mode: StreamMode;
  writeCacheType: Vdisk['writeCacheType'];
  /** The target's write cache limit (MiB, 0: none): sizes the RAM overlay of device-RAM caches. */
  writeCacheSizeMb: number;
  mac: string;
  hostname: string;
  personality: readonly { name: string; value: string }[];
  /** NBD request timeout: a request unanswered this long is sent again on the next connection. */
  requestTimeoutSeconds: number;
  /** How long I/O waits for a new connection before failing (the site's network recovery). */
  deadConnectionSeconds: number;
  /**
   * After a connection dies, how long to reconnect to the same server only: a floating address moves to a surviving
   * appliance within the site's peer timeout, and a target that stays on it goes home when the address is handed back.
   */
  staySeconds: number;
}

export type LinuxCmdline = { ok: true; cmdline: string } | { ok: false; message: string };

/** Percent-encoding of a value's UTF-8 bytes; only A-Z a-z 0-9 . _ ~ - stay as they are. */
export function encodeCmdlineValue(value: string): string {
  let out = '';
  for (const byte of Buffer.from(value, 'utf8')) {
    const c = String.fromCharCode(byte);
    out += /[A-Za-z0-9._~-]/.test(c) ? c : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

export function decodeCmdlineValue(encoded: string): string {
  return Buffer.from(encoded.replace(/%([0-9A-Fa-f]{2})|./gs, (m, hex: string | undefined) => (hex ? String.fromCharCode(parseInt(hex, 16)) : m)), 'latin1').toString('utf8');
}

/** Characters every word may hold: what the kernel, the initramfs's shell and an iPXE script line all take as part of one word. */
const WORD = /^[A-Za-z0-9._~%=:,/@+[\]-]+$/;

export function linuxCmdline(i: LinuxCmdlineInput): LinuxCmdline {
  const words = [
    `bootfarm.nbd=${i.servers.join(',')}`,
    `bootfarm.export=${i.exportName}`,
    `bootfarm.mode=${i.mode}`,
    `bootfarm.cache=${i.writeCacheType}`,
    `bootfarm.wcsize=${i.writeCacheSizeMb}`,
    `bootfarm.timeout=${i.requestTimeoutSeconds}`,
    `bootfarm.dead=${i.deadConnectionSeconds}`,
    `bootfarm.stay=${i.staySeconds}`,
    `bootfarm.mac=${i.mac.replace(/:/g, '-')}`,
    `bootfarm.hostname=${i.hostname}`,
  ];
  const bad = words.find((w) => !WORD.test(w));
  if (bad) return { ok: false, message: `a boot parameter cannot be carried on a kernel command line: ${bad.slice(0, 80)}` };
  for (const p of i.personality) {
    // Names are checked by the model (letters, digits, _ . -); checked again: this is where they become part of a word.
    if (!/^[A-Za-z0-9_.-]{1,64}$/.test(p.name)) return { ok: false, message: `personality name ${JSON.stringify(p.name.slice(0, 64))} cannot be carried on a kernel command line` };
    words.push(`bootfarm.p.${p.name}=${encodeCmdlineValue(p.value)}`);
  }
  const cmdline = [i.base.trim(), ...words].filter(Boolean).join(' ');
  const bytes = Buffer.byteLength(cmdline);
  if (bytes > KERNEL_CMDLINE_MAX) {
    const personalityBytes = i.personality.reduce((a, p) => a + ` bootfarm.p.${p.name}=${encodeCmdlineValue(p.value)}`.length, 0);
    return {
      ok: false,
      message:
        `the kernel command line for ${i.hostname} would be ${bytes} bytes, more than the kernel's ${KERNEL_CMDLINE_MAX}: ` +
        `its ${i.personality.length} personality strings take ${personalityBytes} (encoded); shorten them`,
    };
  }
  return { ok: true, cmdline };
}
