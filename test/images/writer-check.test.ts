/**
 * The differencing tests trust the test writer, so its files are checked here
 * against readers that are not ours: qemu-img for what qemu reads (VHDX
 * without a parent, 512-byte sectors), and libvhdi's pyvhdi for chains and
 * 4096-byte sectors, which qemu refuses. Skipped only when the tool is missing.
 *
 * Two libvhdi 20210425 (Debian 12) divergences from the specs are kept out
 * of these cases on purpose: it treats the rest of a VHD sector-bitmap byte
 * after a set bit as present, and reads a VHDX PAYLOAD_BLOCK_ZERO block of a
 * differencing file from the parent ([MS-VHDX] 2.5.1.1: "MUST return zeros").
 */
import { afterAll, describe, expect, it } from 'vitest';
import { openImage } from '../../model/images/index.js';
import { applyWrite, newLayer, type Write } from './support/content.js';
import { expectSameBytes, hasPyvhdi, hasQemu, pyvhdiRaw, qemuImg, qemuIo, qemuRaw, tempDir } from './support/tools.js';
import { writeVhdDifferencing, writeVhdx, type LayerContent } from './support/writers.js';

const MiB = 2 ** 20;
const tmp = tempDir('images-writer');
afterAll(() => tmp.cleanup());

/** Writes whose present-sector runs start and end on 4 KiB boundaries (see the libvhdi note above). */
const ALIGNED: Write[] = [
  { offset: 0, length: 8192, pattern: 0x61 },
  { offset: 2 * MiB - 4096, length: 12288, pattern: 0x62 },
  { offset: 6 * MiB, length: 2 * MiB, pattern: 0x63 },
  { offset: 9 * MiB + 4096, length: 3 * 4096, pattern: 0x64 },
  { offset: 33 * MiB, length: 4096, pattern: 0x65 },
];

async function ours(files: string[], layer: LayerContent) {
  const img = await openImage(files);
  try {
    expect(img.logicalSectorSize).toBe(layer.logicalSectorSize);
    await expectSameBytes(img, layer.content);
  } finally {
    await img.close();
  }
}

describe.skipIf(!hasQemu)('the test writer, read by qemu-img', () => {
  for (const blockSize of [MiB, 32 * MiB]) {
    it(`writes a dynamic VHDX (${blockSize / MiB} MiB blocks) that qemu reads as the model says`, async () => {
      const layer = newLayer(undefined, 96 * MiB, blockSize);
      [...ALIGNED, { offset: 50 * MiB + 3, length: 1000, pattern: 0x66 }].forEach((w) => applyWrite(layer, w, { zeroBlocks: false }));
      const file = tmp.path(`writer-${blockSize}.vhdx`);
      writeVhdx(file, layer, { seed: blockSize });
      expect(qemuRaw('vhdx', file).equals(layer.content)).toBe(true);
      await ours([file], layer);
    });
  }

  it('writes VHD differencing disks that qemu opens only as standalone disks (it ignores the parent)', () => {
    const base = tmp.path('qemu-diff-base.vhd');
    qemuImg('create', '-q', '-f', 'vpc', base, '16M');
    qemuIo('vpc', base, ['write -P 0x71 0 1M']);
    const raw = qemuRaw('vpc', base);
    const layer = newLayer(raw, raw.length, 2 * MiB);
    applyWrite(layer, { offset: 4096, length: 4096, pattern: 0x72 }, { zeroBlocks: false });
    const child = tmp.path('qemu-diff-child.vhd');
    writeVhdDifferencing(child, base, layer, 31);
    const seen = qemuRaw('vpc', child);
    expect(seen.subarray(4096, 8192).every((b) => b === 0x72)).toBe(true);
    expect(seen.subarray(0, 4096).every((b) => b === 0x71)).toBe(false); // the base's data is not there
  });
});

describe.skipIf(!hasQemu || !hasPyvhdi)('the test writer, read by libvhdi (pyvhdi)', () => {
  it('VHD: a three-level chain reads the same in libvhdi, the model and our reader', async () => {
    const base = tmp.path('lv-base.vhd');
    qemuImg('create', '-q', '-f', 'vpc', '-o', 'subformat=dynamic', base, '64M');
    qemuIo('vpc', base, ['write -P 0x11 0 3M', 'write -P 0x12 40M 64k']);
    const raw = qemuRaw('vpc', base);
    const c1 = newLayer(raw, raw.length, 2 * MiB);
    ALIGNED.forEach((w) => applyWrite(c1, w, { zeroBlocks: false }));
    writeVhdDifferencing(tmp.path('lv-1.vhd'), base, c1, 41);
    const c2 = newLayer(c1.content, c1.sizeBytes, 2 * MiB);
    applyWrite(c2, { offset: 8192, length: 4096, pattern: 0x77 }, { zeroBlocks: false });
    applyWrite(c2, { offset: 40 * MiB, length: 4096, zero: true }, { zeroBlocks: false });
    writeVhdDifferencing(tmp.path('lv-2.vhd'), tmp.path('lv-1.vhd'), c2, 42);
    const files = [base, tmp.path('lv-1.vhd'), tmp.path('lv-2.vhd')];
    expect(pyvhdiRaw(files).equals(c2.content)).toBe(true);
    await ours(files, c2);
  });

  it('VHDX: a three-level chain with partially present blocks reads the same in libvhdi, the model and our reader', async () => {
    const base = tmp.path('lv-base.vhdx');
    qemuImg('create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', base, '64M');
    qemuIo('vhdx', base, ['write -P 0x11 0 3M', 'write -P 0x12 40M 64k']);
    const raw = qemuRaw('vhdx', base);
    const c1 = newLayer(raw, raw.length, MiB);
    [...ALIGNED, { offset: 12345, length: 999, pattern: 0x68 }].forEach((w) => applyWrite(c1, w, { zeroBlocks: false }));
    writeVhdx(tmp.path('lv-1.avhdx'), c1, { parentPath: base, seed: 51 });
    const c2 = newLayer(c1.content, raw.length, MiB);
    applyWrite(c2, { offset: 40 * MiB + 1, length: 1, pattern: 0x78 }, { zeroBlocks: false });
    writeVhdx(tmp.path('lv-2.avhdx'), c2, { parentPath: tmp.path('lv-1.avhdx'), seed: 52 });
    const files = [base, tmp.path('lv-1.avhdx'), tmp.path('lv-2.avhdx')];
    expect(pyvhdiRaw(files).equals(c2.content)).toBe(true);
    await ours(files, c2);
  });

  it('VHDX with 4096-byte logical sectors (chunk ratio 32768 at 1 MiB blocks): base and child read the same in libvhdi and our reader', async () => {
    const base = newLayer(undefined, 64 * MiB, MiB, 4096);
    ALIGNED.forEach((w) => applyWrite(base, w, { zeroBlocks: false }));
    writeVhdx(tmp.path('4k-base.vhdx'), base, { seed: 61 });
    const child = newLayer(base.content, 64 * MiB, MiB, 4096);
    applyWrite(child, { offset: 5000, length: 100, pattern: 0x79 }, { zeroBlocks: false }); // one 4 KiB sector, read-modify-write
    applyWrite(child, { offset: 33 * MiB + 8192, length: 8192, pattern: 0x7a }, { zeroBlocks: false });
    writeVhdx(tmp.path('4k-child.avhdx'), child, { parentPath: tmp.path('4k-base.vhdx'), seed: 62 });
    expect(pyvhdiRaw([tmp.path('4k-base.vhdx')]).equals(base.content)).toBe(true);
    expect(pyvhdiRaw([tmp.path('4k-base.vhdx'), tmp.path('4k-child.avhdx')]).equals(child.content)).toBe(true);
    await ours([tmp.path('4k-base.vhdx')], base);
    await ours([tmp.path('4k-base.vhdx'), tmp.path('4k-child.avhdx')], child);
  });
});
