/**
 * The write-cache overlay against a plain-Buffer model (support/write-cache.ts):
 * random geometries (block sizes, a short last block), limits and sequences
 * of writes, zeroing, trims, flushes, reads, limit changes, batches issued
 * without waiting, and close + reopen. Every read, every usedBytes and every
 * OverlayFull must be what the model says. And the block map alone over
 * several 16384-block pages (whole-page fills, absent pages, the short last
 * page), against an array, through its file and back.
 */
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { expect, it } from 'vitest';
import { BLOCKS_PER_PAGE, BlockMap, type BlockState } from '../../appliance/write-cache/block-map.js';
import { Overlay, OverlayFull, type OverlayOptions } from '../../appliance/write-cache/overlay.js';
import { OverlayModel, memoryBase, seededBytes } from './support/write-cache.js';

type Range = { offset: number; length: number };
type Mutation =
  | ({ kind: 'write'; seed: number; fua: boolean } & Range)
  | ({ kind: 'writeZeroes'; fua: boolean } & Range)
  | ({ kind: 'trim'; fua: boolean } & Range);
type Op = Mutation | ({ kind: 'read' } & Range) | { kind: 'flush' } | { kind: 'reopen' } | { kind: 'setLimit'; blocks: number | null } | { kind: 'batch'; ops: Mutation[] };

interface Geometry {
  blockSize: number;
  size: number;
  limitBlocks: number | null;
}

const geometry: fc.Arbitrary<Geometry> = fc
  .record({
    blockSize: fc.constantFrom(512, 1024, 4096),
    blocks: fc.integer({ min: 1, max: 24 }),
    shortBy: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 511 })),
    limitBlocks: fc.option(fc.integer({ min: 0, max: 16 }), { freq: 2 }),
  })
  .map(({ blockSize, blocks, shortBy, limitBlocks }) => ({ blockSize, size: blocks * blockSize - shortBy, limitBlocks }));

/** Ranges that like block boundaries and the end of the disk, where the edge cases are. */
function range(g: Geometry): fc.Arbitrary<Range> {
  const bs = g.blockSize;
  const blocks = Math.ceil(g.size / bs);
  const offset = fc.oneof(
    fc.integer({ min: 0, max: g.size }),
    fc.integer({ min: 0, max: blocks }).map((b) => Math.min(b * bs, g.size)),
    fc.integer({ min: 0, max: blocks }).map((b) => Math.max(0, Math.min(b * bs - 1, g.size))),
  );
  const length = fc.oneof(fc.integer({ min: 0, max: 3 * bs + 7 }), fc.integer({ min: 0, max: 4 }).map((k) => k * bs), fc.constant(g.size));
  return fc.tuple(offset, length).map(([o, l]) => ({ offset: o, length: Math.min(l, g.size - o) }));
}

function mutation(g: Geometry): fc.Arbitrary<Mutation> {
  return fc.oneof(
    { weight: 5, arbitrary: fc.record({ kind: fc.constant('write' as const), seed: fc.nat(), fua: fc.boolean() }).chain((w) => range(g).map((r) => ({ ...w, ...r }))) },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('writeZeroes' as const), fua: fc.boolean() }).chain((w) => range(g).map((r) => ({ ...w, ...r }))) },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('trim' as const), fua: fc.boolean() }).chain((w) => range(g).map((r) => ({ ...w, ...r }))) },
  );
}

function op(g: Geometry): fc.Arbitrary<Op> {
  return fc.oneof(
    { weight: 8, arbitrary: mutation(g) },
    { weight: 3, arbitrary: range(g).map((r) => ({ kind: 'read' as const, ...r })) },
    { weight: 1, arbitrary: fc.constant({ kind: 'flush' as const }) },
    { weight: 1, arbitrary: fc.constant({ kind: 'reopen' as const }) },
    { weight: 1, arbitrary: fc.option(fc.integer({ min: 0, max: 16 })).map((blocks) => ({ kind: 'setLimit' as const, blocks })) },
    { weight: 2, arbitrary: fc.array(mutation(g), { minLength: 2, maxLength: 6 }).map((ops) => ({ kind: 'batch' as const, ops })) },
  );
}

/** Starts one mutation on both; the model says whether the overlay must refuse it. */
function start(overlay: Overlay, model: OverlayModel, m: Mutation): { done: Promise<void>; full: boolean } {
  switch (m.kind) {
    case 'write': {
      const data = seededBytes(m.seed, m.length);
      return { full: !model.write(m.offset, data), done: overlay.write(m.offset, data, m.fua) };
    }
    case 'writeZeroes':
      return { full: !model.writeZeroes(m.offset, m.length), done: overlay.writeZeroes(m.offset, m.length, m.fua) };
    case 'trim':
      model.trim(m.offset, m.length);
      return { full: false, done: overlay.trim(m.offset, m.length, m.fua) };
  }
}

async function settle(step: { done: Promise<void>; full: boolean }): Promise<void> {
  if (step.full) await expect(step.done).rejects.toBeInstanceOf(OverlayFull);
  else await step.done;
}

it('matches the model for random sequences of requests', async () => {
  const root = await mkdtemp(join(tmpdir(), 'bootfarm-wc-model-'));
  let run = 0;
  try {
    await fc.assert(
      fc.asyncProperty(
        geometry.chain((g) => fc.tuple(fc.constant(g), fc.nat(), fc.array(op(g), { maxLength: 40 }))),
        async ([g, baseSeed, ops]) => {
          const base = memoryBase(seededBytes(baseSeed, g.size));
          const limit = (blocks: number | null) => (blocks === null ? null : blocks * g.blockSize);
          const opts: OverlayOptions = { dir: join(root, String(run++)), base, blockSize: g.blockSize, limitBytes: limit(g.limitBlocks), identity: { run } };
          const model = new OverlayModel(base.bytes, g.blockSize, opts.limitBytes);
          let overlay = await Overlay.open(opts);
          try {
            for (const o of ops) {
              switch (o.kind) {
                case 'read':
                  expect((await overlay.read(o.offset, o.length)).equals(model.read(o.offset, o.length))).toBe(true);
                  break;
                case 'flush':
                  await overlay.flush();
                  break;
                case 'reopen':
                  await overlay.close();
                  overlay = await Overlay.open({ ...opts, limitBytes: model.limit });
                  break;
                case 'setLimit':
                  overlay.setLimit((model.limit = limit(o.blocks)));
                  break;
                case 'batch': {
                  // Issued without waiting, as an NBD client pipelines them: they must apply in call order.
                  const steps = o.ops.map((m) => start(overlay, model, m));
                  for (const s of steps) await settle(s);
                  break;
                }
                default:
                  await settle(start(overlay, model, o));
              }
              expect(overlay.usedBytes()).toBe(model.usedBytes());
            }
            expect((await overlay.read(0, g.size)).equals(model.bytes)).toBe(true);
            await overlay.close();
            overlay = await Overlay.open({ ...opts, limitBytes: model.limit });
            expect((await overlay.read(0, g.size)).equals(model.bytes)).toBe(true);
            expect(overlay.usedBytes()).toBe(model.usedBytes());
          } finally {
            await overlay.close().catch(() => undefined);
            await Overlay.destroy(opts.dir);
          }
        },
      ),
      { numRuns: 250 },
    );
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

it('keeps the block map equal to a plain array across pages, and through its file', async () => {
  const root = await mkdtemp(join(tmpdir(), 'bootfarm-wc-map-'));
  try {
    const blocksArb = fc.oneof(fc.integer({ min: 1, max: 3 * BLOCKS_PER_PAGE + 100 }), fc.integer({ min: 1, max: 3 }).map((k) => k * BLOCKS_PER_PAGE));
    const setArb = (blocks: number) => {
      const edge = fc.oneof(
        fc.integer({ min: 0, max: blocks }),
        fc.integer({ min: 0, max: Math.ceil(blocks / BLOCKS_PER_PAGE) }).map((k) => Math.min(blocks, k * BLOCKS_PER_PAGE)),
        fc.integer({ min: 0, max: Math.ceil(blocks / BLOCKS_PER_PAGE) }).chain((k) => fc.integer({ min: -3, max: 3 }).map((d) => Math.max(0, Math.min(blocks, k * BLOCKS_PER_PAGE + d)))),
      );
      return fc.tuple(edge, edge, fc.constantFrom<BlockState>(0, 1, 2)).map(([a, b, state]) => ({ first: Math.min(a, b), end: Math.max(a, b), state }));
    };
    let n = 0;
    await fc.assert(
      fc.asyncProperty(
        blocksArb.chain((blocks) => fc.tuple(fc.constant(blocks), fc.array(fc.tuple(setArb(blocks), fc.boolean()), { maxLength: 25 }), fc.array(setArb(blocks), { maxLength: 5 }))),
        async ([blocks, sets, probes]) => {
          const path = join(root, String(n++));
          const fh = await open(path, 'w+');
          try {
            await fh.truncate(BlockMap.fileBytes(blocks));
            const map = new BlockMap(blocks);
            const want = new Uint8Array(blocks);
            for (const [{ first, end, state }, flush] of sets) {
              map.setRange(first, end, state);
              want.fill(state, first, end);
              if (flush) {
                const pages = map.dirtyPages();
                await map.writePages(fh, pages);
                map.markClean(pages);
              }
            }
            const count = (s: number) => want.reduce((c, v) => c + (v === s ? 1 : 0), 0);
            expect([map.dataBlocks, map.zeroBlocks]).toEqual([count(1), count(2)]);
            for (const { first, end } of probes) {
              const runs = [...map.runs(first, end)];
              const expected: { state: number; first: number; end: number }[] = [];
              for (let b = first; b < end; b++) {
                const last = expected.at(-1);
                if (last && last.state === want[b]) last.end = b + 1;
                else expected.push({ state: want[b]!, first: b, end: b + 1 });
              }
              expect(runs).toEqual(expected);
            }
            await map.writePages(fh, map.dirtyPages());
            const loaded = await BlockMap.load(fh, blocks);
            const got = new Uint8Array(blocks);
            const pagesInUse = new Set<number>();
            for (let b = 0; b < blocks; b++) {
              got[b] = loaded.get(b);
              if (want[b]) pagesInUse.add(Math.floor(b / BLOCKS_PER_PAGE));
            }
            expect(Buffer.from(got).equals(Buffer.from(want))).toBe(true);
            expect([loaded.dataBlocks, loaded.zeroBlocks, loaded.pageCount]).toEqual([count(1), count(2), pagesInUse.size]);
          } finally {
            await fh.close();
            await rm(path);
          }
        },
      ),
      { numRuns: 60 },
    );
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});
