/**
 * TFTP benchmark (issue 5): the bootfarm server next to tftpd-hpa
 * (`in.tftpd -L -s DIR -a 127.0.0.1:PORT`, foreground), same client, same
 * file, same run, on loopback.
 *
 *   (a) lockstep throughput, bootfarm vs tftpd-hpa, with curl (512-byte
 *       blocks, and 1428 as iPXE asks) and atftp (512, no options);
 *       target: bootfarm >= 1.0x tftpd-hpa. Plus one request asking for
 *       windowsize 16, as EDK2 asks for 4: tftpd-hpa 5.2 answers it lockstep.
 *   (b) bootfarm with windowsize 16 vs lockstep (atftp, the client here that
 *       speaks RFC 7440; tftpd-hpa 5.2 has no windowsize)
 *   (c) 500 concurrent fetches of snponly.efi and ipxe.efi, half EDK2-style
 *       (tsize probe aborted with error 8, then blksize 1468 + windowsize 4),
 *       half iPXE-style (blksize 1432 + tsize): time and failures, against
 *       both servers.
 *
 * Each throughput case runs `runs` times, the two servers interleaved, and
 * reports the median. The bootfarm server runs in this process; the 500
 * concurrent clients run in a child process (appliance/tftp/client.ts), so
 * the server has a core of its own as tftpd-hpa's forked children do.
 * Numbers, not a timed test: nothing fails on a slow machine.
 */
import { execFile, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { existsSync } from 'node:fs';
import { chmod, copyFile, mkdtemp, realpath, rm, stat, writeFile } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startTftpServer, type TftpServer } from '../appliance/tftp/server.js';

export interface TftpBenchOptions {
  /** Size of the throughput file. @default 16 MiB */
  sizeBytes?: number;
  /** Runs per throughput case (median reported). @default 5 */
  runs?: number;
  /** Concurrent fetches in (c). @default 500 */
  concurrency?: number;
  out: (line: string) => void;
  log: (line: string) => void;
}

const MiB = 2 ** 20;
const HOST = '127.0.0.1';
const IPXE_DIR = '/usr/lib/ipxe';
const BOOT_FILES = ['snponly.efi', 'ipxe.efi'];
const REPO = fileURLToPath(new URL('..', import.meta.url));

const has = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;

interface Server {
  name: string;
  port: number;
}

export async function benchTftp(o: TftpBenchOptions): Promise<void> {
  const size = o.sizeBytes ?? 16 * MiB;
  const runs = o.runs ?? 5;
  const concurrency = o.concurrency ?? 500;
  if (!Number.isInteger(runs) || runs < 1 || runs > 100) throw new Error(`--runs ${runs}: must be 1-100`);
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 5000) throw new Error(`--concurrency ${concurrency}: must be 1-5000`);
  if (!Number.isInteger(size) || size < 1) throw new Error(`--size ${size}: must be at least one byte`);
  const tools = { curl: has('curl'), atftp: has('atftp'), tftpd: has('in.tftpd') };
  if (!tools.curl && !tools.atftp) throw new Error('needs curl or atftp');

  const dir = await mkdtemp(join(tmpdir(), 'bootfarm-bench-tftp-'));
  // tftpd-hpa drops to user nobody: the folder and files must be world-readable.
  await chmod(dir, 0o755);
  const cleanups: (() => Promise<void>)[] = [() => rm(dir, { recursive: true, force: true })];
  try {
    o.log(`writing a ${size / MiB} MiB file and the boot files...`);
    const file = 'bench.bin';
    await writeFile(join(dir, file), randomBytes(size), { mode: 0o644 });
    for (const f of BOOT_FILES) {
      const src = join(IPXE_DIR, f);
      if (existsSync(src)) await copyFile(await realpath(src), join(dir, f));
      else await writeFile(join(dir, f), randomBytes(f === 'ipxe.efi' ? 850_528 : 173_792));
      await chmod(join(dir, f), 0o644);
    }

    const bootfarm: TftpServer = await startTftpServer({ host: HOST, port: 0, root: () => dir });
    cleanups.unshift(() => bootfarm.close());
    const servers: Server[] = [{ name: 'bootfarm', port: bootfarm.port }];
    if (tools.tftpd) {
      const port = await freeUdpPort();
      const child = spawn('in.tftpd', ['-L', '-s', dir, '-a', `${HOST}:${port}`], { stdio: 'ignore' });
      cleanups.unshift(async () => {
        child.kill('SIGTERM');
        await new Promise((r) => (child.exitCode === null ? child.once('exit', r) : r(null)));
      });
      await waitForTftp(port, file);
      servers.push({ name: 'tftpd-hpa', port });
    } else {
      o.log('in.tftpd not installed: no tftpd-hpa comparison');
    }

    const clients: { label: string; tool: 'curl' | 'atftp'; args: (port: number, dest: string) => string[] }[] = [];
    if (tools.curl) {
      clients.push({ label: 'curl, blksize 512', tool: 'curl', args: (port, dest) => ['-sS', '-o', dest, `tftp://${HOST}:${port}/${file}`] });
      clients.push({ label: 'curl, blksize 1428', tool: 'curl', args: (port, dest) => ['-sS', '--tftp-blksize', '1428', '-o', dest, `tftp://${HOST}:${port}/${file}`] });
    }
    if (tools.atftp) {
      clients.push({ label: 'atftp, blksize 512', tool: 'atftp', args: (port, dest) => ['-g', '-r', file, '-l', dest, HOST, String(port)] });
      // The same request to both: tftpd-hpa 5.2 leaves windowsize out of its OACK and sends lockstep; bootfarm grants it.
      clients.push({
        label: 'atftp, 1428, asks ws 16',
        tool: 'atftp',
        args: (port, dest) => ['--option', 'blksize 1428', '--option', 'windowsize 16', '-g', '-r', file, '-l', dest, HOST, String(port)],
      });
    }

    const dest = join(dir, 'out.bin');
    const time = async (tool: string, args: string[]): Promise<number> => {
      await rm(dest, { force: true });
      const started = performance.now();
      await run(tool, args);
      const seconds = (performance.now() - started) / 1000;
      const got = await stat(dest).catch(() => null);
      if (got?.size !== size) throw new Error(`${tool} ${args.join(' ')}: got ${got?.size ?? 'no'} bytes of ${size}`);
      return seconds;
    };

    // (a) lockstep, both servers interleaved run by run.
    const lockstep: { client: string; seconds: Map<string, number> }[] = [];
    for (const c of clients) {
      o.log(`(a) ${c.label}: ${runs} runs against ${servers.map((s) => s.name).join(' and ')}...`);
      const samples = new Map<string, number[]>(servers.map((s) => [s.name, []]));
      for (let i = 0; i < runs; i++) {
        for (const s of i % 2 ? [...servers].reverse() : servers) samples.get(s.name)!.push(await time(c.tool, c.args(s.port, dest)));
      }
      lockstep.push({ client: c.label, seconds: new Map([...samples].map(([k, v]) => [k, median(v)])) });
    }

    // (b) windowsize 16 vs lockstep, bootfarm, atftp, interleaved run by run.
    const windowed: { blksize: number; lockstep: number; windowed: number }[] = [];
    if (tools.atftp) {
      for (const blksize of [512, 1428]) {
        o.log(`(b) atftp, blksize ${blksize}, lockstep and windowsize 16: ${runs} runs each...`);
        const samples = { lockstep: [] as number[], windowed: [] as number[] };
        const fetch = (ws: number) => time('atftp', ['--option', `blksize ${blksize}`, ...(ws > 1 ? ['--option', `windowsize ${ws}`] : []), '-g', '-r', file, '-l', dest, HOST, String(bootfarm.port)]);
        for (let i = 0; i < runs; i++) {
          samples.lockstep.push(await fetch(1));
          samples.windowed.push(await fetch(16));
        }
        windowed.push({ blksize, lockstep: median(samples.lockstep), windowed: median(samples.windowed) });
      }
    }

    // (c) many boots at once.
    const crowd: { server: string; seconds: number; failures: number; errors: string[] }[] = [];
    for (const s of servers) {
      o.log(`(c) ${concurrency} concurrent fetches from ${s.name}...`);
      crowd.push({ server: s.name, ...(await manyAtOnce(dir, s.port, concurrency)) });
    }

    const mibps = (seconds: number) => size / MiB / seconds;
    o.out('');
    o.out(`bootfarm TFTP benchmark: ${size / MiB} MiB file, median of ${runs} runs, loopback, ${cpus().length} CPUs, Node ${process.version}`);
    o.out('tftpd-hpa = in.tftpd 5.2 -L -s DIR (forks a process per transfer); bootfarm = startTftpServer defaults, in this process');
    o.out('');
    o.out('(a) lockstep, same client and file');
    o.out(`    ${'client'.padEnd(22)} ${servers.map((s) => s.name.padStart(16)).join(' ')}   ratio bootfarm / tftpd-hpa`);
    for (const row of lockstep) {
      const cells = servers.map((s) => `${mibps(row.seconds.get(s.name)!).toFixed(2)} MiB/s`.padStart(16));
      const hpa = row.seconds.get('tftpd-hpa');
      const ratio = hpa ? `${(hpa / row.seconds.get('bootfarm')!).toFixed(2)}x` : 'n/a';
      o.out(`    ${row.client.padEnd(22)} ${cells.join(' ')}   ${ratio}`);
    }
    if (windowed.length) {
      o.out('');
      o.out('(b) bootfarm, windowsize 16 vs lockstep (atftp)');
      for (const w of windowed) {
        o.out(`    blksize ${String(w.blksize).padEnd(5)} lockstep ${mibps(w.lockstep).toFixed(2).padStart(7)} MiB/s   windowsize 16 ${mibps(w.windowed).toFixed(2).padStart(7)} MiB/s   ${(w.lockstep / w.windowed).toFixed(2)}x`);
      }
    }
    o.out('');
    o.out(`(c) ${concurrency} concurrent fetches of ${BOOT_FILES.join(' / ')} (half EDK2-style with the tsize probe and windowsize 4, half iPXE-style)`);
    for (const c of crowd) {
      o.out(`    ${c.server.padEnd(10)} ${c.seconds.toFixed(2)} s, ${c.failures} failures${c.errors.length ? ` (${c.errors.slice(0, 3).join('; ')})` : ''}`);
    }
    const stats = bootfarm.stats();
    o.out('');
    o.out(`bootfarm server: ${stats.completed} transfers completed, ${stats.failed} failed, ${stats.retransmits} retransmissions, cache ${stats.cache.files} files / ${(stats.cache.bytes / MiB).toFixed(1)} MiB`);
  } finally {
    for (const c of cleanups) await c().catch((e: Error) => o.log(`cleanup: ${e.message}`));
  }
}

/** `concurrency` fetches at once from a child process; every file is checked against what was written. */
async function manyAtOnce(dir: string, port: number, concurrency: number): Promise<{ seconds: number; failures: number; errors: string[] }> {
  const script = `
    const { tftpGet } = await import(${JSON.stringify(join(REPO, 'appliance/tftp/client.ts'))});
    const { readFile } = await import('node:fs/promises');
    const { createHash } = await import('node:crypto');
    const sha = (b) => createHash('sha256').update(b).digest('hex');
    const [dir, port, n] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3])];
    const want = { 'snponly.efi': sha(await readFile(dir + '/snponly.efi')), 'ipxe.efi': sha(await readFile(dir + '/ipxe.efi')) };
    const base = { host: '127.0.0.1', port, retries: 10 };
    const started = performance.now();
    const results = await Promise.allSettled(Array.from({ length: n }, async (_, i) => {
      const filename = i % 2 ? 'ipxe.efi' : 'snponly.efi';
      let r;
      if (i % 4 < 2) {
        await tftpGet({ ...base, filename, sizeOnly: true });
        r = await tftpGet({ ...base, filename, blksize: 1468, windowsize: 4, tsize: true });
      } else {
        r = await tftpGet({ ...base, filename, blksize: 1432, tsize: true });
      }
      if (sha(r.data) !== want[filename]) throw new Error(filename + ': wrong bytes');
    }));
    const seconds = (performance.now() - started) / 1000;
    const errors = results.filter((r) => r.status === 'rejected').map((r) => String(r.reason.message ?? r.reason));
    console.log(JSON.stringify({ seconds, failures: errors.length, errors: [...new Set(errors)] }));
  `;
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script, dir, String(port), String(concurrency)], { cwd: REPO, maxBuffer: 1 << 20, timeout: 300_000 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`concurrent clients: ${err.message} ${stderr}`));
      resolve(JSON.parse(stdout.trim().split('\n').pop()!) as { seconds: number; failures: number; errors: string[] });
    });
  });
}

function run(cmd: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: 300_000, maxBuffer: 1 << 20 }, (err, _stdout, stderr) => (err ? reject(new Error(`${cmd}: ${err.message} ${stderr}`)) : resolve()));
  });
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** A UDP port free right now on loopback (tftpd-hpa is told to bind it). */
function freeUdpPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const sock = createSocket('udp4');
    sock.once('error', reject);
    sock.bind(0, HOST, () => {
      const { port } = sock.address();
      sock.close(() => resolve(port));
    });
  });
}

/** Polls until the server answers an RRQ (in.tftpd needs a moment to bind). */
async function waitForTftp(port: number, file: string): Promise<void> {
  const { tftpGet } = await import('../appliance/tftp/client.js');
  for (let i = 0; i < 50; i++) {
    try {
      await tftpGet({ host: HOST, port, filename: file, sizeOnly: true, timeoutMs: 100, retries: 1 });
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw new Error(`no TFTP server answered on ${HOST}:${port}`);
}
