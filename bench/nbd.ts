/**
 * NBD benchmark (issue 6): the appliance's NBD server (bench/nbd-server.ts,
 * its own process, serving a verified cached version) against nbdkit's file
 * plugin (Debian nbdkit, its own process, the image as a plain file), same
 * image, same clients, same run:
 * - sequential read: `nbdcopy nbd://... null:` (its defaults: 4 connections
 *   when the server allows multi-conn, 64 requests in flight each);
 * - random 4 KiB reads: fio's nbd engine, several jobs (one connection
 *   each), iodepth 16;
 * - memory: resident set growth per idle connection (200 connections that
 *   have done OPT_GO), and the peak while fio runs.
 * Runs alternate between the two servers; the median is reported.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile, open as openFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { RawConnection } from '../test/appliance/support/nbd-client.js';

const run = promisify(execFile);
const MiB = 2 ** 20;

export interface NbdBenchOptions {
  sizeBytes: number;
  runs: number;
  jobs: number;
  seconds: number;
  out: (line: string) => void;
  log: (line: string) => void;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function rssKiB(pid: number): Promise<number> {
  const s = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(s)?.[1] ?? 0);
}

export async function benchNbd(o: NbdBenchOptions): Promise<void> {
  for (const tool of ['nbdcopy', 'nbdkit', 'fio']) await run('sh', ['-c', `command -v ${tool}`]).catch(() => {
    throw new Error(`${tool} is needed (Debian packages libnbd-bin, nbdkit and fio)`);
  });
  const dir = await mkdtemp(join(tmpdir(), 'bootfarm-bench-nbd-'));
  const children: ChildProcess[] = [];
  try {
    // Random bytes: no zero chunk to skip, the same work for both servers.
    const image = join(dir, 'disk.raw');
    const fh = await openFile(image, 'w');
    for (let off = 0; off < o.sizeBytes; off += 64 * MiB) await fh.write(randomBytes(Math.min(64 * MiB, o.sizeBytes - off)));
    await fh.close();

    // The thread pool size the daemon runs with (bin/bootfarm.js).
    const bf = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'nbd-server.ts'), image, dir], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, UV_THREADPOOL_SIZE: process.env.UV_THREADPOOL_SIZE ?? '16' } });
    children.push(bf);
    const bfPort = await new Promise<number>((resolve, reject) => {
      let text = '';
      bf.stdout!.on('data', (d: Buffer) => {
        text += d.toString();
        const m = /port (\d+)/.exec(text);
        if (m) resolve(Number(m[1]));
      });
      bf.once('exit', (code) => reject(new Error(`bootfarm NBD server exited (${code}) before listening`)));
    });
    const nkPort = bfPort === 10888 ? 10889 : 10888;
    const nk = spawn('nbdkit', ['-f', '--exit-with-parent', '-i', '127.0.0.1', '-p', String(nkPort), 'file', image], { stdio: 'ignore' });
    children.push(nk);
    await new Promise((r) => setTimeout(r, 500));
    const servers = [
      { name: 'bootfarm', uri: `nbd://127.0.0.1:${bfPort}/bench`, pid: bf.pid!, port: bfPort, exportName: 'bench' },
      { name: 'nbdkit', uri: `nbd://127.0.0.1:${nkPort}/`, pid: nk.pid!, port: nkPort, exportName: '' },
    ];

    // Sequential: nbdcopy to null, alternating, after one warm-up each (page cache).
    const seq: Record<string, number[]> = { bootfarm: [], nbdkit: [] };
    for (let i = -1; i < o.runs; i++)
      for (const s of servers) {
        const t0 = process.hrtime.bigint();
        await run('nbdcopy', [s.uri, 'null:']);
        const secs = Number(process.hrtime.bigint() - t0) / 1e9;
        if (i >= 0) seq[s.name]!.push(o.sizeBytes / MiB / secs);
        o.log(`${s.name} nbdcopy ${i < 0 ? 'warm-up' : `run ${i + 1}`}: ${(o.sizeBytes / MiB / secs).toFixed(0)} MiB/s`);
      }

    // Random 4 KiB reads with fio, and the peak memory while it runs.
    const rand: Record<string, { iops: number; peakKiB: number; baseKiB: number }> = {};
    for (const s of servers) {
      const baseKiB = await rssKiB(s.pid);
      let peakKiB = baseKiB;
      const sampler = setInterval(() => void rssKiB(s.pid).then((k) => (peakKiB = Math.max(peakKiB, k))).catch(() => undefined), 100);
      const { stdout } = await run('fio', ['--name=rand', '--ioengine=nbd', `--uri=${s.uri}`, '--rw=randread', '--bs=4k', '--iodepth=16', `--numjobs=${o.jobs}`, '--time_based', `--runtime=${o.seconds}`, '--group_reporting', '--output-format=json'], { maxBuffer: 16 * MiB });
      clearInterval(sampler);
      // fio's nbd engine prints a line of its own before the JSON.
      const iops = JSON.parse(stdout.slice(stdout.indexOf('{'))).jobs[0].read.iops as number;
      rand[s.name] = { iops, peakKiB, baseKiB };
      o.log(`${s.name} fio randread 4k x${o.jobs}: ${iops.toFixed(0)} IOPS, RSS ${baseKiB} -> peak ${peakKiB} KiB`);
    }

    // Idle connections: resident memory each.
    const idle: Record<string, number> = {};
    for (const s of servers) {
      const before = await rssKiB(s.pid);
      const conns: RawConnection[] = [];
      for (let i = 0; i < 200; i++) conns.push((await RawConnection.go(s.port, s.exportName)).c);
      for (const c of conns) await c.readAt(0, 4096);
      await new Promise((r) => setTimeout(r, 300));
      const after = await rssKiB(s.pid);
      idle[s.name] = (after - before) / 200;
      for (const c of conns) c.close();
      o.log(`${s.name} 200 idle connections: RSS ${before} -> ${after} KiB`);
    }

    const bfSeq = median(seq.bootfarm!);
    const nkSeq = median(seq.nbdkit!);
    o.out(`NBD, ${o.sizeBytes / MiB} MiB image of random bytes (page-cached), same run; medians of ${o.runs} runs`);
    o.out('| measure | bootfarm | nbdkit file | ratio |');
    o.out('|---|---|---|---|');
    o.out(`| sequential read, nbdcopy -> null: | ${bfSeq.toFixed(0)} MiB/s | ${nkSeq.toFixed(0)} MiB/s | ${(bfSeq / nkSeq).toFixed(2)}x |`);
    o.out(`| random 4 KiB read, fio nbd, ${o.jobs} connections x iodepth 16, ${o.seconds} s | ${rand.bootfarm!.iops.toFixed(0)} IOPS | ${rand.nbdkit!.iops.toFixed(0)} IOPS | ${(rand.bootfarm!.iops / rand.nbdkit!.iops).toFixed(2)}x |`);
    o.out(`| resident memory per idle connection | ${idle.bootfarm!.toFixed(1)} KiB | ${idle.nbdkit!.toFixed(1)} KiB | |`);
    o.out(`| peak resident set during fio (start) | ${(rand.bootfarm!.peakKiB / 1024).toFixed(0)} MiB (${(rand.bootfarm!.baseKiB / 1024).toFixed(0)}) | ${(rand.nbdkit!.peakKiB / 1024).toFixed(0)} MiB (${(rand.nbdkit!.baseKiB / 1024).toFixed(0)}) | |`);
    await writeFile(join(dir, 'done'), '');
  } finally {
    for (const c of children) c.kill('SIGTERM');
    await rm(dir, { recursive: true, force: true });
  }
}
