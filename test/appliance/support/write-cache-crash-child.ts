/**
 * The crash test's victim: opens the shared overlay and runs round `round`'s
 * requests in batches (issued without waiting, as NBD pipelines them), each
 * batch followed by a flush, until the parent kills it. Prints one JSON line
 * per event with a synchronous write, so a line the parent sees was printed
 * before whatever comes after it in this program:
 *   {"ready":true}
 *   {"issuing":N}   requests [previous N, N) are about to be issued
 *   {"acked":N}     requests [0, N) are covered by a completed flush
 * Usage: node --import tsx write-cache-crash-child.ts DIR ROUND
 */
import { writeSync } from 'node:fs';
import { Overlay } from '../../../appliance/write-cache/overlay.js';
import { CRASH_BASE_SEED, CRASH_BLOCK_SIZE, CRASH_DISK_SIZE, CRASH_IDENTITY, crashBatch, crashOp, memoryBase, seededBytes, type CrashOp } from './write-cache.js';

const [dir, roundArg] = process.argv.slice(2);
if (!dir || !roundArg) throw new Error('usage: write-cache-crash-child.ts DIR ROUND');
const round = Number(roundArg);

const say = (event: object) => writeSync(1, `${JSON.stringify(event)}\n`);

function run(overlay: Overlay, op: CrashOp): Promise<void> {
  if (op.kind === 'write') return overlay.write(op.offset, seededBytes(op.seed, op.length));
  if (op.kind === 'writeZeroes') return overlay.writeZeroes(op.offset, op.length);
  return overlay.trim(op.offset, op.length);
}

const overlay = await Overlay.open({ dir, base: memoryBase(seededBytes(CRASH_BASE_SEED, CRASH_DISK_SIZE)), blockSize: CRASH_BLOCK_SIZE, limitBytes: null, identity: CRASH_IDENTITY });
say({ ready: true });
let issued = 0;
for (let batch = 0; ; batch++) {
  const n = crashBatch(round, batch);
  say({ issuing: issued + n });
  const pending: Promise<void>[] = [];
  for (let i = 0; i < n; i++) pending.push(run(overlay, crashOp(round, issued++)));
  pending.push(overlay.flush());
  await Promise.all(pending);
  say({ acked: issued });
}
