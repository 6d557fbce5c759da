/**
 * Differencing chains (a PVS vDisk with its .avhdx versions), base first.
 * qemu-img can create neither VHD nor VHDX differencing disks, so the bases
 * are made and written by qemu and the children by the spec-following test
 * writer (support/writers.ts); what each chain must read as comes from the
 * write model (support/content.ts), independent of the reader under test.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ImageError, openImage } from '../../model/images/index.js';
import { applyWrite, newLayer, type Write } from './support/content.js';
import { expectSameBytes, hasQemu, qemuImg, qemuIo, qemuRaw, tempDir } from './support/tools.js';
import { vhdxDataWriteGuid, writeVhdDifferencing, writeVhdx } from './support/writers.js';
import type { LayerContent } from './support/writers.js';

const MiB = 2 ** 20;
const tmp = tempDir('images-diff');
afterAll(() => tmp.cleanup());

const BASE_WRITES = ['write -P 0x11 1000 5000', 'write -P 0x22 2096000 4000', 'write -P 0x33 4M 2M', 'write -P 0x66 40M 300000', 'write -z 4608k 64k'];

const CHILD1: Write[] = [
  { offset: 1000, length: 3000, pattern: 0x42 }, // unaligned, over base data
  { offset: 2096000, length: 6000, pattern: 0x43 }, // across a 1 MiB and 2 MiB block boundary
  { offset: 6 * MiB, length: 2 * MiB, pattern: 0x44 }, // whole blocks
  { offset: 9 * MiB + 512, length: 3 * 4096 + 100, pattern: 0x45 }, // partial block where the base has nothing
  { offset: 4 * MiB + 100 * 1024, length: 10 * 1024, zero: true }, // zero write inside base data
  { offset: 20 * MiB, length: 2 * MiB, zero: true }, // zero write over whole blocks
];
const CHILD2: Write[] = [
  { offset: 1500, length: 1000, pattern: 0x51 }, // overlaps child 1's first write
  { offset: 7 * MiB, length: 4096, pattern: 0x52 }, // into child 1's whole block
  { offset: 20 * MiB + 4096, length: 4096, pattern: 0x53 }, // into child 1's zero write
  { offset: 30 * MiB, length: 100, pattern: 0x54 },
];

interface Chain {
  files: string[];
  layers: LayerContent[];
}

async function expectChainReads(files: string[], layer: LayerContent) {
  const img = await openImage(files);
  try {
    await expectSameBytes(img, layer.content);
  } finally {
    await img.close();
  }
}

async function knownZero(files: string[], offset: number, length: number) {
  const img = await openImage(files);
  try {
    return await img.knownZero(offset, length);
  } finally {
    await img.close();
  }
}

async function chainError(files: string[]): Promise<ImageError> {
  const e = await openImage(files).then(
    async (img) => {
      await img.close();
      return undefined;
    },
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(ImageError);
  return e as ImageError;
}

describe.skipIf(!hasQemu)('VHD differencing chains (2 MiB blocks)', () => {
  const chain: Chain = { files: [], layers: [] };
  beforeAll(() => {
    const base = tmp.path('base.vhd');
    qemuImg('create', '-q', '-f', 'vpc', '-o', 'subformat=dynamic', base, '64M');
    qemuIo('vpc', base, BASE_WRITES);
    const baseRaw = qemuRaw('vpc', base);
    const c1 = newLayer(baseRaw, baseRaw.length, 2 * MiB);
    CHILD1.forEach((w) => applyWrite(c1, w, { zeroBlocks: false }));
    writeVhdDifferencing(tmp.path('child1.vhd'), base, c1, 1);
    const c2 = newLayer(c1.content, baseRaw.length, 2 * MiB);
    [...CHILD2, { offset: baseRaw.length - 512, length: 512, pattern: 0x5f }].forEach((w) => applyWrite(c2, w, { zeroBlocks: false }));
    writeVhdDifferencing(tmp.path('child2.vhd'), tmp.path('child1.vhd'), c2, 2);
    chain.files = [base, tmp.path('child1.vhd'), tmp.path('child2.vhd')];
    chain.layers = [c1, c2];
  });

  it('a two-level chain reads as the base with the child’s sectors on top', async () => {
    await expectChainReads(chain.files.slice(0, 2), chain.layers[0]!);
  });

  it('a three-level chain reads as every layer applied in order', async () => {
    await expectChainReads(chain.files, chain.layers[1]!);
  });

  it('knownZero is true only where no layer has data', async () => {
    expect(await knownZero(chain.files, 48 * MiB, 4 * MiB)).toBe(true);
    expect(await knownZero(chain.files, 40 * MiB, MiB)).toBe(false); // base data only
    expect(await knownZero(chain.files, 30 * MiB, 512)).toBe(false); // top layer only
    expect(await knownZero(chain.files, 9 * MiB, 512)).toBe(true); // child 1 allocated the block, but not this sector
  });

  it('refuses a child listed before its parent, naming the order that fits', async () => {
    const e = await chainError([chain.files[1]!, chain.files[0]!]);
    expect(e.code).toBe('chain');
    expect(e.message).toContain('child1.vhd: is a differencing disk, but no parent was given before it');
    expect(e.message).toContain(`${chain.files[0]}, ${chain.files[1]}`);
  });

  it('refuses children out of order, naming the parent id each expects', async () => {
    const e = await chainError([chain.files[0]!, chain.files[2]!, chain.files[1]!]);
    expect(e.code).toBe('chain');
    expect(e.message).toMatch(/child2\.vhd: chain out of order: its dynamic header names parent unique id [0-9a-f]{32} \('child1\.vhd'\)/);
    expect(e.message).toContain(`The order that fits, base first, is: ${chain.files.join(', ')}`);
  });

  it('refuses a chain with a missing middle file', async () => {
    const e = await chainError([chain.files[0]!, chain.files[2]!]);
    expect(e.message).toContain('chain out of order');
  });

  it('refuses two base disks as a chain', async () => {
    const e = await chainError([chain.files[0]!, chain.files[0]!]);
    expect(e.message).toContain('is not a differencing disk');
  });
});

function vhdxChain(name: string, blockSize: number, size: string) {
  const chain: Chain = { files: [], layers: [] };
  const base = tmp.path(`${name}-base.vhdx`);
  qemuImg('create', '-q', '-f', 'vhdx', '-o', `subformat=dynamic,block_size=${blockSize / MiB}M`, base, size);
  qemuIo('vhdx', base, BASE_WRITES);
  const baseRaw = qemuRaw('vhdx', base);
  const c1 = newLayer(baseRaw, baseRaw.length, blockSize);
  ([...CHILD1, { unmapBlock: 4 }] as Write[]).forEach((w) => applyWrite(c1, w, { zeroBlocks: true }));
  writeVhdx(tmp.path(`${name}-1.avhdx`), c1, { parentPath: base, seed: 11 });
  const c2 = newLayer(c1.content, baseRaw.length, blockSize);
  [...CHILD2, { offset: 6 * MiB, length: blockSize, zero: true } as const].forEach((w) => applyWrite(c2, w, { zeroBlocks: true }));
  writeVhdx(tmp.path(`${name}-2.avhdx`), c2, { parentPath: tmp.path(`${name}-1.avhdx`), seed: 12 });
  chain.files = [base, tmp.path(`${name}-1.avhdx`), tmp.path(`${name}-2.avhdx`)];
  chain.layers = [c1, c2];
  return chain;
}

describe.skipIf(!hasQemu)('VHDX differencing chains, 1 MiB blocks', () => {
  let chain: Chain;
  beforeAll(() => {
    chain = vhdxChain('v1m', MiB, '64M');
  });

  it('a two-level chain reads as the base with the child’s blocks and sectors on top', async () => {
    await expectChainReads(chain.files.slice(0, 2), chain.layers[0]!);
  });

  it('a three-level chain reads as every layer applied in order (ZERO, UNMAPPED, partially and fully present blocks)', async () => {
    await expectChainReads(chain.files, chain.layers[1]!);
  });

  it('knownZero sees through NOT_PRESENT blocks and stops at ZERO and UNMAPPED ones', async () => {
    expect(await knownZero(chain.files, 48 * MiB, 4 * MiB)).toBe(true);
    expect(await knownZero(chain.files.slice(0, 1), 4 * MiB, MiB)).toBe(false); // base data...
    expect(await knownZero(chain.files.slice(0, 2), 4 * MiB, MiB)).toBe(true); // ...unmapped by child 1
    expect(await knownZero(chain.files.slice(0, 2), 6 * MiB, MiB)).toBe(false); // child 1 data...
    expect(await knownZero(chain.files, 6 * MiB, MiB)).toBe(true); // ...a ZERO block in child 2
    expect(await knownZero(chain.files, 40 * MiB, MiB)).toBe(false);
  });

  it('refuses children out of order, quoting parent_linkage and the parent’s DataWriteGuid', async () => {
    const e = await chainError([chain.files[0]!, chain.files[2]!, chain.files[1]!]);
    expect(e.code).toBe('chain');
    expect(e.message).toMatch(/v1m-2\.avhdx: chain out of order: its parent_linkage is \{[0-9a-f-]{36}\} \('\.\\v1m-1\.avhdx'\), which does not match the file before it, .*v1m-base\.vhdx \(DataWriteGuid \{[0-9a-f-]{36}\}\)/);
    expect(e.message).toContain(`The order that fits, base first, is: ${chain.files.join(', ')}`);
  });

  it('accepts a child whose parent_linkage2 names the parent (a merge in progress), and refuses one naming neither', async () => {
    const parentGuid = vhdxDataWriteGuid(chain.files[0]!);
    const other = '0f0e0d0c-0b0a-0908-0706-050403020100';
    const layer = newLayer(undefined, chain.layers[0]!.sizeBytes, MiB); // only the sectors written below are checked
    applyWrite(layer, { offset: 0, length: 4096, pattern: 0x5e }, { zeroBlocks: true });
    writeVhdx(tmp.path('l2.avhdx'), layer, { parentPath: chain.files[0]!, seed: 13, linkage: { parentLinkage: other, parentLinkage2: parentGuid } });
    const img = await openImage([chain.files[0]!, tmp.path('l2.avhdx')]);
    const head = await img.read(0, 4096);
    await img.close();
    expect(head.every((b) => b === 0x5e)).toBe(true);
    writeVhdx(tmp.path('l0.avhdx'), layer, { parentPath: chain.files[0]!, seed: 14, linkage: { parentLinkage: other } });
    expect((await chainError([chain.files[0]!, tmp.path('l0.avhdx')])).message).toContain(`its parent_linkage is {${other}}`);
  });

  it('refuses a child whose logical sector size differs from its parent’s', async () => {
    const layer = newLayer(undefined, 64 * MiB, MiB, 4096);
    applyWrite(layer, { offset: 0, length: 4096, pattern: 0x5d }, { zeroBlocks: true });
    writeVhdx(tmp.path('4k.avhdx'), layer, { parentPath: chain.files[0]!, seed: 15 });
    expect((await chainError([chain.files[0]!, tmp.path('4k.avhdx')])).message).toContain('has 4096-byte sectors but its parent');
  });

  it('refuses a chain that mixes VHD and VHDX files', async () => {
    const vhd = tmp.path('mixed.vhd');
    qemuImg('create', '-q', '-f', 'vpc', vhd, '64M');
    const e = await chainError([vhd, chain.files[1]!]);
    expect(e.message).toContain('a chain must be all one format');
  });
});

describe.skipIf(!hasQemu)('VHDX differencing chains, 32 MiB blocks (the PVS default)', () => {
  it('a three-level chain reads as every layer applied in order', async () => {
    const chain = vhdxChain('v32m', 32 * MiB, '200M');
    await expectChainReads(chain.files.slice(0, 2), chain.layers[0]!);
    await expectChainReads(chain.files, chain.layers[1]!);
    expect(await knownZero(chain.files, 128 * MiB, 32 * MiB)).toBe(true);
  });
});

describe.skipIf(!hasQemu)('a VHDX child larger than its parent', () => {
  it('reads zeros past the parent’s end', async () => {
    const base = tmp.path('small-base.vhdx');
    qemuImg('create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', base, '32M');
    qemuIo('vhdx', base, ['write -P 0x31 31M 1M']);
    const child = newLayer(qemuRaw('vhdx', base), 48 * MiB, MiB);
    applyWrite(child, { offset: 40 * MiB, length: 4096, pattern: 0x32 }, { zeroBlocks: true });
    writeVhdx(tmp.path('big-child.avhdx'), child, { parentPath: base, seed: 21 });
    await expectChainReads([base, tmp.path('big-child.avhdx')], child);
    expect(await knownZero([base, tmp.path('big-child.avhdx')], 32 * MiB, 8 * MiB)).toBe(true);
  });
});
