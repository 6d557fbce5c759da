/**
 * Real TFTP clients against the server: tftp-hpa 5.2 (no RFC 2347 options:
 * lockstep, 512-byte blocks), atftp 0.8 (blksize, windowsize, tsize) and curl
 * (tsize, blksize, timeout). Files must arrive byte-identical: the Debian
 * iPXE builds and a file of more than 65535 blocks of 512 bytes (block
 * numbers roll over; every client here handles that).
 *
 * Loopback first; then, as root, inside a network namespace of our own
 * (192.0.2.1/24 on its lo, nothing leaves it) where 10 % of the packets are
 * dropped: every transfer with every client must still complete
 * byte-identical. The loss is netem on lo when the kernel has it; kernels
 * without sch_netem (this CI's Firecracker kernel) get the same from an
 * nftables rule dropping 10 % of UDP at the input hook (at the output hook
 * the sender would see EPERM instead of a silent loss, and curl and tftp-hpa
 * give up on a failed send).
 * A client that is not installed skips its tests (CI installs them all).
 */
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { copyFile, mkdtemp, readFile, realpath, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it, type TestContext } from 'vitest';
import { startTftpServer, type TftpServer, type TftpServerStats } from '../../appliance/tftp/server.js';

const IPXE_DIR = '/usr/lib/ipxe';
const BOOT_FILES = ['undionly.kpxe', 'ipxe.pxe', 'snponly.efi', 'ipxe.efi'];
const ROLLOVER = 'rollover.bin';
const ROLLOVER_SIZE = 65536 * 512 + 4321;
const REPO = fileURLToPath(new URL('../..', import.meta.url));

const has = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
const HAVE = { tftp: has('tftp'), atftp: has('atftp'), curl: has('curl') };
const haveIpxe = BOOT_FILES.every((f) => existsSync(join(IPXE_DIR, f)));
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

let root: string;
let out: string;
const want = new Map<string, string>();

beforeAll(async () => {
  root = await realpath(await mkdtemp(join(tmpdir(), 'bootfarm-tftp-interop-')));
  out = await mkdtemp(join(tmpdir(), 'bootfarm-tftp-out-'));
  for (const f of BOOT_FILES) {
    if (haveIpxe) await copyFile(await realpath(join(IPXE_DIR, f)), join(root, f)); // ipxe.efi is a symlink to /boot
    else await writeFile(join(root, f), randomBytes(100_000));
    want.set(f, sha(await readFile(join(root, f))));
  }
  const big = randomBytes(ROLLOVER_SIZE);
  for (let at = 0; at + 8 <= big.length; at += 512) big.writeDoubleLE(at / 512, at);
  await writeFile(join(root, ROLLOVER), big);
  want.set(ROLLOVER, sha(big));
}, 60_000);

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
  await rm(out, { recursive: true, force: true });
});

interface Run {
  code: number | null;
  output: string;
}

/** Runs a command without blocking the event loop (the server may share it). */
function run(cmd: string, args: string[], o: { input?: string; timeoutMs?: number } = {}): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(cmd, args, { timeout: o.timeoutMs ?? 120_000, maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, output: `${stdout}${stderr}` });
    });
    if (o.input !== undefined) child.stdin?.end(o.input);
  });
}

interface Client {
  name: keyof typeof HAVE;
  label: string;
  /** argv to fetch `file` into `dest` from host:port; `prefix` wraps it (ip netns exec). */
  get(host: string, port: number, file: string, dest: string): { cmd: string; args: string[]; input?: string };
}

const CLIENTS: Client[] = [
  {
    name: 'tftp',
    label: 'tftp-hpa -m binary',
    // Commands on stdin: the only way to set the client's retransmit timeout (rexmt; 5 s by default).
    get: (host, port, file, dest) => ({ cmd: 'tftp', args: [host, String(port)], input: `mode binary\nrexmt 1\nget ${file} ${dest}\nquit\n` }),
  },
  { name: 'atftp', label: 'atftp (no options)', get: (host, port, file, dest) => ({ cmd: 'atftp', args: ['--tftp-timeout', '1', '-g', '-r', file, '-l', dest, host, String(port)] }) },
  {
    name: 'atftp',
    label: 'atftp blksize 1428 windowsize 16 tsize',
    get: (host, port, file, dest) => ({ cmd: 'atftp', args: ['--tftp-timeout', '1', '--option', 'blksize 1428', '--option', 'windowsize 16', '--option', 'tsize', '-g', '-r', file, '-l', dest, host, String(port)] }),
  },
  // curl's own timers as they come: a lost RRQ is resent every ~6 s (it asks for timeout 6). A short
  // --connect-timeout would make it give up after three RRQs, which 10 % loss defeats now and then.
  { name: 'curl', label: 'curl', get: (host, port, file, dest) => ({ cmd: 'curl', args: ['-sS', '-o', dest, `tftp://${host}:${port}/${file}`] }) },
  { name: 'curl', label: 'curl --tftp-blksize 1428', get: (host, port, file, dest) => ({ cmd: 'curl', args: ['-sS', '--tftp-blksize', '1428', '-o', dest, `tftp://${host}:${port}/${file}`] }) },
];

let seq = 0;
async function fetchWith(c: Client, host: string, port: number, file: string, wrap: string[] = []): Promise<{ run: Run; sha: string | null; seconds: number }> {
  const dest = join(out, `${c.name}-${seq++}`);
  const { cmd, args, input } = c.get(host, port, file, dest);
  const started = performance.now();
  const r = await run(wrap.length ? wrap[0]! : cmd, wrap.length ? [...wrap.slice(1), cmd, ...args] : args, { input });
  const seconds = (performance.now() - started) / 1000;
  const data = await readFile(dest).catch(() => null);
  await rm(dest, { force: true });
  return { run: r, sha: data ? sha(data) : null, seconds };
}

describe('real clients on loopback', () => {
  let s: TftpServer;
  beforeAll(async () => {
    s = await startTftpServer({ host: '127.0.0.1', port: 0, root: () => root });
  });
  afterAll(() => s.close());

  for (const c of CLIENTS) {
    it.skipIf(!HAVE[c.name]).each(BOOT_FILES)(`${c.label}: %s arrives byte-identical`, async (file) => {
      const r = await fetchWith(c, '127.0.0.1', s.port, file);
      expect(r.run.output).not.toMatch(/error/i);
      expect(r.sha).toBe(want.get(file));
    });
  }

  // 65537 blocks of 512 bytes: tftp-hpa (which cannot ask for a larger block), atftp and curl all take DATA 0 after DATA 65535.
  for (const c of CLIENTS.filter((x) => x.label !== 'curl --tftp-blksize 1428')) {
    it.skipIf(!HAVE[c.name])(`${c.label}: a file of more than 65535 blocks arrives byte-identical (rollover)`, async () => {
      const r = await fetchWith(c, '127.0.0.1', s.port, ROLLOVER);
      expect(r.sha).toBe(want.get(ROLLOVER));
    }, 120_000);
  }

  it.skipIf(!HAVE.curl)('curl is refused traversal, a missing file and an upload, and still gets files afterwards', async () => {
    const curl = (...args: string[]) => run('curl', ['-sS', '-o', join(out, 'refused'), ...args]);
    // --path-as-is: curl would otherwise resolve the ".." itself.
    expect((await curl('--path-as-is', `tftp://127.0.0.1:${s.port}/../etc/passwd`)).code).toBe(69); // CURLE_REMOTE_ACCESS_DENIED: TFTP error 2
    expect((await curl(`tftp://127.0.0.1:${s.port}/%2Fetc%2Fpasswd`)).code).toBe(68); // CURLE_TFTP_NOTFOUND: <root>/etc/passwd
    expect((await curl(`tftp://127.0.0.1:${s.port}/nope.efi`)).code).toBe(68);
    await writeFile(join(out, 'up.txt'), 'upload');
    expect((await run('curl', ['-sS', '-T', join(out, 'up.txt'), `tftp://127.0.0.1:${s.port}/up.txt`])).code).toBe(69);
    expect(existsSync(join(root, 'up.txt'))).toBe(false);
    expect((await fetchWith(CLIENTS[3]!, '127.0.0.1', s.port, 'snponly.efi')).sha).toBe(want.get('snponly.efi'));
  });

  it.skipIf(!HAVE.tftp)('tftp-hpa is refused traversal, backslashes and a put', async () => {
    const hpa = (cmds: string) => run('tftp', ['127.0.0.1', String(s.port)], { input: `mode binary\n${cmds}\nquit\n` });
    expect((await hpa(`get ../etc/passwd ${join(out, 'p1')}`)).output).toMatch(/Error code 2/);
    expect((await hpa(`get ..\\..\\etc\\passwd ${join(out, 'p2')}`)).output).toMatch(/Error code 2/);
    await writeFile(join(out, 'up2.txt'), 'upload');
    expect((await hpa(`put ${join(out, 'up2.txt')} up2.txt`)).output).toMatch(/Error code 2/);
    expect((await fetchWith(CLIENTS[0]!, '127.0.0.1', s.port, 'undionly.kpxe')).sha).toBe(want.get('undionly.kpxe'));
  });
});

// ------------------------------------------------------------------ 10 % loss

const NS = `bf-tftp-${process.pid}`;
const NS_ADDR = '192.0.2.1';
const isRoot = process.getuid?.() === 0;

interface NsServer {
  port: number;
  child: ChildProcess;
  stats(): Promise<TftpServerStats>;
}

/** The server in its own process inside the namespace (a process cannot move one socket into another namespace). */
async function startNsServer(): Promise<NsServer> {
  const script = `
    const { startTftpServer } = await import(${JSON.stringify(join(REPO, 'appliance/tftp/server.ts'))});
    const s = await startTftpServer({ host: ${JSON.stringify(NS_ADDR)}, port: 0, root: () => ${JSON.stringify(root)}, timeoutMs: 25, maxRetries: 12 });
    console.log(JSON.stringify({ port: s.port }));
    process.stdin.on('data', () => console.log(JSON.stringify({ stats: s.stats() })));
    process.stdin.on('end', () => s.close().then(() => process.exit(0)));
  `;
  const child = spawn('ip', ['netns', 'exec', NS, process.execPath, '--import', 'tsx', '--input-type=module', '-e', script], { cwd: REPO, stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout! });
  const waiting: ((line: Record<string, unknown>) => void)[] = [];
  lines.on('line', (l) => waiting.shift()?.(JSON.parse(l) as Record<string, unknown>));
  const nextLine = () =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('namespace server did not answer')), 20_000);
      waiting.push((l) => {
        clearTimeout(t);
        resolve(l);
      });
    });
  const first = await nextLine();
  return {
    port: first.port as number,
    child,
    stats: async () => {
      const next = nextLine();
      child.stdin!.write('\n');
      return (await next).stats as TftpServerStats;
    },
  };
}

function sh(args: string[]): void {
  const r = spawnSync(args[0]!, args.slice(1), { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${args.join(' ')}: ${r.stderr || r.error?.message}`);
}

describe('real clients through 10 % packet loss (netem in a network namespace)', () => {
  let ns: NsServer | undefined;
  let skipReason = '';

  beforeAll(async () => {
    if (!isRoot) {
      skipReason = 'needs root for a network namespace';
      return;
    }
    try {
      sh(['ip', 'netns', 'add', NS]);
      sh(['ip', '-n', NS, 'link', 'set', 'lo', 'up']);
      sh(['ip', '-n', NS, 'addr', 'add', `${NS_ADDR}/24`, 'dev', 'lo']);
      try {
        sh(['ip', 'netns', 'exec', NS, 'tc', 'qdisc', 'add', 'dev', 'lo', 'root', 'netem', 'loss', '10%']);
      } catch {
        const rules = 'table inet bootfarm_loss { chain in { type filter hook input priority 0; policy accept; meta l4proto udp numgen random mod 100 < 10 counter drop; }; }';
        const r = spawnSync('ip', ['netns', 'exec', NS, 'nft', '-f', '-'], { input: rules, encoding: 'utf8' });
        if (r.status !== 0) throw new Error(`neither netem nor nftables: ${r.stderr || r.error?.message}`);
      }
      ns = await startNsServer();
    } catch (e) {
      skipReason = `cannot set up the namespace: ${(e as Error).message}`;
    }
  }, 60_000);

  afterAll(async () => {
    if (ns) {
      ns.child.stdin!.end();
      await new Promise((r) => ns!.child.once('exit', r));
    }
    spawnSync('ip', ['netns', 'del', NS]);
  });

  const cases: [Client, string[]][] = [
    [CLIENTS[0]!, ['undionly.kpxe', 'snponly.efi']], // 512-byte lockstep: ~500 blocks through loss
    [CLIENTS[1]!, ['undionly.kpxe']],
    [CLIENTS[2]!, ['undionly.kpxe', 'ipxe.pxe', 'snponly.efi', 'ipxe.efi']],
    [CLIENTS[3]!, ['undionly.kpxe']],
    [CLIENTS[4]!, ['undionly.kpxe', 'ipxe.pxe', 'snponly.efi', 'ipxe.efi']],
  ];
  for (const [c, names] of cases) {
    it.skipIf(!HAVE[c.name]).for(names)(`${c.label}: %s arrives byte-identical through 10 % loss`, { timeout: 120_000 }, async (file: string, ctx: TestContext) => {
      if (!ns) return ctx.skip(skipReason);
      const r = await fetchWith(c, NS_ADDR, ns.port, file, ['ip', 'netns', 'exec', NS]);
      expect(r.sha, r.run.output).toBe(want.get(file));
    });
  }

  it('the loss was real: the server retransmitted, and no transfer failed', async (ctx) => {
    if (!ns) return ctx.skip(skipReason);
    const stats = await ns.stats();
    expect(stats.retransmits).toBeGreaterThan(50);
    expect(stats.failed).toBe(0);
  });
});
