/**
 * kill -9 against the write-cache overlay. A child process (support/
 * write-cache-crash-child.ts) runs pipelined batches of writes, zeroings and
 * trims, each batch followed by a flush, and prints what a completed flush
 * covers; the parent SIGKILLs it at a random moment, reopens the same
 * overlay and checks, block by block, that:
 *   - every request acknowledged by a completed flush reads back exactly
 *     (a block no later request touched equals the replayed model);
 *   - a block that later, unacknowledged requests touched reads as its
 *     content after some prefix of them (old or new, nothing else).
 * What was read becomes the next round's starting point, on the same folder.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { Overlay } from '../../appliance/write-cache/overlay.js';
import {
  CRASH_BASE_SEED,
  CRASH_BLOCK_SIZE,
  CRASH_DISK_SIZE,
  CRASH_IDENTITY,
  OverlayModel,
  applyCrashOp,
  crashOp,
  memoryBase,
  seededBytes,
  type CrashOp,
} from './support/write-cache.js';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const CHILD = fileURLToPath(new URL('./support/write-cache-crash-child.ts', import.meta.url));
const ROUNDS = 12;
const BS = CRASH_BLOCK_SIZE;

interface RoundLog {
  acked: number;
  issued: number;
  /** The last line was "issuing": killed with requests in flight. */
  midBatch: boolean;
}

/** Runs the child for round `round` and SIGKILLs it `killAfterMs` after it is ready (or after its first ack). */
async function runAndKill(dir: string, round: number, killAfterMs: number): Promise<RoundLog> {
  const child = spawn(process.execPath, ['--import', 'tsx', CHILD, dir, String(round)], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
  const log: RoundLog = { acked: 0, issued: 0, midBatch: false };
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  let timer: NodeJS.Timeout | undefined;
  const lines = createInterface({ input: child.stdout! });
  lines.on('line', (line) => {
    const event = JSON.parse(line) as { ready?: true; issuing?: number; acked?: number };
    if (event.ready) timer = setTimeout(() => child.kill('SIGKILL'), killAfterMs);
    if (event.issuing !== undefined) {
      log.issued = event.issuing;
      log.midBatch = true;
    }
    if (event.acked !== undefined) {
      log.acked = event.acked;
      log.midBatch = false;
    }
  });
  // 'close', not 'exit': the last lines may still be in the pipe when the process is gone, and they are the ones that matter.
  const linesDone = new Promise<void>((ok) => lines.on('close', ok));
  const { code, signal } = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((ok) => child.on('close', (c, s) => ok({ code: c, signal: s })));
  await linesDone;
  clearTimeout(timer);
  if (signal !== 'SIGKILL') throw new Error(`crash child ended by itself (code ${code}, signal ${signal}): ${stderr}`);
  return log;
}

function blocksOf(op: CrashOp): number[] {
  const out: number[] = [];
  for (let b = Math.floor(op.offset / BS); b * BS < op.offset + op.length; b++) out.push(b);
  return out;
}

const blockOf = (bytes: Buffer, b: number) => bytes.subarray(b * BS, Math.min(bytes.length, (b + 1) * BS));

it('keeps every flushed request across kill -9, round after round on the same overlay', async () => {
  const root = await mkdtemp(join(tmpdir(), 'bootfarm-wc-crash-'));
  const dir = join(root, 'overlay');
  const base = memoryBase(seededBytes(CRASH_BASE_SEED, CRASH_DISK_SIZE));
  const opts = { dir, base, blockSize: BS, limitBytes: null, identity: CRASH_IDENTITY };
  let start: Buffer = Buffer.from(base.bytes);
  const totals = { acked: 0, issued: 0, midBatch: 0, exactBlocks: 0, inFlightBlocks: 0, inFlightNew: 0 };
  try {
    for (let round = 0; round < ROUNDS; round++) {
      // Deterministic spread of kill moments: early (during the first batches) to late.
      const killAfterMs = 15 + ((round * 89) % 300);
      const log = await runAndKill(dir, round, killAfterMs);
      totals.acked += log.acked;
      totals.issued += log.issued;
      if (log.midBatch) totals.midBatch++;

      // Replay: the acknowledged requests exactly, then the candidates the unacknowledged ones allow.
      const model = new OverlayModel(base.bytes, BS);
      start.copy(model.bytes);
      for (let i = 0; i < log.acked; i++) applyCrashOp(model, crashOp(round, i));
      const acked = Buffer.from(model.bytes);
      const ackedBlocks = new Set<number>();
      for (let i = 0; i < log.acked; i++) for (const b of blocksOf(crashOp(round, i))) ackedBlocks.add(b);
      const candidates = new Map<number, Buffer[]>();
      for (let i = log.acked; i < log.issued; i++) {
        const op = crashOp(round, i);
        for (const b of blocksOf(op)) if (!candidates.has(b)) candidates.set(b, [Buffer.from(blockOf(model.bytes, b))]);
        applyCrashOp(model, op);
        for (const b of blocksOf(op)) candidates.get(b)!.push(Buffer.from(blockOf(model.bytes, b)));
      }

      const overlay = await Overlay.open(opts);
      const got = await overlay.read(0, CRASH_DISK_SIZE);
      await overlay.close();
      for (let b = 0; b * BS < CRASH_DISK_SIZE; b++) {
        const block = blockOf(got, b);
        const allowed = candidates.get(b);
        if (!allowed) {
          if (!block.equals(blockOf(acked, b))) throw new Error(`round ${round}: block ${b} lost a flushed request (acked ${log.acked} of ${log.issued} issued)`);
          if (ackedBlocks.has(b)) totals.exactBlocks++;
          continue;
        }
        const k = allowed.findIndex((c) => c.equals(block));
        if (k < 0) throw new Error(`round ${round}: block ${b} reads as none of the ${allowed.length} states requests ${log.acked}..${log.issued} allow`);
        totals.inFlightBlocks++;
        if (k > 0) totals.inFlightNew++;
      }
      start = got;
    }
  } finally {
    await rm(root, { recursive: true, force: true });
  }
  console.log(`write-cache crash: ${ROUNDS} rounds, ${totals.acked} requests acknowledged by a flush and checked, ${totals.issued - totals.acked} in flight at the kill (${totals.midBatch} rounds killed mid-batch); blocks changed by acknowledged requests and read back exactly: ${totals.exactBlocks}, in-flight blocks: ${totals.inFlightBlocks} (${totals.inFlightNew} read new)`);
  // The test proves something only if the kills landed while work was acknowledged and in flight.
  expect(totals.acked).toBeGreaterThan(ROUNDS * 5);
  expect(totals.midBatch).toBeGreaterThanOrEqual(ROUNDS / 3);
}, 120_000);
