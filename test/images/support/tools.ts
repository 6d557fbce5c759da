/**
 * The real tools the image tests compare against: qemu-img / qemu-io (Debian
 * qemu-utils, installed by .ci/run) and, where installed, libvhdi's Python
 * binding (pyvhdi), the only reader here that follows differencing chains.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'vitest';
import type { DiskImage } from '../../../model/images/index.js';

const has = (cmd: string, args: string[]) => spawnSync(cmd, args, { stdio: 'ignore' }).status === 0;

export const hasQemu = has('qemu-img', ['--version']) && has('qemu-io', ['--version']);

export type QemuFormat = 'raw' | 'vpc' | 'vhdx';

export function qemuImg(...args: string[]): string {
  return execFileSync('qemu-img', args, { encoding: 'utf8' });
}

/** Runs qemu-io commands (e.g. `write -P 0xab 0 4k`, `write -z 1M 64k`) against one image. */
export function qemuIo(format: QemuFormat, file: string, commands: string[]): void {
  execFileSync('qemu-io', ['-f', format, ...commands.flatMap((c) => ['-c', c]), file], { stdio: 'pipe' });
}

/** What qemu reads as the image's virtual disk (`qemu-img convert -O raw`), format given explicitly. */
export function qemuRaw(format: QemuFormat, file: string): Buffer {
  const out = `${file}.qemu.raw`;
  qemuImg('convert', '-f', format, '-O', 'raw', file, out);
  try {
    return readFileSync(out);
  } finally {
    rmSync(out, { force: true });
  }
}

const PYVHDI_SCRIPT = `
import sys, pyvhdi
handles = []
for f in sys.argv[2:]:
    h = pyvhdi.file(); h.open(f)
    if handles: h.set_parent(handles[-1])
    handles.append(h)
top = handles[-1]; size = top.get_media_size(); off = 0
with open(sys.argv[1], 'wb') as out:
    while off < size:
        n = min(4 << 20, size - off); out.write(top.read_buffer_at_offset(n, off)); off += n
`;
const PYTHON = '/usr/bin/python3';
export const hasPyvhdi = has(PYTHON, ['-c', 'import pyvhdi']);

/** What libvhdi reads as the virtual disk of a base-first chain of VHD or VHDX files. */
export function pyvhdiRaw(files: string[]): Buffer {
  const out = `${files[files.length - 1]}.pyvhdi.raw`;
  execFileSync(PYTHON, ['-c', PYVHDI_SCRIPT, out, ...files], { stdio: 'pipe' });
  try {
    return readFileSync(out);
  } finally {
    rmSync(out, { force: true });
  }
}

export function tempDir(prefix: string): { dir: string; path: (name: string) => string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), `bootfarm-${prefix}-`));
  return { dir, path: (name) => join(dir, name), cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export const CHUNK = 4 * 2 ** 20;

/** Reads the whole image in 4 MiB chunks and compares each with `expected`, naming the first differing byte. */
export async function expectSameBytes(img: DiskImage, expected: Buffer): Promise<void> {
  expect(img.sizeBytes).toBe(expected.length);
  for (let offset = 0; offset < img.sizeBytes; offset += CHUNK) {
    const length = Math.min(CHUNK, img.sizeBytes - offset);
    const got = await img.read(offset, length);
    const want = expected.subarray(offset, offset + length);
    if (!got.equals(want)) {
      let i = 0;
      while (got[i] === want[i]) i++;
      expect.fail(`byte ${offset + i}: read 0x${got[i]!.toString(16)}, expected 0x${want[i]!.toString(16)}`);
    }
  }
}
