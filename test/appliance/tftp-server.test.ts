/**
 * The TFTP server in-process on loopback, driven by the codec-based client
 * (appliance/tftp/client.ts) and by a raw socket where the test needs to
 * control every packet: negotiation, rollover, windows, retransmission with
 * backoff, the Sorcerer's Apprentice rule, client aborts, files changing
 * under a transfer, path safety, writes, malformed packets and 500 boots at once.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, open, realpath, rm, symlink, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LogLevel } from '../../appliance/log.js';
import { tftpGet, TftpRemoteError } from '../../appliance/tftp/client.js';
import { decodeTftp, encodeTftp, TftpDecodeError, type TftpPacket } from '../../appliance/tftp/codec.js';
import { startTftpServer, type TftpServer, type TftpServerOptions } from '../../appliance/tftp/server.js';

const HOST = '127.0.0.1';
const IPXE_DIR = '/usr/lib/ipxe';
const BOOT_FILES = ['undionly.kpxe', 'ipxe.pxe', 'snponly.efi', 'ipxe.efi'];
/** 65536 full blocks of 512 bytes and a bit: block numbers roll over once. */
const ROLLOVER_SIZE = 65536 * 512 + 1000;

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Logged {
  level: LogLevel;
  msg: string;
  fields?: Record<string, unknown>;
}

let root: string;
let outside: string;
const files = new Map<string, Buffer>();

/** A file whose every 512-byte block starts with its own index: a block sent in the wrong place shows. */
function stampedFile(size: number): Buffer {
  const b = randomBytes(size);
  for (let at = 0; at + 8 <= size; at += 512) b.writeDoubleLE(at / 512, at);
  return b;
}

async function put(name: string, data: Buffer): Promise<void> {
  await mkdir(join(root, name, '..'), { recursive: true });
  await writeFile(join(root, name), data);
  files.set(name, data);
}

beforeAll(async () => {
  root = await realpath(await mkdtemp(join(tmpdir(), 'bootfarm-tftp-')));
  outside = await realpath(await mkdtemp(join(tmpdir(), 'bootfarm-tftp-outside-')));
  for (const f of BOOT_FILES) {
    // The real iPXE builds when the Debian package is installed (ipxe.efi there is a symlink to /boot), random bytes of a like size otherwise.
    const src = join(IPXE_DIR, f);
    if (existsSync(src)) {
      await copyFile(await realpath(src), join(root, f));
      files.set(f, await (await import('node:fs/promises')).readFile(join(root, f)));
    } else {
      await put(f, randomBytes({ 'undionly.kpxe': 74213, 'ipxe.pxe': 307171, 'snponly.efi': 173792, 'ipxe.efi': 850528 }[f] ?? 1000));
    }
  }
  await put('empty.bin', Buffer.alloc(0));
  await put('exact.bin', randomBytes(2048));
  await put('ten.bin', stampedFile(20 * 512));
  await put('pxe/x86/boot.bin', randomBytes(3000));
  await put('rollover.bin', stampedFile(ROLLOVER_SIZE));
  await mkdir(join(root, 'dir'));
  await writeFile(join(outside, 'secret'), 'not for targets');
  await symlink('/etc/passwd', join(root, 'passwd-link'));
  await symlink('/etc', join(root, 'etc-link'));
  await symlink(join(outside, 'secret'), join(root, 'secret-link'));
  await symlink('snponly.efi', join(root, 'inside-link'));
}, 60_000);

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
  await rm(outside, { recursive: true, force: true });
});

async function server(o: Partial<TftpServerOptions> = {}): Promise<{ s: TftpServer; logs: Logged[] }> {
  const logs: Logged[] = [];
  const s = await startTftpServer({ host: HOST, port: 0, root: () => root, log: (level, msg, fields) => logs.push({ level, msg, fields }), ...o });
  return { s, logs };
}

// ----------------------------------------------------------------- raw peer

interface Received {
  p: TftpPacket | null;
  port: number;
  at: number;
}

interface RawPeer {
  port: number;
  send(p: TftpPacket | Buffer, port: number): void;
  next(ms?: number): Promise<Received | null>;
  /** Everything that arrives within `ms`. */
  collect(ms: number): Promise<Received[]>;
  close(): void;
}

async function rawPeer(): Promise<RawPeer> {
  const sock: Socket = createSocket('udp4');
  await new Promise<void>((r) => sock.bind(0, HOST, () => r()));
  const queue: Received[] = [];
  let wake: (() => void) | undefined;
  sock.on('message', (msg, rinfo) => {
    let p: TftpPacket | null = null;
    try {
      p = decodeTftp(msg);
    } catch (e) {
      if (!(e instanceof TftpDecodeError)) throw e;
    }
    queue.push({ p, port: rinfo.port, at: performance.now() });
    wake?.();
  });
  return {
    port: sock.address().port,
    send: (p, port) => sock.send(Buffer.isBuffer(p) ? p : encodeTftp(p), port, HOST),
    async next(ms = 2000) {
      if (queue.length === 0) {
        await new Promise<void>((r) => {
          const t = setTimeout(r, ms);
          wake = () => {
            clearTimeout(t);
            r();
          };
        });
        wake = undefined;
      }
      return queue.shift() ?? null;
    },
    async collect(ms) {
      await sleep(ms);
      return queue.splice(0);
    },
    close: () => sock.close(),
  };
}

const rrq = (filename: string, options: Record<string, string> = {}, mode = 'octet'): TftpPacket => ({ op: 'RRQ', filename, mode, options: Object.entries(options).map(([name, value]) => ({ name, value })) });

/** Sends a request and returns the first answer, which must come from a new port (RFC 1350 TID). */
async function ask(s: TftpServer, p: TftpPacket | Buffer): Promise<Received> {
  const peer = await rawPeer();
  try {
    peer.send(p, s.port);
    const got = await peer.next();
    if (!got) throw new Error('no answer');
    expect(got.port).not.toBe(s.port);
    return got;
  } finally {
    peer.close();
  }
}

// ----------------------------------------------------------------- tests

describe('serving files', () => {
  let s: TftpServer;
  let logs: Logged[];
  beforeAll(async () => ({ s, logs } = await server()));
  afterAll(() => s.close());

  it.each(BOOT_FILES)('%s: byte-identical lockstep (RFC 1350, no options), as iPXE asks (blksize 1432 + tsize) and as EDK2 asks (windowsize 4)', async (name) => {
    const want = files.get(name)!;
    const plain = await tftpGet({ host: HOST, port: s.port, filename: name });
    expect(plain.oack).toEqual([]);
    expect(sha(plain.data)).toBe(sha(want));
    const ipxe = await tftpGet({ host: HOST, port: s.port, filename: name, blksize: 1432, tsize: true });
    expect(ipxe).toMatchObject({ tsize: want.length, blksize: 1432, windowsize: 1 });
    expect(sha(ipxe.data)).toBe(sha(want));
    const edk2 = await tftpGet({ host: HOST, port: s.port, filename: name, blksize: 1468, tsize: true, windowsize: 4 });
    expect(edk2).toMatchObject({ tsize: want.length, blksize: 1468, windowsize: 4 });
    expect(sha(edk2.data)).toBe(sha(want));
  });

  it('answers EDK2 the way it boots: tsize probe aborted with error 8, then the transfer; the abort is quiet', async () => {
    await sleep(50); // the last ACK of the previous test may still be on its way
    const before = s.stats();
    const probe = await tftpGet({ host: HOST, port: s.port, filename: 'snponly.efi', sizeOnly: true });
    expect(probe.tsize).toBe(files.get('snponly.efi')!.length);
    expect(probe.data.length).toBe(0);
    const real = await tftpGet({ host: HOST, port: s.port, filename: 'snponly.efi', blksize: 1468, windowsize: 4, tsize: true });
    expect(sha(real.data)).toBe(sha(files.get('snponly.efi')!));
    await sleep(50);
    const after = s.stats();
    expect(after.aborted - before.aborted).toBe(1);
    expect(after.completed - before.completed).toBe(1);
    expect(logs.filter((l) => l.level === 'warn' || l.level === 'error')).toEqual([]);
  });

  it('rolls block numbers over from 65535 to 0 (a file of more than 65535 blocks of 512 bytes)', async () => {
    const want = files.get('rollover.bin')!;
    const got = await tftpGet({ host: HOST, port: s.port, filename: 'rollover.bin', tsize: true, windowsize: 64, blksize: 512 });
    expect(got.tsize).toBe(ROLLOVER_SIZE);
    expect(got.data.length).toBe(ROLLOVER_SIZE);
    expect(sha(got.data)).toBe(sha(want));
  }, 60_000);

  it('ends an empty file, and a file that is a multiple of blksize, with an empty block', async () => {
    expect((await tftpGet({ host: HOST, port: s.port, filename: 'empty.bin' })).data.length).toBe(0);
    const exact = await tftpGet({ host: HOST, port: s.port, filename: 'exact.bin', blksize: 1024 });
    expect(sha(exact.data)).toBe(sha(files.get('exact.bin')!));
  });

  it('maps a leading slash to the root, serves sub-folders and symlinks that stay inside the root', async () => {
    expect(sha((await tftpGet({ host: HOST, port: s.port, filename: '/snponly.efi' })).data)).toBe(sha(files.get('snponly.efi')!));
    expect(sha((await tftpGet({ host: HOST, port: s.port, filename: 'pxe/x86/boot.bin' })).data)).toBe(sha(files.get('pxe/x86/boot.bin')!));
    expect(sha((await tftpGet({ host: HOST, port: s.port, filename: 'inside-link' })).data)).toBe(sha(files.get('snponly.efi')!));
  });

  it('negotiates within its limits: blksize clamped, windowsize capped by blocks and bytes, unknown options ignored, client spelling kept', async () => {
    const { s: small } = await server({ maxBlksize: 1400, maxWindowSize: 8, maxWindowBytes: 4 * 1400 });
    try {
      const got = await ask(small, rrq('ten.bin', { BLKSIZE: '65464', windowsize: '64', multicast: '', tsize: '0', Timeout: '3' }));
      expect(got.p).toEqual({
        op: 'OACK',
        options: [
          { name: 'BLKSIZE', value: '1400' },
          { name: 'windowsize', value: '4' },
          { name: 'tsize', value: '10240' },
          { name: 'Timeout', value: '3' },
        ],
      });
      // Only unknown options: no OACK, DATA 1 at 512 bytes (RFC 2347).
      const plain = await ask(small, rrq('ten.bin', { multicast: '' }));
      expect(plain.p).toMatchObject({ op: 'DATA', block: 1 });
      expect((plain.p as { data: Buffer }).data.length).toBe(512);
    } finally {
      await small.close();
    }
  });

  it('ignores a retransmitted RRQ from the same port (one transfer), and a new request from that port replaces the old one', async () => {
    const before = s.stats();
    const peer = await rawPeer();
    try {
      peer.send(rrq('ten.bin', { blksize: '512' }), s.port);
      peer.send(rrq('ten.bin', { blksize: '512' }), s.port);
      const first = await peer.next();
      expect(first?.p).toMatchObject({ op: 'OACK' });
      expect(await peer.collect(100)).toEqual([]);
      expect(s.stats().duplicateRequests - before.duplicateRequests).toBe(1);
      // iPXE reuses its source port for the next file: a different request starts afresh.
      peer.send(rrq('exact.bin'), s.port);
      const second = await peer.next();
      expect(second?.p).toMatchObject({ op: 'DATA', block: 1 });
      expect(second?.port).not.toBe(first?.port);
      peer.send({ op: 'ERROR', code: 0, message: 'done' }, second!.port);
    } finally {
      peer.close();
    }
  });
});

describe('retransmission', () => {
  it('never retransmits on a duplicate or old ACK in lockstep (Sorcerer\'s Apprentice)', async () => {
    const { s } = await server({ timeoutMs: 1000 });
    const peer = await rawPeer();
    try {
      peer.send(rrq('ten.bin'), s.port);
      const d1 = await peer.next();
      expect(d1?.p).toMatchObject({ op: 'DATA', block: 1 });
      const tid = d1!.port;
      for (let i = 0; i < 3; i++) peer.send({ op: 'ACK', block: 1 }, tid);
      const got = await peer.collect(300);
      expect(got.map((r) => r.p)).toMatchObject([{ op: 'DATA', block: 2 }]);
      peer.send({ op: 'ACK', block: 1 }, tid);
      peer.send({ op: 'ACK', block: 0 }, tid);
      expect(await peer.collect(300)).toEqual([]);
      expect(s.stats().retransmits).toBe(0);
    } finally {
      peer.close();
      await s.close();
    }
  });

  it('resends after a silent timeout with exponential backoff up to the cap, then drops the transfer', async () => {
    const { s, logs } = await server({ timeoutMs: 100, maxTimeoutMs: 400, maxRetries: 3 });
    const peer = await rawPeer();
    try {
      peer.send(rrq('ten.bin'), s.port);
      const got = await peer.collect(1600);
      expect(got.map((r) => r.p)).toMatchObject([1, 2, 3, 4].map(() => ({ op: 'DATA', block: 1 })));
      const gaps = got.slice(1).map((r, i) => r.at - got[i]!.at);
      // 100, 200, 400 (doubling, capped at 400) ms; timers are late, never early.
      [100, 200, 400].forEach((want, i) => {
        expect(gaps[i]).toBeGreaterThanOrEqual(want - 5);
        expect(gaps[i]).toBeLessThan(want + 150);
      });
      expect(s.stats()).toMatchObject({ active: 0, failed: 1, retransmits: 3 });
      expect(logs.some((l) => l.level === 'warn' && l.msg.includes('stopped answering'))).toBe(true);
    } finally {
      peer.close();
      await s.close();
    }
  });

  it('resends the whole unacknowledged window, and goes back to the block after a partial ACK (RFC 7440)', async () => {
    const { s } = await server({ timeoutMs: 200 });
    const peer = await rawPeer();
    const blocks = (rs: Received[]) => rs.map((r) => (r.p?.op === 'DATA' ? r.p.block : r.p?.op));
    try {
      peer.send(rrq('ten.bin', { blksize: '512', windowsize: '4' }), s.port);
      const oack = await peer.next();
      expect(oack?.p).toMatchObject({ op: 'OACK' });
      const tid = oack!.port;
      peer.send({ op: 'ACK', block: 0 }, tid);
      expect(blocks(await peer.collect(120))).toEqual([1, 2, 3, 4]);
      expect(blocks(await peer.collect(250))).toEqual([1, 2, 3, 4]); // timeout: the whole window again
      peer.send({ op: 'ACK', block: 2 }, tid); // the client saw a gap after block 2
      expect(blocks(await peer.collect(120))).toEqual([3, 4, 5, 6]);
      peer.send({ op: 'ACK', block: 6 }, tid);
      peer.send({ op: 'ACK', block: 6 }, tid); // duplicate: nothing more
      expect(blocks(await peer.collect(120))).toEqual([7, 8, 9, 10]);
      peer.send({ op: 'ERROR', code: 0, message: 'enough' }, tid);
      await sleep(50);
      expect(s.stats()).toMatchObject({ active: 0, aborted: 1 });
    } finally {
      peer.close();
      await s.close();
    }
  });

  it('sends the OACK again at once when the client repeats its RRQ, and from the timer only after oackTimeoutMs; an unanswered OACK is dropped in time', async () => {
    const { s } = await server({ timeoutMs: 50, oackTimeoutMs: 300, maxTimeoutMs: 300, maxRetries: 2 });
    const peer = await rawPeer();
    try {
      const request = rrq('ten.bin', { blksize: '1024', tsize: '0' });
      peer.send(request, s.port);
      const oack = await peer.next();
      expect(oack?.p).toMatchObject({ op: 'OACK' });
      expect(await peer.collect(200)).toEqual([]); // the client gets time to resend its ACK 0 first (atftp aborts on a second OACK)
      peer.send(request, s.port); // the client did not get the OACK
      const again = await peer.next();
      expect(again).toMatchObject({ p: { op: 'OACK' }, port: oack!.port });
      const timed = await peer.next(500); // nothing from the client: the timer resends (curl waits 72 s for DATA 1 otherwise)
      expect(timed).toMatchObject({ p: { op: 'OACK' }, port: oack!.port });
      expect(timed!.at - again!.at).toBeGreaterThanOrEqual(295);
      peer.send({ op: 'ACK', block: 0 }, oack!.port);
      expect((await peer.next())?.p).toMatchObject({ op: 'DATA', block: 1 });
      peer.send({ op: 'ERROR', code: 0, message: 'enough' }, oack!.port);
      // A client that never answers the OACK: dropped after the retries (300 + 300 + 300 ms).
      const quiet = await rawPeer();
      quiet.send(request, s.port);
      expect((await quiet.next())?.p).toMatchObject({ op: 'OACK' });
      await sleep(1100);
      expect(s.stats()).toMatchObject({ active: 0, failed: 1, duplicateRequests: 1 });
      quiet.close();
    } finally {
      peer.close();
      await s.close();
    }
  });

  it('ends quietly on an ERROR from the client: nothing is sent after it', async () => {
    const { s, logs } = await server({ timeoutMs: 100 });
    const peer = await rawPeer();
    try {
      peer.send(rrq('snponly.efi', { tsize: '0', blksize: '1468', windowsize: '4' }), s.port);
      const oack = await peer.next();
      expect(oack?.p).toMatchObject({ op: 'OACK' });
      peer.send({ op: 'ERROR', code: 8, message: 'User aborted the transfer' }, oack!.port);
      expect(await peer.collect(400)).toEqual([]);
      expect(s.stats()).toMatchObject({ active: 0, aborted: 1, failed: 0, retransmits: 0 });
      expect(logs.filter((l) => l.level !== 'debug' && l.msg !== 'tftp: listening')).toEqual([]);
    } finally {
      peer.close();
      await s.close();
    }
  });
});

describe('files that change under a transfer', () => {
  async function transferUntilError(s: TftpServer, name: string, change: () => Promise<void>): Promise<{ blocks: number; end: TftpPacket | null }> {
    const peer = await rawPeer();
    try {
      peer.send(rrq(name, { blksize: '1024' }), s.port);
      let got = await peer.next();
      expect(got?.p).toMatchObject({ op: 'OACK' });
      peer.send({ op: 'ACK', block: 0 }, got!.port);
      let blocks = 0;
      for (;;) {
        got = await peer.next();
        if (!got || got.p?.op !== 'DATA') return { blocks, end: got?.p ?? null };
        blocks++;
        if (blocks === 10) await change();
        peer.send({ op: 'ACK', block: got.p.block }, got.port);
        if (got.p.data.length < 1024) return { blocks, end: got.p };
      }
    } finally {
      peer.close();
    }
  }

  it('a file truncated mid-transfer ends with an ERROR, never with a short file passed off as whole', async () => {
    const { s } = await server({ cache: { maxFileBytes: 1024 } });
    const path = join(root, 'shrinking.bin');
    await writeFile(path, randomBytes(2 * 2 ** 20));
    try {
      const r = await transferUntilError(s, 'shrinking.bin', () => truncate(path, 5000));
      expect(r.end).toMatchObject({ op: 'ERROR', code: 0, message: 'the file shrank during the transfer' });
      expect(r.blocks).toBeLessThan(2048);
      expect(s.stats()).toMatchObject({ failed: 1, active: 0 });
    } finally {
      await s.close();
    }
  });

  it('a file rewritten in place mid-transfer ends with an ERROR', async () => {
    const { s } = await server({ cache: { maxFileBytes: 1024 } });
    const path = join(root, 'rewritten.bin');
    await writeFile(path, randomBytes(2 * 2 ** 20));
    try {
      const r = await transferUntilError(s, 'rewritten.bin', async () => {
        await sleep(20);
        const fh = await open(path, 'r+');
        await fh.write(randomBytes(4096), 0, 4096, 2 ** 20);
        await fh.close();
      });
      expect(r.end).toMatchObject({ op: 'ERROR', code: 0, message: 'the file changed during the transfer' });
    } finally {
      await s.close();
    }
  });

  it('a cached file replaced on disk is served new at the next request', async () => {
    const { s } = await server();
    try {
      await writeFile(join(root, 'replaced.bin'), 'first version');
      expect((await tftpGet({ host: HOST, port: s.port, filename: 'replaced.bin' })).data.toString()).toBe('first version');
      await sleep(10);
      await writeFile(join(root, 'replaced.bin.new'), 'second version!');
      await (await import('node:fs/promises')).rename(join(root, 'replaced.bin.new'), join(root, 'replaced.bin'));
      expect((await tftpGet({ host: HOST, port: s.port, filename: 'replaced.bin' })).data.toString()).toBe('second version!');
      expect(s.stats().cache).toMatchObject({ files: 1 });
    } finally {
      await s.close();
    }
  });
});

describe('path safety and refusals', () => {
  let s: TftpServer;
  beforeAll(async () => ({ s } = await server()));
  afterAll(() => s.close());

  const refusals: [string, TftpPacket | Buffer, number][] = [
    ['../etc/passwd', rrq('../etc/passwd'), 2],
    ['../../../../etc/passwd', rrq('../../../../etc/passwd'), 2],
    ['/etc/passwd (means <root>/etc/passwd)', rrq('/etc/passwd'), 1],
    ['/../etc/passwd', rrq('/../etc/passwd'), 2],
    ['a\\..\\b', rrq('a\\..\\b'), 2],
    ['..\\..\\etc\\passwd', rrq('..\\..\\etc\\passwd'), 2],
    ['pxe/../snponly.efi (".." even inside the root)', rrq('pxe/../snponly.efi'), 2],
    // The NUL ends the name: "passwd" becomes the mode, which is refused.
    ['a NUL inside the name', Buffer.concat([Buffer.from([0, 1]), Buffer.from('../etc\0passwd\0octet\0', 'latin1')]), 4],
    ['symlink to /etc/passwd', rrq('passwd-link'), 2],
    ['file under a symlink to /etc', rrq('etc-link/passwd'), 2],
    ['symlink to another folder', rrq('secret-link'), 2],
    ['a folder', rrq('dir'), 2],
    ['the root itself', rrq('/'), 2],
    ['a missing file', rrq('nope.efi'), 1],
    ['netascii', rrq('snponly.efi', {}, 'netascii'), 4],
    ['a write (WRQ)', { op: 'WRQ', filename: 'snponly.efi', mode: 'octet', options: [] }, 2],
  ];

  it.each(refusals)('%s gets an ERROR packet, and the server still serves', async (_name, packet, code) => {
    const got = await ask(s, packet);
    expect(got.p).toMatchObject({ op: 'ERROR', code });
    expect(sha((await tftpGet({ host: HOST, port: s.port, filename: 'undionly.kpxe', blksize: 1432 })).data)).toBe(sha(files.get('undionly.kpxe')!));
  });

  it('serves a symlink out of the root only into a folder listed in symlinkTargets (Debian: /usr/lib/ipxe/ipxe.efi -> /boot)', async () => {
    const { s: allowing } = await server({ symlinkTargets: [outside] });
    try {
      expect((await tftpGet({ host: HOST, port: allowing.port, filename: 'secret-link' })).data.toString()).toBe('not for targets');
      expect((await ask(allowing, rrq('passwd-link'))).p).toMatchObject({ op: 'ERROR', code: 2 });
    } finally {
      await allowing.close();
    }
  });

  it('refuses everything when the root is missing, and recovers when it is back (root is read at each request)', async () => {
    let current = join(root, 'not-there');
    const { s: moving } = await server({ root: () => current });
    try {
      expect((await ask(moving, rrq('snponly.efi'))).p).toMatchObject({ op: 'ERROR', code: 1 });
      current = root;
      expect((await tftpGet({ host: HOST, port: moving.port, filename: 'ten.bin' })).data.length).toBe(10240);
    } finally {
      await moving.close();
    }
  });
});

describe('malformed packets', () => {
  it('random and mutated packets to the listening port and into a transfer never crash the server; it still serves', async () => {
    const { s, logs } = await server({ timeoutMs: 200 });
    const peer = await rawPeer();
    try {
      const real = [rrq('snponly.efi', { blksize: '1468', tsize: '0', windowsize: '4' }), rrq('ipxe.efi', { blksize: '1432' }), { op: 'ACK', block: 1 } as TftpPacket].map(encodeTftp);
      const noise = [
        ...fc.sample(fc.uint8Array({ maxLength: 600 }), { numRuns: 1500, seed: 42 }).map((a) => Buffer.from(a)),
        ...fc.sample(fc.tuple(fc.constantFrom(...real), fc.nat(), fc.integer({ min: 0, max: 255 })), { numRuns: 1500, seed: 7 }).map(([b, at, v]) => {
          const c = Buffer.from(b);
          c[at % c.length] = v;
          return c.subarray(0, (at >> 3) % (c.length + 1) || c.length);
        }),
      ];
      // A transfer in progress gets noise from its own client too.
      peer.send(rrq('ipxe.efi', { blksize: '1432' }), s.port);
      const oack = await peer.next();
      expect(oack?.p).toMatchObject({ op: 'OACK' });
      for (const [i, n] of noise.entries()) {
        peer.send(n, i % 2 ? s.port : oack!.port);
        if (i % 100 === 0) await sleep(1);
      }
      await sleep(300);
      expect(s.stats().malformed).toBeGreaterThan(0);
      const got = await tftpGet({ host: HOST, port: s.port, filename: 'snponly.efi', blksize: 1468, windowsize: 4, tsize: true });
      expect(sha(got.data)).toBe(sha(files.get('snponly.efi')!));
      expect(logs.filter((l) => l.level === 'error')).toEqual([]);
    } finally {
      peer.close();
      await s.close();
    }
  });
});

describe('many targets at once', () => {
  it('500 concurrent fetches of snponly.efi and ipxe.efi, EDK2-style and iPXE-style, with zero failures', async () => {
    const { s, logs } = await server();
    try {
      const started = performance.now();
      const results = await Promise.allSettled(
        Array.from({ length: 500 }, async (_, i) => {
          const name = i % 2 ? 'ipxe.efi' : 'snponly.efi';
          if (i % 4 < 2) {
            // EDK2: tsize probe, abort, then the transfer with a window of 4.
            await tftpGet({ host: HOST, port: s.port, filename: name, sizeOnly: true, retries: 10 });
            const r = await tftpGet({ host: HOST, port: s.port, filename: name, blksize: 1468, windowsize: 4, tsize: true, retries: 10 });
            return { name, data: r.data };
          }
          const r = await tftpGet({ host: HOST, port: s.port, filename: name, blksize: 1432, tsize: true, retries: 10 });
          return { name, data: r.data };
        }),
      );
      const seconds = (performance.now() - started) / 1000;
      const failures = results.filter((r) => r.status === 'rejected');
      expect(failures.map((f) => String((f as PromiseRejectedResult).reason))).toEqual([]);
      const want = new Map(['snponly.efi', 'ipxe.efi'].map((n) => [n, sha(files.get(n)!)]));
      for (const r of results) {
        if (r.status !== 'fulfilled') continue;
        expect(sha(r.value.data)).toBe(want.get(r.value.name));
      }
      await sleep(50);
      expect(s.stats()).toMatchObject({ active: 0, failed: 0, completed: 500, aborted: 250 });
      // Both files were read from disk once, then served from memory.
      expect(s.stats().cache.files).toBe(2);
      expect(logs.filter((l) => l.level === 'error')).toEqual([]);
      console.log(`500 concurrent fetches: ${seconds.toFixed(1)} s, ${failures.length} failures`);
    } finally {
      await s.close();
    }
  }, 60_000);
});

describe('lifecycle', () => {
  it('close() ends transfers in progress and frees the port; a bad option value is refused at start', async () => {
    const { s } = await server({ timeoutMs: 5000 });
    const peer = await rawPeer();
    peer.send(rrq('ipxe.efi'), s.port);
    expect((await peer.next())?.p).toMatchObject({ op: 'DATA', block: 1 });
    expect(s.stats().active).toBe(1);
    await s.close();
    expect(s.stats().active).toBe(0);
    const again = await startTftpServer({ host: HOST, port: s.port, root: () => root });
    await again.close();
    peer.close();
    await expect(startTftpServer({ host: HOST, port: 0, root: () => root, maxWindowSize: 0 })).rejects.toThrow(/maxWindowSize/);
    // Binding a port in use is the one fatal error, reported by start.
    const busy = await startTftpServer({ host: HOST, port: 0, root: () => root });
    await expect(startTftpServer({ host: HOST, port: busy.port, root: () => root })).rejects.toThrow(/EADDRINUSE/);
    await busy.close();
  });

  it('the client reports a server ERROR as TftpRemoteError', async () => {
    const { s } = await server();
    try {
      await expect(tftpGet({ host: HOST, port: s.port, filename: 'nope' })).rejects.toEqual(new TftpRemoteError(1, 'file not found'));
    } finally {
      await s.close();
    }
  });
});
