/**
 * Raw, VHD and VHDX images made and written by the real qemu-img/qemu-io read
 * byte for byte as `qemu-img convert -O raw` reads them.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { detectFormat, fileReader, openImage } from '../../model/images/index.js';
import { expectSameBytes, hasQemu, qemuImg, qemuIo, qemuRaw, tempDir, type QemuFormat } from './support/tools.js';

const MiB = 2 ** 20;
const tmp = tempDir('images-qemu');
afterAll(() => tmp.cleanup());

/** Scattered writes: unaligned, across 2 MiB and 32 MiB boundaries, whole and partial blocks, zero writes. */
function writesFor(size: number): string[] {
  return [
    'write -P 0x11 1000 5000',
    'write -P 0x22 2096000 4000',
    'write -P 0x33 4M 2M',
    'write -z 4608k 64k',
    'write -P 0x44 33554000 1000',
    'write -z 10M 1M',
    'write -P 0x66 40M 300000',
    'write -P 0x77 41000001 77',
    `write -P 0x55 ${size - 4096} 4096`,
  ];
}

interface Case {
  name: string;
  format: QemuFormat;
  options?: string;
  size: string;
  /** A range no write touches, in a block nothing was allocated in. */
  untouched?: [number, number];
  ours: 'raw' | 'vhd' | 'vhdx';
}

const cases: Case[] = [
  { name: 'raw', format: 'raw', size: '64M', ours: 'raw' },
  { name: 'VHD fixed', format: 'vpc', options: 'subformat=fixed', size: '64M', ours: 'vhd' },
  { name: 'VHD dynamic (2 MiB blocks)', format: 'vpc', options: 'subformat=dynamic', size: '100M', untouched: [48 * MiB, 4 * MiB], ours: 'vhd' },
  // qemu leaves a fixed VHDX's unwritten blocks in the ZERO state (its block_state_zero=on default).
  { name: 'VHDX fixed', format: 'vhdx', options: 'subformat=fixed,block_size=1M', size: '64M', untouched: [48 * MiB, 4 * MiB], ours: 'vhdx' },
  { name: 'VHDX dynamic, default block size', format: 'vhdx', options: 'subformat=dynamic', size: '64M', untouched: [48 * MiB, 8 * MiB], ours: 'vhdx' },
  { name: 'VHDX dynamic, 1 MiB blocks', format: 'vhdx', options: 'subformat=dynamic,block_size=1M', size: '64M', untouched: [48 * MiB, 4 * MiB], ours: 'vhdx' },
  { name: 'VHDX dynamic, 32 MiB blocks (PVS)', format: 'vhdx', options: 'subformat=dynamic,block_size=32M', size: '200M', untouched: [128 * MiB, 32 * MiB], ours: 'vhdx' },
];

describe.skipIf(!hasQemu)('images made by qemu', () => {
  for (const c of cases) {
    describe(c.name, () => {
      const file = tmp.path(`${c.name.replace(/\W+/g, '-')}.img`);
      let size = 0;
      const make = () => {
        if (size) return;
        qemuImg('create', '-q', '-f', c.format, ...(c.options ? ['-o', c.options] : []), file, c.size);
        size = JSON.parse(qemuImg('info', '-f', c.format, '--output=json', file))['virtual-size'];
        qemuIo(c.format, file, writesFor(size));
      };

      it('reads byte for byte what qemu-img convert reads', async () => {
        make();
        const img = await openImage([file]);
        try {
          expect(img.format).toBe(c.ours);
          expect(img.logicalSectorSize).toBe(512);
          await expectSameBytes(img, qemuRaw(c.format, file));
        } finally {
          await img.close();
        }
      });

      it('detects the format from the file alone', async () => {
        make();
        const r = await fileReader(file);
        try {
          expect(await detectFormat(r)).toBe(c.ours);
        } finally {
          await r.close?.();
        }
      });

      it('reads unaligned ranges that cross block boundaries like the whole-disk read', async () => {
        make();
        const img = await openImage([file]);
        try {
          const whole = qemuRaw(c.format, file);
          for (const [offset, length] of [
            [2096999, 3001],
            [33554001, 511],
            [4 * MiB - 1, 2 * MiB + 2],
            [size - 777, 777],
            [0, 1],
          ] as const) {
            expect((await img.read(offset, length)).equals(whole.subarray(offset, offset + length)), `${offset}+${length}`).toBe(true);
          }
        } finally {
          await img.close();
        }
      });

      it('knows written ranges are not zero, and unallocated or ZERO-state ones are', async () => {
        make();
        const img = await openImage([file]);
        try {
          expect(await img.knownZero(4 * MiB, MiB)).toBe(false);
          expect(await img.knownZero(0, 4096)).toBe(false);
          if (c.untouched) expect(await img.knownZero(...c.untouched)).toBe(true);
          else expect(await img.knownZero(48 * MiB, 4 * MiB)).toBe(false); // raw and fixed: never claimed
        } finally {
          await img.close();
        }
      });
    });
  }

  it('reads a VHD dynamic disk whose size is not a whole number of blocks up to its last byte', async () => {
    const file = tmp.path('odd.vhd');
    qemuImg('create', '-q', '-f', 'vpc', '-o', 'subformat=dynamic', file, '5M');
    const size = JSON.parse(qemuImg('info', '-f', 'vpc', '--output=json', file))['virtual-size'];
    expect(size % (2 * MiB)).not.toBe(0);
    qemuIo('vpc', file, [`write -P 0x99 ${size - 1536} 1536`]);
    const img = await openImage([file]);
    try {
      await expectSameBytes(img, qemuRaw('vpc', file));
    } finally {
      await img.close();
    }
  });
});
